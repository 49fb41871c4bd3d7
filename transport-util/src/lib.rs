//! Pieces the network transports (`transport-tcp`, `transport-quic`)
//! share:
//!
//! - where PEM text comes from ([`PemSource`]), the `node-<id>.raft` names
//!   that carry node ids in certificates ([`node_server_name`],
//!   [`node_id_of_certificate`]), and a server verifier for dialling a peer
//!   whose id is not known yet ([`AnyNodeVerifier`]);
//! - the jittered exponential backoff of reconnects ([`Backoff`]) and the
//!   checks of the settings every transport has;
//! - the peer table behind `add_peer`, `remove_peer`, `send`,
//!   `add_address` and `remove_address` ([`PeerTable`]);
//! - the counters ([`Counters`], [`TransportMetrics`]);
//! - free loopback ports, below the kernel's ephemeral range, for local
//!   clusters (module [`ports`]);
//! - with feature `testing`, a CA and node certificates made in memory
//!   for tests (module `testing`).

mod metrics;
mod peers;
pub mod ports;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod tls;

pub use crate::metrics::{Counters, TransportMetrics, add};
pub use crate::peers::{
    AddressTicket, AddressWatch, Drained, Learned, Peer, PeerTable, PeerWriter, Queued,
};
pub use crate::tls::{ANY_NODE_SERVER_NAME, AnyNodeVerifier};

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use raft_api::codec::HEADER_LEN;
use raft_api::{ConfigError, NodeId};
use rustls_pki_types::CertificateDer;

/// Where PEM text comes from: a file (read when the transport is built) or
/// bytes in memory.
#[derive(Clone, PartialEq, Eq)]
pub enum PemSource {
    /// A file holding PEM text.
    File(PathBuf),
    /// PEM text in memory.
    Bytes(Vec<u8>),
}

impl PemSource {
    /// The PEM text: the bytes, or the file's contents.
    pub fn read(&self) -> std::io::Result<Vec<u8>> {
        match self {
            PemSource::File(path) => std::fs::read(path),
            PemSource::Bytes(bytes) => Ok(bytes.clone()),
        }
    }
}

impl std::fmt::Debug for PemSource {
    /// Shows the path of a file but never the bytes (they may hold a
    /// private key).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PemSource::File(path) => f.debug_tuple("File").field(path).finish(),
            PemSource::Bytes(bytes) => write!(f, "Bytes(<{} bytes>)", bytes.len()),
        }
    }
}

impl From<PathBuf> for PemSource {
    fn from(path: PathBuf) -> Self {
        PemSource::File(path)
    }
}

impl From<&std::path::Path> for PemSource {
    fn from(path: &std::path::Path) -> Self {
        PemSource::File(path.to_path_buf())
    }
}

impl From<Vec<u8>> for PemSource {
    fn from(bytes: Vec<u8>) -> Self {
        PemSource::Bytes(bytes)
    }
}

impl From<String> for PemSource {
    fn from(text: String) -> Self {
        PemSource::Bytes(text.into_bytes())
    }
}

impl From<&str> for PemSource {
    fn from(text: &str) -> Self {
        PemSource::Bytes(text.as_bytes().to_vec())
    }
}

/// Prefix of the DNS name that carries a node id.
const NAME_PREFIX: &str = "node-";
/// Suffix of the DNS name that carries a node id.
const NAME_SUFFIX: &str = ".raft";

/// The DNS name that identifies node `id` in certificates, and the TLS
/// server name used to dial it: `node-<id>.raft` (decimal id).
///
/// ```
/// use raft_api::NodeId;
/// assert_eq!(transport_util::node_server_name(NodeId(42)), "node-42.raft");
/// ```
pub fn node_server_name(id: NodeId) -> String {
    format!("{NAME_PREFIX}{}{NAME_SUFFIX}", id.0)
}

/// The node id in a DNS name of the form `node-<id>.raft`, if it is one
/// (decimal digits only, no sign).
///
/// ```
/// use raft_api::NodeId;
/// use transport_util::node_id_from_name;
/// assert_eq!(node_id_from_name("node-7.raft"), Some(NodeId(7)));
/// assert_eq!(node_id_from_name("node-x.raft"), None);
/// assert_eq!(node_id_from_name("example.com"), None);
/// ```
pub fn node_id_from_name(name: &str) -> Option<NodeId> {
    let digits = name.strip_prefix(NAME_PREFIX)?.strip_suffix(NAME_SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(NodeId)
}

/// The node id a certificate (DER) names: the one `node-<id>.raft` DNS
/// subject alternative name it holds. `None` if it cannot be parsed, holds
/// no such name, or holds names of several different nodes.
pub fn node_id_of_certificate(der: &[u8]) -> Option<NodeId> {
    let der = CertificateDer::from(der);
    let cert = webpki::EndEntityCert::try_from(&der).ok()?;
    let mut found = None;
    for id in cert.valid_dns_names().filter_map(node_id_from_name) {
        match found {
            None => found = Some(id),
            Some(other) if other == id => {}
            Some(_) => return None,
        }
    }
    found
}

/// Exponential backoff with jitter for reconnects: each delay is drawn from
/// the upper half of the current step, and the step doubles from the
/// minimum to the maximum. Seeded per (node, peer) and by the clock, so
/// nodes that lost each other at once do not retry in lockstep.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
    rng: u64,
}

