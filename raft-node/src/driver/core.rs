//! The consensus loop of one node.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use raft_api::{
    Envelope, ForwardOutcome, ForwardRequest, ForwardResponse, GroupId, HardState, LogId, LogIndex,
    LogStore, Message, NodeId, StateMachine, StorageError, Term, Transport,
};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::apply::{self, ApplyMsg, ApplyShared, Reply, Waiter};
use super::pending::{Handed, Pending};
use super::{
    Cmd, Consistency, Event, GroupMetrics, Metrics, NodeConfig, NodeMetrics, PeerMetrics,
    ProposeResult, Shared, StartError, StateMachineFactory,
};
use crate::engine::{Action, Engine, EngineInit, ReadMode, Role};
use crate::error::{AdminError, ProposeError, ReadError};
use crate::session::SessionMachine;

/// A proposal this node made for a caller, forwarded to the leader.
struct Forwarded {
    reply: oneshot::Sender<ProposeResult>,
    deadline: Instant,
}

/// A membership change waiting to be done.
struct PendingChange {
    id: LogId,
    reply: oneshot::Sender<Result<(), AdminError>>,
}

/// One group on this node.
struct Group<S> {
    engine: Engine,
    apply: mpsc::UnboundedSender<ApplyMsg<S>>,
    apply_task: tokio::task::JoinHandle<()>,
    /// Index of the last entry the apply task applied.
    applied: Arc<AtomicU64>,
    /// Index of the last entry handed to the apply task.
    handed: LogIndex,
    /// Proposals whose entries are not yet handed to the apply task, by
    /// index.
    pending: Pending<Waiter>,
    /// Proposals whose entries were handed to the apply task, which
    /// answers them once applied (the loop answers those that time out).
    handed_waiters: Arc<Handed<Waiter>>,
    /// Reads waiting for confirmation, by read id.
    reads: HashMap<u64, (apply::ReadFn<S>, oneshot::Sender<ReadError>, Instant)>,
    changes: Vec<PendingChange>,
    /// What was last published (role, leader, term, membership index).
    published: (Role, Option<NodeId>, Term, LogIndex),
    /// Listed in `Core::touched`.
    touched: bool,
    /// Why the group stopped on this node (see [`stop_group`]).
    failed: Option<String>,
}

/// A flush under way: it owns the store until it is done.
type FlushFuture<L> = Pin<Box<dyn Future<Output = (L, Result<(), StorageError>)> + Send>>;

/// What a flush under way makes durable, and what waits for it.
struct InFlight {
    /// Per group written: the hard state drained when the writes were
    /// staged, and the last entry staged.
    groups: Vec<(GroupId, HardState, Option<LogId>)>,
    /// Entries written.
    entries: u64,
    /// Messages that promise what this flush makes durable.
    held: BTreeMap<NodeId, Vec<Envelope>>,
}

pub(super) struct Core<S, T, L> {
    config: Arc<NodeConfig>,
    transport: Arc<T>,
    /// The log store; `None` while a flush has it.
    store: Option<L>,
    /// A flush just started, for the loop to await.
    started_flush: Option<FlushFuture<L>>,
    /// The flush under way, if any.
    in_flight: Option<InFlight>,
    /// Writes drained from the engines while a flush was under way, in
    /// order: staged when the next flush starts.
    unstaged: Vec<(GroupId, Action)>,
    /// Messages that promise what `unstaged` (or the flush under way)
    /// makes durable.
    held: BTreeMap<NodeId, Vec<Envelope>>,
    /// Commands that need the store, waiting for the flush under way.
    waiting: Vec<Cmd<S>>,
    factory: Box<dyn StateMachineFactory<S>>,
    to_self: mpsc::UnboundedSender<Cmd<S>>,
    shared: Arc<Shared>,
    events: broadcast::Sender<Event>,
    groups: BTreeMap<GroupId, Group<S>>,
    forwarded: HashMap<u64, Forwarded>,
    next_id: u64,
    started: Instant,
    /// When the loop's current turn began: the time proposals and reads
    /// of the turn are stamped with (one clock read per turn).
    turn_at: Instant,
    /// `turn_at` in milliseconds since `started`: the engines' clock for
    /// the turn, given to each group the turn touches.
    turn_ms: u64,
    wall_offset_ms: u64,
    metrics: NodeMetrics,
    next_balance: Instant,
    failed: Option<String>,
    /// A group was created or removed since the last publish.
    groups_changed: bool,
    /// Groups whose engines took an input since the last publish, each
    /// once: only these can have actions to drain, changes to finish or a
    /// state to publish, so a turn costs what its groups do, not what all
    /// the node's groups would. Every tick touches every group.
    touched: Vec<GroupId>,
}

/// How many queued requests one turn takes at most before it runs the
/// engines (bounds the latency of a turn).
const MAX_BATCH: usize = 4096;

