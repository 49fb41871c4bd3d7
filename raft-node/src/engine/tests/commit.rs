//! Commitment (§5.4.2, figure 8), applying committed entries exactly once,
//! and the errors of the engine's inputs.

use super::*;
use crate::error::{ProposeError, StepError};

/// §5.4.2, figure 8: a leader of term 4 does not commit an entry of term 2
/// by counting replicas, even when a majority stores it; once an entry of
/// term 4 is on a majority, both are committed together.
#[test]
fn s5_4_2_figure_8_old_term_entry_commits_only_with_current_term_entry() {
    let voters = [1, 2, 3, 4, 5];
    let mut e = engine(1, &voters, stored(&[1, 2], 3, None, 0));
    elect(&mut e);
    assert_eq!(e.term(), Term(4));
    // The log records no membership: the first entry of term 4 holds the
    // bootstrap voters.
    let first = entry_at(&e, 3);
    assert_eq!((first.id, &first.payload), (lid(4, 3), &bootstrap(&voters)));

    // Peers 2 and 3 hold 1-1 and 2-2: with the leader, a majority of five.
    step(&mut e, env(2, 1, 4, success(2)));
    assert_eq!(
        e.take_actions(),
        vec![send(1, 2, 4, append(lid(2, 2), vec![first.clone()], 0))]
    );
    step(&mut e, env(3, 1, 4, success(2)));
    assert_eq!(
        e.take_actions(),
        vec![send(1, 3, 4, append(lid(2, 2), vec![first.clone()], 0))]
    );
    assert_eq!(e.commit_index(), LogIndex(0));

    // The first entry of term 4 is durable on the leader and peer 2: not
    // yet a majority, and index 2 still may not be committed by counting.
    e.on_persisted(Some(lid(4, 3)));
    assert_eq!(e.take_actions(), vec![]);
    step(&mut e, env(2, 1, 4, success(3)));
    assert_eq!(e.take_actions(), vec![]);
    assert_eq!(e.commit_index(), LogIndex(0));

    // Peer 3 makes it a majority: 1..=3 commit at once.
    step(&mut e, env(3, 1, 4, success(3)));
    assert_eq!(
        e.take_actions(),
        vec![
            // The commit index alone is not written: nothing else is.
            Action::Apply(vec![ent(1, 1), ent(2, 2), first]),
            // Followers learn it once the batch of inputs is drained.
            send(1, 2, 4, append(lid(4, 3), vec![], 3)),
            send(1, 3, 4, append(lid(4, 3), vec![], 3)),
        ]
    );
    assert_eq!(e.commit_index(), LogIndex(3));
}

/// §5.4.2: the leader counts its own log only once it is durable: acks
/// from followers alone do not commit when the leader's own copy is
/// needed for the quorum.
#[test]
fn s5_4_2_leader_counts_only_its_durable_entries() {
    let mut e = engine(1, &[1, 2, 3], plain);
    elect(&mut e);
    step(&mut e, env(2, 1, 1, success(1)));
    assert_eq!(e.take_actions(), vec![]);
    assert_eq!(e.commit_index(), LogIndex(0));
    e.on_persisted(Some(lid(1, 1)));
    assert_eq!(e.commit_index(), LogIndex(1));
}

