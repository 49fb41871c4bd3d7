//! A deterministic simulated cluster: engines, log stores and key-value
//! state machines over a faulty network, driven by one seeded event queue.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use raft_api::{
    Config, Envelope, GroupId, LogId, LogIndex, LogStore, NodeId, Snapshot, StateMachine,
};
use raft_node::{
    Action, Engine, EngineInit, MembershipChange, ProposeError, ReadError, ReadMode, Role,
};
use storage_mem::{KvCommand, KvResponse, KvStateMachine, MemLogStore};

use crate::invariants::{Invariants, LogMirror};
use crate::rng::SimRng;
use raft_api::testkit::lin::{self, KvOp, KvResult, Operation, Outcome};

const GROUP: GroupId = GroupId(1);
/// Each node's engine is ticked every this many milliseconds of its own
/// (skewed) clock.
const TICK_MS: u64 = 10;
/// A client gives up on an operation after this long (outcome unknown).
const CLIENT_TIMEOUT_MS: u64 = 1_500;
/// After the faults stop, the cluster must recover within this long.
const RECOVERY_BOUND_MS: u64 = 15_000;
/// A run that needs more events than this is stuck in a message storm.
const MAX_EVENTS: u64 = 2_000_000;
/// Operations each client must complete after the faults stop.
const OPS_AFTER_HEAL: usize = 3;

/// Polls a future that is expected to be ready at once (the in-memory
/// backends never wait).
pub fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("in-memory backend future was not ready"),
    }
}

/// What a simulation run is made of.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub nodes: usize,
    /// How long faults are injected, in simulated milliseconds.
    pub fault_ms: u64,
    pub clients: usize,
    pub keys: usize,
    /// Nodes that start outside the group (with no voters configured); the
    /// membership churn adds them.
    pub spares: usize,
    /// Whether an administrator changes membership, transfers leadership
    /// and triggers snapshots during the fault phase.
    pub churn: bool,
    /// Whether the simulator injects faults by itself (off for scripted
    /// scenarios, which inject their own).
    pub random_faults: bool,
    /// Engine settings to use instead of the ones drawn from the seed.
    pub config: Option<Config>,
}

impl SimConfig {
    pub fn new(seed: u64, nodes: usize) -> Self {
        Self {
            seed,
            nodes,
            fault_ms: 4_000,
            clients: 3 + (seed % 3) as usize,
            keys: 3,
            spares: [0, 1, 2][(seed / 4 % 3) as usize],
            churn: !seed.is_multiple_of(5),
            random_faults: true,
            config: None,
        }
    }

    /// Every node of the run: the initial voters, then the spares.
    pub fn total_nodes(&self) -> usize {
        self.nodes + self.spares
    }

    /// A run whose faults a test scripts itself.
    pub fn scripted(seed: u64, nodes: usize) -> Self {
        Self {
            fault_ms: u64::MAX,
            random_faults: false,
            spares: 0,
            churn: false,
            ..Self::new(seed, nodes)
        }
    }

    /// Engine settings for this run: short timeouts, and flow-control and
    /// snapshot limits drawn from the seed so that small batches, tiny
    /// windows, byte-bounded messages, frequent compaction and many-chunk
    /// snapshots are all exercised.
    pub fn engine_config(&self) -> Config {
        if let Some(config) = &self.config {
            return config.clone();
        }
        let mut rng = SimRng::new(self.seed ^ 0xC0FF_EE00);
        Config {
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
            heartbeat_interval_ms: 30,
            max_append_entries: rng.pick(&[1, 2, 4, 8, 64]),
            max_append_bytes: rng.pick(&[64, 256, 4096]),
            max_inflight: rng.pick(&[1, 2, 4, 16]),
            pre_vote: true,
            check_quorum: true,
            snapshot_threshold: rng.pick(&[0, 5, 20, 80]),
            snapshot_trailing: rng.pick(&[0, 3, 30]),
            snapshot_chunk_bytes: rng.pick(&[16, 100, 4096]),
            max_promote_lag: rng.pick(&[3, 50]),
            // Clock rates differ by up to 2x (see `MIN_RATE`, `MAX_RATE`): a
            // leader's lease of L local ms lasts at most L / 0.7 real ms,
            // and a voter ignores candidates for at least 150 / 1.4 real ms
            // after a heartbeat; L = 75 keeps the lease inside that.
            lease_clock_drift_ms: 75,
            quiesce_after_ms: rng.pick(&[0, 0, 100, 400]),
        }
    }
}

/// Which kind of check failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// A safety invariant broke.
    Safety,
    /// The client history is not linearizable.
    Linearizability,
    /// The cluster did not recover after the faults stopped.
    Liveness,
}

#[derive(Clone, Debug)]
pub struct SimFailure {
    pub kind: FailureKind,
    pub message: String,
    pub at_ms: u64,
}

/// What happened in a run that passed.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    pub events: u64,
    pub crashes: u64,
    pub partitions: u64,
    pub leader_terms: usize,
    pub committed: usize,
    pub ops_ok: usize,
    pub ops_failed: usize,
    pub ops_unknown: usize,
    pub dropped: u64,
    pub duplicated: u64,
    pub membership_changes: u64,
    pub transfers: u64,
    pub snapshots_built: u64,
    pub snapshots_installed: u64,
    pub reads_served: u64,
    pub follower_reads: u64,
    pub lease_reads: u64,
    /// Most voters in any membership the group reached.
    pub max_voters: usize,
    /// Most voters replaced at once (by a joint change).
    pub max_replaced: usize,
    /// Changes that removed the leader asking for them.
    pub leader_removals: u64,
    /// Quiesce messages sent (idle groups going quiet).
    pub quiesce_sent: u64,
    /// Longest time any leader stayed quiet, in simulated milliseconds.
    pub longest_quiet_ms: u64,
}

#[derive(Debug)]
enum Event {
    Deliver(Envelope),
    Tick(usize),
    Flush(usize),
    Restart(usize),
    ClientStart(usize),
    ClientTimeout(usize, usize),
    Fault,
    /// The clients, paused for a while (an idle group), start again.
    ClientsResume,
    /// An administrator acts on the group (membership, transfer, snapshot);
    /// a periodic one schedules the next.
    Admin {
        periodic: bool,
    },
    /// Crash whichever node leads at that moment.
    CrashLeader,
}

