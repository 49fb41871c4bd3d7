//! A cluster of `raft-kv serve` processes on one machine, for the `demo`
//! subcommand and the end-to-end tests.
//!
//! [`LocalCluster::new`] picks free loopback ports and a data directory per
//! node; [`LocalCluster::start_all`] spawns one `raft-kv serve` process per
//! node and waits for each one's ready line. Each node's stderr goes to a log
//! file ([`LocalCluster::log_path`]) kept across restarts, so a failure can be
//! diagnosed afterwards. Nodes can then be killed (`SIGKILL`), paused
//! (`SIGSTOP`/`SIGCONT`), stopped gracefully (`SIGTERM`) and restarted with
//! the same data directory and addresses. Dropping the cluster kills every
//! process it started.
//!
//! The raft address a node is given for a peer can be redirected
//! ([`LocalCluster::route`]), which is how the end-to-end tests put a fault
//! proxy between every ordered pair of nodes.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use raft_kv::local_cluster::{ClusterConfig, LocalCluster};
//!
//! let dir = std::env::temp_dir().join("raft-kv-example");
//! let config = ClusterConfig::new(std::env::current_exe()?, 3, &dir);
//! let mut cluster = LocalCluster::new(config)?;
//! cluster.start_all().await?;
//! let (leader, _term) = cluster.wait_for_leader(0, std::time::Duration::from_secs(10)).await?;
//! cluster.kill(leader)?;
//! cluster.start(leader).await?;
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use rustix::process::{Pid, Signal, kill_process};
use serde::Deserialize;
use transport_util::ports::{Protocol, free_loopback_port};

/// How to run the nodes of a [`LocalCluster`].
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The `raft-kv` executable.
    pub binary: PathBuf,
    /// Number of nodes; their ids are `1..=nodes`.
    pub nodes: u64,
    /// Directory holding `node-<id>/` (data) and `logs/node-<id>.log`.
    pub dir: PathBuf,
    /// `--transport`: `tcp` or `quic`.
    pub transport: String,
    /// `--storage`: `lmdb` or `mem`.
    pub storage: String,
    /// `--partitions`.
    pub partitions: u64,
    /// Directory with `ca.pem`, `node-<id>.pem` and `node-<id>-key.pem` (as
    /// written by `raft-kv certs`): passed as `--tls-*` when set. Required
    /// by the QUIC transport.
    pub tls_dir: Option<PathBuf>,
    /// `--election-timeout-min-ms` and `--election-timeout-max-ms`.
    pub election_timeout_ms: Option<(u64, u64)>,
    /// `--heartbeat-ms`.
    pub heartbeat_ms: Option<u64>,
    /// `--request-timeout-ms`.
    pub request_timeout_ms: Option<u64>,
    /// More arguments given to every `serve` process.
    pub extra_args: Vec<String>,
    /// `RUST_LOG` of the node processes (`None`: inherited).
    pub rust_log: Option<String>,
    /// How long a node may take to print its ready line.
    pub ready_timeout: Duration,
}

impl ClusterConfig {
    /// `nodes` nodes running `binary`, TCP and LMDB, one partition, default
    /// timeouts, files under `dir`.
    pub fn new(binary: impl Into<PathBuf>, nodes: u64, dir: impl AsRef<Path>) -> Self {
        ClusterConfig {
            binary: binary.into(),
            nodes,
            dir: dir.as_ref().to_path_buf(),
            transport: "tcp".into(),
            storage: "lmdb".into(),
            partitions: 1,
            tls_dir: None,
            election_timeout_ms: None,
            heartbeat_ms: None,
            request_timeout_ms: None,
            extra_args: Vec::new(),
            rust_log: None,
            ready_timeout: Duration::from_secs(30),
        }
    }
}

/// What a node's process is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Not running: never started, killed, or exited.
    Stopped,
    /// Running.
    Running,
    /// Stopped with `SIGSTOP`, waiting for `SIGCONT`.
    Paused,
}

/// The `/cluster` answer of one node.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ClusterStatus {
    /// The answering node.
    #[serde(default)]
    pub node: u64,
    /// One entry per partition.
    #[serde(default)]
    pub partitions: Vec<PartitionStatus>,
}

