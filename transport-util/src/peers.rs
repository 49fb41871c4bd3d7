//! The peer table of a network transport: the address of each peer, its
//! writer (queue and task), whatever else the transport keeps per peer,
//! and the addresses given without a node id whose probes learn the id
//! from the handshake.
//!
//! ```text
//!  add_peer(id, addr) ──► peers[id] = address (watch) + writer (started by the first send)
//!  send(id, batch) ─────► peers[id].writer.queue (bounded; full: dropped)
//!  add_address(addr) ───► addresses[addr] = probe task ──learn(ticket, id)──► peers[id]
//!  remove_address(addr) ► probe aborted; the peer learned from it forgotten
//! ```
//!
//! The table does no I/O: the transport spawns writers and probes with the
//! closures it passes. A writer reads its peer's address from a
//! [`watch::Receiver`] at each connection attempt, so an address change
//! reaches it without a lock. A peer may also be known without an address
//! (a transport that keeps peers that connected to it, see
//! [`PeerTable::with_peer_or_insert`]); it is then no target for
//! [`PeerTable::send`].

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use raft_api::{Envelope, NodeId, TransportError};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// What a transport keeps per peer to send to it: a bounded queue drained
/// by a task that owns the connection. Dropping the writer must stop the
/// task.
pub trait PeerWriter: Send + 'static {
    /// The queue the writer's task reads batches from.
    fn queue(&self) -> &mpsc::Sender<Vec<Envelope>>;

    /// Batches waiting in the queue.
    fn queued(&self) -> usize {
        let queue = self.queue();
        queue.max_capacity() - queue.capacity()
    }

    /// Whether the writer still works; one that does not is replaced when
    /// needed. The default: its queue is still read.
    fn is_running(&self) -> bool {
        !self.queue().is_closed()
    }
}

/// A writer's view of its peer's address: `None` while the peer has none
/// (known only because it connected), a new value when it changes, closed
/// when the peer is forgotten.
pub type AddressWatch = watch::Receiver<Option<String>>;

/// What became of a batch given to [`PeerTable::send`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queued {
    /// On the peer's queue.
    Queued,
    /// Dropped: the peer's queue was full.
    Full,
    /// Dropped: no writer would take it (its task had ended twice).
    Unsendable,
}

/// What [`PeerTable::learn`] did with a node id learned from an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learned {
    /// The id is this node's own: ignored.
    Own,
    /// A new peer, added with the address.
    Added,
    /// An already known peer: its address was set as by
    /// [`add_peer`](PeerTable::add_peer).
    Known,
    /// The address was removed (or the table drained) meanwhile: nothing
    /// was learned.
    Withdrawn,
}

/// Held by the probe of an address given to
/// [`PeerTable::add_address`]; [`PeerTable::learn`] accepts it only while
/// that registration stands (not after `remove_address`, nor from a probe
/// of an earlier registration of the same address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressTicket {
    address: String,
    ticket: u64,
}

impl AddressTicket {
    /// The address being probed.
    pub fn address(&self) -> &str {
        &self.address
    }
}

/// Everything [`PeerTable::drain`] took out, for the transport to stop
/// and await in the order it needs.
#[derive(Debug)]
pub struct Drained<W, S> {
    /// The writers of every peer.
    pub writers: Vec<W>,
    /// The state of every peer.
    pub states: Vec<S>,
    /// The probe tasks of every address still registered.
    pub probes: Vec<JoinHandle<()>>,
}

/// One peer in a [`PeerTable`]: its address, its writer, and `state`,
/// whatever else the transport keeps for it. Reached through
/// [`PeerTable::with_peer`] and the closures of
/// [`PeerTable::learn`]. When the peer is forgotten its writer is dropped
/// first, then its state.
pub struct Peer<W, S = ()> {
    id: NodeId,
    writer: Option<W>,
    /// Whatever else the transport keeps per peer (for example its open
    /// connections).
    pub state: S,
    address: watch::Sender<Option<String>>,
    /// The registered address this peer was learned from; `None` for a
    /// peer given by `add_peer` (or known because it connected), which
    /// `remove_address` leaves alone.
    learned_via: Option<String>,
}

