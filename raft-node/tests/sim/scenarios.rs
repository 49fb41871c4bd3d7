//! Scripted fault scenarios, each named after its case in the project's
//! list of faults the suite must survive. They run on the same simulator
//! (invariants checked after every step, linearizability and convergence
//! checked at the end) with faults placed by hand instead of at random.

use raft_api::{LogIndex, Term};
use raft_node::Role;

use crate::cluster::{Sim, SimConfig};

/// Longest election timeout of the simulated engines.
const ELECTION_MAX_MS: u64 = 300;

fn sim(seed: u64, nodes: usize) -> Sim {
    Sim::new(SimConfig::scripted(seed, nodes))
}

/// Runs until a leader is known, at most ten election timeouts.
fn settled_leader(sim: &mut Sim) -> usize {
    for _ in 0..20 {
        sim.run_for(ELECTION_MAX_MS / 2).expect("invariants hold");
        if let Some(leader) = sim.leader() {
            return leader;
        }
    }
    panic!("no leader within ten election timeouts");
}

fn term(sim: &Sim, n: usize) -> Term {
    sim.engine(n).expect("node is up").term()
}

fn commit(sim: &Sim, n: usize) -> LogIndex {
    sim.engine(n).expect("node is up").commit_index()
}

fn finish(sim: Sim) {
    let report = sim
        .finish()
        .unwrap_or_else(|f| panic!("{:?} at {} ms: {}", f.kind, f.at_ms, f.message));
    assert!(report.ops_ok > 0, "clients made no progress: {report:?}");
}

/// Case 12 and 13: the leader is killed; a new one is elected within a few
/// election timeouts; the old leader comes back, follows and catches up.
#[test]
fn case_12_13_leader_killed_then_returns() {
    for seed in 0..5 {
        let mut sim = sim(seed, 5);
        let old = settled_leader(&mut sim);
        let old_term = term(&sim, old);
        sim.crash_node(old);
        sim.run_for(3 * ELECTION_MAX_MS).unwrap();
        let new = sim
            .leader()
            .expect("a new leader within three election timeouts");
        assert_ne!(new, old);
        assert!(term(&sim, new) > old_term);

        let committed_meanwhile = commit(&sim, new);
        sim.restart_node(old).unwrap();
        sim.run_for(ELECTION_MAX_MS).unwrap();
        assert_eq!(sim.engine(old).unwrap().role(), Role::Follower);
        assert_eq!(
            sim.leader(),
            Some(new),
            "the returning node disrupted the leader"
        );
        // Catching up one small append at a time over a slow disk (some
        // seeds draw such settings) takes a while, but not forever.
        for _ in 0..40 {
            if commit(&sim, old) >= committed_meanwhile {
                break;
            }
            sim.run_for(ELECTION_MAX_MS).unwrap();
        }
        assert!(
            commit(&sim, old) >= committed_meanwhile,
            "the old leader did not catch up: {} < {committed_meanwhile}",
            commit(&sim, old)
        );
        finish(sim);
    }
}

/// Case 16: with a 3|2 split, the side without a quorum never commits
/// (what its old leader accepted is lost), the majority keeps going.
#[test]
fn case_16_minority_never_commits_majority_continues() {
    for seed in 0..5 {
        let mut sim = sim(seed, 5);
        let leader = settled_leader(&mut sim);
        let partner = (leader + 1) % 5;
        let majority: Vec<usize> = (0..5).filter(|&n| n != leader && n != partner).collect();
        sim.split(&[&[leader, partner], &majority]);
        // What the leader held before the split may have reached a
        // majority side node (messages in flight still land), so the
        // minority may still commit it, with acknowledgements sent before
        // the split and the partner catching up later. Nothing appended
        // after the split can be.
        let frozen = sim.engine(leader).unwrap().last_log_id().index;
        let lost = sim.propose_on(leader, "minority", "lost").unwrap();
        assert!(lost.index > frozen);
        sim.run_for(100).unwrap();
        let majority_commit = commit(&sim, majority[0]);

        sim.run_for(10 * ELECTION_MAX_MS).unwrap();
        assert!(
            commit(&sim, leader) <= frozen && commit(&sim, partner) <= frozen,
            "the minority committed past {frozen}"
        );
        assert_ne!(
            sim.engine(leader).unwrap().role(),
            Role::Leader,
            "check-quorum"
        );
        let new = sim.leader().expect("the majority elects a leader");
        assert!(majority.contains(&new));
        assert!(
            commit(&sim, new) > majority_commit,
            "the majority made no progress"
        );

        sim.heal_network();
        sim.run_for(2 * ELECTION_MAX_MS).unwrap();
        let at_lost = sim.engine(leader).unwrap().entry(lost.index).map(|e| e.id);
        assert_ne!(at_lost, Some(lost), "the minority's entry survived");
        finish(sim);
    }
}

