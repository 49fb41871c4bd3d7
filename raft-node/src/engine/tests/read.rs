//! Linearizable reads without log writes (thesis §6.4): ReadIndex with a
//! heartbeat round a quorum answers, the leader lease (§6.4.1), follower
//! reads, and the quiet period of a restarted voter that keeps leases safe.

use raft_api::{ReadIndexRequest, ReadIndexResponse};

use super::*;
use crate::error::ReadError;

/// Node 1, leader of `[1, 2, 3]` in term 1 with the first entry of its term
/// (the bootstrap voters) committed and acknowledged by both followers; no
/// heartbeat round sent yet.
fn leader() -> Engine {
    let mut e = engine(1, &[1, 2, 3], plain);
    elect(&mut e);
    commit_all(&mut e);
    e
}

fn ready(id: u64, index: u64) -> Action {
    Action::ReadReady {
        id,
        index: LogIndex(index),
    }
}

fn read_index_req(id: u64) -> Message {
    Message::ReadIndex(ReadIndexRequest { id })
}

fn read_index_resp(id: u64, index: Option<u64>) -> Message {
    Message::ReadIndexResp(ReadIndexResponse {
        id,
        index: index.map(LogIndex),
    })
}

/// Case 7 (thesis §6.4): a leader that is the only voter confirms its
/// leadership alone: once an entry of its term is committed, a read is
/// ready at once at the commit index.
#[test]
fn case_7_single_voter_read_is_ready_at_once_after_own_term_commit() {
    let mut e = engine(1, &[1], plain);
    e.tick(0);
    e.take_actions();
    e.on_persisted(None);
    e.take_actions();
    e.on_persisted(Some(lid(1, 1)));
    e.take_actions();
    assert_eq!(e.read(7, ReadMode::ReadIndex), Ok(()));
    assert_eq!(e.take_actions(), vec![ready(7, 1)]);
}

/// Case 7 (thesis §6.4): a single voter's read that arrives before its
/// first entry (the bootstrap voters) commits waits for that commit.
#[test]
fn case_7_single_voter_read_waits_for_own_term_commit() {
    let mut e = engine(1, &[1], plain);
    e.tick(0);
    e.take_actions();
    e.on_persisted(None);
    let first = entry_at(&e, 1);
    assert_eq!(first.payload, bootstrap(&[1]));
    e.take_actions();
    e.read(7, ReadMode::ReadIndex).unwrap();
    assert_eq!(e.take_actions(), vec![]);
    e.on_persisted(Some(lid(1, 1)));
    assert_eq!(
        e.take_actions(),
        vec![ready(7, 1), Action::Apply(vec![first])]
    );
}

/// Case 7 (thesis §6.4): on a leader of three, a read is ready only once
/// a heartbeat round sent after it arrived was answered by a quorum; an
/// answer to no round (0) confirms nothing.
#[test]
fn case_7_read_index_waits_for_quorum_heartbeat_round() {
    let mut e = leader();
    e.read(7, ReadMode::ReadIndex).unwrap();
    assert_eq!(e.take_actions(), round_to_2_and_3(1, 1));
    step(&mut e, env(3, 1, 1, heartbeat_resp()));
    assert_eq!(e.take_actions(), vec![]);
    step(&mut e, env(2, 1, 1, heartbeat_resp_round(1)));
    assert_eq!(e.take_actions(), vec![ready(7, 1)]);
}

/// Case 7 (thesis §6.4): reads that arrive while a round is in flight do
/// not start rounds of their own; they all wait for the next round, which
/// leaves when the one in flight is confirmed, and are ready together.
#[test]
fn case_7_reads_during_a_round_share_the_next_round() {
    let mut e = leader();
    e.read(7, ReadMode::ReadIndex).unwrap();
    e.take_actions();
    e.read(8, ReadMode::ReadIndex).unwrap();
    e.read(9, ReadMode::ReadIndex).unwrap();
    assert_eq!(e.take_actions(), vec![]);

    step(&mut e, env(2, 1, 1, heartbeat_resp_round(1)));
    assert_eq!(
        e.take_actions(),
        vec![
            ready(7, 1),
            send(1, 2, 1, heartbeat_round(1, 2)),
            send(1, 3, 1, heartbeat_round(1, 2)),
        ]
    );
    step(&mut e, env(3, 1, 1, heartbeat_resp_round(1)));
    assert_eq!(e.take_actions(), vec![]);
    step(&mut e, env(3, 1, 1, heartbeat_resp_round(2)));
    assert_eq!(e.take_actions(), vec![ready(8, 1), ready(9, 1)]);
}