impl<W: PeerWriter, S> Peer<W, S> {
    fn new(id: NodeId, address: Option<String>, state: S) -> Self {
        Self {
            id,
            writer: None,
            state,
            address: watch::channel(address).0,
            learned_via: None,
        }
    }

    /// The peer's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The peer's address, if it has one.
    pub fn address(&self) -> Option<String> {
        self.address.borrow().clone()
    }

    /// A new receiver of the peer's address.
    pub fn watch_address(&self) -> AddressWatch {
        self.address.subscribe()
    }

    /// The writer, if one was started (running or not).
    pub fn writer(&self) -> Option<&W> {
        self.writer.as_ref()
    }

    /// The writer, started with `spawn` (given the peer's id, a receiver
    /// of its address and its state) if there is none or it stopped
    /// running.
    pub fn running_writer<E>(
        &mut self,
        spawn: impl FnOnce(NodeId, AddressWatch, &S) -> Result<W, E>,
    ) -> Result<&W, E> {
        let writer = match self.writer.take() {
            Some(writer) if writer.is_running() => writer,
            stopped => {
                // The old writer goes before the new one starts.
                drop(stopped);
                spawn(self.id, self.address.subscribe(), &self.state)?
            }
        };
        Ok(self.writer.insert(writer))
    }

    /// Sets the address; returns whether it changed (and so whether the
    /// writer was told).
    fn set_address(&self, address: String) -> bool {
        self.address.send_if_modified(|current| {
            let changed = current.as_deref() != Some(address.as_str());
            if changed {
                *current = Some(address);
            }
            changed
        })
    }
}

/// The peers of a transport and the addresses it probes, behind one lock.
/// `W` is the transport's writer, `S` whatever else it keeps per peer
/// (`()` for nothing). Shared between the transport and its probe tasks
/// (put it in an `Arc`). The closures given to its methods run under its
/// lock: they must not call the table.
pub struct PeerTable<W, S = ()> {
    node: NodeId,
    inner: Mutex<Inner<W, S>>,
}

struct Inner<W, S> {
    peers: HashMap<NodeId, Peer<W, S>>,
    addresses: HashMap<String, Probe>,
    next_ticket: u64,
}

/// An address given without a node id.
struct Probe {
    ticket: u64,
    /// The task trying to learn the id; aborted when the entry goes.
    task: Option<JoinHandle<()>>,
    /// The id learned, this node's own included.
    learned: Option<NodeId>,
}

