//! The tokio driver: a [`Node`] hosting many Raft groups ("partitions")
//! over one transport and one log store.
//!
//! One consensus loop per node owns every group's [`Engine`](crate::Engine). Each turn it
//! takes everything queued (inbound message batches, proposals, reads,
//! administrative requests), runs the engines, sends the messages that may
//! leave at once (batched per destination node across groups), stages every
//! group's log and hard-state changes and makes them durable with **one**
//! [`LogStore::flush`] (one fsync for all groups), then sends the messages
//! that promise durability and hands committed entries to the groups'
//! apply tasks. The loop owns the log store and awaits only its flush; no
//! lock is held across an await.
//!
//! Each group's state machine runs in its own apply task behind a queue:
//! a slow state machine slows its group (the loop refuses its proposals
//! with [`ProposeError::Busy`] and stops feeding it appends) and never the
//! heartbeats of other groups.
//!
//! ```
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use raft_api::{GroupId, NodeId};
//! use raft_node::driver::{Consistency, Node, NodeConfig};
//! use storage_mem::{KvCommand, KvStateMachine, MemLogStore};
//! use transport_mem::MemNetwork;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let net = MemNetwork::new();
//! let config = NodeConfig::new(NodeId(1));
//! let node = Node::start(
//!     config,
//!     net.transport(NodeId(1)),
//!     MemLogStore::new(),
//!     |_group| KvStateMachine::new(),
//!     &[(GroupId(1), vec![NodeId(1)])],
//! )
//! .await
//! .unwrap();
//! // A node alone elects itself.
//! node.wait_for_leader(GroupId(1), std::time::Duration::from_secs(5)).await.unwrap();
//! let put = KvCommand::Put { key: Bytes::from("k"), value: Bytes::from("v") };
//! node.propose(GroupId(1), put.encode()).await.unwrap();
//! let value = node
//!     .read_with(GroupId(1), Consistency::Linearizable, |kv: &KvStateMachine| kv.get(b"k"))
//!     .await
//!     .unwrap();
//! assert_eq!(value, Some(Bytes::from("v")));
//! node.shutdown().await;
//! # });
//! ```

mod apply;
mod core;
mod pending;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use raft_api::{
    Config, Discovery, Envelope, GroupId, Inbox, LogIndex, LogStore, Membership, NodeId,
    PeerChange, StateMachine, Term, Transport,
};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::engine::{MembershipChange, Role};
use crate::error::{AdminError, ProposeError, ReadError};
use crate::session::{Session, encode_command};

/// The outcome of a proposal: the state machine's response.
pub type ProposeResult = Result<Bytes, ProposeError>;

/// Settings of a node (those of its groups' engines are in `raft`).
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node.
    pub id: NodeId,
    /// Settings of every group's engine.
    pub raft: Config,
    /// A proposal made on a follower is forwarded to the leader (and its
    /// response returned); when off, it fails at once with
    /// [`ProposeError::NotLeader`] naming the leader. Default on.
    pub forward_proposals: bool,
    /// How long a proposal may take before it fails with
    /// [`ProposeError::Timeout`]. Default 5 s. The node checks every
    /// [`tick`](Self::tick), so the answer may come up to a tick later; it
    /// comes even when the state machine is stuck.
    pub propose_timeout: Duration,
    /// How long a read may wait for confirmation. Default 5 s.
    pub read_timeout: Duration,
    /// Proposals in flight per group before new ones get
    /// [`ProposeError::Busy`]. Default 4096.
    pub max_pending_per_group: usize,
    /// Committed entries a group's state machine may lag behind before the
    /// group pushes back (refuses proposals, drops appends from its leader
    /// until the state machine catches up). Default 8192.
    pub max_apply_lag: u64,
    /// How often engines are ticked. Default 10 ms.
    pub tick: Duration,
    /// Client sessions remembered per group. Default 10000.
    pub max_sessions: usize,
    /// Inbound message batches queued before more are dropped. Default
    /// 8192.
    pub inbox_capacity: usize,
    /// Move leaderships between nodes so that each leads its share of the
    /// groups (by leader transfer). Default on; it only acts when this
    /// node hosts more than one group.
    pub balance_leaders: bool,
    /// How often leadership balance is checked. Default 2 s.
    pub balance_interval: Duration,
    /// Log held in memory by all of this node's groups together, in bytes
    /// (as [`Entry::size`](raft_api::Entry::size) counts them), before the
    /// groups holding the most are snapshotted early so that their logs
    /// compact. Each group still snapshots on its own at
    /// `Config::snapshot_threshold`; this bounds what a node hosting many
    /// groups holds, which would otherwise grow with their number. A group
    /// is snapshotted early only once it applied at least
    /// `Config::snapshot_trailing` entries since its last snapshot. Default
    /// 64 MiB; 0 turns the bound off.
    pub max_log_bytes: u64,
}

