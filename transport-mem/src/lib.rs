//! An in-process [`Transport`] for running several Raft nodes in one process
//! (tests, benchmarks, demos), with fault hooks.
//!
//! A [`MemNetwork`] is the hub: it knows the inbox of every started node and
//! the current faults. [`MemNetwork::transport`] hands out one
//! [`MemTransport`] per node; [`Transport::send`] on it hands the batch to
//! the receiver's [`Inbox`] — at once when no delay is configured, or after
//! the delay through one FIFO queue per directed link, so the batches from
//! one node to another always arrive in the order they were sent.
//!
//! Faults take effect at once and can be changed from a test while the nodes
//! run: [`partition`](MemNetwork::partition), one-way
//! [`cut`](MemNetwork::cut), [`isolate`](MemNetwork::isolate),
//! [`heal`](MemNetwork::heal), random loss
//! ([`set_drop_rate`](MemNetwork::set_drop_rate), reproducible with
//! [`set_seed`](MemNetwork::set_seed)), random delays
//! ([`set_delay`](MemNetwork::set_delay)) and
//! [`pause`](MemNetwork::pause)/[`resume`](MemNetwork::resume). Counters
//! ([`delivered`](MemNetwork::delivered), [`dropped`](MemNetwork::dropped),
//! [`sent_between`](MemNetwork::sent_between)) tell what happened.
//!
//! # Runtime
//!
//! Without a delay, `send` calls the receiver's [`Inbox::deliver`] directly
//! and needs no async runtime. Once a delay is set, `send` spawns one tokio
//! task per directed link, so it must be called inside a tokio runtime
//! (with the time driver enabled); outside one it returns
//! [`TransportError::Other`]. `send` never blocks and never awaits.
//!
//! # Example
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//!
//! use raft_api::{Envelope, GroupId, Inbox, Message, NodeId, Term, Transport};
//! use transport_mem::MemNetwork;
//!
//! /// Collects whatever arrives.
//! #[derive(Default)]
//! struct Collect(Mutex<Vec<(NodeId, Vec<Envelope>)>>);
//!
//! impl Inbox for Collect {
//!     fn deliver(&self, from: NodeId, batch: Vec<Envelope>) {
//!         self.0.lock().unwrap().push((from, batch));
//!     }
//! }
//!
//! let envelope = |from, to, term| Envelope {
//!     group: GroupId(1),
//!     from: NodeId(from),
//!     to: NodeId(to),
//!     term: Term(term),
//!     msg: Message::TimeoutNow,
//! };
//!
//! let runtime = tokio::runtime::Builder::new_current_thread()
//!     .enable_time()
//!     .build()?;
//! runtime.block_on(async {
//!     let network = MemNetwork::new();
//!     let (n1, n2) = (network.transport(NodeId(1)), network.transport(NodeId(2)));
//!     let inbox = Arc::new(Collect::default());
//!     n2.start(inbox.clone()).await?;
//!
//!     // Without a delay the batch is delivered before `send` returns.
//!     n1.send(NodeId(2), vec![envelope(1, 2, 1)])?;
//!     assert_eq!(inbox.0.lock().unwrap().len(), 1);
//!
//!     // Across a partition it is dropped.
//!     network.partition(&[&[NodeId(1)], &[NodeId(2)]]);
//!     n1.send(NodeId(2), vec![envelope(1, 2, 2)])?;
//!     assert_eq!(network.dropped(), 1);
//!     network.heal();
//!
//!     // With a delay it arrives later, in order.
//!     network.set_delay(Duration::from_millis(1), Duration::from_millis(5));
//!     n1.send(NodeId(2), vec![envelope(1, 2, 3)])?;
//!     n1.send(NodeId(2), vec![envelope(1, 2, 4)])?;
//!     tokio::time::sleep(Duration::from_millis(50)).await;
//!     let terms: Vec<u64> = inbox.0.lock().unwrap().iter().map(|(_, b)| b[0].term.0).collect();
//!     assert_eq!(terms, [1, 3, 4]);
//!     assert_eq!(network.delivered(), 3);
//!     assert_eq!(network.sent_between(NodeId(1), NodeId(2)), 3);
//!     Ok::<(), raft_api::TransportError>(())
//! })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use raft_api::{Envelope, Inbox, NodeId, Transport, TransportError};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Seed of the random source until [`MemNetwork::set_seed`] is called.
const DEFAULT_SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// The hub of an in-process network: the inboxes of the started nodes, the
/// faults and the counters.
///
/// Cloning is cheap and every clone is a handle to the same network, so a
/// test can keep one to inject faults while the nodes run. Every method
/// takes effect at once and may be called from any thread.
///
/// Faults that block a link (partitions, cuts, isolation, pauses) are checked
/// both when a batch is sent and when it is delivered, so they also drop
/// batches that are still delayed in flight. Random loss is decided once,
/// when a batch is sent.
#[derive(Clone, Default)]
pub struct MemNetwork {
    inner: Arc<Inner>,
}

