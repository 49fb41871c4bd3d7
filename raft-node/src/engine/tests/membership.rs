//! Membership changes (§6, thesis chapter 4): learners, promotion, removal
//! (of the leader too), joint consensus, one change at a time, and
//! followers following the membership entries of their log.

use std::collections::BTreeSet;

use super::*;
use crate::engine::MembershipChange;
use crate::error::ChangeError;

fn ids(v: &[u64]) -> BTreeSet<NodeId> {
    v.iter().copied().map(NodeId).collect()
}

/// Node 1, leader of `voters` in term 1 with the first entry of its term
/// (the bootstrap voters) committed.
fn leader(voters: &[u64]) -> Engine {
    let mut e = engine(1, voters, plain);
    elect(&mut e);
    commit_all(&mut e);
    e
}

/// Thesis §4.2.1: a learner is added with a membership entry that is in
/// effect at once; the leader replicates to the learner (probing after its
/// last entry) but does not need it to commit.
#[test]
fn case_20_add_learner_replicates_to_it_without_counting_it() {
    let mut e = leader(&[1, 2, 3]);
    let id = e
        .change_membership(MembershipChange::AddLearner(NodeId(4)))
        .unwrap();
    assert_eq!(id, lid(1, 2));
    let entry = entry_at(&e, 2);
    assert_eq!(
        entry.payload,
        Payload::Membership(Box::new(members(&[1, 2, 3], &[4])))
    );
    assert_eq!(
        e.take_actions(),
        vec![
            Action::AppendLog(vec![entry.clone()]),
            send(1, 2, 1, append(lid(1, 1), vec![entry.clone()], 1)),
            send(1, 3, 1, append(lid(1, 1), vec![entry.clone()], 1)),
            send(1, 4, 1, append(lid(1, 2), vec![], 1)),
            // The commit index of the term's first entry rides along.
            save(1, Some(1), 1),
        ]
    );
    assert_eq!(e.membership(), &members(&[1, 2, 3], &[4]));
    assert_eq!(e.membership_index(), LogIndex(2));
    assert_eq!(e.progress(NodeId(4)).map(|p| p.matched), Some(LogIndex(0)));

    e.on_persisted(Some(id));
    step(&mut e, env(2, 1, 1, success(2)));
    assert_eq!(e.commit_index(), LogIndex(2));
}

/// Thesis §4.2.1: a learner is promoted only once it is within
/// `max_promote_lag` (2) entries of the leader's log; before that the
/// change is refused with `LearnerBehind`.
#[test]
fn case_20_promote_refused_while_learner_lags_then_accepted() {
    let mut e = leader(&[1, 2, 3]);
    e.change_membership(MembershipChange::AddLearner(NodeId(4)))
        .unwrap();
    e.on_persisted(Some(lid(1, 2)));
    step(&mut e, env(2, 1, 1, success(2)));
    e.propose(Bytes::from_static(b"a")).unwrap();
    e.propose(Bytes::from_static(b"b")).unwrap();
    e.take_actions();

    assert_eq!(
        e.change_membership(MembershipChange::Promote(NodeId(4))),
        Err(ChangeError::LearnerBehind {
            node: NodeId(4),
            lag: 4,
            max: 2
        })
    );
    assert_eq!(e.take_actions(), vec![]);

    // The learner's empty log refuses the probe; it then takes 1..=4.
    step(&mut e, env(4, 1, 1, conflict(2, 1, None)));
    e.take_actions();
    step(&mut e, env(4, 1, 1, success(4)));
    // Two entries it does not hold yet: a lag of exactly the maximum.
    e.propose(Bytes::from_static(b"c")).unwrap();
    e.propose(Bytes::from_static(b"d")).unwrap();
    e.take_actions();
    let id = e
        .change_membership(MembershipChange::Promote(NodeId(4)))
        .unwrap();
    assert_eq!(id, lid(1, 7));
    assert_eq!(e.membership(), &members(&[1, 2, 3, 4], &[]));
    assert!(!e.membership().is_joint());
}

