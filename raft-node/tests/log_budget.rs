//! A node hosting many groups keeps the log they hold in memory within
//! `NodeConfig::max_log_bytes`, by snapshotting the groups holding the most
//! early; without the bound, what it holds grows with every group's log.

#![allow(missing_docs)]

mod common;

use common::{Cluster, eventually, leader_among, node_config, put_retrying, read_retrying};
use raft_api::GroupId;
use raft_node::driver::Consistency;

const GROUPS: u64 = 6;
const WRITES: usize = 60;
const BUDGET: u64 = 8 * 1024;

/// Three nodes hosting `GROUPS` groups, with automatic snapshots off (so
/// only the bound can compact a log) and `max_log_bytes` at `budget`.
async fn cluster(budget: u64) -> (Cluster, Vec<GroupId>) {
    let groups: Vec<GroupId> = (1..=GROUPS).map(GroupId).collect();
    let mut c = Cluster::empty();
    for id in 1..=3 {
        let mut config = node_config(id);
        config.raft.snapshot_threshold = 0;
        config.raft.snapshot_trailing = 5;
        config.max_log_bytes = budget;
        c.spawn(id, config, &[1, 2, 3], &groups).await;
    }
    (c, groups)
}

/// Writes `WRITES` values of 100 bytes to every group.
async fn fill(c: &Cluster, groups: &[GroupId]) {
    let value = "v".repeat(100);
    for &g in groups {
        let leader = leader_among(c, &[1, 2, 3], g).await;
        let node = c.node(leader);
        for i in 0..WRITES {
            put_retrying(&node, g, &format!("k{i}"), &value).await;
        }
    }
}

async fn log_bytes(c: &Cluster, id: u64) -> (u64, u64) {
    let m = c.node(id).metrics().await.expect("metrics");
    let sum: u64 = m.groups.values().map(|g| g.log_bytes).sum();
    assert_eq!(
        sum, m.node.log_bytes,
        "the node's figure is its groups' sum"
    );
    (m.node.log_bytes, m.node.early_snapshots)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_groups_hold_no_more_log_than_the_budget() {
    let (c, groups) = cluster(BUDGET).await;
    fill(&c, &groups).await;
    for id in 1..=3 {
        eventually("every node's log is back within its budget", || async {
            log_bytes(&c, id).await.0 <= BUDGET
        })
        .await;
        let (_, early) = log_bytes(&c, id).await;
        assert!(early > 0, "node {id} compacted by snapshotting early");
    }
    // Compacted, not lost: every group still reads its writes, on every
    // node.
    let value = "v".repeat(100);
    for &g in &groups {
        for id in 1..=3 {
            eventually("the last write reads back on every node", || async {
                let got = read_retrying(&c.node(id), g, "k59", Consistency::Stale).await;
                got.as_deref() == Some(value.as_bytes())
            })
            .await;
        }
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_budget_the_log_grows_with_the_groups() {
    let (c, groups) = cluster(0).await;
    fill(&c, &groups).await;
    let leader = leader_among(&c, &[1, 2, 3], groups[0]).await;
    let (bytes, early) = log_bytes(&c, leader).await;
    // Every write is over 100 bytes, and nothing compacts.
    let written = GROUPS * WRITES as u64 * 100;
    assert!(
        bytes > written,
        "{bytes} bytes held after {written} written"
    );
    assert_eq!(early, 0);
    c.shutdown().await;
}