/// Committed entries are handed out in `Apply` exactly once and in order,
/// however the commit index arrives (appends, heartbeats, duplicates).
#[test]
fn committed_entries_apply_exactly_once_in_order() {
    let mut e = engine(2, &[1, 2, 3], stored(&[], 1, None, 0));
    let all = vec![ent(1, 1), ent(1, 2), ent(1, 3)];
    let mut out = Vec::new();

    step(&mut e, env(1, 2, 1, append(lid(0, 0), all.clone(), 1)));
    let actions = e.take_actions();
    assert_eq!(
        actions,
        vec![
            Action::AppendLog(all.clone()),
            send_after_persist(2, 1, 1, success(3)),
            Action::Apply(vec![ent(1, 1)]),
            // The commit index rides along with the entries' write.
            save(1, None, 1),
        ]
    );
    out.extend(applied(&actions));

    step(&mut e, env(1, 2, 1, append(lid(1, 3), vec![], 2)));
    let actions = e.take_actions();
    assert_eq!(
        actions,
        vec![
            send_after_persist(2, 1, 1, success(3)),
            Action::Apply(vec![ent(1, 2)]),
        ]
    );
    out.extend(applied(&actions));

    // Nothing new: same commit by heartbeat, a reordered old append, an
    // older commit index.
    step(&mut e, env(1, 2, 1, heartbeat(2)));
    assert_eq!(e.take_actions(), vec![send(2, 1, 1, heartbeat_resp())]);
    step(&mut e, env(1, 2, 1, append(lid(0, 0), vec![ent(1, 1)], 1)));
    assert_eq!(
        e.take_actions(),
        vec![send_after_persist(2, 1, 1, success(1))]
    );
    step(&mut e, env(1, 2, 1, heartbeat(1)));
    assert_eq!(e.take_actions(), vec![send(2, 1, 1, heartbeat_resp())]);

    step(&mut e, env(1, 2, 1, heartbeat(3)));
    let actions = e.take_actions();
    assert_eq!(
        actions,
        vec![
            send(2, 1, 1, heartbeat_resp()),
            Action::Apply(vec![ent(1, 3)]),
        ]
    );
    out.extend(applied(&actions));

    assert_eq!(out, all);
    assert_eq!(e.applied_index(), LogIndex(3));
    assert_eq!(e.commit_index(), LogIndex(3));
}

/// A restarted engine (same durable entries and commit index, nothing
/// applied) emits the committed entries again from index 1, and only up to
/// the commit index; with `applied` set it resumes after it.
#[test]
fn restart_reapplies_up_to_durable_commit() {
    let mut e = engine(2, &[1, 2, 3], stored(&[1, 1, 2, 2], 2, Some(1), 3));
    assert_eq!(
        e.take_actions(),
        vec![Action::Apply(vec![ent(1, 1), ent(1, 2), ent(2, 3)])]
    );
    assert_eq!(e.applied_index(), LogIndex(3));
    assert_eq!(e.commit_index(), LogIndex(3));
    assert_eq!(e.role(), Role::Follower);
    assert_eq!((e.term(), e.vote()), (Term(2), Some(NodeId(1))));

    let mut e = engine(2, &[1, 2, 3], |i| {
        stored(&[1, 1, 2, 2], 2, Some(1), 3)(i);
        i.applied = LogIndex(2);
    });
    assert_eq!(e.take_actions(), vec![Action::Apply(vec![ent(2, 3)])]);
}

/// A state machine that applied past the commit index on disk (the commit
/// index is written lazily) is not handed those entries again: what was
/// applied was committed.
#[test]
fn restart_trusts_applied_index_ahead_of_durable_commit() {
    let mut e = engine(2, &[1, 2, 3], |i| {
        stored(&[1, 1, 2, 2], 2, Some(1), 1)(i);
        i.applied = LogIndex(3);
    });
    assert_eq!(e.take_actions(), vec![]);
    assert_eq!(e.commit_index(), LogIndex(3));
    assert_eq!(e.applied_index(), LogIndex(3));
}

/// A commit index beyond the durable log (entries lost) is capped at the
/// last entry held.
#[test]
fn restart_caps_commit_at_last_entry() {
    let mut e = engine(2, &[1, 2, 3], stored(&[1, 1], 1, None, 5));
    assert_eq!(
        e.take_actions(),
        vec![Action::Apply(vec![ent(1, 1), ent(1, 2)])]
    );
    assert_eq!(e.commit_index(), LogIndex(2));
}