/// A node's end of a [`MemNetwork`], implementing [`Transport`].
///
/// Made by [`MemNetwork::transport`]. Dropping it unregisters the inbox it
/// registered, unless a newer transport of the same node has registered one
/// since (a restarted node), so a stopped node receives nothing more.
pub struct MemTransport {
    id: NodeId,
    network: Arc<Inner>,
    /// Addresses given to [`Transport::add_peer`]; kept for completeness,
    /// they mean nothing in-process.
    peers: Mutex<HashMap<NodeId, String>>,
    /// Peers given to [`Transport::remove_peer`] and not added again since:
    /// batches for them are dropped.
    removed: Mutex<HashSet<NodeId>>,
    /// Generation of the inbox this transport registered last, if any.
    registered: Mutex<Option<u64>>,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    delivered: AtomicU64,
    dropped: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Every node a transport was made for.
    known: HashSet<NodeId>,
    /// The inbox of every started node, with the generation of its start.
    inboxes: HashMap<NodeId, Registration>,
    /// Counts the starts, to tell registrations apart.
    generation: u64,
    /// Side of each node in the current partition.
    sides: HashMap<NodeId, usize>,
    /// One-way cuts `(from, to)`.
    cuts: HashSet<(NodeId, NodeId)>,
    /// Nodes cut from everyone else both ways.
    isolated: HashSet<NodeId>,
    /// Nodes that neither send nor receive.
    paused: HashSet<NodeId>,
    /// Probability of loss, in thousandths.
    drop_per_mille: u32,
    /// Range of the per-batch delay.
    delay: (Duration, Duration),
    rng: XorShift,
    /// Delivery queue and task of each directed link that needed one.
    links: HashMap<(NodeId, NodeId), Link>,
    /// Batches accepted for delivery on each directed link.
    sent: HashMap<(NodeId, NodeId), u64>,
}

struct Registration {
    generation: u64,
    inbox: Arc<dyn Inbox>,
}

/// The FIFO queue of one directed link, drained by one task.
struct Link {
    queue: mpsc::UnboundedSender<Queued>,
    /// Batches queued and not yet handed over (delivered or dropped).
    pending: Arc<AtomicUsize>,
}

struct Queued {
    deliver_at: Instant,
    batch: Vec<Envelope>,
}

