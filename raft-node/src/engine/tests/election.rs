//! Elections (§5.2), pre-vote campaigns (thesis §9.6), the first entry of a
//! new leader (§8: blank, or the bootstrap voters when the log records no
//! membership), check-quorum, and stepping down on a newer term (§5.1).

use super::*;

/// §5.2: no election starts before the minimum election timeout, and one
/// has started by the (exclusive) maximum.
#[test]
fn s5_2_election_timeout_is_randomized_within_min_max() {
    let mut e = engine(1, &[1, 2, 3], plain);
    e.tick(99);
    assert_eq!(e.take_actions(), vec![]);
    assert_eq!(e.role(), Role::Follower);
    e.tick(199);
    assert_eq!(e.role(), Role::PreCandidate);
}

/// §5.2 with §9.6: a follower whose election timeout fires becomes a
/// pre-candidate and asks every peer, with plain sends, whether it could win
/// in term + 1 with its last log id. Its term and vote do not change.
#[test]
fn s9_6_timeout_starts_pre_vote_without_changing_hard_state() {
    let mut e = engine(1, &[1, 2, 3], stored(&[1, 1, 2], 2, Some(3), 0));
    e.tick(200);
    let req = pre_vote(lid(2, 3));
    assert_eq!(
        e.take_actions(),
        vec![send(1, 2, 3, req.clone()), send(1, 3, 3, req)]
    );
    assert_eq!(e.role(), Role::PreCandidate);
    assert_eq!(e.term(), Term(2));
    assert_eq!(e.vote(), Some(NodeId(3)));
}

/// §5.2: without pre-vote, the timeout makes the follower a candidate of
/// term + 1 voting for itself; term and vote are staged first and the vote
/// requests leave only after they are durable.
#[test]
fn s5_2_timeout_without_pre_vote_starts_election_after_persisting_vote() {
    let mut e = engine(1, &[1, 2, 3], no_pre_vote);
    e.tick(200);
    let req = vote(lid(0, 0));
    assert_eq!(
        e.take_actions(),
        vec![
            save(1, Some(1), 0),
            send_after_persist(1, 2, 1, req.clone()),
            send_after_persist(1, 3, 1, req),
        ]
    );
    assert_eq!(e.role(), Role::Candidate);
    assert_eq!(e.term(), Term(1));
    assert_eq!(e.vote(), Some(NodeId(1)));
}

/// §9.6: a quorum of granted pre-votes (its own included) starts the real
/// election: term + 1, vote for self, durable before the vote requests.
#[test]
fn s9_6_pre_vote_quorum_starts_real_election() {
    let mut e = engine(1, &[1, 2, 3], plain);
    e.tick(200);
    e.take_actions();
    step(&mut e, env(2, 1, 1, pre_vote_resp(true)));
    let req = vote(lid(0, 0));
    assert_eq!(
        e.take_actions(),
        vec![
            save(1, Some(1), 0),
            send_after_persist(1, 2, 1, req.clone()),
            send_after_persist(1, 3, 1, req),
        ]
    );
    assert_eq!(e.role(), Role::Candidate);
}

/// §9.6: a pre-candidate refused by a quorum goes back to being a follower
/// in the same term, having changed nothing durable.
#[test]
fn s9_6_pre_candidate_refused_by_quorum_returns_to_follower() {
    let mut e = engine(1, &[1, 2, 3], stored(&[1], 1, None, 0));
    e.tick(200);
    e.take_actions();
    step(&mut e, env(2, 1, 1, pre_vote_resp(false)));
    assert_eq!(e.take_actions(), vec![]);
    assert_eq!(e.role(), Role::PreCandidate);
    step(&mut e, env(3, 1, 1, pre_vote_resp(false)));
    assert_eq!(e.take_actions(), vec![]);
    assert_eq!(e.role(), Role::Follower);
    assert_eq!(e.term(), Term(1));
    assert_eq!(e.vote(), None);
}

/// §9.6 with §5.1: a refusal carrying a newer term makes the pre-candidate
/// adopt that term as a follower.
#[test]
fn s9_6_pre_vote_refusal_with_newer_term_is_adopted() {
    let mut e = engine(1, &[1, 2, 3], plain);
    e.tick(200);
    e.take_actions();
    step(&mut e, env(2, 1, 5, pre_vote_resp(false)));
    assert_eq!(e.take_actions(), vec![save(5, None, 0)]);
    assert_eq!(e.role(), Role::Follower);
    assert_eq!(e.term(), Term(5));
}