/// Only learners are promoted: a node that is not one is refused.
#[test]
fn case_20_promote_of_non_learner_is_refused() {
    let mut e = leader(&[1, 2, 3]);
    assert_eq!(
        e.change_membership(MembershipChange::Promote(NodeId(4))),
        Err(ChangeError::NotLearner(NodeId(4)))
    );
    assert_eq!(
        e.change_membership(MembershipChange::AddLearner(NodeId(2))),
        Err(ChangeError::AlreadyMember(NodeId(2)))
    );
    assert_eq!(
        e.change_membership(MembershipChange::Remove(NodeId(9))),
        Err(ChangeError::NotMember(NodeId(9)))
    );
    assert_eq!(e.take_actions(), vec![]);
}

/// §6: removing a voter is in effect at once (the new configuration alone
/// decides commitment), the removed node is still replicated to until the
/// change commits, and no longer afterwards.
#[test]
fn case_20_remove_voter_stops_replicating_once_committed() {
    let mut e = leader(&[1, 2, 3]);
    let id = e
        .change_membership(MembershipChange::Remove(NodeId(3)))
        .unwrap();
    let entry = entry_at(&e, 2);
    assert_eq!(
        entry.payload,
        Payload::Membership(Box::new(members(&[1, 2], &[])))
    );
    assert_eq!(
        e.take_actions(),
        vec![
            Action::AppendLog(vec![entry.clone()]),
            send(1, 2, 1, append(lid(1, 1), vec![entry.clone()], 1)),
            send(1, 3, 1, append(lid(1, 1), vec![entry.clone()], 1)),
            save(1, Some(1), 1),
        ]
    );
    // Node 3's acknowledgement does not count any more: {1, 2} decide.
    e.on_persisted(Some(id));
    step(&mut e, env(3, 1, 1, success(2)));
    assert_eq!(e.commit_index(), LogIndex(1));
    e.take_actions();
    step(&mut e, env(2, 1, 1, success(2)));
    assert_eq!(
        e.take_actions(),
        vec![
            send(1, 2, 1, append(lid(1, 2), vec![], 2)),
            send(1, 3, 1, append(lid(1, 2), vec![], 2)),
            Action::Apply(vec![entry]),
        ]
    );
    assert!(e.progress(NodeId(3)).is_none());
    e.propose(Bytes::from_static(b"x")).unwrap();
    let x = entry_at(&e, 3);
    assert_eq!(
        e.take_actions(),
        vec![
            Action::AppendLog(vec![x.clone()]),
            send(1, 2, 1, append(lid(1, 2), vec![x], 2)),
            save(1, Some(1), 2),
        ]
    );
}

/// Thesis §4.1: one change at a time: while a membership entry is not
/// committed, another change is refused with `InProgress`.
#[test]
fn case_20_second_change_while_one_is_uncommitted_is_refused() {
    let mut e = leader(&[1, 2, 3]);
    e.change_membership(MembershipChange::AddLearner(NodeId(4)))
        .unwrap();
    e.take_actions();
    assert_eq!(
        e.change_membership(MembershipChange::AddLearner(NodeId(5))),
        Err(ChangeError::InProgress)
    );
    assert_eq!(
        e.change_membership(MembershipChange::Remove(NodeId(3))),
        Err(ChangeError::InProgress)
    );
    assert_eq!(e.take_actions(), vec![]);
    assert_eq!(e.last_log_id(), lid(1, 2));

    e.on_persisted(Some(lid(1, 2)));
    step(&mut e, env(2, 1, 1, success(2)));
    assert_eq!(
        e.change_membership(MembershipChange::AddLearner(NodeId(5))),
        Ok(lid(1, 3))
    );
}