/// Case 7 (thesis §6.4, §8): a new leader does not know the group's commit
/// index before an entry of its term commits: a read waits for that, even
/// though a quorum answered a round meanwhile, and is then indexed at the
/// new commit index (not the stale one the leader restarted with) and
/// confirmed by a round sent after that.
#[test]
fn case_7_new_leader_serves_no_read_before_its_first_entry_commits() {
    let mut e = restarted(engine(1, &[1, 2, 3], stored(&[1, 1], 1, None, 0)));
    elect(&mut e);
    // The log records no membership: the term's first entry holds the
    // bootstrap voters, and it is the entry reads wait for.
    let first = entry_at(&e, 3);
    assert_eq!(
        (first.id, &first.payload),
        (lid(2, 3), &bootstrap(&[1, 2, 3]))
    );
    e.read(7, ReadMode::ReadIndex).unwrap();
    assert_eq!(e.take_actions(), vec![]);

    e.tick(120);
    assert_eq!(
        e.take_actions(),
        vec![
            send(1, 2, 2, heartbeat_round(0, 1)),
            send(1, 3, 2, heartbeat_round(0, 1)),
        ]
    );
    step(&mut e, env(2, 1, 2, heartbeat_resp_round(1)));
    step(&mut e, env(3, 1, 2, heartbeat_resp_round(1)));
    let actions = e.take_actions();
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::ReadReady { .. })),
        "{actions:?}"
    );

    e.on_persisted(Some(lid(2, 3)));
    step(&mut e, env(2, 1, 2, success(3)));
    assert_eq!(
        e.take_actions(),
        vec![
            send(1, 2, 2, heartbeat_round(3, 2)),
            send(1, 3, 2, heartbeat_round(0, 2)),
            Action::Apply(vec![ent(1, 1), ent(1, 2), first]),
            send(1, 2, 2, append(lid(2, 3), vec![], 3)),
        ]
    );
    step(&mut e, env(2, 1, 2, heartbeat_resp_round(2)));
    assert_eq!(e.take_actions(), vec![ready(7, 3)]);
}

/// Case 7 (thesis §6.4.1): after a round a quorum answered, lease reads are
/// ready at once while `now < sent_at + election_timeout_min_ms -
/// lease_clock_drift_ms` (20 + 100 - 30 = 90), and need a round again
/// from then on.
#[test]
fn case_7_lease_read_served_without_round_only_within_lease() {
    let mut e = leader();
    e.read(8, ReadMode::Lease).unwrap();
    assert_eq!(
        e.take_actions(),
        round_to_2_and_3(1, 1),
        "no lease before a confirmed round"
    );
    e.tick(20);
    e.take_actions(); // round 2, sent at 20
    step(&mut e, env(2, 1, 1, heartbeat_resp_round(2)));
    assert_eq!(e.take_actions(), vec![ready(8, 1)]);

    e.read(9, ReadMode::Lease).unwrap();
    assert_eq!(e.take_actions(), vec![ready(9, 1)]);
    e.tick(89);
    e.take_actions(); // round 3, sent at 89
    e.read(10, ReadMode::Lease).unwrap();
    assert_eq!(e.take_actions(), vec![ready(10, 1)]);

    e.tick(90);
    assert_eq!(e.take_actions(), vec![]);
    e.read(11, ReadMode::Lease).unwrap();
    assert_eq!(e.take_actions(), vec![], "lease over; waits for a round");
    step(&mut e, env(3, 1, 1, heartbeat_resp_round(3)));
    assert_eq!(e.take_actions(), round_to_2_and_3(1, 4));
    step(&mut e, env(3, 1, 1, heartbeat_resp_round(4)));
    assert_eq!(e.take_actions(), vec![ready(11, 1)]);
}