impl Drop for Probe {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl<W: PeerWriter, S: Default> PeerTable<W, S> {
    /// An empty table for the transport of `node` (ids learned that are
    /// `node` are ignored).
    pub fn new(node: NodeId) -> Self {
        Self {
            node,
            inner: Mutex::new(Inner {
                peers: HashMap::new(),
                addresses: HashMap::new(),
                next_ticket: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<W, S>> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets the address of `id` (for `Transport::add_peer`). A changed
    /// address reaches the peer's writer through its watch, which should
    /// close the connection and reconnect. The peer counts as given
    /// explicitly from then on: `remove_address` leaves it alone. Returns
    /// whether the peer was new or its address changed.
    pub fn add_peer(&self, id: NodeId, address: String) -> bool {
        let mut inner = self.lock();
        match inner.peers.get_mut(&id) {
            Some(peer) => {
                peer.learned_via = None;
                peer.set_address(address)
            }
            None => {
                inner
                    .peers
                    .insert(id, Peer::new(id, Some(address), S::default()));
                true
            }
        }
    }

    /// Forgets `id`, dropping its writer then its state (for
    /// `Transport::remove_peer`). Returns whether it was known.
    pub fn remove_peer(&self, id: NodeId) -> bool {
        let removed = self.lock().peers.remove(&id);
        // Dropped (its tasks stopped) outside the lock.
        removed.is_some()
    }

    /// Whether `id` is a peer (with or without an address).
    pub fn contains(&self, id: NodeId) -> bool {
        self.lock().peers.contains_key(&id)
    }

    /// The address of `id`, if it is a peer with one.
    pub fn address(&self, id: NodeId) -> Option<String> {
        self.lock().peers.get(&id).and_then(Peer::address)
    }

    /// Batches waiting in the queue of `id` (0 for a peer never sent to or
    /// unknown).
    pub fn queued(&self, id: NodeId) -> usize {
        self.lock()
            .peers
            .get(&id)
            .and_then(Peer::writer)
            .map_or(0, PeerWriter::queued)
    }

    /// Runs `f` on peer `id`, if known.
    pub fn with_peer<R>(&self, id: NodeId, f: impl FnOnce(&mut Peer<W, S>) -> R) -> Option<R> {
        self.lock().peers.get_mut(&id).map(f)
    }

    /// Runs `f` on peer `id`, adding it first without an address if it is
    /// unknown (for a transport that keeps the peers that connected to it:
    /// such a peer is no target for [`send`](Self::send) until it gets an
    /// address).
    pub fn with_peer_or_insert<R>(&self, id: NodeId, f: impl FnOnce(&mut Peer<W, S>) -> R) -> R {
        let mut inner = self.lock();
        let peer = inner
            .peers
            .entry(id)
            .or_insert_with(|| Peer::new(id, None, S::default()));
        f(peer)
    }

    /// Runs `f` on every peer; returns the sum of what it returns (for
    /// counts over all peers).
    pub fn sum(&self, mut f: impl FnMut(&Peer<W, S>) -> usize) -> usize {
        self.lock().peers.values().map(&mut f).sum()
    }

    /// Puts `batch` on the queue of `to` without waiting (for
    /// `Transport::send`), starting its writer with `spawn` (given the
    /// peer, a receiver of its address and its state) if it has none or it
    /// stopped running.
    ///
    /// Errors: [`TransportError::UnknownPeer`] when `to` is not a peer or
    /// has no address, and whatever `spawn` returns.
    pub fn send(
        &self,
        to: NodeId,
        batch: Vec<Envelope>,
        mut spawn: impl FnMut(NodeId, AddressWatch, &S) -> Result<W, TransportError>,
    ) -> Result<Queued, TransportError> {
        let mut inner = self.lock();
        let peer = inner
            .peers
            .get_mut(&to)
            .filter(|peer| peer.address.borrow().is_some())
            .ok_or(TransportError::UnknownPeer(to))?;
        let mut batch = batch;
        // Twice at most: a second time if the writer had died (it only ends
        // when its peer is dropped, but stay robust).
        for _ in 0..2 {
            let writer = peer.running_writer(&mut spawn)?;
            match writer.queue().try_send(batch) {
                Ok(()) => return Ok(Queued::Queued),
                Err(mpsc::error::TrySendError::Full(_)) => return Ok(Queued::Full),
                Err(mpsc::error::TrySendError::Closed(back)) => {
                    peer.writer = None;
                    batch = back;
                }
            }
        }
        Ok(Queued::Unsendable)
    }

    /// Registers `address` to learn its node id (for
    /// `Transport::add_address`): `start` spawns the probe task, which
    /// reports with [`learn`](Self::learn) and the ticket it is given.
    /// Returns `Ok(false)` without calling `start` if the address is
    /// already registered, and `start`'s error (nothing registered) if it
    /// fails.
    pub fn add_address(
        &self,
        address: String,
        start: impl FnOnce(AddressTicket) -> Result<JoinHandle<()>, TransportError>,
    ) -> Result<bool, TransportError> {
        let mut inner = self.lock();
        if inner.addresses.contains_key(&address) {
            return Ok(false);
        }
        inner.next_ticket += 1;
        let ticket = AddressTicket {
            address: address.clone(),
            ticket: inner.next_ticket,
        };
        // Spawning does not wait for the task, which takes this lock to
        // report: it waits until the entry is in place.
        let task = start(ticket.clone())?;
        inner.addresses.insert(
            address,
            Probe {
                ticket: ticket.ticket,
                task: Some(task),
                learned: None,
            },
        );
        Ok(true)
    }

    /// Reports that the address of `ticket` answered as node `id`. Unless
    /// the registration was withdrawn or `id` is this node's own, the peer
    /// is then added or updated as by [`add_peer`](Self::add_peer) with
    /// that address (but a peer given by `add_peer` stays so), remembered
    /// as learned from it, and handed to `f` (for example to start its
    /// writer on the connection the probe opened, with
    /// [`Peer::running_writer`], or to offer that connection to a running
    /// one). `f` is dropped unused otherwise.
    pub fn learn(
        &self,
        ticket: &AddressTicket,
        id: NodeId,
        f: impl FnOnce(&mut Peer<W, S>),
    ) -> Learned {
        let mut inner = self.lock();
        let Some(probe) = inner.addresses.get_mut(&ticket.address) else {
            return Learned::Withdrawn;
        };
        if probe.ticket != ticket.ticket {
            return Learned::Withdrawn;
        }
        probe.learned = Some(id);
        if id == self.node {
            return Learned::Own;
        }
        let address = ticket.address.clone();
        let learned = if inner.peers.contains_key(&id) {
            Learned::Known
        } else {
            Learned::Added
        };
        let peer = inner
            .peers
            .entry(id)
            .or_insert_with(|| Peer::new(id, None, S::default()));
        // A peer given by `add_peer` stays so; one that only connected, or
        // was learned from another address, is now learned from this one.
        let explicit = peer.learned_via.is_none() && peer.address.borrow().is_some();
        if !explicit {
            peer.learned_via = Some(address.clone());
        }
        peer.set_address(address);
        f(peer);
        learned
    }

    /// The node id learned from `address` so far (this node's own id when
    /// the address is this node's), if it is registered.
    pub fn learned(&self, address: &str) -> Option<NodeId> {
        self.lock().addresses.get(address).and_then(|p| p.learned)
    }

    /// Whether `address` is registered by [`add_address`](Self::add_address).
    pub fn has_address(&self, address: &str) -> bool {
        self.lock().addresses.contains_key(address)
    }

    /// Withdraws `address` (for `Transport::remove_address`): aborts its
    /// probe and forgets the peer learned from it, unless that peer was
    /// since given by [`add_peer`](Self::add_peer) or learned from another
    /// address. Returns the peer forgotten.
    pub fn remove_address(&self, address: &str) -> Option<NodeId> {
        let mut inner = self.lock();
        let probe = inner.addresses.remove(address)?;
        let id = probe.learned?;
        let learned_here = inner
            .peers
            .get(&id)
            .is_some_and(|p| p.learned_via.as_deref() == Some(address));
        if learned_here {
            let removed = inner.peers.remove(&id);
            drop(inner);
            drop(removed);
            Some(id)
        } else {
            None
        }
    }

    /// Takes every peer and address out of the table, for the transport to
    /// stop their tasks and wait for them (on shutdown).
    pub fn drain(&self) -> Drained<W, S> {
        let mut inner = self.lock();
        let mut writers = Vec::new();
        let mut states = Vec::new();
        for (_, peer) in inner.peers.drain() {
            let Peer { writer, state, .. } = peer;
            writers.extend(writer);
            states.push(state);
        }
        let probes = inner
            .addresses
            .drain()
            .filter_map(|(_, mut probe)| probe.task.take())
            .collect();
        Drained {
            writers,
            states,
            probes,
        }
    }

    /// Forgets every peer and address, stopping their tasks without
    /// waiting.
    pub fn clear(&self) {
        let (peers, addresses) = {
            let mut inner = self.lock();
            (
                std::mem::take(&mut inner.peers),
                std::mem::take(&mut inner.addresses),
            )
        };
        drop(peers);
        drop(addresses);
    }
}

impl<W, S> std::fmt::Debug for PeerTable<W, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut peers: Vec<NodeId> = inner.peers.keys().copied().collect();
        peers.sort();
        let mut addresses: Vec<&String> = inner.addresses.keys().collect();
        addresses.sort();
        f.debug_struct("PeerTable")
            .field("node", &self.node)
            .field("peers", &peers)
            .field("addresses", &addresses)
            .finish()
    }
}

impl<W, S> std::fmt::Debug for Peer<W, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("id", &self.id)
            .field("address", &*self.address.borrow())
            .field("writer", &self.writer.is_some())
            .field("learned_via", &self.learned_via)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex as StdMutex};

