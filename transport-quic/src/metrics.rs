//! Counters of a [`QuicTransport`](crate::QuicTransport).

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a transport's counters, from
/// [`QuicTransport::metrics`](crate::QuicTransport::metrics). Every counter
/// only grows, except [`connections_open`](Self::connections_open), which
/// is the number open at the time of the snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuicMetrics {
    /// Batches written to a peer's connection (a batch split over several
    /// frames counts once).
    pub batches_sent: u64,
    /// Of `batches_sent`, those sent on a stream of their own because they
    /// carry a snapshot chunk.
    pub snapshot_streams: u64,
    /// Batches received and handed to the inbox.
    pub batches_received: u64,
    /// Batches dropped by `send` because the peer's queue was full.
    pub dropped_queue_full: u64,
    /// Batches lost after they were queued: no connection could be
    /// established, the connection failed while they were written, or (for
    /// single envelopes) they exceed the frame limit.
    pub dropped_unsendable: u64,
    /// Outgoing connections established (QUIC and TLS handshake done).
    pub connections_opened: u64,
    /// Attempts to connect to a peer that failed: unresolvable address,
    /// timeout, or a TLS handshake refused by either side.
    pub connect_failures: u64,
    /// Incoming connections accepted: certificate valid and naming a node,
    /// and a hello of this cluster from that node.
    pub connections_accepted: u64,
    /// Incoming connections refused: TLS handshake failed (no certificate,
    /// another CA, ...), certificate without a node id, missing or bad
    /// hello, hello of another cluster or version, or a hello naming
    /// another node than the certificate.
    pub handshakes_rejected: u64,
    /// Incoming connections closed for a bad frame (garbage, oversized,
    /// corrupt, another cluster, or envelopes not from the node the
    /// certificate names).
    pub decode_errors: u64,
    /// Connections open now with peers, in either direction, counted once
    /// their handshake (certificate and hello) is done. Once two nodes have
    /// settled, each holds one connection with the other.
    pub connections_open: u64,
    /// Connections this node closed (or dials it gave up) because the pair
    /// already had one: both nodes dialled at once (see
    /// [`close_code::DUPLICATE`](crate::close_code::DUPLICATE)).
    pub duplicates_closed: u64,
    /// Connections this node closed because the peer opened a newer one
    /// (typically after it restarted), or because the old one stopped
    /// answering while a newer one was waiting.
    pub connections_replaced: u64,
    /// Connections ended by a stateless reset: the peer restarted and told
    /// this node that it no longer knows the connection.
    pub connections_reset: u64,
    /// Addresses given to
    /// [`add_address`](raft_api::Transport::add_address) whose node id was
    /// learned from the certificate of the node answering there.
    pub addresses_learned: u64,
}

impl QuicMetrics {
    /// Every batch dropped on the sending side, for any reason.
    pub fn dropped_batches(&self) -> u64 {
        self.dropped_queue_full + self.dropped_unsendable
    }
}

/// The live counters behind [`QuicMetrics`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) batches_sent: AtomicU64,
    pub(crate) snapshot_streams: AtomicU64,
    pub(crate) batches_received: AtomicU64,
    pub(crate) dropped_queue_full: AtomicU64,
    pub(crate) dropped_unsendable: AtomicU64,
    pub(crate) connections_opened: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) handshakes_rejected: AtomicU64,
    pub(crate) decode_errors: AtomicU64,
    pub(crate) duplicates_closed: AtomicU64,
    pub(crate) connections_replaced: AtomicU64,
    pub(crate) connections_reset: AtomicU64,
    pub(crate) addresses_learned: AtomicU64,
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    /// The counters now; `connections_open` is the caller's to fill in.
    pub(crate) fn snapshot(&self) -> QuicMetrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        QuicMetrics {
            batches_sent: get(&self.batches_sent),
            snapshot_streams: get(&self.snapshot_streams),
            batches_received: get(&self.batches_received),
            dropped_queue_full: get(&self.dropped_queue_full),
            dropped_unsendable: get(&self.dropped_unsendable),
            connections_opened: get(&self.connections_opened),
            connect_failures: get(&self.connect_failures),
            connections_accepted: get(&self.connections_accepted),
            handshakes_rejected: get(&self.handshakes_rejected),
            decode_errors: get(&self.decode_errors),
            connections_open: 0,
            duplicates_closed: get(&self.duplicates_closed),
            connections_replaced: get(&self.connections_replaced),
            connections_reset: get(&self.connections_reset),
            addresses_learned: get(&self.addresses_learned),
        }
    }
}