/// Case 7: a leader whose process was paused past its lease judges the
/// lease by the time its driver observes when the loop resumes, not by its
/// last tick: a lease read waits for a round, and observing the time fires
/// no timer of its own.
#[test]
fn case_7_no_lease_read_by_a_clock_from_before_a_pause() {
    let mut e = leader();
    e.read(8, ReadMode::Lease).unwrap();
    e.take_actions(); // round 1
    e.tick(20);
    e.take_actions(); // round 2, sent at 20: a lease until 90
    step(&mut e, env(2, 1, 1, heartbeat_resp_round(2)));
    assert_eq!(e.take_actions(), vec![ready(8, 1)]);

    e.observe_time(1_000);
    assert_eq!(e.take_actions(), vec![], "no timer fires");
    e.read(9, ReadMode::Lease).unwrap();
    assert_eq!(
        e.take_actions(),
        round_to_2_and_3(1, 3),
        "the lease ended during the pause"
    );
    step(&mut e, env(3, 1, 1, heartbeat_resp_round(3)));
    assert_eq!(e.take_actions(), vec![ready(9, 1)]);
}

/// Case 7 (thesis §3.10, §6.4.1): once a transfer sent `TimeoutNow`, the
/// target may be elected at once, so the leader serves no lease read for
/// the rest of its term: each needs a round, and confirmed rounds no
/// longer renew the lease.
#[test]
fn case_7_no_lease_read_after_transfer_sent_timeout_now() {
    let mut e = leader();
    e.tick(20);
    e.take_actions();
    step(&mut e, env(2, 1, 1, heartbeat_resp_round(1)));
    e.read(7, ReadMode::Lease).unwrap();
    assert_eq!(e.take_actions(), vec![ready(7, 1)], "lease held");

    e.transfer_leader(Some(NodeId(2))).unwrap();
    assert_eq!(e.take_actions(), vec![send(1, 2, 1, Message::TimeoutNow)]);
    e.read(8, ReadMode::Lease).unwrap();
    assert_eq!(e.take_actions(), round_to_2_and_3(1, 2));
    step(&mut e, env(3, 1, 1, heartbeat_resp_round(2)));
    assert_eq!(e.take_actions(), vec![ready(8, 1)]);
    e.read(9, ReadMode::Lease).unwrap();
    assert_eq!(e.take_actions(), round_to_2_and_3(1, 3));
}

/// Case 7 (thesis §6.4): without check-quorum there is no lease: a lease
/// read needs a round like a ReadIndex read.
#[test]
fn case_7_no_lease_without_check_quorum() {
    let mut e = engine(1, &[1, 2, 3], |i| i.config.check_quorum = false);
    elect(&mut e);
    commit_all(&mut e);
    e.read(7, ReadMode::ReadIndex).unwrap();
    e.take_actions();
    step(&mut e, env(2, 1, 1, heartbeat_resp_round(1)));
    assert_eq!(e.take_actions(), vec![ready(7, 1)]);
    e.read(8, ReadMode::Lease).unwrap();
    assert_eq!(e.take_actions(), round_to_2_and_3(1, 2));
}

/// Case 7 (thesis §6.4): a follower asks its leader for a read index and
/// reports the read ready at the index the leader answers.
#[test]
fn case_7_follower_read_asks_leader_for_read_index() {
    let mut f = engine(2, &[1, 2, 3], stored(&[1], 1, None, 0));
    step(&mut f, env(1, 2, 1, heartbeat(0)));
    f.take_actions();
    assert_eq!(f.read(5, ReadMode::ReadIndex), Ok(()));
    assert_eq!(f.take_actions(), vec![send(2, 1, 1, read_index_req(5))]);
    // An answer from another node is not the leader's.
    step(&mut f, env(3, 2, 1, read_index_resp(5, Some(9))));
    assert_eq!(f.take_actions(), vec![]);
    step(&mut f, env(1, 2, 1, read_index_resp(5, Some(1))));
    assert_eq!(f.take_actions(), vec![ready(5, 1)]);
}

/// Case 7 (thesis §6.4): the leader confirms a follower's read with a
/// quorum round and answers with its commit index.
#[test]
fn case_7_leader_answers_follower_read_after_quorum_round() {
    let mut e = leader();
    step(&mut e, env(2, 1, 1, read_index_req(5)));
    assert_eq!(e.take_actions(), round_to_2_and_3(1, 1));
    step(&mut e, env(3, 1, 1, heartbeat_resp_round(1)));
    assert_eq!(
        e.take_actions(),
        vec![send(1, 2, 1, read_index_resp(5, Some(1)))]
    );
}

/// Case 7 (thesis §6.4): in a whole group, a follower's read is ready at
/// the leader's commit index.
#[test]
fn case_7_follower_read_in_group_is_ready_at_leader_commit() {
    let mut c = Cluster::three_led_by_1();
    let id = c.node_mut(1).propose(Bytes::from_static(b"x")).unwrap();
    c.run();
    c.node_mut(3).read(42, ReadMode::ReadIndex).unwrap();
    c.run();
    assert_eq!(c.reads[&NodeId(3)][&42], Some(id.index));
}

