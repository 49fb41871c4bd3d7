//! Scripted scenarios for snapshots, membership changes, leader transfer
//! and reads, each named after its case in the project's list of faults the
//! suite must survive. Like the other scenarios they run on the simulator:
//! invariants after every step, then recovery, convergence of every member
//! and a linearizable client history (reads of all kinds included).

use raft_api::{Config, LogIndex, NodeId};
use raft_node::{ChangeError, MembershipChange, Role};

use crate::cluster::{Sim, SimConfig, SimFailure, SimReport};

const ELECTION_MAX_MS: u64 = 300;

fn node(n: usize) -> NodeId {
    NodeId(n as u64 + 1)
}

/// Runs until some node leads, at most ten election timeouts.
fn settled_leader(sim: &mut Sim) -> Result<usize, SimFailure> {
    for _ in 0..20 {
        sim.run_for(ELECTION_MAX_MS / 2)?;
        if let Some(leader) = sim.leader() {
            return Ok(leader);
        }
    }
    panic!("no leader within ten election timeouts");
}

/// A config that snapshots every `every` entries, keeps `trailing` behind
/// and sends snapshots in tiny chunks.
fn snapshotting(seed: u64, every: u64, trailing: u64) -> Config {
    let base = SimConfig::scripted(seed, 3).engine_config();
    Config {
        snapshot_threshold: every,
        snapshot_trailing: trailing,
        snapshot_chunk_bytes: 16,
        max_append_entries: 4,
        ..base
    }
}

fn commit(sim: &Sim, n: usize) -> LogIndex {
    sim.engine(n).expect("node is up").commit_index()
}

fn finish(sim: Sim) -> SimReport {
    sim.finish()
        .unwrap_or_else(|f| panic!("{:?} at {} ms: {}", f.kind, f.at_ms, f.message))
}

/// The schedule behind the rule that a new leader changes membership only
/// after committing an entry of its own term (Ongaro, raft-dev, 2015).
///
/// Four voters; leader A promotes a fifth node while cut off with it, so
/// the change stays on A and the new voter. B is elected by the other
/// three and, as soon as it leads, is asked to remove A; one of its voters,
/// D, crashes right after voting. Were B to accept at once, it could commit
/// the removal with C alone (two of its three voters), and A, with the new
/// voter and D (whose log lacks B's term), would then win an election under
/// its own five-voter configuration and overwrite what B committed.
pub fn membership_race(seed: u64) -> Result<(SimReport, Result<(), ChangeError>), SimFailure> {
    let mut sim = Sim::new(SimConfig {
        spares: 1,
        ..SimConfig::scripted(seed, 4)
    });
    let a = settled_leader(&mut sim)?;
    let spare = 4;
    let added = sim.change_membership_on(a, MembershipChange::AddLearner(node(spare)))?;
    assert!(added.is_ok(), "{added:?}");
    sim.run_for(2 * ELECTION_MAX_MS)?;
    let others: Vec<usize> = (0..4).filter(|&n| n != a).collect();
    // Quiesce so the learner is fully caught up for its promotion.
    sim.set_clients(false);
    sim.run_for(ELECTION_MAX_MS)?;
    sim.split(&[&[a, spare], &others]);
    let promoted = sim.change_membership_on(a, MembershipChange::Promote(node(spare)))?;
    sim.set_clients(true);
    assert!(promoted.is_ok(), "{promoted:?}");
    sim.run_for(20)?;
    // Wait for the others' leader, then act before it commits anything.
    let mut b = None;
    for _ in 0..20 * ELECTION_MAX_MS {
        sim.run_for(1)?;
        if let Some(l) = sim.leader().filter(|l| others.contains(l)) {
            b = Some(l);
            break;
        }
    }
    let b = b.expect("the other three elect a leader");
    let (c, d) = {
        let rest: Vec<usize> = others.iter().copied().filter(|&n| n != b).collect();
        (rest[0], rest[1])
    };
    sim.crash_node(d);
    let removal = sim
        .change_membership_on(b, MembershipChange::Remove(node(a)))?
        .map(|_| ());
    sim.split(&[&[a, spare], &[b, c], &[d]]);
    sim.run_for(ELECTION_MAX_MS)?;
    // D comes back on A's side.
    sim.split(&[&[a, spare, d], &[b, c]]);
    sim.restart_node(d)?;
    sim.run_for(10 * ELECTION_MAX_MS)?;
    Ok((sim.finish()?, removal))
}

