//! Answering vote and pre-vote requests: one vote per term (§5.2), the
//! election restriction (§5.4.1), pre-vote (thesis §9.6) and leader
//! stickiness.

use super::*;

/// §5.2: a vote is staged with the new term before the grant, which leaves
/// only once the vote is durable; a second candidate of the same term is
/// refused, while the first one asking again is granted again.
#[test]
fn s5_2_grants_at_most_one_vote_per_term() {
    let mut e = engine(1, &[1, 2, 3], plain);
    step(&mut e, env(2, 1, 1, vote(lid(0, 0))));
    assert_eq!(
        e.take_actions(),
        vec![
            save(1, Some(2), 0),
            send_after_persist(1, 2, 1, vote_resp(true))
        ]
    );
    assert_eq!(e.vote(), Some(NodeId(2)));

    step(&mut e, env(3, 1, 1, vote(lid(0, 0))));
    assert_eq!(
        e.take_actions(),
        vec![send_after_persist(1, 3, 1, vote_resp(false))]
    );

    step(&mut e, env(2, 1, 1, vote(lid(0, 0))));
    assert_eq!(
        e.take_actions(),
        vec![send_after_persist(1, 2, 1, vote_resp(true))]
    );
    assert_eq!(e.vote(), Some(NodeId(2)));
}

/// §5.2: a vote cast before a restart is remembered: the restarted node
/// refuses another candidate of that term.
#[test]
fn s5_2_durable_vote_survives_restart() {
    let mut e = engine(1, &[1, 2, 3], stored(&[], 4, Some(2), 0));
    step(&mut e, env(3, 1, 4, vote(lid(0, 0))));
    assert_eq!(
        e.take_actions(),
        vec![send_after_persist(1, 3, 4, vote_resp(false))]
    );
}

/// §5.2: a candidate has voted for itself and refuses its rivals of the
/// same term.
#[test]
fn s5_2_candidate_refuses_rival_of_same_term() {
    let mut e = engine(1, &[1, 2, 3], no_pre_vote);
    e.tick(200);
    e.take_actions();
    step(&mut e, env(2, 1, 1, vote(lid(0, 0))));
    assert_eq!(
        e.take_actions(),
        vec![send_after_persist(1, 2, 1, vote_resp(false))]
    );
    assert_eq!(e.role(), Role::Candidate);
}

/// §5.2: a follower that already follows a leader of this term refuses
/// votes in it.
#[test]
fn s5_2_follower_of_known_leader_refuses_vote_in_same_term() {
    let mut e = engine(1, &[1, 2, 3], stored(&[], 1, None, 0));
    step(&mut e, env(2, 1, 1, heartbeat(0)));
    e.take_actions();
    step(&mut e, env(3, 1, 1, vote(lid(0, 0))));
    assert_eq!(
        e.take_actions(),
        vec![send_after_persist(1, 3, 1, vote_resp(false))]
    );
    assert_eq!(e.vote(), None);
}

/// §5.1 and §5.2: a vote request of a higher term, with no live leader
/// known, makes the node adopt the term (and clear its vote) even when it
/// refuses the vote.
#[test]
fn s5_1_higher_term_vote_request_is_adopted() {
    let mut e = restarted(engine(1, &[1, 2, 3], stored(&[1, 2], 2, Some(1), 0)));
    step(&mut e, env(2, 1, 5, vote(lid(1, 7))));
    assert_eq!(
        e.take_actions(),
        vec![
            save(5, None, 0),
            send_after_persist(1, 2, 5, vote_resp(false))
        ]
    );
    assert_eq!(e.term(), Term(5));
    assert_eq!(e.vote(), None);
    assert_eq!(e.role(), Role::Follower);
}

/// §5.4.1: a candidate whose last entry has a lower term is refused, however
/// long its log.
#[test]
fn s5_4_1_refuses_candidate_with_lower_last_term() {
    let mut e = restarted(engine(1, &[1, 2, 3], stored(&[1, 1, 2], 2, None, 0)));
    step(&mut e, env(2, 1, 3, vote(lid(1, 9))));
    assert_eq!(
        e.take_actions(),
        vec![
            save(3, None, 0),
            send_after_persist(1, 2, 3, vote_resp(false))
        ]
    );
    assert_eq!(e.vote(), None);
}

/// §5.4.1: with the same last term, a shorter log is refused.
#[test]
fn s5_4_1_refuses_candidate_with_same_last_term_but_shorter_log() {
    let mut e = restarted(engine(1, &[1, 2, 3], stored(&[1, 1, 2], 3, None, 0)));
    step(&mut e, env(2, 1, 3, vote(lid(2, 2))));
    assert_eq!(
        e.take_actions(),
        vec![send_after_persist(1, 2, 3, vote_resp(false))]
    );
    assert_eq!(e.vote(), None);
}