/// One partition as seen by one node (part of [`ClusterStatus`]).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PartitionStatus {
    /// Partition number.
    #[serde(default)]
    pub partition: u64,
    /// The node's role in it (`leader`, `follower`, ...).
    #[serde(default)]
    pub role: String,
    /// The leader it knows of.
    #[serde(default)]
    pub leader: Option<u64>,
    /// The leader's HTTP address, when known.
    #[serde(default)]
    pub leader_http: Option<String>,
    /// Current term.
    #[serde(default)]
    pub term: u64,
    /// Commit index.
    #[serde(default)]
    pub commit: u64,
    /// Applied index.
    #[serde(default)]
    pub applied: u64,
    /// Voter ids.
    #[serde(default)]
    pub voters: Vec<u64>,
    /// Learner ids.
    #[serde(default)]
    pub learners: Vec<u64>,
}

/// One node: its addresses, files and process.
#[derive(Debug)]
struct Slot {
    raft_addr: SocketAddr,
    http_addr: SocketAddr,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    paused: bool,
    starts: u32,
}

/// A process spawned and not yet reported ready.
struct Pending {
    id: u64,
    ready: tokio::sync::oneshot::Receiver<String>,
}

/// A set of `raft-kv serve` processes on loopback ports. See the
/// [module documentation](self).
#[derive(Debug)]
pub struct LocalCluster {
    config: ClusterConfig,
    slots: BTreeMap<u64, Slot>,
    routes: BTreeMap<(u64, u64), SocketAddr>,
    node_args: BTreeMap<u64, Vec<String>>,
    http: reqwest::Client,
}

impl LocalCluster {
    /// Picks the ports and creates the directories of every node; starts
    /// nothing.
    pub fn new(config: ClusterConfig) -> anyhow::Result<Self> {
        if config.nodes == 0 {
            bail!("a cluster needs at least one node");
        }
        let logs = config.dir.join("logs");
        std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
        // Raft ports of a QUIC cluster must be free for UDP as well.
        let raft_ports = if config.transport == "quic" {
            Protocol::Both
        } else {
            Protocol::Tcp
        };
        let mut slots = BTreeMap::new();
        for id in 1..=config.nodes {
            let raft_addr = free_loopback_port(raft_ports)?;
            let http_addr = free_loopback_port(Protocol::Tcp)?;
            slots.insert(
                id,
                Slot {
                    raft_addr,
                    http_addr,
                    data_dir: config.dir.join(format!("node-{id}")),
                    log_path: logs.join(format!("node-{id}.log")),
                    child: None,
                    paused: false,
                    starts: 0,
                },
            );
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .context("building the HTTP client")?;
        Ok(LocalCluster {
            config,
            slots,
            routes: BTreeMap::new(),
            node_args: BTreeMap::new(),
            http,
        })
    }

    /// The configuration the cluster was made with.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The node ids, in order.
    pub fn ids(&self) -> Vec<u64> {
        self.slots.keys().copied().collect()
    }

    fn slot(&self, id: u64) -> anyhow::Result<&Slot> {
        self.slots
            .get(&id)
            .ok_or_else(|| anyhow!("no node {id} in this cluster"))
    }

    fn slot_mut(&mut self, id: u64) -> anyhow::Result<&mut Slot> {
        self.slots
            .get_mut(&id)
            .ok_or_else(|| anyhow!("no node {id} in this cluster"))
    }

    /// The raft address node `id` listens on.
    ///
    /// # Panics
    ///
    /// If there is no node `id`.
    pub fn raft_addr(&self, id: u64) -> SocketAddr {
        self.slots[&id].raft_addr
    }

    /// The HTTP address node `id` listens on.
    ///
    /// # Panics
    ///
    /// If there is no node `id`.
    pub fn http_addr(&self, id: u64) -> SocketAddr {
        self.slots[&id].http_addr
    }

    /// Node `id`'s data directory.
    ///
    /// # Panics
    ///
    /// If there is no node `id`.
    pub fn data_dir(&self, id: u64) -> &Path {
        &self.slots[&id].data_dir
    }

    /// The file node `id`'s stderr is appended to.
    ///
    /// # Panics
    ///
    /// If there is no node `id`.
    pub fn log_path(&self, id: u64) -> &Path {
        &self.slots[&id].log_path
    }

    /// The process id of node `id`, while it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.slots.get(&id)?.child.as_ref().map(Child::id)
    }