struct Scheduled {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        // Earliest first in a max-heap.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

struct Node {
    id: NodeId,
    engine: Option<Engine>,
    store: MemLogStore,
    sm: KvStateMachine,
    mirror: LogMirror,
    /// Messages waiting for the next flush.
    held: Vec<Envelope>,
    /// Last entry staged since the last flush.
    staged_last: Option<LogId>,
    flush_scheduled: bool,
    /// Clock rate in per mille of simulated time (tick-rate skew).
    rate: u64,
    /// The node's clock reading at simulated time `clock_base.0` is
    /// `clock_base.1`; from there it runs at `rate`. Rate changes rebase it,
    /// so the clock drifts but never jumps.
    clock_base: (u64, u64),
    /// Reads started on this node: read id -> (client, op, key).
    reads: BTreeMap<u64, (usize, usize, Vec<u8>)>,
    /// Since when this node's engine has been quiet, if it is.
    quiet_since: Option<u64>,
    /// Reads confirmed, waiting for the state machine to apply their index.
    ready_reads: Vec<(LogIndex, u64, usize, usize, Vec<u8>)>,
    /// Longest time a flush takes, in milliseconds.
    disk_latency: u64,
    /// Proposals this node accepted: index -> (id, client, op number).
    pending: BTreeMap<LogIndex, (LogId, usize, usize)>,
    incarnation: u64,
}

/// Slowest and fastest clock rates, in per mille of simulated time.
const MIN_RATE: u64 = 700;
const MAX_RATE: u64 = 1400;

impl Node {
    fn local_time(&self, now: u64) -> u64 {
        let (real, local) = self.clock_base;
        local + now.saturating_sub(real) * self.rate / 1000
    }

    fn set_rate(&mut self, now: u64, rate: u64) {
        self.clock_base = (now, self.local_time(now));
        self.rate = rate;
    }
}

struct Client {
    leader_guess: usize,
    /// Index in the history of the operation in flight.
    current: Option<usize>,
    seq: u64,
    /// Last value this client saw per key (for compare-and-set).
    seen: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

/// The network's current fault settings.
#[derive(Debug, Default)]
struct Network {
    /// Directed links that drop everything.
    blocked: BTreeSet<(usize, usize)>,
    drop_per_mille: u64,
    dup_per_mille: u64,
    max_delay: u64,
}

/// A simulated cluster.
pub struct Sim {
    cfg: SimConfig,
    rng: SimRng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    nodes: Vec<Node>,
    net: Network,
    clients: Vec<Client>,
    history: Vec<Operation>,
    inv: Invariants,
    report: SimReport,
    healed_at: Option<u64>,
    /// The last leader that changed membership, while the change may still
    /// be uncommitted.
    changed_by: Option<NodeId>,
    /// Scripted runs may hold the clients back.
    clients_paused: bool,
}

type Step = Result<(), SimFailure>;

impl Sim {
    pub fn new(cfg: SimConfig) -> Self {
        let mut rng = SimRng::new(cfg.seed);
        let ids: Vec<NodeId> = (1..=cfg.total_nodes() as u64).map(NodeId).collect();
        let mut nodes = Vec::new();
        for &id in &ids {
            let rate = rng.range(800, 1250);
            let disk_latency = rng.pick(&[1, 4, 15, 40]);
            let mut node = Node {
                id,
                engine: None,
                store: MemLogStore::new(),
                sm: KvStateMachine::default(),
                mirror: LogMirror::default(),
                held: Vec::new(),
                staged_last: None,
                flush_scheduled: false,
                rate,
                clock_base: (0, 0),
                quiet_since: None,
                reads: BTreeMap::new(),
                ready_reads: Vec::new(),
                disk_latency,
                pending: BTreeMap::new(),
                incarnation: 0,
            };
            let durable = Self::durable_entries(&node);
            node.engine = Some(Self::make_engine(&cfg, &node, 0, durable));
            nodes.push(node);
        }
        let clients = (0..cfg.clients)
            .map(|c| Client {
                leader_guess: c % cfg.nodes,
                current: None,
                seq: 0,
                seen: BTreeMap::new(),
            })
            .collect();
        let mut sim = Self {
            cfg,
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            net: Network {
                max_delay: 5,
                ..Network::default()
            },
            clients,
            history: Vec::new(),
            inv: Invariants::default(),
            report: SimReport::default(),
            healed_at: None,
            changed_by: None,
            clients_paused: false,
        };
        for n in 0..sim.nodes.len() {
            let first = sim.rng.range(0, TICK_MS);
            sim.schedule(first, Event::Tick(n));
        }
        for c in 0..sim.clients.len() {
            let at = sim.rng.range(0, 50);
            sim.schedule(at, Event::ClientStart(c));
        }
        if sim.cfg.random_faults {
            sim.schedule(100, Event::Fault);
        }
        if sim.cfg.churn {
            sim.schedule(300, Event::Admin { periodic: true });
        }
        sim
    }

    /// The voters node `id` is configured to start with: the initial ones
    /// for the initial voters, none for spares.
    fn bootstrap_voters(cfg: &SimConfig, id: NodeId) -> Vec<NodeId> {
        if id.0 as usize <= cfg.nodes {
            (1..=cfg.nodes as u64).map(NodeId).collect()
        } else {
            Vec::new()
        }
    }

    /// Node `n`'s durable log, as a restarted engine reads it back.
    fn durable_entries(node: &Node) -> (LogId, Vec<raft_api::Entry>) {
        let state = node.store.log_state(GROUP).expect("mem store reads");
        let entries = if state.last.index > state.compacted.index {
            node.store
                .entries(
                    GROUP,
                    state.compacted.index.next()..state.last.index.next(),
                    usize::MAX,
                )
                .expect("mem store reads")
        } else {
            Vec::new()
        };
        (state.compacted, entries)
    }

    fn make_engine(
        cfg: &SimConfig,
        node: &Node,
        now: u64,
        (compacted, entries): (LogId, Vec<raft_api::Entry>),
    ) -> Engine {
        Engine::new(EngineInit {
            id: node.id,
            group: GROUP,
            voters: Self::bootstrap_voters(cfg, node.id),
            config: cfg.engine_config(),
            seed: cfg.seed ^ node.id.0.wrapping_mul(0x9E37) ^ (node.incarnation << 40),
            now: node.local_time(now),
            wall_offset_ms: 0,
            hard_state: node.store.hard_state(GROUP).expect("mem store reads"),
            compacted,
            entries,
            snapshot: node.store.snapshot(GROUP).expect("mem store reads"),
            applied: LogIndex(0),
        })
        .expect("valid engine config")
    }

    fn schedule(&mut self, delay: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at: self.now + delay,
            seq: self.seq,
            event,
        });
    }

    fn fail(&self, kind: FailureKind, message: impl Into<String>) -> SimFailure {
        failure(self.now, kind, message)
    }