/// §5.4.1: a log as up-to-date (same last term and index), or more (a
/// higher last term even if shorter), is granted the vote.
#[test]
fn s5_4_1_grants_candidate_at_least_as_up_to_date() {
    let mut e = restarted(engine(1, &[1, 2, 3], stored(&[1, 1, 2], 3, None, 0)));
    step(&mut e, env(2, 1, 3, vote(lid(2, 3))));
    assert_eq!(
        e.take_actions(),
        vec![
            save(3, Some(2), 0),
            send_after_persist(1, 2, 3, vote_resp(true))
        ]
    );

    let mut e = restarted(engine(1, &[1, 2, 3], stored(&[1, 1, 2], 3, None, 0)));
    step(&mut e, env(3, 1, 4, vote(lid(3, 2))));
    assert_eq!(
        e.take_actions(),
        vec![
            save(4, Some(3), 0),
            send_after_persist(1, 3, 4, vote_resp(true))
        ]
    );
}

/// §9.6: granting a pre-vote changes neither term nor vote; the answer is a
/// plain send in the term asked about.
#[test]
fn s9_6_granting_pre_vote_changes_no_state() {
    let mut e = restarted(engine(1, &[1, 2, 3], stored(&[1], 1, Some(3), 0)));
    step(&mut e, env(2, 1, 2, pre_vote(lid(1, 1))));
    assert_eq!(e.take_actions(), vec![send(1, 2, 2, pre_vote_resp(true))]);
    assert_eq!(e.term(), Term(1));
    assert_eq!(e.vote(), Some(NodeId(3)));
    assert_eq!(e.role(), Role::Follower);
}

/// §9.6 with §5.4.1: a pre-vote from a node whose log is behind is refused,
/// in this node's own term.
#[test]
fn s9_6_pre_vote_refused_when_log_behind() {
    let mut e = restarted(engine(1, &[1, 2, 3], stored(&[1, 1, 2], 2, None, 0)));
    step(&mut e, env(2, 1, 3, pre_vote(lid(1, 3))));
    assert_eq!(e.take_actions(), vec![send(1, 2, 2, pre_vote_resp(false))]);
    step(&mut e, env(2, 1, 3, pre_vote(lid(2, 2))));
    assert_eq!(e.take_actions(), vec![send(1, 2, 2, pre_vote_resp(false))]);
    assert_eq!(e.term(), Term(2));
}

/// §9.6, leader stickiness: while the node heard from a live leader within
/// the minimum election timeout, it refuses pre-votes and its term does not
/// move; once that time has passed it grants them again.
#[test]
fn s9_6_pre_vote_refused_while_leader_is_live() {
    let mut e = engine(1, &[1, 2, 3], stored(&[], 1, None, 0));
    step(&mut e, env(2, 1, 1, heartbeat(0)));
    e.take_actions();

    e.tick(99);
    assert_eq!(e.take_actions(), vec![]);
    step(&mut e, env(3, 1, 2, pre_vote(lid(0, 0))));
    assert_eq!(e.take_actions(), vec![send(1, 3, 1, pre_vote_resp(false))]);
    assert_eq!(e.term(), Term(1));
    assert_eq!(e.leader(), Some(NodeId(2)));

    e.tick(100);
    assert_eq!(
        e.role(),
        Role::Follower,
        "the timer fired: pick another seed"
    );
    assert_eq!(e.take_actions(), vec![]);
    step(&mut e, env(3, 1, 2, pre_vote(lid(0, 0))));
    assert_eq!(e.take_actions(), vec![send(1, 3, 2, pre_vote_resp(true))]);
    assert_eq!(e.term(), Term(1));
}

/// Leader stickiness: a vote request of a higher term is ignored entirely
/// while a live leader is known, so the term does not move.
#[test]
fn stickiness_ignores_higher_term_vote_while_leader_is_live() {
    let mut e = engine(1, &[1, 2, 3], stored(&[], 1, None, 0));
    step(&mut e, env(2, 1, 1, heartbeat(0)));
    e.take_actions();
    e.tick(50);
    step(&mut e, env(3, 1, 2, vote(lid(0, 0))));
    assert_eq!(e.take_actions(), vec![]);
    assert_eq!(e.term(), Term(1));
    assert_eq!(e.vote(), None);
    assert_eq!(e.leader(), Some(NodeId(2)));
}

/// Leader stickiness: a leader (check-quorum on) ignores vote requests of a
/// higher term and keeps leading.
#[test]
fn stickiness_leader_ignores_higher_term_vote() {
    let mut e = engine(1, &[1, 2, 3], plain);
    elect(&mut e);
    step(&mut e, env(3, 1, 5, vote(lid(1, 9))));
    assert_eq!(e.take_actions(), vec![]);
    assert_eq!(e.role(), Role::Leader);
    assert_eq!(e.term(), Term(1));
}

/// Without check-quorum there is no stickiness: a higher-term vote request
/// is handled (and granted) even though a leader was just heard.
#[test]
fn stickiness_needs_check_quorum() {
    let mut e = engine(1, &[1, 2, 3], |i| {
        i.config.check_quorum = false;
        i.hard_state = hs(1, None, 0);
    });
    step(&mut e, env(2, 1, 1, heartbeat(0)));
    e.take_actions();
    step(&mut e, env(3, 1, 2, vote(lid(0, 0))));
    assert_eq!(
        e.take_actions(),
        vec![
            save(2, Some(3), 0),
            send_after_persist(1, 3, 2, vote_resp(true))
        ]
    );
}