impl Backoff {
    /// Backoff from `min` doubling up to `max`, for `node` dialling `peer`.
    pub fn new(min: Duration, max: Duration, node: NodeId, peer: NodeId) -> Self {
        let clock = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos().into());
        let seed = (node.0.rotate_left(32) ^ peer.0 ^ clock) | 1;
        Self {
            min,
            max,
            step: min,
            rng: seed,
        }
    }

    /// Backoff from `min` doubling up to `max`, jittered from `seed` (for
    /// example a hash of the address dialled) and the clock.
    pub fn seeded(min: Duration, max: Duration, seed: u64) -> Self {
        Self::new(min, max, NodeId(seed), NodeId(0))
    }

    /// Starts again from the minimum (after a connection that worked).
    pub fn reset(&mut self) {
        self.step = self.min;
    }

    /// The next delay to wait before retrying.
    pub fn next_delay(&mut self) -> Duration {
        // xorshift64
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let half = self.step / 2;
        let spread = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).max(1);
        let delay = half + Duration::from_nanos(self.rng % spread);
        self.step = (self.step * 2).min(self.max);
        delay
    }
}

/// Largest accepted per-peer queue capacity (batches).
pub const MAX_QUEUE_CAPACITY: usize = 1 << 20;

/// Smallest accepted frame limit.
pub const MIN_FRAME_BYTES: usize = 1024;

fn config_error(field: &'static str, problem: String, fix: &str) -> ConfigError {
    ConfigError {
        field,
        problem,
        fix: fix.to_owned(),
    }
}

/// Checks the frame limit and the per-peer queue capacity every network
/// transport has, naming the field and the fix.
pub fn check_frame_and_queue(
    max_frame_bytes: usize,
    queue_capacity: usize,
) -> Result<(), ConfigError> {
    if max_frame_bytes < MIN_FRAME_BYTES.max(HEADER_LEN + 1) {
        return Err(config_error(
            "max_frame_bytes",
            format!("is {max_frame_bytes}, too small for any message"),
            "use at least 1 KiB; the default is 16 MiB",
        ));
    }
    if queue_capacity == 0 || queue_capacity > MAX_QUEUE_CAPACITY {
        return Err(config_error(
            "queue_capacity",
            format!("is {queue_capacity}"),
            "use between 1 and 1048576 batches; the default is 1024",
        ));
    }
    Ok(())
}

/// Checks that each named duration is positive.
pub fn check_positive(durations: &[(&'static str, Duration)]) -> Result<(), ConfigError> {
    for &(field, value) in durations {
        if value.is_zero() {
            return Err(config_error(
                field,
                "is zero".into(),
                "use a positive duration",
            ));
        }
    }
    Ok(())
}

/// Checks that the reconnect backoff can grow from `min` to `max`.
pub fn check_backoff(min: Duration, max: Duration) -> Result<(), ConfigError> {
    if max < min {
        return Err(config_error(
            "backoff_max",
            format!("({max:?}) is below backoff_min ({min:?})"),
            "make backoff_max at least backoff_min",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_maximum() {
        let (min, max) = (Duration::from_millis(50), Duration::from_millis(400));
        let mut b = Backoff::new(min, max, NodeId(1), NodeId(2));
        let mut step = min;
        for _ in 0..10 {
            let d = b.next_delay();
            assert!(
                d >= step / 2 && d <= step,
                "{d:?} within the upper half of {step:?}"
            );
            step = (step * 2).min(max);
        }
        b.reset();
        assert!(b.next_delay() <= min);
    }

    #[test]
    fn pem_source_debug_never_shows_bytes() {
        let s = PemSource::from("-----BEGIN PRIVATE KEY-----");
        assert_eq!(format!("{s:?}"), "Bytes(<27 bytes>)");
        assert_eq!(s.read().unwrap(), b"-----BEGIN PRIVATE KEY-----");
    }

    #[test]
    fn shared_limits_name_their_field() {
        let field = |r: Result<(), ConfigError>| r.unwrap_err().field;
        assert_eq!(field(check_frame_and_queue(10, 1)), "max_frame_bytes");
        assert_eq!(field(check_frame_and_queue(1 << 20, 0)), "queue_capacity");
        assert!(check_frame_and_queue(1 << 20, 1024).is_ok());
        let ms = Duration::from_millis;
        assert_eq!(field(check_positive(&[("a", ms(1)), ("b", ms(0))])), "b");
        assert_eq!(field(check_backoff(ms(10), ms(5))), "backoff_max");
        assert!(check_backoff(ms(5), ms(5)).is_ok());
    }

    #[test]
    fn garbage_is_no_certificate() {
        assert_eq!(node_id_of_certificate(b"not a certificate"), None);
    }
}