    /// What node `id`'s process is doing.
    pub fn state(&self, id: u64) -> NodeState {
        match self.slots.get(&id) {
            Some(Slot {
                child: Some(_),
                paused: true,
                ..
            }) => NodeState::Paused,
            Some(Slot { child: Some(_), .. }) => NodeState::Running,
            _ => NodeState::Stopped,
        }
    }

    /// The ids of the nodes whose process runs and is not paused.
    pub fn running(&self) -> Vec<u64> {
        self.ids()
            .into_iter()
            .filter(|&id| self.state(id) == NodeState::Running)
            .collect()
    }

    /// Gives node `from` the address `to` for its peer `to` instead of that
    /// peer's raft address (a proxy, say). Takes effect at the next start of
    /// `from`.
    pub fn route(&mut self, from: u64, to: u64, address: SocketAddr) {
        self.routes.insert((from, to), address);
    }

    /// Gives node `id` more `serve` arguments (after the common ones),
    /// replacing those given before. Takes effect at its next start.
    pub fn set_node_args(&mut self, id: u64, args: Vec<String>) {
        self.node_args.insert(id, args);
    }

    /// The `serve` arguments of node `id`.
    pub fn serve_args(&self, id: u64) -> anyhow::Result<Vec<String>> {
        let slot = self.slot(id)?;
        let c = &self.config;
        let peers: Vec<String> = self
            .slots
            .iter()
            .map(|(&peer, s)| {
                let addr = match self.routes.get(&(id, peer)) {
                    Some(routed) if peer != id => *routed,
                    _ => s.raft_addr,
                };
                format!("{peer}@{addr}")
            })
            .collect();
        let http_peers: Vec<String> = self
            .slots
            .iter()
            .filter(|&(&peer, _)| peer != id)
            .map(|(peer, s)| format!("{peer}@{}", s.http_addr))
            .collect();
        let mut args = vec![
            "serve".to_string(),
            format!("--id={id}"),
            format!("--raft-listen={}", slot.raft_addr),
            format!("--http-listen={}", slot.http_addr),
            format!("--peers={}", peers.join(",")),
            format!("--transport={}", c.transport),
            format!("--storage={}", c.storage),
            format!("--data-dir={}", slot.data_dir.display()),
            format!("--partitions={}", c.partitions),
        ];
        if !http_peers.is_empty() {
            args.push(format!("--http-peers={}", http_peers.join(",")));
        }
        if let Some(dir) = &c.tls_dir {
            args.push(format!("--tls-ca={}", dir.join("ca.pem").display()));
            args.push(format!(
                "--tls-cert={}",
                dir.join(format!("node-{id}.pem")).display()
            ));
            args.push(format!(
                "--tls-key={}",
                dir.join(format!("node-{id}-key.pem")).display()
            ));
        }
        if let Some((min, max)) = c.election_timeout_ms {
            args.push(format!("--election-timeout-min-ms={min}"));
            args.push(format!("--election-timeout-max-ms={max}"));
        }
        if let Some(ms) = c.heartbeat_ms {
            args.push(format!("--heartbeat-ms={ms}"));
        }
        if let Some(ms) = c.request_timeout_ms {
            args.push(format!("--request-timeout-ms={ms}"));
        }
        args.extend(c.extra_args.iter().cloned());
        args.extend(self.node_args.get(&id).into_iter().flatten().cloned());
        Ok(args)
    }

    /// Spawns node `id`'s process; the receiver gets its ready line.
    fn spawn(&mut self, id: u64) -> anyhow::Result<Pending> {
        if self.state(id) != NodeState::Stopped {
            bail!("node {id} is already running");
        }
        let args = self.serve_args(id)?;
        let binary = self.config.binary.clone();
        let rust_log = self.config.rust_log.clone();
        let slot = self.slot_mut(id)?;
        slot.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&slot.log_path)
            .with_context(|| format!("opening {}", slot.log_path.display()))?;
        writeln!(
            log,
            "==== {} start #{} of node {id}: {} {}",
            wall_clock(),
            slot.starts,
            binary.display(),
            args.join(" ")
        )
        .with_context(|| format!("writing {}", slot.log_path.display()))?;
        let mut command = Command::new(&binary);
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        if let Some(filter) = rust_log {
            command.env("RUST_LOG", filter);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting node {id} ({})", binary.display()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("node {id} has no stdout pipe"))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("raft-kv-node-{id}-stdout"))
            .spawn(move || watch_stdout(id, stdout, tx))
            .context("starting a stdout reader thread")?;
        slot.child = Some(child);
        slot.paused = false;
        Ok(Pending { id, ready: rx })
    }

