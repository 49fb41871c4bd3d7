//! One end-to-end run: start the cluster behind the fault proxies, run the
//! clients while the nemesis injects faults, heal, require progress and
//! convergence, then check the history for linearizability.
//!
//! `RAFT_KV_E2E_SECS` sets the seconds of faults (default 30);
//! `RAFT_KV_E2E_SEED` replays a seed (the seed of every run is printed).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use raft_api::testkit::lin;
use raft_kv::local_cluster::{ClusterConfig, LocalCluster};
use tokio::sync::watch;
use tokio::time::Instant;

use super::clients::{Anomalies, Client, Tally, Target};
use super::nemesis::Nemesis;
use super::proxy::{FaultNet, Protocol};
use super::rng::Rng;
use super::say;

/// Election timeouts of the nodes (ms): small, for quick failovers.
const ELECTION_TIMEOUT_MS: (u64, u64) = (200, 400);
/// Heartbeat interval of the nodes (ms).
const HEARTBEAT_MS: u64 = 40;
/// `--request-timeout-ms` of the nodes.
const REQUEST_TIMEOUT_MS: u64 = 1500;
/// Clients give up on a request after this long (outcome unknown).
const CLIENT_TIMEOUT: Duration = Duration::from_millis(2000);
/// Seconds of faults when `RAFT_KV_E2E_SECS` is not set.
const DEFAULT_SECS: u64 = 30;
/// How long the cluster has to make progress once healed.
const RECOVERY: Duration = Duration::from_secs(30);

/// What one run starts and how it loads it.
pub(crate) struct Scenario {
    /// `tcp` or `quic`.
    pub(crate) transport: &'static str,
    /// `lmdb` or `mem`.
    pub(crate) storage: &'static str,
    /// Number of nodes.
    pub(crate) nodes: u64,
    /// Number of partitions (Raft groups).
    pub(crate) partitions: u64,
    /// Consistency of the clients' reads: `linearizable` or `lease`.
    pub(crate) reads: &'static str,
    /// Concurrent clients.
    pub(crate) clients: u64,
    /// Keys the clients work on.
    pub(crate) keys: u64,
}

impl Scenario {
    /// For example `tcp+lmdb 3 nodes` or `tcp+lmdb 5 nodes 2 partitions`.
    fn label(&self) -> String {
        let mut label = format!("{}+{} {} nodes", self.transport, self.storage, self.nodes);
        if self.partitions > 1 {
            label += &format!(" {} partitions", self.partitions);
        }
        if self.reads != "linearizable" {
            label += &format!(" {} reads", self.reads);
        }
        label
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    match value.trim().parse() {
        Ok(v) => Some(v),
        Err(_) => panic!("{name}={value:?} is not a number"),
    }
}

/// Runs the scenario; panics (failing the test) with the seed and the
/// reason when anything goes wrong, keeping the nodes' logs.
pub(crate) async fn run(scenario: Scenario) {
    let label = scenario.label();
    let seed = env_u64("RAFT_KV_E2E_SEED").unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        (now.as_nanos() as u64 ^ u64::from(std::process::id())) % 1_000_000
    });
    let secs = env_u64("RAFT_KV_E2E_SECS").unwrap_or(DEFAULT_SECS);
    say!("e2e {label}: seed {seed}, {secs} s of faults (replay: RAFT_KV_E2E_SEED={seed})");
    let dir = tempfile::Builder::new()
        .prefix("raft-kv-e2e-")
        .tempdir()
        .expect("a temporary directory");
    match run_in(&scenario, seed, secs, dir.path()).await {
        Ok(summary) => say!("{summary}"),
        Err(e) => {
            let kept = dir.keep();
            say!("e2e {label} seed {seed}: FAILED: {e:#}");
            say!("node logs kept in {}/logs", kept.display());
            panic!(
                "e2e {label} seed {seed} failed: {e:#}\n\
                 replay with RAFT_KV_E2E_SEED={seed}; node logs in {}/logs",
                kept.display()
            );
        }
    }
}

