//! An in-memory [`LogStore`] that keeps durable and staged writes apart, so a
//! simulator can crash a node and lose exactly what was not flushed.

use std::collections::{BTreeMap, VecDeque, btree_map};
use std::future::{Future, ready};
use std::ops::Range;

use raft_api::{
    Entry, GroupId, HardState, LogId, LogIndex, LogState, LogStore, Snapshot, StorageError,
};

/// Text of the error every write returns while [`MemLogStore::fail_writes`]
/// is on.
const INJECTED_FAILURE: &str = "injected write failure";

/// The stored state of one group.
#[derive(Clone, Debug, Default)]
struct GroupLog {
    hard_state: HardState,
    /// The entry just before `entries[hidden]`.
    compacted: LogId,
    /// Entries `compacted.index + 1 ..= last`, contiguous, after the
    /// `hidden` ones.
    entries: VecDeque<Entry>,
    /// How many entries at the front of `entries` a staged compaction
    /// removed. They stay where they are until the flush, so that a crash
    /// brings them back without a copy; no read sees them.
    hidden: usize,
    /// The latest saved snapshot.
    snapshot: Option<Snapshot>,
}

/// Equal when every read sees the same: hidden entries do not count.
impl PartialEq for GroupLog {
    fn eq(&self, other: &Self) -> bool {
        self.hard_state == other.hard_state
            && self.compacted == other.compacted
            && self.snapshot == other.snapshot
            && self.shown().eq(other.shown())
    }
}

impl Eq for GroupLog {}

impl GroupLog {
    fn last(&self) -> LogId {
        self.shown().next_back().map_or(self.compacted, |e| e.id)
    }

    /// Position in `entries` of the entry with `index`. The caller ensures
    /// `index` is above the compacted index.
    fn offset(&self, index: LogIndex) -> usize {
        debug_assert!(index > self.compacted.index);
        self.hidden + (index.0 - self.compacted.index.0 - 1) as usize
    }

    /// The entries reads see.
    fn shown(&self) -> impl DoubleEndedIterator<Item = &Entry> + ExactSizeIterator {
        self.entries.iter().skip(self.hidden)
    }

    /// Drops the entries a compaction removed, once it is durable.
    fn drop_hidden(&mut self) {
        self.entries.drain(..self.hidden);
        self.hidden = 0;
    }

    /// Reverses the last write still applied to this group. Creation is
    /// undone by the store, which removes the group.
    fn undo(&mut self, undo: Undo) {
        match undo {
            Undo::Created => debug_assert!(false, "creation is undone by the store"),
            Undo::HardState(state) => self.hard_state = state,
            Undo::Append { len } => self.entries.truncate(len),
            Undo::Truncate(mut removed) => self.entries.append(&mut removed),
            Undo::Compact { compacted, hidden } => {
                // The removed entries never left: showing them again is all.
                self.hidden = hidden;
                self.compacted = compacted;
            }
            Undo::Snapshot(snapshot) => self.snapshot = snapshot,
        }
    }
}

/// What it takes to undo one staged write, already applied to the view.
///
/// Undo records are only ever applied in reverse order of staging, so each
/// one finds the group exactly as its write left it.
#[derive(Clone, Debug)]
enum Undo {
    /// The write created the group: remove it again.
    Created,
    /// The hard state before the write.
    HardState(HardState),
    /// An append: the number of entries before it.
    Append { len: usize },
    /// A truncation: the entries it removed, moved out of the view.
    Truncate(VecDeque<Entry>),
    /// A compaction: the compaction point and the count of hidden entries
    /// before it (the entries it removed stay hidden in the view until the
    /// flush).
    Compact { compacted: LogId, hidden: usize },
    /// The snapshot before the write.
    Snapshot(Option<Snapshot>),
}

/// An in-memory [`LogStore`] for every group of a node, with explicit
/// durability.
///
/// Writes ([`save_hard_state`](LogStore::save_hard_state),
/// [`append`](LogStore::append), [`truncate`](LogStore::truncate),
/// [`compact`](LogStore::compact), [`save_snapshot`](LogStore::save_snapshot))
/// are staged: reads see them at once, but
/// only [`flush`](LogStore::flush) makes them durable, and
/// [`crash`](Self::crash) throws away everything staged since the last
/// successful flush.
///
/// Snapshots are kept whole (metadata and image), one per group.
///
/// Internally the store keeps a single copy of each group's state: the
/// current view (durable plus staged), which every write changes at once.
/// Next to it is an undo log: for each write since the last successful
/// flush, what it takes to reverse it (the previous hard state, snapshot
/// or log length; the entries a truncation removed, moved there rather than
/// copied). The entries a compaction removed stay in the view, hidden from
/// reads. A flush drops the undo log and the hidden entries, so no entry is
/// ever copied twice; a crash replays the undo log backwards, so its cost is
/// proportional to what was staged, not to the size of the log.
///
/// For tests of the layers above it can also fail on purpose
/// ([`fail_writes`](Self::fail_writes)) and counts flushes
/// ([`flushes`](Self::flushes)).
#[derive(Clone, Debug, Default)]
pub struct MemLogStore {
    /// Durable state with every staged write applied: what reads see.
    view: BTreeMap<GroupId, GroupLog>,
    /// How to undo each write since the last successful flush, in the order
    /// they were staged; a crash applies them backwards.
    undo: Vec<(GroupId, Undo)>,
    fail_writes: bool,
    flushes: u64,
}

impl MemLogStore {
    /// An empty store: no groups, nothing staged.
    pub fn new() -> Self {
        Self::default()
    }

    /// Simulates power loss: discards every write staged since the last
    /// successful [`flush`](LogStore::flush), so reads afterwards show only
    /// the durable state. The flush counter and the
    /// [`fail_writes`](Self::fail_writes) setting are kept.
    pub fn crash(&mut self) {
        while let Some((group, undo)) = self.undo.pop() {
            if let Undo::Created = undo {
                self.view.remove(&group);
            } else if let Some(log) = self.view.get_mut(&group) {
                log.undo(undo);
            } else {
                debug_assert!(false, "undo record for a missing group");
            }
        }
    }

    /// Turns fault injection on or off. While on, every write and every
    /// flush returns `StorageError::Other("injected write failure")` and
    /// changes nothing (staged writes stay staged); reads keep working.
    pub fn fail_writes(&mut self, on: bool) {
        self.fail_writes = on;
    }

    /// Number of successful [`flush`](LogStore::flush) calls so far,
    /// including flushes that had nothing to write.
    pub fn flushes(&self) -> u64 {
        self.flushes
    }

