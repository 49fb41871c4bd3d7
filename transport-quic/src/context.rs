//! What the tasks of a started transport share (settings, endpoint, inbox),
//! and the table of peers: each peer's address, its link (queue and the
//! task that owns the pair's connection) and every open connection with
//! it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use raft_api::codec::FrameCodec;
use raft_api::{Envelope, Inbox, NodeId, TransportError};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::close_code;
use crate::config::QuicConfig;
use crate::link::{Link, LinkEvent};
use crate::lock;
use crate::metrics::{Counters, add};

/// A boxed future the link tasks keep across loop turns.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Shared by every task of a started transport.
pub(crate) struct Context {
    pub(crate) config: Arc<QuicConfig>,
    pub(crate) codec: FrameCodec,
    pub(crate) metrics: Arc<Counters>,
    pub(crate) endpoint: quinn::Endpoint,
    /// Client settings for dialling an address whose node is not known.
    pub(crate) any_node_client: quinn::ClientConfig,
    pub(crate) inbox: Arc<dyn Inbox>,
    pub(crate) peers: Arc<Peers>,
    pub(crate) runtime: tokio::runtime::Handle,
    /// Incoming handshakes and connection readers.
    pub(crate) tasks: Mutex<JoinSet<()>>,
}

impl Context {
    /// This node.
    pub(crate) fn node(&self) -> NodeId {
        self.config.node_id
    }

    /// Runs `task` with the connection tasks (stopped at shutdown).
    pub(crate) fn spawn_task(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = lock(&self.tasks);
        // Reap finished tasks so the set stays small.
        while tasks.try_join_next().is_some() {}
        tasks.spawn_on(task, &self.runtime);
    }
}

/// The open connections with one peer (pruned of closed ones as it goes).
#[derive(Default)]
pub(crate) struct ConnSet(Mutex<Vec<quinn::Connection>>);

impl ConnSet {
    /// Records `connection`.
    pub(crate) fn add(&self, connection: &quinn::Connection) {
        let mut all = lock(&self.0);
        all.retain(|c| c.close_reason().is_none());
        all.push(connection.clone());
    }

    /// How many are open.
    pub(crate) fn open(&self) -> usize {
        let mut all = lock(&self.0);
        all.retain(|c| c.close_reason().is_none());
        all.len()
    }

    /// Closes every one.
    pub(crate) fn close_all(&self, reason: &[u8]) {
        for connection in lock(&self.0).drain(..) {
            connection.close(close_code::NORMAL.into(), reason);
        }
    }
}

/// What the transport knows of a peer.
struct PeerEntry {
    /// Where to dial it: set by `add_peer`; `None` for a peer known only
    /// because it connected.
    address: watch::Sender<Option<String>>,
    connections: Arc<ConnSet>,
    /// Started once the transport runs, by the first send or connection.
    link: Option<Link>,
}

impl PeerEntry {
    fn new(address: Option<String>) -> Self {
        Self {
            address: watch::channel(address).0,
            connections: Arc::default(),
            link: None,
        }
    }

    /// The link, started if it is not running.
    fn link(&mut self, context: &Arc<Context>, peer: NodeId) -> &Link {
        if !self.link.as_ref().is_some_and(Link::is_running) {
            self.link = None;
        }
        self.link.get_or_insert_with(|| {
            Link::spawn(
                context,
                peer,
                self.address.subscribe(),
                Arc::clone(&self.connections),
            )
        })
    }
}

impl Drop for PeerEntry {
    fn drop(&mut self) {
        // Stops the link task, then closes what it and the readers held.
        self.link = None;
        self.connections.close_all(b"peer removed");
    }
}

/// Every peer: those given by `add_peer` and those that connected.
#[derive(Default)]
pub(crate) struct Peers {
    map: Mutex<HashMap<NodeId, PeerEntry>>,
}

impl Peers {
    /// Sets or updates the address of `id`.
    pub(crate) fn add_peer(&self, id: NodeId, address: String) {
        let mut map = lock(&self.map);
        match map.get(&id) {
            Some(entry) => {
                entry.address.send_if_modified(|current| {
                    let changed = current.as_deref() != Some(address.as_str());
                    if changed {
                        *current = Some(address);
                    }
                    changed
                });
            }
            None => {
                map.insert(id, PeerEntry::new(Some(address)));
            }
        }
    }

    /// The address of `id`, if known.
    pub(crate) fn address(&self, id: NodeId) -> Option<String> {
        lock(&self.map)
            .get(&id)
            .and_then(|entry| entry.address.borrow().clone())
    }

    /// Forgets `id`: stops its link, drops its queue and closes every
    /// connection with it.
    pub(crate) fn remove_peer(&self, id: NodeId) {
        let removed = lock(&self.map).remove(&id);
        drop(removed);
    }

    /// Queues `batch` for `to` (see `Transport::send`). `context` is `None`
    /// before the transport starts.
    pub(crate) fn send(
        &self,
        context: Option<&Arc<Context>>,
        metrics: &Counters,
        to: NodeId,
        batch: Vec<Envelope>,
    ) -> Result<(), TransportError> {
        let mut map = lock(&self.map);
        let entry = map
            .get_mut(&to)
            .filter(|entry| entry.address.borrow().is_some())
            .ok_or(TransportError::UnknownPeer(to))?;
        let context = context
            .ok_or_else(|| TransportError::Other("QuicTransport::send before start".into()))?;
        match entry.link(context, to).queue.try_send(batch) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => add(&metrics.dropped_queue_full, 1),
            Err(mpsc::error::TrySendError::Closed(batch)) => {
                // The link task ended (it only does when its peer is
                // dropped; stay robust): start another.
                entry.link = None;
                if entry.link(context, to).queue.try_send(batch).is_err() {
                    add(&metrics.dropped_unsendable, 1);
                }
            }
        }
        Ok(())
    }

    /// Hands `connection` with `peer` (its handshake done) to the peer's
    /// link, starting the link, and the peer's entry, if needed.
    pub(crate) fn offer(
        &self,
        context: &Arc<Context>,
        peer: NodeId,
        connection: &quinn::Connection,
        event: LinkEvent,
    ) {
        let mut map = lock(&self.map);
        let entry = map.entry(peer).or_insert_with(|| PeerEntry::new(None));
        entry.connections.add(connection);
        // The link task only ends when the entry goes, which drops this.
        let _ = entry.link(context, peer).events.send(event);
    }

    /// Batches queued for `peer`.
    pub(crate) fn queued(&self, peer: NodeId) -> usize {
        lock(&self.map)
            .get(&peer)
            .and_then(|entry| entry.link.as_ref())
            .map_or(0, Link::queued)
    }

    /// Open connections with `peer`.
    pub(crate) fn connections(&self, peer: NodeId) -> usize {
        lock(&self.map)
            .get(&peer)
            .map_or(0, |entry| entry.connections.open())
    }

    /// Open connections with every peer.
    pub(crate) fn all_connections(&self) -> usize {
        lock(&self.map)
            .values()
            .map(|entry| entry.connections.open())
            .sum()
    }

    /// Takes every link out (to stop and await their tasks), then forgets
    /// every peer, closing their connections.
    pub(crate) fn take_links(&self) -> Vec<Link> {
        let mut map = lock(&self.map);
        map.values_mut()
            .filter_map(|entry| entry.link.take())
            .collect()
    }

    /// Forgets every peer, closing their connections.
    pub(crate) fn clear(&self) {
        let all = std::mem::take(&mut *lock(&self.map));
        drop(all);
    }
}