/// Case 20: the race above is safe because the new leader refuses the
/// change until it has committed in its term.
#[test]
fn case_20_change_by_a_new_leader_waits_for_its_own_commit() {
    for seed in 0..5 {
        let (report, removal) = membership_race(seed).unwrap_or_else(|f| {
            panic!("seed {seed}: {:?} at {} ms: {}", f.kind, f.at_ms, f.message)
        });
        assert_eq!(removal, Err(ChangeError::NotReady), "seed {seed}");
        assert!(report.ops_ok > 0);
    }
}

/// Case 20 (Rafty's growth story and more): a node alone elects itself and
/// takes writes; four nodes join as learners, catch up and are promoted one
/// by one; a concurrent request is refused; two voters are replaced at once
/// (joint consensus); the leader removes itself and steps down, and the
/// group goes on with a new leader. Every member converges.
#[test]
fn case_20_grow_replace_and_remove_the_leader() {
    for seed in 0..4 {
        let mut sim = Sim::new(SimConfig {
            spares: 4,
            ..SimConfig::scripted(seed, 1)
        });
        let leader = settled_leader(&mut sim).unwrap();
        assert_eq!(leader, 0, "a node alone elects itself");
        sim.run_for(200).unwrap();
        let early = commit(&sim, 0);
        assert!(early > LogIndex(1), "the lone node committed writes");
        for n in 1..5 {
            let r = sim
                .change_membership_on(0, MembershipChange::AddLearner(node(n)))
                .unwrap();
            assert!(r.is_ok(), "add learner {n}: {r:?}");
            let again = sim
                .change_membership_on(0, MembershipChange::AddLearner(node(n)))
                .unwrap();
            assert!(
                matches!(again, Err(ChangeError::InProgress)),
                "concurrent change: {again:?}"
            );
            sim.run_for(ELECTION_MAX_MS).unwrap();
        }
        sim.run_for(3 * ELECTION_MAX_MS).unwrap();
        // The learners hold what was committed before they joined.
        for n in 1..5 {
            assert!(commit(&sim, n) >= early, "learner {n} caught up");
            assert_eq!(sim.engine(n).unwrap().role(), Role::Follower);
        }
        for n in 1..3 {
            let mut done = false;
            sim.set_clients(false);
            sim.run_for(ELECTION_MAX_MS).unwrap();
            for _ in 0..20 {
                let leader = sim.leader().expect("a leader");
                let r = sim
                    .change_membership_on(leader, MembershipChange::Promote(node(n)))
                    .unwrap();
                if r.is_ok() {
                    done = true;
                    break;
                }
                sim.run_for(ELECTION_MAX_MS).unwrap();
            }
            assert!(done, "learner {n} was never promoted");
            sim.set_clients(true);
            sim.run_for(ELECTION_MAX_MS).unwrap();
        }
        // Voters {1,2,3} become {1,4,5}: two replaced at once.
        sim.set_clients(false);
        sim.run_for(ELECTION_MAX_MS).unwrap();
        let leader = sim.leader().expect("a leader");
        let target = [0, 3, 4].map(node).into_iter().collect();
        let r = sim
            .change_membership_on(leader, MembershipChange::ReplaceVoters(target))
            .unwrap();
        assert!(r.is_ok(), "replace voters: {r:?}");
        assert!(sim.engine(leader).unwrap().membership().is_joint());
        sim.set_clients(true);
        sim.run_for(3 * ELECTION_MAX_MS).unwrap();
        let leader = sim.leader().expect("a leader");
        let m = sim.engine(leader).unwrap().membership().clone();
        assert!(!m.is_joint(), "the joint configuration was left: {m}");
        assert_eq!(m.voters, [0, 3, 4].map(node).into_iter().collect());
        // The leader removes itself and steps down.
        let r = sim
            .change_membership_on(leader, MembershipChange::Remove(node(leader)))
            .unwrap();
        assert!(r.is_ok(), "remove the leader: {r:?}");
        sim.run_for(3 * ELECTION_MAX_MS).unwrap();
        assert_ne!(sim.engine(leader).unwrap().role(), Role::Leader);
        let next = sim.leader().expect("the others elect a leader");
        assert_ne!(next, leader);
        assert!(
            !sim.engine(next)
                .unwrap()
                .membership()
                .contains(node(leader))
        );
        finish(sim);
    }
}