    /// Whether any write is staged but not yet flushed (and so would be lost
    /// by a [`crash`](Self::crash)).
    pub fn has_unflushed(&self) -> bool {
        !self.undo.is_empty()
    }

    /// Checks that `entries` may be appended to the group's log: the store
    /// is writable and the indexes continue the log without a gap.
    fn check_append(&self, group: GroupId, entries: &[Entry]) -> Result<(), StorageError> {
        self.check_writable()?;
        let mut last = self.state_of(group).last.index;
        for entry in entries {
            if entry.id.index != last.next() {
                return Err(StorageError::NotContiguous {
                    group,
                    last,
                    got: entry.id.index,
                });
            }
            last = entry.id.index;
        }
        Ok(())
    }

    /// Stages checked entries at the end of the group's log. The caller
    /// skips empty appends. `entries` is a vector or a slice's iterator, so
    /// the deque reserves once and copies in bulk.
    fn stage_append(&mut self, group: GroupId, entries: impl IntoIterator<Item = Entry>) {
        // Consecutive appends to the same group share one undo record: undoing
        // the first undoes them all.
        if let Some((last_group, Undo::Append { .. })) = self.undo.last()
            && *last_group == group
            && let Some(log) = self.view.get_mut(&group)
        {
            log.entries.extend(entries);
            return;
        }
        self.stage(group, |log| {
            let len = log.entries.len();
            log.entries.extend(entries);
            Undo::Append { len }
        });
    }

    fn check_writable(&self) -> Result<(), StorageError> {
        if self.fail_writes {
            Err(StorageError::Other(INJECTED_FAILURE.into()))
        } else {
            Ok(())
        }
    }

    /// Stages a validated write: `write` changes the group's state in the
    /// view (creating the group if need be) and returns how to undo that
    /// change, which is kept until the next flush.
    fn stage(&mut self, group: GroupId, write: impl FnOnce(&mut GroupLog) -> Undo) {
        let log = match self.view.entry(group) {
            btree_map::Entry::Occupied(log) => log.into_mut(),
            btree_map::Entry::Vacant(slot) => {
                self.undo.push((group, Undo::Created));
                slot.insert(GroupLog::default())
            }
        };
        let undo = write(log);
        self.undo.push((group, undo));
    }

    /// The current view of a group's log state.
    fn state_of(&self, group: GroupId) -> LogState {
        self.view
            .get(&group)
            .map(|log| LogState {
                compacted: log.compacted,
                last: log.last(),
            })
            .unwrap_or_default()
    }
}

impl LogStore for MemLogStore {
    fn groups(&self) -> Result<Vec<GroupId>, StorageError> {
        Ok(self.view.keys().copied().collect())
    }

    fn hard_state(&self, group: GroupId) -> Result<HardState, StorageError> {
        Ok(self
            .view
            .get(&group)
            .map(|log| log.hard_state)
            .unwrap_or_default())
    }

    fn log_state(&self, group: GroupId) -> Result<LogState, StorageError> {
        Ok(self.state_of(group))
    }

    /// Entries in `range`, bounded by `max_bytes` (but at least one). An
    /// empty range returns no entries without any further check.
    fn entries(
        &self,
        group: GroupId,
        range: Range<LogIndex>,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let state = self.state_of(group);
        if range.start <= state.compacted.index {
            return Err(StorageError::Compacted {
                group,
                compacted: state.compacted.index,
                asked: range.start,
            });
        }
        if range.end > state.last.index.next() {
            return Err(StorageError::Unavailable {
                group,
                last: state.last.index,
                asked: range.end.prev(),
            });
        }
        // The range is non-empty and within the stored entries, so the group
        // exists.
        let Some(log) = self.view.get(&group) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut total = 0usize;
        for entry in log
            .entries
            .range(log.offset(range.start)..log.offset(range.end))
        {
            let size = entry.size();
            if !out.is_empty() && total.saturating_add(size) > max_bytes {
                break;
            }
            total = total.saturating_add(size);
            out.push(entry.clone());
        }
        Ok(out)
    }

    fn save_hard_state(&mut self, group: GroupId, state: HardState) -> Result<(), StorageError> {
        self.check_writable()?;
        self.stage(group, |log| {
            Undo::HardState(std::mem::replace(&mut log.hard_state, state))
        });
        Ok(())
    }

    /// Stages `entries`, which must have consecutive indexes starting right
    /// after the last one (else [`StorageError::NotContiguous`]). An empty
    /// slice changes nothing.
    fn append(&mut self, group: GroupId, entries: &[Entry]) -> Result<(), StorageError> {
        self.check_append(group, entries)?;
        if !entries.is_empty() {
            self.stage_append(group, entries.iter().cloned());
        }
        Ok(())
    }

    /// Like `append`, keeping the entries given instead of copies.
    fn append_owned(&mut self, group: GroupId, entries: Vec<Entry>) -> Result<(), StorageError> {
        self.check_append(group, &entries)?;
        if !entries.is_empty() {
            self.stage_append(group, entries);
        }
        Ok(())
    }

    /// Stages removal of entries at `from` and after. `from` at or below the
    /// compacted index is a [`StorageError::Compacted`] error; `from` past the
    /// last index changes nothing.
    fn truncate(&mut self, group: GroupId, from: LogIndex) -> Result<(), StorageError> {
        self.check_writable()?;
        let state = self.state_of(group);
        if from <= state.compacted.index {
            return Err(StorageError::Compacted {
                group,
                compacted: state.compacted.index,
                asked: from,
            });
        }
        if from > state.last.index {
            return Ok(());
        }
        self.stage(group, |log| {
            let keep = log.offset(from);
            Undo::Truncate(log.entries.split_off(keep))
        });
        Ok(())
    }

    /// Stages removal of entries up to and including `upto.index` and makes
    /// `upto` the compaction point, term included (it is taken from the
    /// argument, not checked against a stored entry: a caller whose log
    /// conflicts with `upto` truncates first). When the log ends before
    /// `upto.index` every entry goes and the next append must start at
    /// `upto.index + 1`. An index at or before the current compaction point
    /// changes nothing.
    fn compact(&mut self, group: GroupId, upto: LogId) -> Result<(), StorageError> {
        self.check_writable()?;
        if upto.index <= self.state_of(group).compacted.index {
            return Ok(());
        }
        self.stage(group, |log| {
            // `upto` is past the compaction point. When it is also past the
            // last entry, everything goes.
            let shown = log.shown().len();
            let count = usize::try_from(upto.index.0 - log.compacted.index.0)
                .map_or(shown, |n| n.min(shown));
            let hidden = log.hidden;
            log.hidden += count;
            Undo::Compact {
                compacted: std::mem::replace(&mut log.compacted, upto),
                hidden,
            }
        });
        Ok(())
    }