    use super::*;

    const ME: NodeId = NodeId(1);
    const N2: NodeId = NodeId(2);

    /// A writer whose queue nobody reads, with the receiving end kept so
    /// the queue stays open (or dropped to close it).
    struct TestWriter {
        queue: mpsc::Sender<Vec<Envelope>>,
        batches: Option<mpsc::Receiver<Vec<Envelope>>>,
        address: AddressWatch,
        /// Where to note that it was dropped.
        log: Option<Arc<StdMutex<Vec<&'static str>>>>,
    }

    impl PeerWriter for TestWriter {
        fn queue(&self) -> &mpsc::Sender<Vec<Envelope>> {
            &self.queue
        }
    }

    impl Drop for TestWriter {
        fn drop(&mut self) {
            if let Some(log) = &self.log {
                log.lock().unwrap().push("writer");
            }
        }
    }

    /// Per-peer state noting when it is dropped.
    #[derive(Default)]
    struct TestState {
        log: Option<Arc<StdMutex<Vec<&'static str>>>>,
    }

    impl Drop for TestState {
        fn drop(&mut self) {
            if let Some(log) = &self.log {
                log.lock().unwrap().push("state");
            }
        }
    }

    fn writer(capacity: usize, address: AddressWatch) -> TestWriter {
        let (queue, batches) = mpsc::channel(capacity);
        TestWriter {
            queue,
            batches: Some(batches),
            address,
            log: None,
        }
    }