    fn count_event(&mut self) -> Step {
        self.report.events += 1;
        if self.report.events > MAX_EVENTS {
            return Err(self.fail(
                FailureKind::Liveness,
                format!("more than {MAX_EVENTS} events: a message storm"),
            ));
        }
        Ok(())
    }

    /// Runs the fault phase, then the recovery phase, then checks the
    /// history for linearizability.
    pub fn run(mut self) -> Result<SimReport, SimFailure> {
        let heal_at = self.cfg.fault_ms;
        while let Some(s) = self.queue.pop() {
            self.now = s.at;
            self.count_event()?;
            if self.healed_at.is_none() && self.now >= heal_at {
                self.heal();
            }
            self.handle(s.event)?;
            if let Some(healed) = self.healed_at {
                if self.recovered(healed) {
                    break;
                }
                if self.now > healed + RECOVERY_BOUND_MS {
                    self.dump();
                    return Err(self.fail(
                        FailureKind::Liveness,
                        format!(
                            "no recovery within {RECOVERY_BOUND_MS} ms after the faults stopped \
                             (leader: {:?}; ops completed after heal per client: {:?})",
                            self.current_leader(),
                            self.ops_after_heal(healed)
                        ),
                    ));
                }
            }
        }
        self.converge()?;
        self.finish_history();
        for op in &self.history {
            match op.outcome {
                Outcome::Ok(_) => self.report.ops_ok += 1,
                Outcome::Failed => self.report.ops_failed += 1,
                Outcome::Unknown => self.report.ops_unknown += 1,
            }
        }
        lin::check(&self.history)
            .map_err(|v| self.fail(FailureKind::Linearizability, v.to_string()))?;
        self.report.leader_terms = self.inv.leader_terms();
        self.report.committed = self.inv.committed_len();
        Ok(self.report)
    }

    // ----- scripted scenarios -----

    /// Processes every event of the next `ms` simulated milliseconds, with
    /// the same invariant checks as a random run.
    pub fn run_for(&mut self, ms: u64) -> Step {
        let until = self.now + ms;
        while self.queue.peek().is_some_and(|s| s.at <= until) {
            let s = self.queue.pop().expect("peeked");
            self.now = s.at;
            self.count_event()?;
            self.handle(s.event)?;
        }
        self.now = until;
        Ok(())
    }

    /// Cuts every link between nodes on different sides.
    pub fn split(&mut self, sides: &[&[usize]]) {
        self.net.blocked.clear();
        self.report.partitions += 1;
        for (i, a_side) in sides.iter().enumerate() {
            for b_side in &sides[i + 1..] {
                for &a in a_side.iter() {
                    for &b in b_side.iter() {
                        self.net.blocked.insert((a, b));
                        self.net.blocked.insert((b, a));
                    }
                }
            }
        }
    }

    /// Drops this share (per mille) of all messages from now on.
    pub fn set_loss(&mut self, per_mille: u64) {
        self.net.drop_per_mille = per_mille;
    }

    /// Restores every link.
    pub fn heal_network(&mut self) {
        self.net.blocked.clear();
    }

    /// Power loss on node `n`.
    pub fn crash_node(&mut self, n: usize) {
        self.crash(n);
    }

    /// Brings node `n` back from its durable state.
    pub fn restart_node(&mut self, n: usize) -> Step {
        self.restart(n)
    }

    /// The running leader with the highest term, by node position.
    pub fn leader(&self) -> Option<usize> {
        self.current_leader().map(|id| (id.0 - 1) as usize)
    }

    /// Node `n`'s engine, when it runs.
    pub fn engine(&self, n: usize) -> Option<&Engine> {
        self.nodes[n].engine.as_ref()
    }

    /// Proposes a put of `key` on node `n` directly (outside the clients).
    pub fn propose_on(&mut self, n: usize, key: &str, value: &str) -> Result<LogId, SimFailure> {
        let command = KvCommand::Put {
            key: Bytes::from(key.to_owned()),
            value: Bytes::from(value.to_owned()),
        }
        .encode();
        let engine = self.nodes[n]
            .engine
            .as_mut()
            .ok_or_else(|| failure(self.now, FailureKind::Safety, format!("node {n} is down")))?;
        let id = engine
            .propose(command)
            .map_err(|e| failure(self.now, FailureKind::Safety, e.to_string()))?;
        self.process(n)?;
        Ok(id)
    }

    /// Asks node `n` for a membership change.
    pub fn change_membership_on(
        &mut self,
        n: usize,
        change: MembershipChange,
    ) -> Result<Result<LogId, raft_node::ChangeError>, SimFailure> {
        let Some(engine) = self.nodes[n].engine.as_mut() else {
            return Err(failure(
                self.now,
                FailureKind::Safety,
                format!("node {n} is down"),
            ));
        };
        let result = engine.change_membership(change);
        if result.is_ok() {
            self.report.membership_changes += 1;
        }
        self.process(n)?;
        Ok(result)
    }

    /// Asks node `n` to hand leadership over.
    pub fn transfer_on(
        &mut self,
        n: usize,
        target: Option<NodeId>,
    ) -> Result<Result<NodeId, raft_node::TransferError>, SimFailure> {
        let Some(engine) = self.nodes[n].engine.as_mut() else {
            return Err(failure(
                self.now,
                FailureKind::Safety,
                format!("node {n} is down"),
            ));
        };
        let result = engine.transfer_leader(target);
        self.process(n)?;
        Ok(result)
    }

    /// Asks node `n` for a snapshot now.
    pub fn snapshot_on(&mut self, n: usize) -> Step {
        if let Some(engine) = self.nodes[n].engine.as_mut() {
            engine.trigger_snapshot();
            self.process(n)?;
        }
        Ok(())
    }

    /// Stops or resumes the clients' operations (they resume with `true`).
    pub fn set_clients(&mut self, running: bool) {
        self.clients_paused = !running;
        if running {
            for c in 0..self.clients.len() {
                if self.clients[c].current.is_none() {
                    self.schedule(0, Event::ClientStart(c));
                }
            }
        }
    }

    /// The run's report so far.
    pub fn report(&self) -> &SimReport {
        &self.report
    }

    /// Ends a scripted run: heals everything, then requires recovery,
    /// identical replicas and a linearizable history, as a random run does.
    pub fn finish(mut self) -> Result<SimReport, SimFailure> {
        self.cfg.fault_ms = self.now;
        self.set_clients(true);
        self.run()
    }

