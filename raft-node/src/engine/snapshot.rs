//! Snapshots and log compaction (§7).
//!
//! The state machine builds a snapshot when enough entries were applied
//! since the last one (or when the application asks); the engine then saves
//! it and compacts the log up to it, keeping `snapshot_trailing` entries so
//! followers a little behind still catch up from the log. A follower whose
//! next entry was compacted receives the snapshot in chunks of at most
//! `snapshot_chunk_bytes`, one in flight; it answers each with how much it
//! holds, so a lost chunk is resent from there and a new leader sending the
//! same snapshot resumes. Installing discards the follower's log unless it
//! holds the snapshot's last entry (then the suffix after it stays, figure
//! 13), and restores the state machine before anything newer is applied.

use bytes::{Bytes, BytesMut};
use raft_api::{
    LogId, LogIndex, Message, NodeId, Snapshot, SnapshotChunk, SnapshotMeta, SnapshotResponse, Term,
};

use super::{Action, Engine, ReplicationState, Role, mutant};

/// A snapshot being received.
#[derive(Debug)]
pub(super) struct Incoming {
    meta: SnapshotMeta,
    total: u64,
    data: BytesMut,
}

/// Why a chunk cannot have come from a correct leader, if it cannot.
pub(super) fn malformed(term: Term, chunk: &SnapshotChunk) -> Option<String> {
    let end = chunk.offset.checked_add(chunk.data.len() as u64);
    if end.is_none_or(|end| end > chunk.total) {
        return Some(format!(
            "chunk at {} of {} bytes passes the image size {}",
            chunk.offset,
            chunk.data.len(),
            chunk.total
        ));
    }
    if chunk.meta.last.index.0 > super::MAX_INDEX || chunk.meta.last.term > term {
        return Some(format!(
            "snapshot up to {} cannot come from a leader of {term}",
            chunk.meta.last
        ));
    }
    if let Err(err) = chunk.meta.membership.validate() {
        return Some(format!("snapshot holds an unusable membership: {err}"));
    }
    None
}

impl Engine {
    /// Asks for a snapshot now (emits [`Action::BuildSnapshot`]) if entries
    /// were applied since the last one and no build is under way; returns
    /// whether one was asked for.
    pub fn trigger_snapshot(&mut self) -> bool {
        let asked = self.applied > self.snapshot_index() && !self.snapshot_building;
        if asked {
            self.snapshot_building = true;
            self.out.push(Action::BuildSnapshot);
        }
        self.finish();
        asked
    }

    /// Reports the snapshot the state machine built after
    /// [`Action::BuildSnapshot`]: `last` is the last entry it covers. The
    /// engine saves it and compacts the log ([`Action::SaveSnapshot`],
    /// [`Action::CompactLog`]). A snapshot that is not newer than the
    /// current one, or covers entries never handed out, is ignored; returns
    /// whether it was taken.
    pub fn on_snapshot_built(&mut self, last: LogId, data: Bytes) -> bool {
        self.snapshot_building = false;
        let taken = last.index > self.snapshot_index()
            && last.index <= self.applied
            && self.log.matches(last);
        if taken {
            let snapshot = Snapshot {
                meta: SnapshotMeta {
                    last,
                    membership: self.membership_at(last.index),
                },
                data,
            };
            self.out.push(Action::SaveSnapshot(snapshot.clone()));
            self.snapshot = Some(snapshot);
            let upto = self.compaction_point(last.index);
            if upto > self.log.compacted().index
                && let Some(term) = self.log.term(upto)
            {
                let upto = LogId::new(term, upto);
                self.log.compact_to(upto);
                self.out.push(Action::CompactLog { upto });
            }
            self.configs_compacted(last.index);
        }
        self.finish();
        taken
    }

