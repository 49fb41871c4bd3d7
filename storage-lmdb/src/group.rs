//! The in-memory view of one group: its durable state with the staged
//! writes applied.
//!
//! Everything but the log entries is small and kept whole in memory (hard
//! state, bounds, snapshot record). Entries live in LMDB; staged entries are
//! kept in [`GroupView::tail`], and the view describes which stored entries
//! are still visible:
//!
//! - the log is `compacted.index + 1 ..= last.index`;
//! - indexes from [`GroupView::tail_start`] on come from `tail`; stored
//!   entries there are stale (truncated, or about to be overwritten);
//! - indexes below `tail_start` come from LMDB, and every stored entry in
//!   `compacted.index + 1 .. tail_start` is visible as is.
//!
//! This holds because a truncation below `tail_start` lowers it to the
//! truncation point, and the only way up again is a compaction, which moves
//! `compacted` to just below it. A flush therefore writes exactly: delete the
//! group's stored entries up to `compacted.index` and from `tail_start` on,
//! put `tail`, and the stored log equals the view.

use std::collections::VecDeque;

use raft_api::{Entry, HardState, LogId, LogIndex, LogState, Snapshot};

use crate::codec::SnapshotRecord;

/// One group's view: durable state plus staged writes.
#[derive(Clone, Debug, Default)]
pub(crate) struct GroupView {
    /// Current hard state.
    pub(crate) hard_state: HardState,
    /// Last compacted entry.
    pub(crate) compacted: LogId,
    /// Last entry (`compacted` when the log is empty).
    pub(crate) last: LogId,
    /// Staged entries, ending at `last`.
    pub(crate) tail: VecDeque<Entry>,
    /// The flushed snapshot's record.
    pub(crate) snapshot: Option<SnapshotRecord>,
    /// A snapshot staged since the last flush.
    pub(crate) staged_snapshot: Option<Snapshot>,
    /// Whether anything was staged since the last successful flush.
    pub(crate) dirty: bool,
    /// Staging calls so far: a flush whose commit ran while the view was
    /// staged to again (its future was dropped) sees this change and keeps
    /// the view's writes staged.
    pub(crate) writes: u64,
}

impl GroupView {
    /// First index served from `tail`; stored entries from here on are
    /// stale.
    pub(crate) fn tail_start(&self) -> LogIndex {
        LogIndex((self.last.index.0 - self.tail.len() as u64).saturating_add(1))
    }

    /// Where the log starts and ends.
    pub(crate) fn log_state(&self) -> LogState {
        LogState {
            compacted: self.compacted,
            last: self.last,
        }
    }

    /// The staged entry at `index`, if `index` is in the tail.
    pub(crate) fn tail_entry(&self, index: LogIndex) -> Option<&Entry> {
        let offset = index.0.checked_sub(self.tail_start().0)?;
        self.tail.get(usize::try_from(offset).ok()?)
    }

    /// Records that something was staged.
    pub(crate) fn staged(&mut self) {
        self.dirty = true;
        self.writes = self.writes.wrapping_add(1);
    }

    /// Stages entries already checked to follow `last`.
    pub(crate) fn append(&mut self, entries: impl IntoIterator<Item = Entry>) {
        let before = self.tail.len();
        self.tail.extend(entries);
        if self.tail.len() > before
            && let Some(last) = self.tail.back()
        {
            self.last = last.id;
            self.staged();
        }
    }

    /// Stages removal of entries from `from` on; `new_last` is the id of the
    /// entry at `from - 1` (or the compaction point). The caller checked
    /// `compacted.index < from <= last.index`.
    pub(crate) fn truncate(&mut self, from: LogIndex, new_last: LogId) {
        let tail_start = self.tail_start();
        if from >= tail_start {
            let keep = usize::try_from(from.0 - tail_start.0).unwrap_or(usize::MAX);
            self.tail.truncate(keep);
        } else {
            // Stored entries from `from` on become stale: `tail_start`
            // drops to `from`.
            self.tail.clear();
        }
        self.last = new_last;
        self.staged();
    }

    /// Stages a compaction up to `upto`. The caller checked
    /// `upto.index > compacted.index`.
    pub(crate) fn compact(&mut self, upto: LogId) {
        if upto.index >= self.last.index {
            // Past the end (or at it): the log is empty and continues after
            // `upto`; `tail_start` becomes `upto.index + 1`.
            self.tail.clear();
            self.last = upto;
        } else {
            let tail_start = self.tail_start();
            if upto.index >= tail_start {
                let drop = usize::try_from(upto.index.0 - tail_start.0 + 1).unwrap_or(usize::MAX);
                self.tail.drain(..drop.min(self.tail.len()));
            }
        }
        self.compacted = upto;
        self.staged();
    }

    /// Records that everything staged is now durable; `snapshot` is the
    /// record of a snapshot written by that flush.
    pub(crate) fn flushed(&mut self, snapshot: Option<SnapshotRecord>) {
        self.tail.clear();
        self.staged_snapshot = None;
        if snapshot.is_some() {
            self.snapshot = snapshot;
        }
        self.dirty = false;
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use raft_api::{Hlc, Payload, Term};

    use super::*;

    fn id(term: u64, index: u64) -> LogId {
        LogId::new(Term(term), LogIndex(index))
    }

    fn run(term: u64, from: u64, to: u64) -> Vec<Entry> {
        (from..=to)
            .map(|i| Entry {
                id: id(term, i),
                timestamp: Hlc::default(),
                payload: Payload::Command(Bytes::from_static(b"x")),
            })
            .collect()
    }

    /// A view over stored entries `1..=last` in term 1, nothing staged.
    fn stored(last: u64) -> GroupView {
        GroupView {
            last: id(1, last),
            ..GroupView::default()
        }
    }

    #[test]
    fn appends_go_to_the_tail() {
        let mut view = stored(5);
        assert_eq!(view.tail_start(), LogIndex(6));
        view.append(run(2, 6, 8));
        assert_eq!(view.tail_start(), LogIndex(6));
        assert_eq!(view.last, id(2, 8));
        assert_eq!(view.tail_entry(LogIndex(7)).unwrap().id, id(2, 7));
        assert!(view.tail_entry(LogIndex(5)).is_none());
        assert!(view.tail_entry(LogIndex(9)).is_none());
    }

    #[test]
    fn truncating_stored_entries_lowers_the_tail_start() {
        let mut view = stored(9);
        view.append(run(2, 10, 12));
        view.truncate(LogIndex(11), id(2, 10));
        assert_eq!(view.tail.len(), 1);
        assert_eq!(view.tail_start(), LogIndex(10));
        view.truncate(LogIndex(4), id(1, 3));
        assert!(view.tail.is_empty());
        assert_eq!(view.tail_start(), LogIndex(4));
        view.append(run(3, 4, 4));
        assert_eq!(view.tail_start(), LogIndex(4));
    }

    #[test]
    fn compaction_drops_the_front_of_the_tail_or_everything() {
        let mut view = stored(4);
        view.append(run(2, 5, 8));
        view.compact(id(1, 2));
        assert_eq!((view.tail_start(), view.tail.len()), (LogIndex(5), 4));
        view.compact(id(2, 6));
        assert_eq!((view.tail_start(), view.tail.len()), (LogIndex(7), 2));
        view.compact(id(5, 20));
        assert_eq!(view.log_state().last, id(5, 20));
        assert_eq!(view.tail_start(), LogIndex(21));
        assert!(view.dirty);
        view.flushed(None);
        assert!(!view.dirty && view.tail.is_empty());
    }
}