/// Only the leader accepts proposals: a follower names the leader it
/// knows, or none, and emits nothing.
#[test]
fn propose_on_follower_is_refused_with_leader_hint() {
    let mut e = engine(2, &[1, 2, 3], stored(&[], 1, None, 0));
    assert_eq!(
        e.propose(Bytes::from_static(b"x")),
        Err(ProposeError::NotLeader { leader: None })
    );
    assert_eq!(e.take_actions(), vec![]);

    step(&mut e, env(3, 2, 1, heartbeat(0)));
    e.take_actions();
    assert_eq!(
        e.propose(Bytes::from_static(b"x")),
        Err(ProposeError::NotLeader {
            leader: Some(NodeId(3))
        })
    );
    assert_eq!(e.take_actions(), vec![]);
    assert_eq!(e.last_log_id(), lid(0, 0));
}

/// Pre-candidates and candidates know no leader and refuse proposals.
#[test]
fn propose_during_election_is_refused() {
    let mut e = engine(1, &[1, 2, 3], plain);
    e.campaign();
    e.take_actions();
    assert_eq!(e.role(), Role::PreCandidate);
    assert_eq!(
        e.propose(Bytes::from_static(b"x")),
        Err(ProposeError::NotLeader { leader: None })
    );
    step(&mut e, env(2, 1, 1, pre_vote_resp(true)));
    e.take_actions();
    assert_eq!(e.role(), Role::Candidate);
    assert_eq!(
        e.propose(Bytes::from_static(b"x")),
        Err(ProposeError::NotLeader { leader: None })
    );
    assert_eq!(e.take_actions(), vec![]);
}

/// `step` refuses messages of another group, for another node, or claiming
/// to come from the node itself, and they change nothing.
#[test]
fn step_rejects_misaddressed_messages() {
    let mut e = engine(1, &[1, 2, 3], plain);
    let newer = |from, to| env(from, to, 9, heartbeat(0));

    let mut wrong_group = newer(2, 1);
    wrong_group.group = GroupId(8);
    assert_eq!(
        e.step(wrong_group),
        Err(StepError::WrongGroup {
            expected: G,
            got: GroupId(8)
        })
    );
    assert_eq!(
        e.step(newer(2, 3)),
        Err(StepError::WrongRecipient {
            expected: NodeId(1),
            got: NodeId(3)
        })
    );
    assert_eq!(e.step(newer(1, 1)), Err(StepError::FromSelf(NodeId(1))));

    assert_eq!(e.take_actions(), vec![]);
    assert_eq!(e.term(), Term(0));
    assert_eq!(e.leader(), None);
}

/// Input from the network never panics the engine: an append whose entries
/// skip an index, go back in term, or claim a term newer than the sender's
/// is refused as malformed and changes nothing.
#[test]
fn step_refuses_malformed_appends() {
    let mut e = engine(1, &[1, 2, 3], plain);
    let cases = [
        // Index gap after prev.
        append(lid(0, 0), vec![ent(1, 2)], 0),
        // Entries not contiguous.
        append(lid(0, 0), vec![ent(1, 1), ent(1, 3)], 0),
        // Terms going back.
        append(lid(0, 0), vec![ent(2, 1), ent(1, 2)], 0),
        // An entry newer than the sender's term.
        append(lid(0, 0), vec![ent(5, 1)], 0),
        // A previous entry newer than the sender's term.
        append(lid(7, 3), vec![], 0),
        // An index at the edge of the integer range.
        append(lid(1, u64::MAX), vec![ent(1, 0)], 0),
    ];
    for msg in cases {
        let result = e.step(env(2, 1, 2, msg.clone()));
        assert!(
            matches!(
                result,
                Err(StepError::Malformed {
                    from: NodeId(2),
                    kind: "Append",
                    ..
                })
            ),
            "{msg:?} gave {result:?}"
        );
    }
    // A term no real cluster reaches is refused whatever the message.
    let result = e.step(env(2, 1, u64::MAX, heartbeat(0)));
    assert!(
        matches!(
            result,
            Err(StepError::Malformed {
                kind: "Heartbeat",
                ..
            })
        ),
        "{result:?}"
    );
    assert_eq!(e.take_actions(), vec![]);
    assert_eq!(e.term(), Term(0));
    assert_eq!(e.last_log_id(), LogId::default());
}
