//! A Raft [`Transport`] over QUIC ([`quinn`]), with mutual TLS
//! ([`rustls`], *ring* provider) against a cluster CA.
//!
//! ```text
//!  node 1                                                       node 2
//!  send(2, batch) ─► queue ─► link ══ QUIC connection (mTLS) ══► reader ─► inbox
//!                               ├─ control stream: hello, frames ─┤
//!                               └─ one new stream per snapshot batch
//!  inbox ◄─ reader ◄══ the same connection, node 2's own streams ══ link ◄─ queue ◄─ send(1, batch)
//! ```
//!
//! - **Identity**: every node has a certificate signed by the cluster CA
//!   ([`QuicConfig::ca_pem`]) that carries its node id as a DNS subject
//!   alternative name **`node-<id>.raft`** (decimal id, see
//!   [`node_server_name`]); the same certificate serves both when the node
//!   dials (TLS client) and when it accepts (TLS server). Both sides verify
//!   the other's chain to the CA. The dialer asks for the server name
//!   `node-<peer>.raft`, so it only talks to the node it meant; the
//!   acceptor takes the caller's node id from its certificate, and closes a
//!   connection whose certificate names no node (or several), whose hello
//!   is missing, of another cluster or version, or names another node id
//!   than the certificate. All of these count in
//!   [`QuicMetrics::handshakes_rejected`]. The dialer checks the
//!   acceptor's answering hello the same way.
//! - **Wire format**: the frames and hello of [`raft_api::codec`]. Each
//!   side opens a unidirectional *control* stream and sends its
//!   [`Hello`](raft_api::codec::Hello) first (the dialer at once, the
//!   acceptor as its answer), then frames, one batch each, in order. A
//!   batch that carries a
//!   [`Message::Snapshot`](raft_api::Message::Snapshot) chunk goes instead on
//!   a new unidirectional stream of its own (one after the other), so a big
//!   snapshot chunk never holds up heartbeats and appends: batches on the
//!   control stream keep their order, snapshot batches keep theirs, but a
//!   snapshot batch may overtake or fall behind control batches sent around
//!   it (Raft tolerates that).
//! - **Connections**: one connection per pair of nodes, used both ways:
//!   whichever node connects first (lazily, on its first send), each side
//!   opens its own control stream on it and reads the other's. A dialled
//!   connection carries batches only once the peer answers the hello with
//!   its own, which it does once it uses the connection. When both nodes
//!   dial at once, one connection is kept and the other closed
//!   ([`close_code::DUPLICATE`]) before it carried any batch; the queue
//!   holds the batches meanwhile. The node with the lower id decides: its
//!   dial wins once its hello is sent, and gives way to the other node's
//!   connection before that (see the `link` module for the whole rule). A peer that restarted
//!   and dials again replaces the old connection; a restarted node also
//!   resets (QUIC stateless reset) the connections its previous run left
//!   open, so the peer notices at once. Keep-alive pings
//!   ([`QuicConfig::keep_alive`]) keep a connection open, and
//!   [`QuicConfig::idle_timeout`] closes it when the peer goes silent. A
//!   failed connection is re-established with jittered exponential backoff
//!   ([`QuicConfig::backoff_min`] doubling to [`QuicConfig::backoff_max`]).
//!   [`QuicTransport::connections`] counts the open connections with a peer.
//! - **Sending**: [`send`](Transport::send) never blocks and never awaits:
//!   it puts the batch on the peer's bounded queue, or drops it when the
//!   queue is full (counted in [`QuicMetrics::dropped_queue_full`]).
//! - **Peers**: [`add_peer`](Transport::add_peer) sets or updates an address
//!   (`"host:port"`, resolved at each connection; a change reconnects);
//!   [`remove_peer`](Transport::remove_peer) closes the connection with it.
//!   [`add_address`](Transport::add_address) learns a peer known only by its
//!   address: the transport dials it, accepting a certificate of the CA for
//!   any one node name, takes the node id from that certificate (the
//!   peer's hello must name the same node), and from then on treats it as
//!   `add_peer(id, address)`; it retries with backoff until a node answers
//!   or [`remove_address`](Transport::remove_address) is called. This
//!   node's own address is recognised by its certificate and ignored
//!   ([`QuicTransport::address_status`]).
//! - **Observability**: [`QuicTransport::metrics`] counts batches, drops,
//!   connections and rejected handshakes; errors are logged with `tracing`.
//!
//! # Certificates
//!
//! Any CA works; the node certificates need the DNS name `node-<id>.raft`
//! and should allow both TLS server and client authentication. With
//! [rcgen](https://docs.rs/rcgen/0.13) (as the tests do):
//!
//! ```
//! use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
//! use raft_api::NodeId;
//! use transport_quic::node_server_name;
//!
//! let ca_key = KeyPair::generate()?;
//! let mut ca = CertificateParams::new(Vec::<String>::new())?;
//! ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
//! let ca_cert = ca.self_signed(&ca_key)?;
//!
//! let key = KeyPair::generate()?;
//! let mut node = CertificateParams::new(vec![node_server_name(NodeId(1))])?;
//! node.extended_key_usages = vec![
//!     ExtendedKeyUsagePurpose::ServerAuth,
//!     ExtendedKeyUsagePurpose::ClientAuth,
//! ];
//! let cert = node.signed_by(&key, &ca_cert, &ca_key)?;
//! // ca_cert.pem(), cert.pem() and key.serialize_pem() are what
//! // QuicConfig::{ca_pem, cert_pem, key_pem} take.
//! let der = cert.der();
//! assert_eq!(transport_quic::node_id_of_certificate(der), Some(NodeId(1)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod address;
pub mod close_code;
mod config;
mod context;
mod dial;
mod hello;
mod inbound;
mod link;
mod metrics;
mod tls;

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use raft_api::codec::FrameCodec;
use raft_api::{ConfigError, Envelope, Inbox, NodeId, Transport, TransportError};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info};