/// Writes development certificates for nodes `1..=nodes` into `out` with
/// `raft-kv certs`.
fn generate_certs(binary: &str, out: &Path, nodes: u64) -> anyhow::Result<()> {
    let ids: Vec<String> = (1..=nodes).map(|i| i.to_string()).collect();
    let output = Command::new(binary)
        .arg("certs")
        .arg("--out")
        .arg(out)
        .args(["--nodes", &ids.join(","), "--hosts", "127.0.0.1,localhost"])
        .output()
        .context("running raft-kv certs")?;
    ensure!(
        output.status.success(),
        "raft-kv certs failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

async fn run_in(s: &Scenario, seed: u64, secs: u64, dir: &Path) -> anyhow::Result<String> {
    let label = s.label();
    let binary = env!("CARGO_BIN_EXE_raft-kv");
    let mut config = ClusterConfig::new(binary, s.nodes, dir);
    config.transport = s.transport.into();
    config.storage = s.storage.into();
    config.partitions = s.partitions;
    config.election_timeout_ms = Some(ELECTION_TIMEOUT_MS);
    config.heartbeat_ms = Some(HEARTBEAT_MS);
    config.request_timeout_ms = Some(REQUEST_TIMEOUT_MS);
    config.rust_log = Some("info".into());
    if s.transport == "quic" {
        let certs = dir.join("certs");
        generate_certs(binary, &certs, s.nodes)?;
        config.tls_dir = Some(certs);
    }
    let mut cluster = LocalCluster::new(config)?;
    let targets: BTreeMap<u64, SocketAddr> = cluster
        .ids()
        .into_iter()
        .map(|id| (id, cluster.raft_addr(id)))
        .collect();
    let protocol = if s.transport == "quic" {
        Protocol::Udp
    } else {
        Protocol::Tcp
    };
    let net = FaultNet::start(protocol, &targets)
        .await
        .context("starting the fault proxies")?;
    for (from, to) in net.pairs() {
        cluster.route(from, to, net.addr(from, to));
    }
    say!(
        "starting {} nodes ({} proxies between them), logs in {}",
        s.nodes,
        net.pairs().len(),
        dir.join("logs").display()
    );
    cluster.start_all().await?;
    for p in 0..s.partitions {
        let (leader, term) = cluster.wait_for_leader(p, RECOVERY).await?;
        say!("partition {p}: node {leader} leads (term {term})");
    }

    let rng = Rng::new(seed);
    let urls = cluster
        .ids()
        .into_iter()
        .map(|id| cluster.url(id))
        .collect();
    let target = Target::new(urls, s.reads, CLIENT_TIMEOUT);
    let keys: Vec<String> = (0..s.keys).map(|k| format!("k{k}")).collect();
    let (stop, stopped) = watch::channel(false);
    let clients: Vec<_> = (1..=s.clients)
        .map(|c| {
            let client = Client::new(c, target.clone(), keys.clone(), rng.fork(100 + c));
            tokio::spawn(client.run(stopped.clone()))
        })
        .collect();
    say!(
        "{} clients doing put/get/cas/delete on {} keys with {} reads, each request to a random node",
        s.clients,
        s.keys,
        s.reads
    );

    let mut nemesis = Nemesis::new(rng.fork(1), ELECTION_TIMEOUT_MS.1);
    let until = Instant::now() + Duration::from_secs(secs);
    let outcome = nemesis.run(&mut cluster, &net, until).await;
    // Heal even after an error, so nothing is left cut or paused.
    let healed = Nemesis::heal_all(&mut cluster, &net).await;
    outcome?;
    healed?;
    let counts = nemesis.counts;
    say!("nemesis done after {counts}; network healed, every node running");

    // Progress once every fault is over.
    let start = Instant::now();
    for p in 0..s.partitions {
        let (leader, term) = cluster
            .wait_for_leader(p, RECOVERY)
            .await
            .context("no leader after healing")?;
        say!("after healing, partition {p}: node {leader} leads (term {term})");
    }
    let mut last = Client::new(0, target.clone(), keys.clone(), rng.fork(99));
    for key in &keys {
        if !last.put_until_acknowledged(key, RECOVERY).await {
            bail!("no progress: no write to {key} acknowledged within {RECOVERY:?} of healing");
        }
    }
    say!(
        "progress: a write to every key acknowledged {} ms after healing",
        start.elapsed().as_millis()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.send_replace(true);
    let mut history = std::mem::take(&mut last.history);
    let mut anomalies = Anomalies::default();
    for task in clients {
        let client = task.await.context("a client task failed")?;
        history.extend(client.history);
        anomalies.count += client.anomalies.count;
        anomalies.examples.extend(client.anomalies.examples);
    }

    converge(&cluster, &target, &keys, s.partitions).await?;

    let tally = Tally::of(&history);
    say!("checking {} operations for linearizability", tally.ops);
    let checking = Instant::now();
    let verdict = tokio::task::spawn_blocking(move || lin::check(&history))
        .await
        .context("the checker panicked")?;
    let summary = format!(
        "e2e {label} seed {seed}: {} ops checked ({} ok, {} failed, {} unknown), {counts}",
        tally.ops, tally.ok, tally.failed, tally.unknown
    );
    if let Err(violation) = verdict {
        bail!("{summary}: NOT linearizable: {violation}");
    }
    say!("history checked in {} ms", checking.elapsed().as_millis());
    ensure!(
        anomalies.count == 0,
        "{summary}: {} well-formed requests were refused, failed with an internal error or got malformed answers, e.g. {:?}",
        anomalies.count,
        anomalies.examples
    );
    ensure!(tally.ops > 0, "{summary}: no operations");
    ensure!(counts.total() > 0, "{summary}: no faults injected");
    ensure!(
        tally.ok * 3 >= tally.ops,
        "{summary}: fewer than a third of the operations completed"
    );
    Ok(format!("{summary}: linearizable"))
}

/// Waits until every node has applied the same index in every partition,
/// then reads every key from every node locally (`stale`) and requires the
/// same value everywhere.
async fn converge(
    cluster: &LocalCluster,
    target: &Target,
    keys: &[String],
    partitions: u64,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + RECOVERY;
    let nodes = cluster.ids().len();
    loop {
        let statuses = cluster.statuses().await;
        let mut applied: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for status in statuses.values() {
            for p in &status.partitions {
                applied.entry(p.partition).or_default().push(p.applied);
            }
        }
        let same = statuses.len() == nodes
            && (0..partitions).all(|p| {
                applied
                    .get(&p)
                    .is_some_and(|a| a.len() == nodes && a.iter().all(|&x| x == a[0]))
            });
        if same {
            say!("replicas converged: applied indexes {applied:?}");
            break;
        }
        if Instant::now() >= deadline {
            bail!("replicas did not converge within {RECOVERY:?}: applied indexes {applied:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for key in keys {
        let mut values = BTreeMap::new();
        for id in cluster.ids() {
            let url = format!("{}/kv/{key}?consistency=stale", cluster.url(id));
            let response = target
                .http
                .get(&url)
                .send()
                .await
                .with_context(|| format!("GET {url}"))?;
            let value = match response.status().as_u16() {
                200 => Some(response.bytes().await?.to_vec()),
                404 => None,
                other => bail!("GET {url}: {other}"),
            };
            values.insert(id, value.map(|v| String::from_utf8_lossy(&v).into_owned()));
        }
        let first = values.values().next().cloned().flatten();
        ensure!(
            values.values().all(|v| *v == first),
            "replicas differ on {key}: {values:?}"
        );
    }
    say!("every node holds the same value for every key");
    Ok(())
}
