//! Errors returned by the engine's inputs.

use raft_api::{GroupId, NodeId};

/// A proposal the engine could not accept.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProposeError {
    /// This node is not the group's leader; `leader` is the leader it knows
    /// of, if any. The proposal was not appended anywhere.
    #[error("not the leader; leader is {leader:?}")]
    NotLeader {
        /// The current leader, when known.
        leader: Option<NodeId>,
    },
}

/// A message the engine refused to look at.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StepError {
    /// The message belongs to another group.
    #[error("message for {got} stepped into {expected}")]
    WrongGroup {
        /// This engine's group.
        expected: GroupId,
        /// The message's group.
        got: GroupId,
    },
    /// The message is addressed to another node.
    #[error("message for {got} stepped into {expected}")]
    WrongRecipient {
        /// This node.
        expected: NodeId,
        /// The message's recipient.
        got: NodeId,
    },
    /// The sender is not a member of the group.
    #[error("message from {0}, which is not a member of the group")]
    UnknownSender(NodeId),
    /// The message breaks the protocol's rules (for example an append whose
    /// entries are not contiguous); it was dropped.
    #[error("malformed {kind} from {from}: {detail}")]
    Malformed {
        /// Sender.
        from: NodeId,
        /// Message kind.
        kind: &'static str,
        /// What is wrong.
        detail: String,
    },
}