/// Thesis §4.1 (the bug found in the single-server change algorithm): a
/// new leader changes nothing before an entry of its own term is
/// committed; it answers `NotReady`. A follower answers `NotLeader`.
#[test]
fn case_20_new_leader_refuses_changes_before_committing_its_first_entry() {
    let mut e = engine(1, &[1, 2, 3], plain);
    elect(&mut e);
    assert_eq!(
        e.change_membership(MembershipChange::AddLearner(NodeId(4))),
        Err(ChangeError::NotReady)
    );
    assert_eq!(e.take_actions(), vec![]);
    assert_eq!(e.last_log_id(), lid(1, 1));

    let mut f = engine(2, &[1, 2, 3], plain);
    step(&mut f, env(1, 2, 1, heartbeat(0)));
    assert_eq!(
        f.change_membership(MembershipChange::AddLearner(NodeId(4))),
        Err(ChangeError::NotLeader {
            leader: Some(NodeId(1))
        })
    );
}

/// Leader 1 of `[1, 2, 3]` in a cluster with nodes 4 and 5, which joined
/// as learners and caught up.
fn five_with_learners() -> Cluster {
    let mut c = Cluster::new(vec![
        engine(1, &[1, 2, 3], plain),
        engine(2, &[1, 2, 3], plain),
        engine(3, &[1, 2, 3], plain),
        engine(4, &[], plain),
        engine(5, &[], plain),
    ]);
    c.node_mut(1).campaign();
    c.run();
    for n in [4, 5] {
        c.node_mut(1)
            .change_membership(MembershipChange::AddLearner(NodeId(n)))
            .unwrap();
        c.run();
    }
    assert_eq!(c.node(1).membership(), &members(&[1, 2, 3], &[4, 5]));
    assert_eq!(c.node(1).commit_index(), LogIndex(3));
    assert_eq!(c.node(4).last_log_id(), lid(1, 3));
    c
}

/// Thesis §4.3 (§6): replacing two or more voters goes through a joint
/// configuration, in effect as soon as its entry is appended; once it is
/// committed the leader appends the new configuration by itself, and the
/// change is done when that commits.
#[test]
fn case_20_replace_voters_goes_through_joint_configuration() {
    let mut c = five_with_learners();
    let id = c
        .node_mut(1)
        .change_membership(MembershipChange::ReplaceVoters(ids(&[1, 4, 5])))
        .unwrap();
    assert_eq!(id, lid(1, 4));
    let joint = Membership {
        voters: ids(&[1, 4, 5]),
        outgoing: ids(&[1, 2, 3]),
        learners: BTreeSet::new(),
    };
    assert!(c.node(1).membership().is_joint());
    assert_eq!(c.node(1).membership(), &joint);
    assert_eq!(
        entry_at(c.node(1), 4).payload,
        Payload::Membership(Box::new(joint.clone()))
    );

    c.run();
    let final_config = members(&[1, 4, 5], &[]);
    let l = c.node(1);
    assert_eq!(l.role(), Role::Leader);
    assert_eq!(l.membership(), &final_config);
    assert_eq!(l.membership_index(), LogIndex(5));
    assert_eq!(
        entry_at(l, 5).payload,
        Payload::Membership(Box::new(final_config.clone()))
    );
    assert_eq!(l.commit_index(), LogIndex(5));
    assert!(l.progress(NodeId(2)).is_none() && l.progress(NodeId(3)).is_none());
    for n in [4, 5] {
        assert_eq!(c.node(n).membership(), &final_config, "node {n}");
        assert_eq!(c.node(n).commit_index(), LogIndex(5), "node {n}");
    }
    // The change is complete: another may start.
    assert!(
        c.node_mut(1)
            .change_membership(MembershipChange::Remove(NodeId(5)))
            .is_ok()
    );
}

