//! The engine's in-memory view of its group's log.
//!
//! The engine keeps the entries after the compaction point in memory and
//! tells the driver, through actions, how to change the durable copy. The
//! two always hold the same entries; the durable copy may lag until the
//! driver flushes.

use raft_api::{Entry, LogId, LogIndex, Term};

/// Entries `compacted.index + 1 ..= last` of one group's log.
#[derive(Clone, Debug, Default)]
pub(crate) struct RaftLog {
    /// The entry right before the first one held (all zero when the log was
    /// never compacted).
    compacted: LogId,
    entries: Vec<Entry>,
    /// [`Entry::size`] summed over `entries`.
    bytes: u64,
}

impl RaftLog {
    /// A log holding `entries`, which must follow `compacted` contiguously.
    /// Entries that do not are dropped (they cannot be trusted), so the
    /// engine never indexes out of bounds.
    pub(crate) fn new(compacted: LogId, entries: Vec<Entry>) -> Self {
        let mut log = Self {
            compacted,
            entries: Vec::with_capacity(entries.len()),
            bytes: 0,
        };
        for e in entries {
            if e.id.index != log.last_index().next() || e.id.term < log.last_id().term {
                break;
            }
            log.bytes += e.size() as u64;
            log.entries.push(e);
        }
        log
    }

    /// The size of the entries held, as [`Entry::size`] counts it.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The entry right before the first one held.
    pub(crate) fn compacted(&self) -> LogId {
        self.compacted
    }

    /// Entries held after `index`, in order.
    pub(crate) fn entries_after(&self, index: LogIndex) -> &[Entry] {
        let skip = index.0.saturating_sub(self.compacted.index.0);
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        self.entries.get(skip..).unwrap_or(&[])
    }

    /// Drops every entry up to and including `upto.index`, which becomes the
    /// compaction point. A log ending before it ends up empty and continues
    /// right after `upto`. A point at or before the current one changes
    /// nothing.
    pub(crate) fn compact_to(&mut self, upto: LogId) {
        if upto.index <= self.compacted.index {
            return;
        }
        let gone = usize::try_from(upto.index.0 - self.compacted.index.0).unwrap_or(usize::MAX);
        let gone = gone.min(self.entries.len());
        self.bytes -= size_of_all(&self.entries[..gone]);
        self.entries.drain(..gone);
        self.compacted = upto;
    }

    pub(crate) fn last_id(&self) -> LogId {
        self.entries.last().map_or(self.compacted, |e| e.id)
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        self.last_id().index
    }

    /// The term of the entry at `index`, if the log knows it (the compaction
    /// point's term is known).
    pub(crate) fn term(&self, index: LogIndex) -> Option<Term> {
        if index == self.compacted.index {
            return Some(self.compacted.term);
        }
        self.get(index).map(|e| e.id.term)
    }

    pub(crate) fn get(&self, index: LogIndex) -> Option<&Entry> {
        let offset = index.0.checked_sub(self.compacted.index.0 + 1)?;
        self.entries.get(usize::try_from(offset).ok()?)
    }

    /// Whether the log holds an entry with exactly this id.
    pub(crate) fn matches(&self, id: LogId) -> bool {
        self.term(id.index) == Some(id.term)
    }

    /// Entries from `from` through `to` inclusive, at most `max_entries`
    /// and, after the first, at most `max_bytes` in total.
    pub(crate) fn slice(
        &self,
        from: LogIndex,
        to: LogIndex,
        max_entries: usize,
        max_bytes: usize,
    ) -> Vec<Entry> {
        // Entries before `from` or after `to` are not wanted, and none is
        // held at or before the compaction point.
        let Some(skip) = from.0.checked_sub(self.compacted.index.0 + 1) else {
            return Vec::new();
        };
        let wanted = (to.0.saturating_add(1)).saturating_sub(from.0);
        let held = usize::try_from(skip)
            .ok()
            .and_then(|skip| self.entries.get(skip..))
            .unwrap_or(&[]);
        let count = usize::try_from(wanted)
            .unwrap_or(usize::MAX)
            .min(max_entries)
            .min(held.len());
        let held = &held[..count];
        let mut bytes = 0usize;
        let within = held
            .iter()
            .enumerate()
            .position(|(i, e)| {
                bytes = bytes.saturating_add(e.size());
                i > 0 && bytes > max_bytes
            })
            .unwrap_or(count);
        held[..within].to_vec()
    }

