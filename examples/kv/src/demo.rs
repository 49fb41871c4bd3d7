//! `raft-kv demo`: a local cluster of separate `raft-kv serve` processes
//! that loses its leader and keeps every acknowledged write.
//!
//! With no flags it starts 3 nodes (TCP, LMDB, one partition) on free
//! loopback ports with their data in a temporary directory, then:
//!
//! 1. shows the election: who leads each partition, and how long it took;
//! 2. writes `--keys` keys with 8 concurrent clients, each request to a
//!    random node, timing every write;
//! 3. half-way through, kills the leader with `SIGKILL` and measures the
//!    failover: until a new leader is named, and until a write succeeds
//!    again;
//! 4. reads every acknowledged write back with linearizable reads;
//! 5. restarts the old leader and times it catching up (its applied index
//!    reaching the leader's). With `--storage mem` the node comes back
//!    empty, so it rejoins as a new member instead: removed from the
//!    voters, restarted, added as a learner, promoted once caught up;
//! 6. prints a summary table (writes/s, p50/p99 latency, failover time,
//!    lost writes) and stops the nodes.
//!
//! [`run`] fails unless every acknowledged write was read back intact.
//! Processes and files are removed on every exit, Ctrl-C included.

mod failover;
mod load;
mod rejoin;
mod report;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};

use crate::local_cluster::{ClusterConfig, LocalCluster};
use failover::Failover;
use load::{Acked, LiveNodes};
use report::{Summary, millis};

/// Concurrent writers (and readers when verifying).
const CLIENTS: u64 = 8;
/// How long any single step of the demo may take before it gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Flags of `raft-kv demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Number of nodes (separate `raft-kv serve` processes).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(3..=15))]
    pub nodes: u64,
    /// Transport between the nodes (quic generates certificates first).
    #[arg(long, default_value = "tcp", value_parser = ["tcp", "quic"])]
    pub transport: String,
    /// Log storage of the nodes.
    #[arg(long, default_value = "lmdb", value_parser = ["lmdb", "mem"])]
    pub storage: String,
    /// Number of partitions (Raft groups); keys are spread over them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub partitions: u64,
    /// Number of keys written.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: u64,
}

impl Default for DemoArgs {
    fn default() -> Self {
        DemoArgs {
            nodes: 3,
            transport: "tcp".into(),
            storage: "lmdb".into(),
            partitions: 1,
            keys: 1000,
        }
    }
}

/// Runs the demo; see the [module documentation](self). Fails if a write
/// was lost or could not be confirmed, if a step does not finish in time,
/// or when interrupted (Ctrl-C, `SIGTERM`, `SIGHUP`); the nodes are stopped
/// and the temporary directory removed in every case.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("raft-kv-demo-")
        .tempdir()
        .context("creating a temporary directory")?;
    // Dropping the demo's future (on a signal) drops its cluster, which
    // kills every node process.
    let outcome = tokio::select! {
        result = demo(&args, dir.path()) => Ok(result),
        signal = interrupted() => Err(signal),
    };
    let path = dir.path().display().to_string();
    let removed = dir.close();
    match outcome {
        Ok(result) => {
            if let Err(e) = removed {
                eprintln!("warning: could not remove {path}: {e}");
            }
            result
        }
        Err(signal) => {
            let files = match removed {
                Ok(()) => format!("removed {path}"),
                Err(e) => format!("could not remove {path}: {e}"),
            };
            bail!("interrupted by {signal}: killed every node, {files}")
        }
    }
}

