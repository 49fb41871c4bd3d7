//! A deterministic simulated cluster: engines, log stores and key-value
//! state machines over a faulty network, driven by one seeded event queue.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use raft_api::{Config, Envelope, GroupId, LogId, LogIndex, LogStore, NodeId, StateMachine};
use raft_node::{Action, Engine, EngineInit, ProposeError, Role};
use storage_mem::{KvCommand, KvResponse, KvStateMachine, MemLogStore};

use crate::invariants::{Invariants, LogMirror};
use crate::lin::{self, KvOp, KvResult, Operation, Outcome};
use crate::rng::SimRng;

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
    /// Whether the simulator injects faults by itself (off for scripted
    /// scenarios, which inject their own).
    pub random_faults: bool,
}

impl SimConfig {
    pub fn new(seed: u64, nodes: usize) -> Self {
        Self {
            seed,
            nodes,
            fault_ms: 4_000,
            clients: 3 + (seed % 3) as usize,
            keys: 3,
            random_faults: true,
        }
    }

    /// A run whose faults a test scripts itself.
    pub fn scripted(seed: u64, nodes: usize) -> Self {
        Self {
            fault_ms: u64::MAX,
            random_faults: false,
            ..Self::new(seed, nodes)
        }
    }

    /// Engine settings for this run: short timeouts, and flow-control
    /// limits drawn from the seed so that small batches, tiny windows and
    /// byte-bounded messages are all exercised.
    pub fn engine_config(&self) -> Config {
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
    /// Longest time a flush takes, in milliseconds.
    disk_latency: u64,
    /// Proposals this node accepted: index -> (id, client, op number).
    pending: BTreeMap<LogIndex, (LogId, usize, usize)>,
    incarnation: u64,
}

impl Node {
    fn local_time(&self, now: u64) -> u64 {
        now * self.rate / 1000
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
}

type Step = Result<(), SimFailure>;

impl Sim {
    pub fn new(cfg: SimConfig) -> Self {
        let mut rng = SimRng::new(cfg.seed);
        let ids: Vec<NodeId> = (1..=cfg.nodes as u64).map(NodeId).collect();
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
                disk_latency,
                pending: BTreeMap::new(),
                incarnation: 0,
            };
            let durable = Self::durable_entries(&node);
            node.engine = Some(Self::make_engine(&cfg, &ids, &node, 0, durable));
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
        sim
    }

    fn voters(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|n| n.id).collect()
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
        voters: &[NodeId],
        node: &Node,
        now: u64,
        (compacted, entries): (LogId, Vec<raft_api::Entry>),
    ) -> Engine {
        Engine::new(EngineInit {
            id: node.id,
            group: GROUP,
            voters: voters.to_vec(),
            config: cfg.engine_config(),
            seed: cfg.seed ^ node.id.0.wrapping_mul(0x9E37) ^ (node.incarnation << 40),
            now: node.local_time(now),
            hard_state: node.store.hard_state(GROUP).expect("mem store reads"),
            compacted,
            entries,
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

    /// Ends a scripted run: heals everything, then requires recovery,
    /// identical replicas and a linearizable history, as a random run does.
    pub fn finish(mut self) -> Result<SimReport, SimFailure> {
        self.cfg.fault_ms = self.now;
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
        Ok(())
    }

    fn transmit(&mut self, env: Envelope) {
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
        for (_, (_, client, op)) in pending {
            if self.clients[client].current == Some(op) {
                self.complete(client, Outcome::Unknown);
            }
        }
    }

    fn restart(&mut self, n: usize) -> Step {
        if self.nodes[n].engine.is_some() {
            return Ok(());
        }
        let voters = self.voters();
        let node = &mut self.nodes[n];
        node.incarnation += 1;
        let (compacted, entries) = Self::durable_entries(node);
        let engine = Self::make_engine(
            &self.cfg,
            &voters,
            node,
            self.now,
            (compacted, entries.clone()),
        );
        let id = node.id;
        self.inv.restarted(id);
        self.nodes[n].mirror = self
            .inv
            .rebuild(id, &entries)
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
            11 => self.net.blocked.clear(),
            7 => {
                self.net.drop_per_mille = self.rng.pick(&[0, 0, 50, 200, 400]);
                self.net.dup_per_mille = self.rng.pick(&[0, 20, 100]);
            }
            8 => self.net.max_delay = self.rng.pick(&[1, 5, 20, 60]),
            _ => {
                // Skew one node's clock rate.
                let i = self.rng.range(0, n as u64) as usize;
                self.nodes[i].rate = self.rng.range(700, 1400);
            }
        }
    }

    fn heal(&mut self) {
        self.healed_at = Some(self.now);
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
        let target = self
            .nodes
            .iter()
            .filter_map(|n| n.engine.as_ref())
            .filter(|e| e.role() == Role::Leader)
            .max_by_key(|e| e.term())
            .map(|e| e.last_log_id().index)
            .unwrap_or_default();
        // A replica far behind catches up one message per round trip (a
        // network delay, a flush and the answer, at most about 60 ms here),
        // and a message holds `max_append_entries` entries with
        // `max_inflight` messages in flight: the bound grows with the lag.
        let behind = self
            .nodes
            .iter()
            .map(|n| target.0.saturating_sub(n.sm.last_applied().index.0))
            .max()
            .unwrap_or(0);
        let config = self.cfg.engine_config();
        let per_round_trip = (config.max_append_entries * config.max_inflight) as u64;
        let deadline = self.now + RECOVERY_BOUND_MS + behind * 60 / per_round_trip;
        while let Some(s) = self.queue.pop() {
            self.now = s.at;
            if matches!(
                s.event,
                Event::ClientStart(_)
                    | Event::ClientTimeout(..)
                    | Event::Fault
                    | Event::CrashLeader
            ) {
                continue;
            }
            self.handle(s.event)?;
            let done = self
                .nodes
                .iter()
                .all(|n| n.sm.last_applied().index >= target);
            if done {
                let hashes: BTreeSet<(LogIndex, u64)> = self
                    .nodes
                    .iter()
                    .map(|n| (n.sm.last_applied().index, n.sm.state_hash()))
                    .collect();
                if hashes.len() == 1 {
                    return Ok(());
                }
            }
            if self.now > deadline {
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
        if self.clients[c].current.is_some() {
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