/// A xorshift64* generator: small, fast and reproducible.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        // Zero is the one state xorshift never leaves.
        Self(if seed == 0 { DEFAULT_SEED } else { seed })
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..bound` (`bound > 0`); the tiny modulo bias does not
    /// matter here.
    fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }
}

impl Default for XorShift {
    fn default() -> Self {
        Self::new(DEFAULT_SEED)
    }
}

impl State {
    /// Whether a fault other than random loss blocks the link `from -> to`.
    fn blocked(&self, from: NodeId, to: NodeId) -> bool {
        if self.paused.contains(&from) || self.paused.contains(&to) {
            return true;
        }
        if self.cuts.contains(&(from, to)) {
            return true;
        }
        if from == to {
            return false;
        }
        if self.isolated.contains(&from) || self.isolated.contains(&to) {
            return true;
        }
        matches!(
            (self.sides.get(&from), self.sides.get(&to)),
            (Some(a), Some(b)) if a != b
        )
    }

    /// Draws the delay of one batch.
    fn draw_delay(&mut self) -> Duration {
        let (min, max) = self.delay;
        let spread = max.saturating_sub(min).as_nanos();
        if spread == 0 {
            return min;
        }
        let spread = u64::try_from(spread).unwrap_or(u64::MAX - 1);
        min + Duration::from_nanos(self.rng.below(spread + 1))
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere (a failing test) must not hide the network.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn count_drop(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Hands a batch on `from -> to` over to the receiver's inbox, unless the
    /// link is blocked now or the receiver is not started.
    fn deliver(&self, from: NodeId, to: NodeId, batch: Vec<Envelope>) {
        let inbox = {
            let state = self.state();
            if state.blocked(from, to) {
                None
            } else {
                state.inboxes.get(&to).map(|r| Arc::clone(&r.inbox))
            }
        };
        match inbox {
            Some(inbox) => {
                inbox.deliver(from, batch);
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            None => self.count_drop(),
        }
    }
}

/// Drains the queue of the link `from -> to` in order, each batch at its
/// time. Holds the network only weakly: when the network is gone, its
/// senders are too and the task ends.
async fn run_link(
    network: Weak<Inner>,
    from: NodeId,
    to: NodeId,
    mut queue: mpsc::UnboundedReceiver<Queued>,
    pending: Arc<AtomicUsize>,
) {
    while let Some(Queued { deliver_at, batch }) = queue.recv().await {
        tokio::time::sleep_until(deliver_at).await;
        let Some(network) = network.upgrade() else {
            return;
        };
        network.deliver(from, to, batch);
        // Only after the hand-over, so that an undelayed send cannot
        // overtake this batch.
        pending.fetch_sub(1, Ordering::AcqRel);
    }
}

impl MemNetwork {
    /// Creates a network without nodes or faults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the transport of node `id`. A node that restarts gets a new
    /// transport; its [`start`](Transport::start) replaces the inbox of the
    /// earlier one.
    ///
    /// From now on `id` is a known node: sending to it succeeds even while
    /// it is not started (the batch is dropped, as for a node that is down).
    pub fn transport(&self, id: NodeId) -> MemTransport {
        self.inner.state().known.insert(id);
        MemTransport {
            id,
            network: Arc::clone(&self.inner),
            peers: Mutex::default(),
            removed: Mutex::default(),
            registered: Mutex::new(None),
        }
    }

    /// Splits the network: batches between nodes of different sides are
    /// dropped. Nodes listed in no side are in no side and still reach, and
    /// are reached by, everyone. Replaces an earlier partition (cuts and
    /// isolation stay); a node listed in several sides belongs to the last.
    pub fn partition(&self, sides: &[&[NodeId]]) {
        let mut state = self.inner.state();
        state.sides.clear();
        for (side, nodes) in sides.iter().enumerate() {
            for &node in *nodes {
                state.sides.insert(node, side);
            }
        }
    }

    /// Removes the partition, every one-way cut and every isolation. Pauses
    /// stay (see [`resume`](Self::resume)).
    pub fn heal(&self) {
        let mut state = self.inner.state();
        state.sides.clear();
        state.cuts.clear();
        state.isolated.clear();
    }

    /// Cuts the link from `from` to `to` one way: batches `from -> to` are
    /// dropped, batches `to -> from` still arrive. Undone by
    /// [`heal`](Self::heal).
    pub fn cut(&self, from: NodeId, to: NodeId) {
        self.inner.state().cuts.insert((from, to));
    }

    /// Cuts `node` from every other node both ways. Undone by
    /// [`heal`](Self::heal).
    pub fn isolate(&self, node: NodeId) {
        self.inner.state().isolated.insert(node);
    }

    /// Drops each batch with probability `per_mille / 1000` (values above
    /// 1000 count as 1000): 0 drops nothing, 1000 drops everything. The
    /// draws come from the generator seeded by [`set_seed`](Self::set_seed).
    pub fn set_drop_rate(&self, per_mille: u32) {
        self.inner.state().drop_per_mille = per_mille.min(1000);
    }

    /// Reseeds the generator behind random loss and random delays. The same
    /// seed and the same sequence of sends (from one thread) give the same
    /// losses and delays: a send draws one number when the drop rate is
    /// neither 0 nor 1000, and one more when the delay range is not a single
    /// value. A seed of 0 is replaced by a fixed non-zero one.
    pub fn set_seed(&self, seed: u64) {
        self.inner.state().rng = XorShift::new(seed);
    }

    /// Delays each batch by a random duration in `min..=max` (a `max` below
    /// `min` counts as `min`); `Duration::ZERO` for both turns delays off.
    ///
    /// Batches on one link still arrive in the order sent: a batch never
    /// overtakes an earlier one, so it may wait longer than its own delay.
    /// While delays are set, [`Transport::send`] must be called inside a
    /// tokio runtime with the time driver enabled.
    pub fn set_delay(&self, min: Duration, max: Duration) {
        self.inner.state().delay = (min, max.max(min));
    }

    /// Makes `node` unavailable (as if stopped with SIGSTOP): batches from
    /// or to it are dropped, including those already in flight, until
    /// [`resume`](Self::resume).
    pub fn pause(&self, node: NodeId) {
        self.inner.state().paused.insert(node);
    }

    /// Undoes [`pause`](Self::pause).
    pub fn resume(&self, node: NodeId) {
        self.inner.state().paused.remove(&node);
    }

    /// Batches handed to an inbox so far.
    pub fn delivered(&self) -> u64 {
        self.inner.delivered.load(Ordering::Relaxed)
    }

    /// Batches dropped so far: by a fault, by random loss, because the
    /// sender removed the peer, or because the receiver was not started when
    /// the batch was due. Sends that return an error are not counted.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Batches accepted for delivery on the link `from -> to`: sent, and not
    /// dropped by a fault or random loss at the time of sending. (They may
    /// still be dropped later if a fault appears while they are delayed or
    /// the receiver is not started.) Useful to check that an idle group
    /// sends nothing.
    pub fn sent_between(&self, from: NodeId, to: NodeId) -> u64 {
        self.inner
            .state()
            .sent
            .get(&(from, to))
            .copied()
            .unwrap_or(0)
    }

    /// Sets [`delivered`](Self::delivered), [`dropped`](Self::dropped) and
    /// every [`sent_between`](Self::sent_between) back to zero.
    pub fn reset_counters(&self) {
        let mut state = self.inner.state();
        state.sent.clear();
        self.inner.delivered.store(0, Ordering::Relaxed);
        self.inner.dropped.store(0, Ordering::Relaxed);
    }

    /// Whether `node` has a registered inbox: it was started and its
    /// transport not dropped since.
    pub fn is_started(&self, node: NodeId) -> bool {
        self.inner.state().inboxes.contains_key(&node)
    }
}

impl fmt::Debug for MemNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state();
        f.debug_struct("MemNetwork")
            .field("started", &state.inboxes.len())
            .field("delivered", &self.delivered())
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl MemTransport {
    /// The node this transport belongs to.
    pub fn id(&self) -> NodeId {
        self.id
    }

    fn send_inner(&self, to: NodeId, batch: Vec<Envelope>) -> Result<(), TransportError> {
        let from = self.id;
        if lock(&self.removed).contains(&to) {
            self.network.count_drop();
            return Ok(());
        }
        let mut state = self.network.state();
        if !state.known.contains(&to) {
            return Err(TransportError::UnknownPeer(to));
        }
        if state.blocked(from, to) {
            drop(state);
            self.network.count_drop();
            return Ok(());
        }
        let rate = state.drop_per_mille;
        if rate >= 1000 || (rate > 0 && state.rng.below(1000) < u64::from(rate)) {
            drop(state);
            self.network.count_drop();
            return Ok(());
        }
        let delay = state.draw_delay();
        let link_busy = state
            .links
            .get(&(from, to))
            .is_some_and(|link| link.pending.load(Ordering::Acquire) > 0);

        if delay.is_zero() && !link_busy {
            *state.sent.entry((from, to)).or_default() += 1;
            let inbox = state.inboxes.get(&to).map(|r| Arc::clone(&r.inbox));
            drop(state);
            match inbox {
                Some(inbox) => {
                    inbox.deliver(from, batch);
                    self.network.delivered.fetch_add(1, Ordering::Relaxed);
                }
                None => self.network.count_drop(),
            }
            return Ok(());
        }

        let deliver_at = Instant::now() + delay;
        let alive = state
            .links
            .get(&(from, to))
            .is_some_and(|link| !link.queue.is_closed());
        if !alive {
            // No link yet, or its task died with an earlier runtime.
            let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
                TransportError::Other(
                    "MemTransport::send with a delay set must run inside a tokio runtime".into(),
                )
            })?;
            let (queue, receiver) = mpsc::unbounded_channel();
            let pending = Arc::new(AtomicUsize::new(0));
            runtime.spawn(run_link(
                Arc::downgrade(&self.network),
                from,
                to,
                receiver,
                Arc::clone(&pending),
            ));
            state.links.insert((from, to), Link { queue, pending });
        }
        let link = &state.links[&(from, to)];
        link.pending.fetch_add(1, Ordering::AcqRel);
        if link.queue.send(Queued { deliver_at, batch }).is_err() {
            // The task is gone (its runtime shut down): nothing will deliver.
            link.pending.fetch_sub(1, Ordering::AcqRel);
            drop(state);
            self.network.count_drop();
            return Ok(());
        }
        *state.sent.entry((from, to)).or_default() += 1;
        Ok(())
    }
}

impl Transport for MemTransport {
    /// Registers `inbox` as where batches for this node go, replacing any
    /// earlier inbox of the node (a restart). Never fails.
    async fn start(&self, inbox: Arc<dyn Inbox>) -> Result<(), TransportError> {
        let mut state = self.network.state();
        state.generation += 1;
        let generation = state.generation;
        state
            .inboxes
            .insert(self.id, Registration { generation, inbox });
        *lock(&self.registered) = Some(generation);
        Ok(())
    }

    /// Applies the faults, then hands the batch to the receiver's inbox at
    /// once (no delay set) or queues it on the link's delivery task.
    ///
    /// Returns `Ok` when the batch is dropped (by a fault, by random loss,
    /// because `to` was removed with [`remove_peer`](Transport::remove_peer)
    /// or is not started), since Raft tolerates loss. Errors:
    /// [`TransportError::UnknownPeer`] when no transport was ever made for
    /// `to` on this network (like a real transport with no address for it),
    /// and [`TransportError::Other`] when a delay is set and the caller is
    /// not inside a tokio runtime.
    fn send(&self, to: NodeId, batch: Vec<Envelope>) -> Result<(), TransportError> {
        self.send_inner(to, batch)
    }

    /// Records the address (meaningless in-process) and undoes an earlier
    /// [`remove_peer`](Transport::remove_peer).
    fn add_peer(&self, id: NodeId, address: String) {
        lock(&self.removed).remove(&id);
        lock(&self.peers).insert(id, address);
    }

    /// Forgets the peer: later batches for it are dropped until it is
    /// added again. Batches already in flight still arrive.
    fn remove_peer(&self, id: NodeId) {
        lock(&self.peers).remove(&id);
        lock(&self.removed).insert(id);
    }
}

impl Drop for MemTransport {
    fn drop(&mut self) {
        let Some(generation) = *lock(&self.registered) else {
            return;
        };
        let mut state = self.network.state();
        if state
            .inboxes
            .get(&self.id)
            .is_some_and(|r| r.generation == generation)
        {
            state.inboxes.remove(&self.id);
        }
    }
}

impl fmt::Debug for MemTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemTransport")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests;