/// What node 1 of `[1, 2, 3]` emits on winning term 1 with an empty log:
/// it stages the first entry of its term (the bootstrap voters, as the log
/// records no membership) and probes both peers with it.
fn leader_start_of_node_1(first: Entry) -> Vec<Action> {
    assert_eq!(
        (first.id, &first.payload),
        (lid(1, 1), &bootstrap(&[1, 2, 3]))
    );
    let probe = append(lid(0, 0), vec![first.clone()], 0);
    vec![
        Action::AppendLog(vec![first]),
        send(1, 2, 1, probe.clone()),
        send(1, 3, 1, probe),
    ]
}

/// §5.2: a candidate wins with a quorum of votes, but its own vote counts
/// only once it is durable: grants alone do not make it leader. As leader it
/// appends the first entry of its term (§8), here the bootstrap voters as
/// its log records no membership, and probes every peer with it.
#[test]
fn s5_2_candidate_leads_after_quorum_and_durable_own_vote() {
    let mut e = engine(1, &[1, 2, 3], no_pre_vote);
    e.tick(200);
    e.take_actions();
    step(&mut e, env(2, 1, 1, vote_resp(true)));
    assert_eq!(e.take_actions(), vec![]);
    assert_eq!(e.role(), Role::Candidate);

    e.on_persisted(None);
    assert_eq!(e.role(), Role::Leader);
    assert_eq!(e.leader(), Some(NodeId(1)));
    let first = entry_at(&e, 1);
    assert_eq!(first.id, lid(1, 1));
    assert_eq!(first.payload, bootstrap(&[1, 2, 3]));
    assert_eq!(e.take_actions(), leader_start_of_node_1(first));
    // Exactly the configuration in effect: no change, now recorded at 1.
    assert_eq!(e.membership(), &members(&[1, 2, 3], &[]));
    assert_eq!(e.membership_index(), LogIndex(1));
}

/// §5.2: the same rule in the other order: a durable own vote plus one
/// grant is a quorum of three, and the grant completes the election.
#[test]
fn s5_2_candidate_with_durable_vote_leads_on_first_grant() {
    let mut e = engine(1, &[1, 2, 3], no_pre_vote);
    e.tick(200);
    e.take_actions();
    e.on_persisted(None);
    assert_eq!(e.take_actions(), vec![]);
    assert_eq!(e.role(), Role::Candidate);
    step(&mut e, env(3, 1, 1, vote_resp(true)));
    assert_eq!(e.role(), Role::Leader);
    let first = entry_at(&e, 1);
    assert_eq!(e.take_actions(), leader_start_of_node_1(first));
}

/// §5.2: a candidate refused by a quorum becomes a follower in its term,
/// keeping its vote for itself.
#[test]
fn s5_2_candidate_refused_by_quorum_returns_to_follower() {
    let mut e = engine(1, &[1, 2, 3], no_pre_vote);
    e.tick(200);
    e.take_actions();
    step(&mut e, env(2, 1, 1, vote_resp(false)));
    step(&mut e, env(3, 1, 1, vote_resp(false)));
    assert_eq!(e.take_actions(), vec![]);
    assert_eq!(e.role(), Role::Follower);
    assert_eq!(e.term(), Term(1));
    assert_eq!(e.vote(), Some(NodeId(1)));
}

/// §5.2: a candidate whose election times out (split vote) starts a new
/// election in the next term.
#[test]
fn s5_2_candidate_timeout_starts_new_term() {
    let mut e = engine(1, &[1, 2, 3], no_pre_vote);
    e.tick(200);
    e.take_actions();
    e.tick(399);
    let req = vote(lid(0, 0));
    assert_eq!(
        e.take_actions(),
        vec![
            save(2, Some(1), 0),
            send_after_persist(1, 2, 2, req.clone()),
            send_after_persist(1, 3, 2, req),
        ]
    );
    assert_eq!(e.term(), Term(2));
}

/// §5.2: a candidate that receives an append from a leader of its own term
/// recognises that leader and becomes a follower.
#[test]
fn s5_2_candidate_steps_down_for_leader_of_same_term() {
    let mut e = engine(1, &[1, 2, 3], no_pre_vote);
    e.tick(200);
    e.take_actions();
    step(&mut e, env(2, 1, 1, append(lid(0, 0), vec![ent(1, 1)], 0)));
    assert_eq!(
        e.take_actions(),
        vec![
            Action::AppendLog(vec![ent(1, 1)]),
            send_after_persist(1, 2, 1, success(1)),
        ]
    );
    assert_eq!(e.role(), Role::Follower);
    assert_eq!(e.leader(), Some(NodeId(2)));
    assert_eq!(e.vote(), Some(NodeId(1)));
}