impl NodeConfig {
    /// Defaults for node `id`.
    pub fn new(id: NodeId) -> Self {
        Self {
            id,
            raft: Config::default(),
            forward_proposals: true,
            propose_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(5),
            max_pending_per_group: 4096,
            max_apply_lag: 8192,
            tick: Duration::from_millis(10),
            max_sessions: 10_000,
            inbox_capacity: 8192,
            balance_leaders: true,
            balance_interval: Duration::from_secs(2),
            max_log_bytes: 64 << 20,
        }
    }
}

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// Linearizable: confirmed by a quorum (ReadIndex), on the leader or
    /// through it.
    Linearizable,
    /// Linearizable as long as clocks drift less than
    /// `Config::lease_clock_drift_ms`; on the leader without a quorum
    /// round while its lease holds.
    Lease,
    /// Whatever this node's state machine holds now; may be stale.
    Stale,
}

/// Something that happened on the node.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A group's leader (as this node knows it) changed.
    LeaderChanged {
        /// The group.
        group: GroupId,
        /// The new leader, if one is known.
        leader: Option<NodeId>,
        /// The term.
        term: Term,
    },
    /// A group's membership changed (a membership entry was appended or
    /// undone, or a snapshot brought one).
    MembershipChanged {
        /// The group.
        group: GroupId,
        /// The membership now in effect.
        membership: Membership,
    },
    /// A group was created on this node.
    GroupCreated(GroupId),
    /// A group was removed from this node.
    GroupRemoved(GroupId),
    /// A group's state machine was replaced by a snapshot.
    SnapshotInstalled {
        /// The group.
        group: GroupId,
        /// The snapshot's last entry.
        last: raft_api::LogId,
    },
    /// A group stopped on this node after an unrecoverable error: its state
    /// machine refused a snapshot, or the node's storage failed (then every
    /// group stops). Requests there fail from now on; the other nodes may
    /// go on serving it.
    GroupStopped {
        /// The group.
        group: GroupId,
        /// What failed.
        reason: String,
    },
}

/// What the node reports about one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMetrics {
    /// This node's role.
    pub role: Role,
    /// Current term.
    pub term: Term,
    /// The leader, if known.
    pub leader: Option<NodeId>,
    /// Highest committed index known here.
    pub commit: LogIndex,
    /// Highest index this node's state machine applied.
    pub applied: LogIndex,
    /// Last index of this node's log.
    pub last_index: LogIndex,
    /// The membership in effect.
    pub membership: Membership,
    /// On the leader: each other member's match index and lag (entries
    /// behind the leader's last one).
    pub peers: BTreeMap<NodeId, PeerMetrics>,
    /// Whether the group is quiet (no heartbeats until woken; see
    /// `Config::quiesce_after_ms`).
    pub quiet: bool,
    /// Log held in memory, in bytes (see [`NodeConfig::max_log_bytes`]).
    pub log_bytes: u64,
}

/// Replication state of one peer, as the leader sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerMetrics {
    /// Highest index known to match the leader's log.
    pub matched: LogIndex,
    /// Entries behind the leader's last index.
    pub lag: u64,
}

/// Counters of the node as a whole.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeMetrics {
    /// Proposals accepted by engines on this node (as leader).
    pub proposals: u64,
    /// Log store flushes (one fsync each, for all groups).
    pub fsyncs: u64,
    /// Loop turns that wrote something.
    pub write_batches: u64,
    /// Log entries staged in all those turns.
    pub entries_written: u64,
    /// Batches sent to other nodes.
    pub batches_sent: u64,
    /// Envelopes sent to other nodes.
    pub messages_sent: u64,
    /// Inbound batches dropped because the inbox was full.
    pub inbound_dropped: u64,
    /// Log held in memory by all groups, in bytes (see
    /// [`NodeConfig::max_log_bytes`]).
    pub log_bytes: u64,
    /// Snapshots asked for early to keep the log within
    /// [`NodeConfig::max_log_bytes`].
    pub early_snapshots: u64,
}