    /// Waits for a spawned node's ready line; kills it on failure.
    async fn await_ready(&mut self, pending: Pending, deadline: Instant) -> anyhow::Result<()> {
        let Pending { id, ready } = pending;
        let left = deadline.saturating_duration_since(Instant::now());
        let outcome = tokio::time::timeout(left, ready).await;
        let problem = match outcome {
            Ok(Ok(_line)) => return Ok(()),
            Ok(Err(_)) => {
                let status = self.reap(id);
                format!("exited before it was ready ({status})")
            }
            Err(_) => {
                let _ = self.kill(id);
                format!(
                    "printed no ready line within {:?}",
                    self.config.ready_timeout
                )
            }
        };
        bail!(
            "node {id} {problem}; last lines of {}:\n{}",
            self.log_path(id).display(),
            self.log_tail(id, 20)
        )
    }

    /// Waits (a little) for an exited child and describes how it ended.
    fn reap(&mut self, id: u64) -> String {
        let Some(slot) = self.slots.get_mut(&id) else {
            return "unknown node".into();
        };
        let Some(mut child) = slot.child.take() else {
            return "not running".into();
        };
        slot.paused = false;
        for _ in 0..50 {
            if let Ok(Some(status)) = child.try_wait() {
                return status.to_string();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        "closed its output and was killed".into()
    }

    /// Starts node `id` (again, with the same data directory and addresses)
    /// and waits for its ready line.
    pub async fn start(&mut self, id: u64) -> anyhow::Result<()> {
        let deadline = Instant::now() + self.config.ready_timeout;
        let pending = self.spawn(id)?;
        self.await_ready(pending, deadline).await
    }

    /// Starts every stopped node at once and waits until all are ready.
    pub async fn start_all(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + self.config.ready_timeout;
        let mut pending = Vec::new();
        for id in self.ids() {
            if self.state(id) == NodeState::Stopped {
                pending.push(self.spawn(id)?);
            }
        }
        for p in pending {
            self.await_ready(p, deadline).await?;
        }
        Ok(())
    }

    fn signal(&mut self, id: u64, signal: Signal) -> anyhow::Result<()> {
        let slot = self.slot_mut(id)?;
        let child = slot
            .child
            .as_ref()
            .ok_or_else(|| anyhow!("node {id} is not running"))?;
        kill_process(Pid::from_child(child), signal)
            .with_context(|| format!("sending a signal to node {id}"))
    }

    /// Kills node `id` with `SIGKILL` and reaps it.
    pub fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        let slot = self.slot_mut(id)?;
        let mut child = slot
            .child
            .take()
            .ok_or_else(|| anyhow!("node {id} is not running"))?;
        slot.paused = false;
        // `Child::kill` sends SIGKILL, which also ends a stopped process.
        let _ = child.kill();
        child
            .wait()
            .with_context(|| format!("waiting for node {id} to die"))?;
        Ok(())
    }

    /// Pauses node `id` with `SIGSTOP`.
    pub fn pause(&mut self, id: u64) -> anyhow::Result<()> {
        self.signal(id, Signal::STOP)?;
        self.slot_mut(id)?.paused = true;
        Ok(())
    }

    /// Resumes node `id` with `SIGCONT`.
    pub fn resume(&mut self, id: u64) -> anyhow::Result<()> {
        self.signal(id, Signal::CONT)?;
        self.slot_mut(id)?.paused = false;
        Ok(())
    }

    /// Asks node `id` to shut down with `SIGTERM` and waits up to `timeout`
    /// for it to exit; kills it after that. Returns its exit status.
    pub async fn terminate(&mut self, id: u64, timeout: Duration) -> anyhow::Result<ExitStatus> {
        if self.state(id) == NodeState::Paused {
            self.resume(id)?;
        }
        self.signal(id, Signal::TERM)?;
        let deadline = Instant::now() + timeout;
        loop {
            let slot = self.slot_mut(id)?;
            let Some(child) = slot.child.as_mut() else {
                bail!("node {id} is not running");
            };
            if let Some(status) = child
                .try_wait()
                .with_context(|| format!("waiting for node {id}"))?
            {
                slot.child = None;
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.kill(id)?;
                bail!("node {id} did not exit within {timeout:?} of SIGTERM; killed it");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills every running node (`SIGKILL`).
    pub fn kill_all(&mut self) {
        for id in self.ids() {
            if self.state(id) != NodeState::Stopped {
                let _ = self.kill(id);
            }
        }
    }

    /// The last `lines` lines of node `id`'s log file.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let Some(slot) = self.slots.get(&id) else {
            return String::new();
        };
        tail(&slot.log_path, lines).unwrap_or_else(|e| format!("(cannot read the log: {e})"))
    }

    /// The base URL of node `id`'s HTTP API, such as `http://127.0.0.1:8001`.
    ///
    /// # Panics
    ///
    /// If there is no node `id`.
    pub fn url(&self, id: u64) -> String {
        format!("http://{}", self.http_addr(id))
    }

    /// Node `id`'s `GET /cluster` answer.
    pub async fn status(&self, id: u64) -> anyhow::Result<ClusterStatus> {
        self.slot(id)?;
        fetch_status(&self.http, &self.url(id)).await
    }

    /// The `/cluster` answers of every running node that answered.
    pub async fn statuses(&self) -> BTreeMap<u64, ClusterStatus> {
        let mut set = tokio::task::JoinSet::new();
        for id in self.running() {
            let (http, url) = (self.http.clone(), self.url(id));
            set.spawn(async move { (id, fetch_status(&http, &url).await) });
        }
        let mut answers = BTreeMap::new();
        while let Some(joined) = set.join_next().await {
            if let Ok((id, Ok(status))) = joined {
                answers.insert(id, status);
            }
        }
        answers
    }

    /// The leader of `partition` and its term, if the running nodes agree on
    /// one: it says it leads, and a majority of all nodes (itself included)
    /// name it as leader in that term.
    pub async fn leader(&self, partition: u64) -> Option<(u64, u64)> {
        let statuses = self.statuses().await;
        leader_of(&statuses, partition, self.slots.len())
    }

    /// Waits until [`LocalCluster::leader`] names a leader of `partition`.
    pub async fn wait_for_leader(
        &self,
        partition: u64,
        timeout: Duration,
    ) -> anyhow::Result<(u64, u64)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = self.leader(partition).await {
                return Ok(found);
            }
            if Instant::now() >= deadline {
                bail!("no leader of partition {partition} within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// The leader of `partition` per the [`LocalCluster::leader`] rule.
pub fn leader_of(
    statuses: &BTreeMap<u64, ClusterStatus>,
    partition: u64,
    nodes: usize,
) -> Option<(u64, u64)> {
    let view = |s: &ClusterStatus| {
        s.partitions
            .iter()
            .find(|p| p.partition == partition)
            .cloned()
    };
    let claims: BTreeSet<(u64, u64)> = statuses
        .iter()
        .filter_map(|(&id, s)| view(s).filter(|p| p.role == "leader").map(|p| (p.term, id)))
        .collect();
    // The highest term first: an old leader may not have noticed yet.
    claims.into_iter().rev().find_map(|(term, id)| {
        let backers = statuses
            .values()
            .filter_map(view)
            .filter(|p| p.term == term && p.leader == Some(id))
            .count();
        (backers > nodes / 2).then_some((id, term))
    })
}

/// `GET {base}/cluster`.
async fn fetch_status(http: &reqwest::Client, base: &str) -> anyhow::Result<ClusterStatus> {
    let url = format!("{base}/cluster");
    let response = http
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    if !status.is_success() {
        bail!("GET {url}: {status}");
    }
    response
        .json()
        .await
        .with_context(|| format!("GET {url}: unexpected answer"))
}

/// Reads a node's stdout: hands the ready line over, then drains the rest
/// so the node never blocks on a full pipe.
fn watch_stdout(id: u64, stdout: impl Read, ready: tokio::sync::oneshot::Sender<String>) {
    let prefix = format!("raft-kv node {id} ready");
    let mut ready = Some(ready);
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if line.starts_with(&prefix)
            && let Some(tx) = ready.take()
        {
            let _ = tx.send(line);
        }
    }
}

/// The last `lines` lines of a file (reads at most its last 64 KiB).
fn tail(path: &Path, lines: usize) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    Ok(all[all.len().saturating_sub(lines)..].join("\n"))
}

/// Seconds since the epoch with milliseconds, for log markers.
fn wall_clock() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:03}", now.as_secs(), now.subsec_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(node: u64, role: &str, leader: Option<u64>, term: u64) -> ClusterStatus {
        ClusterStatus {
            node,
            partitions: vec![PartitionStatus {
                partition: 0,
                role: role.into(),
                leader,
                term,
                ..Default::default()
            }],
        }
    }