pub use crate::address::AddressStatus;
pub use crate::config::{PemSource, QuicConfig};
pub use crate::metrics::QuicMetrics;
pub use crate::tls::{node_id_from_name, node_id_of_certificate, node_server_name};

use crate::address::{Addresses, check_address};
use crate::context::{Context, Peers};
use crate::metrics::Counters;
use crate::tls::Identity;

/// Why a [`QuicTransport`] could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuicError {
    /// A setting cannot work (see [`QuicConfig::validate`]).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A PEM source could not be read or does not hold what it should.
    #[error("{what}: {detail}")]
    Pem {
        /// The [`QuicConfig`] field involved.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The TLS configuration could not be built.
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// A [`Transport`] over QUIC with mutual TLS. See the [crate
/// documentation](crate).
///
/// Must be started (and used) inside a tokio runtime with I/O and time
/// enabled. Dropping it stops its tasks and closes its endpoint and
/// connections; [`shutdown`](Self::shutdown) does the same and waits until
/// the UDP port is free again.
pub struct QuicTransport {
    config: Arc<QuicConfig>,
    codec: FrameCodec,
    metrics: Arc<Counters>,
    server_config: quinn::ServerConfig,
    client_config: quinn::ClientConfig,
    any_node_client: quinn::ClientConfig,
    endpoint_config: quinn::EndpointConfig,
    peers: Arc<Peers>,
    addresses: Addresses,
    running: Mutex<Option<Running>>,
    started: AtomicBool,
    closed: AtomicBool,
}

/// What exists once started.
struct Running {
    context: Arc<Context>,
    local_addr: SocketAddr,
    acceptor: JoinHandle<()>,
}

impl QuicTransport {
    /// A transport with `config`, not started yet: checks the settings,
    /// reads the CA, certificate and key, checks that the certificate names
    /// [`QuicConfig::node_id`], and builds the TLS configurations (TLS 1.3,
    /// *ring*, client certificates required).
    pub fn new(config: QuicConfig) -> Result<Self, QuicError> {
        config.validate()?;
        let identity = Identity::load(&config)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let transport = Arc::new(transport_config(&config)?);

        let server_tls = identity.server_config(&provider)?;
        let server_crypto = quinn::crypto::rustls::QuicServerConfig::try_from(server_tls)
            .map_err(|e| QuicError::Tls(format!("server: {e}")))?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        server_config.transport_config(Arc::clone(&transport));

        let client = |tls: rustls::ClientConfig| {
            let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
                .map_err(|e| QuicError::Tls(format!("client: {e}")))?;
            let mut client_config = quinn::ClientConfig::new(Arc::new(crypto));
            client_config.transport_config(Arc::clone(&transport));
            Ok::<_, QuicError>(client_config)
        };
        let client_config = client(identity.client_config(&provider)?)?;
        let any_node_client = client(identity.any_node_client_config(&provider)?)?;

        let codec = FrameCodec::new(config.cluster_id, config.max_frame_bytes);
        let endpoint_config = identity.endpoint_config(config.node_id);
        Ok(Self {
            config: Arc::new(config),
            codec,
            metrics: Arc::default(),
            server_config,
            client_config,
            any_node_client,
            endpoint_config,
            peers: Arc::default(),
            addresses: Addresses::default(),
            running: Mutex::default(),
            started: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        })
    }

    /// The settings.
    pub fn config(&self) -> &QuicConfig {
        &self.config
    }

    /// The UDP address the endpoint is bound to, once started: with port 0
    /// in [`QuicConfig::listen`], the port that was picked.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        lock(&self.running).as_ref().map(|r| r.local_addr)
    }

    /// The counters so far, and the connections open now.
    pub fn metrics(&self) -> QuicMetrics {
        let mut metrics = self.metrics.snapshot();
        metrics.connections_open = self.peers.all_connections() as u64;
        metrics
    }

    /// Batches waiting in the queue of `peer` (0 for a peer never sent to
    /// or unknown). At most [`QuicConfig::queue_capacity`].
    pub fn queued(&self, peer: NodeId) -> usize {
        self.peers.queued(peer)
    }

    /// Open connections with `peer`, in either direction, whose handshake
    /// (certificate and hello) is done. Once the pair has settled it is 1
    /// while they talk; it is briefly 2 when both nodes dialled at once,
    /// until the duplicate is closed.
    pub fn connections(&self, peer: NodeId) -> usize {
        self.peers.connections(peer)
    }

    /// What is known of `address`, given to
    /// [`add_address`](Transport::add_address): `None` if it was not given
    /// (or was removed).
    pub fn address_status(&self, address: &str) -> Option<AddressStatus> {
        self.addresses.status(address)
    }

    /// Stops the transport: closes every connection, the endpoint and
    /// every task, and waits until they are gone and the UDP port is free
    /// (at most a few seconds). Queued batches are dropped. Later sends
    /// fail with [`TransportError::Closed`].
    pub async fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let running = lock(&self.running).take();
        self.addresses.clear();
        for mut link in self.peers.take_links() {
            link.task.abort();
            let _ = (&mut link.task).await;
        }
        self.peers.clear();
        let Some(Running {
            context,
            local_addr: address,
            acceptor,
        }) = running
        else {
            return;
        };
        acceptor.abort();
        let _ = acceptor.await;
        let mut tasks = std::mem::take(&mut *lock(&context.tasks));
        tasks.shutdown().await;
        let endpoint = context.endpoint.clone();
        drop(context);
        endpoint.close(close_code::NORMAL.into(), b"shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        drop(endpoint);
        // The endpoint's driver task releases the socket once it runs
        // again; wait for that so a restart can bind the same port.
        for _ in 0..200 {
            if std::net::UdpSocket::bind(address).is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        debug!(node = %self.config.node_id, "transport shut down");
    }

    /// The shared context, once started.
    fn context(&self) -> Option<Arc<Context>> {
        lock(&self.running).as_ref().map(|r| Arc::clone(&r.context))
    }
}

/// Most unidirectional streams a peer may have open at once.
const MAX_UNI_STREAMS: u32 = 32;

/// The QUIC transport settings of both sides.
fn transport_config(config: &QuicConfig) -> Result<quinn::TransportConfig, QuicError> {
    let idle = quinn::IdleTimeout::try_from(config.idle_timeout).map_err(|_| {
        QuicError::Config(ConfigError {
            field: "idle_timeout",
            problem: format!("({:?}) is too large for QUIC", config.idle_timeout),
            fix: "use at most a few hours".into(),
        })
    })?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(Some(config.keep_alive))
        .max_idle_timeout(Some(idle))
        // Only unidirectional streams are used: each side's control stream
        // and one per snapshot batch, sent one after the other. The limit
        // bounds what a peer can make this node buffer (a frame per
        // stream).
        .max_concurrent_bidi_streams(0u32.into())
        .max_concurrent_uni_streams(MAX_UNI_STREAMS.into());
    Ok(transport)
}

impl Transport for QuicTransport {
    /// Shuts the transport down (see the inherent
    /// [`shutdown`](QuicTransport::shutdown)).
    fn shutdown(&self) -> impl std::future::Future<Output = ()> + Send {
        QuicTransport::shutdown(self)
    }

    /// Binds [`QuicConfig::listen`] (UDP) and serves incoming connections,
    /// delivering their batches to `inbox`, and starts learning the
    /// addresses given to [`add_address`](Transport::add_address) so far.
    /// Fails if the address cannot be bound, or if the transport was
    /// already started or shut down.
    async fn start(&self, inbox: Arc<dyn Inbox>) -> Result<(), TransportError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(TransportError::Closed);
        }
        if self.started.swap(true, Ordering::SeqCst) {
            return Err(TransportError::Other("transport already started".into()));
        }
        let endpoint = match self.bind() {
            Ok(endpoint) => endpoint,
            Err(error) => {
                self.started.store(false, Ordering::SeqCst);
                return Err(error.into());
            }
        };
        let local_addr = endpoint.local_addr()?;
        let runtime = tokio::runtime::Handle::current();
        let context = Arc::new(Context {
            config: Arc::clone(&self.config),
            codec: self.codec,
            metrics: Arc::clone(&self.metrics),
            endpoint,
            any_node_client: self.any_node_client.clone(),
            inbox,
            peers: Arc::clone(&self.peers),
            runtime: runtime.clone(),
            tasks: Mutex::new(JoinSet::new()),
        });
        let acceptor = runtime.spawn(inbound::accept_loop(Arc::clone(&context)));
        self.addresses.start_all(&context);
        *lock(&self.running) = Some(Running {
            context,
            local_addr,
            acceptor,
        });
        info!(node = %self.config.node_id, address = %local_addr, "listening (QUIC)");
        Ok(())
    }

    /// Queues `batch` for `to` and returns at once. An empty batch is
    /// ignored; a full queue drops the batch (counted in
    /// [`QuicMetrics::dropped_queue_full`]) and still returns `Ok`.
    ///
    /// Errors: [`TransportError::UnknownPeer`] when no address is known for
    /// `to` (a peer that connected to this node without being added is
    /// not sent to), [`TransportError::Closed`] after
    /// [`shutdown`](Self::shutdown), and [`TransportError::Other`] before
    /// [`start`](Transport::start).
    fn send(&self, to: NodeId, batch: Vec<Envelope>) -> Result<(), TransportError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(TransportError::Closed);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let context = self.context();
        self.peers.send(context.as_ref(), &self.metrics, to, batch)
    }

    /// Sets the address of `id` (`"host:port"`; the TLS server name is
    /// `node-<id>.raft`). A changed address closes the connection this
    /// node dialled to `id`; the next one goes to the new address (a
    /// connection `id` opened stays in use).
    fn add_peer(&self, id: NodeId, address: String) {
        self.peers.add_peer(id, address);
    }

    /// Forgets `id`: closes every connection with it and drops its queued
    /// batches. Sends to it fail with [`TransportError::UnknownPeer`] until
    /// it is added again. If it connects again, what it sends is still
    /// delivered.
    fn remove_peer(&self, id: NodeId) {
        self.peers.remove_peer(id);
    }

    /// Learns the peer at `address` (`"host:port"`) in the background: see
    /// the [crate documentation](crate) and
    /// [`address_status`](QuicTransport::address_status). Adding an address
    /// again changes nothing. Before [`start`](Transport::start) the
    /// address is kept and tried once started.
    ///
    /// Errors: [`TransportError::Other`] for an address that is not
    /// `host:port`, [`TransportError::Closed`] after
    /// [`shutdown`](Self::shutdown).
    fn add_address(&self, address: String) -> Result<(), TransportError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(TransportError::Closed);
        }
        check_address(&address)?;
        let context = self.context();
        self.addresses.add(address, context.as_ref());
        Ok(())
    }

    /// Stops trying `address`; if a node was learned there and `address`
    /// is still its address, forgets that peer (as
    /// [`remove_peer`](Transport::remove_peer)). A peer whose address was
    /// set to another one since is kept.
    fn remove_address(&self, address: &str) {
        if let Some(id) = self.addresses.remove(address)
            && self.peers.address(id).as_deref() == Some(address)
        {
            self.peers.remove_peer(id);
        }
    }
}

impl QuicTransport {
    /// The endpoint on [`QuicConfig::listen`], with the stateless reset and
    /// connection id keys derived from this node's private key.
    fn bind(&self) -> std::io::Result<quinn::Endpoint> {
        let socket = std::net::UdpSocket::bind(self.config.listen)?;
        let mut endpoint = quinn::Endpoint::new(
            self.endpoint_config.clone(),
            Some(self.server_config.clone()),
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        endpoint.set_default_client_config(self.client_config.clone());
        Ok(endpoint)
    }
}

impl Drop for QuicTransport {
    fn drop(&mut self) {
        self.addresses.clear();
        self.peers.clear();
        if let Some(running) = lock(&self.running).take() {
            running.acceptor.abort();
            lock(&running.context.tasks).abort_all();
            running
                .context
                .endpoint
                .close(close_code::NORMAL.into(), b"shutting down");
        }
    }
}

impl fmt::Debug for QuicTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuicTransport")
            .field("node_id", &self.config.node_id)
            .field("cluster_id", &self.config.cluster_id)
            .field("local_addr", &self.local_addr())
            .finish_non_exhaustive()
    }
}

/// Locks a mutex, ignoring poisoning: the data stays usable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