    fn handle(&mut self, event: Event) -> Step {
        match event {
            Event::Deliver(env) => {
                let to = (env.to.0 - 1) as usize;
                let Some(engine) = self.nodes[to].engine.as_mut() else {
                    return Ok(());
                };
                engine
                    .step(env)
                    .map_err(|e| self.fail(FailureKind::Safety, format!("step refused: {e}")))?;
                self.process(to)
            }
            Event::Tick(n) => {
                let local = self.nodes[n].local_time(self.now);
                if let Some(engine) = self.nodes[n].engine.as_mut() {
                    engine.tick(local);
                    self.process(n)?;
                }
                // The next tick comes after TICK_MS of the node's own clock.
                let delay = (TICK_MS * 1000).div_ceil(self.nodes[n].rate);
                self.schedule(delay, Event::Tick(n));
                Ok(())
            }
            Event::Flush(n) => self.flush(n),
            Event::Restart(n) => self.restart(n),
            Event::ClientStart(c) => self.client_start(c),
            Event::ClientTimeout(c, op) => {
                if self.clients[c].current == Some(op) {
                    self.complete(c, Outcome::Unknown);
                }
                Ok(())
            }
            Event::CrashLeader => {
                if self.healed_at.is_none()
                    && let Some(leader) = self.current_leader()
                {
                    let l = (leader.0 - 1) as usize;
                    self.crash(l);
                    let back = self.rng.range(10, 400);
                    self.schedule(back, Event::Restart(l));
                }
                Ok(())
            }
            Event::ClientsResume => {
                self.set_clients(true);
                Ok(())
            }
            Event::Admin { periodic } => {
                if self.healed_at.is_none() {
                    self.admin(!periodic)?;
                    if periodic {
                        let next = self.rng.range(30, 300);
                        self.schedule(next, Event::Admin { periodic });
                    }
                }
                Ok(())
            }
            Event::Fault => {
                if self.healed_at.is_none() {
                    self.inject_fault();
                    let next = self.rng.range(50, 400);
                    self.schedule(next, Event::Fault);
                }
                Ok(())
            }
        }
    }

    /// Carries out the actions a node's engine produced.
    fn process(&mut self, n: usize) -> Step {
        loop {
            let node = &mut self.nodes[n];
            let Some(engine) = node.engine.as_mut() else {
                return Ok(());
            };
            let actions = engine.take_actions();
            if actions.is_empty() {
                break;
            }
            let mut needs_flush = false;
            for action in actions {
                if std::env::var("TRACE").is_ok() {
                    let short = match &action {
                        Action::AppendLog(e) => format!(
                            "Append {:?}..{:?}",
                            e.first().map(|x| x.id),
                            e.last().map(|x| x.id)
                        ),
                        Action::Apply(e) => format!(
                            "Apply {:?}..{:?}",
                            e.first().map(|x| x.id),
                            e.last().map(|x| x.id)
                        ),
                        Action::SaveSnapshot(s) => format!("SaveSnap {:?}", s.meta),
                        Action::RestoreSnapshot(s) => format!("Restore {:?}", s.meta.last),
                        Action::Send(e) | Action::SendAfterPersist(e) => {
                            format!("Send {:?}", e).chars().take(250).collect()
                        }
                        a => format!("{a:?}"),
                    };
                    eprintln!("{} n{} {}", self.now, n + 1, short);
                }
                match action {
                    Action::SaveHardState(hs) => {
                        self.nodes[n]
                            .store
                            .save_hard_state(GROUP, hs)
                            .map_err(|e| self.fail(FailureKind::Safety, e.to_string()))?;
                        needs_flush = true;
                    }
                    Action::TruncateLog { from } => {
                        let now = self.now;
                        let node = &mut self.nodes[n];
                        node.store
                            .truncate(GROUP, from)
                            .map_err(|e| failure(now, FailureKind::Safety, e.to_string()))?;
                        let id = node.id;
                        self.inv
                            .truncated(id, &mut self.nodes[n].mirror, from)
                            .map_err(|v| self.fail(FailureKind::Safety, v))?;
                        needs_flush = true;
                    }
                    Action::AppendLog(entries) => {
                        let now = self.now;
                        let node = &mut self.nodes[n];
                        node.store
                            .append(GROUP, &entries)
                            .map_err(|e| failure(now, FailureKind::Safety, e.to_string()))?;
                        node.staged_last = entries.last().map(|e| e.id).or(node.staged_last);
                        let id = node.id;
                        self.inv
                            .appended(id, &mut self.nodes[n].mirror, &entries)
                            .map_err(|v| self.fail(FailureKind::Safety, v))?;
                        needs_flush = true;
                    }
                    Action::Send(env) => self.transmit(env),
                    Action::SendAfterPersist(env) => {
                        self.nodes[n].held.push(env);
                        needs_flush = true;
                    }
                    Action::Apply(entries) => self.apply(n, entries)?,
                    Action::SaveSnapshot(snapshot) => {
                        self.nodes[n]
                            .store
                            .save_snapshot(GROUP, &snapshot)
                            .map_err(|e| self.fail(FailureKind::Safety, e.to_string()))?;
                        needs_flush = true;
                    }
                    Action::CompactLog { upto } => {
                        let now = self.now;
                        let node = &mut self.nodes[n];
                        node.store
                            .compact(GROUP, upto)
                            .map_err(|e| failure(now, FailureKind::Safety, e.to_string()))?;
                        let id = node.id;
                        let commit = node
                            .engine
                            .as_ref()
                            .map_or(LogIndex(0), |e| e.commit_index());
                        self.inv
                            .compacted(id, &mut self.nodes[n].mirror, upto, commit)
                            .map_err(|v| self.fail(FailureKind::Safety, v))?;
                        needs_flush = true;
                    }
                    Action::RestoreSnapshot(snapshot) => self.restore(n, snapshot)?,
                    Action::BuildSnapshot => {
                        let node = &mut self.nodes[n];
                        let data = ready(node.sm.snapshot())
                            .map_err(|e| failure(self.now, FailureKind::Safety, e.to_string()))?;
                        let last = node.sm.last_applied();
                        if let Some(engine) = node.engine.as_mut()
                            && engine.on_snapshot_built(last, data)
                        {
                            self.report.snapshots_built += 1;
                        }
                    }
                    Action::ReadReady { id, index } => {
                        if let Some((client, op, key)) = self.nodes[n].reads.remove(&id) {
                            self.nodes[n].ready_reads.push((index, id, client, op, key));
                        }
                        self.serve_reads(n);
                    }
                    Action::ReadFailed { id, .. } => {
                        if let Some((client, op, _)) = self.nodes[n].reads.remove(&id)
                            && self.clients[client].current == Some(op)
                        {
                            self.complete(client, Outcome::Failed);
                        }
                    }
                }
            }
            if needs_flush && !self.nodes[n].flush_scheduled {
                self.nodes[n].flush_scheduled = true;
                let delay = self.rng.range(0, self.nodes[n].disk_latency);
                self.schedule(delay, Event::Flush(n));
            }
        }
        self.observe(n)
    }