/// Replaces voters 1, 2, 3 by 1, 4, 5 while the leader's links to `cut_off`
/// are down: the joint entry reaches `reached` but commits nothing until
/// the links come back; then the leader commits it and leaves the joint
/// configuration.
fn joint_change_stalls_without(cut_off: [u64; 2], reached: u64) {
    let mut c = five_with_learners();
    c.cut = cut_off.iter().flat_map(|&n| [(1, n), (n, 1)]).collect();
    c.node_mut(1)
        .change_membership(MembershipChange::ReplaceVoters(ids(&[1, 4, 5])))
        .unwrap();
    c.run();
    assert_eq!(c.node(reached).last_log_id(), lid(1, 4));
    assert_eq!(c.node(1).commit_index(), LogIndex(3));
    assert!(c.node(1).membership().is_joint());

    c.cut.clear();
    c.tick(20);
    assert_eq!(c.node(1).commit_index(), LogIndex(5));
    assert_eq!(c.node(1).membership(), &members(&[1, 4, 5], &[]));
}

/// Thesis §4.3: in the joint configuration a majority of the new voters
/// alone commits nothing; the majority of the old voters is needed too.
#[test]
fn case_20_joint_configuration_needs_old_majority_too() {
    joint_change_stalls_without([2, 3], 4);
}

/// Thesis §4.3: likewise a majority of the old voters alone commits
/// nothing in the joint configuration.
#[test]
fn case_20_joint_configuration_needs_new_majority_too() {
    joint_change_stalls_without([4, 5], 2);
}

/// Thesis §4.2.1: `ReplaceVoters` may only bring in learners that caught
/// up; anything else is refused and nothing is appended.
#[test]
fn case_20_replace_voters_requires_caught_up_learners() {
    let mut e = leader(&[1, 2, 3]);
    assert_eq!(
        e.change_membership(MembershipChange::ReplaceVoters(ids(&[1, 4, 5]))),
        Err(ChangeError::NotLearner(NodeId(4)))
    );
    assert_eq!(
        e.change_membership(MembershipChange::ReplaceVoters(ids(&[]))),
        Err(ChangeError::Invalid(raft_api::MembershipError::NoVoters))
    );
    assert_eq!(e.take_actions(), vec![]);
    assert_eq!(e.last_log_id(), lid(1, 1));
}

/// Thesis §4.2.1: a learner never campaigns: not when it starts with no
/// voters, not after it learned a membership naming it a learner, however
/// long it hears nothing, and not on `TimeoutNow`.
#[test]
fn case_20_learner_never_campaigns() {
    let mut e = engine(4, &[], plain);
    e.tick(10_000);
    e.campaign();
    assert_eq!(e.take_actions(), vec![]);
    assert_eq!(e.role(), Role::Follower);

    let m = membership_ent(1, 2, members(&[1, 2, 3], &[4]));
    step(
        &mut e,
        env(1, 4, 1, append(lid(0, 0), vec![ent(1, 1), m.clone()], 2)),
    );
    e.take_actions();
    assert_eq!(e.membership(), &members(&[1, 2, 3], &[4]));
    e.tick(20_000);
    e.campaign();
    step(&mut e, env(1, 4, 1, Message::TimeoutNow));
    assert_eq!(e.take_actions(), vec![]);
    assert_eq!((e.role(), e.term()), (Role::Follower, Term(1)));
}

