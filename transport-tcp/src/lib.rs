//! A Raft [`Transport`] over TCP, with tokio.
//!
//! Each node listens on one port and opens one connection to each peer it
//! sends to, so two nodes talking both ways use two connections, each
//! carrying batches one way (after the hellos, which go both ways):
//!
//! ```text
//!  node 1                                              node 2
//!  send(2, batch) ─► queue ─► writer ══ hello, frames ══► reader ─► inbox
//!                                   ◄══ hello ══════════
//!           inbox ◄─ reader ◄══ hello, frames ══ writer ◄─ queue ◄─ send(1, batch)
//!                            ══════════ hello ══►
//! ```
//!
//! - **Wire format**: the frames and hello of [`raft_api::codec`]: a frame
//!   holds one batch, with the cluster id, the protocol version, a length
//!   checked against [`TcpConfig::max_frame_bytes`] before the payload is
//!   read, and a CRC-32.
//! - **Handshake**: the dialling node sends its
//!   [`Hello`](raft_api::codec::Hello) (cluster id, node id, protocol
//!   version); the accepting node checks it and answers with its own. The
//!   dialling node checks the answer too: another cluster or version is a
//!   failed connection, and another node than the peer dialled means the
//!   address now belongs to someone else (logged, counted in
//!   [`TcpMetrics::wrong_node_answers`], retried after a backoff).
//! - **Receiving**: an accepted connection must complete its handshake
//!   within [`TcpConfig::handshake_timeout`]; its batches are delivered as
//!   coming from the node its hello names (an envelope claiming another
//!   sender closes the connection). A bad hello, garbage, an oversized or
//!   corrupt frame closes that connection only; the listener keeps serving
//!   the others. Memory per connection follows the bytes received, and a
//!   connection that stops in the middle of a frame for
//!   [`TcpConfig::frame_idle_timeout`] is closed.
//! - **Sending**: [`send`](Transport::send) never blocks and never waits: it
//!   puts the batch on the peer's bounded queue, or drops it when the queue
//!   is full (Raft tolerates loss; memory stays bounded). A writer task per
//!   peer, started on the first send, connects (`TCP_NODELAY`), exchanges
//!   hellos, then writes queued batches, several frames per system call. A
//!   failed connection is re-established with jittered exponential backoff
//!   ([`TcpConfig::backoff_min`] doubling to [`TcpConfig::backoff_max`]);
//!   the batches being written when it failed are lost.
//! - **Peers**: [`add_peer`](Transport::add_peer) sets or updates an address
//!   (`"host:port"`, resolved at each connection; a change reconnects),
//!   [`remove_peer`](Transport::remove_peer) closes the connection and
//!   forgets the peer. [`add_address`](Transport::add_address) takes a peer
//!   known only by its address: a background task dials it until the
//!   answering hello tells its node id, then the peer is as if added with
//!   `add_peer(id, address)` and its writer keeps that connection; this
//!   node's own address is recognised and ignored.
//!   [`remove_address`](Transport::remove_address) stops the task and
//!   forgets the peer learned from the address.
//! - **Observability**: [`TcpTransport::metrics`] counts batches, drops,
//!   connections, handshakes and decode errors; errors are logged with
//!   `tracing`.
//!
//! - **TLS** (optional, [`TcpConfig::tls`]): every connection, accepted
//!   and opened, runs TLS 1.3 (rustls, ring) before the hellos. Each node
//!   has a certificate of the cluster CA naming it `node-<id>.raft`
//!   ([`node_server_name`]); a node dialling a peer checks that the peer's
//!   certificate is of the CA and names a node, that this node is the peer
//!   meant (when known: otherwise the id is learned from it), and that the
//!   answering hello names the same node. With mutual TLS
//!   ([`TcpTls::mutual`], the default) the accepting node requires a client
//!   certificate of the CA, and refuses a hello naming another node than
//!   that certificate; a failed TLS handshake or such a mismatch counts in
//!   [`TcpMetrics::handshakes_refused`]. PEM errors are reported by
//!   [`TcpTransport::new`].
//!
//! Without TLS, use it on trusted networks only: a peer is then identified
//! by the node id in its hello, not authenticated.
//!
//! # Example
//!
//! ```
//! use std::sync::{Arc, Mutex};
//!
//! use raft_api::{Envelope, GroupId, Inbox, Message, NodeId, Term, Transport};
//! use transport_tcp::{TcpConfig, TcpTransport};
//!
//! #[derive(Default)]
//! struct Collect(Mutex<Vec<(NodeId, Vec<Envelope>)>>);
//!
//! impl Inbox for Collect {
//!     fn deliver(&self, from: NodeId, batch: Vec<Envelope>) {
//!         self.0.lock().unwrap().push((from, batch));
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//! let any_port = "127.0.0.1:0".parse()?;
//! let n1 = TcpTransport::new(TcpConfig::new(NodeId(1), 42, any_port))?;
//! let n2 = TcpTransport::new(TcpConfig::new(NodeId(2), 42, any_port))?;
//! let inbox = Arc::new(Collect::default());
//! n1.start(Arc::new(Collect::default())).await?;
//! n2.start(inbox.clone()).await?;
//!
//! let n2_address = n2.local_addr().expect("started").to_string();
//! n1.add_peer(NodeId(2), n2_address);
//! let hello = Envelope {
//!     group: GroupId(1),
//!     from: NodeId(1),
//!     to: NodeId(2),
//!     term: Term(1),
//!     msg: Message::TimeoutNow,
//! };
//! n1.send(NodeId(2), vec![hello.clone()])?; // returns at once
//!
//! while inbox.0.lock().unwrap().is_empty() {
//!     tokio::time::sleep(std::time::Duration::from_millis(5)).await;
//! }
//! assert_eq!(inbox.0.lock().unwrap()[0], (NodeId(1), vec![hello]));
//! assert_eq!(n1.metrics().batches_sent, 1);
//! n1.shutdown().await;
//! n2.shutdown().await;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod dial;
mod inbound;
mod outbound;
mod probe;
mod tls;

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use raft_api::codec::FrameCodec;
use raft_api::{ConfigError, Envelope, Inbox, NodeId, Transport, TransportError};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info};
use transport_util::{Counters, PeerTable, Queued, add};