    fn observe(&mut self, n: usize) -> Step {
        let now = self.now;
        let node = &mut self.nodes[n];
        let Some(engine) = node.engine.as_ref() else {
            return Ok(());
        };
        let quiet_leader = engine.is_quiescent() && engine.role() == Role::Leader;
        match (quiet_leader, node.quiet_since) {
            (true, None) => node.quiet_since = Some(now),
            (false, Some(since)) => {
                node.quiet_since = None;
                self.report.longest_quiet_ms = self.report.longest_quiet_ms.max(now - since);
            }
            _ => {}
        }
        let node = &self.nodes[n];
        let Some(engine) = node.engine.as_ref() else {
            return Ok(());
        };
        let new_leader = self
            .inv
            .observe(
                node.id,
                &node.mirror,
                engine.role() == Role::Leader,
                engine.term(),
                engine.commit_index(),
            )
            .map_err(|v| self.fail(FailureKind::Safety, v))?;
        // A leader that dies while still bringing followers up to date is
        // the schedule of the paper's figure 8: aim faults at it.
        if new_leader && self.cfg.random_faults && self.healed_at.is_none() && self.rng.chance(250)
        {
            let soon = self.rng.range(1, 20);
            self.schedule(soon, Event::CrashLeader);
        }
        // A membership change asked of a leader that has only just taken
        // over (before it committed anything of its term) is where a
        // change can conflict with an earlier, uncommitted one.
        if new_leader && self.cfg.churn && self.healed_at.is_none() && self.rng.chance(300) {
            let soon = self.rng.range(0, 5);
            self.schedule(soon, Event::Admin { periodic: false });
        }
        Ok(())
    }

    fn flush(&mut self, n: usize) -> Step {
        let node = &mut self.nodes[n];
        node.flush_scheduled = false;
        let Some(engine) = node.engine.as_mut() else {
            return Ok(());
        };
        let now = self.now;
        ready(node.store.flush()).map_err(|e| failure(now, FailureKind::Safety, e.to_string()))?;
        engine.on_persisted(node.staged_last.take());
        let held = std::mem::take(&mut node.held);
        for env in held {
            self.transmit(env);
        }
        self.process(n)
    }

    fn apply(&mut self, n: usize, entries: Vec<raft_api::Entry>) -> Step {
        let node = &mut self.nodes[n];
        let id = node.id;
        let mut expected = node.sm.last_applied().index.next();
        for e in &entries {
            self.inv
                .applied(id, expected, e)
                .map_err(|v| self.fail(FailureKind::Safety, v))?;
            expected = expected.next();
        }
        let node = &mut self.nodes[n];
        let responses = ready(node.sm.apply(&entries));
        let (index, hash) = (node.sm.last_applied().index, node.sm.state_hash());
        self.inv
            .state_after(id, index, hash, false)
            .map_err(|v| self.fail(FailureKind::Safety, v))?;
        let node = &mut self.nodes[n];
        let mut done = Vec::new();
        for (e, resp) in entries.iter().zip(responses) {
            if let Some((pid, client, op)) = node.pending.remove(&e.id.index) {
                let outcome = if pid == e.id {
                    match KvResponse::decode(&resp) {
                        // An error answer would mean the command was applied
                        // but its effect is unclear: claim nothing.
                        Ok(r) => to_result(r).map_or(Outcome::Unknown, Outcome::Ok),
                        Err(_) => Outcome::Unknown,
                    }
                } else {
                    // Another entry was committed at that index: the
                    // proposal is lost for good.
                    Outcome::Failed
                };
                done.push((client, op, outcome));
            }
        }
        for (client, op, outcome) in done {
            if self.clients[client].current == Some(op) {
                self.complete(client, outcome);
            }
        }
        self.serve_reads(n);
        Ok(())
    }

    /// Replaces node `n`'s state machine with a snapshot.
    fn restore(&mut self, n: usize, snapshot: Snapshot) -> Step {
        let now = self.now;
        let node = &mut self.nodes[n];
        ready(node.sm.restore(snapshot.meta.last, snapshot.data))
            .map_err(|e| failure(now, FailureKind::Safety, format!("restore failed: {e}")))?;
        let (id, index, hash) = (node.id, node.sm.last_applied().index, node.sm.state_hash());
        self.report.snapshots_installed += 1;
        self.inv
            .state_after(id, index, hash, true)
            .map_err(|v| self.fail(FailureKind::Safety, v))?;
        self.serve_reads(n);
        Ok(())
    }

    /// Answers the confirmed reads whose index node `n` has applied, from
    /// its own state machine.
    fn serve_reads(&mut self, n: usize) {
        let applied = self.nodes[n].sm.last_applied().index;
        let reads = std::mem::take(&mut self.nodes[n].ready_reads);
        let (due, waiting): (Vec<_>, Vec<_>) = reads.into_iter().partition(|r| r.0 <= applied);
        self.nodes[n].ready_reads = waiting;
        for (_, _, client, op, key) in due {
            if self.clients[client].current != Some(op) {
                continue;
            }
            let value = self.nodes[n].sm.get(&key).map(|v| v.to_vec());
            self.report.reads_served += 1;
            self.complete(client, Outcome::Ok(KvResult::Value(value)));
        }
    }

    fn transmit(&mut self, env: Envelope) {
        if matches!(env.msg, raft_api::Message::Quiesce) {
            self.report.quiesce_sent += 1;
        }
        let from = (env.from.0 - 1) as usize;
        let to = (env.to.0 - 1) as usize;
        if self.net.blocked.contains(&(from, to)) || self.rng.chance(self.net.drop_per_mille) {
            self.report.dropped += 1;
            return;
        }
        if self.rng.chance(self.net.dup_per_mille) {
            self.report.duplicated += 1;
            let delay = self.rng.range(1, self.net.max_delay + 1);
            self.schedule(delay, Event::Deliver(env.clone()));
        }
        let delay = self.rng.range(1, self.net.max_delay + 1);
        self.schedule(delay, Event::Deliver(env));
    }