/// Resolves when the process is asked to stop; names the signal.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let wait = |kind: SignalKind| async move {
        match signal(kind) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = wait(SignalKind::interrupt()) => "Ctrl-C",
        () = wait(SignalKind::terminate()) => "SIGTERM",
        () = wait(SignalKind::hangup()) => "SIGHUP",
    }
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn bar(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn spinner(message: String) -> ProgressBar {
    let spinner = ProgressBar::new_spinner();
    spinner.set_message(message);
    spinner.enable_steady_tick(Duration::from_millis(100));
    spinner
}

/// The demo itself, in `dir`.
async fn demo(args: &DemoArgs, dir: &Path) -> anyhow::Result<()> {
    let partitions_text = plural(args.partitions, "partition");
    let cluster_text = format!(
        "{} nodes, {}, {}, {partitions_text}",
        args.nodes, args.transport, args.storage
    );
    println!("raft-kv demo: a replicated key-value store on this machine");
    println!(
        "  {} separate `raft-kv serve` processes ({} transport, {} storage, {partitions_text})",
        args.nodes, args.transport, args.storage
    );
    println!("  files in {}", dir.display());

    let binary = std::env::current_exe().context("finding the raft-kv executable")?;
    let mut config = ClusterConfig::new(binary, args.nodes, dir);
    config.transport = args.transport.clone();
    config.storage = args.storage.clone();
    config.partitions = args.partitions;
    if args.transport == "quic" {
        let certs = dir.join("certs");
        let ids: Vec<u64> = (1..=args.nodes).collect();
        crate::certs::generate(&certs, &ids, &["127.0.0.1".into(), "localhost".into()])
            .context("generating certificates")?;
        println!(
            "  generated a development CA and {} for mutual TLS in {}",
            plural(args.nodes, "node certificate"),
            certs.display()
        );
        config.tls_dir = Some(certs);
    }
    let mut cluster = LocalCluster::new(config)?;
    let result = steps(args, dir, &mut cluster, cluster_text).await;
    if result.is_err() {
        // The files go with the temporary directory: show what the nodes
        // said last.
        for id in cluster.ids() {
            eprintln!("--- last lines of node {id}'s log:");
            eprintln!("{}", cluster.log_tail(id, 8));
        }
    }
    result
}

/// Steps 1 to 6 of the demo on `cluster`.
async fn steps(
    args: &DemoArgs,
    dir: &Path,
    cluster: &mut LocalCluster,
    cluster_text: String,
) -> anyhow::Result<()> {
    // 1. Start and elect.
    println!();
    println!("Starting the nodes");
    let started = Instant::now();
    let wait = spinner("waiting for every node to listen".into());
    let up = cluster.start_all().await;
    wait.finish_and_clear();
    up?;
    for id in cluster.ids() {
        println!(
            "  node {id}: pid {}, HTTP http://{}, raft {}",
            cluster.pid(id).unwrap_or_default(),
            cluster.http_addr(id),
            cluster.raft_addr(id)
        );
    }
    println!();
    println!("Electing leaders");
    let mut leaders = BTreeMap::new();
    for p in 0..args.partitions {
        let wait = spinner(format!("partition {p}: waiting for an election"));
        let elected = cluster.wait_for_leader(p, STEP_TIMEOUT).await;
        wait.finish_and_clear();
        let (leader, term) = elected?;
        leaders.insert(p, leader);
        println!(
            "  partition {p}: node {leader} is the leader (term {term}), elected {} after the processes started",
            millis(started.elapsed())
        );
    }

    // 2 and 3. Write, and kill the leader half-way.
    let http = reqwest::Client::builder()
        .no_proxy()
        // A request stuck on a dead node is retried elsewhere after this.
        .timeout(Duration::from_secs(1))
        .build()
        .context("building the HTTP client")?;
    let nodes = Arc::new(LiveNodes::new(
        cluster
            .ids()
            .into_iter()
            .map(|id| (id, cluster.url(id)))
            .collect(),
    ));
    let Failover {
        victim,
        writes,
        latencies,
        before_kill,
        new_leader_after,
        writes_resumed_after,
        probe_writes,
    } = failover::write_through_failover(args, cluster, &nodes, &http, &leaders).await?;

    // 4. Verify.
    let mut to_check: Vec<Acked> = writes.acked.clone();
    to_check.extend(probe_writes);
    println!();
    println!(
        "Reading back all {} acknowledged writes with linearizable reads",
        to_check.len()
    );
    let progress = bar(to_check.len() as u64, "  {bar:40} {pos}/{len} keys  {msg}");
    let verified = load::verify(
        http.clone(),
        nodes.clone(),
        Arc::new(to_check),
        CLIENTS,
        progress.clone(),
    )
    .await;
    progress.finish_and_clear();
    println!(
        "  {} intact, {} lost{}",
        verified.ok,
        verified.lost.len(),
        if verified.unread.is_empty() {
            String::new()
        } else {
            format!(", {} could not be read", verified.unread.len())
        }
    );
    for (key, found) in verified.lost.iter().take(10) {
        println!("  LOST: {key} reads {found:?}");
    }

    // 5. Bring the old leader back and watch it catch up.
    println!();
    let (caught_up_to, catch_up) = if args.storage == "mem" {
        rejoin::as_new_member(cluster, &nodes, victim, args.partitions).await?
    } else {
        rejoin::restart(cluster, &nodes, victim, args.partitions).await?
    };

    // 6. Summary.
    let summary = Summary {
        cluster: cluster_text,
        writes: writes.acked.len() as u64,
        writers: CLIENTS,
        write_time: writes.elapsed,
        before_kill,
        latencies,
        killed: victim,
        new_leader_after,
        writes_resumed_after,
        catch_up,
        caught_up_to,
        partitions: args.partitions,
        verified: verified.ok,
        lost: verified.lost.len() as u64,
        unconfirmed: (writes.unacked.len() + verified.unread.len()) as u64,
    };
    println!();
    println!("{summary}");

    println!();
    let mut stopped = 0;
    for id in cluster.ids() {
        if cluster.terminate(id, Duration::from_secs(10)).await.is_ok() {
            stopped += 1;
        }
    }
    println!(
        "Stopped {} (SIGTERM); removing {}",
        plural(stopped, "node"),
        dir.display()
    );
    if summary.lost > 0 {
        bail!("{} acknowledged writes were lost", summary.lost);
    }
    if summary.unconfirmed > 0 {
        bail!(
            "{} writes could not be confirmed (never acknowledged, or not readable)",
            summary.unconfirmed
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        demo: DemoArgs,
    }

    #[test]
    fn flags_have_the_documented_defaults_and_limits() {
        let args = Cli::try_parse_from(["demo"]).unwrap().demo;
        let defaults = DemoArgs::default();
        assert_eq!(
            (
                args.nodes,
                &args.transport,
                &args.storage,
                args.partitions,
                args.keys
            ),
            (
                defaults.nodes,
                &defaults.transport,
                &defaults.storage,
                defaults.partitions,
                defaults.keys
            )
        );
        assert_eq!((args.nodes, args.keys), (3, 1000));
        let args = Cli::try_parse_from([
            "demo",
            "--nodes=5",
            "--transport=quic",
            "--storage=mem",
            "--partitions=4",
            "--keys=10",
        ])
        .unwrap()
        .demo;
        assert_eq!(
            (
                args.nodes,
                args.transport.as_str(),
                args.storage.as_str(),
                args.partitions,
                args.keys
            ),
            (5, "quic", "mem", 4, 10)
        );
        for bad in [
            "--nodes=2",
            "--transport=udp",
            "--storage=disk",
            "--partitions=0",
            "--keys=0",
        ] {
            assert!(
                Cli::try_parse_from(["demo", bad]).is_err(),
                "{bad} accepted"
            );
        }
    }
}