/// Case 7: a follower that knows no leader cannot confirm a read: it
/// fails at once with `NotLeader`.
#[test]
fn case_7_follower_without_leader_refuses_read() {
    let mut f = engine(2, &[1, 2, 3], plain);
    assert_eq!(
        f.read(5, ReadMode::ReadIndex),
        Err(ReadError::NotLeader { leader: None })
    );
    assert_eq!(f.take_actions(), vec![]);
}

/// Case 7: a follower read whose answer never comes fails after an
/// election timeout.
#[test]
fn case_7_follower_read_without_answer_fails_after_timeout() {
    let mut f = engine(2, &[1, 2, 3], plain);
    step(&mut f, env(1, 2, 1, heartbeat(0)));
    f.read(5, ReadMode::ReadIndex).unwrap();
    f.take_actions();
    f.tick(60);
    step(&mut f, env(1, 2, 1, heartbeat(0)));
    f.take_actions();
    f.tick(99);
    assert_eq!(f.take_actions(), vec![]);
    f.tick(100);
    assert_eq!(
        f.take_actions(),
        vec![Action::ReadFailed {
            id: 5,
            error: ReadError::LeadershipLost
        }]
    );
}

/// Case 7 (thesis §6.4): a leader that steps down fails every read it was
/// confirming: its own with `ReadFailed`, a follower's with an answer
/// without index.
#[test]
fn case_7_leader_stepping_down_fails_pending_reads() {
    let mut e = leader();
    e.read(7, ReadMode::ReadIndex).unwrap();
    step(&mut e, env(3, 1, 1, read_index_req(9)));
    e.take_actions();
    step(&mut e, env(3, 1, 2, heartbeat(0)));
    assert_eq!(
        e.take_actions(),
        vec![
            Action::ReadFailed {
                id: 7,
                error: ReadError::LeadershipLost
            },
            send(1, 3, 2, read_index_resp(9, None)),
            send(1, 3, 2, heartbeat_resp()),
            save(2, None, 1),
        ]
    );
    assert_eq!(e.role(), Role::Follower);
}

/// Case 7 (thesis §6.4.1): a restarted voter (stored term above 0) grants
/// no vote and no pre-vote for `election_timeout_min_ms` after it starts,
/// as if it heard from a leader: a leader's lease may count on it. After
/// that it votes normally.
#[test]
fn case_7_restarted_voter_refuses_votes_during_quiet_period() {
    let mut e = engine(1, &[1, 2, 3], stored(&[1], 1, None, 0));
    step(&mut e, env(2, 1, 2, pre_vote(lid(1, 1))));
    assert_eq!(e.take_actions(), vec![send(1, 2, 1, pre_vote_resp(false))]);
    step(&mut e, env(2, 1, 2, vote(lid(1, 1))));
    assert_eq!(e.take_actions(), vec![]);
    assert_eq!((e.term(), e.vote()), (Term(1), None));

    e.tick(99);
    step(&mut e, env(2, 1, 2, vote(lid(1, 1))));
    assert_eq!(e.take_actions(), vec![]);

    e.tick(100);
    assert_eq!(e.role(), Role::Follower);
    e.take_actions();
    step(&mut e, env(2, 1, 2, vote(lid(1, 1))));
    assert_eq!(
        e.take_actions(),
        vec![
            save(2, Some(2), 0),
            send_after_persist(1, 2, 2, vote_resp(true))
        ]
    );
}

/// A fresh node (term 0, nothing stored) has no quiet period: nothing it
/// could have promised a leader.
#[test]
fn case_7_fresh_node_has_no_quiet_period() {
    let mut e = engine(1, &[1, 2, 3], plain);
    step(&mut e, env(2, 1, 1, vote(lid(0, 0))));
    assert_eq!(
        e.take_actions(),
        vec![
            save(1, Some(2), 0),
            send_after_persist(1, 2, 1, vote_resp(true))
        ]
    );
}

/// What leader 1 of voters 1, 2, 3 in term 1 sends for heartbeat round
/// `round` when both followers hold everything up to `commit`.
fn round_to_2_and_3(commit: u64, round: u64) -> Vec<Action> {
    vec![
        send(1, 2, 1, heartbeat_round(commit, round)),
        send(1, 3, 1, heartbeat_round(commit, round)),
    ]
}
