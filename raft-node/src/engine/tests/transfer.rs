//! Leader transfer (thesis §3.10): the leader brings the target up to date,
//! sends it `TimeoutNow`, refuses proposals meanwhile and gives up after an
//! election timeout; the target campaigns at once and voters grant it past
//! leader stickiness.

use super::*;
use crate::engine::MembershipChange;
use crate::error::{ChangeError, ProposeError, TransferError};

/// Node 1, leader of `[1, 2, 3]` in term 1 with the first entry of its term
/// (the bootstrap voters) committed and acknowledged by both followers.
fn leader() -> Engine {
    let mut e = engine(1, &[1, 2, 3], plain);
    elect(&mut e);
    commit_all(&mut e);
    e
}

fn vote_transfer(last: LogId) -> Message {
    Message::Vote(VoteRequest {
        last_log: last,
        transfer: true,
    })
}

/// Case 21 (thesis §3.10): a transfer to a follower that holds the whole
/// log sends it `TimeoutNow` at once.
#[test]
fn case_21_transfer_to_up_to_date_follower_sends_timeout_now() {
    let mut e = leader();
    assert_eq!(e.transfer_leader(Some(NodeId(2))), Ok(NodeId(2)));
    assert_eq!(e.take_actions(), vec![send(1, 2, 1, Message::TimeoutNow)]);
    assert_eq!(e.transfer_target(), Some(NodeId(2)));
    assert_eq!(e.role(), Role::Leader);
}

/// Case 21 (thesis §3.10): a transfer to a follower that lags first brings
/// its log up to date; `TimeoutNow` leaves only once its acknowledgement
/// shows it holds the leader's last entry.
#[test]
fn case_21_transfer_to_lagging_follower_waits_for_its_ack() {
    let mut e = engine(1, &[1, 2, 3], plain);
    elect(&mut e);
    e.on_persisted(Some(lid(1, 1)));
    step(&mut e, env(3, 1, 1, success(1)));
    e.propose(Bytes::from_static(b"x")).unwrap();
    e.on_persisted(Some(lid(1, 2)));
    step(&mut e, env(3, 1, 1, success(2)));
    e.take_actions();
    assert_eq!(e.commit_index(), LogIndex(2));

    // Node 2 never answered its first probe.
    assert_eq!(e.transfer_leader(Some(NodeId(2))), Ok(NodeId(2)));
    assert_eq!(e.take_actions(), vec![]);
    assert_eq!(e.transfer_target(), Some(NodeId(2)));

    step(&mut e, env(2, 1, 1, heartbeat_resp()));
    let all = log_entries(&e);
    assert_eq!(
        e.take_actions(),
        vec![send(1, 2, 1, append(lid(0, 0), all, 2))]
    );
    step(&mut e, env(2, 1, 1, success(2)));
    assert_eq!(e.take_actions(), vec![send(1, 2, 1, Message::TimeoutNow)]);
}

/// Case 21 (thesis §3.10): during a transfer the leader accepts no
/// proposal and no membership change.
#[test]
fn case_21_proposals_refused_during_transfer() {
    let mut e = leader();
    e.transfer_leader(Some(NodeId(3))).unwrap();
    e.take_actions();
    assert_eq!(
        e.propose(Bytes::from_static(b"x")),
        Err(ProposeError::TransferInProgress { target: NodeId(3) })
    );
    assert_eq!(
        e.change_membership(MembershipChange::AddLearner(NodeId(4))),
        Err(ChangeError::TransferInProgress { target: NodeId(3) })
    );
    assert_eq!(e.take_actions(), vec![]);
    assert_eq!(e.last_log_id(), lid(1, 1));
}

/// Case 21 (thesis §3.10): a transfer that has not completed within
/// `election_timeout_min_ms` (100) is abandoned; proposals work again.
#[test]
fn case_21_transfer_abandoned_after_election_timeout() {
    let mut e = leader();
    e.transfer_leader(Some(NodeId(2))).unwrap();
    e.take_actions();
    e.tick(99);
    assert_eq!(e.transfer_target(), Some(NodeId(2)));
    assert!(e.propose(Bytes::from_static(b"x")).is_err());
    e.tick(100);
    assert_eq!(e.transfer_target(), None);
    assert_eq!(e.role(), Role::Leader);
    assert_eq!(e.propose(Bytes::from_static(b"x")), Ok(lid(1, 2)));
}