impl<S, T, L> Core<S, T, L>
where
    S: StateMachine,
    T: Transport,
    L: LogStore,
{
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        config: Arc<NodeConfig>,
        transport: Arc<T>,
        store: L,
        factory: Box<dyn StateMachineFactory<S>>,
        to_self: mpsc::UnboundedSender<Cmd<S>>,
        shared: Arc<Shared>,
        events: broadcast::Sender<Event>,
        groups: &[(GroupId, Vec<NodeId>)],
    ) -> Result<Self, StartError> {
        let wall_offset_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut core = Self {
            next_balance: Instant::now() + config.balance_interval,
            config,
            transport,
            store: Some(store),
            started_flush: None,
            in_flight: None,
            unstaged: Vec::new(),
            held: BTreeMap::new(),
            waiting: Vec::new(),
            factory,
            to_self,
            shared,
            events,
            groups: BTreeMap::new(),
            forwarded: HashMap::new(),
            // Ids of forwarded proposals and follower reads travel to the
            // leader and come back in its answer. They start from this
            // start's wall clock (2^20 ids per millisecond), not from 1,
            // so an answer meant for an earlier run of this node (still in
            // flight across a restart) cannot match a new request and hand
            // it another command's outcome or an older read index.
            next_id: (wall_offset_ms << 20) | 1,
            started: Instant::now(),
            turn_at: Instant::now(),
            turn_ms: 0,
            wall_offset_ms,
            metrics: NodeMetrics::default(),
            failed: None,
            groups_changed: true,
            touched: Vec::new(),
        };
        let mut wanted: BTreeMap<GroupId, Vec<NodeId>> = groups.iter().cloned().collect();
        for g in core.store()?.groups()? {
            wanted.entry(g).or_default();
        }
        for (group, voters) in wanted {
            core.add_group(group, voters)?;
        }
        core.publish();
        Ok(core)
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Reads the clock for a turn that begins (see `turn_at`).
    fn start_turn(&mut self) {
        self.turn_at = Instant::now();
        self.turn_ms = self.turn_at.duration_since(self.started).as_millis() as u64;
    }

    /// Creates (or restores from storage) a group and its apply task.
    fn add_group(&mut self, group: GroupId, voters: Vec<NodeId>) -> Result<(), StartError> {
        let store = self.store()?;
        let hard_state = store.hard_state(group)?;
        let log = store.log_state(group)?;
        let entries = if log.last.index > log.compacted.index {
            store.entries(
                group,
                log.compacted.index.next()..log.last.index.next(),
                usize::MAX,
            )?
        } else {
            Vec::new()
        };
        let snapshot = store.snapshot(group)?;
        let init = EngineInit {
            id: self.config.id,
            group,
            voters,
            config: self.config.raft.clone(),
            seed: self.config.id.0 ^ group.0.rotate_left(17) ^ self.wall_offset_ms,
            now: self.now_ms(),
            wall_offset_ms: self.wall_offset_ms,
            hard_state,
            compacted: log.compacted,
            entries,
            snapshot,
            // A fresh state machine: the engine restores the snapshot and
            // re-applies the committed log.
            applied: LogIndex(0),
        };
        let engine = Engine::new(init)?;
        let machine = SessionMachine::new(self.factory.create(group), self.config.max_sessions);
        let (apply_tx, apply_rx) = mpsc::unbounded_channel();
        let applied = Arc::new(AtomicU64::new(0));
        let handed_waiters = Arc::new(Handed::default());
        let task = tokio::spawn(apply::run(
            machine,
            apply_rx,
            self.to_self.clone(),
            ApplyShared {
                node: self.config.id,
                group,
                transport: self.transport.clone(),
                applied: applied.clone(),
                waiters: handed_waiters.clone(),
                events: self.events.clone(),
            },
        ));
        let published = (Role::Follower, None, Term(0), LogIndex(0));
        self.groups.insert(
            group,
            Group {
                engine,
                apply: apply_tx,
                apply_task: task,
                applied,
                handed: LogIndex(0),
                pending: Pending::default(),
                handed_waiters,
                reads: HashMap::new(),
                changes: Vec::new(),
                published,
                failed: None,
                touched: true,
            },
        );
        self.touched.push(group);
        self.groups_changed = true;
        let _ = self.events.send(Event::GroupCreated(group));
        Ok(())
    }

    /// Runs until shut down.
    ///
    /// Group commit, pipelined: while one flush is under way the loop goes
    /// on taking commands and messages, so a leader counts its followers'
    /// acknowledgements and applies what they commit during its own flush,
    /// and writes drained meanwhile are staged together in the next flush
    /// as soon as this one is done.
    pub(super) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd<S>>) {
        let mut ticker = tokio::time::interval(self.config.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flushing: Option<FlushFuture<L>> = None;
        loop {
            let mut batch = Vec::new();
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => batch.push(cmd),
                    None => break,
                },
                _ = ticker.tick() => self.tick(),
                done = async { flushing.as_mut().expect("guarded").await }, if flushing.is_some() => {
                    flushing = None;
                    self.flushed(done);
                }
            }
            self.start_turn();
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            let mut shutdown = None;
            for cmd in batch {
                match cmd {
                    Cmd::Shutdown(reply) => shutdown = Some(reply),
                    cmd => self.handle(cmd),
                }
            }
            self.process();
            if let Some(started) = self.started_flush.take() {
                debug_assert!(flushing.is_none(), "one flush at a time");
                flushing = Some(started);
            }
            self.publish();
            if let Some(reply) = shutdown {
                // Writes drained before the shutdown are flushed, and what
                // waited for them is sent.
                while let Some(flush) = flushing.take() {
                    let done = flush.await;
                    self.flushed(done);
                    flushing = self.started_flush.take();
                }
                self.stop().await;
                let _ = reply.send(());
                break;
            }
        }
        // Callers still waiting learn that the node stopped.
        rx.close();
        while let Ok(cmd) = rx.try_recv() {
            drop(cmd);
        }
    }

    fn tick(&mut self) {
        self.start_turn();
        let (now, instant) = (self.turn_ms, self.turn_at);
        for (&id, group) in self.groups.iter_mut() {
            // A stopped group is silent: it takes no messages, so its
            // election timer would fire again and again.
            if group.failed.is_none() {
                touch(&mut self.touched, id, group, self.turn_ms);
                group.engine.tick(now);
            }
            // Proposals and reads that waited too long: those handed to
            // the apply task too, which cannot answer them while its state
            // machine is stuck.
            let timeout = self.config.propose_timeout;
            let mut expired = group.pending.take_expired(instant, timeout);
            expired.extend(group.handed_waiters.lock().take_expired(instant, timeout));
            for w in expired {
                reply_waiter(
                    &*self.transport,
                    self.config.id,
                    group.engine.group(),
                    w,
                    Err(ProposeError::Timeout),
                );
            }
            // A read that waited too long is answered, not just dropped:
            // dropped unanswered, its caller would be told the node stopped.
            let read_timeout = self.config.read_timeout;
            let expired: Vec<u64> = group
                .reads
                .iter()
                .filter(|(_, (_, _, at))| instant.duration_since(*at) > read_timeout)
                .map(|(id, _)| *id)
                .collect();
            for id in expired {
                if let Some((_, fail, _)) = group.reads.remove(&id) {
                    let _ = fail.send(ReadError::Timeout);
                }
            }
        }
        // Forwarded proposals whose leader did not answer in time.
        let expired: Vec<u64> = self
            .forwarded
            .iter()
            .filter(|(_, f)| instant >= f.deadline)
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            if let Some(f) = self.forwarded.remove(&id) {
                let _ = f.reply.send(Err(ProposeError::Timeout));
            }
        }
        if self.config.balance_leaders && self.groups.len() > 1 && instant >= self.next_balance {
            self.next_balance = instant + self.config.balance_interval;
            self.balance_leaders();
        }
        self.bound_log();
    }

    /// The log all groups hold in memory, in bytes.
    fn log_bytes(&self) -> u64 {
        self.groups.values().map(|g| g.engine.log_bytes()).sum()
    }

    /// Keeps the log held by all groups within `max_log_bytes`: while over
    /// it, the groups holding the most are asked for a snapshot (which
    /// compacts their logs once built), largest first, until the ones asked
    /// or already building hold the excess.
    fn bound_log(&mut self) {
        let budget = self.config.max_log_bytes;
        if budget == 0 {
            return;
        }
        let total = self.log_bytes();
        if total <= budget {
            return;
        }
        let mut largest: Vec<(u64, GroupId)> = self
            .groups
            .iter()
            .filter(|(_, g)| g.failed.is_none())
            .map(|(&id, g)| (g.engine.log_bytes(), id))
            .collect();
        largest.sort_unstable_by(|a, b| b.cmp(a));
        // A snapshot early covers at least this much: a group is not
        // snapshotted again and again for the entries compaction keeps.
        let least = self.config.raft.snapshot_trailing.max(1);
        let mut excess = total - budget;
        for (bytes, id) in largest {
            if excess == 0 {
                break;
            }
            let Some(g) = self.groups.get_mut(&id) else {
                continue;
            };
            let e = &g.engine;
            let covered = e.snapshot_meta().map_or(0, |m| m.last.index.0);
            let asked = if e.is_building_snapshot() {
                true
            } else if e.applied_index().0.saturating_sub(covered) >= least {
                touch(&mut self.touched, id, g, self.turn_ms);
                let asked = g.engine.trigger_snapshot();
                self.metrics.early_snapshots += u64::from(asked);
                asked
            } else {
                false
            };
            if asked {
                excess = excess.saturating_sub(bytes);
            }
        }
    }

    fn handle(&mut self, cmd: Cmd<S>) {
        match cmd {
            Cmd::Inbound(from, batch) => {
                self.shared.inbound_taken();
                self.inbound(from, batch)
            }
            Cmd::Propose(group, command, reply) => {
                self.propose(group, command, Reply::Local(reply))
            }
            Cmd::Read(group, consistency, f, fail) => self.read(group, consistency, f, fail),
            Cmd::Change(group, change, reply) => {
                let g = match live(&mut self.groups, group) {
                    Ok(g) => g,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return;
                    }
                };
                touch(&mut self.touched, group, g, self.turn_ms);
                match g.engine.change_membership(change) {
                    Ok(id) => g.changes.push(PendingChange { id, reply }),
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Cmd::Transfer(group, target, reply) => {
                let result = live(&mut self.groups, group).and_then(|g| {
                    touch(&mut self.touched, group, g, self.turn_ms);
                    g.engine.transfer_leader(target).map_err(Into::into)
                });
                let _ = reply.send(result);
            }
            Cmd::TriggerSnapshot(group, reply) => {
                let result = live(&mut self.groups, group).map(|g| {
                    touch(&mut self.touched, group, g, self.turn_ms);
                    g.engine.trigger_snapshot()
                });
                let _ = reply.send(result);
            }
            Cmd::CreateGroup(group, voters, reply) if self.store.is_none() => {
                // Restoring a group reads the store: after the flush.
                self.waiting.push(Cmd::CreateGroup(group, voters, reply));
            }
            Cmd::CreateGroup(group, voters, reply) => {
                let result = if self.groups.contains_key(&group) {
                    Err(AdminError::GroupExists(group))
                } else {
                    self.add_group(group, voters).map_err(|e| match e {
                        StartError::Config(c) => AdminError::Config(c),
                        e => AdminError::Failed(e.to_string()),
                    })
                };
                let _ = reply.send(result);
            }
            Cmd::RemoveGroup(group, reply) => {
                let result = match self.groups.remove(&group) {
                    Some(g) => {
                        // Its writes not yet staged are dropped, with the
                        // messages that would promise them (a group created
                        // again under this id starts from the store).
                        self.unstaged.retain(|(of, _)| *of != group);
                        for batch in self.held.values_mut() {
                            batch.retain(|env| env.group != group);
                        }
                        let _ = g.apply.send(ApplyMsg::Stop(oneshot::channel().0));
                        fail_group(&*self.transport, self.config.id, group, g, "group removed");
                        self.groups_changed = true;
                        let _ = self.events.send(Event::GroupRemoved(group));
                        Ok(())
                    }
                    None => Err(AdminError::UnknownGroup(group)),
                };
                let _ = reply.send(result);
            }
            Cmd::SnapshotBuilt(group, result) => {
                if let Some(g) = self.groups.get_mut(&group) {
                    touch(&mut self.touched, group, g, self.turn_ms);
                    match result {
                        Ok((last, data)) => {
                            g.engine.on_snapshot_built(last, data);
                        }
                        Err(e) => {
                            tracing::warn!(%group, error = %e, "building a snapshot failed");
                            g.engine.on_snapshot_failed();
                        }
                    }
                }
            }
            Cmd::GroupFailed(group, why) => {
                if let Some(g) = self.groups.get_mut(&group) {
                    // Its apply task has ended: nothing handed to it will
                    // be answered there.
                    let (transport, me) = (&*self.transport, self.config.id);
                    stop_and_announce(transport, &self.events, me, group, g, why, true);
                }
            }
            Cmd::Metrics(reply) => {
                let _ = reply.send(self.metrics());
            }
            Cmd::Shutdown(_) => unreachable!("handled by the loop"),
        }
    }

    fn inbound(&mut self, from: NodeId, batch: Vec<Envelope>) {
        for env in batch {
            match env.msg {
                Message::Forward(req) => self.forwarded_in(from, env.group, req),
                Message::ForwardResp(resp) => self.forward_answered(resp),
                _ => {
                    let Some(g) = self.groups.get_mut(&env.group) else {
                        continue;
                    };
                    if g.failed.is_some() {
                        continue;
                    }
                    // A group whose state machine is far behind takes no
                    // new entries: the leader resends them later.
                    if matches!(env.msg, Message::Append(_)) && lag(g) > self.config.max_apply_lag {
                        continue;
                    }
                    touch(&mut self.touched, env.group, g, self.turn_ms);
                    if let Err(e) = g.engine.step(env) {
                        tracing::debug!(error = %e, "message refused");
                    }
                }
            }
        }
    }

    fn propose(&mut self, group: GroupId, command: Bytes, reply: Reply) {
        let Some(g) = self.groups.get_mut(&group) else {
            reply_waiter_direct(
                &*self.transport,
                self.config.id,
                group,
                reply,
                Err(ProposeError::UnknownGroup(group)),
            );
            return;
        };
        if let Some(why) = &g.failed {
            let why = why.clone();
            reply_waiter_direct(
                &*self.transport,
                self.config.id,
                group,
                reply,
                Err(ProposeError::Failed(why)),
            );
            return;
        }
        if g.pending.len() >= self.config.max_pending_per_group
            || lag(g) > self.config.max_apply_lag
        {
            reply_waiter_direct(
                &*self.transport,
                self.config.id,
                group,
                reply,
                Err(ProposeError::Busy),
            );
            return;
        }
        // A follower hands its callers' proposals to the leader it knows
        // (the engine would refuse them with that leader's id).
        if self.config.forward_proposals
            && g.engine.role() != Role::Leader
            && matches!(reply, Reply::Local(_))
            && let Some(to) = g.engine.leader().filter(|&l| l != self.config.id)
        {
            let Reply::Local(reply) = reply else {
                unreachable!("matched above")
            };
            self.forward(group, to, command, reply);
            return;
        }
        touch(&mut self.touched, group, g, self.turn_ms);
        match g.engine.propose(command) {
            Ok(id) => {
                self.metrics.proposals += 1;
                g.pending
                    .insert(id.index, Waiter { id, reply }, self.turn_at);
            }
            Err(e) => reply_waiter_direct(&*self.transport, self.config.id, group, reply, Err(e)),
        }
    }

    /// Sends a caller's proposal to the leader `to`, which answers it.
    fn forward(
        &mut self,
        group: GroupId,
        to: NodeId,
        command: Bytes,
        reply: oneshot::Sender<ProposeResult>,
    ) {
        let id = self.next_id;
        self.next_id += 1;
        self.forwarded.insert(
            id,
            Forwarded {
                reply,
                deadline: self.turn_at + self.config.propose_timeout,
            },
        );
        let env = Envelope {
            group,
            from: self.config.id,
            to,
            term: Term(0),
            msg: Message::Forward(ForwardRequest { id, command }),
        };
        self.send_batch(to, vec![env]);
    }

    /// A follower forwarded a proposal: propose it here if leading.
    fn forwarded_in(&mut self, from: NodeId, group: GroupId, req: ForwardRequest) {
        self.propose(group, req.command, Reply::Remote(from, req.id));
    }

    fn forward_answered(&mut self, resp: ForwardResponse) {
        if let Some(f) = self.forwarded.remove(&resp.id) {
            let _ = f.reply.send(apply::outcome_to_result(resp.outcome));
        }
    }

    fn read(
        &mut self,
        group: GroupId,
        consistency: Consistency,
        f: apply::ReadFn<S>,
        fail: oneshot::Sender<ReadError>,
    ) {
        let Some(g) = self.groups.get_mut(&group) else {
            let _ = fail.send(ReadError::UnknownGroup(group));
            return;
        };
        if g.failed.is_some() {
            let _ = fail.send(ReadError::GroupStopped(group));
            return;
        }
        let mode = match consistency {
            Consistency::Stale => {
                let _ = g.apply.send(ApplyMsg::Read(LogIndex(0), f));
                return;
            }
            Consistency::Linearizable => ReadMode::ReadIndex,
            Consistency::Lease => ReadMode::Lease,
        };
        let id = self.next_id;
        self.next_id += 1;
        touch(&mut self.touched, group, g, self.turn_ms);
        match g.engine.read(id, mode) {
            Ok(()) => {
                g.reads.insert(id, (f, fail, self.turn_at));
            }
            Err(e) => {
                let _ = fail.send(e);
            }
        }
    }

    /// Carries out what the engines asked for: messages leave at once,
    /// committed entries go to the state machines, writes are staged in
    /// the next flush (started here unless one is under way), and messages
    /// that promise durability wait for the flush that covers them.
    fn process(&mut self) {
        if self.failed.is_some() {
            return;
        }
        let mut outbound: BTreeMap<NodeId, Vec<Envelope>> = BTreeMap::new();
        let mut sink = Sink {
            outbound: &mut outbound,
            unstaged: &mut self.unstaged,
            held: &mut self.held,
            transport: &*self.transport,
            me: self.config.id,
        };
        for &group in &self.touched {
            // One lookup per group, not per action.
            let Some(g) = self.groups.get_mut(&group) else {
                continue;
            };
            if !g.engine.has_actions() {
                continue;
            }
            if g.failed.is_some() {
                // Dropped, as by a crash of this group alone: nothing of
                // it is staged, sent or applied any more.
                drop(g.engine.take_actions());
                continue;
            }
            for action in g.engine.take_actions() {
                sink.carry_out(group, g, action);
            }
        }
        // Messages that promise nothing leave before the flush, so
        // followers write while the leader does.
        for (to, batch) in outbound {
            self.send_batch(to, batch);
        }
        match &mut self.in_flight {
            None => self.start_flush(),
            Some(in_flight) if self.unstaged.is_empty() => {
                // Everything these messages promise is in the flush under
                // way (or durable already).
                for (to, mut batch) in std::mem::take(&mut self.held) {
                    in_flight.held.entry(to).or_default().append(&mut batch);
                }
            }
            // They wait for the next flush, with the writes they follow.
            Some(_) => {}
        }
        self.finish_changes();
    }

    /// The store, unless a flush has it.
    fn store(&mut self) -> Result<&mut L, StorageError> {
        self.store
            .as_mut()
            .ok_or_else(|| StorageError::Other("the log store is busy flushing".into()))
    }

    /// Stages the writes drained so far and starts flushing them; with
    /// nothing to write, sends what waited at once (everything before it
    /// is durable).
    fn start_flush(&mut self) {
        if self.unstaged.is_empty() {
            for (to, batch) in std::mem::take(&mut self.held) {
                self.send_batch(to, batch);
            }
            return;
        }
        let Some(mut store) = self.store.take() else {
            return;
        };
        // Per run of one group's writes: the group and its last entry
        // staged (the writes come in runs, a group's run per drain).
        let mut written: Vec<(GroupId, Option<LogId>)> = Vec::new();
        let mut entries = 0u64;
        for (group, action) in std::mem::take(&mut self.unstaged) {
            if written.last().is_none_or(|(of, _)| *of != group) {
                written.push((group, None));
            }
            let last = &mut written.last_mut().expect("pushed").1;
            let staged = match action {
                Action::SaveHardState(hs) => store.save_hard_state(group, hs),
                Action::TruncateLog { from } => store.truncate(group, from),
                Action::AppendLog(batch) => {
                    entries += batch.len() as u64;
                    *last = batch.last().map(|e| e.id).or(*last);
                    store.append_owned(group, batch)
                }
                Action::SaveSnapshot(snapshot) => store.save_snapshot(group, &snapshot),
                Action::CompactLog { upto } => store.compact(group, upto),
                other => unreachable!("not a write: {other:?}"),
            };
            if let Err(e) = staged {
                self.store = Some(store);
                self.fail_node(format!("log store write failed: {e}"));
                return;
            }
        }
        // One record per group: a group drained more than once since the
        // last flush has several runs; the stable sort keeps them in order.
        written.sort_by_key(|(group, _)| *group);
        written.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            if same {
                earlier.1 = later.1.or(earlier.1);
            }
            same
        });
        let groups = written
            .into_iter()
            .filter_map(|(group, last)| {
                let g = self.groups.get(&group)?;
                Some((group, g.engine.drained_hard_state(), last))
            })
            .collect();
        self.in_flight = Some(InFlight {
            groups,
            entries,
            held: std::mem::take(&mut self.held),
        });
        self.started_flush = Some(Box::pin(async move {
            let result = store.flush().await;
            (store, result)
        }));
    }

    /// A flush is done: the engines learn what is durable, what waited for
    /// it is sent, and the writes drained meanwhile start flushing.
    fn flushed(&mut self, (store, result): (L, Result<(), StorageError>)) {
        self.start_turn();
        self.store = Some(store);
        let Some(in_flight) = self.in_flight.take() else {
            return;
        };
        if let Err(e) = result {
            self.fail_node(format!("log store flush failed: {e}"));
            return;
        }
        self.metrics.fsyncs += 1;
        self.metrics.write_batches += 1;
        self.metrics.entries_written += in_flight.entries;
        for (group, hard_state, last) in in_flight.groups {
            if let Some(g) = self.groups.get_mut(&group) {
                touch(&mut self.touched, group, g, self.turn_ms);
                g.engine.on_flushed(hard_state, last);
            }
        }
        for (to, batch) in in_flight.held {
            self.send_batch(to, batch);
        }
        for cmd in std::mem::take(&mut self.waiting) {
            self.handle(cmd);
        }
        self.process();
    }

    /// Answers membership changes that are done (or can no longer be).
    fn finish_changes(&mut self) {
        for group in &self.touched {
            let Some(g) = self.groups.get_mut(group) else {
                continue;
            };
            if g.changes.is_empty() {
                continue;
            }
            let engine = &g.engine;
            let mut keep = Vec::new();
            for c in g.changes.drain(..) {
                let committed = engine.commit_index() >= c.id.index;
                let ours = engine.entry(c.id.index).is_none_or(|e| e.id == c.id);
                if committed && ours && !engine.membership().is_joint() {
                    let _ = c.reply.send(Ok(()));
                } else if committed && !ours {
                    let _ = c.reply.send(Err(AdminError::Failed(
                        "the change was lost in a leadership change".into(),
                    )));
                } else if engine.role() != Role::Leader && !committed {
                    let _ = c.reply.send(Err(AdminError::Failed(
                        "leadership changed; the change may or may not take effect".into(),
                    )));
                } else {
                    keep.push(c);
                }
            }
            g.changes = keep;
        }
    }

    fn send_batch(&mut self, to: NodeId, batch: Vec<Envelope>) {
        if batch.is_empty() {
            return;
        }
        self.metrics.batches_sent += 1;
        self.metrics.messages_sent += batch.len() as u64;
        if let Err(e) = self.transport.send(to, batch) {
            tracing::debug!(%to, error = %e, "send failed");
        }
    }

    /// Storage failed: nothing more may be promised. Every group stops.
    fn fail_node(&mut self, why: String) {
        tracing::error!(error = %why, "node stopped");
        self.failed = Some(why.clone());
        for (&group, g) in self.groups.iter_mut() {
            // The apply tasks go on: they still answer what they were
            // handed (committed before the failure).
            let (transport, me) = (&*self.transport, self.config.id);
            stop_and_announce(transport, &self.events, me, group, g, why.clone(), false);
        }
    }

    /// Refreshes what handles read without asking, and publishes events.
    /// Only groups touched since the last publish are looked at, and only
    /// those whose role, leader, term or membership changed are updated (a
    /// turn with many groups mostly changes none).
    fn publish(&mut self) {
        let mut status = None;
        if std::mem::take(&mut self.groups_changed) {
            let mut all = self.shared.status_mut();
            all.clear();
            for (&group, g) in &self.groups {
                all.insert(group, (g.engine.role(), g.engine.leader()));
            }
            status = Some(all);
        }
        for group in self.touched.drain(..) {
            let Some(g) = self.groups.get_mut(&group) else {
                continue;
            };
            g.touched = false;
            let e = &g.engine;
            let now = (e.role(), e.leader(), e.term(), e.membership_index());
            let before = g.published;
            if now == before {
                continue;
            }
            status
                .get_or_insert_with(|| self.shared.status_mut())
                .insert(group, (now.0, now.1));
            if (now.1, now.2) != (before.1, before.2) && now.1 != before.1 {
                let _ = self.events.send(Event::LeaderChanged {
                    group,
                    leader: e.leader(),
                    term: e.term(),
                });
            }
            if now.3 != before.3 {
                let _ = self.events.send(Event::MembershipChanged {
                    group,
                    membership: e.membership().clone(),
                });
            }
            g.published = now;
        }
    }

    fn metrics(&self) -> Metrics {
        let mut node = self.metrics.clone();
        node.inbound_dropped = self.shared.inbound_dropped.load(Ordering::Relaxed);
        node.log_bytes = self.log_bytes();
        let groups = self
            .groups
            .iter()
            .map(|(&id, g)| {
                let e = &g.engine;
                let last = e.last_log_id().index;
                let peers = e
                    .membership()
                    .members()
                    .into_iter()
                    .filter_map(|p| {
                        e.progress(p).map(|pr| {
                            (
                                p,
                                PeerMetrics {
                                    matched: pr.matched,
                                    lag: last.0.saturating_sub(pr.matched.0),
                                },
                            )
                        })
                    })
                    .collect();
                (
                    id,
                    GroupMetrics {
                        role: e.role(),
                        term: e.term(),
                        leader: e.leader(),
                        commit: e.commit_index(),
                        applied: LogIndex(g.applied.load(Ordering::Acquire)),
                        last_index: last,
                        membership: e.membership().clone(),
                        peers,
                        quiet: e.is_quiescent(),
                        log_bytes: e.log_bytes(),
                    },
                )
            })
            .collect();
        Metrics { node, groups }
    }

    /// Hands one leadership to a voter that leads fewer groups, when this
    /// node leads more than its share. At most one transfer per check, and
    /// only from above the share to below it, so leaderships settle.
    fn balance_leaders(&mut self) {
        let mut leads: BTreeMap<NodeId, usize> = BTreeMap::new();
        let mut nodes: std::collections::BTreeSet<NodeId> = Default::default();
        for g in self.groups.values() {
            nodes.extend(g.engine.membership().voters.iter().copied());
            if let Some(l) = g.engine.leader() {
                *leads.entry(l).or_default() += 1;
            }
        }
        if nodes.len() < 2 {
            return;
        }
        let total: usize = leads.values().sum();
        let share = total.div_ceil(nodes.len());
        let mine = leads.get(&self.config.id).copied().unwrap_or(0);
        if mine <= share {
            return;
        }
        let floor = total / nodes.len();
        for g in self.groups.values_mut() {
            if g.failed.is_some()
                || g.engine.role() != Role::Leader
                || g.engine.transfer_target().is_some()
            {
                continue;
            }
            let last = g.engine.last_log_id().index;
            let target = g
                .engine
                .membership()
                .voters
                .iter()
                .copied()
                .filter(|&v| v != self.config.id)
                .filter(|v| leads.get(v).copied().unwrap_or(0) < floor.max(1))
                .filter(|&v| g.engine.progress(v).is_some_and(|p| p.matched == last))
                .min_by_key(|v| leads.get(v).copied().unwrap_or(0));
            if let Some(target) = target
                && g.engine.transfer_leader(Some(target)).is_ok()
            {
                return;
            }
        }
    }

    async fn stop(&mut self) {
        let groups = std::mem::take(&mut self.groups);
        for (group, g) in groups {
            let (tx, rx) = oneshot::channel();
            let _ = g.apply.send(ApplyMsg::Stop(tx));
            let _ = rx.await;
            let _ = g.apply_task.await;
            let _ = group;
        }
        for (_, f) in self.forwarded.drain() {
            let _ = f.reply.send(Err(ProposeError::Shutdown));
        }
        self.transport.shutdown().await;
        let mut status = self.shared.status_mut();
        status.clear();
    }
}

