//! Settings of a [`TcpTransport`](crate::TcpTransport).

use std::net::SocketAddr;
use std::time::Duration;

use raft_api::codec::DEFAULT_MAX_FRAME_BYTES;
use raft_api::{ConfigError, NodeId};

/// Settings of a [`TcpTransport`](crate::TcpTransport).
///
/// Build one with [`TcpConfig::new`] and change fields as needed:
///
/// ```
/// use std::time::Duration;
/// use raft_api::NodeId;
/// use transport_tcp::TcpConfig;
///
/// let config = TcpConfig {
///     queue_capacity: 256,
///     backoff_max: Duration::from_secs(2),
///     ..TcpConfig::new(NodeId(1), 0xC1, "127.0.0.1:7001".parse()?)
/// };
/// config.validate()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpConfig {
    /// This node. Sent in the [`Hello`](raft_api::codec::Hello) of every
    /// connection it opens; receivers attribute its batches to it.
    pub node_id: NodeId,
    /// The cluster. Frames and hellos of another cluster are refused.
    pub cluster_id: u64,
    /// Address to listen on; port 0 picks a free port (see
    /// [`TcpTransport::local_addr`](crate::TcpTransport::local_addr)).
    pub listen: SocketAddr,
    /// Largest frame sent or accepted, header included. A batch that does
    /// not fit is split over several frames; a single envelope that does
    /// not fit is dropped. Must exceed the largest message the engine
    /// builds (`max_append_bytes`, `snapshot_chunk_bytes`). Default
    /// [`DEFAULT_MAX_FRAME_BYTES`] (16 MiB).
    pub max_frame_bytes: usize,
    /// Batches queued per peer while its connection is busy or down; when
    /// full, [`send`](raft_api::Transport::send) drops the batch (counted
    /// in [`TcpMetrics::dropped_queue_full`](crate::TcpMetrics)). Default
    /// 1024.
    pub queue_capacity: usize,
    /// Longest wait to establish an outgoing connection: TCP connect, the
    /// TLS handshake (with TLS), and the peer's answering hello, all
    /// together. Default 5 s.
    pub connect_timeout: Duration,
    /// Time an accepted connection has to complete its handshake (the TLS
    /// handshake with TLS, then its hello); a connection that has not is
    /// closed and counted in
    /// [`TcpMetrics::handshake_timeouts`](crate::TcpMetrics). Default 5 s.
    pub handshake_timeout: Duration,
    /// Longest an accepted connection may stay in the middle of a frame
    /// without sending a byte; it is then closed and counted in
    /// [`TcpMetrics::idle_timeouts`](crate::TcpMetrics). This bounds how
    /// long a slow or malicious peer holds the memory of a partial frame.
    /// A connection idle between frames is left alone. Default 30 s.
    pub frame_idle_timeout: Duration,
    /// Longest wait for one write to a peer; a peer that stops reading for
    /// longer is disconnected. Default 10 s.
    pub write_timeout: Duration,
    /// First delay before reconnecting after a failure; it doubles after
    /// each failure up to `backoff_max`, with random jitter. Default 50 ms.
    pub backoff_min: Duration,
    /// Longest delay between reconnection attempts. Default 5 s.
    pub backoff_max: Duration,
    /// Most accepted connections served at once; more are closed at once.
    /// Default 1024.
    pub max_inbound_connections: usize,
    /// TLS on every connection, accepted and opened; `None` (the default)
    /// for plain TCP. See [`TcpTls`].
    pub tls: Option<TcpTls>,
}

pub use transport_util::PemSource;

