//! Proposals per second through three in-process nodes (in-memory log
//! store, in-process transport, key-value state machine), with 1, 64 and
//! 1024 concurrent proposers on one group, and with 64 groups.
//!
//! ```sh
//! cargo run --release -p raft-node --example throughput [seconds per run]
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft_api::{Config, GroupId, NodeId};
use raft_node::driver::{Node, NodeConfig};
use storage_mem::{KvCommand, KvStateMachine, MemLogStore};
use transport_mem::MemNetwork;

async fn cluster(groups: u64) -> Vec<Node<KvStateMachine>> {
    let net = MemNetwork::new();
    let voters: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let groups: Vec<(GroupId, Vec<NodeId>)> =
        (1..=groups).map(|g| (GroupId(g), voters.clone())).collect();
    let mut nodes = Vec::new();
    for id in 1..=3 {
        let mut config = NodeConfig::new(NodeId(id));
        config.raft = Config {
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            heartbeat_interval_ms: 50,
            snapshot_threshold: 100_000,
            ..Config::default()
        };
        // Keep every group's leader on node 1: callers talk to leaders.
        config.balance_leaders = false;
        let node = Node::start(
            config,
            net.transport(NodeId(id)),
            MemLogStore::new(),
            |_| KvStateMachine::new(),
            &groups,
        )
        .await
        .expect("node starts");
        nodes.push(node);
    }
    for (g, _) in &groups {
        let leader = nodes[0]
            .wait_for_leader(*g, Duration::from_secs(10))
            .await
            .expect("a leader");
        if leader != NodeId(1) {
            let n = &nodes[(leader.0 - 1) as usize];
            let _ = n.transfer_leader(*g, Some(NodeId(1))).await;
        }
    }
    for (g, _) in &groups {
        while nodes[0].leader(*g) != Some(NodeId(1)) || !nodes[0].is_leader(*g) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    nodes
}

/// Runs `proposers` closed-loop callers against node 1 for `secs`, spread
/// over `groups` groups; returns proposals per second.
async fn run(groups: u64, proposers: usize, secs: f64) -> f64 {
    let nodes = cluster(groups).await;
    let leader = nodes[0].clone();
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for p in 0..proposers {
        let (leader, done, stop) = (leader.clone(), done.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let group = GroupId(1 + (p as u64 % groups));
            let cmd = KvCommand::Put {
                key: Bytes::from(format!("k{p}")),
                value: Bytes::from_static(&[7u8; 16]),
            }
            .encode();
            while !stop.load(Ordering::Relaxed) {
                if leader.propose(group, cmd.clone()).await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // Warm up, then measure.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start_count = done.load(Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let count = done.load(Ordering::Relaxed) - start_count;
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let m = leader.metrics().await.expect("metrics");
    println!(
        "    (fsyncs {}, mean entries per flush {:.1}, batches sent {})",
        m.node.fsyncs,
        m.node.mean_write_batch(),
        m.node.batches_sent
    );
    for n in &nodes {
        n.shutdown().await;
    }
    count as f64 / elapsed
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        println!("3 in-process nodes, mem log store, 16-byte values, {secs} s per run");
        for proposers in [1, 64, 1024] {
            let rate = run(1, proposers, secs).await;
            println!("1 group,   {proposers:>4} proposers: {rate:>10.0} proposals/s");
        }
        for proposers in [64, 1024] {
            let rate = run(64, proposers, secs).await;
            println!("64 groups, {proposers:>4} proposers: {rate:>10.0} proposals/s");
        }
    });
}
