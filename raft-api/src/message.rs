//! One-way messages between the members of a Raft group.
//!
//! Every message travels inside an [`Envelope`] naming its group, sender,
//! receiver and the sender's term. Requests and responses are separate
//! messages (as in etcd's raft): a node never waits for a reply, it reacts to
//! whatever arrives. Transports move batches of envelopes and never look
//! inside them.

use serde::{Deserialize, Serialize};

use bytes::Bytes;

use crate::membership::SnapshotMeta;
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
    /// One chunk of a snapshot, for a follower whose next entry the leader
    /// has compacted away (InstallSnapshot, §7). Boxed: it is by far the
    /// largest body, and every message would otherwise be as large (on the
    /// wire it is the chunk itself).
    Snapshot(Box<SnapshotChunk>),
    /// Answer to a [`Message::Snapshot`] chunk.
    SnapshotResp(SnapshotResponse),
    /// Leader transfer (thesis §3.10): the leader tells an up-to-date voter
    /// to start an election at once, without pre-vote and past leader
    /// stickiness.
    TimeoutNow,
    /// A follower asks the leader for a read index, to serve a linearizable
    /// read locally (thesis §6.4).
    ReadIndex(ReadIndexRequest),
    /// Answer to a [`Message::ReadIndex`].
    ReadIndexResp(ReadIndexResponse),
    /// The leader of an idle group tells a follower that holds its whole
    /// log to stop its election timer until any other message arrives.
    Quiesce,
    /// A proposal a follower forwards to its leader on behalf of a caller.
    /// Handled by the node's driver, not by the Raft engine.
    Forward(ForwardRequest),
    /// The outcome of a [`Message::Forward`].
    ForwardResp(ForwardResponse),
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
            Message::Snapshot(_) => "Snapshot",
            Message::SnapshotResp(_) => "SnapshotResp",
            Message::TimeoutNow => "TimeoutNow",
            Message::ReadIndex(_) => "ReadIndex",
            Message::ReadIndexResp(_) => "ReadIndexResp",
            Message::Quiesce => "Quiesce",
            Message::Forward(_) => "Forward",
            Message::ForwardResp(_) => "ForwardResp",
        }
    }
}

/// Body of a vote or pre-vote request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteRequest {
    /// Term and index of the candidate's last log entry, for the election
    /// restriction (§5.4.1).
    pub last_log: LogId,
    /// Set in an election started by [`Message::TimeoutNow`]: the leader
    /// itself asked for it, so voters grant it even while they still hear
    /// from that leader (leader stickiness does not apply).
    pub transfer: bool,
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
    /// Names the leader's replication stream to this follower within the
    /// term; the answer echoes it. A node removed and re-added in one term
    /// gets a new stream, so answers to messages sent before it was removed
    /// cannot be taken for answers about its new log.
    pub stream: u64,
}

/// Body of an AppendEntries response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendResponse {
    /// The follower's log now matches the leader's up to `matched`
    /// (`prev.index + entries.len()` of the request) and this is durable.
    Success {
        /// Highest index known to match the leader's log.
        matched: LogIndex,
        /// The request's stream.
        stream: u64,
    },
    /// The consistency check failed for the request whose `prev.index` was
    /// `rejected`.
    Conflict {
        /// `prev.index` of the rejected request, so the leader can discard
        /// stale rejections.
        rejected: LogIndex,
        /// Where the leader should look next.
        hint: ConflictHint,
        /// The request's stream.
        stream: u64,
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
    /// Round number, increasing within the leader's term. A quorum of
    /// answers to round `n` proves the sender was still leader when it sent
    /// round `n` (confirms read indexes, starts a lease).
    pub round: u64,
}

/// Body of a heartbeat response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// The round of the heartbeat answered (0 when answering a message of
    /// an older term).
    pub round: u64,
}

/// Body of a snapshot chunk. A snapshot is sent as consecutive chunks, one
/// in flight at a time; the receiver answers each with how much of it it
/// holds, so a lost chunk or a new leader resumes where the data stopped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotChunk {
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// Size of the whole image in bytes.
    pub total: u64,
    /// Position of `data` in the image.
    pub offset: u64,
    /// The bytes at `offset`.
    pub data: Bytes,
    /// The leader's replication stream to the receiver (see
    /// [`AppendRequest::stream`]).
    pub stream: u64,
}

/// Body of a snapshot chunk answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotResponse {
    /// The snapshot answered (its last entry).
    pub last: LogId,
    /// Bytes of the image the receiver holds contiguously from the start:
    /// where the next chunk must begin. Equal to the image size once the
    /// snapshot is installed and durable.
    pub received: u64,
    /// The chunk's stream.
    pub stream: u64,
    /// Whether the snapshot is installed and durable, so the sender may
    /// continue with log entries after `last`.
    pub installed: bool,
}

/// Body of a read index request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadIndexRequest {
    /// Chosen by the follower to match the answer to its read.
    pub id: u64,
}

/// Body of a read index answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadIndexResponse {
    /// The request answered.
    pub id: u64,
    /// The index the follower must apply before serving the read; `None`
    /// when the leader could not confirm its leadership.
    pub index: Option<LogIndex>,
}

/// Body of a forwarded proposal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardRequest {
    /// Chosen by the forwarding node to match the answer to its caller.
    pub id: u64,
    /// The command, exactly as the leader is to propose it.
    pub command: Bytes,
}

/// Body of the answer to a forwarded proposal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardResponse {
    /// The request answered.
    pub id: u64,
    /// The state machine's response, or why there is none.
    pub outcome: ForwardOutcome,
}

/// What became of a forwarded proposal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ForwardOutcome {
    /// Committed and applied; the state machine's response.
    Applied(Bytes),
    /// The receiver is not the leader (the one it knows of, if any); the
    /// command was not proposed.
    NotLeader(Option<NodeId>),
    /// The leader's queue for the group is full; not proposed.
    Busy,
    /// Proposed, but leadership changed before it was committed: it may or
    /// may not be applied later.
    Unknown,
    /// Proposed and lost: another entry was committed in its place.
    Lost,
}