/// Case 20 (thesis §4.2.2): a leader that removed itself keeps leading
/// until the change commits (without counting itself), then steps down and
/// sends `TimeoutNow` to the most caught-up remaining voter.
#[test]
fn case_20_removed_leader_steps_down_and_hands_over_once_committed() {
    let mut e = leader(&[1, 2, 3, 4]);
    let id = e
        .change_membership(MembershipChange::Remove(NodeId(1)))
        .unwrap();
    assert_eq!(id, lid(1, 2));
    let entry = entry_at(&e, 2);
    e.on_persisted(Some(id));
    e.take_actions();

    step(&mut e, env(3, 1, 1, success(2)));
    assert_eq!(e.take_actions(), vec![]);
    assert_eq!(e.role(), Role::Leader);
    assert_eq!(e.commit_index(), LogIndex(1), "the leader does not count");

    step(&mut e, env(4, 1, 1, success(2)));
    assert_eq!(
        e.take_actions(),
        vec![
            send(1, 2, 1, append(lid(1, 2), vec![], 2)),
            send(1, 3, 1, append(lid(1, 2), vec![], 2)),
            send(1, 4, 1, append(lid(1, 2), vec![], 2)),
            send(1, 3, 1, Message::TimeoutNow),
            Action::Apply(vec![entry]),
        ]
    );
    assert_eq!(e.role(), Role::Follower);
    assert_eq!(e.leader(), None);
    assert_eq!(e.term(), Term(1));
    // Not a voter any more: it never campaigns.
    e.tick(10_000);
    assert!(
        !e.take_actions()
            .iter()
            .any(|a| matches!(a, Action::Send(_) | Action::SendAfterPersist(_)))
    );
}

/// Case 9: node 3, removed and then re-added (as a learner), starts from
/// fresh progress: a delayed acknowledgement it sent before its removal
/// does not raise its match index.
#[test]
fn case_9_stale_success_from_before_removal_does_not_raise_match() {
    let mut e = leader(&[1, 2, 3]);
    e.propose(Bytes::from_static(b"a")).unwrap();
    e.on_persisted(Some(lid(1, 2)));
    step(&mut e, env(2, 1, 1, success(2)));
    // Node 3's success(2) is delayed. Node 3 is removed...
    e.change_membership(MembershipChange::Remove(NodeId(3)))
        .unwrap();
    e.on_persisted(Some(lid(1, 3)));
    step(&mut e, env(2, 1, 1, success(3)));
    assert!(e.progress(NodeId(3)).is_none());
    // ... and added back.
    e.change_membership(MembershipChange::AddLearner(NodeId(3)))
        .unwrap();
    e.take_actions();
    assert_eq!(e.progress(NodeId(3)).map(|p| p.matched), Some(LogIndex(0)));

    step(&mut e, env(3, 1, 1, success(2)));
    assert_eq!(e.take_actions(), vec![]);
    assert_eq!(e.progress(NodeId(3)).map(|p| p.matched), Some(LogIndex(0)));
}

/// Case 9 (with case 30, a wiped node re-added): once the re-added node's
/// empty log refused the first probe and the leader backtracked to probe
/// from the start of its log, a delayed acknowledgement from before the
/// removal must still not raise the node's match index: the node holds
/// nothing.
#[test]
fn case_9_stale_success_after_readded_node_refused_probe_does_not_raise_match() {
    let mut e = leader(&[1, 2, 3]);
    e.propose(Bytes::from_static(b"a")).unwrap();
    e.on_persisted(Some(lid(1, 2)));
    step(&mut e, env(2, 1, 1, success(2)));
    e.change_membership(MembershipChange::Remove(NodeId(3)))
        .unwrap();
    e.on_persisted(Some(lid(1, 3)));
    step(&mut e, env(2, 1, 1, success(3)));
    e.change_membership(MembershipChange::AddLearner(NodeId(3)))
        .unwrap();
    e.take_actions();

    // The wiped node refuses the probe after entry 4 (on the new stream the
    // leader opened for it): the leader probes from the start.
    step(&mut e, env(3, 1, 1, on_stream(1, conflict(4, 1, None))));
    let all = log_entries(&e);
    assert_eq!(
        e.take_actions(),
        vec![send(1, 3, 1, on_stream(1, append(lid(0, 0), all, 3)))]
    );
    // Node 3's success(2), sent before its removal (on the old stream),
    // arrives now.
    step(&mut e, env(3, 1, 1, success(2)));
    assert_eq!(e.progress(NodeId(3)).map(|p| p.matched), Some(LogIndex(0)));
    assert_eq!(e.take_actions(), vec![]);
}

