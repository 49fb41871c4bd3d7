//! One-way messages between the members of a Raft group.
//!
//! Every message travels inside an [`Envelope`] naming its group, sender,
//! receiver and the sender's term. Requests and responses are separate
//! messages (as in etcd's raft): a node never waits for a reply, it reacts to
//! whatever arrives. Transports move batches of envelopes and never look
//! inside them.

use serde::{Deserialize, Serialize};

use crate::types::{Entry, GroupId, LogId, LogIndex, NodeId, Term};

/// A message addressed to one member of one Raft group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Raft group the message belongs to.
    pub group: GroupId,
    /// Sending node.
    pub from: NodeId,
    /// Receiving node.
    pub to: NodeId,
    /// The sender's current term; for a pre-vote request, the term the sender
    /// would campaign in.
    pub term: Term,
    /// The message itself.
    pub msg: Message,
}

/// The messages of the Raft protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Message {
    /// Pre-vote request (§9.6): "would you vote for me in `envelope.term`?"
    /// Granting it changes no state on the receiver.
    PreVote(VoteRequest),
    /// Answer to a [`Message::PreVote`].
    PreVoteResp(VoteResponse),
    /// Vote request (RequestVote, §5.2).
    Vote(VoteRequest),
    /// Answer to a [`Message::Vote`].
    VoteResp(VoteResponse),
    /// Log replication (AppendEntries, §5.3).
    Append(AppendRequest),
    /// Answer to a [`Message::Append`].
    AppendResp(AppendResponse),
    /// Leader liveness and commit index, without entries.
    Heartbeat(HeartbeatRequest),
    /// Answer to a [`Message::Heartbeat`]; tells the leader the follower is
    /// alive (check-quorum) and lets it resume replication.
    HeartbeatResp(HeartbeatResponse),
}

impl Message {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::PreVote(_) => "PreVote",
            Message::PreVoteResp(_) => "PreVoteResp",
            Message::Vote(_) => "Vote",
            Message::VoteResp(_) => "VoteResp",
            Message::Append(_) => "Append",
            Message::AppendResp(_) => "AppendResp",
            Message::Heartbeat(_) => "Heartbeat",
            Message::HeartbeatResp(_) => "HeartbeatResp",
        }
    }
}

/// Body of a vote or pre-vote request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteRequest {
    /// Term and index of the candidate's last log entry, for the election
    /// restriction (§5.4.1).
    pub last_log: LogId,
}

/// Body of a vote or pre-vote response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteResponse {
    /// Whether the vote was granted.
    pub granted: bool,
}

/// Body of an AppendEntries request (§5.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendRequest {
    /// The entry right before `entries`; the follower accepts only if its log
    /// holds an entry with this id (the consistency check).
    pub prev: LogId,
    /// Entries to append, contiguous from `prev.index + 1`.
    pub entries: Vec<Entry>,
    /// The leader's commit index.
    pub commit: LogIndex,
}

/// Body of an AppendEntries response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendResponse {
    /// The follower's log now matches the leader's up to `matched`
    /// (`prev.index + entries.len()` of the request) and this is durable.
    Success {
        /// Highest index known to match the leader's log.
        matched: LogIndex,
    },
    /// The consistency check failed for the request whose `prev.index` was
    /// `rejected`.
    Conflict {
        /// `prev.index` of the rejected request, so the leader can discard
        /// stale rejections.
        rejected: LogIndex,
        /// Where the leader should look next.
        hint: ConflictHint,
    },
}

/// Fast backtracking hint sent with a rejection (§5.3, "the follower can
/// include the term of the conflicting entry and the first index it stores
/// for that term").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictHint {
    /// With `term`: the first index the follower holds for that term.
    /// Without: one past the follower's last index (its log is too short).
    pub index: LogIndex,
    /// The term of the follower's entry at `prev.index`, when it has one.
    pub term: Option<Term>,
}

/// Body of a heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    /// The leader's commit index, capped at what the receiver is known to
    /// hold (its match index), so the receiver may commit up to it.
    pub commit: LogIndex,
}

/// Body of a heartbeat response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {}
