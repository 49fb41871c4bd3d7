//! A Raft [`Transport`] over QUIC ([`quinn`]), with mutual TLS
//! ([`rustls`], *ring* provider) against a cluster CA.
//!
//! ```text
//!  node 1                                                       node 2
//!  send(2, batch) ─► queue ─► writer ══ QUIC connection (mTLS) ══► acceptor ─► inbox
//!                               ├─ control stream: hello, frames ─┤
//!                               └─ one new stream per snapshot batch
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
//!   [`QuicMetrics::handshakes_rejected`].
//! - **Wire format**: the frames and hello of [`raft_api::codec`]. The
//!   dialer opens a unidirectional *control* stream and sends the
//!   [`Hello`](raft_api::codec::Hello) first, then frames, one batch each,
//!   in order. A batch that carries a
//!   [`Message::Snapshot`](raft_api::Message::Snapshot) chunk goes instead on
//!   a new unidirectional stream of its own (one after the other), so a big
//!   snapshot chunk never holds up heartbeats and appends: batches on the
//!   control stream keep their order, snapshot batches keep theirs, but a
//!   snapshot batch may overtake or fall behind control batches sent around
//!   it (Raft tolerates that).
//! - **Connections**: each node dials one connection per peer it sends to,
//!   lazily on the first send, and carries its batches one way over it; a
//!   peer that sends too dials its own connection back. Keep-alive pings
//!   ([`QuicConfig::keep_alive`]) keep it open, and
//!   [`QuicConfig::idle_timeout`] closes it when the peer goes silent. A
//!   failed connection is re-established with jittered exponential backoff
//!   ([`QuicConfig::backoff_min`] doubling to [`QuicConfig::backoff_max`]).
//! - **Sending**: [`send`](Transport::send) never blocks and never awaits:
//!   it puts the batch on the peer's bounded queue, or drops it when the
//!   queue is full (counted in [`QuicMetrics::dropped_queue_full`]).
//! - **Peers**: [`add_peer`](Transport::add_peer) sets or updates an address
//!   (`"host:port"`, resolved at each connection; a change reconnects);
//!   [`remove_peer`](Transport::remove_peer) closes the connection to it.
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

mod config;
mod inbound;
mod metrics;
mod outbound;
mod tls;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use raft_api::codec::FrameCodec;
use raft_api::{ConfigError, Envelope, Inbox, NodeId, Transport, TransportError};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info};

pub use crate::config::{PemSource, QuicConfig};
pub use crate::metrics::QuicMetrics;
pub use crate::tls::{node_id_from_name, node_id_of_certificate, node_server_name};

use crate::inbound::Receiver;
use crate::metrics::{Counters, add};
use crate::outbound::{CLOSE_NORMAL, Writer, WriterContext};
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
    peers: Mutex<HashMap<NodeId, Peer>>,
    running: Mutex<Option<Running>>,
    started: AtomicBool,
    closed: AtomicBool,
    connections: Arc<Mutex<JoinSet<()>>>,
}

/// What exists once started.
struct Running {
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    runtime: tokio::runtime::Handle,
    writers: Arc<WriterContext>,
    acceptor: JoinHandle<()>,
}

/// What the transport knows of a peer.
struct Peer {
    /// The address; the writer reads it at each connection attempt.
    address: watch::Sender<String>,
    /// Started by the first send.
    writer: Option<Writer>,
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

        let client_tls = identity.client_config(&provider)?;
        let client_crypto = quinn::crypto::rustls::QuicClientConfig::try_from(client_tls)
            .map_err(|e| QuicError::Tls(format!("client: {e}")))?;
        let mut client_config = quinn::ClientConfig::new(Arc::new(client_crypto));
        client_config.transport_config(transport);