    fn crash(&mut self, n: usize) {
        self.report.crashes += 1;
        let node = &mut self.nodes[n];
        node.engine = None;
        // Power loss: whatever was staged but not flushed is gone, and so is
        // every message waiting for that flush.
        node.store.crash();
        node.held.clear();
        node.staged_last = None;
        node.sm = KvStateMachine::default();
        let pending = std::mem::take(&mut node.pending);
        let reads = std::mem::take(&mut node.reads);
        let ready_reads = std::mem::take(&mut node.ready_reads);
        let ops = pending
            .into_values()
            .map(|(_, client, op)| (client, op))
            .chain(reads.into_values().map(|(client, op, _)| (client, op)))
            .chain(
                ready_reads
                    .into_iter()
                    .map(|(_, _, client, op, _)| (client, op)),
            );
        for (client, op) in ops.collect::<Vec<_>>() {
            if self.clients[client].current == Some(op) {
                self.complete(client, Outcome::Unknown);
            }
        }
    }

    fn restart(&mut self, n: usize) -> Step {
        if self.nodes[n].engine.is_some() {
            return Ok(());
        }
        let node = &mut self.nodes[n];
        node.incarnation += 1;
        let (compacted, entries) = Self::durable_entries(node);
        let engine = Self::make_engine(&self.cfg, node, self.now, (compacted, entries.clone()));
        let id = node.id;
        self.inv.restarted(id);
        self.nodes[n].mirror = self
            .inv
            .rebuild(id, compacted, &entries)
            .map_err(|v| self.fail(FailureKind::Safety, v))?;
        self.nodes[n].engine = Some(engine);
        self.process(n)
    }

    fn inject_fault(&mut self) {
        let n = self.nodes.len();
        match self.rng.range(0, 12) {
            0..=2 if n > 1 => {
                let up: Vec<usize> = (0..n).filter(|&i| self.nodes[i].engine.is_some()).collect();
                let down = n - up.len();
                if down < n.div_ceil(2) && !up.is_empty() {
                    // Power loss often strikes while writes are in flight.
                    let writing: Vec<usize> = up
                        .iter()
                        .copied()
                        .filter(|&i| self.nodes[i].flush_scheduled)
                        .collect();
                    let victim = if !writing.is_empty() && self.rng.chance(600) {
                        self.rng.pick(&writing)
                    } else {
                        self.rng.pick(&up)
                    };
                    self.crash(victim);
                    let back = self.rng.range(10, 600);
                    self.schedule(back, Event::Restart(victim));
                }
            }
            3 if n > 1 => {
                // Symmetric partition into two sides.
                self.report.partitions += 1;
                self.net.blocked.clear();
                let side: Vec<bool> = (0..n).map(|_| self.rng.chance(500)).collect();
                for a in 0..n {
                    for b in 0..n {
                        if side[a] != side[b] {
                            self.net.blocked.insert((a, b));
                        }
                    }
                }
            }
            4 if n > 1 => {
                // One-way link failure.
                self.report.partitions += 1;
                let a = self.rng.range(0, n as u64) as usize;
                let b = self.rng.range(0, n as u64) as usize;
                if a != b {
                    self.net.blocked.insert((a, b));
                }
            }
            5 if n > 2 => {
                // Bridge: two sides that only one node can reach both of.
                self.report.partitions += 1;
                self.net.blocked.clear();
                let bridge = self.rng.range(0, n as u64) as usize;
                let side: Vec<bool> = (0..n).map(|i| i % 2 == 0).collect();
                for a in 0..n {
                    for b in 0..n {
                        if a != bridge && b != bridge && side[a] != side[b] {
                            self.net.blocked.insert((a, b));
                        }
                    }
                }
            }
            6 if n > 1 => {
                // Cut the leader off from everyone, so it keeps accepting
                // proposals it cannot commit while others elect a successor.
                self.report.partitions += 1;
                self.net.blocked.clear();
                if let Some(leader) = self.current_leader() {
                    let l = (leader.0 - 1) as usize;
                    for other in (0..n).filter(|&o| o != l) {
                        self.net.blocked.insert((l, other));
                        self.net.blocked.insert((other, l));
                    }
                }
            }
            6 => {}
            10 if n > 1 => {
                // Crash the leader within a few round trips: a leader that
                // dies between replicating old entries and its own lands in
                // the paper's figure 8.
                let soon = self.rng.range(1, 25);
                self.schedule(soon, Event::CrashLeader);
            }
            11 if self.rng.chance(300) => {
                // All clients pause: the group goes idle (and may go quiet)
                // while the other faults go on.
                self.clients_paused = true;
                let pause = self.rng.range(300, 1500);
                self.schedule(pause, Event::ClientsResume);
            }
            11 => self.net.blocked.clear(),
            7 => {
                self.net.drop_per_mille = self.rng.pick(&[0, 0, 50, 200, 400]);
                self.net.dup_per_mille = self.rng.pick(&[0, 20, 100]);
            }
            8 => self.net.max_delay = self.rng.pick(&[1, 5, 20, 60]),
            _ => {
                // Skew one node's clock rate.
                let i = self.rng.range(0, n as u64) as usize;
                let rate = self.rng.range(MIN_RATE, MAX_RATE + 1);
                let now = self.now;
                self.nodes[i].set_rate(now, rate);
            }
        }
    }