/// Where [`Core::process`] puts the actions it drains from the engines.
struct Sink<'a, T> {
    /// Messages that promise nothing, by destination: they leave at once.
    outbound: &'a mut BTreeMap<NodeId, Vec<Envelope>>,
    /// Writes, for the next flush.
    unstaged: &'a mut Vec<(GroupId, Action)>,
    /// Messages that wait for the flush of the writes before them.
    held: &'a mut BTreeMap<NodeId, Vec<Envelope>>,
    transport: &'a T,
    me: NodeId,
}

impl<T: Transport> Sink<'_, T> {
    /// Carries out one action of group `group` (`g`).
    fn carry_out<S>(&mut self, group: GroupId, g: &mut Group<S>, action: Action) {
        match action {
            write @ (Action::SaveHardState(_)
            | Action::TruncateLog { .. }
            | Action::AppendLog(_)
            | Action::SaveSnapshot(_)
            | Action::CompactLog { .. }) => self.unstaged.push((group, write)),
            Action::Send(env) => self.outbound.entry(env.to).or_default().push(env),
            Action::SendAfterPersist(env) => self.held.entry(env.to).or_default().push(env),
            Action::Apply(entries) => {
                if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
                    g.handed = last.id.index;
                    // Before the entries go: the apply task looks for
                    // their waiters once it has applied them.
                    g.pending.move_range_into(
                        first.id.index,
                        last.id.index,
                        &mut g.handed_waiters.lock(),
                    );
                }
                let _ = g.apply.send(ApplyMsg::Apply(entries));
            }
            Action::RestoreSnapshot(snapshot) => {
                let last = snapshot.meta.last.index;
                // Proposals covered by the snapshot were decided elsewhere;
                // whether theirs is among them is unknown here.
                for w in g.pending.take_through(last) {
                    reply_waiter(
                        self.transport,
                        self.me,
                        group,
                        w,
                        Err(ProposeError::Unknown),
                    );
                }
                g.handed = last;
                let _ = g.apply.send(ApplyMsg::Restore(snapshot));
            }
            Action::BuildSnapshot => {
                let _ = g.apply.send(ApplyMsg::Build);
            }
            Action::ReadReady { id, index } => {
                if let Some((f, _, _)) = g.reads.remove(&id) {
                    let _ = g.apply.send(ApplyMsg::Read(index, f));
                }
            }
            Action::ReadFailed { id, error } => {
                if let Some((_, fail, _)) = g.reads.remove(&id) {
                    let _ = fail.send(error);
                }
            }
        }
    }
}