        let codec = FrameCodec::new(config.cluster_id, config.max_frame_bytes);
        Ok(Self {
            config: Arc::new(config),
            codec,
            metrics: Arc::default(),
            server_config,
            client_config,
            peers: Mutex::default(),
            running: Mutex::default(),
            started: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            connections: Arc::default(),
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

    /// The counters so far.
    pub fn metrics(&self) -> QuicMetrics {
        self.metrics.snapshot()
    }

    /// Batches waiting in the queue of `peer` (0 for a peer never sent to
    /// or unknown). At most [`QuicConfig::queue_capacity`].
    pub fn queued(&self, peer: NodeId) -> usize {
        lock(&self.peers)
            .get(&peer)
            .and_then(|p| p.writer.as_ref())
            .map_or(0, Writer::queued)
    }

    /// Stops the transport: closes every connection, the endpoint and
    /// every task, and waits until they are gone and the UDP port is free
    /// (at most a few seconds). Queued batches are dropped. Later sends
    /// fail with [`TransportError::Closed`].
    pub async fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let running = lock(&self.running).take();
        let writers: Vec<Writer> = lock(&self.peers)
            .drain()
            .filter_map(|(_, peer)| peer.writer)
            .collect();
        for mut writer in writers {
            writer.task.abort();
            let _ = (&mut writer.task).await;
        }
        let Some(running) = running else {
            return;
        };
        let Running {
            endpoint,
            local_addr: address,
            acceptor,
            writers,
            runtime,
        } = running;
        acceptor.abort();
        let _ = acceptor.await;
        let mut connections = std::mem::take(&mut *lock(&self.connections));
        connections.shutdown().await;
        endpoint.close(CLOSE_NORMAL.into(), b"shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        drop((endpoint, writers, runtime));
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

    /// The writer context and runtime, once started.
    fn writers(&self) -> Result<(Arc<WriterContext>, tokio::runtime::Handle), TransportError> {
        lock(&self.running)
            .as_ref()
            .map(|r| (Arc::clone(&r.writers), r.runtime.clone()))
            .ok_or_else(|| TransportError::Other("QuicTransport::send before start".into()))
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
        // Only unidirectional streams are used: the control stream and one
        // per snapshot batch, sent one after the other. The limit bounds
        // what a peer can make this node buffer (a frame per stream).
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
    /// delivering their batches to `inbox`. Fails if the address cannot be
    /// bound, or if the transport was already started or shut down.
    async fn start(&self, inbox: Arc<dyn Inbox>) -> Result<(), TransportError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(TransportError::Closed);
        }
        if self.started.swap(true, Ordering::SeqCst) {
            return Err(TransportError::Other("transport already started".into()));
        }
        let mut endpoint =
            match quinn::Endpoint::server(self.server_config.clone(), self.config.listen) {
                Ok(endpoint) => endpoint,
                Err(error) => {
                    self.started.store(false, Ordering::SeqCst);
                    return Err(error.into());
                }
            };
        endpoint.set_default_client_config(self.client_config.clone());
        let local_addr = endpoint.local_addr()?;
        let runtime = tokio::runtime::Handle::current();
        let receiver = Arc::new(Receiver {
            config: Arc::clone(&self.config),
            codec: self.codec,
            metrics: Arc::clone(&self.metrics),
            inbox,
            connections: Arc::clone(&self.connections),
        });
        let acceptor = runtime.spawn(receiver.accept_loop(endpoint.clone()));
        let writers = Arc::new(WriterContext {
            config: Arc::clone(&self.config),
            codec: self.codec,
            metrics: Arc::clone(&self.metrics),
            endpoint: endpoint.clone(),
        });
        *lock(&self.running) = Some(Running {
            endpoint,
            local_addr,
            runtime,
            writers,
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
    /// `to`, [`TransportError::Closed`] after [`shutdown`](Self::shutdown),
    /// and [`TransportError::Other`] before [`start`](Transport::start).
    fn send(&self, to: NodeId, batch: Vec<Envelope>) -> Result<(), TransportError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(TransportError::Closed);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let mut peers = lock(&self.peers);
        let peer = peers.get_mut(&to).ok_or(TransportError::UnknownPeer(to))?;
        let mut batch = batch;
        // Twice at most: a second time if the writer had died (it only ends
        // when its peer is dropped, but stay robust).
        for _ in 0..2 {
            let writer = match &mut peer.writer {
                Some(writer) if !writer.queue.is_closed() => writer,
                slot => {
                    let (context, runtime) = self.writers()?;
                    slot.insert(Writer::spawn(
                        &context,
                        to,
                        peer.address.subscribe(),
                        &runtime,
                    ))
                }
            };
            match writer.queue.try_send(batch) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    add(&self.metrics.dropped_queue_full, 1);
                    return Ok(());
                }
                Err(mpsc::error::TrySendError::Closed(back)) => {
                    peer.writer = None;
                    batch = back;
                }
            }
        }
        add(&self.metrics.dropped_unsendable, 1);
        Ok(())
    }

    /// Sets the address of `id` (`"host:port"`; the TLS server name is
    /// `node-<id>.raft`). A changed address closes the current connection
    /// to `id`; the next one goes to the new address.
    fn add_peer(&self, id: NodeId, address: String) {
        let mut peers = lock(&self.peers);
        match peers.get(&id) {
            Some(peer) => {
                peer.address.send_if_modified(|current| {
                    let changed = *current != address;
                    if changed {
                        *current = address;
                    }
                    changed
                });
            }
            None => {
                let (address, _) = watch::channel(address);
                peers.insert(
                    id,
                    Peer {
                        address,
                        writer: None,
                    },
                );
            }
        }
    }

    /// Forgets `id`: closes the connection to it and drops its queued
    /// batches. Sends to it fail with [`TransportError::UnknownPeer`] until
    /// it is added again. A connection it opened to this node is not
    /// closed.
    fn remove_peer(&self, id: NodeId) {
        let removed = lock(&self.peers).remove(&id);
        drop(removed);
    }
}

impl Drop for QuicTransport {
    fn drop(&mut self) {
        lock(&self.peers).clear();
        lock(&self.connections).abort_all();
        if let Some(running) = lock(&self.running).take() {
            running.acceptor.abort();
            running
                .endpoint
                .close(CLOSE_NORMAL.into(), b"shutting down");
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
