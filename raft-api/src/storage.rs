//! Storage traits: the replicated log and the state machine.

use std::future::Future;
use std::ops::Range;

use bytes::Bytes;

use crate::error::StorageError;
use crate::membership::Snapshot;
use crate::types::{Entry, GroupId, HardState, LogId, LogIndex};

/// Where a group's log starts and ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogState {
    /// The entry just before the first stored one: `LogId::default()` for a
    /// log that was never compacted, otherwise the last compacted entry.
    pub compacted: LogId,
    /// The last stored entry (`compacted` when the log is empty).
    pub last: LogId,
}

/// The durable log and hard state of every Raft group on a node.
///
/// Writes are *staged*: [`save_hard_state`](Self::save_hard_state),
/// [`append`](Self::append), [`truncate`](Self::truncate) and
/// [`compact`](Self::compact) return at once and become durable together at
/// the next [`flush`](Self::flush). A driver stages the writes of every group
/// it runs in one turn, flushes once (one fsync for all groups: group commit)
/// and only then sends the messages that promise durability. Reads see staged
/// writes. A crash loses whatever was staged but not flushed, and nothing
/// else.
pub trait LogStore: Send + 'static {
    /// Groups with any stored state.
    fn groups(&self) -> Result<Vec<GroupId>, StorageError>;

    /// The group's hard state; the default one for a group never written.
    fn hard_state(&self, group: GroupId) -> Result<HardState, StorageError>;

    /// First and last entries of the group's log.
    fn log_state(&self, group: GroupId) -> Result<LogState, StorageError>;

    /// Entries with indexes in `range`, in order, stopping early once their
    /// total [`Entry::size`] would pass `max_bytes` (at least one entry is
    /// returned when the range is not empty). Asking for compacted or missing
    /// entries is an error.
    fn entries(
        &self,
        group: GroupId,
        range: Range<LogIndex>,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StorageError>;

    /// Stages a new hard state.
    fn save_hard_state(&mut self, group: GroupId, state: HardState) -> Result<(), StorageError>;

    /// Stages entries that must directly follow the last index.
    fn append(&mut self, group: GroupId, entries: &[Entry]) -> Result<(), StorageError>;

    /// Stages entries like [`append`](Self::append), taking them by value.
    /// A store that keeps staged entries in memory keeps these instead of
    /// copies (the driver hands over every batch it writes this way). The
    /// default calls `append`; an override must behave the same, errors
    /// included.
    fn append_owned(&mut self, group: GroupId, entries: Vec<Entry>) -> Result<(), StorageError> {
        self.append(group, &entries)
    }

    /// Stages removal of every entry at `from` and after.
    fn truncate(&mut self, group: GroupId, from: LogIndex) -> Result<(), StorageError>;

    /// Stages removal of every entry up to and including `upto.index`;
    /// afterwards [`LogState::compacted`] is `upto`. When the log ends before
    /// `upto` (a follower installing a snapshot past its log), every entry is
    /// removed and the log continues right after `upto`. Compacting to a
    /// point at or before the current one does nothing.
    fn compact(&mut self, group: GroupId, upto: LogId) -> Result<(), StorageError>;

    /// Stages `snapshot` as the group's latest snapshot, replacing the
    /// previous one.
    fn save_snapshot(&mut self, group: GroupId, snapshot: &Snapshot) -> Result<(), StorageError>;

    /// The group's latest snapshot, if it has one.
    fn snapshot(&self, group: GroupId) -> Result<Option<Snapshot>, StorageError>;

    /// Makes everything staged so far durable, for all groups at once.
    fn flush(&mut self) -> impl Future<Output = Result<(), StorageError>> + Send;
}

/// The application's replicated state machine for one group.
///
/// It sees committed entries exactly once each, strictly in log order, and
/// answers every entry; the response to a command entry is what the caller
/// who proposed it receives.
pub trait StateMachine: Send + 'static {
    /// Applies a batch of committed, contiguous entries and returns one
    /// response per entry (an empty response for entries that carry no
    /// command). Malformed commands must produce an error response, never a
    /// panic: they are committed and every replica must treat them alike.
    fn apply(&mut self, entries: &[Entry]) -> impl Future<Output = Vec<Bytes>> + Send;

    /// The id of the last entry applied (`LogId::default()` when none).
    fn last_applied(&self) -> LogId;

    /// A serialized image of the state, as of [`last_applied`](Self::last_applied).
    fn snapshot(&self) -> impl Future<Output = Result<Bytes, StorageError>> + Send;

    /// Replaces the state with an image made by [`snapshot`](Self::snapshot)
    /// whose last applied entry is `last`.
    fn restore(
        &mut self,
        last: LogId,
        image: Bytes,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;
}