/// Group `group`, unless this node does not host it or it stopped here.
fn live<S>(
    groups: &mut BTreeMap<GroupId, Group<S>>,
    group: GroupId,
) -> Result<&mut Group<S>, AdminError> {
    let g = groups
        .get_mut(&group)
        .ok_or(AdminError::UnknownGroup(group))?;
    match &g.failed {
        Some(why) => Err(AdminError::Failed(why.clone())),
        None => Ok(g),
    }
}

/// Notes that `g`, group `id`, takes an input this turn, and gives its
/// engine the turn's clock, `now_ms`, before the input.
fn touch<S>(touched: &mut Vec<GroupId>, id: GroupId, g: &mut Group<S>, now_ms: u64) {
    g.engine.observe_time(now_ms);
    if !g.touched {
        g.touched = true;
        touched.push(id);
    }
}

/// Entries handed to the apply task and not yet applied.
fn lag<S>(g: &Group<S>) -> u64 {
    g.handed.0.saturating_sub(g.applied.load(Ordering::Acquire))
}

fn reply_waiter<T: Transport>(
    transport: &T,
    me: NodeId,
    group: GroupId,
    w: Waiter,
    result: ProposeResult,
) {
    reply_waiter_direct(transport, me, group, w.reply, result);
}

/// Answers a local caller, or the follower that forwarded the proposal.
fn reply_waiter_direct<T: Transport>(
    transport: &T,
    me: NodeId,
    group: GroupId,
    reply: Reply,
    result: ProposeResult,
) {
    match reply {
        Reply::Local(tx) => {
            let _ = tx.send(result);
        }
        Reply::Remote(to, id) => {
            let outcome = match result {
                Ok(_) => return,
                Err(ProposeError::NotLeader { leader }) => ForwardOutcome::NotLeader(leader),
                Err(ProposeError::Busy) => ForwardOutcome::Busy,
                Err(ProposeError::Lost) => ForwardOutcome::Lost,
                Err(ProposeError::TransferInProgress { target }) => {
                    ForwardOutcome::NotLeader(Some(target))
                }
                Err(_) => ForwardOutcome::Unknown,
            };
            let env = Envelope {
                group,
                from: me,
                to,
                term: Term(0),
                msg: Message::ForwardResp(ForwardResponse { id, outcome }),
            };
            let _ = transport.send(to, vec![env]);
        }
    }
}