    /// One administrative action on the group, aimed at the current leader
    /// (errors such as a change already in progress are part of the test).
    fn admin(&mut self, fresh_leader: bool) -> Step {
        let Some(leader) = self.leader() else {
            return Ok(());
        };
        let total = self.nodes.len() as u64;
        let pick_node = |rng: &mut SimRng| NodeId(rng.range(1, total + 1));
        let engine = self.nodes[leader].engine.as_ref().expect("leader runs");
        let membership = engine.membership().clone();
        let previous = self.changed_by.filter(|&p| p != engine.id());
        let choice = match previous {
            // An operator replaces the leader that went away mid-change.
            Some(_) if fresh_leader && self.rng.chance(500) => 100,
            _ => self.rng.range(0, 10),
        };
        let change = match choice {
            100 => previous.map(MembershipChange::Remove),
            0 | 1 => Some(MembershipChange::AddLearner(pick_node(&mut self.rng))),
            2 | 3 => {
                let learners: Vec<NodeId> = membership.learners.iter().copied().collect();
                (!learners.is_empty()).then(|| MembershipChange::Promote(self.rng.pick(&learners)))
            }
            4 => Some(MembershipChange::Remove(pick_node(&mut self.rng))),
            5 => {
                // Replace several voters at once (joint consensus): any
                // non-empty set of current members.
                let members: Vec<NodeId> = membership.members().into_iter().collect();
                let voters: std::collections::BTreeSet<NodeId> = members
                    .iter()
                    .copied()
                    .filter(|_| self.rng.chance(600))
                    .collect();
                (!voters.is_empty()).then_some(MembershipChange::ReplaceVoters(voters))
            }
            6 | 7 => {
                let target = if self.rng.chance(500) {
                    None
                } else {
                    Some(pick_node(&mut self.rng))
                };
                let engine = self.nodes[leader].engine.as_mut().expect("leader runs");
                if engine.transfer_leader(target).is_ok() {
                    self.report.transfers += 1;
                }
                return self.process(leader);
            }
            _ => {
                let n = self.rng.range(0, total) as usize;
                if let Some(engine) = self.nodes[n].engine.as_mut() {
                    engine.trigger_snapshot();
                    return self.process(n);
                }
                None
            }
        };
        if let Some(change) = change {
            let before = membership.voters.clone();
            let engine = self.nodes[leader].engine.as_mut().expect("leader runs");
            let after_leader = engine.id();
            let removes_itself = change == MembershipChange::Remove(after_leader);
            if engine.change_membership(change).is_ok() {
                self.report.membership_changes += 1;
                if removes_itself {
                    self.report.leader_removals += 1;
                }
                let after = engine.membership().clone();
                self.report.max_voters = self.report.max_voters.max(after.voters.len());
                let replaced = before.difference(&after.voters).count();
                self.report.max_replaced = self.report.max_replaced.max(replaced);
                self.changed_by = Some(after_leader);
                // A leader that dies or is cut off right after appending a
                // change leaves it uncommitted on a few nodes only.
                if self.cfg.random_faults && self.rng.chance(400) {
                    if self.rng.chance(500) {
                        let soon = self.rng.range(1, 10);
                        self.schedule(soon, Event::CrashLeader);
                    } else {
                        // Cut off with the node the change added, if any.
                        let added: Vec<usize> = after
                            .voters
                            .difference(&before)
                            .map(|id| (id.0 - 1) as usize)
                            .collect();
                        self.isolate_with(leader, &added);
                    }
                }
            }
            return self.process(leader);
        }
        Ok(())
    }

    /// Cuts `n` and `with` off from every other node.
    fn isolate_with(&mut self, n: usize, with: &[usize]) {
        self.report.partitions += 1;
        self.net.blocked.clear();
        let side: Vec<usize> = std::iter::once(n).chain(with.iter().copied()).collect();
        for a in side.iter().copied() {
            for b in (0..self.nodes.len()).filter(|b| !side.contains(b)) {
                self.net.blocked.insert((a, b));
                self.net.blocked.insert((b, a));
            }
        }
    }

    /// With `TRACE` set, prints every engine's state (for debugging a
    /// failed run).
    fn dump(&self) {
        if std::env::var("TRACE").is_err() {
            return;
        }
        for n in &self.nodes {
            if let Some(e) = &n.engine {
                eprintln!(
                    "{} {:?} {} leader={:?} {} (at {}) last={} commit={} applied={} compacted={} \
                     transfer={:?}",
                    n.id,
                    e.role(),
                    e.term(),
                    e.leader(),
                    e.membership(),
                    e.membership_index(),
                    e.last_log_id(),
                    e.commit_index(),
                    n.sm.last_applied(),
                    e.compacted(),
                    e.transfer_target()
                );
                for peer in e.membership().members() {
                    if let Some(p) = e.progress(peer) {
                        eprintln!("    {peer}: {p:?}");
                    }
                }
            }
        }
    }

    fn heal(&mut self) {
        self.healed_at = Some(self.now);
        if self.clients_paused {
            self.set_clients(true);
        }
        self.net = Network {
            max_delay: 5,
            ..Network::default()
        };
        for n in 0..self.nodes.len() {
            if self.nodes[n].engine.is_none() {
                self.schedule(0, Event::Restart(n));
            }
        }
    }