/// Case 9, consequence: if the answer to the leader's full probe is lost,
/// the wiped, re-added node must still catch up on later heartbeats; a
/// match index raised by a stale acknowledgement makes the leader ignore
/// the node's refusals and never send below it.
#[test]
fn case_9_readded_wiped_node_catches_up_despite_stale_success() {
    let mut l = leader(&[1, 2, 3]);
    l.propose(Bytes::from_static(b"a")).unwrap();
    l.on_persisted(Some(lid(1, 2)));
    step(&mut l, env(2, 1, 1, success(2)));
    l.change_membership(MembershipChange::Remove(NodeId(3)))
        .unwrap();
    l.on_persisted(Some(lid(1, 3)));
    step(&mut l, env(2, 1, 1, success(3)));
    l.change_membership(MembershipChange::AddLearner(NodeId(3)))
        .unwrap();
    l.on_persisted(Some(lid(1, 4)));
    let mut f = engine(3, &[], plain); // wiped
    let probe = l.take_actions();
    deliver(&probe, &mut f);
    deliver(&f.take_actions(), &mut l);
    l.take_actions(); // the full probe from the start: lost
    step(&mut l, env(3, 1, 1, success(2))); // from before the removal

    for now in [20, 40, 60, 80] {
        l.tick(now);
        for _ in 0..10 {
            let out = l.take_actions();
            deliver(&out, &mut f);
            let back = f.take_actions();
            if back.is_empty() {
                break;
            }
            deliver(&back, &mut l);
        }
    }
    assert_eq!(f.last_log_id(), l.last_log_id());
}

/// §6: a follower uses a membership entry as soon as it appends it, and
/// goes back to the previous membership when that entry is truncated.
#[test]
fn s6_follower_adopts_appended_membership_and_reverts_it_on_truncation() {
    let mut f = engine(2, &[1, 2, 3], stored(&[1], 1, None, 0));
    let m = members(&[1, 2, 3], &[4]);
    step(
        &mut f,
        env(
            1,
            2,
            1,
            append(lid(1, 1), vec![membership_ent(1, 2, m.clone())], 0),
        ),
    );
    f.take_actions();
    assert_eq!(f.membership(), &m);
    assert_eq!(f.membership_index(), LogIndex(2));

    // A leader of term 2 never had that entry: it is replaced.
    step(&mut f, env(3, 2, 2, append(lid(1, 1), vec![ent(2, 2)], 0)));
    assert_eq!(
        f.take_actions(),
        vec![
            Action::TruncateLog { from: LogIndex(2) },
            Action::AppendLog(vec![ent(2, 2)]),
            save(2, None, 0),
            send_after_persist(2, 3, 2, success(2)),
        ]
    );
    assert_eq!(f.membership(), &members(&[1, 2, 3], &[]));
    assert_eq!(f.membership_index(), LogIndex(0));
}

/// A follower of voters 1, 2, 3 whose log ends with its own removal (the
/// membership 1, 2 at index 2), committed up to `commit`.
fn removed_follower(commit: u64) -> Engine {
    engine(3, &[1, 2, 3], |init| {
        init.entries = vec![ent(1, 1), membership_ent(1, 2, members(&[1, 2], &[]))];
        init.hard_state = hs(1, None, commit);
    })
}

/// Case 20 (thesis §4.2.3): a node whose removal is committed never
/// campaigns again, however long it hears nothing.
#[test]
fn case_20_removed_node_stops_campaigning() {
    let mut e = restarted(removed_follower(2));
    for now in (200..2000).step_by(100) {
        e.tick(now);
        assert_eq!(e.role(), Role::Follower);
        assert_eq!(e.take_actions(), vec![], "at {now}");
    }
    e.campaign();
    assert_eq!(e.role(), Role::Follower);
}