    /// How far the log may be compacted after a snapshot up to `last`:
    /// `snapshot_trailing` entries stay, and a leader also keeps what its
    /// streaming followers still need, so a follower a little behind is
    /// never pushed onto the snapshot path (which, with frequent snapshots,
    /// it might never leave). A follower further behind than that by more
    /// than `snapshot_threshold` (or `snapshot_trailing`, if larger)
    /// entries does not hold the log back.
    fn compaction_point(&self, last: LogIndex) -> LogIndex {
        let trailing = self.config.snapshot_trailing;
        let mut upto = last.0.saturating_sub(trailing);
        if self.role == Role::Leader {
            let slack = self.config.snapshot_threshold.max(trailing);
            let floor = upto.saturating_sub(slack);
            for p in self.progress.values() {
                if p.state == ReplicationState::Replicate {
                    upto = upto.min(p.matched.0.max(floor));
                }
            }
        }
        LogIndex(upto)
    }

    /// Reports that building a snapshot failed; the engine asks again later.
    pub fn on_snapshot_failed(&mut self) {
        self.snapshot_building = false;
    }

    pub(super) fn snapshot_index(&self) -> LogIndex {
        self.snapshot
            .as_ref()
            .map_or(LogIndex(0), |s| s.meta.last.index)
    }

    /// Asks for a snapshot once `snapshot_after` entries (at most
    /// `snapshot_threshold`) were applied since the last one.
    pub(super) fn maybe_build_snapshot(&mut self) {
        if self.config.snapshot_threshold > 0
            && !self.snapshot_building
            && self.applied.0.saturating_sub(self.snapshot_index().0) >= self.snapshot_after
        {
            self.snapshot_building = true;
            self.out.push(Action::BuildSnapshot);
            self.draw_snapshot_after();
        }
    }

    /// Draws how many applied entries ask for the next snapshot: the
    /// threshold less a random part of up to a quarter of it. Replicas
    /// apply the same entries at nearly the same time; with one threshold
    /// they would all build, write and sync a snapshot at once, and a
    /// group's commits wait while a majority is busy with that.
    pub(super) fn draw_snapshot_after(&mut self) {
        let threshold = self.config.snapshot_threshold;
        self.snapshot_after = threshold - self.snapshot_rng.range(0, threshold / 4 + 1);
    }

    // ----- leader side -----

    /// Starts sending the latest snapshot to `peer`, whose next entry is
    /// compacted. Returns whether a chunk left.
    pub(super) fn start_snapshot(&mut self, peer: NodeId) -> bool {
        let Some(snap) = self.snapshot.clone() else {
            return false;
        };
        let Some(p) = self.progress.get_mut(&peer) else {
            return false;
        };
        p.become_snapshot(snap.meta, snap.data);
        self.send_snapshot_chunk(peer);
        true
    }

    /// Sends the chunk at the transfer's current offset.
    pub(super) fn send_snapshot_chunk(&mut self, peer: NodeId) {
        let now = self.now;
        let max = self.config.snapshot_chunk_bytes;
        let Some(p) = self.progress.get_mut(&peer) else {
            return;
        };
        let stream = p.stream;
        let Some(send) = p.snapshot.as_mut() else {
            return;
        };
        let total = send.data.len();
        let start = usize::try_from(send.offset)
            .unwrap_or(usize::MAX)
            .min(total);
        let end = start.saturating_add(max).min(total);
        let chunk = SnapshotChunk {
            meta: send.meta.clone(),
            total: total as u64,
            offset: start as u64,
            data: send.data.slice(start..end),
            stream,
        };
        send.sent_at = Some(now);
        self.send(peer, Message::Snapshot(Box::new(chunk)));
    }

    /// Resends a chunk whose answer is overdue (it or its answer was lost).
    pub(super) fn resend_snapshot_if_overdue(&mut self, peer: NodeId) {
        let overdue = self
            .now
            .saturating_sub(2 * self.config.heartbeat_interval_ms);
        let due = self
            .progress
            .get(&peer)
            .and_then(|p| p.snapshot.as_ref())
            .is_some_and(|s| s.sent_at.is_none_or(|at| at <= overdue));
        if due {
            self.send_snapshot_chunk(peer);
        }
    }