/// Case 21: leadership moves to a named node, then to the most caught-up
/// one, while clients keep writing. A transfer whose target cannot catch up
/// within an election timeout is abandoned (the leader takes writes again)
/// and is simply asked again; nothing acknowledged is lost
/// (linearizability).
#[test]
fn case_21_leader_transfer_during_writes() {
    for seed in 0..5 {
        let mut sim = Sim::new(SimConfig::scripted(seed, 3));
        for round in 0..4 {
            let mut moved = false;
            for _ in 0..10 {
                let leader = settled_leader(&mut sim).unwrap();
                let target = (round % 2 == 0).then_some(node((leader + 1) % 3));
                let chosen = sim
                    .transfer_on(leader, target)
                    .unwrap()
                    .expect("transfer starts");
                assert_eq!(
                    sim.engine(leader).unwrap().transfer_target(),
                    Some(chosen),
                    "the leader refuses writes while it hands over"
                );
                sim.run_for(ELECTION_MAX_MS).unwrap();
                if sim.leader() == Some((chosen.0 - 1) as usize) {
                    moved = true;
                    break;
                }
                assert_eq!(
                    sim.engine(leader).unwrap().transfer_target(),
                    None,
                    "an unfinished transfer is abandoned after an election timeout"
                );
            }
            assert!(
                moved,
                "seed {seed}: leadership never moved in round {round}"
            );
        }
        finish(sim);
    }
}

/// Case 14: a follower down while the others write and compact catches up
/// from a snapshot (the entries it needs are gone), then from the log.
#[test]
fn case_14_far_behind_follower_catches_up_by_snapshot() {
    for seed in 0..5 {
        let mut sim = Sim::new(SimConfig {
            config: Some(snapshotting(seed, 10, 2)),
            ..SimConfig::scripted(seed, 3)
        });
        let leader = settled_leader(&mut sim).unwrap();
        let down = (leader + 1) % 3;
        sim.crash_node(down);
        sim.run_for(2000).unwrap();
        let leader = sim.leader().expect("two of three keep a leader");
        let compacted = sim.engine(leader).unwrap().compacted().index;
        assert!(compacted > LogIndex(0), "the leader compacted its log");
        let installed_before = sim.report().snapshots_installed;
        sim.restart_node(down).unwrap();
        sim.run_for(2000).unwrap();
        assert!(
            sim.report().snapshots_installed > installed_before,
            "the follower installed a snapshot"
        );
        assert!(commit(&sim, down) > compacted, "then followed the log");
        finish(sim);
    }
}

/// Case 15: snapshots sent in many small chunks over a lossy network, with
/// the leader crashing mid-transfer: the transfer resumes or restarts and
/// completes, never livelocks.
#[test]
fn case_15_snapshot_transfer_survives_loss_and_leader_change() {
    for seed in 0..5 {
        let mut sim = Sim::new(SimConfig {
            config: Some(snapshotting(seed, 8, 0)),
            ..SimConfig::scripted(seed, 5)
        });
        let leader = settled_leader(&mut sim).unwrap();
        let down = [(leader + 1) % 5, (leader + 2) % 5];
        for &n in &down {
            sim.crash_node(n);
        }
        sim.run_for(2000).unwrap();
        sim.set_loss(300);
        for &n in &down {
            sim.restart_node(n).unwrap();
        }
        sim.run_for(100).unwrap();
        if let Some(l) = sim.leader() {
            sim.crash_node(l);
            sim.run_for(2 * ELECTION_MAX_MS).unwrap();
            sim.restart_node(l).unwrap();
        }
        sim.run_for(3000).unwrap();
        sim.set_loss(0);
        let report = finish(sim);
        assert!(report.snapshots_installed > 0);
    }
}

/// Case 11: every node restarts from its snapshot and log; committed state
/// is restored (snapshot) and re-applied (log) before the node serves
/// anything, so reads after the restart see every acknowledged write.
#[test]
fn case_11_restart_restores_then_reapplies_before_serving() {
    for seed in 0..5 {
        let mut sim = Sim::new(SimConfig {
            config: Some(snapshotting(seed, 6, 3)),
            ..SimConfig::scripted(seed, 3)
        });
        settled_leader(&mut sim).unwrap();
        sim.run_for(1500).unwrap();
        for n in 0..3 {
            sim.snapshot_on(n).unwrap();
        }
        sim.run_for(300).unwrap();
        for n in 0..3 {
            sim.crash_node(n);
        }
        for n in 0..3 {
            sim.restart_node(n).unwrap();
        }
        settled_leader(&mut sim).unwrap();
        sim.run_for(1000).unwrap();
        let report = finish(sim);
        assert!(
            report.reads_served > 0,
            "reads were served after the restart"
        );
    }
}
