//! What a leader knows about each follower's log (§5.3): the highest index
//! known to match (`matched`), the next index to send, and flow control.

use std::collections::VecDeque;

use bytes::Bytes;
use raft_api::{LogIndex, SnapshotMeta};

/// How a leader is replicating to one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicationState {
    /// The follower's match point is unknown: send one append at a time and
    /// wait for its answer (or a heartbeat answer) before the next.
    Probe,
    /// The follower is known to match up to `matched`: stream appends
    /// optimistically, up to the inflight limit.
    Replicate,
    /// The entries the follower needs were compacted: send it a snapshot,
    /// one chunk at a time.
    Snapshot,
}

/// A snapshot on its way to one follower. It holds its own reference to
/// the image, so a newer snapshot built meanwhile never restarts the
/// transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotSend {
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// The image.
    pub data: Bytes,
    /// Where the next chunk starts (what the follower confirmed holding).
    pub offset: u64,
    /// When the last chunk left, if its answer is still awaited.
    pub sent_at: Option<u64>,
}

/// Replication progress of one follower, kept by the leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Highest index known to be durably stored by the follower and to match
    /// the leader's log.
    pub matched: LogIndex,
    /// Next index to send.
    pub next: LogIndex,
    /// Probing or streaming.
    pub state: ReplicationState,
    /// In `Probe`: an append was sent and no answer has come yet.
    pub probe_sent: bool,
    /// Last indexes of appends sent in `Replicate` and not yet acknowledged.
    pub inflight: VecDeque<LogIndex>,
    /// Whether the follower answered anything since the last check-quorum
    /// round.
    pub recent_active: bool,
    /// Highest heartbeat round the follower answered.
    pub acked_round: u64,
    /// In `Snapshot`: the transfer.
    pub snapshot: Option<SnapshotSend>,
    /// The replication stream (see [`raft_api::AppendRequest::stream`]):
    /// answers carrying another one are ignored.
    pub stream: u64,
}

impl Progress {
    /// Progress of a follower right after the leader took over: probe from
    /// the leader's next index.
    pub(crate) fn new(next: LogIndex, stream: u64) -> Self {
        Self {
            stream,
            matched: LogIndex(0),
            next,
            state: ReplicationState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            recent_active: false,
            acked_round: 0,
            snapshot: None,
        }
    }

    /// Whether nothing more may be sent now.
    pub(crate) fn is_paused(&self, max_inflight: usize) -> bool {
        match self.state {
            ReplicationState::Probe => self.probe_sent,
            ReplicationState::Replicate => self.inflight.len() >= max_inflight,
            ReplicationState::Snapshot => true,
        }
    }

    /// Goes back to probing from `next`.
    pub(crate) fn become_probe(&mut self, next: LogIndex) {
        self.state = ReplicationState::Probe;
        self.next = next;
        self.probe_sent = false;
        self.inflight.clear();
        self.snapshot = None;
    }

    /// Starts streaming right after the match point.
    pub(crate) fn become_replicate(&mut self) {
        self.state = ReplicationState::Replicate;
        self.next = self.matched.next();
        self.probe_sent = false;
        self.inflight.clear();
        self.snapshot = None;
    }

    /// Starts sending a snapshot.
    pub(crate) fn become_snapshot(&mut self, meta: SnapshotMeta, data: Bytes) {
        self.state = ReplicationState::Snapshot;
        self.probe_sent = false;
        self.inflight.clear();
        self.snapshot = Some(SnapshotSend {
            meta,
            data,
            offset: 0,
            sent_at: None,
        });
    }

    /// Records an acknowledgement up to `matched`; returns whether the match
    /// point moved.
    pub(crate) fn ack(&mut self, matched: LogIndex) -> bool {
        while self.inflight.front().is_some_and(|&last| last <= matched) {
            self.inflight.pop_front();
        }
        if matched <= self.matched {
            return false;
        }
        self.matched = matched;
        if self.next <= matched {
            self.next = matched.next();
        }
        true
    }

    /// Records an append sent in `Replicate` whose last entry is `last`.
    pub(crate) fn sent(&mut self, last: LogIndex) {
        self.next = last.next();
        self.inflight.push_back(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_pauses_after_one_send() {
        let mut p = Progress::new(LogIndex(5), 0);
        assert!(!p.is_paused(4));
        p.probe_sent = true;
        assert!(p.is_paused(4));
    }

    #[test]
    fn replicate_pauses_at_inflight_limit_and_acks_free_slots() {
        let mut p = Progress::new(LogIndex(1), 0);
        p.become_replicate();
        p.sent(LogIndex(2));
        p.sent(LogIndex(4));
        assert!(p.is_paused(2));
        assert!(p.ack(LogIndex(2)));
        assert!(!p.is_paused(2));
        assert_eq!(p.matched, LogIndex(2));
        assert_eq!(p.next, LogIndex(5));
    }

    #[test]
    fn stale_ack_does_not_move_match_back() {
        let mut p = Progress::new(LogIndex(1), 0);
        assert!(p.ack(LogIndex(7)));
        assert!(!p.ack(LogIndex(3)));
        assert_eq!(p.matched, LogIndex(7));
        assert_eq!(p.next, LogIndex(8));
    }
}