/// §5.2 and §8: a group of one votes for itself on its first tick, leads
/// once that vote is durable, appends the first entry of its term (its
/// bootstrap voters, as its log records no membership) and commits it alone
/// once it is durable; a proposal then commits the same way.
#[test]
fn s8_single_voter_elects_itself_and_commits_alone() {
    let mut e = engine(1, &[1], plain);
    e.tick(0);
    assert_eq!(e.take_actions(), vec![save(1, Some(1), 0)]);
    assert_eq!(e.role(), Role::Candidate);

    e.on_persisted(None);
    assert_eq!(e.role(), Role::Leader);
    let first = entry_at(&e, 1);
    assert_eq!((first.id, &first.payload), (lid(1, 1), &bootstrap(&[1])));
    assert_eq!(
        e.take_actions(),
        vec![Action::AppendLog(vec![first.clone()])]
    );

    e.on_persisted(Some(lid(1, 1)));
    assert_eq!(e.take_actions(), vec![Action::Apply(vec![first])]);

    let id = e.propose(Bytes::from_static(b"x")).expect("leader");
    assert_eq!(id, lid(1, 2));
    let cmd = entry_at(&e, 2);
    assert_eq!(cmd.payload, Payload::Command(Bytes::from_static(b"x")));
    // The commit index moved alone before: it is written with the entry.
    assert_eq!(
        e.take_actions(),
        vec![Action::AppendLog(vec![cmd.clone()]), save(1, Some(1), 1)]
    );
    assert_eq!(e.commit_index(), LogIndex(1));

    e.on_persisted(Some(id));
    assert_eq!(e.take_actions(), vec![Action::Apply(vec![cmd])]);
    assert_eq!(e.applied_index(), LogIndex(2));
}

/// §5.2: heartbeats from a leader reset the follower's election timer, so
/// no election starts while they keep coming.
#[test]
fn s5_2_heartbeats_hold_off_elections() {
    let mut e = engine(2, &[1, 2, 3], stored(&[], 1, None, 0));
    for now in (0..1000).step_by(50) {
        e.tick(now);
        step(&mut e, env(1, 2, 1, heartbeat(0)));
        assert_eq!(e.take_actions(), vec![send(2, 1, 1, heartbeat_resp())]);
    }
    assert_eq!(e.role(), Role::Follower);
    assert_eq!(e.leader(), Some(NodeId(1)));
}

/// Check-quorum: a leader that hears from no quorum within the minimum
/// election timeout steps down, in the same term.
#[test]
fn check_quorum_isolated_leader_steps_down() {
    let mut e = engine(1, &[1, 2, 3], plain);
    elect(&mut e);
    assert_eq!(e.term(), Term(1));
    e.tick(20);
    assert_eq!(
        e.take_actions(),
        vec![
            send(1, 2, 1, heartbeat_round(0, 1)),
            send(1, 3, 1, heartbeat_round(0, 1))
        ]
    );
    e.tick(99);
    assert_eq!(e.role(), Role::Leader);
    e.take_actions();
    e.tick(100);
    assert_eq!(e.take_actions(), vec![]);
    assert_eq!(e.role(), Role::Follower);
    assert_eq!(e.term(), Term(1));
    assert_eq!(e.leader(), None);
}

/// Check-quorum: a leader that hears from a quorum stays leader, and it
/// needs fresh answers in every window.
#[test]
fn check_quorum_leader_hearing_quorum_stays_each_window() {
    let mut e = engine(1, &[1, 2, 3], plain);
    elect(&mut e);
    e.tick(50);
    e.take_actions();
    step(&mut e, env(2, 1, 1, heartbeat_resp()));
    e.take_actions();

    e.tick(100);
    assert_eq!(e.role(), Role::Leader);
    assert_eq!(
        e.take_actions(),
        vec![
            send(1, 2, 1, heartbeat_round(0, 2)),
            send(1, 3, 1, heartbeat_round(0, 2))
        ]
    );

    // Nobody answers in the next window.
    e.tick(199);
    assert_eq!(e.role(), Role::Leader);
    e.take_actions();
    e.tick(200);
    assert_eq!(e.role(), Role::Follower);
    assert_eq!(e.take_actions(), vec![]);
}

/// Check-quorum off: a leader never steps down for lack of answers.
#[test]
fn check_quorum_off_leader_keeps_leading() {
    let mut e = engine(1, &[1, 2, 3], |i| i.config.check_quorum = false);
    elect(&mut e);
    e.tick(1000);
    assert_eq!(e.role(), Role::Leader);
    assert_eq!(
        e.take_actions(),
        vec![
            send(1, 2, 1, heartbeat_round(0, 1)),
            send(1, 3, 1, heartbeat_round(0, 1))
        ]
    );
}

