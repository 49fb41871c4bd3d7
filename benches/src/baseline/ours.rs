//! The baseline workload on this library.

use std::time::{Duration, Instant};

use bytes::Bytes;
use raft_api::{Config, GroupId, NodeId};
use raft_node::ProposeError;
use raft_node::driver::{Node, NodeConfig};
use storage_mem::MemLogStore;

use super::{APPLY_TIMEOUT, BaselineRun, HEARTBEAT_MS, MAX_PAYLOAD_ENTRIES, per_client, runtime};
use crate::BenchError;
use crate::direct::{DirectNetwork, NoopStateMachine};

const GROUP: GroupId = GroupId(1);

/// Engine settings of the baseline: openraft's heartbeat and batch limit.
pub fn config() -> Config {
    Config {
        heartbeat_interval_ms: HEARTBEAT_MS,
        election_timeout_min_ms: 150,
        election_timeout_max_ms: 300,
        lease_clock_drift_ms: 50,
        max_append_entries: MAX_PAYLOAD_ENTRIES as usize,
        ..Config::default()
    }
}

/// Three nodes over a [`DirectNetwork`], once a leader is elected; the
/// leader's handle first.
async fn cluster() -> Result<Vec<Node<NoopStateMachine>>, BenchError> {
    let net = DirectNetwork::new();
    let voters: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let mut nodes = Vec::new();
    for &id in &voters {
        let mut c = NodeConfig::new(id);
        c.raft = config();
        c.balance_leaders = false;
        let node = Node::start(
            c,
            net.transport(id),
            MemLogStore::new(),
            |_| NoopStateMachine::default(),
            &[(GROUP, voters.clone())],
        )
        .await?;
        nodes.push(node);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(i) = nodes.iter().position(|n| n.is_leader(GROUP)) {
            nodes.swap(0, i);
            return Ok(nodes);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(BenchError::NoLeader { group: 1, secs: 20 });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs the workload with `clients` clients writing `total` operations in
/// all (rounded down to a multiple of `clients`).
pub fn run(clients: usize, total: u64) -> Result<BaselineRun, BenchError> {
    runtime()?.block_on(run_async(clients, total))
}

async fn run_async(clients: usize, total: u64) -> Result<BaselineRun, BenchError> {
    let nodes = cluster().await?;
    let leader = nodes[0].clone();
    let each = per_client(total, clients);
    let ops = each * clients as u64;
    let start_applied = applied(&leader).await;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let leader = leader.clone();
        tasks.push(tokio::spawn(async move {
            let mut written = 0u64;
            while written < each {
                match leader.propose(GROUP, Bytes::new()).await {
                    Ok(_) => written += 1,
                    // Back-pressure: the write was not proposed; send again.
                    Err(ProposeError::Busy) => tokio::task::yield_now().await,
                    Err(e) => return Err(e),
                }
            }
            Ok(written)
        }));
    }
    let mut done = 0;
    for t in tasks {
        match t.await {
            Ok(Ok(n)) => done += n,
            Ok(Err(e)) => return Err(BenchError::Settings(format!("a write failed: {e}"))),
            Err(e) => return Err(BenchError::Settings(format!("a client failed: {e}"))),
        }
    }
    // Every write was answered after the leader applied it; check it did.
    let deadline = Instant::now() + APPLY_TIMEOUT;
    while applied(&leader).await < start_applied + ops && Instant::now() < deadline {
        tokio::task::yield_now().await;
    }
    let seconds = start.elapsed().as_secs_f64();
    let last = applied(&leader).await;
    let mut notes = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        if let Ok(m) = n.metrics().await {
            let m = m.node;
            let role = if i == 0 { "leader" } else { "follower" };
            notes.push((
                format!("node {} ({role})", n.id().0),
                format!(
                    "proposals {}, flushes {}, entries/flush {:.1}, batches sent {}, \
                     messages/batch {:.1}, inbound dropped {}",
                    m.proposals,
                    m.fsyncs,
                    m.mean_write_batch(),
                    m.batches_sent,
                    m.messages_sent as f64 / m.batches_sent.max(1) as f64,
                    m.inbound_dropped
                ),
            ));
        }
    }
    for n in &nodes {
        n.shutdown().await;
    }
    if done != ops || last < start_applied + ops {
        return Err(BenchError::Incomplete { done, wanted: ops });
    }
    Ok(BaselineRun {
        library: "ours",
        clients,
        ops,
        seconds,
        notes,
    })
}

/// Index the leader's state machine applied.
async fn applied(leader: &Node<NoopStateMachine>) -> u64 {
    leader
        .metrics()
        .await
        .ok()
        .and_then(|m| m.groups.get(&GROUP).map(|g| g.applied.0))
        .unwrap_or(0)
}