    fn batch() -> Vec<Envelope> {
        vec![Envelope {
            group: raft_api::GroupId(1),
            from: ME,
            to: N2,
            term: raft_api::Term(1),
            msg: raft_api::Message::TimeoutNow,
        }]
    }

    fn idle_task() -> JoinHandle<()> {
        tokio::spawn(std::future::pending())
    }

    #[test]
    fn send_needs_a_known_peer_and_starts_one_writer() {
        let table = PeerTable::<TestWriter>::new(ME);
        let spawned = std::cell::Cell::new(0);
        let spawn = |_: NodeId, address, _: &()| {
            spawned.set(spawned.get() + 1);
            Ok(writer(2, address))
        };
        assert!(matches!(
            table.send(N2, batch(), spawn),
            Err(TransportError::UnknownPeer(N2))
        ));
        assert!(table.add_peer(N2, "a:1".into()));
        assert!(!table.add_peer(N2, "a:1".into()), "unchanged");
        assert_eq!(table.send(N2, batch(), spawn).unwrap(), Queued::Queued);
        assert_eq!(table.send(N2, batch(), spawn).unwrap(), Queued::Queued);
        assert_eq!(table.send(N2, batch(), spawn).unwrap(), Queued::Full);
        assert_eq!(spawned.get(), 1);
        assert_eq!(table.queued(N2), 2);
        assert!(table.remove_peer(N2));
        assert!(!table.contains(N2));
        assert_eq!(table.queued(N2), 0);
    }

    #[test]
    fn a_dead_writer_is_replaced_and_a_failed_spawn_is_an_error() {
        let table = PeerTable::<TestWriter>::new(ME);
        table.add_peer(N2, "a:1".into());
        let dead = |_: NodeId, address, _: &()| {
            let mut w = writer(2, address);
            w.batches = None;
            Ok(w)
        };
        assert_eq!(table.send(N2, batch(), dead).unwrap(), Queued::Unsendable);
        let failing = |_: NodeId, _, _: &()| Err(TransportError::Closed);
        assert!(matches!(
            table.send(N2, batch(), failing),
            Err(TransportError::Closed)
        ));
        assert_eq!(
            table.send(N2, batch(), |_, a, _| Ok(writer(1, a))).unwrap(),
            Queued::Queued
        );
    }