/// §5.1: any message carrying a newer term makes a leader step down to
/// follower in that term, and the new term is staged.
#[test]
fn s5_1_leader_steps_down_on_any_newer_term() {
    for msg in [
        success(1),
        conflict(1, 1, None),
        heartbeat_resp(),
        vote_resp(false),
        pre_vote_resp(false),
    ] {
        let mut e = engine(1, &[1, 2, 3], plain);
        elect(&mut e);
        step(&mut e, env(2, 1, 2, msg.clone()));
        assert_eq!(e.take_actions(), vec![save(2, None, 0)], "{msg:?}");
        assert_eq!(e.role(), Role::Follower, "{msg:?}");
        assert_eq!(e.term(), Term(2), "{msg:?}");
        assert_eq!(e.leader(), None, "{msg:?}");
    }
}

/// §5.1: a leader that hears a heartbeat of a newer leader follows it.
#[test]
fn s5_1_leader_follows_newer_leader() {
    let mut e = engine(1, &[1, 2, 3], plain);
    elect(&mut e);
    step(&mut e, env(3, 1, 4, heartbeat(0)));
    assert_eq!(
        e.take_actions(),
        vec![send(1, 3, 4, heartbeat_resp()), save(4, None, 0)]
    );
    assert_eq!(e.role(), Role::Follower);
    assert_eq!(e.leader(), Some(NodeId(3)));
}

/// §5.1: a candidate steps down on a newer term too.
#[test]
fn s5_1_candidate_steps_down_on_newer_term() {
    let mut e = engine(1, &[1, 2, 3], no_pre_vote);
    e.tick(200);
    e.take_actions();
    step(&mut e, env(2, 1, 3, vote_resp(false)));
    assert_eq!(e.take_actions(), vec![save(3, None, 0)]);
    assert_eq!(e.role(), Role::Follower);
    assert_eq!(e.term(), Term(3));
}

/// §5.1: an append from a leader of an older term is answered in the newer
/// term, and its entries are not appended; the old leader, on that answer,
/// steps down.
#[test]
fn s5_1_stale_leader_is_told_newer_term_and_steps_down() {
    let mut old = engine(1, &[1, 2, 3], stored(&[1, 1], 1, None, 0));
    elect(&mut old);
    assert_eq!(old.term(), Term(2));
    let mut newer = engine(2, &[1, 2, 3], stored(&[1, 1], 3, None, 0));

    let stale = env(1, 2, 2, append(lid(1, 2), vec![entry_at(&old, 3)], 0));
    step(&mut newer, stale);
    let reply = env(2, 1, 3, heartbeat_resp());
    assert_eq!(newer.take_actions(), vec![Action::Send(reply.clone())]);
    assert_eq!(newer.last_log_id(), lid(1, 2));
    assert_eq!(newer.term(), Term(3));

    step(&mut old, reply);
    assert_eq!(old.take_actions(), vec![save(3, None, 0)]);
    assert_eq!(old.role(), Role::Follower);
}

/// §5.1: a stale heartbeat is answered in the newer term as well, and a
/// stale vote request is refused in the newer term.
#[test]
fn s5_1_stale_requests_are_answered_in_newer_term() {
    let mut e = engine(2, &[1, 2, 3], stored(&[], 3, None, 0));
    step(&mut e, env(1, 2, 2, heartbeat(0)));
    assert_eq!(e.take_actions(), vec![send(2, 1, 3, heartbeat_resp())]);
    step(&mut e, env(1, 2, 2, vote(lid(0, 0))));
    assert_eq!(e.take_actions(), vec![send(2, 1, 3, vote_resp(false))]);
    step(&mut e, env(1, 2, 2, pre_vote(lid(0, 0))));
    assert_eq!(e.take_actions(), vec![send(2, 1, 3, pre_vote_resp(false))]);
    assert_eq!(e.term(), Term(3));
    assert_eq!(e.leader(), None);
}

/// A flush that began before the vote was drained does not make it
/// durable: a candidate counts its own vote only after the flush that
/// holds it (`on_flushed` with the hard state recorded when it was staged).
#[test]
fn own_vote_counts_only_after_the_flush_that_holds_it() {
    let mut e = engine(1, &[1, 2, 3], no_pre_vote);
    let earlier = e.drained_hard_state();
    e.campaign();
    let actions = e.take_actions();
    assert_eq!(actions[0], save(1, Some(1), 0));
    let with_vote = e.drained_hard_state();
    assert_eq!(with_vote, hs(1, Some(1), 0));

    step(&mut e, env(2, 1, 1, vote_resp(true)));
    assert_eq!(e.role(), Role::Candidate, "its own vote is not durable");
    // The flush under way when the vote was drained ends: still not.
    e.on_flushed(earlier, None);
    assert_eq!(e.role(), Role::Candidate);
    // The next one held it.
    e.on_flushed(with_vote, None);
    assert_eq!(e.role(), Role::Leader);
}
