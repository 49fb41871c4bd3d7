//! Deterministic fault simulation of the Raft engine.
//!
//! Every run is fully determined by its seed and node count. A failure
//! prints both and a command that replays exactly that run:
//!
//! ```text
//! RAFT_SIM_SEED=<seed> RAFT_SIM_NODES=<n> cargo test -p raft-node --test sim replay -- --nocapture
//! ```
//!
//! `RAFT_SIM_SEEDS` sets how many seeds the default run simulates in total
//! (default 500, spread over 1, 3, 5 and 7 nodes).

// A test crate: its items are shared between its own modules only.
#![allow(missing_docs, unreachable_pub)]

mod cases;
mod cluster;
mod invariants;
mod mutants;
mod rng;
mod scenarios;

use cluster::{Sim, SimConfig, SimFailure, SimReport};

/// Seeds in the default run, over all cluster sizes.
const DEFAULT_SEEDS: u64 = 500;

fn total_seeds() -> u64 {
    std::env::var("RAFT_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEEDS)
}

pub fn replay_command(seed: u64, nodes: usize) -> String {
    format!(
        "RAFT_SIM_SEED={seed} RAFT_SIM_NODES={nodes} cargo test -p raft-node --test sim replay -- --nocapture"
    )
}

pub fn run_seed(seed: u64, nodes: usize) -> Result<SimReport, SimFailure> {
    Sim::new(SimConfig::new(seed, nodes)).run()
}

/// Runs this cluster size's share of the seeds; panics on the first failure
/// with the seed and the replay command. Returns the reports for sanity
/// checks on what the runs exercised.
fn run_share(nodes: usize) -> Vec<SimReport> {
    let share = total_seeds().div_ceil(4);
    let mut reports = Vec::new();
    for i in 0..share {
        let seed = i * 4 + nodes as u64 / 2;
        match run_seed(seed, nodes) {
            Ok(r) => reports.push(r),
            Err(f) => panic!(
                "simulation failed: seed {seed}, {nodes} nodes, at {} ms: {:?}: {}\nreplay: {}",
                f.at_ms,
                f.kind,
                f.message,
                replay_command(seed, nodes)
            ),
        }
    }
    reports
}

/// The fault mix really happened and the cluster really worked.
fn assert_exercised(nodes: usize, reports: &[SimReport]) {
    let sum = |f: fn(&SimReport) -> u64| reports.iter().map(f).sum::<u64>();
    let max = |f: fn(&SimReport) -> usize| reports.iter().map(f).max().unwrap_or(0);
    assert!(sum(|r| r.ops_ok as u64) > 0, "no operation succeeded");
    assert!(sum(|r| r.committed as u64) > 0, "nothing committed");
    if nodes > 1 {
        assert!(sum(|r| r.crashes) > 0, "no crash injected");
        assert!(sum(|r| r.partitions) > 0, "no partition injected");
        assert!(sum(|r| r.dropped) > 0, "no message dropped");
        assert!(sum(|r| r.duplicated) > 0, "no message duplicated");
        assert!(
            reports.iter().any(|r| r.leader_terms > 1),
            "leadership never changed"
        );
        assert!(sum(|r| r.transfers) > 0, "no leader transfer");
        assert!(sum(|r| r.leader_removals) > 0, "no leader removed itself");
        assert!(sum(|r| r.quiesce_sent) > 0, "no group went quiet");
        assert!(
            max(|r| r.longest_quiet_ms as usize) >= 150,
            "no leader stayed quiet for 150 ms"
        );
        assert!(sum(|r| r.follower_reads) > 0, "no follower read");
    }
    assert!(sum(|r| r.membership_changes) > 0, "no membership change");
    assert!(sum(|r| r.snapshots_built) > 0, "no snapshot built");
    assert!(sum(|r| r.snapshots_installed) > 0, "no snapshot installed");
    assert!(sum(|r| r.lease_reads) > 0, "no lease read");
    assert!(sum(|r| r.reads_served) > 0, "no read served");
    if nodes > 3 {
        assert!(
            max(|r| r.max_replaced) > 1,
            "never replaced several voters at once"
        );
    }
    println!(
        "{nodes} nodes, {} seeds: {} membership changes (most voters {}, most replaced at \
         once {}, {} leaders removed themselves), {} transfers, {} snapshots built, {} installed or restored, {} reads served \
         ({} on followers, {} by lease), longest quiet leader {} ms",
        reports.len(),
        sum(|r| r.membership_changes),
        max(|r| r.max_voters),
        max(|r| r.max_replaced),
        sum(|r| r.leader_removals),
        sum(|r| r.transfers),
        sum(|r| r.snapshots_built),
        sum(|r| r.snapshots_installed),
        sum(|r| r.reads_served),
        sum(|r| r.follower_reads),
        sum(|r| r.lease_reads),
        max(|r| r.longest_quiet_ms as usize),
    );
}

#[test]
fn simulate_1_node() {
    let reports = run_share(1);
    assert_exercised(1, &reports);
}

#[test]
fn simulate_3_nodes() {
    let reports = run_share(3);
    assert_exercised(3, &reports);
}

#[test]
fn simulate_5_nodes() {
    let reports = run_share(5);
    assert_exercised(5, &reports);
}

#[test]
fn simulate_7_nodes() {
    let reports = run_share(7);
    assert_exercised(7, &reports);
}

/// Replays one run chosen by `RAFT_SIM_SEED` and `RAFT_SIM_NODES` (and, to
/// replay a mutant's failure, `RAFT_SIM_MUTANT`); without them it replays
/// seed 0 on 3 nodes.
#[test]
fn replay() {
    let seed = std::env::var("RAFT_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let nodes = std::env::var("RAFT_SIM_NODES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    if let Ok(name) = std::env::var("RAFT_SIM_MUTANT") {
        let mutant = raft_node::engine::mutants::Mutant::ALL
            .into_iter()
            .find(|m| format!("{m:?}") == name)
            .unwrap_or_else(|| panic!("unknown mutant {name}"));
        raft_node::engine::mutants::set(Some(mutant));
    }
    match run_seed(seed, nodes) {
        Ok(r) => println!("seed {seed}, {nodes} nodes: passed: {r:?}"),
        Err(f) => panic!(
            "seed {seed}, {nodes} nodes, at {} ms: {:?}: {}",
            f.at_ms, f.kind, f.message
        ),
    }
}

#[test]
fn runs_are_deterministic() {
    let a = run_seed(11, 5).expect("seed passes");
    let b = run_seed(11, 5).expect("seed passes");
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
}
