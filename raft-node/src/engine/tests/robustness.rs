//! Whatever arrives from the network, the engine neither panics nor breaks
//! its own bookkeeping: arbitrary messages (well-formed or not, from any
//! term, with any indexes) are stepped into followers, candidates and
//! leaders with non-empty logs.

use super::*;
use crate::engine::rng::Rng;

fn any_u64(rng: &mut Rng) -> u64 {
    match rng.range(0, 6) {
        0 => 0,
        1 => u64::MAX,
        2 => rng.next_u64(),
        _ => rng.range(0, 12),
    }
}

fn any_log_id(rng: &mut Rng) -> LogId {
    lid(any_u64(rng), any_u64(rng))
}

fn any_message(rng: &mut Rng) -> Message {
    let req = VoteRequest {
        last_log: any_log_id(rng),
        transfer: rng.range(0, 2) == 1,
    };
    let resp = VoteResponse {
        granted: rng.range(0, 2) == 1,
    };
    match rng.range(0, 14) {
        0 => Message::PreVote(req),
        1 => Message::PreVoteResp(resp),
        2 => Message::Vote(req),
        3 => Message::VoteResp(resp),
        4 => {
            let prev = any_log_id(rng);
            let n = rng.range(0, 4);
            let entries = (0..n)
                .map(|i| {
                    // Mostly contiguous, sometimes not.
                    let index = if rng.range(0, 4) == 0 {
                        any_u64(rng)
                    } else {
                        prev.index.0.wrapping_add(i + 1)
                    };
                    ent(prev.term.0.max(any_u64(rng) % 12), index)
                })
                .collect();
            Message::Append(AppendRequest {
                prev,
                entries,
                commit: LogIndex(any_u64(rng)),
                stream: rng.range(0, 2),
            })
        }
        5 => Message::AppendResp(AppendResponse::Success {
            matched: LogIndex(any_u64(rng)),
            stream: rng.range(0, 2),
        }),
        6 => Message::AppendResp(AppendResponse::Conflict {
            rejected: LogIndex(any_u64(rng)),
            hint: ConflictHint {
                index: LogIndex(any_u64(rng)),
                term: (rng.range(0, 2) == 1).then(|| Term(any_u64(rng))),
            },
            stream: rng.range(0, 2),
        }),
        7 => Message::Heartbeat(HeartbeatRequest {
            commit: LogIndex(any_u64(rng)),
            round: any_u64(rng),
        }),
        8 => Message::HeartbeatResp(HeartbeatResponse {
            round: any_u64(rng),
        }),
        9 => {
            let len = rng.range(0, 6) as usize;
            let mut membership = raft_api::Membership::new([1, 2, 3].map(NodeId));
            if rng.range(0, 4) == 0 {
                membership.voters.clear();
            }
            Message::Snapshot(Box::new(raft_api::SnapshotChunk {
                meta: raft_api::SnapshotMeta {
                    last: any_log_id(rng),
                    membership,
                },
                total: any_u64(rng),
                offset: any_u64(rng),
                data: Bytes::from(vec![7u8; len]),
                stream: rng.range(0, 2),
            }))
        }
        10 => Message::SnapshotResp(raft_api::SnapshotResponse {
            last: any_log_id(rng),
            received: any_u64(rng),
            installed: rng.range(0, 2) == 1,
            stream: rng.range(0, 2),
        }),
        11 => Message::TimeoutNow,
        12 => Message::ReadIndex(raft_api::ReadIndexRequest { id: any_u64(rng) }),
        _ => Message::ReadIndexResp(raft_api::ReadIndexResponse {
            id: any_u64(rng),
            index: (rng.range(0, 2) == 1).then(|| LogIndex(any_u64(rng))),
        }),
    }
}

#[test]
fn arbitrary_messages_never_panic_or_corrupt_state() {
    for seed in 0..300 {
        let mut rng = Rng::new(seed);
        let mut e = engine(1, &[1, 2, 3], stored(&[1, 1, 2, 3], 3, Some(1), 2));
        // Reach a role chosen by the seed.
        match seed % 3 {
            0 => {}
            1 => e.campaign(),
            _ => elect(&mut e),
        }
        let mut now = 0;
        for _ in 0..200 {
            let term = any_u64(&mut rng);
            let from = rng.range(1, 5);
            let msg = any_message(&mut rng);
            let _ = e.step(env(from, 1, term, msg));
            if rng.range(0, 10) == 0 {
                now += rng.range(0, 300);
                e.tick(now);
            }
            if rng.range(0, 10) == 0 {
                let last = e.last_log_id();
                e.on_persisted(Some(last));
            }
            if rng.range(0, 10) == 0 {
                let _ = e.read(rng.next_u64(), ReadMode::ReadIndex);
            }
            let actions = e.take_actions();
            assert!(e.commit_index() <= e.last_log_id().index, "seed {seed}");
            assert!(e.compacted().index <= e.commit_index(), "seed {seed}");
            assert!(e.applied_index() <= e.commit_index(), "seed {seed}");
            assert!(e.persisted_index() <= e.last_log_id().index, "seed {seed}");
            for action in actions {
                if let Action::Send(env) | Action::SendAfterPersist(env) = action {
                    assert_eq!(env.from, NodeId(1));
                    assert_ne!(env.to, NodeId(1));
                }
            }
        }
    }
}