pub use crate::config::{PemSource, TcpConfig, TcpTls};
pub use crate::tls::{node_id_of_certificate, node_server_name};

use crate::inbound::Receiver;
use crate::outbound::{Writer, WriterContext};
use crate::tls::Tls;

/// A snapshot of a [`TcpTransport`]'s counters, from
/// [`TcpTransport::metrics`]: the counters every network transport keeps.
pub type TcpMetrics = transport_util::TransportMetrics;

/// A [`Transport`] over TCP. See the [crate documentation](crate).
///
/// Must be started (and used) inside a tokio runtime with I/O and time
/// enabled. Dropping it stops its tasks and closes its listener and
/// connections; [`shutdown`](Self::shutdown) does the same and waits until
/// they are gone.
pub struct TcpTransport {
    config: Arc<TcpConfig>,
    codec: FrameCodec,
    metrics: Arc<Counters>,
    /// TLS of both sides, if configured.
    tls: Option<Arc<Tls>>,
    writers: Arc<WriterContext>,
    /// Peers (address and writer) and the addresses being probed.
    peers: Arc<PeerTable<Writer>>,
    /// Where writer and probe tasks are spawned, captured by `start`.
    runtime: OnceLock<tokio::runtime::Handle>,
    local_addr: OnceLock<SocketAddr>,
    started: AtomicBool,
    closed: AtomicBool,
    listener: Mutex<Option<JoinHandle<()>>>,
    connections: Arc<Mutex<JoinSet<()>>>,
}