/// Thesis §4.2.2: while its removal is not committed, a removed node may
/// still be needed to commit it, so it still campaigns (in the old
/// configuration, asking the remaining voters).
#[test]
fn s4_2_2_node_removed_by_an_uncommitted_change_still_campaigns() {
    let mut e = restarted(removed_follower(1));
    e.tick(1000);
    assert_eq!(e.role(), Role::PreCandidate);
    let asked: Vec<u64> = messages(&e.take_actions()).iter().map(|m| m.to.0).collect();
    assert_eq!(asked, vec![1, 2]);
}

// ----- Bootstrap voters in the log -----

/// Node `id` of a group restarted from `e`'s durable state (this test
/// cluster flushes everything at once) but, as a driver restoring the
/// groups it finds in its store does, with no voters given.
fn restarted_without_voters(e: &Engine) -> Engine {
    let (entries, term, vote, commit) = (log_entries(e), e.term(), e.vote(), e.commit_index());
    let snapshot = e.snapshot_meta().map(|meta| Snapshot {
        meta: meta.clone(),
        data: Bytes::new(),
    });
    let compacted = e.compacted();
    let entries = entries
        .into_iter()
        .filter(|x| x.id.index > compacted.index)
        .collect();
    engine(e.id().0, &[], move |init| {
        init.entries = entries;
        init.compacted = compacted;
        init.snapshot = snapshot;
        init.hard_state = HardState { term, vote, commit };
    })
}

/// The first leader of a log that records no membership appends its
/// bootstrap voters (exactly the configuration in effect) instead of a
/// blank entry: the followers take it as any membership entry, nothing is
/// reconfigured, and once it commits the leader may change the membership.
#[test]
fn bootstrap_voters_are_the_first_leaders_first_entry() {
    let mut c = Cluster::three_led_by_1();
    let bootstrap_entry = Entry {
        id: lid(1, 1),
        timestamp: entry_at(c.node(1), 1).timestamp,
        payload: bootstrap(&[1, 2, 3]),
    };
    for n in [1, 2, 3] {
        let e = c.node(n);
        assert_eq!(log_entries(e), vec![bootstrap_entry.clone()], "node {n}");
        assert_eq!(e.membership(), &members(&[1, 2, 3], &[]), "node {n}");
        assert_eq!(e.membership_index(), LogIndex(1), "node {n}");
        assert_eq!(e.commit_index(), LogIndex(1), "node {n}");
        assert_eq!(
            c.applied_by(n),
            std::slice::from_ref(&bootstrap_entry),
            "node {n}"
        );
    }
    // No joint configuration to leave, no second membership entry.
    assert_eq!(c.node(1).last_log_id(), lid(1, 1));
    let id = c
        .node_mut(1)
        .change_membership(MembershipChange::AddLearner(NodeId(4)))
        .expect("the leader committed in its term");
    assert_eq!(id, lid(1, 2));
}

/// A later leader, or one whose log holds a membership entry or a
/// snapshot, appends a blank entry: the voters are recorded already.
#[test]
fn leader_of_a_log_recording_the_membership_appends_a_blank() {
    let mut e = restarted(engine(1, &[1, 2, 3], |init| {
        init.entries = vec![membership_ent(1, 1, members(&[1, 2, 3], &[])), ent(1, 2)];
        init.hard_state = hs(1, None, 2);
    }));
    elect(&mut e);
    let first = entry_at(&e, 3);
    assert_eq!((first.id, &first.payload), (lid(2, 3), &Payload::Blank));
    assert_eq!(e.membership_index(), LogIndex(1));

    let mut e = restarted(engine(1, &[1, 2, 3], |init| {
        init.snapshot = Some(snap(lid(1, 5), &[1, 2, 3], b"image"));
        init.compacted = lid(1, 5);
        init.hard_state = hs(1, None, 5);
        init.applied = LogIndex(5);
    }));
    elect(&mut e);
    let first = entry_at(&e, 6);
    assert_eq!((first.id, &first.payload), (lid(2, 6), &Payload::Blank));
}