/// TLS settings of a [`TcpTransport`](crate::TcpTransport) (TLS 1.3,
/// rustls with the ring provider).
///
/// Every node has one certificate, used both as a server (connections it
/// accepts) and as a client (connections it opens), chained to the cluster
/// CA in `ca_pem`, and naming the node as a DNS subject alternative name
/// `node-<id>.raft` (see [`node_server_name`](crate::node_server_name)).
/// A node dialling a peer checks that the peer's certificate names it.
///
/// With `mutual` (the default) the accepting node also requires a client
/// certificate chained to the CA, and refuses the connection when the node
/// id it names differs from the one in the [`Hello`](raft_api::codec::Hello).
/// Without it, only the accepting side is authenticated: a peer is then
/// identified by its hello only.
///
/// ```
/// use raft_api::NodeId;
/// use transport_tcp::{PemSource, TcpConfig, TcpTls};
///
/// let config = TcpConfig {
///     tls: Some(TcpTls::new(
///         PemSource::File("/etc/raft/ca.pem".into()),
///         PemSource::File("/etc/raft/node-1.pem".into()),
///         PemSource::File("/etc/raft/node-1.key".into()),
///     )),
///     ..TcpConfig::new(NodeId(1), 0xC1, "127.0.0.1:7001".parse()?)
/// };
/// assert!(config.tls.as_ref().unwrap().mutual);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpTls {
    /// The cluster CA certificate(s), PEM.
    pub ca_pem: PemSource,
    /// This node's certificate chain, PEM, leaf first.
    pub cert_pem: PemSource,
    /// This node's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: PemSource,
    /// Whether accepted connections must present a client certificate of
    /// the CA naming the node of their hello. Default `true`.
    pub mutual: bool,
}

impl TcpTls {
    /// Mutual TLS with the CA, certificate and key given.
    pub fn new(ca_pem: PemSource, cert_pem: PemSource, key_pem: PemSource) -> Self {
        Self {
            ca_pem,
            cert_pem,
            key_pem,
            mutual: true,
        }
    }
}

impl TcpConfig {
    /// Settings for `node_id` of `cluster_id` listening on `listen`, with
    /// defaults for everything else.
    pub fn new(node_id: NodeId, cluster_id: u64, listen: SocketAddr) -> Self {
        Self {
            node_id,
            cluster_id,
            listen,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            queue_capacity: 1024,
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            frame_idle_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            max_inbound_connections: 1024,
            tls: None,
        }
    }

    /// Checks that the settings can work, naming the field and the fix
    /// otherwise.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let error = |field: &'static str, problem: String, fix: &str| ConfigError {
            field,
            problem,
            fix: fix.to_owned(),
        };
        transport_util::check_frame_and_queue(self.max_frame_bytes, self.queue_capacity)?;
        transport_util::check_positive(&[
            ("connect_timeout", self.connect_timeout),
            ("handshake_timeout", self.handshake_timeout),
            ("frame_idle_timeout", self.frame_idle_timeout),
            ("write_timeout", self.write_timeout),
            ("backoff_min", self.backoff_min),
        ])?;
        transport_util::check_backoff(self.backoff_min, self.backoff_max)?;
        if self.max_inbound_connections == 0 {
            return Err(error(
                "max_inbound_connections",
                "is zero: no peer could connect".into(),
                "use at least the number of peers; the default is 1024",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TcpConfig {
        TcpConfig::new(NodeId(1), 7, "127.0.0.1:0".parse().unwrap())
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(config().validate(), Ok(()));
    }

    #[test]
    fn errors_name_the_field() {
        let field = |change: fn(&mut TcpConfig)| {
            let mut c = config();
            change(&mut c);
            c.validate().unwrap_err().field
        };
        assert_eq!(field(|c| c.max_frame_bytes = 10), "max_frame_bytes");
        assert_eq!(field(|c| c.queue_capacity = 0), "queue_capacity");
        assert_eq!(field(|c| c.queue_capacity = usize::MAX), "queue_capacity");
        assert_eq!(
            field(|c| c.connect_timeout = Duration::ZERO),
            "connect_timeout"
        );
        assert_eq!(field(|c| c.write_timeout = Duration::ZERO), "write_timeout");
        assert_eq!(
            field(|c| c.handshake_timeout = Duration::ZERO),
            "handshake_timeout"
        );
        assert_eq!(
            field(|c| c.frame_idle_timeout = Duration::ZERO),
            "frame_idle_timeout"
        );
        assert_eq!(
            field(|c| c.backoff_max = Duration::from_millis(1)),
            "backoff_max"
        );
        assert_eq!(
            field(|c| c.max_inbound_connections = 0),
            "max_inbound_connections"
        );
    }
}
