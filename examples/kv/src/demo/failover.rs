//! Steps 2 and 3 of the demo: write the keys, kill the leader half-way,
//! and time the failover.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

use super::load::{self, Acked, LiveNodes, Writes};
use super::report::{self, millis};
use super::{CLIENTS, DemoArgs, STEP_TIMEOUT, bar, plural};
use crate::local_cluster::{LocalCluster, leader_of};

/// What the write phase measured.
pub(super) struct Failover {
    /// The node killed (the leader of partition 0).
    pub(super) victim: u64,
    /// The bulk writes.
    pub(super) writes: Writes,
    /// Their latencies, ascending.
    pub(super) latencies: Vec<Duration>,
    /// Writes acknowledged before the kill, and how long they took.
    pub(super) before_kill: (u64, Duration),
    /// Until every partition the victim led had a new leader.
    pub(super) new_leader_after: Duration,
    /// Until a write to each of those partitions succeeded again.
    pub(super) writes_resumed_after: Duration,
    /// The probe writes that measured it (acknowledged, to verify too).
    pub(super) probe_writes: Vec<Acked>,
}

/// Writes `args.keys` keys with [`CLIENTS`] concurrent writers through
/// `nodes`, kills the leader of partition 0 once half are acknowledged,
/// and measures the failover.
pub(super) async fn write_through_failover(
    args: &DemoArgs,
    cluster: &mut LocalCluster,
    nodes: &Arc<LiveNodes>,
    http: &reqwest::Client,
    leaders: &BTreeMap<u64, u64>,
) -> anyhow::Result<Failover> {
    println!();
    println!(
        "Writing {} with {CLIENTS} concurrent clients, each request to a random node",
        plural(args.keys, "key")
    );
    let progress = bar(args.keys, "  {bar:40} {pos}/{len} keys, {per_sec}  {msg}");
    let acked = Arc::new(AtomicU64::new(0));
    let writes_started = Instant::now();
    let writes = tokio::spawn(load::write_keys(
        http.clone(),
        nodes.clone(),
        args.keys,
        CLIENTS,
        acked.clone(),
        progress.clone(),
    ));
    while acked.load(Ordering::Relaxed) < args.keys / 2 && !writes.is_finished() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The leader now (it may have changed since the election).
    let statuses = cluster.statuses().await;
    let victim = leader_of(&statuses, 0, cluster.ids().len())
        .map(|(id, _)| id)
        .or_else(|| leaders.get(&0).copied())
        .ok_or_else(|| anyhow!("no leader to kill"))?;
    let mut led: Vec<u64> = (0..args.partitions)
        .filter(|&p| leader_of(&statuses, p, cluster.ids().len()).map(|(id, _)| id) == Some(victim))
        .collect();
    if led.is_empty() {
        // Leadership moved between the two looks: time partition 0.
        led.push(0);
    }
    let written = acked.load(Ordering::Relaxed);
    nodes.remove(victim);
    cluster.kill(victim)?;
    let killed_at = Instant::now();
    let before_kill = (written, killed_at - writes_started);
    progress.set_message(format!("node {victim} killed, failing over"));
    progress.suspend(|| {
        println!(
            "  after {written} writes: killed node {victim}, the leader of {}, with SIGKILL",
            if led.len() == 1 {
                format!("partition {}", led[0])
            } else {
                plural(led.len() as u64, "partition")
            }
        )
    });
    let probe = tokio::spawn(load::probe_writes(
        http.clone(),
        nodes.clone(),
        killed_at,
        args.partitions,
        led.clone(),
    ));
    let mut new_leader_after = Duration::ZERO;
    for &p in &led {
        let deadline = killed_at + STEP_TIMEOUT;
        let (leader, term) = loop {
            if let Some(found) = cluster.leader(p).await.filter(|&(id, _)| id != victim) {
                break found;
            }
            if Instant::now() >= deadline {
                bail!(
                    "partition {p}: no new leader within {STEP_TIMEOUT:?} of killing node {victim}"
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        new_leader_after = killed_at.elapsed();
        progress.suspend(|| {
            println!(
                "  partition {p}: node {leader} took over (term {term}) {} after the kill",
                millis(new_leader_after)
            )
        });
    }
    let (writes_resumed_after, probe_writes) = probe
        .await
        .context("the failover probe failed")?
        .ok_or_else(|| anyhow!("no write succeeded within {STEP_TIMEOUT:?} of the kill"))?;
    progress.suspend(|| {
        println!(
            "  writes to {} succeed again {} after the kill",
            if led.len() == 1 {
                "that partition"
            } else {
                "those partitions"
            },
            millis(writes_resumed_after)
        )
    });
    progress.set_message("");
    let writes = writes.await.context("the writers failed")?;
    progress.finish_and_clear();
    let mut latencies: Vec<Duration> = writes.acked.iter().map(|a| a.latency).collect();
    latencies.sort();
    println!(
        "  {} acknowledged in {} ({:.0} writes/s); latency p50 {}, p99 {}, max {}",
        plural(writes.acked.len() as u64, "write"),
        millis(writes.elapsed),
        report::rate(writes.acked.len() as u64, writes.elapsed),
        millis(report::quantile(&latencies, 0.5)),
        millis(report::quantile(&latencies, 0.99)),
        millis(latencies.last().copied().unwrap_or_default()),
    );
    if !writes.unacked.is_empty() {
        println!(
            "  {} never acknowledged (not counted as lost), e.g. {}",
            plural(writes.unacked.len() as u64, "write"),
            writes.unacked[0]
        );
    }

    Ok(Failover {
        victim,
        writes,
        latencies,
        before_kill,
        new_leader_after,
        writes_resumed_after,
        probe_writes,
    })
}
