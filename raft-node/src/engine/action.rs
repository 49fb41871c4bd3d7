//! What the engine asks its driver to do.

use raft_api::{Entry, Envelope, HardState, LogId, LogIndex, Snapshot};

use crate::error::ReadError;

/// One thing the driver must do, in the order the engine emitted it.
///
/// The persist actions ([`SaveHardState`](Action::SaveHardState),
/// [`TruncateLog`](Action::TruncateLog), [`AppendLog`](Action::AppendLog),
/// [`SaveSnapshot`](Action::SaveSnapshot), [`CompactLog`](Action::CompactLog))
/// are staged in the log store in order. The state machine actions
/// ([`Apply`](Action::Apply), [`RestoreSnapshot`](Action::RestoreSnapshot),
/// [`BuildSnapshot`](Action::BuildSnapshot)) must reach the state machine in
/// the order emitted. A
/// [`SendAfterPersist`](Action::SendAfterPersist) message promises
/// durability (a vote, an append acknowledgement) and must not leave the node
/// until every persist action emitted before it has been flushed. Plain
/// [`Send`](Action::Send) messages may go at once. After a flush the driver
/// reports the last durable entry with
/// [`Engine::on_persisted`](super::Engine::on_persisted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Stage the group's new term, vote and commit index. Emitted when the
    /// term or vote changed, and along with other writes when only the
    /// commit index moved: the commit index on disk may lag behind (it is
    /// a hint for restarts, never a promise).
    SaveHardState(HardState),
    /// Stage removal of every log entry at `from` and after; followed by an
    /// [`AppendLog`](Action::AppendLog) of the replacing entries, or by the
    /// snapshot that replaces the log ([`SaveSnapshot`](Action::SaveSnapshot)
    /// and [`CompactLog`](Action::CompactLog)).
    TruncateLog {
        /// First index removed.
        from: LogIndex,
    },
    /// Stage entries that directly follow the log's last entry.
    AppendLog(Vec<Entry>),
    /// Send a message now; it promises nothing about durability.
    Send(Envelope),
    /// Send a message once every persist action emitted before it is durable.
    SendAfterPersist(Envelope),
    /// Hand committed entries to the state machine, in order. Each committed
    /// entry is emitted exactly once per engine instance; a restarted engine
    /// starts again after the `applied` index it was created with.
    Apply(Vec<Entry>),
    /// Stage `snapshot` as the group's latest snapshot
    /// ([`LogStore::save_snapshot`](raft_api::LogStore::save_snapshot)).
    SaveSnapshot(Snapshot),
    /// Stage removal of every entry up to and including `upto.index`
    /// ([`LogStore::compact`](raft_api::LogStore::compact)).
    CompactLog {
        /// The new compaction point.
        upto: LogId,
    },
    /// Replace the state machine's state with the snapshot's image, before
    /// any later [`Apply`](Action::Apply).
    RestoreSnapshot(Snapshot),
    /// Ask the state machine for a snapshot of what it applied so far and
    /// report it with [`Engine::on_snapshot_built`](super::Engine::on_snapshot_built)
    /// (or [`Engine::on_snapshot_failed`](super::Engine::on_snapshot_failed)).
    BuildSnapshot,
    /// The read with this id may be served once the state machine has
    /// applied `index`.
    ReadReady {
        /// The id the read was started with.
        id: u64,
        /// The index the state machine must have applied first.
        index: LogIndex,
    },
    /// The read with this id cannot be served.
    ReadFailed {
        /// The id the read was started with.
        id: u64,
        /// Why.
        error: ReadError,
    },
}

impl Action {
    /// Whether this action changes durable state.
    pub fn is_persist(&self) -> bool {
        matches!(
            self,
            Action::SaveHardState(_)
                | Action::TruncateLog { .. }
                | Action::AppendLog(_)
                | Action::SaveSnapshot(_)
                | Action::CompactLog { .. }
        )
    }
}