    /// Stages `snapshot` as the group's snapshot, replacing any previous one
    /// (whatever either covers); nothing else of the group changes.
    fn save_snapshot(&mut self, group: GroupId, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.check_writable()?;
        self.stage(group, |log| {
            Undo::Snapshot(log.snapshot.replace(snapshot.clone()))
        });
        Ok(())
    }

    fn snapshot(&self, group: GroupId) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.view.get(&group).and_then(|log| log.snapshot.clone()))
    }

    fn flush(&mut self) -> impl Future<Output = Result<(), StorageError>> + Send {
        let result = self.check_writable().map(|()| {
            // The view already holds every staged write; what made them
            // undoable is no longer needed, nor are the entries compactions
            // hid.
            for (group, undo) in self.undo.drain(..) {
                if let Undo::Compact { .. } = undo
                    && let Some(log) = self.view.get_mut(&group)
                {
                    log.drop_hidden();
                }
            }
            self.flushes += 1;
        });
        ready(result)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use raft_api::{Hlc, Membership, NodeId, Payload, SnapshotMeta, Term};

    use super::*;
    use crate::test_util::block_on;

    const G: GroupId = GroupId(1);

    fn entry(term: u64, index: u64, data: &'static [u8]) -> Entry {
        Entry {
            id: LogId::new(Term(term), LogIndex(index)),
            timestamp: Hlc::new(index, 0),
            payload: if data.is_empty() {
                Payload::Blank
            } else {
                Payload::Command(Bytes::from_static(data))
            },
        }
    }

    /// Entries `from..=to` in `term`, each carrying a 1-byte command.
    fn run(term: u64, from: u64, to: u64) -> Vec<Entry> {
        (from..=to).map(|i| entry(term, i, b"x")).collect()
    }

    fn id(term: u64, index: u64) -> LogId {
        LogId::new(Term(term), LogIndex(index))
    }

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.id.index.0).collect()
    }

    fn all(store: &MemLogStore, group: GroupId) -> Vec<Entry> {
        let state = store.log_state(group).unwrap();
        store
            .entries(
                group,
                state.compacted.index.next()..state.last.index.next(),
                usize::MAX,
            )
            .unwrap()
    }

    /// The id of the entry at `index`, which is stored or the compaction
    /// point.
    fn id_at(store: &MemLogStore, group: GroupId, index: LogIndex) -> LogId {
        let state = store.log_state(group).unwrap();
        if index == state.compacted.index {
            return state.compacted;
        }
        store
            .entries(group, index..index.next(), usize::MAX)
            .unwrap()[0]
            .id
    }

    /// A snapshot as of `id(term, index)` of a three-voter group.
    fn snap(term: u64, index: u64, data: &'static [u8]) -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                last: id(term, index),
                membership: Membership::new([1, 2, 3].map(NodeId)),
            },
            data: Bytes::from_static(data),
        }
    }

    fn flush(store: &mut MemLogStore) -> Result<(), StorageError> {
        block_on(store.flush())
    }

    fn hs(term: u64, vote: Option<u64>, commit: u64) -> HardState {
        HardState {
            term: Term(term),
            vote: vote.map(NodeId),
            commit: LogIndex(commit),
        }
    }

    #[test]
    fn empty_store_has_defaults() {
        let store = MemLogStore::new();
        assert!(store.groups().unwrap().is_empty());
        assert_eq!(store.hard_state(G).unwrap(), HardState::default());
        assert_eq!(store.log_state(G).unwrap(), LogState::default());
        assert!(!store.has_unflushed());
        assert_eq!(store.flushes(), 0);
    }

    #[test]
    fn append_and_read_back() {
        let mut store = MemLogStore::new();
        store.append(G, &run(1, 1, 3)).unwrap();
        store.append(G, &run(2, 4, 5)).unwrap();
        assert_eq!(
            store.log_state(G).unwrap(),
            LogState {
                compacted: LogId::default(),
                last: id(2, 5)
            }
        );
        let got = store
            .entries(G, LogIndex(2)..LogIndex(5), usize::MAX)
            .unwrap();
        assert_eq!(indexes(&got), [2, 3, 4]);
        assert_eq!(got[2].id, id(2, 4));
        assert_eq!(got[0], entry(1, 2, b"x"));
    }

    #[test]
    fn append_must_follow_last_index() {
        let mut store = MemLogStore::new();
        let err = store.append(G, &run(1, 2, 3)).unwrap_err();
        assert!(matches!(
            err,
            StorageError::NotContiguous {
                group: G,
                last: LogIndex(0),
                got: LogIndex(2)
            }
        ));
        store.append(G, &run(1, 1, 3)).unwrap();
        // Overlapping the existing log.
        let err = store.append(G, &run(1, 3, 4)).unwrap_err();
        assert!(matches!(
            err,
            StorageError::NotContiguous {
                last: LogIndex(3),
                got: LogIndex(3),
                ..
            }
        ));
        // A gap inside the batch: nothing of it is stored.
        let batch = vec![entry(1, 4, b"a"), entry(1, 6, b"b")];
        let err = store.append(G, &batch).unwrap_err();
        assert!(matches!(
            err,
            StorageError::NotContiguous {
                last: LogIndex(4),
                got: LogIndex(6),
                ..
            }
        ));
        assert_eq!(store.log_state(G).unwrap().last, id(1, 3));
    }

    #[test]
    fn empty_append_is_a_no_op() {
        let mut store = MemLogStore::new();
        store.append(G, &[]).unwrap();
        assert!(!store.has_unflushed());
        assert!(store.groups().unwrap().is_empty());
    }

    #[test]
    fn append_after_compacting_everything() {
        let mut store = MemLogStore::new();
        store.append(G, &run(1, 1, 3)).unwrap();
        store.compact(G, id(1, 3)).unwrap();
        assert_eq!(
            store.log_state(G).unwrap(),
            LogState {
                compacted: id(1, 3),
                last: id(1, 3)
            }
        );
        assert!(store.append(G, &run(1, 5, 5)).is_err());
        store.append(G, &run(2, 4, 5)).unwrap();
        assert_eq!(indexes(&all(&store, G)), [4, 5]);
    }

    #[test]
    fn truncate_removes_suffix() {
        let mut store = MemLogStore::new();
        store.append(G, &run(1, 1, 5)).unwrap();
        store.truncate(G, LogIndex(4)).unwrap();
        assert_eq!(store.log_state(G).unwrap().last, id(1, 3));
        assert_eq!(indexes(&all(&store, G)), [1, 2, 3]);
        // The log can then be rewritten from there.
        store.append(G, &run(2, 4, 4)).unwrap();
        assert_eq!(store.log_state(G).unwrap().last, id(2, 4));
    }

    #[test]
    fn truncate_everything_leaves_compacted_as_last() {
        let mut store = MemLogStore::new();
        store.append(G, &run(1, 1, 5)).unwrap();
        store.compact(G, id(1, 2)).unwrap();
        store.truncate(G, LogIndex(3)).unwrap();
        assert_eq!(
            store.log_state(G).unwrap(),
            LogState {
                compacted: id(1, 2),
                last: id(1, 2)
            }
        );
    }

    #[test]
    fn truncate_past_the_end_is_a_no_op() {
        let mut store = MemLogStore::new();
        store.append(G, &run(1, 1, 3)).unwrap();
        block_on(store.flush()).unwrap();
        store.truncate(G, LogIndex(4)).unwrap();
        store.truncate(G, LogIndex(100)).unwrap();
        assert!(!store.has_unflushed());
        assert_eq!(store.log_state(G).unwrap().last, id(1, 3));
    }

    #[test]
    fn truncate_into_compacted_part_is_an_error() {
        let mut store = MemLogStore::new();
        store.append(G, &run(1, 1, 5)).unwrap();
        store.compact(G, id(1, 2)).unwrap();
        for from in [0, 1, 2] {
            let err = store.truncate(G, LogIndex(from)).unwrap_err();
            assert!(matches!(
                err,
                StorageError::Compacted { group: G, compacted: LogIndex(2), asked } if asked == LogIndex(from)
            ));
        }
        assert_eq!(indexes(&all(&store, G)), [3, 4, 5]);
        // Index 0 is never an entry, even in a fresh log.
        assert!(matches!(
            store.truncate(GroupId(9), LogIndex(0)),
            Err(StorageError::Compacted { .. })
        ));
    }

    #[test]
    fn compact_removes_prefix() {
        let mut store = MemLogStore::new();
        store.append(G, &run(1, 1, 2)).unwrap();
        store.append(G, &run(2, 3, 5)).unwrap();
        store.compact(G, id(2, 3)).unwrap();
        assert_eq!(
            store.log_state(G).unwrap(),
            LogState {
                compacted: id(2, 3),
                last: id(2, 5)
            }
        );
        assert_eq!(indexes(&all(&store, G)), [4, 5]);
    }

    #[test]
    fn compact_already_compacted_is_a_no_op() {
        let mut store = MemLogStore::new();
        store.append(G, &run(1, 1, 5)).unwrap();
        store.compact(G, id(1, 3)).unwrap();
        flush(&mut store).unwrap();
        store.compact(G, id(1, 3)).unwrap();
        store.compact(G, id(1, 1)).unwrap();
        store.compact(G, LogId::default()).unwrap();
        // Same or lower index with another term: still nothing.
        store.compact(G, id(9, 3)).unwrap();
        store.compact(G, id(9, 2)).unwrap();
        assert!(!store.has_unflushed());
        assert_eq!(
            store.log_state(G).unwrap(),
            LogState {
                compacted: id(1, 3),
                last: id(1, 5)
            }
        );
        assert_eq!(indexes(&all(&store, G)), [4, 5]);
        // Compacting to 0 on an unknown group is also a no-op.
        store.compact(GroupId(7), LogId::default()).unwrap();
        assert_eq!(store.groups().unwrap(), [G]);
        assert!(!store.has_unflushed());
    }

    #[test]
    fn compact_at_or_before_a_point_past_the_end_is_a_no_op() {
        let mut store = MemLogStore::new();
        store.append(G, &run(1, 1, 3)).unwrap();
        store.compact(G, id(2, 10)).unwrap();
        flush(&mut store).unwrap();
        store.compact(G, id(2, 10)).unwrap();
        store.compact(G, id(1, 3)).unwrap();
        store.compact(G, id(3, 7)).unwrap();
        assert!(!store.has_unflushed());
        assert_eq!(
            store.log_state(G).unwrap(),
            LogState {
                compacted: id(2, 10),
                last: id(2, 10)
            }
        );
    }

    #[test]
    fn compact_past_the_end_empties_the_log() {
        let mut store = MemLogStore::new();
        store.append(G, &run(1, 1, 3)).unwrap();
        store.compact(G, id(4, 10)).unwrap();
        let moved = LogState {
            compacted: id(4, 10),
            last: id(4, 10),
        };
        assert_eq!(store.log_state(G).unwrap(), moved);
        assert!(all(&store, G).is_empty());
        // The old entries are gone, not merely hidden.
        assert!(matches!(
            store.entries(G, LogIndex(3)..LogIndex(4), usize::MAX),
            Err(StorageError::Compacted {
                group: G,
                compacted: LogIndex(10),
                asked: LogIndex(3)
            })
        ));
        assert!(matches!(
            store.truncate(G, LogIndex(10)),
            Err(StorageError::Compacted { .. })
        ));
        // And it is a staged write like the others.
        flush(&mut store).unwrap();
        store.crash();
        assert_eq!(store.log_state(G).unwrap(), moved);
        assert!(all(&store, G).is_empty());
    }

    #[test]
    fn compact_just_past_the_end_of_a_compacted_log() {
        let mut store = MemLogStore::new();
        store.append(G, &run(1, 1, 5)).unwrap();
        store.compact(G, id(1, 2)).unwrap();
        store.compact(G, id(3, 6)).unwrap();
        assert_eq!(
            store.log_state(G).unwrap(),
            LogState {
                compacted: id(3, 6),
                last: id(3, 6)
            }
        );
        assert!(all(&store, G).is_empty());
    }

    #[test]
    fn compact_past_the_end_of_an_unknown_group() {
        let mut store = MemLogStore::new();
        let g = GroupId(2);
        store.compact(g, id(2, 5)).unwrap();
        assert_eq!(store.groups().unwrap(), [g]);
        assert_eq!(
            store.log_state(g).unwrap(),
            LogState {
                compacted: id(2, 5),
                last: id(2, 5)
            }
        );
        assert_eq!(store.hard_state(g).unwrap(), HardState::default());
        store.append(g, &run(2, 6, 6)).unwrap();
        assert_eq!(indexes(&all(&store, g)), [6]);
    }

    #[test]
    fn compacted_term_comes_from_the_argument() {
        let mut store = MemLogStore::new();
        store.append(G, &run(1, 1, 5)).unwrap();
        store.compact(G, id(2, 3)).unwrap();
        assert_eq!(
            store.log_state(G).unwrap(),
            LogState {
                compacted: id(2, 3),
                last: id(1, 5)
            }
        );
        assert_eq!(indexes(&all(&store, G)), [4, 5]);
    }

    #[test]
    fn append_after_compacting_past_the_end_starts_after_upto() {
        let mut store = MemLogStore::new();
        store.append(G, &run(1, 1, 3)).unwrap();
        store.compact(G, id(4, 10)).unwrap();
        // Where the old log ended, and a gap after upto: both refused.
        for start in [4, 10, 12] {
            assert!(matches!(
                store.append(G, &run(4, start, start)),
                Err(StorageError::NotContiguous {
                    group: G,
                    last: LogIndex(10),
                    got
                }) if got == LogIndex(start)
            ));
        }
        store.append(G, &run(5, 11, 12)).unwrap();
        assert_eq!(
            store.log_state(G).unwrap(),
            LogState {
                compacted: id(4, 10),
                last: id(5, 12)
            }
        );
        assert_eq!(indexes(&all(&store, G)), [11, 12]);
        flush(&mut store).unwrap();
        store.crash();
        assert_eq!(indexes(&all(&store, G)), [11, 12]);
        assert_eq!(store.log_state(G).unwrap().compacted, id(4, 10));
    }

    #[test]
    fn entries_range_errors() {
        let mut store = MemLogStore::new();
        store.append(G, &run(1, 1, 5)).unwrap();
        store.compact(G, id(1, 2)).unwrap();
        let err = store
            .entries(G, LogIndex(2)..LogIndex(4), usize::MAX)
            .unwrap_err();
        assert!(matches!(
            err,
            StorageError::Compacted {
                group: G,
                compacted: LogIndex(2),
                asked: LogIndex(2)
            }
        ));
        let err = store
            .entries(G, LogIndex(3)..LogIndex(7), usize::MAX)
            .unwrap_err();
        assert!(matches!(
            err,
            StorageError::Unavailable {
                group: G,
                last: LogIndex(5),
                asked: LogIndex(6)
            }
        ));
        // Up to last + 1 is fine.
        let got = store
            .entries(G, LogIndex(3)..LogIndex(6), usize::MAX)
            .unwrap();
        assert_eq!(indexes(&got), [3, 4, 5]);
        // Unknown group.
        assert!(matches!(
            store.entries(GroupId(3), LogIndex(1)..LogIndex(2), usize::MAX),
            Err(StorageError::Unavailable {
                last: LogIndex(0),
                ..
            })
        ));
    }

    #[test]
    fn entries_empty_range_is_empty() {
        let mut store = MemLogStore::new();
        store.append(G, &run(1, 1, 5)).unwrap();
        for (start, end) in [(3, 3), (4, 2), (6, 6), (100, 100)] {
            let got = store
                .entries(G, LogIndex(start)..LogIndex(end), usize::MAX)
                .unwrap();
            assert!(got.is_empty());
        }
    }

    #[test]
    fn entries_respect_byte_bound() {
        let mut store = MemLogStore::new();
        // Each entry is 24 + 1 bytes.
        store.append(G, &run(1, 1, 5)).unwrap();
        let range = || LogIndex(1)..LogIndex(6);
        assert_eq!(store.entries(G, range(), 0).unwrap().len(), 1);
        assert_eq!(store.entries(G, range(), 24).unwrap().len(), 1);
        assert_eq!(store.entries(G, range(), 25).unwrap().len(), 1);
        assert_eq!(store.entries(G, range(), 49).unwrap().len(), 1);
        assert_eq!(store.entries(G, range(), 50).unwrap().len(), 2);
        assert_eq!(store.entries(G, range(), 74).unwrap().len(), 2);
        assert_eq!(store.entries(G, range(), 75).unwrap().len(), 3);
        assert_eq!(store.entries(G, range(), 1000).unwrap().len(), 5);
        // The first entry comes back even when it alone exceeds the bound.
        store.append(G, &[entry(1, 6, &[7; 100])]).unwrap();
        let got = store.entries(G, LogIndex(6)..LogIndex(7), 10).unwrap();
        assert_eq!(indexes(&got), [6]);
        let got = store.entries(G, LogIndex(5)..LogIndex(7), 30).unwrap();
        assert_eq!(indexes(&got), [5]);
    }

    #[test]
    fn hard_state_is_per_group() {
        let mut store = MemLogStore::new();
        store.save_hard_state(G, hs(3, Some(2), 1)).unwrap();
        assert_eq!(store.hard_state(G).unwrap(), hs(3, Some(2), 1));
        assert_eq!(store.hard_state(GroupId(2)).unwrap(), HardState::default());
        store.save_hard_state(G, hs(4, None, 1)).unwrap();
        assert_eq!(store.hard_state(G).unwrap(), hs(4, None, 1));
    }

    #[test]
    fn groups_are_independent_and_listed_sorted() {
        let mut store = MemLogStore::new();
        let (a, b, c) = (GroupId(5), GroupId(1), GroupId(3));
        store.append(a, &run(1, 1, 4)).unwrap();
        store.append(b, &run(7, 1, 2)).unwrap();
        store.save_hard_state(c, hs(2, None, 0)).unwrap();
        assert_eq!(store.groups().unwrap(), [b, c, a]);

        store.truncate(a, LogIndex(3)).unwrap();
        store.compact(b, id(7, 1)).unwrap();
        assert_eq!(store.log_state(a).unwrap().last, id(1, 2));
        assert_eq!(store.log_state(b).unwrap().compacted, id(7, 1));
        assert_eq!(store.log_state(b).unwrap().last, id(7, 2));
        assert_eq!(store.log_state(c).unwrap(), LogState::default());
        assert_eq!(store.hard_state(a).unwrap(), HardState::default());
        assert_eq!(store.hard_state(c).unwrap(), hs(2, None, 0));
        // Appending to one group does not depend on another's last index.
        store.append(c, &run(2, 1, 1)).unwrap();
        assert!(store.append(b, &run(7, 1, 1)).is_err());
    }

    #[test]
    fn flush_makes_writes_durable() {
        let mut store = MemLogStore::new();
        store.save_hard_state(G, hs(1, Some(1), 0)).unwrap();
        store.append(G, &run(1, 1, 3)).unwrap();
        assert!(store.has_unflushed());
        flush(&mut store).unwrap();
        assert!(!store.has_unflushed());
        assert_eq!(store.flushes(), 1);
        store.crash();
        assert_eq!(store.hard_state(G).unwrap(), hs(1, Some(1), 0));
        assert_eq!(indexes(&all(&store, G)), [1, 2, 3]);
        // A flush with nothing staged still counts.
        flush(&mut store).unwrap();
        assert_eq!(store.flushes(), 2);
    }

    #[test]
    fn flush_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let mut store = MemLogStore::new();
        let fut = store.flush();
        assert_send(&fut);
        block_on(fut).unwrap();
    }

    #[test]
    fn crash_loses_exactly_unflushed_writes() {
        let mut store = MemLogStore::new();
        store.save_hard_state(G, hs(1, Some(1), 2)).unwrap();
        store.append(G, &run(1, 1, 6)).unwrap();
        store.compact(G, id(1, 1)).unwrap();
        flush(&mut store).unwrap();
        let durable_entries = all(&store, G);
        let durable_state = store.log_state(G).unwrap();

        // Every kind of write, staged and lost.
        store.save_hard_state(G, hs(2, None, 4)).unwrap();
        store.truncate(G, LogIndex(5)).unwrap();
        store.append(G, &run(2, 5, 8)).unwrap();
        store.compact(G, id(1, 3)).unwrap();
        store.append(GroupId(2), &run(1, 1, 1)).unwrap();
        assert_eq!(store.log_state(G).unwrap().last, id(2, 8));
        assert_eq!(store.groups().unwrap(), [G, GroupId(2)]);

        store.crash();
        assert!(!store.has_unflushed());
        assert_eq!(store.hard_state(G).unwrap(), hs(1, Some(1), 2));
        assert_eq!(store.log_state(G).unwrap(), durable_state);
        assert_eq!(all(&store, G), durable_entries);
        assert_eq!(store.groups().unwrap(), [G]);
        assert_eq!(store.flushes(), 1);

        // A second crash without writes changes nothing.
        store.crash();
        assert_eq!(all(&store, G), durable_entries);
    }

    #[test]
    fn flushed_truncation_and_compaction_survive_crash() {
        let mut store = MemLogStore::new();
        store.append(G, &run(1, 1, 6)).unwrap();
        flush(&mut store).unwrap();
        store.truncate(G, LogIndex(5)).unwrap();
        store.append(G, &run(3, 5, 7)).unwrap();
        store.compact(G, id(1, 2)).unwrap();
        store.save_hard_state(G, hs(3, Some(9), 2)).unwrap();
        let expected = all(&store, G);
        flush(&mut store).unwrap();
        // Staged after the flush, then lost.
        store.truncate(G, LogIndex(4)).unwrap();
        store.crash();
        assert_eq!(
            store.log_state(G).unwrap(),
            LogState {
                compacted: id(1, 2),
                last: id(3, 7)
            }
        );
        assert_eq!(all(&store, G), expected);
        assert_eq!(indexes(&expected), [3, 4, 5, 6, 7]);
        assert_eq!(expected[2].id, id(3, 5));
        assert_eq!(store.hard_state(G).unwrap(), hs(3, Some(9), 2));
    }

    #[test]
    fn flush_then_crash_changes_nothing() {
        // Many interleaved writes across groups, flushed at irregular points:
        // after each flush a crash must not change anything visible.
        let mut store = MemLogStore::new();
        let groups = [GroupId(0), GroupId(1), GroupId(2)];
        let mut step = 0u64;
        for round in 1..=32u64 {
            for &g in &groups {
                step += 1;
                let last = store.log_state(g).unwrap().last.index.0;
                store.append(g, &run(round, last + 1, last + 3)).unwrap();
                if step.is_multiple_of(3) {
                    store.truncate(g, LogIndex(last + 2)).unwrap();
                }
                if step.is_multiple_of(4) {
                    let upto = id_at(&store, g, LogIndex(last));
                    store.compact(g, upto).unwrap();
                }
                if step.is_multiple_of(7) {
                    // Past the end, as when installing a snapshot.
                    store.compact(g, id(round, last + 5)).unwrap();
                }
                if step.is_multiple_of(5) {
                    store
                        .save_snapshot(g, &snap(round, last, b"image"))
                        .unwrap();
                }
                store.save_hard_state(g, hs(round, None, last)).unwrap();
            }
            if round.is_multiple_of(4) {
                let before: Vec<_> = groups
                    .iter()
                    .map(|&g| {
                        (
                            store.hard_state(g).unwrap(),
                            store.log_state(g).unwrap(),
                            all(&store, g),
                            store.snapshot(g).unwrap(),
                        )
                    })
                    .collect();
                flush(&mut store).unwrap();
                store.crash();
                let after: Vec<_> = groups
                    .iter()
                    .map(|&g| {
                        (
                            store.hard_state(g).unwrap(),
                            store.log_state(g).unwrap(),
                            all(&store, g),
                            store.snapshot(g).unwrap(),
                        )
                    })
                    .collect();
                assert_eq!(before, after);
            }
        }
        // Whatever was staged last, a flush leaves nothing to undo.
        for &g in &groups {
            let last = store.log_state(g).unwrap().last.index.0;
            store.append(g, &run(40, last + 1, last + 2)).unwrap();
            store.truncate(g, LogIndex(last + 2)).unwrap();
        }
        let view = store.view.clone();
        assert!(store.has_unflushed());
        flush(&mut store).unwrap();
        assert!(store.undo.is_empty());
        store.crash();
        assert_eq!(store.view, view);
    }

    #[test]
    fn compacted_entries_stay_hidden_until_the_flush_drops_them() {
        let mut store = MemLogStore::new();
        store.append(G, &run(1, 1, 6)).unwrap();
        flush(&mut store).unwrap();
        // Two compactions and appends after them, all staged.
        store.compact(G, id(1, 2)).unwrap();
        store.append(G, &run(1, 7, 8)).unwrap();
        store.compact(G, id(1, 4)).unwrap();
        assert_eq!(indexes(&all(&store, G)), [5, 6, 7, 8]);
        assert_eq!(id_at(&store, G, LogIndex(5)), id(1, 5));
        store.truncate(G, LogIndex(8)).unwrap();
        assert_eq!(indexes(&all(&store, G)), [5, 6, 7]);
        // A crash shows the flushed log again, in order.
        store.crash();
        assert_eq!(indexes(&all(&store, G)), [1, 2, 3, 4, 5, 6]);
        assert_eq!(store.log_state(G).unwrap().compacted, LogId::default());
        // Flushed, the removed entries are gone from memory too.
        store.compact(G, id(1, 4)).unwrap();
        assert_eq!(store.view[&G].entries.len(), 6);
        flush(&mut store).unwrap();
        assert_eq!(store.view[&G].entries.len(), 2);
        assert_eq!(store.view[&G].hidden, 0);
        store.crash();
        assert_eq!(indexes(&all(&store, G)), [5, 6]);
    }

    #[test]
    fn a_crash_undoes_appends_after_a_compaction_past_the_end() {
        let mut store = MemLogStore::new();
        store.append(G, &run(1, 1, 3)).unwrap();
        flush(&mut store).unwrap();
        store.compact(G, id(2, 10)).unwrap();
        store.append(G, &run(2, 11, 12)).unwrap();
        assert_eq!(indexes(&all(&store, G)), [11, 12]);
        assert_eq!(store.log_state(G).unwrap().last, id(2, 12));
        store.crash();
        assert_eq!(indexes(&all(&store, G)), [1, 2, 3]);
        assert_eq!(
            store.log_state(G).unwrap(),
            LogState {
                compacted: LogId::default(),
                last: id(1, 3),
            }
        );
    }

    #[test]
    fn crash_restores_truncated_flushed_entries() {
        let mut store = MemLogStore::new();
        let flushed = vec![
            entry(1, 1, b"a"),
            entry(1, 2, b"bb"),
            entry(2, 3, b"ccc"),
            entry(2, 4, b""),
        ];
        store.append(G, &flushed).unwrap();
        flush(&mut store).unwrap();
        // Truncated twice, once all the way down, and rewritten in between.
        store.truncate(G, LogIndex(3)).unwrap();
        store.append(G, &[entry(3, 3, b"new")]).unwrap();
        store.truncate(G, LogIndex(1)).unwrap();
        assert!(all(&store, G).is_empty());
        store.crash();
        assert_eq!(all(&store, G), flushed);
        assert_eq!(store.log_state(G).unwrap().last, id(2, 4));
        // The restored entries are a log like any other.
        store.append(G, &run(2, 5, 5)).unwrap();
        assert_eq!(indexes(&all(&store, G)), [1, 2, 3, 4, 5]);
    }

    #[test]
    fn crash_restores_compacted_flushed_entries() {
        let mut store = MemLogStore::new();
        store.append(G, &run(1, 1, 6)).unwrap();
        store.compact(G, id(1, 1)).unwrap();
        flush(&mut store).unwrap();
        let flushed = all(&store, G);
        // A compaction inside the log, one past its end, and appends after
        // each.
        store.compact(G, id(1, 3)).unwrap();
        store.append(G, &run(1, 7, 8)).unwrap();
        store.compact(G, id(4, 20)).unwrap();
        store.append(G, &run(4, 21, 21)).unwrap();
        assert_eq!(indexes(&all(&store, G)), [21]);
        store.crash();
        assert_eq!(
            store.log_state(G).unwrap(),
            LogState {
                compacted: id(1, 1),
                last: id(1, 6)
            }
        );
        assert_eq!(all(&store, G), flushed);
        assert_eq!(indexes(&flushed), [2, 3, 4, 5, 6]);
        let got = store
            .entries(G, LogIndex(2)..LogIndex(4), usize::MAX)
            .unwrap();
        assert_eq!(got, run(1, 2, 3));
    }

    #[test]
    fn crash_undoes_only_the_last_round() {
        let mut store = MemLogStore::new();
        // Round 1: a log, a hard state and a snapshot.
        store.append(G, &run(1, 1, 5)).unwrap();
        store.save_hard_state(G, hs(1, Some(1), 2)).unwrap();
        store.save_snapshot(G, &snap(1, 2, b"one")).unwrap();
        flush(&mut store).unwrap();
        // Round 2: every kind of write, and a second group.
        store.truncate(G, LogIndex(5)).unwrap();
        store.append(G, &run(2, 5, 7)).unwrap();
        store.compact(G, id(1, 2)).unwrap();
        store.save_hard_state(G, hs(2, None, 4)).unwrap();
        store.save_snapshot(G, &snap(1, 2, b"two")).unwrap();
        store.append(GroupId(2), &run(1, 1, 2)).unwrap();
        flush(&mut store).unwrap();
        let durable = (
            store.groups().unwrap(),
            store.hard_state(G).unwrap(),
            store.log_state(G).unwrap(),
            all(&store, G),
            store.snapshot(G).unwrap(),
            all(&store, GroupId(2)),
        );
        // Round 3, lost: the same kinds of writes again, and a new group.
        store.truncate(G, LogIndex(4)).unwrap();
        store.append(G, &run(3, 4, 9)).unwrap();
        store.compact(G, id(3, 6)).unwrap();
        store.save_hard_state(G, hs(3, Some(2), 6)).unwrap();
        store.save_snapshot(G, &snap(3, 6, b"three")).unwrap();
        store.compact(GroupId(2), id(1, 2)).unwrap();
        store.save_hard_state(GroupId(3), hs(1, None, 0)).unwrap();
        store.crash();
        let after = (
            store.groups().unwrap(),
            store.hard_state(G).unwrap(),
            store.log_state(G).unwrap(),
            all(&store, G),
            store.snapshot(G).unwrap(),
            all(&store, GroupId(2)),
        );
        assert_eq!(after, durable);
        assert_eq!(durable.0, [G, GroupId(2)]);
        assert_eq!(durable.1, hs(2, None, 4));
        assert_eq!(indexes(&durable.3), [3, 4, 5, 6, 7]);
        assert_eq!(durable.3[2].id, id(2, 5));
        assert_eq!(durable.4, Some(snap(1, 2, b"two")));
        assert_eq!(indexes(&durable.5), [1, 2]);
        assert!(!store.has_unflushed());
        assert_eq!(store.flushes(), 2);
    }

    #[test]
    fn injected_failures_change_nothing() {
        let mut store = MemLogStore::new();
        store.append(G, &run(1, 1, 4)).unwrap();
        flush(&mut store).unwrap();
        store.save_hard_state(G, hs(1, None, 1)).unwrap();

        store.fail_writes(true);
        let is_injected = |r: Result<(), StorageError>| matches!(r, Err(StorageError::Other(ref s)) if s == "injected write failure");
        assert!(is_injected(store.save_hard_state(G, hs(9, None, 9))));
        assert!(is_injected(store.append(G, &run(1, 5, 5))));
        assert!(is_injected(store.append(G, &[])));
        assert!(is_injected(store.truncate(G, LogIndex(2))));
        assert!(is_injected(store.compact(G, id(1, 2))));
        assert!(is_injected(store.compact(G, id(1, 9))));
        assert!(is_injected(store.save_snapshot(G, &snap(1, 2, b"s"))));
        assert!(is_injected(flush(&mut store)));
        // Reads still work and show nothing new; the earlier staged write is
        // still staged, not flushed.
        assert_eq!(store.hard_state(G).unwrap(), hs(1, None, 1));
        assert_eq!(indexes(&all(&store, G)), [1, 2, 3, 4]);
        assert_eq!(store.log_state(G).unwrap().compacted, LogId::default());
        assert_eq!(store.snapshot(G).unwrap(), None);
        assert!(store.has_unflushed());
        assert_eq!(store.flushes(), 1);

        store.fail_writes(false);
        flush(&mut store).unwrap();
        assert_eq!(store.flushes(), 2);
        store.crash();
        assert_eq!(store.hard_state(G).unwrap(), hs(1, None, 1));
        assert_eq!(indexes(&all(&store, G)), [1, 2, 3, 4]);
    }

    #[test]
    fn injected_failure_keeps_the_previous_snapshot() {
        let mut store = MemLogStore::new();
        store.save_snapshot(G, &snap(1, 3, b"old")).unwrap();
        flush(&mut store).unwrap();
        store.fail_writes(true);
        assert!(matches!(
            store.save_snapshot(G, &snap(2, 5, b"new")),
            Err(StorageError::Other(ref s)) if s == "injected write failure"
        ));
        assert!(matches!(
            store.save_snapshot(GroupId(4), &snap(2, 5, b"new")),
            Err(StorageError::Other(_))
        ));
        assert!(!store.has_unflushed());
        assert_eq!(store.snapshot(G).unwrap(), Some(snap(1, 3, b"old")));
        assert_eq!(store.snapshot(GroupId(4)).unwrap(), None);
        assert_eq!(store.groups().unwrap(), [G]);
    }

    #[test]
    fn snapshot_of_unknown_group_is_none() {
        let mut store = MemLogStore::new();
        assert_eq!(store.snapshot(G).unwrap(), None);
        // Nor does another group's snapshot or log show up.
        store.save_snapshot(GroupId(2), &snap(1, 1, b"s")).unwrap();
        store.append(G, &run(1, 1, 2)).unwrap();
        assert_eq!(store.snapshot(G).unwrap(), None);
        assert_eq!(store.snapshot(GroupId(3)).unwrap(), None);
    }

    #[test]
    fn saved_snapshot_is_visible_before_flush() {
        let mut store = MemLogStore::new();
        store.save_snapshot(G, &snap(2, 7, b"image")).unwrap();
        assert!(store.has_unflushed());
        assert_eq!(store.snapshot(G).unwrap(), Some(snap(2, 7, b"image")));
        assert_eq!(store.groups().unwrap(), [G]);
        // Saving a snapshot touches neither the log nor the hard state.
        assert_eq!(store.log_state(G).unwrap(), LogState::default());
        assert_eq!(store.hard_state(G).unwrap(), HardState::default());
    }

    #[test]
    fn flushed_snapshot_survives_crash() {
        let mut store = MemLogStore::new();
        store.append(G, &run(1, 1, 4)).unwrap();
        store.save_snapshot(G, &snap(1, 3, b"image")).unwrap();
        store.compact(G, id(1, 3)).unwrap();
        flush(&mut store).unwrap();
        assert!(!store.has_unflushed());
        store.crash();
        assert_eq!(store.snapshot(G).unwrap(), Some(snap(1, 3, b"image")));
        assert_eq!(store.log_state(G).unwrap().compacted, id(1, 3));
        assert_eq!(indexes(&all(&store, G)), [4]);
    }

    #[test]
    fn unflushed_snapshot_is_lost_on_crash() {
        let mut store = MemLogStore::new();
        store.save_snapshot(G, &snap(1, 3, b"first")).unwrap();
        store.crash();
        assert_eq!(store.snapshot(G).unwrap(), None);
        assert!(store.groups().unwrap().is_empty());

        // With a flushed one underneath, the crash brings that one back.
        store.save_snapshot(G, &snap(1, 3, b"first")).unwrap();
        flush(&mut store).unwrap();
        store.save_snapshot(G, &snap(2, 8, b"second")).unwrap();
        assert_eq!(store.snapshot(G).unwrap(), Some(snap(2, 8, b"second")));
        store.crash();
        assert_eq!(store.snapshot(G).unwrap(), Some(snap(1, 3, b"first")));
    }

    #[test]
    fn later_snapshot_replaces_earlier() {
        let mut store = MemLogStore::new();
        store.save_snapshot(G, &snap(1, 3, b"first")).unwrap();
        store.save_snapshot(G, &snap(2, 8, b"second")).unwrap();
        assert_eq!(store.snapshot(G).unwrap(), Some(snap(2, 8, b"second")));
        flush(&mut store).unwrap();
        store.crash();
        assert_eq!(store.snapshot(G).unwrap(), Some(snap(2, 8, b"second")));
        // Replaced across flushes too, and per group.
        store
            .save_snapshot(GroupId(2), &snap(5, 5, b"other"))
            .unwrap();
        store.save_snapshot(G, &snap(3, 9, b"third")).unwrap();
        flush(&mut store).unwrap();
        store.crash();
        assert_eq!(store.snapshot(G).unwrap(), Some(snap(3, 9, b"third")));
        assert_eq!(
            store.snapshot(GroupId(2)).unwrap(),
            Some(snap(5, 5, b"other"))
        );
    }

    #[test]
    fn failed_flush_then_crash_loses_staged_writes() {
        let mut store = MemLogStore::new();
        store.append(G, &run(1, 1, 2)).unwrap();
        store.fail_writes(true);
        assert!(flush(&mut store).is_err());
        store.crash();
        store.fail_writes(false);
        assert_eq!(store.log_state(G).unwrap(), LogState::default());
        assert!(store.groups().unwrap().is_empty());
    }

    #[test]
    fn clone_is_independent() {
        let mut store = MemLogStore::new();
        store.append(G, &run(1, 1, 2)).unwrap();
        let copy = store.clone();
        store.crash();
        assert_eq!(copy.log_state(G).unwrap().last, id(1, 2));
        assert_eq!(store.log_state(G).unwrap().last, LogId::default());
    }
}