    #[test]
    fn a_changed_address_reaches_the_writer() {
        let table = PeerTable::<TestWriter>::new(ME);
        table.add_peer(N2, "a:1".into());
        let mut seen = None;
        table
            .send(N2, batch(), |_, address, _| {
                seen = Some(address.clone());
                Ok(writer(4, address))
            })
            .expect("sent");
        let mut seen = seen.expect("spawned");
        assert!(!seen.has_changed().expect("open"));
        assert!(table.add_peer(N2, "b:2".into()));
        assert!(seen.has_changed().expect("open"));
        assert_eq!(seen.borrow_and_update().as_deref(), Some("b:2"));
        assert_eq!(table.address(N2).as_deref(), Some("b:2"));
        table.remove_peer(N2);
        assert!(seen.has_changed().is_err(), "the writer sees the peer go");
    }

    #[test]
    fn a_peer_without_address_is_kept_but_not_sent_to() {
        let table = PeerTable::<TestWriter, usize>::new(ME);
        let id = table.with_peer_or_insert(N2, |peer| {
            peer.state += 1;
            peer.id()
        });
        assert_eq!(id, N2);
        assert!(table.contains(N2));
        assert_eq!(table.address(N2), None);
        assert!(matches!(
            table.send(N2, batch(), |_, a, _| Ok(writer(1, a))),
            Err(TransportError::UnknownPeer(N2))
        ));
        // Its writer may still be started (for a connection it opened).
        table.with_peer(N2, |peer| {
            let started = peer.running_writer(|_, a, state: &usize| {
                assert_eq!(*state, 1);
                Ok::<_, TransportError>(writer(1, a))
            });
            assert!(started.is_ok());
        });
        assert_eq!(table.sum(|peer| peer.state), 1);
        table.add_peer(N2, "a:1".into());
        assert_eq!(
            table
                .send(N2, batch(), |_, _, _| panic!("it has a writer"))
                .unwrap(),
            Queued::Queued
        );
        assert_eq!(table.with_peer(NodeId(9), |_| ()), None);
    }

    #[test]
    fn a_forgotten_peer_drops_its_writer_then_its_state() {
        let log = Arc::new(StdMutex::new(Vec::new()));
        let table = PeerTable::<TestWriter, TestState>::new(ME);
        table.add_peer(N2, "a:1".into());
        table.with_peer(N2, |peer| peer.state.log = Some(Arc::clone(&log)));
        table
            .send(N2, batch(), |_, a, state| {
                let mut w = writer(1, a);
                w.log = state.log.clone();
                Ok(w)
            })
            .expect("sent");
        table.remove_peer(N2);
        assert_eq!(*log.lock().unwrap(), ["writer", "state"]);
    }

    #[tokio::test]
    async fn learned_peers_are_forgotten_with_their_address() {
        let table = PeerTable::<TestWriter>::new(ME);
        let mut ticket = None;
        let added = table.add_address("a:1".into(), |t| {
            ticket = Some(t);
            Ok(idle_task())
        });
        assert!(added.unwrap());
        let ticket = ticket.expect("started");
        assert_eq!(ticket.address(), "a:1");
        let again = table.add_address("a:1".into(), |_| panic!("not started twice"));
        assert!(!again.unwrap());
        assert_eq!(table.learned("a:1"), None);

        let learned = table.learn(&ticket, N2, |peer| {
            peer.running_writer(|_, a, _| Ok::<_, TransportError>(writer(1, a)))
                .expect("started");
        });
        assert_eq!(learned, Learned::Added);
        assert_eq!(table.learned("a:1"), Some(N2));
        assert_eq!(table.address(N2).as_deref(), Some("a:1"));
        assert_eq!(
            table
                .send(N2, batch(), |_, _, _| panic!("learn started it"))
                .unwrap(),
            Queued::Queued
        );
        assert_eq!(table.remove_address("a:1"), Some(N2));
        assert!(!table.contains(N2));
        assert!(!table.has_address("a:1"));

        // A stale ticket learns nothing, even once the address is back.
        let stale = |_: &mut Peer<TestWriter>| panic!("nothing to hand over");
        assert_eq!(table.learn(&ticket, N2, stale), Learned::Withdrawn);
        table
            .add_address("a:1".into(), |_| Ok(idle_task()))
            .expect("added");
        assert_eq!(table.learn(&ticket, N2, stale), Learned::Withdrawn);
        assert!(!table.contains(N2));
    }