/// Case 21 (thesis §3.10): the target receiving `TimeoutNow` from its
/// leader campaigns at once: a real election (no pre-vote) in the next
/// term, with vote requests marked `transfer`, sent after its vote for
/// itself is durable.
#[test]
fn case_21_target_campaigns_at_once_on_timeout_now() {
    let mut f = engine(2, &[1, 2, 3], stored(&[1], 1, None, 0));
    step(&mut f, env(1, 2, 1, heartbeat(0)));
    f.take_actions();
    step(&mut f, env(1, 2, 1, Message::TimeoutNow));
    let req = vote_transfer(lid(1, 1));
    assert_eq!(
        f.take_actions(),
        vec![
            save(2, Some(2), 0),
            send_after_persist(2, 1, 2, req.clone()),
            send_after_persist(2, 3, 2, req),
        ]
    );
    assert_eq!((f.role(), f.term()), (Role::Candidate, Term(2)));
}

/// Thesis §3.10: `TimeoutNow` from a node that is not this follower's
/// leader is ignored.
#[test]
fn case_21_timeout_now_from_non_leader_is_ignored() {
    let mut f = engine(2, &[1, 2, 3], stored(&[1], 1, None, 0));
    step(&mut f, env(1, 2, 1, heartbeat(0)));
    f.take_actions();
    step(&mut f, env(3, 2, 1, Message::TimeoutNow));
    assert_eq!(f.take_actions(), vec![]);
    assert_eq!((f.role(), f.term()), (Role::Follower, Term(1)));
}

/// Case 21 (thesis §3.10): voters grant the target's vote (marked
/// `transfer`) even while they still hear from the leader, where an
/// ordinary vote request of a higher term is ignored (leader stickiness).
#[test]
fn case_21_voters_grant_transfer_vote_despite_live_leader() {
    let live = || {
        let mut f = restarted(engine(3, &[1, 2, 3], stored(&[1], 1, None, 0)));
        step(&mut f, env(1, 3, 1, heartbeat(0)));
        f.take_actions();
        f
    };
    let mut plain_vote = live();
    step(&mut plain_vote, env(2, 3, 2, vote(lid(1, 1))));
    assert_eq!(plain_vote.take_actions(), vec![]);
    assert_eq!(plain_vote.term(), Term(1));

    let mut f = live();
    step(&mut f, env(2, 3, 2, vote_transfer(lid(1, 1))));
    assert_eq!(
        f.take_actions(),
        vec![
            save(2, Some(2), 0),
            send_after_persist(3, 2, 2, vote_resp(true))
        ]
    );
    assert_eq!(f.vote(), Some(NodeId(2)));
}

/// Case 21 (thesis §3.10): the leader itself grants the transfer vote of
/// a higher term and steps down.
#[test]
fn case_21_leader_steps_down_for_transfer_vote() {
    let mut e = leader();
    e.transfer_leader(Some(NodeId(2))).unwrap();
    e.take_actions();
    step(&mut e, env(2, 1, 2, vote_transfer(lid(1, 1))));
    assert_eq!(
        e.take_actions(),
        vec![
            save(2, Some(2), 1),
            send_after_persist(1, 2, 2, vote_resp(true))
        ]
    );
    assert_eq!(e.role(), Role::Follower);
    assert_eq!(e.transfer_target(), None);
}

/// Case 21 (thesis §3.10): without a target the leader picks the voter
/// holding the most of its log (here node 3, although node 2 has the
/// lower id).
#[test]
fn case_21_transfer_to_none_picks_most_caught_up_voter() {
    let mut e = engine(1, &[1, 2, 3], plain);
    elect(&mut e);
    e.on_persisted(Some(lid(1, 1)));
    step(&mut e, env(3, 1, 1, success(1)));
    e.take_actions();
    assert_eq!(e.transfer_leader(None), Ok(NodeId(3)));
    assert_eq!(e.take_actions(), vec![send(1, 3, 1, Message::TimeoutNow)]);
}