/// A new leader whose voters differ from its bootstrap list because the
/// log says otherwise writes nothing: the log's membership is in effect
/// and recorded.
#[test]
fn leader_follows_the_logs_membership_over_its_bootstrap_voters() {
    let mut e = restarted(engine(1, &[1, 2, 3, 4, 5], |init| {
        init.entries = vec![membership_ent(1, 1, members(&[1, 2, 3], &[]))];
        init.hard_state = hs(1, None, 1);
    }));
    elect(&mut e);
    assert_eq!(e.membership(), &members(&[1, 2, 3], &[]));
    assert_eq!(entry_at(&e, 2).payload, Payload::Blank);
}

/// The bug this guards against: a group whose every node restarts without
/// being given the voters (a driver restoring the groups of its store)
/// still elects a leader and commits, because the voters are in the log.
#[test]
fn group_restarted_without_voters_elects_from_the_logged_bootstrap() {
    let mut c = Cluster::three_led_by_1();
    c.node_mut(1).propose(Bytes::from_static(b"x")).unwrap();
    c.run();
    assert_eq!(c.node(3).commit_index(), LogIndex(2));

    let mut c = Cluster::new(
        [1, 2, 3]
            .map(|n| restarted_without_voters(c.node(n)))
            .into(),
    );
    for n in [1, 2, 3] {
        assert_eq!(
            c.node(n).membership(),
            &members(&[1, 2, 3], &[]),
            "node {n}"
        );
    }
    let mut leader = None;
    for now in (0..2000).step_by(10) {
        c.tick(now);
        leader = (1..=3).find(|&n| c.node(n).role() == Role::Leader);
        if leader.is_some() {
            break;
        }
    }
    let leader = leader.expect("a leader after the restart");
    let id = c
        .node_mut(leader)
        .propose(Bytes::from_static(b"y"))
        .unwrap();
    c.run();
    assert_eq!(id.index, LogIndex(4), "after the new term's blank entry");
    assert_eq!(entry_at(c.node(leader), 3).payload, Payload::Blank);
    for n in [1, 2, 3] {
        assert_eq!(c.node(n).commit_index(), LogIndex(4), "node {n}");
    }
}

/// After compaction the snapshot carries the bootstrap voters: a single
/// voter restarted without voters from its snapshot alone leads again.
#[test]
fn snapshot_carries_the_logged_bootstrap_voters() {
    let mut e = engine(1, &[1], plain);
    e.tick(0);
    e.take_actions();
    e.on_persisted(None);
    let id = e.propose(Bytes::from_static(b"x")).unwrap();
    e.take_actions();
    e.on_persisted(Some(id));
    e.take_actions();
    assert_eq!(e.commit_index(), LogIndex(2));
    assert!(e.on_snapshot_built(id, Bytes::from_static(b"image")));
    let actions = e.take_actions();
    let saved = actions.iter().find_map(|a| match a {
        Action::SaveSnapshot(s) => Some(s.meta.clone()),
        _ => None,
    });
    assert_eq!(
        saved,
        Some(SnapshotMeta {
            last: id,
            membership: members(&[1], &[])
        })
    );
    // Restarted from the snapshot alone (the log compacted up to it).
    let meta = e.snapshot_meta().cloned().expect("snapshot");
    let mut e = engine(1, &[], |init| {
        init.snapshot = Some(Snapshot {
            meta,
            data: Bytes::from_static(b"image"),
        });
        init.compacted = id;
        init.hard_state = hs(1, Some(1), 2);
    });
    assert_eq!(e.membership(), &members(&[1], &[]));
    e.tick(config().election_timeout_max_ms);
    e.take_actions();
    e.on_persisted(None);
    assert_eq!(e.role(), Role::Leader);
    assert_eq!(entry_at(&e, 3).payload, Payload::Blank);
}