    /// Appends entries that directly follow the last one.
    pub(crate) fn append(&mut self, entries: &[Entry]) {
        debug_assert!(
            entries
                .first()
                .is_none_or(|e| e.id.index == self.last_index().next())
        );
        self.bytes += size_of_all(entries);
        self.entries.extend_from_slice(entries);
    }

    /// Removes every entry at `from` and after (never the compaction point).
    pub(crate) fn truncate(&mut self, from: LogIndex) {
        let keep = from.0.saturating_sub(self.compacted.index.0 + 1);
        let keep = usize::try_from(keep).unwrap_or(usize::MAX);
        if let Some(removed) = self.entries.get(keep..) {
            self.bytes -= size_of_all(removed);
        }
        self.entries.truncate(keep);
    }

    /// The first index of the run of entries with `term` that contains
    /// `index` (for conflict hints).
    pub(crate) fn first_index_of_term_at(&self, index: LogIndex, term: Term) -> LogIndex {
        let mut first = index;
        while first.prev() > self.compacted.index && self.term(first.prev()) == Some(term) {
            first = first.prev();
        }
        first
    }

    /// The last index at or below `at_most` whose entry has `term`, if any.
    pub(crate) fn last_index_of_term(&self, term: Term, at_most: LogIndex) -> Option<LogIndex> {
        // Terms never decrease along the log, so the entries with a term up
        // to `term` form a prefix.
        let upto = self.entries.partition_point(|e| e.id.term <= term);
        let candidate = self.entries[..upto]
            .iter()
            .rev()
            .find(|e| e.id.index <= at_most)?;
        (candidate.id.term == term).then_some(candidate.id.index)
    }
}