    pub(super) fn handle_snapshot_resp(&mut self, from: NodeId, resp: SnapshotResponse) {
        if self.role != Role::Leader {
            return;
        }
        let Some(p) = self.progress.get_mut(&from) else {
            return;
        };
        if resp.stream != p.stream {
            return;
        }
        p.recent_active = true;
        let Some(send) = p.snapshot.as_mut() else {
            return;
        };
        if p.state != ReplicationState::Snapshot || send.meta.last != resp.last {
            return;
        }
        if resp.installed {
            p.ack(resp.last.index);
            p.become_replicate();
            self.maybe_commit();
            self.fill_pipeline(from);
            if self.transfer.is_some_and(|t| t.target == from) {
                self.advance_transfer();
            }
            return;
        }
        send.offset = resp.received.min(send.data.len() as u64);
        self.send_snapshot_chunk(from);
    }

    // ----- follower side -----

    pub(super) fn handle_snapshot(&mut self, from: NodeId, chunk: SnapshotChunk) {
        self.follow(from);
        let last = chunk.meta.last;
        if last.index <= self.commit {
            // Everything it covers is committed here already.
            self.incoming = None;
            self.snapshot_answer(from, &chunk, chunk.total, true);
            return;
        }
        let same = self
            .incoming
            .as_ref()
            .is_some_and(|i| i.meta == chunk.meta && i.total == chunk.total);
        if !same {
            if chunk.offset != 0 {
                // A chunk of a snapshot this node has no start of.
                self.snapshot_answer(from, &chunk, 0, false);
                return;
            }
            self.incoming = Some(Incoming {
                meta: chunk.meta.clone(),
                total: chunk.total,
                data: BytesMut::new(),
            });
        }
        let incoming = self.incoming.as_mut().expect("set above");
        let held = incoming.data.len() as u64;
        if chunk.offset == held {
            incoming.data.extend_from_slice(&chunk.data);
        }
        let held = incoming.data.len() as u64;
        if held < incoming.total || chunk.offset > held {
            self.snapshot_answer(from, &chunk, held, false);
            return;
        }
        let incoming = self.incoming.take().expect("checked");
        let total = incoming.total;
        self.install_snapshot(Snapshot {
            meta: incoming.meta,
            data: incoming.data.freeze(),
        });
        self.snapshot_answer(from, &chunk, total, true);
    }

    fn snapshot_answer(
        &mut self,
        to: NodeId,
        chunk: &SnapshotChunk,
        received: u64,
        installed: bool,
    ) {
        let msg = Message::SnapshotResp(SnapshotResponse {
            last: chunk.meta.last,
            received,
            installed,
            stream: chunk.stream,
        });
        if installed {
            // Promises the snapshot (or the log up to it) is durable.
            self.send_after_persist(to, msg);
        } else {
            self.send(to, msg);
        }
    }

    /// Replaces the log up to the snapshot's last entry with the snapshot.
    fn install_snapshot(&mut self, snapshot: Snapshot) {
        let last = snapshot.meta.last;
        let keep_suffix = self.log.matches(last)
            || (mutant!(SnapshotKeepsConflictingSuffix) && self.log.last_index() > last.index);
        if !keep_suffix {
            // Figure 13: a log that does not hold the snapshot's last entry
            // conflicts with it (or ends before it): none of it stays. What
            // follows the snapshot's index is truncated; the rest goes with
            // the compaction below.
            let from = last.index.next();
            if self.log.last_index() >= from {
                self.log.truncate(from);
                self.configs_truncated(from);
                self.out.push(Action::TruncateLog { from });
            }
            self.persisted = self.persisted.min(last.index);
        }
        self.log.compact_to(last);
        // The snapshot's membership is the one in effect at its last entry;
        // memberships of a kept suffix follow it.
        self.configs.retain(|(i, _)| *i > last.index);
        self.configs
            .insert(0, (last.index, snapshot.meta.membership.clone()));
        self.members_dirty = true;
        self.out.push(Action::SaveSnapshot(snapshot.clone()));
        self.out.push(Action::CompactLog { upto: last });
        self.out.push(Action::RestoreSnapshot(snapshot.clone()));
        self.snapshot = Some(snapshot);
        self.commit = self.commit.max(last.index);
        self.applied = last.index;
    }
}