    #[tokio::test]
    async fn own_id_is_ignored_and_explicit_peers_stay() {
        let table = PeerTable::<TestWriter>::new(ME);
        let mut tickets = Vec::new();
        for address in ["me:1", "n2:1", "n3:1"] {
            table
                .add_address(address.into(), |t| {
                    tickets.push(t);
                    Ok(idle_task())
                })
                .expect("added");
        }
        assert_eq!(
            table.learn(&tickets[0], ME, |_| panic!("nothing for myself")),
            Learned::Own
        );
        assert_eq!(table.learned("me:1"), Some(ME));
        assert!(!table.contains(ME));
        assert_eq!(table.remove_address("me:1"), None);

        // Given explicitly first: learning updates its address and keeps it
        // explicit, with its writer.
        table.add_peer(N2, "old:1".into());
        table
            .send(N2, batch(), |_, a, _| Ok(writer(4, a)))
            .expect("sent");
        let learned = table.learn(&tickets[1], N2, |peer| {
            assert!(peer.writer().is_some_and(PeerWriter::is_running));
        });
        assert_eq!(learned, Learned::Known);
        assert_eq!(table.address(N2).as_deref(), Some("n2:1"));
        assert_eq!(table.queued(N2), 1, "same writer, same queue");
        assert_eq!(table.remove_address("n2:1"), None);
        assert!(table.contains(N2), "given by add_peer: stays");

        // Known only because it connected: learning gives it the address,
        // and removing the address forgets it.
        let n3 = NodeId(3);
        table.with_peer_or_insert(n3, |_| ());
        assert_eq!(table.learn(&tickets[2], n3, |_| ()), Learned::Known);
        assert_eq!(table.address(n3).as_deref(), Some("n3:1"));
        assert_eq!(table.remove_address("n3:1"), Some(n3));
        assert!(!table.contains(n3));
    }

    #[tokio::test]
    async fn drain_takes_everything_and_removal_aborts_the_probe() {
        let table = PeerTable::<TestWriter, usize>::new(ME);
        table.add_peer(N2, "a:1".into());
        table
            .send(N2, batch(), |_, a, _| Ok(writer(4, a)))
            .expect("sent");
        table.with_peer(N2, |peer| peer.state = 7);
        let (alive, ended) = tokio::sync::oneshot::channel::<()>();
        table
            .add_address("b:1".into(), move |_| {
                Ok(tokio::spawn(async move {
                    // Dropped, and so `ended` told, when the task is aborted.
                    let _alive = alive;
                    std::future::pending::<()>().await;
                }))
            })
            .expect("added");
        table.remove_address("b:1");
        assert!(
            ended.await.is_err(),
            "removing the address aborts its probe"
        );

        table
            .add_address("c:1".into(), |_| Ok(idle_task()))
            .expect("added");
        let drained = table.drain();
        assert_eq!(drained.writers.len(), 1);
        assert_eq!(drained.writers[0].address.borrow().as_deref(), Some("a:1"));
        assert_eq!(drained.states, [7]);
        assert_eq!(drained.probes.len(), 1);
        assert!(!table.contains(N2));
        assert!(!table.has_address("c:1"));
        for probe in drained.probes {
            probe.abort();
            assert!(probe.await.unwrap_err().is_cancelled());
        }
    }
}