/// [`Entry::size`] summed over `entries`.
fn size_of_all(entries: &[Entry]) -> u64 {
    entries.iter().map(|e| e.size() as u64).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_api::{Hlc, Payload};

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            id: LogId::new(Term(term), LogIndex(index)),
            timestamp: Hlc::default(),
            payload: Payload::Blank,
        }
    }

    fn log(terms: &[u64]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(i, &t)| entry(t, i as u64 + 1))
            .collect();
        RaftLog::new(LogId::default(), entries)
    }

    #[test]
    fn terms_and_matching() {
        let l = log(&[1, 1, 2]);
        assert_eq!(l.term(LogIndex(0)), Some(Term(0)));
        assert_eq!(l.term(LogIndex(3)), Some(Term(2)));
        assert_eq!(l.term(LogIndex(4)), None);
        assert!(l.matches(LogId::new(Term(1), LogIndex(2))));
        assert!(!l.matches(LogId::new(Term(2), LogIndex(2))));
        assert_eq!(l.last_id(), LogId::new(Term(2), LogIndex(3)));
    }

    #[test]
    fn new_drops_entries_that_do_not_follow() {
        let l = RaftLog::new(LogId::default(), vec![entry(1, 1), entry(1, 3)]);
        assert_eq!(l.last_index(), LogIndex(1));
        let l = RaftLog::new(LogId::default(), vec![entry(2, 1), entry(1, 2)]);
        assert_eq!(l.last_index(), LogIndex(1));
    }

    #[test]
    fn truncate_and_append() {
        let mut l = log(&[1, 1, 2, 2]);
        l.truncate(LogIndex(3));
        assert_eq!(l.last_index(), LogIndex(2));
        l.append(&[entry(3, 3)]);
        assert_eq!(l.last_id(), LogId::new(Term(3), LogIndex(3)));
    }

    #[test]
    fn slice_respects_limits_but_sends_one() {
        let l = log(&[1, 1, 1, 1]);
        assert_eq!(l.slice(LogIndex(2), LogIndex(4), 10, 1000).len(), 3);
        assert_eq!(l.slice(LogIndex(2), LogIndex(4), 2, 1000).len(), 2);
        assert_eq!(l.slice(LogIndex(2), LogIndex(4), 10, 1).len(), 1);
        assert!(l.slice(LogIndex(5), LogIndex(9), 10, 1000).is_empty());
        assert!(l.slice(LogIndex(3), LogIndex(2), 10, 1000).is_empty());
        assert_eq!(l.slice(LogIndex(3), LogIndex(u64::MAX), 10, 1000).len(), 2);
        let ids = |v: Vec<Entry>| v.iter().map(|e| e.id.index.0).collect::<Vec<_>>();
        assert_eq!(
            ids(l.slice(LogIndex(1), LogIndex(4), 2, usize::MAX)),
            [1, 2]
        );
        // Each entry here is 24 bytes: two fit in 48, not in 47.
        assert_eq!(ids(l.slice(LogIndex(1), LogIndex(4), 10, 48)), [1, 2]);
        assert_eq!(ids(l.slice(LogIndex(1), LogIndex(4), 10, 47)), [1]);
    }

    #[test]
    fn bytes_follow_appends_truncations_and_compactions() {
        let command = |index: u64, len: usize| Entry {
            id: LogId::new(Term(1), LogIndex(index)),
            timestamp: Hlc::default(),
            payload: Payload::Command(bytes::Bytes::from(vec![7u8; len])),
        };
        let mut l = RaftLog::new(LogId::default(), vec![command(1, 10), command(2, 20)]);
        assert_eq!(l.bytes(), 24 + 10 + 24 + 20);
        l.append(&[command(3, 30), command(4, 40)]);
        assert_eq!(l.bytes(), 4 * 24 + 100);
        l.truncate(LogIndex(4));
        assert_eq!(l.bytes(), 3 * 24 + 60);
        l.compact_to(LogId::new(Term(1), LogIndex(2)));
        assert_eq!(l.bytes(), 24 + 30);
        // Past the end: the log empties.
        l.compact_to(LogId::new(Term(1), LogIndex(9)));
        assert_eq!(l.bytes(), 0);
        l.truncate(LogIndex(10));
        assert_eq!(l.bytes(), 0);
    }

    #[test]
    fn slice_holds_nothing_at_or_before_the_compaction_point() {
        let mut l = log(&[1, 1, 1, 1]);
        l.compact_to(LogId::new(Term(1), LogIndex(2)));
        assert!(l.slice(LogIndex(0), LogIndex(4), 10, 1000).is_empty());
        assert!(l.slice(LogIndex(2), LogIndex(4), 10, 1000).is_empty());
        let got = l.slice(LogIndex(3), LogIndex(4), 10, 1000);
        assert_eq!(got.iter().map(|e| e.id.index.0).collect::<Vec<_>>(), [3, 4]);
    }

    #[test]
    fn compaction_keeps_the_suffix_or_empties_the_log() {
        let mut l = log(&[1, 1, 2, 2]);
        l.compact_to(LogId::new(Term(1), LogIndex(2)));
        assert_eq!(l.compacted(), LogId::new(Term(1), LogIndex(2)));
        assert_eq!(l.entries_after(LogIndex(0)).len(), 2);
        assert_eq!(l.entries_after(LogIndex(3)).len(), 1);
        assert_eq!(l.term(LogIndex(2)), Some(Term(1)));
        assert_eq!(l.get(LogIndex(1)), None);
        l.compact_to(LogId::new(Term(1), LogIndex(1)));
        assert_eq!(l.compacted().index, LogIndex(2), "never moves back");
        l.compact_to(LogId::new(Term(5), LogIndex(9)));
        assert_eq!(l.last_id(), LogId::new(Term(5), LogIndex(9)));
        assert!(l.entries_after(LogIndex(0)).is_empty());
        l.append(&[entry(5, 10)]);
        assert_eq!(l.last_index(), LogIndex(10));
    }

    #[test]
    fn term_searches() {
        let l = log(&[1, 1, 2, 2, 2, 4]);
        assert_eq!(l.first_index_of_term_at(LogIndex(5), Term(2)), LogIndex(3));
        assert_eq!(l.first_index_of_term_at(LogIndex(2), Term(1)), LogIndex(1));
        assert_eq!(
            l.last_index_of_term(Term(2), LogIndex(6)),
            Some(LogIndex(5))
        );
        assert_eq!(
            l.last_index_of_term(Term(2), LogIndex(4)),
            Some(LogIndex(4))
        );
        assert_eq!(l.last_index_of_term(Term(3), LogIndex(6)), None);
        assert_eq!(
            l.last_index_of_term(Term(1), LogIndex(6)),
            Some(LogIndex(2))
        );
    }
}