impl TcpTransport {
    /// A transport with `config`, not started yet. Fails if the settings
    /// cannot work (see [`TcpConfig::validate`]), or, with
    /// [`TcpConfig::tls`], if a PEM source cannot be read or parsed, or the
    /// certificate does not name this node (the error's field is then
    /// `tls.ca_pem`, `tls.cert_pem`, `tls.key_pem` or `tls`).
    pub fn new(config: TcpConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let tls = Tls::load(&config)?;
        let config = Arc::new(config);
        let codec = FrameCodec::new(config.cluster_id, config.max_frame_bytes);
        let metrics = Arc::new(Counters::default());
        Ok(Self {
            writers: Arc::new(WriterContext {
                config: Arc::clone(&config),
                codec,
                metrics: Arc::clone(&metrics),
                tls: tls.clone(),
            }),
            peers: Arc::new(PeerTable::new(config.node_id)),
            config,
            codec,
            metrics,
            tls,
            runtime: OnceLock::new(),
            local_addr: OnceLock::new(),
            started: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            listener: Mutex::new(None),
            connections: Arc::default(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &TcpConfig {
        &self.config
    }

    /// The address the listener is bound to, once started: with port 0 in
    /// [`TcpConfig::listen`], the port that was picked.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr.get().copied()
    }

    /// The counters so far.
    pub fn metrics(&self) -> TcpMetrics {
        self.metrics.snapshot()
    }

    /// Batches waiting in the queue of `peer` (0 for a peer never sent to
    /// or unknown). At most [`TcpConfig::queue_capacity`].
    pub fn queued(&self, peer: NodeId) -> usize {
        self.peers.queued(peer)
    }

    /// The node id learned from `address`, given to
    /// [`add_address`](Transport::add_address): `None` while it is still
    /// being probed (or was never given or was removed), this node's own id
    /// when the address is this node's.
    pub fn learned(&self, address: &str) -> Option<NodeId> {
        self.peers.learned(address)
    }

    /// The address of `peer`, given by [`add_peer`](Transport::add_peer)
    /// or learned by [`add_address`](Transport::add_address).
    pub fn peer_address(&self, peer: NodeId) -> Option<String> {
        self.peers.address(peer)
    }

    /// Stops the transport: closes the listener, every connection, every
    /// writer and address probe, and waits until they are gone, so the
    /// listening port is free when this returns. Queued batches are
    /// dropped. Later sends fail with [`TransportError::Closed`].
    pub async fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let listener = lock(&self.listener).take();
        if let Some(task) = listener {
            task.abort();
            let _ = task.await;
        }
        let drained = self.peers.drain();
        for probe in drained.probes {
            probe.abort();
            let _ = probe.await;
        }
        for mut writer in drained.writers {
            writer.task.abort();
            let _ = (&mut writer.task).await;
        }
        let mut connections = std::mem::take(&mut *lock(&self.connections));
        connections.shutdown().await;
        debug!(node = %self.config.node_id, "transport shut down");
    }

    /// The runtime to spawn writers on: the one `start` ran in, or the
    /// caller's.
    fn runtime(&self) -> Result<tokio::runtime::Handle, TransportError> {
        if let Some(handle) = self.runtime.get() {
            return Ok(handle.clone());
        }
        tokio::runtime::Handle::try_current().map_err(|_| {
            TransportError::Other(
                "TcpTransport::send or add_address before start must run inside a tokio runtime"
                    .into(),
            )
        })
    }
}

impl Transport for TcpTransport {
    /// Shuts the transport down (see the inherent
    /// [`shutdown`](TcpTransport::shutdown)).
    fn shutdown(&self) -> impl std::future::Future<Output = ()> + Send {
        TcpTransport::shutdown(self)
    }

    /// Binds [`TcpConfig::listen`] and serves incoming connections,
    /// delivering their batches to `inbox`. Fails if the address cannot be
    /// bound, or if the transport was already started or shut down.
    async fn start(&self, inbox: Arc<dyn Inbox>) -> Result<(), TransportError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(TransportError::Closed);
        }
        if self.started.swap(true, Ordering::SeqCst) {
            return Err(TransportError::Other("transport already started".into()));
        }
        let listener = match TcpListener::bind(self.config.listen).await {
            Ok(listener) => listener,
            Err(error) => {
                self.started.store(false, Ordering::SeqCst);
                return Err(error.into());
            }
        };
        let address = listener.local_addr()?;
        let _ = self.local_addr.set(address);
        let runtime = tokio::runtime::Handle::current();
        let _ = self.runtime.set(runtime.clone());
        let receiver = Arc::new(Receiver {
            config: Arc::clone(&self.config),
            codec: self.codec,
            metrics: Arc::clone(&self.metrics),
            inbox,
            slots: Arc::new(Semaphore::new(self.config.max_inbound_connections)),
            connections: Arc::clone(&self.connections),
            tls: self.tls.clone(),
        });
        *lock(&self.listener) = Some(runtime.spawn(receiver.accept_loop(listener)));
        info!(node = %self.config.node_id, %address, "listening");
        Ok(())
    }