/// Fails everything a removed group still had waiting.
fn fail_group<S, T: Transport>(
    transport: &T,
    me: NodeId,
    group: GroupId,
    mut g: Group<S>,
    why: &str,
) {
    g.apply_task.abort();
    stop_group(
        transport,
        me,
        group,
        &mut g,
        why,
        true,
        ReadError::UnknownGroup(group),
    );
}

/// Stops group `g` on this node for `why` (see [`stop_group`]), refusing
/// reads with [`ReadError::GroupStopped`], and tells subscribers.
fn stop_and_announce<S, T: Transport>(
    transport: &T,
    events: &broadcast::Sender<Event>,
    me: NodeId,
    group: GroupId,
    g: &mut Group<S>,
    why: String,
    handed: bool,
) {
    let stopped = ReadError::GroupStopped(group);
    stop_group(transport, me, group, g, &why, handed, stopped);
    let _ = events.send(Event::GroupStopped { group, reason: why });
}

/// Stops group `g` on this node after an unrecoverable error: from now on
/// it takes no input and says nothing (see [`Core::tick`] and
/// [`Core::process`]), and proposals, reads and changes there fail at once.
/// Everything waiting on it is answered now (proposals `Failed`, reads
/// `read_error`, changes `Failed`), except what was handed to its apply
/// task when `handed` is false: that task still applies and answers it.
fn stop_group<S, T: Transport>(
    transport: &T,
    me: NodeId,
    group: GroupId,
    g: &mut Group<S>,
    why: &str,
    handed: bool,
    read_error: ReadError,
) {
    g.failed = Some(why.to_owned());
    let mut waiters = std::mem::take(&mut g.pending)
        .into_waiters()
        .collect::<Vec<_>>();
    if handed {
        // A waiter is taken out once, under the lock, by whoever answers
        // it.
        let handed = std::mem::take(&mut *g.handed_waiters.lock());
        waiters.extend(handed.into_waiters());
    }
    for w in waiters {
        reply_waiter(
            transport,
            me,
            group,
            w,
            Err(ProposeError::Failed(why.into())),
        );
    }
    for (_, (_, fail, _)) in g.reads.drain() {
        let _ = fail.send(read_error);
    }
    for c in g.changes.drain(..) {
        let _ = c.reply.send(Err(AdminError::Failed(why.into())));
    }
}