    fn current_leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|n| n.engine.as_ref())
            .filter(|e| e.role() == Role::Leader)
            .max_by_key(|e| e.term())
            .map(|e| e.id())
    }

    fn ops_after_heal(&self, healed: u64) -> Vec<usize> {
        (0..self.clients.len())
            .map(|c| {
                self.history
                    .iter()
                    .filter(|o| {
                        o.client == c as u64
                            && o.invoke >= healed
                            && matches!(o.outcome, Outcome::Ok(_))
                    })
                    .count()
            })
            .collect()
    }

    fn recovered(&self, healed: u64) -> bool {
        self.current_leader().is_some()
            && self
                .ops_after_heal(healed)
                .iter()
                .all(|&c| c >= OPS_AFTER_HEAL)
    }

    /// After recovery: stop clients and let every replica catch up; all
    /// state machines must then be identical.
    fn converge(&mut self) -> Step {
        self.clients.iter_mut().for_each(|c| c.current = None);
        // Everything in the leader's log will commit once all nodes talk.
        // Nodes removed from the group are left alone; every member must
        // converge.
        let leader = self
            .nodes
            .iter()
            .filter_map(|n| n.engine.as_ref())
            .filter(|e| e.role() == Role::Leader)
            .max_by_key(|e| e.term());
        let target = leader.map(|e| e.last_log_id().index).unwrap_or_default();
        let members = leader.map(|e| e.membership().members()).unwrap_or_default();
        let is_member = |n: &Node| members.contains(&n.id);
        // A replica far behind catches up one message per round trip (a
        // network delay, a flush and the answer, at most about 60 ms here),
        // and a message holds `max_append_entries` entries (fewer when
        // `max_append_bytes` is small) with `max_inflight` messages in
        // flight: the bound grows with the lag.
        let behind = self
            .nodes
            .iter()
            .filter(|n| is_member(n))
            .map(|n| target.0.saturating_sub(n.sm.last_applied().index.0))
            .max()
            .unwrap_or(0);
        let config = self.cfg.engine_config();
        // Entries here are under 64 bytes each (with their header).
        let per_message = config
            .max_append_entries
            .min((config.max_append_bytes / 64).max(1));
        let per_round_trip = (per_message * config.max_inflight) as u64;
        let deadline = self.now + RECOVERY_BOUND_MS + behind * 60 / per_round_trip;
        if std::env::var("TRACE").is_ok() {
            eprintln!(
                "converge from {} to {target}: {behind} behind, deadline {deadline}",
                self.now
            );
        }
        while let Some(s) = self.queue.pop() {
            self.now = s.at;
            if matches!(
                s.event,
                Event::ClientStart(_)
                    | Event::ClientTimeout(..)
                    | Event::Fault
                    | Event::CrashLeader
                    | Event::Admin { .. }
                    | Event::ClientsResume
            ) {
                continue;
            }
            self.handle(s.event)?;
            let done = self
                .nodes
                .iter()
                .filter(|n| is_member(n))
                .all(|n| n.sm.last_applied().index >= target);
            if done {
                let hashes: BTreeSet<(LogIndex, u64)> = self
                    .nodes
                    .iter()
                    .filter(|n| is_member(n))
                    .map(|n| (n.sm.last_applied().index, n.sm.state_hash()))
                    .collect();
                if hashes.len() == 1 {
                    return Ok(());
                }
            }
            if self.now > deadline {
                self.dump();
                let applied: Vec<_> = self
                    .nodes
                    .iter()
                    .map(|n| n.sm.last_applied().index)
                    .collect();
                return Err(self.fail(
                    FailureKind::Liveness,
                    format!("replicas did not converge to index {target}: applied {applied:?}"),
                ));
            }
        }
        Ok(())
    }

    // ----- clients -----

    fn client_start(&mut self, c: usize) -> Step {
        if self.clients[c].current.is_some() || self.clients_paused {
            return Ok(());
        }
        let key = format!("k{}", self.rng.range(0, self.cfg.keys as u64)).into_bytes();
        self.clients[c].seq += 1;
        let value = format!("c{c}-{}", self.clients[c].seq).into_bytes();
        let op = match self.rng.range(0, 20) {
            0..=7 => KvOp::Put {
                key: key.clone(),
                value,
            },
            8..=13 => KvOp::Get { key: key.clone() },
            14..=16 => KvOp::Cas {
                key: key.clone(),
                expected: self.clients[c].seen.get(&key).cloned().flatten(),
                new: value,
            },
            _ => KvOp::Delete { key: key.clone() },
        };
        let read_mode = match (&op, self.rng.range(0, 4)) {
            (KvOp::Get { .. }, 1) => Some(ReadMode::ReadIndex),
            (KvOp::Get { .. }, 2) => Some(ReadMode::Lease),
            _ => None,
        };
        let command = to_command(&op).encode();
        let target = self.clients[c].leader_guess;
        let op_index = self.history.len();
        self.history.push(lin::Operation {
            client: c as u64,
            op,
            invoke: self.now,
            complete: self.now,
            outcome: Outcome::Unknown,
        });
        self.clients[c].current = Some(op_index);
        let Some(engine) = self.nodes[target].engine.as_mut() else {
            // Could not reach the node: nothing was proposed.
            self.clients[c].leader_guess = self.rng.range(0, self.nodes.len() as u64) as usize;
            self.complete(c, Outcome::Failed);
            return Ok(());
        };
        if let (Some(mode), KvOp::Get { key }) = (read_mode, &self.history[op_index].op) {
            let key = key.clone();
            let follower = engine.role() != Role::Leader;
            self.seq += 1;
            let read_id = self.seq;
            return match engine.read(read_id, mode) {
                Ok(()) => {
                    if follower {
                        self.report.follower_reads += 1;
                    } else if mode == ReadMode::Lease {
                        self.report.lease_reads += 1;
                    }
                    self.nodes[target].reads.insert(read_id, (c, op_index, key));
                    self.schedule(CLIENT_TIMEOUT_MS, Event::ClientTimeout(c, op_index));
                    self.process(target)
                }
                Err(ReadError::NotLeader { .. }) => {
                    self.clients[c].leader_guess =
                        self.rng.range(0, self.nodes.len() as u64) as usize;
                    self.complete(c, Outcome::Failed);
                    Ok(())
                }
                Err(e) => Err(self.fail(FailureKind::Safety, format!("unexpected error {e}"))),
            };
        }
        match engine.propose(command) {
            Ok(id) => {
                self.nodes[target]
                    .pending
                    .insert(id.index, (id, c, op_index));
                self.schedule(CLIENT_TIMEOUT_MS, Event::ClientTimeout(c, op_index));
                self.process(target)
            }
            Err(ProposeError::NotLeader { leader }) => {
                self.clients[c].leader_guess = match leader {
                    Some(l) => (l.0 - 1) as usize,
                    None => self.rng.range(0, self.nodes.len() as u64) as usize,
                };
                self.complete(c, Outcome::Failed);
                Ok(())
            }
            Err(ProposeError::TransferInProgress { target }) => {
                self.clients[c].leader_guess = (target.0 - 1) as usize;
                self.complete(c, Outcome::Failed);
                Ok(())
            }
            Err(e) => Err(self.fail(FailureKind::Safety, format!("unexpected error {e}"))),
        }
    }

    fn complete(&mut self, c: usize, outcome: Outcome) {
        let Some(op_index) = self.clients[c].current.take() else {
            return;
        };
        let op = &mut self.history[op_index];
        op.complete = self.now;
        if let (Outcome::Ok(KvResult::Value(v)), KvOp::Get { key }) = (&outcome, &op.op) {
            self.clients[c].seen.insert(key.clone(), v.clone());
        }
        let failed = matches!(outcome, Outcome::Failed | Outcome::Unknown);
        op.outcome = outcome;
        let delay = if failed {
            self.rng.range(5, 40)
        } else {
            self.rng.range(0, 10)
        };
        if failed && self.rng.chance(300) {
            self.clients[c].leader_guess = self.rng.range(0, self.nodes.len() as u64) as usize;
        }
        self.schedule(delay, Event::ClientStart(c));
    }

    /// Operations still in flight at the end have an unknown outcome.
    fn finish_history(&mut self) {
        for c in 0..self.clients.len() {
            if let Some(i) = self.clients[c].current.take() {
                self.history[i].outcome = Outcome::Unknown;
            }
        }
    }
}

fn failure(at_ms: u64, kind: FailureKind, message: impl Into<String>) -> SimFailure {
    SimFailure {
        kind,
        message: message.into(),
        at_ms,
    }
}

fn to_command(op: &KvOp) -> KvCommand {
    match op {
        KvOp::Put { key, value } => KvCommand::Put {
            key: Bytes::from(key.clone()),
            value: Bytes::from(value.clone()),
        },
        KvOp::Get { key } => KvCommand::Get {
            key: Bytes::from(key.clone()),
        },
        KvOp::Delete { key } => KvCommand::Delete {
            key: Bytes::from(key.clone()),
        },
        KvOp::Cas { key, expected, new } => KvCommand::Cas {
            key: Bytes::from(key.clone()),
            expected: expected.clone().map(Bytes::from),
            new: Bytes::from(new.clone()),
        },
    }
}

fn to_result(r: KvResponse) -> Option<KvResult> {
    Some(match r {
        KvResponse::Done => KvResult::Done,
        KvResponse::Value(v) => KvResult::Value(v.map(|b| b.to_vec())),
        KvResponse::Deleted(d) => KvResult::Deleted(d),
        KvResponse::Cas(ok) => KvResult::Cas(ok),
        _ => return None,
    })
}