/// Thesis §3.10: only the leader transfers, only to a voter, one transfer
/// at a time; a group of one has nobody to transfer to, and a transfer to
/// the leader itself is done already.
#[test]
fn case_21_transfer_errors() {
    let mut f = engine(2, &[1, 2, 3], plain);
    step(&mut f, env(1, 2, 1, heartbeat(0)));
    assert_eq!(
        f.transfer_leader(Some(NodeId(3))),
        Err(TransferError::NotLeader {
            leader: Some(NodeId(1))
        })
    );

    let mut e = leader();
    assert_eq!(
        e.transfer_leader(Some(NodeId(4))),
        Err(TransferError::NotVoter(NodeId(4)))
    );
    assert_eq!(e.transfer_leader(Some(NodeId(1))), Ok(NodeId(1)));
    assert_eq!(e.transfer_target(), None);
    assert_eq!(e.take_actions(), vec![]);
    e.transfer_leader(Some(NodeId(2))).unwrap();
    assert_eq!(
        e.transfer_leader(Some(NodeId(3))),
        Err(TransferError::InProgress { target: NodeId(2) })
    );

    let mut solo = engine(1, &[1], plain);
    solo.tick(0);
    solo.take_actions();
    solo.on_persisted(None);
    assert_eq!(solo.role(), Role::Leader);
    assert_eq!(solo.transfer_leader(None), Err(TransferError::NoTarget));
}

/// Thesis §3.10: a learner is not a voter: no transfer to it.
#[test]
fn case_21_transfer_to_learner_is_refused() {
    let mut e = leader();
    e.change_membership(MembershipChange::AddLearner(NodeId(4)))
        .unwrap();
    e.take_actions();
    assert_eq!(
        e.transfer_leader(Some(NodeId(4))),
        Err(TransferError::NotVoter(NodeId(4)))
    );
}

/// Case 21 (thesis §3.10): in a whole group, the transfer ends with the
/// target leading the next term, the old leader following it, and
/// proposals committing on the new leader; no entry is lost.
#[test]
fn case_21_transfer_hands_leadership_to_target() {
    let mut c = Cluster::three_led_by_1();
    let before = c.node_mut(1).propose(Bytes::from_static(b"a")).unwrap();
    c.run();
    assert_eq!(
        c.node_mut(1).transfer_leader(Some(NodeId(3))),
        Ok(NodeId(3))
    );
    c.run();
    assert!(c.sent_between(1, 3).contains(&&Message::TimeoutNow));
    let req = vote_transfer(c.node(1).entry(before.index).unwrap().id);
    assert!(c.sent_between(3, 1).contains(&&req));
    assert!(c.sent_between(3, 2).contains(&&req));
    assert_eq!(
        (c.node(3).role(), c.node(3).term()),
        (Role::Leader, Term(2))
    );
    for n in [1, 2] {
        assert_eq!(c.node(n).role(), Role::Follower, "node {n}");
        assert_eq!(c.node(n).leader(), Some(NodeId(3)), "node {n}");
    }
    let after = c.node_mut(3).propose(Bytes::from_static(b"b")).unwrap();
    c.run();
    for n in 1..=3 {
        let ids: Vec<LogId> = c.applied_by(n).iter().map(|e| e.id).collect();
        assert!(ids.contains(&before) && ids.contains(&after), "node {n}");
        assert_eq!(c.node(n).commit_index(), after.index, "node {n}");
    }
}

/// Case 21 with §7: a target that catches up by installing a snapshot
/// that reaches the leader's last entry is then up to date, so the leader
/// sends it `TimeoutNow`.
#[test]
fn case_21_transfer_to_target_caught_up_by_snapshot_sends_timeout_now() {
    let mut l = restarted(engine(1, &[1, 2, 3], |i| {
        i.snapshot = Some(snap(lid(1, 5), &[1, 2, 3], b"old"));
        i.compacted = lid(1, 5);
        i.hard_state = hs(1, None, 5);
        i.applied = LogIndex(5);
    }));
    elect(&mut l);
    l.on_persisted(Some(lid(2, 6)));
    step(&mut l, env(2, 1, 2, success(6)));
    assert_eq!(l.commit_index(), LogIndex(6));
    assert!(l.on_snapshot_built(lid(2, 6), Bytes::from_static(b"new")));
    l.take_actions();
    let s = snap(lid(2, 6), &[1, 2, 3], b"new");

    // Node 3 holds nothing: it gets the snapshot, which covers the log.
    step(&mut l, env(3, 1, 2, conflict(5, 1, None)));
    assert_eq!(l.take_actions(), vec![send(1, 3, 2, chunk(&s, 0, 3))]);
    assert_eq!(l.transfer_leader(Some(NodeId(3))), Ok(NodeId(3)));
    assert_eq!(l.take_actions(), vec![]);
    step(&mut l, env(3, 1, 2, snapshot_resp(lid(2, 6), 3, true)));
    assert_eq!(l.progress(NodeId(3)).map(|p| p.matched), Some(LogIndex(6)));
    assert_eq!(l.take_actions(), vec![send(1, 3, 2, Message::TimeoutNow)]);
}
