//! Settings of a [`QuicTransport`](crate::QuicTransport).

use std::net::SocketAddr;
use std::time::Duration;

use raft_api::codec::DEFAULT_MAX_FRAME_BYTES;
use raft_api::{ConfigError, NodeId};

pub use transport_util::PemSource;

/// Settings of a [`QuicTransport`](crate::QuicTransport).
///
/// Build one with [`QuicConfig::new`] and change fields as needed. The
/// certificate must name this node as a DNS subject alternative name
/// `node-<id>.raft` (see [`node_server_name`](crate::node_server_name)) and
/// chain to the CA in `ca_pem`, which every node of the cluster shares.
///
/// ```
/// use std::time::Duration;
/// use raft_api::NodeId;
/// use transport_quic::{PemSource, QuicConfig};
///
/// let config = QuicConfig {
///     queue_capacity: 256,
///     keep_alive: Duration::from_secs(2),
///     ..QuicConfig::new(
///         NodeId(1),
///         0xC1,
///         "127.0.0.1:7001".parse()?,
///         PemSource::File("/etc/raft/ca.pem".into()),
///         PemSource::File("/etc/raft/node-1.pem".into()),
///         PemSource::File("/etc/raft/node-1.key".into()),
///     )
/// };
/// config.validate()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuicConfig {
    /// This node. Sent in the [`Hello`](raft_api::codec::Hello) of every
    /// connection it opens; must match the node id of its certificate.
    pub node_id: NodeId,
    /// The cluster. Frames and hellos of another cluster are refused.
    pub cluster_id: u64,
    /// UDP address to listen on (and dial from); port 0 picks a free port
    /// (see [`QuicTransport::local_addr`](crate::QuicTransport::local_addr)).
    pub listen: SocketAddr,
    /// The cluster CA certificate(s), PEM. Peers' certificates must chain
    /// to one of them.
    pub ca_pem: PemSource,
    /// This node's certificate chain, PEM, leaf first.
    pub cert_pem: PemSource,
    /// This node's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: PemSource,
    /// Largest frame sent or accepted, header included. A batch that does
    /// not fit is split over several frames; a single envelope that does
    /// not fit is dropped. Default [`DEFAULT_MAX_FRAME_BYTES`] (16 MiB).
    pub max_frame_bytes: usize,
    /// Batches queued per peer while its connection is busy or down; when
    /// full, [`send`](raft_api::Transport::send) drops the batch (counted in
    /// [`QuicMetrics::dropped_queue_full`](crate::QuicMetrics)). Default 1024.
    pub queue_capacity: usize,
    /// Interval of QUIC keep-alive pings on an open connection, so an idle
    /// connection stays up and a dead peer is noticed. Default 1 s.
    pub keep_alive: Duration,
    /// A connection on which nothing was received for this long is closed.
    /// Must exceed `keep_alive`. Default 10 s.
    pub idle_timeout: Duration,
    /// Longest wait to establish an outgoing connection (QUIC and TLS
    /// handshake), and for an accepted one to send its hello. Default 5 s.
    pub handshake_timeout: Duration,
    /// First delay before reconnecting after a failure; it doubles after
    /// each failure up to `backoff_max`, with random jitter. Default 50 ms.
    pub backoff_min: Duration,
    /// Longest delay between reconnection attempts. Default 5 s.
    pub backoff_max: Duration,
}

impl QuicConfig {
    /// Settings for `node_id` of `cluster_id` listening on `listen`, with
    /// the given CA, certificate and key, and defaults for everything else.
    pub fn new(
        node_id: NodeId,
        cluster_id: u64,
        listen: SocketAddr,
        ca_pem: PemSource,
        cert_pem: PemSource,
        key_pem: PemSource,
    ) -> Self {
        Self {
            node_id,
            cluster_id,
            listen,
            ca_pem,
            cert_pem,
            key_pem,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            queue_capacity: 1024,
            keep_alive: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
        }
    }

    /// Checks that the settings can work, naming the field and the fix
    /// otherwise. Does not read the PEM sources.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let error = |field: &'static str, problem: String, fix: &str| ConfigError {
            field,
            problem,
            fix: fix.to_owned(),
        };
        transport_util::check_frame_and_queue(self.max_frame_bytes, self.queue_capacity)?;
        transport_util::check_positive(&[
            ("keep_alive", self.keep_alive),
            ("idle_timeout", self.idle_timeout),
            ("handshake_timeout", self.handshake_timeout),
            ("backoff_min", self.backoff_min),
        ])?;
        if self.idle_timeout <= self.keep_alive {
            return Err(error(
                "idle_timeout",
                format!(
                    "({:?}) is not above keep_alive ({:?}): idle connections would close",
                    self.idle_timeout, self.keep_alive
                ),
                "make idle_timeout several times keep_alive",
            ));
        }
        if quinn::IdleTimeout::try_from(self.idle_timeout).is_err() {
            return Err(error(
                "idle_timeout",
                format!("({:?}) is too large for QUIC", self.idle_timeout),
                "use at most a few hours",
            ));
        }
        transport_util::check_backoff(self.backoff_min, self.backoff_max)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> QuicConfig {
        QuicConfig::new(
            NodeId(1),
            7,
            "127.0.0.1:0".parse().unwrap(),
            "ca".into(),
            "cert".into(),
            "key".into(),
        )
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(config().validate(), Ok(()));
    }

    #[test]
    fn errors_name_the_field() {
        let field = |change: fn(&mut QuicConfig)| {
            let mut c = config();
            change(&mut c);
            c.validate().unwrap_err().field
        };
        assert_eq!(field(|c| c.max_frame_bytes = 10), "max_frame_bytes");
        assert_eq!(field(|c| c.queue_capacity = 0), "queue_capacity");
        assert_eq!(field(|c| c.keep_alive = Duration::ZERO), "keep_alive");
        assert_eq!(
            field(|c| c.idle_timeout = Duration::from_millis(500)),
            "idle_timeout"
        );
        assert_eq!(
            field(|c| c.backoff_max = Duration::from_millis(1)),
            "backoff_max"
        );
    }

    #[test]
    fn debug_hides_key_bytes() {
        let shown = format!("{:?}", PemSource::from("-----BEGIN PRIVATE KEY-----"));
        assert!(!shown.contains("PRIVATE"), "{shown}");
    }
}