    #[test]
    fn a_leader_needs_a_majority_naming_it_in_its_term() {
        let mut s = BTreeMap::new();
        s.insert(1, status(1, "leader", Some(1), 3));
        s.insert(2, status(2, "follower", Some(1), 3));
        s.insert(3, status(3, "follower", None, 3));
        assert_eq!(leader_of(&s, 0, 3), Some((1, 3)));
        assert_eq!(leader_of(&s, 1, 3), None, "no such partition");
        // Alone it is not enough.
        s.insert(2, status(2, "candidate", None, 4));
        assert_eq!(leader_of(&s, 0, 3), None);
        // An old leader and a new one: the new one wins.
        s.insert(2, status(2, "leader", Some(2), 4));
        s.insert(3, status(3, "follower", Some(2), 4));
        assert_eq!(leader_of(&s, 0, 3), Some((2, 4)));
        // Followers of another term do not count.
        s.insert(3, status(3, "follower", Some(2), 5));
        assert_eq!(leader_of(&s, 0, 3), None);
    }

    #[test]
    fn serve_args_follow_the_routes() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ClusterConfig::new("/bin/false", 3, dir.path());
        config.tls_dir = Some(dir.path().join("certs"));
        config.election_timeout_ms = Some((100, 200));
        let mut cluster = LocalCluster::new(config).unwrap();
        let proxy: SocketAddr = "127.0.0.1:9".parse().unwrap();
        cluster.route(1, 3, proxy);
        let args = cluster.serve_args(1).unwrap().join(" ");
        let expected_peers = format!(
            "--peers=1@{},2@{},3@{proxy}",
            cluster.raft_addr(1),
            cluster.raft_addr(2)
        );
        assert!(args.contains(&expected_peers), "{args}");
        assert!(args.contains("--election-timeout-max-ms=200"), "{args}");
        assert!(args.contains("node-1-key.pem"), "{args}");
        let args2 = cluster.serve_args(2).unwrap().join(" ");
        assert!(
            args2.contains(&format!("3@{}", cluster.raft_addr(3))),
            "{args2}"
        );
        assert!(cluster.serve_args(4).is_err());
        cluster.set_node_args(2, vec!["--voters=1,3".into()]);
        let args2 = cluster.serve_args(2).unwrap();
        assert_eq!(args2.last().map(String::as_str), Some("--voters=1,3"));
        assert!(
            !cluster
                .serve_args(1)
                .unwrap()
                .join(" ")
                .contains("--voters")
        );
    }

    #[tokio::test]
    async fn a_process_that_exits_early_is_reported_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        // `sh -c` ignores the serve arguments, writes to stderr and fails.
        let mut config = ClusterConfig::new("/bin/sh", 1, dir.path());
        config.extra_args = vec![];
        let mut cluster = LocalCluster::new(config).unwrap();
        let err = cluster.start(1).await.unwrap_err().to_string();
        assert!(err.contains("node 1 exited before it was ready"), "{err}");
        assert_eq!(cluster.state(1), NodeState::Stopped);
        let log = std::fs::read_to_string(cluster.log_path(1)).unwrap();
        assert!(log.contains("start #1 of node 1"), "{log}");
    }
}
