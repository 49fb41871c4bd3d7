//! Counters of a [`TcpTransport`](crate::TcpTransport).

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a transport's counters, from
/// [`TcpTransport::metrics`](crate::TcpTransport::metrics). Every counter
/// only grows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TcpMetrics {
    /// Batches written to a peer's connection (a batch split over several
    /// frames counts once).
    pub batches_sent: u64,
    /// Batches received and handed to the inbox.
    pub batches_received: u64,
    /// Batches dropped by `send` because the peer's queue was full.
    pub dropped_queue_full: u64,
    /// Batches lost after they were queued: their connection failed while
    /// they were being written, or (for single envelopes) they exceed the
    /// frame limit.
    pub dropped_unsendable: u64,
    /// Outgoing connections established.
    pub connections_opened: u64,
    /// Attempts to connect to a peer that failed (refused, unreachable,
    /// timed out, unresolvable).
    pub connect_failures: u64,
    /// Incoming connections accepted after a valid hello.
    pub connections_accepted: u64,
    /// Incoming connections refused: bad or missing hello, another cluster
    /// or version, too many connections, or (with TLS) a failed TLS
    /// handshake (no or untrusted client certificate, ...) or a hello
    /// naming another node than the client certificate.
    pub handshakes_refused: u64,
    /// Incoming connections closed for a bad frame (garbage, oversized,
    /// corrupt, another cluster, or envelopes not from the node that said
    /// hello).
    pub decode_errors: u64,
}

impl TcpMetrics {
    /// Every batch dropped on the sending side, for any reason.
    pub fn dropped_batches(&self) -> u64 {
        self.dropped_queue_full + self.dropped_unsendable
    }
}

/// The live counters behind [`TcpMetrics`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) batches_sent: AtomicU64,
    pub(crate) batches_received: AtomicU64,
    pub(crate) dropped_queue_full: AtomicU64,
    pub(crate) dropped_unsendable: AtomicU64,
    pub(crate) connections_opened: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) handshakes_refused: AtomicU64,
    pub(crate) decode_errors: AtomicU64,
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self) -> TcpMetrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TcpMetrics {
            batches_sent: get(&self.batches_sent),
            batches_received: get(&self.batches_received),
            dropped_queue_full: get(&self.dropped_queue_full),
            dropped_unsendable: get(&self.dropped_unsendable),
            connections_opened: get(&self.connections_opened),
            connect_failures: get(&self.connect_failures),
            connections_accepted: get(&self.connections_accepted),
            handshakes_refused: get(&self.handshakes_refused),
            decode_errors: get(&self.decode_errors),
        }
    }
}