/// Case 17: a bridge node sees both halves, the halves cannot see each
/// other. Elections do not go on forever (pre-vote and check-quorum), and
/// the cluster keeps committing.
#[test]
fn case_17_bridge_partition_no_endless_elections() {
    for seed in 0..5 {
        let mut sim = sim(seed, 5);
        let leader = settled_leader(&mut sim);
        // The leader ends up on one side; node `bridge` talks to everyone.
        let bridge = (leader + 2) % 5;
        let others: Vec<usize> = (0..5).filter(|&n| n != bridge).collect();
        let (left, right) = others.split_at(2);
        sim.split(&[left, right]);
        sim.run_for(3 * ELECTION_MAX_MS).unwrap();
        let settled = sim.leader().expect("a leader despite the bridge");
        let settled_term = term(&sim, settled);
        let before = commit(&sim, settled);
        sim.run_for(20 * ELECTION_MAX_MS).unwrap();
        let now_leader = sim.leader().expect("still a leader");
        assert!(
            term(&sim, now_leader).0 <= settled_term.0 + 2,
            "terms kept rising: {} -> {}",
            settled_term,
            term(&sim, now_leader)
        );
        assert!(
            commit(&sim, now_leader) > before,
            "no progress through the bridge"
        );
        finish(sim);
    }
}

/// Case 18 (a paused leader resumes) and 13: a leader cut off from
/// everyone for a long time comes back, steps down, and there is never a
/// second leader in one term (checked after every step).
#[test]
fn case_18_paused_leader_resumes_and_steps_down() {
    for seed in 0..5 {
        let mut sim = sim(seed, 3);
        let old = settled_leader(&mut sim);
        let rest: Vec<usize> = (0..3).filter(|&n| n != old).collect();
        sim.split(&[&[old], &rest]);
        sim.run_for(10 * ELECTION_MAX_MS).unwrap();
        let new = sim.leader().expect("the others elect a leader");
        assert_ne!(new, old);
        sim.heal_network();
        sim.run_for(2 * ELECTION_MAX_MS).unwrap();
        assert_ne!(sim.engine(old).unwrap().role(), Role::Leader);
        assert_eq!(term(&sim, old), term(&sim, new));
        finish(sim);
    }
}

/// Case 22: a follower cut off for many election timeouts does not raise
/// its term (pre-vote), so when it returns the leader keeps its term.
#[test]
fn case_22_outdated_node_rejoins_without_disruption() {
    for seed in 0..5 {
        let mut sim = sim(seed, 5);
        let leader = settled_leader(&mut sim);
        let loner = (leader + 1) % 5;
        let rest: Vec<usize> = (0..5).filter(|&n| n != loner).collect();
        let loner_term = term(&sim, loner);
        sim.split(&[&[loner], &rest]);
        sim.run_for(20 * ELECTION_MAX_MS).unwrap();
        assert_eq!(term(&sim, loner), loner_term, "pre-vote must keep the term");
        let leader = sim.leader().expect("the majority has a leader");
        let leader_term = term(&sim, leader);
        sim.heal_network();
        sim.run_for(3 * ELECTION_MAX_MS).unwrap();
        assert_eq!(
            sim.leader(),
            Some(leader),
            "the returning node deposed the leader"
        );
        assert_eq!(term(&sim, leader), leader_term);
        assert_eq!(term(&sim, loner), leader_term);
        finish(sim);
    }
}
