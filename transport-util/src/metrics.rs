//! The counters every network transport keeps, live ([`Counters`]) and as
//! a snapshot ([`TransportMetrics`]).

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the counters every network transport keeps. Every counter
/// only grows. A transport with counters of its own can report them next
/// to these (for example in a struct that holds a `TransportMetrics` and
/// dereferences to it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportMetrics {
    /// Batches written to a peer's connection (a batch split over several
    /// frames counts once).
    pub batches_sent: u64,
    /// Batches received and handed to the inbox.
    pub batches_received: u64,
    /// Batches dropped by `send` because the peer's queue was full.
    pub dropped_queue_full: u64,
    /// Batches lost after they were queued: no connection could be
    /// established, the connection failed while they were written, or (for
    /// single envelopes) they exceed the frame limit.
    pub dropped_unsendable: u64,
    /// Outgoing connections established (handshake done).
    pub connections_opened: u64,
    /// Attempts to connect that failed: unresolvable or unreachable
    /// address, timeout, TLS refused by either side, or an answering hello
    /// that is missing, bad, of another cluster or version, or of another
    /// node than expected.
    pub connect_failures: u64,
    /// Of `connect_failures`, those where the address answered with the
    /// hello of another node than the peer dialled: the address now
    /// belongs to someone else.
    pub wrong_node_answers: u64,
    /// Node ids learned from the answering hello of a peer known only by
    /// its address (`Transport::add_address`).
    pub addresses_learned: u64,
    /// Incoming connections accepted after a valid handshake.
    pub connections_accepted: u64,
    /// Incoming connections refused: bad or missing hello, another cluster
    /// or version, too many connections, a handshake not completed in
    /// time, or (with TLS) a failed TLS handshake or a hello naming another
    /// node than the client certificate.
    pub handshakes_refused: u64,
    /// Of `handshakes_refused`, those closed because the handshake was not
    /// completed within the handshake timeout.
    pub handshake_timeouts: u64,
    /// Incoming connections closed because they stopped in the middle of a
    /// frame: no byte for the frame idle timeout.
    pub idle_timeouts: u64,
    /// Incoming connections closed for a bad frame (garbage, oversized,
    /// corrupt, another cluster, or envelopes not from the node that said
    /// hello).
    pub decode_errors: u64,
}

impl TransportMetrics {
    /// Every batch dropped on the sending side, for any reason.
    pub fn dropped_batches(&self) -> u64 {
        self.dropped_queue_full + self.dropped_unsendable
    }
}

/// The live counters behind [`TransportMetrics`], shared by a transport's
/// tasks. Add with [`add`]; read with [`snapshot`](Self::snapshot).
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Counters {
    /// See [`TransportMetrics::batches_sent`].
    pub batches_sent: AtomicU64,
    /// See [`TransportMetrics::batches_received`].
    pub batches_received: AtomicU64,
    /// See [`TransportMetrics::dropped_queue_full`].
    pub dropped_queue_full: AtomicU64,
    /// See [`TransportMetrics::dropped_unsendable`].
    pub dropped_unsendable: AtomicU64,
    /// See [`TransportMetrics::connections_opened`].
    pub connections_opened: AtomicU64,
    /// See [`TransportMetrics::connect_failures`].
    pub connect_failures: AtomicU64,
    /// See [`TransportMetrics::wrong_node_answers`].
    pub wrong_node_answers: AtomicU64,
    /// See [`TransportMetrics::addresses_learned`].
    pub addresses_learned: AtomicU64,
    /// See [`TransportMetrics::connections_accepted`].
    pub connections_accepted: AtomicU64,
    /// See [`TransportMetrics::handshakes_refused`].
    pub handshakes_refused: AtomicU64,
    /// See [`TransportMetrics::handshake_timeouts`].
    pub handshake_timeouts: AtomicU64,
    /// See [`TransportMetrics::idle_timeouts`].
    pub idle_timeouts: AtomicU64,
    /// See [`TransportMetrics::decode_errors`].
    pub decode_errors: AtomicU64,
}

/// Adds `n` to a counter.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    /// The counters so far.
    pub fn snapshot(&self) -> TransportMetrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TransportMetrics {
            batches_sent: get(&self.batches_sent),
            batches_received: get(&self.batches_received),
            dropped_queue_full: get(&self.dropped_queue_full),
            dropped_unsendable: get(&self.dropped_unsendable),
            connections_opened: get(&self.connections_opened),
            connect_failures: get(&self.connect_failures),
            wrong_node_answers: get(&self.wrong_node_answers),
            addresses_learned: get(&self.addresses_learned),
            connections_accepted: get(&self.connections_accepted),
            handshakes_refused: get(&self.handshakes_refused),
            handshake_timeouts: get(&self.handshake_timeouts),
            idle_timeouts: get(&self.idle_timeouts),
            decode_errors: get(&self.decode_errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reads_every_counter() {
        let c = Counters::default();
        let all = [
            &c.batches_sent,
            &c.batches_received,
            &c.dropped_queue_full,
            &c.dropped_unsendable,
            &c.connections_opened,
            &c.connect_failures,
            &c.wrong_node_answers,
            &c.addresses_learned,
            &c.connections_accepted,
            &c.handshakes_refused,
            &c.handshake_timeouts,
            &c.idle_timeouts,
            &c.decode_errors,
        ];
        for (i, counter) in all.iter().enumerate() {
            add(counter, i as u64 + 1);
        }
        let m = c.snapshot();
        let got = [
            m.batches_sent,
            m.batches_received,
            m.dropped_queue_full,
            m.dropped_unsendable,
            m.connections_opened,
            m.connect_failures,
            m.wrong_node_answers,
            m.addresses_learned,
            m.connections_accepted,
            m.handshakes_refused,
            m.handshake_timeouts,
            m.idle_timeouts,
            m.decode_errors,
        ];
        assert_eq!(got, std::array::from_fn(|i| i as u64 + 1));
        assert_eq!(m.dropped_batches(), 3 + 4);
    }
}