impl NodeMetrics {
    /// Mean entries written per flush (group commit batch size).
    pub fn mean_write_batch(&self) -> f64 {
        if self.fsyncs == 0 {
            0.0
        } else {
            self.entries_written as f64 / self.fsyncs as f64
        }
    }
}

/// A snapshot of the node's metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct Metrics {
    /// Node-wide counters.
    pub node: NodeMetrics,
    /// Per group.
    pub groups: BTreeMap<GroupId, GroupMetrics>,
}

/// Creates the state machine of each group this node hosts.
pub trait StateMachineFactory<S>: Send + 'static {
    /// A fresh state machine for `group` (it is then restored from the
    /// group's snapshot and log).
    fn create(&mut self, group: GroupId) -> S;
}

impl<S, F> StateMachineFactory<S> for F
where
    F: FnMut(GroupId) -> S + Send + 'static,
{
    fn create(&mut self, group: GroupId) -> S {
        self(group)
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The settings cannot work.
    #[error(transparent)]
    Config(#[from] raft_api::ConfigError),
    /// Reading the log store failed.
    #[error(transparent)]
    Storage(#[from] raft_api::StorageError),
    /// The transport could not start.
    #[error(transparent)]
    Transport(#[from] raft_api::TransportError),
}

/// Requests to the consensus loop.
pub(crate) enum Cmd<S> {
    Inbound(NodeId, Vec<Envelope>),
    Propose(GroupId, Bytes, oneshot::Sender<ProposeResult>),
    Read(
        GroupId,
        Consistency,
        apply::ReadFn<S>,
        oneshot::Sender<ReadError>,
    ),
    Change(
        GroupId,
        MembershipChange,
        oneshot::Sender<Result<(), AdminError>>,
    ),
    Transfer(
        GroupId,
        Option<NodeId>,
        oneshot::Sender<Result<NodeId, AdminError>>,
    ),
    TriggerSnapshot(GroupId, oneshot::Sender<Result<bool, AdminError>>),
    CreateGroup(
        GroupId,
        Vec<NodeId>,
        oneshot::Sender<Result<(), AdminError>>,
    ),
    RemoveGroup(GroupId, oneshot::Sender<Result<(), AdminError>>),
    SnapshotBuilt(GroupId, Result<(raft_api::LogId, Bytes), String>),
    GroupFailed(GroupId, String),
    Metrics(oneshot::Sender<Metrics>),
    Shutdown(oneshot::Sender<()>),
}

/// What every handle sees without asking the loop.
pub(crate) struct Shared {
    /// Per group: role and leader, updated by the loop when they change.
    pub(crate) status: RwLock<BTreeMap<GroupId, (Role, Option<NodeId>)>>,
    pub(crate) inbound_dropped: AtomicU64,
    /// Inbound batches queued for the loop and not yet taken by it.
    pub(crate) inbound_queued: AtomicUsize,
}

impl Shared {
    /// The status map, for the loop to update (a poisoned lock only means
    /// a reader panicked; the map itself is whole).
    pub(crate) fn status_mut(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, BTreeMap<GroupId, (Role, Option<NodeId>)>> {
        self.status.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The loop took an inbound batch off its queue.
    pub(crate) fn inbound_taken(&self) {
        self.inbound_queued.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A running node: a cheap, cloneable handle to its consensus loop.
pub struct Node<S> {
    id: NodeId,
    tx: mpsc::UnboundedSender<Cmd<S>>,
    shared: Arc<Shared>,
    events: broadcast::Sender<Event>,
    config: Arc<NodeConfig>,
    done: Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl<S> Clone for Node<S> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            tx: self.tx.clone(),
            shared: self.shared.clone(),
            events: self.events.clone(),
            config: self.config.clone(),
            done: self.done.clone(),
        }
    }
}

/// The transport's view of the node: queues inbound batches without
/// blocking, dropping them when `capacity` batches wait for the loop
/// already (Raft recovers lost messages by resending).
///
/// The loop's queue itself is unbounded, and this count bounds what peers
/// can put in it. Callers on this node need no such bound: each waits for
/// its answer, so what they queue is at most what they have in flight. A
/// bounded channel cost a lock per command taken, a tenth of the loop's
/// time at high concurrency.
struct NodeInbox<S> {
    tx: mpsc::UnboundedSender<Cmd<S>>,
    shared: Arc<Shared>,
    capacity: usize,
}

impl<S: Send + 'static> Inbox for NodeInbox<S> {
    fn deliver(&self, from: NodeId, batch: Vec<Envelope>) {
        let queued = &self.shared.inbound_queued;
        if queued.fetch_add(1, Ordering::Relaxed) >= self.capacity {
            queued.fetch_sub(1, Ordering::Relaxed);
            self.shared.inbound_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.tx.send(Cmd::Inbound(from, batch)).is_err() {
            // The loop has stopped.
            queued.fetch_sub(1, Ordering::Relaxed);
            self.shared.inbound_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Hands a discovered peer to the transport: by id when discovery knows it,
/// otherwise by address for the transport to learn the id in its handshake.
fn learn_peer<T: Transport>(transport: &T, peer: raft_api::Peer) {
    match peer.id {
        Some(id) => transport.add_peer(id, peer.address),
        None => {
            if let Err(e) = transport.add_address(peer.address.clone()) {
                tracing::warn!(address = %peer.address, error = %e, "cannot use a peer known by address only");
            }
        }
    }
}

impl<S: StateMachine> Node<S> {
    /// Starts a node: restores every group found in `store` and every group
    /// of `groups` (id and initial voters; a node joining an existing group
    /// passes no voters), starts the transport, and runs the consensus
    /// loop. Must be called inside a tokio runtime.
    pub async fn start<T, L, F>(
        config: NodeConfig,
        transport: T,
        store: L,
        factory: F,
        groups: &[(GroupId, Vec<NodeId>)],
    ) -> Result<Self, StartError>
    where
        T: Transport,
        L: LogStore,
        F: StateMachineFactory<S>,
    {
        config.raft.validate()?;
        let config = Arc::new(config);
        let (tx, rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            status: RwLock::new(BTreeMap::new()),
            inbound_dropped: AtomicU64::new(0),
            inbound_queued: AtomicUsize::new(0),
        });
        let transport = Arc::new(transport);
        let core = core::Core::new(
            config.clone(),
            transport.clone(),
            store,
            Box::new(factory),
            tx.clone(),
            shared.clone(),
            events.clone(),
            groups,
        )?;
        transport
            .start(Arc::new(NodeInbox {
                tx: tx.clone(),
                shared: shared.clone(),
                capacity: config.inbox_capacity.max(16),
            }))
            .await?;
        let handle = tokio::spawn(core.run(rx));
        Ok(Self {
            id: config.id,
            tx,
            shared,
            events,
            config,
            done: Arc::new(tokio::sync::Mutex::new(Some(handle))),
        })
    }

    /// This node.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Proposes a command to `group` and returns the state machine's
    /// response once it is committed and applied. On a follower the
    /// proposal is forwarded to the leader (see
    /// [`NodeConfig::forward_proposals`]).
    pub async fn propose(&self, group: GroupId, command: Bytes) -> ProposeResult {
        self.propose_encoded(group, encode_command(None, &command))
            .await
    }

    /// Like [`propose`](Self::propose), in a client session: retrying with
    /// the same `session` (client id and sequence number) applies the
    /// command at most once and returns the first response, also after a
    /// leader change or a snapshot.
    pub async fn propose_in_session(
        &self,
        group: GroupId,
        session: Session,
        command: Bytes,
    ) -> ProposeResult {
        self.propose_encoded(group, encode_command(Some(session), &command))
            .await
    }

    async fn propose_encoded(&self, group: GroupId, command: Bytes) -> ProposeResult {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Propose(group, command, reply))
            .map_err(|_| ProposeError::Shutdown)?;
        // No timer here: the consensus loop answers every proposal, with
        // `Timeout` once it waited `propose_timeout` (checked every tick),
        // also when the state machine is stuck. A timer per call cost more
        // than a tenth of the loop's time at high concurrency.
        rx.await.unwrap_or(Err(ProposeError::Shutdown))
    }

    /// Resolves once this node's state machine of `group` may be read with
    /// the given consistency.
    pub async fn read(&self, group: GroupId, consistency: Consistency) -> Result<(), ReadError> {
        self.read_with(group, consistency, |_| ()).await
    }

    /// Runs `query` against this node's state machine of `group` once it
    /// may be read with the given consistency, and returns its result.
    pub async fn read_with<R, Q>(
        &self,
        group: GroupId,
        consistency: Consistency,
        query: Q,
    ) -> Result<R, ReadError>
    where
        R: Send + 'static,
        Q: FnOnce(&S) -> R + Send + 'static,
    {
        let (result_tx, result_rx) = oneshot::channel();
        let (fail_tx, fail_rx) = oneshot::channel();
        let run: apply::ReadFn<S> = Box::new(move |sm: &S| {
            let _ = result_tx.send(query(sm));
        });
        self.tx
            .send(Cmd::Read(group, consistency, run, fail_tx))
            .map_err(|_| ReadError::Shutdown)?;
        let wait = async {
            // The loop answers a read it cannot serve by sending the reason
            // on `fail_tx` and dropping `run`, which closes `result_rx` at
            // the same moment. So the result decides, and only once it is
            // known that the closure will never run does the failure channel
            // say why: it resolves as soon as the loop has let go of
            // `fail_tx`, with the reason, or without one when the read was
            // dropped unanswered (the node stopped). Waiting on both at once
            // (an unbiased select) would let the closed result win about
            // half the time and turn a refused read into `Shutdown` on a
            // running node.
            match result_rx.await {
                Ok(value) => Ok(value),
                Err(_) => Err(fail_rx.await.unwrap_or(ReadError::Shutdown)),
            }
        };
        tokio::time::timeout(self.config.read_timeout, wait)
            .await
            .unwrap_or(Err(ReadError::Timeout))
    }

    /// Whether this node leads `group`.
    pub fn is_leader(&self, group: GroupId) -> bool {
        self.status(group)
            .is_some_and(|(role, _)| role == Role::Leader)
    }

    /// The leader of `group` as this node knows it.
    pub fn leader(&self, group: GroupId) -> Option<NodeId> {
        self.status(group).and_then(|(_, leader)| leader)
    }

    fn status(&self, group: GroupId) -> Option<(Role, Option<NodeId>)> {
        let status = self.shared.status.read().unwrap_or_else(|e| e.into_inner());
        status.get(&group).copied()
    }

    /// Groups this node hosts.
    pub fn groups(&self) -> Vec<GroupId> {
        let status = self.shared.status.read().unwrap_or_else(|e| e.into_inner());
        status.keys().copied().collect()
    }

    /// Waits until `group` has a known leader (this node or another).
    pub async fn wait_for_leader(
        &self,
        group: GroupId,
        timeout: Duration,
    ) -> Result<NodeId, ReadError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(leader) = self.leader(group) {
                return Ok(leader);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ReadError::Timeout);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Changes the membership of `group` (this node must lead it). Resolves
    /// once the change is committed (and, for a joint change, the joint
    /// configuration has been left).
    pub async fn change_membership(
        &self,
        group: GroupId,
        change: MembershipChange,
    ) -> Result<(), AdminError> {
        self.ask(|reply| Cmd::Change(group, change, reply)).await?
    }

    /// Hands leadership of `group` to `target`, or with `None` to the most
    /// caught-up voter; returns the target. Resolves when the transfer
    /// starts; watch [`leader`](Self::leader) or the events for its end.
    pub async fn transfer_leader(
        &self,
        group: GroupId,
        target: Option<NodeId>,
    ) -> Result<NodeId, AdminError> {
        self.ask(|reply| Cmd::Transfer(group, target, reply))
            .await?
    }

    /// Asks `group`'s state machine for a snapshot now (then compacts the
    /// log); returns whether one was started.
    pub async fn trigger_snapshot(&self, group: GroupId) -> Result<bool, AdminError> {
        self.ask(|reply| Cmd::TriggerSnapshot(group, reply)).await?
    }

    /// Starts hosting a new group with these initial voters (empty to join
    /// an existing group as a future learner).
    pub async fn create_group(
        &self,
        group: GroupId,
        voters: Vec<NodeId>,
    ) -> Result<(), AdminError> {
        self.ask(|reply| Cmd::CreateGroup(group, voters, reply))
            .await?
    }

    /// Stops hosting a group (its stored log stays in the log store).
    pub async fn remove_group(&self, group: GroupId) -> Result<(), AdminError> {
        self.ask(|reply| Cmd::RemoveGroup(group, reply)).await?
    }

    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Current metrics of the node and its groups.
    pub async fn metrics(&self) -> Result<Metrics, AdminError> {
        self.ask(Cmd::Metrics).await
    }

    /// Learns peers from `discovery` (now and as they change) and tells
    /// the transport. Peers discovered without a node id (DNS A/AAAA
    /// records) go to [`Transport::add_address`], which learns the id in the
    /// transport handshake; a transport that cannot do that is logged and
    /// the peer skipped.
    pub async fn attach_discovery<D, T>(
        &self,
        discovery: &D,
        transport: Arc<T>,
    ) -> Result<(), raft_api::DiscoveryError>
    where
        D: Discovery,
        T: Transport,
    {
        for peer in discovery.peers().await? {
            learn_peer(transport.as_ref(), peer);
        }
        discovery.watch(Box::new(move |change| match change {
            PeerChange::Up(peer) => learn_peer(transport.as_ref(), peer),
            PeerChange::Down(peer) => match peer.id {
                Some(id) => transport.remove_peer(id),
                None => transport.remove_address(&peer.address),
            },
        }));
        Ok(())
    }

    /// Stops the node: flushes what is staged, stops every group's apply
    /// task and the consensus loop. Requests made afterwards fail with
    /// `Shutdown`. Safe to call more than once.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Cmd::Shutdown(reply)).is_ok() {
            let _ = rx.await;
        }
        if let Some(handle) = self.done.lock().await.take() {
            let _ = handle.await;
        }
    }

    async fn ask<R>(
        &self,
        make: impl FnOnce(oneshot::Sender<R>) -> Cmd<S>,
    ) -> Result<R, AdminError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .map_err(|_| AdminError::Shutdown)?;
        rx.await.map_err(|_| AdminError::Shutdown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbox(capacity: usize) -> (NodeInbox<()>, mpsc::UnboundedReceiver<Cmd<()>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            status: RwLock::new(BTreeMap::new()),
            inbound_dropped: AtomicU64::new(0),
            inbound_queued: AtomicUsize::new(0),
        });
        (
            NodeInbox {
                tx,
                shared,
                capacity,
            },
            rx,
        )
    }

    fn dropped(inbox: &NodeInbox<()>) -> u64 {
        inbox.shared.inbound_dropped.load(Ordering::Relaxed)
    }

    #[test]
    fn inbox_drops_batches_beyond_its_capacity_until_the_loop_takes_some() {
        let (inbox, mut rx) = inbox(2);
        for _ in 0..3 {
            inbox.deliver(NodeId(2), Vec::new());
        }
        assert_eq!(dropped(&inbox), 1, "the third batch found the queue full");
        // The loop takes one: there is room for one more, not two.
        assert!(matches!(rx.try_recv(), Ok(Cmd::Inbound(NodeId(2), _))));
        inbox.shared.inbound_taken();
        inbox.deliver(NodeId(3), Vec::new());
        inbox.deliver(NodeId(3), Vec::new());
        assert_eq!(dropped(&inbox), 2);
        let mut from = Vec::new();
        while let Ok(Cmd::Inbound(node, _)) = rx.try_recv() {
            from.push(node.0);
        }
        assert_eq!(from, [2, 3]);
    }

    #[test]
    fn inbox_counts_batches_for_a_stopped_loop_as_dropped() {
        let (inbox, rx) = inbox(8);
        drop(rx);
        inbox.deliver(NodeId(2), Vec::new());
        assert_eq!(dropped(&inbox), 1);
        assert_eq!(inbox.shared.inbound_queued.load(Ordering::Relaxed), 0);
    }
}