    /// Queues `batch` for `to` and returns at once. An empty batch is
    /// ignored; a full queue drops the batch (counted in
    /// [`TcpMetrics::dropped_queue_full`]) and still returns `Ok`.
    ///
    /// Errors: [`TransportError::UnknownPeer`] when no address is known for
    /// `to`, [`TransportError::Closed`] after [`shutdown`](Self::shutdown),
    /// and [`TransportError::Other`] when called before
    /// [`start`](Transport::start) outside a tokio runtime.
    fn send(&self, to: NodeId, batch: Vec<Envelope>) -> Result<(), TransportError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(TransportError::Closed);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let queued = self.peers.send(to, batch, |peer, address, _| {
            Ok(Writer::spawn(
                &self.writers,
                peer,
                address,
                &self.runtime()?,
                None,
            ))
        })?;
        match queued {
            Queued::Queued => {}
            Queued::Full => add(&self.metrics.dropped_queue_full, 1),
            Queued::Unsendable => add(&self.metrics.dropped_unsendable, 1),
        }
        Ok(())
    }

    /// Sets the address of `id` ("host:port"). A changed address closes the
    /// current connection to `id`; the next one goes to the new address.
    fn add_peer(&self, id: NodeId, address: String) {
        self.peers.add_peer(id, address);
    }

    /// Forgets `id`: closes the connection to it and drops its queued
    /// batches. Sends to it fail with [`TransportError::UnknownPeer`] until
    /// it is added again. Connections it opened to this node are not
    /// closed.
    fn remove_peer(&self, id: NodeId) {
        self.peers.remove_peer(id);
    }

    /// Learns the node at `address` ("host:port"): a background task dials
    /// it (as any node of the cluster, with TLS any certificate of the CA
    /// naming a node) until the answering hello tells its id, backing off
    /// between attempts; the peer is then as if added with
    /// [`add_peer`](Transport::add_peer) (its writer starts on that
    /// connection), and [`TcpTransport::learned`] tells the id. An address
    /// of another cluster is never learned; this node's own address is
    /// ignored. Adding an address again does nothing.
    ///
    /// Errors: [`TransportError::Closed`] after
    /// [`shutdown`](Self::shutdown), [`TransportError::Other`] when called
    /// before [`start`](Transport::start) outside a tokio runtime.
    fn add_address(&self, address: String) -> Result<(), TransportError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(TransportError::Closed);
        }
        let runtime = self.runtime()?;
        let added = self.peers.add_address(address.clone(), |ticket| {
            Ok(runtime.spawn(probe::run(
                Arc::clone(&self.writers),
                Arc::clone(&self.peers),
                ticket,
                runtime.clone(),
            )))
        })?;
        if added {
            debug!(node = %self.config.node_id, %address, "learning the node at the address");
        }
        Ok(())
    }

    /// Stops learning the node at `address` and forgets the peer learned
    /// from it (closing the connection to it), unless that peer was also
    /// given by [`add_peer`](Transport::add_peer) since. Unknown addresses
    /// are ignored.
    fn remove_address(&self, address: &str) {
        if let Some(peer) = self.peers.remove_address(address) {
            debug!(node = %self.config.node_id, %address, %peer, "forgot the node at the address");
        }
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.listener).take() {
            task.abort();
        }
        self.peers.clear();
        lock(&self.connections).abort_all();
    }
}

impl fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpTransport")
            .field("node_id", &self.config.node_id)
            .field("cluster_id", &self.config.cluster_id)
            .field("local_addr", &self.local_addr())
            .finish_non_exhaustive()
    }
}

/// Locks a mutex, ignoring poisoning: the data stays usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
