//! One `raft-kv` node: a Raft node hosting every partition, and its HTTP
//! listener.
//!
//! ```no_run
//! use raft_kv::config::{ServeConfig, ServeSettings};
//! use raft_kv::server::Server;
//!
//! # async fn example() -> Result<(), raft_kv::Error> {
//! let config = ServeConfig::from_settings(ServeSettings {
//!     id: Some(1),
//!     peers: Some("1@127.0.0.1:7001".into()),
//!     storage: Some("mem".into()),
//!     ..Default::default()
//! })?;
//! let server = Server::start(config).await?;
//! println!("HTTP on {}, Raft on {}", server.http_addr(), server.raft_addr());
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use raft_api::{Envelope, GroupId, Inbox, NodeId, Transport, TransportError};
use raft_node::backends::{
    AnyDiscovery, AnyTransport, DiscoveryKind, StorageKind, TransportSettings, build_discovery,
    build_transport, open_log_store,
};
use raft_node::driver::{Node, NodeConfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::Error;
use crate::config::{PeerSource, ServeConfig};
use crate::http::{AppState, advertised_http, router};
use crate::machine::KvMachine;
use crate::metrics::HttpMetrics;

/// The node's transport, shared between the node and the HTTP server
/// (which adds peers and reads the transport's counters).
struct SharedTransport(Arc<AnyTransport>);

impl Transport for SharedTransport {
    async fn start(&self, inbox: Arc<dyn Inbox>) -> Result<(), TransportError> {
        self.0.start(inbox).await
    }

    fn send(&self, to: NodeId, batch: Vec<Envelope>) -> Result<(), TransportError> {
        self.0.send(to, batch)
    }

    fn add_peer(&self, id: NodeId, address: String) {
        self.0.add_peer(id, address)
    }

    fn remove_peer(&self, id: NodeId) {
        self.0.remove_peer(id)
    }

    fn add_address(&self, address: String) -> Result<(), TransportError> {
        self.0.add_address(address)
    }

    fn remove_address(&self, address: &str) {
        self.0.remove_address(address)
    }

    async fn shutdown(&self) {
        self.0.shutdown().await
    }
}

/// A running node and its HTTP listener.
pub struct Server {
    state: Arc<AppState>,
    http_addr: SocketAddr,
    raft_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    http: Option<JoinHandle<()>>,
    /// Kept alive: DNS discovery watches for changes while it exists.
    _discovery: Option<AnyDiscovery>,
}

impl Server {
    /// Starts the node of `config`: binds the HTTP listener, builds the
    /// transport and the log store, starts the Raft node with every
    /// partition, and serves HTTP. Returns once both listeners are up.
    pub async fn start(config: ServeConfig) -> Result<Server, Error> {
        let listener = tokio::net::TcpListener::bind(config.http_listen)
            .await
            .map_err(|e| Error::Config {
                field: "http_listen",
                problem: format!("cannot listen on {}: {e}", config.http_listen),
            })?;
        let http_addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading the HTTP listener's address", e))?;

        let mut settings = TransportSettings::new(
            config.transport,
            config.id,
            config.cluster_id,
            config.raft_listen,
        );
        settings.tls = config.tls.clone();
        let transport = Arc::new(build_transport(settings)?);
        let mut discovery = None;
        match &config.peers {
            PeerSource::Static(peers) => {
                for peer in peers {
                    if let Some(id) = peer.id.filter(|&id| id != config.id) {
                        transport.add_peer(id, peer.address.clone());
                    }
                }
            }
            PeerSource::Dns(spec) => {
                discovery = Some(build_discovery(DiscoveryKind::Dns, spec)?);
            }
        }

        if config.storage == StorageKind::Lmdb {
            std::fs::create_dir_all(&config.data_dir)
                .map_err(|e| Error::file("creating the data directory", &config.data_dir, e))?;
        }
        let store = open_log_store(config.storage, Some(&config.data_dir), config.cluster_id)?;

        let mut node_config = NodeConfig::new(config.id);
        node_config.raft = config.raft.clone();
        node_config.propose_timeout = config.request_timeout;
        node_config.read_timeout = config.request_timeout;
        // A node that is not an initial voter starts its groups empty and
        // waits to be added as a learner.
        let voters = if config.voters.contains(&config.id) {
            config.voters.clone()
        } else {
            Vec::new()
        };
        let groups: Vec<(GroupId, Vec<NodeId>)> = (0..config.partitions)
            .map(|p| (GroupId(p), voters.clone()))
            .collect();
        let node = Node::start(
            node_config,
            SharedTransport(transport.clone()),
            store,
            |_group| KvMachine::new(),
            &groups,
        )
        .await?;
        if let Some(discovery) = &discovery {
            let shared = Arc::new(SharedTransport(transport.clone()));
            if let Err(e) = node.attach_discovery(discovery, shared).await {
                node.shutdown().await;
                return Err(Error::Config {
                    field: "dns_name",
                    problem: e.to_string(),
                });
            }
        }
        let raft_addr = transport.local_addr().unwrap_or(config.raft_listen);

        let mut http_peers = config.http_peers.clone();
        let own = advertised_http(http_addr, config.http_peers.get(&config.id));
        http_peers.insert(config.id, own);
        let forwarder = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .build()
            .map_err(|e| Error::io("building the HTTP client", std::io::Error::other(e)))?;
        let state = Arc::new(AppState {
            node,
            transport,
            partitions: config.partitions,
            max_value_bytes: config.max_value_bytes,
            http_peers: RwLock::new(http_peers),
            metrics: HttpMetrics::default(),
            forwarder,
        });
        let app = router(state.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let http = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
        tracing::info!(
            node = config.id.0,
            %http_addr,
            %raft_addr,
            transport = %config.transport,
            storage = %config.storage,
            partitions = config.partitions,
            "node started"
        );
        Ok(Server {
            state,
            http_addr,
            raft_addr,
            stop: Some(stop),
            http: Some(http),
            _discovery: discovery,
        })
    }

    /// The address the HTTP API listens on.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The address the Raft transport listens on.
    pub fn raft_addr(&self) -> SocketAddr {
        self.raft_addr
    }

    /// The Raft node.
    pub fn node(&self) -> &Node<KvMachine> {
        &self.state.node
    }

    /// The HTTP server's counters.
    pub fn http_metrics(&self) -> &HttpMetrics {
        &self.state.metrics
    }

    /// Stops accepting HTTP requests (those in progress finish, for up to
    /// the request timeout), then shuts the node down (its transport
    /// too).
    pub async fn shutdown(mut self) {
        self.stop_now().await;
    }

    async fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(http) = self.http.take() {
            // Idle keep-alive connections close at once; a request still
            // running gets a few seconds.
            let grace = std::time::Duration::from_secs(5);
            let abort = http.abort_handle();
            if tokio::time::timeout(grace, http).await.is_err() {
                abort.abort();
            }
        }
        self.state.node.shutdown().await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(http) = self.http.take() {
            http.abort();
        }
    }
}
