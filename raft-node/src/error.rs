//! Errors returned by the engine's inputs.

use raft_api::{GroupId, MembershipError, NodeId};

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
    /// The leader is handing leadership over to `target` and accepts no
    /// proposal until that finishes or is abandoned (after an election
    /// timeout); retry on the new leader.
    #[error("leadership is being transferred to {target}")]
    TransferInProgress {
        /// The node taking over.
        target: NodeId,
    },
    /// The group's queue of proposals waiting to commit is full (or its
    /// state machine is too far behind); not proposed. Retry later.
    #[error("too many proposals in flight for this group; retry later")]
    Busy,
    /// No outcome within the proposal timeout: the command may or may not
    /// be applied later. Retry with the same client session to be sure it
    /// is applied once.
    #[error("timed out; the outcome is unknown")]
    Timeout,
    /// Leadership changed while the command was in flight: it may or may
    /// not be applied. Retry with the same client session to be sure.
    #[error("leadership changed; the outcome is unknown")]
    Unknown,
    /// The command was proposed but another entry was committed in its
    /// place: it will never be applied.
    #[error("the command was lost in a leadership change and never applied")]
    Lost,
    /// The client session already used a higher sequence number; the
    /// command was not applied and its response is no longer known.
    #[error("stale client sequence number; not applied")]
    Stale,
    /// The command reached the state machine without a valid header (a
    /// peer running incompatible software); not applied.
    #[error("malformed command; not applied")]
    Malformed,
    /// This node hosts no such group.
    #[error("unknown group {0}")]
    UnknownGroup(GroupId),
    /// The node is shutting down or stopped.
    #[error("the node is shut down")]
    Shutdown,
    /// The group stopped on this node after an unrecoverable error (its
    /// storage, or its state machine refusing a snapshot), named here. A
    /// command in flight when it stopped may or may not be applied by the
    /// other nodes: retry there with the same client session to be sure.
    #[error("the group failed: {0}")]
    Failed(String),
}

/// An administrative request (membership, transfer, snapshot, groups) the
/// node could not carry out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The membership change was refused.
    #[error(transparent)]
    Change(#[from] ChangeError),
    /// The leader transfer could not start.
    #[error(transparent)]
    Transfer(#[from] TransferError),
    /// This node hosts no such group.
    #[error("unknown group {0}")]
    UnknownGroup(GroupId),
    /// The group already exists on this node.
    #[error("group {0} already exists")]
    GroupExists(GroupId),
    /// The group's settings cannot work.
    #[error(transparent)]
    Config(#[from] raft_api::ConfigError),
    /// The node is shutting down or stopped.
    #[error("the node is shut down")]
    Shutdown,
    /// The group stopped after an unrecoverable error, or storage failed.
    #[error("failed: {0}")]
    Failed(String),
}

/// A membership change the engine could not accept.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChangeError {
    /// Only the leader changes membership.
    #[error("not the leader; leader is {leader:?}")]
    NotLeader {
        /// The current leader, when known.
        leader: Option<NodeId>,
    },
    /// Another change has not finished (committed, and left the joint
    /// configuration); one change is in flight at a time.
    #[error("another membership change is still in progress")]
    InProgress,
    /// A new leader must commit an entry of its own term before it may
    /// change membership; retry shortly.
    #[error("the leader has not yet committed an entry of its term; retry shortly")]
    NotReady,
    /// Leadership is being transferred.
    #[error("leadership is being transferred to {target}")]
    TransferInProgress {
        /// The node taking over.
        target: NodeId,
    },
    /// The node is already a member (voter or learner).
    #[error("{0} is already a member")]
    AlreadyMember(NodeId),
    /// The node is not a member.
    #[error("{0} is not a member")]
    NotMember(NodeId),
    /// Only learners are promoted; add the node as a learner first so it
    /// catches up before it votes.
    #[error("{0} is not a learner; add it as a learner first")]
    NotLearner(NodeId),
    /// The learner is too far behind to vote without stalling commits.
    #[error(
        "learner {node} lags {lag} entries behind (at most {max} allowed); retry once it caught up"
    )]
    LearnerBehind {
        /// The learner.
        node: NodeId,
        /// How many entries it lacks.
        lag: u64,
        /// The configured maximum (`max_promote_lag`).
        max: u64,
    },
    /// The resulting membership cannot work.
    #[error(transparent)]
    Invalid(#[from] MembershipError),
}

/// A leader transfer the engine could not start.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// Only the leader transfers leadership.
    #[error("not the leader; leader is {leader:?}")]
    NotLeader {
        /// The current leader, when known.
        leader: Option<NodeId>,
    },
    /// A transfer is already under way.
    #[error("leadership is already being transferred to {target}")]
    InProgress {
        /// The node taking over.
        target: NodeId,
    },
    /// The target is not a voter of the current configuration.
    #[error("{0} is not a voter")]
    NotVoter(NodeId),
    /// There is no other voter to hand leadership to.
    #[error("no other voter to transfer leadership to")]
    NoTarget,
}

/// Why a read cannot be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// No leader is known to confirm the read; `leader` is a hint when one
    /// is known but unusable.
    #[error("no leader to confirm the read; leader is {leader:?}")]
    NotLeader {
        /// The current leader, when known.
        leader: Option<NodeId>,
    },
    /// Leadership changed before the read was confirmed; retry.
    #[error("leadership changed before the read was confirmed")]
    LeadershipLost,
    /// Not confirmed within the read timeout.
    #[error("the read timed out")]
    Timeout,
    /// This node hosts no such group.
    #[error("unknown group {0}")]
    UnknownGroup(GroupId),
    /// The group stopped on this node: its storage or its state machine
    /// failed (proposals there fail with the reason). Another node may
    /// still serve it.
    #[error("group {0} stopped on this node")]
    GroupStopped(GroupId),
    /// The node is shutting down or stopped.
    #[error("the node is shut down")]
    Shutdown,
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
    /// The message claims to come from this very node.
    #[error("message from {0}, which is this node")]
    FromSelf(NodeId),
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
