//! What the engine asks its driver to do.

use raft_api::{Entry, Envelope, HardState, LogIndex};

/// One thing the driver must do, in the order the engine emitted it.
///
/// The persist actions ([`SaveHardState`](Action::SaveHardState),
/// [`TruncateLog`](Action::TruncateLog), [`AppendLog`](Action::AppendLog))
/// are staged in the log store in order. A
/// [`SendAfterPersist`](Action::SendAfterPersist) message promises
/// durability (a vote, an append acknowledgement) and must not leave the node
/// until every persist action emitted before it has been flushed. Plain
/// [`Send`](Action::Send) messages may go at once. After a flush the driver
/// reports the last durable entry with
/// [`Engine::on_persisted`](super::Engine::on_persisted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Stage the group's new term, vote and commit index.
    SaveHardState(HardState),
    /// Stage removal of every log entry at `from` and after; always followed
    /// by an [`AppendLog`](Action::AppendLog) of the replacing entries.
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
}

impl Action {
    /// Whether this action changes durable state.
    pub fn is_persist(&self) -> bool {
        matches!(
            self,
            Action::SaveHardState(_) | Action::TruncateLog { .. } | Action::AppendLog(_)
        )
    }
}
