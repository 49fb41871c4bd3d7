//! One Raft group as a pure, deterministic state machine.
//!
//! ```text
//!            inputs                                  outputs (in order)
//!  tick(now) ─────────────┐                ┌──► SaveHardState / TruncateLog / AppendLog
//!  step(envelope) ────────┤                │    / SaveSnapshot / CompactLog
//!  propose(bytes) ────────┤                │        (stage in the LogStore, then flush)
//!  campaign() ────────────┤                ├──► Send(envelope)          (at once)
//!  read(id, mode) ────────┼──►  Engine  ───┼──► SendAfterPersist(env)   (after the flush)
//!  change_membership() ───┤                ├──► Apply / RestoreSnapshot / BuildSnapshot
//!  transfer_leader() ─────┤                │        (to the state machine, in order)
//!  on_snapshot_built() ───┤                └──► ReadReady / ReadFailed  (to readers)
//!  on_persisted(log id) ──┘
//! ```
//!
//! The engine does no I/O, reads no clock and draws randomness only from the
//! seed it is given: the same inputs always produce the same actions. A
//! driver feeds it inputs, drains [`Engine::take_actions`], carries the
//! actions out in order, and after each flush reports the last durable entry
//! with [`Engine::on_persisted`].
//!
//! Rules implemented here, by section of the Raft paper (Ongaro and
//! Ousterhout, "In Search of an Understandable Consensus Algorithm", and
//! Ongaro's thesis for §9.6):
//!
//! - elections with randomized timeouts (§5.2), the election restriction
//!   (§5.4.1), pre-vote (§9.6), check-quorum and leader stickiness;
//! - term and vote persisted before any vote or acknowledgement leaves the
//!   node ([`Action::SendAfterPersist`]);
//! - replication with the consistency check (§5.3), fast backtracking with
//!   conflict hints, pipelining bounded by `max_inflight` and message size;
//! - commitment only by counting replicas of current-term entries (§5.4.2),
//!   with an entry appended by every new leader (§8): a blank one, or in
//!   a log that records no membership yet, the bootstrap voters as a
//!   membership entry, so that they survive restarts;
//! - committed entries emitted for application in order, exactly once;
//! - snapshots and log compaction, snapshots sent in chunks (§7, figure 13);
//! - membership changes with learners and joint consensus (§6, thesis
//!   chapter 4), one at a time and only once the leader committed in its
//!   term;
//! - leader transfer (thesis §3.10);
//! - ReadIndex, lease and follower reads (thesis §6.4).
//!
//! ```
//! use raft_api::{Config, GroupId, NodeId};
//! use raft_node::engine::{Action, Engine, EngineInit, Role};
//!
//! // A group with one voter campaigns on its first tick...
//! let init = EngineInit::new(NodeId(1), GroupId(0), vec![NodeId(1)], Config::default());
//! let mut engine = Engine::new(init).unwrap();
//! engine.tick(0);
//! let actions = engine.take_actions();
//! assert!(matches!(actions[0], Action::SaveHardState(_)));
//! // ...and leads once its vote for itself is durable.
//! engine.on_persisted(None); // the driver flushed the log store
//! assert_eq!(engine.role(), Role::Leader);
//!
//! // It commits alone once its own log is durable.
//! let id = engine.propose(bytes::Bytes::from_static(b"x")).unwrap();
//! let actions = engine.take_actions();
//! assert!(actions.iter().any(|a| matches!(a, Action::AppendLog(_))));
//! engine.on_persisted(Some(id));
//! let applied: Vec<_> = engine
//!     .take_actions()
//!     .into_iter()
//!     .filter_map(|a| match a { Action::Apply(e) => Some(e), _ => None })
//!     .flatten()
//!     .collect();
//! assert_eq!(applied.last().unwrap().id, id);
//! ```

mod action;
mod election;
mod log;
mod membership;
#[cfg(feature = "__mutants")]
pub mod mutants;
mod progress;
mod read;
mod replication;
pub mod rng;
mod snapshot;
#[cfg(test)]
mod tests;
mod transfer;

use std::collections::BTreeMap;

use bytes::Bytes;
use raft_api::{
    Config, ConfigError, Entry, Envelope, GroupId, HardState, HlcClock, LogId, LogIndex,
    Membership, Message, NodeId, Payload, Snapshot, Term,
};

pub use action::Action;
pub use membership::MembershipChange;
pub use progress::{Progress, ReplicationState, SnapshotSend};
pub use read::ReadMode;

use crate::error::{ProposeError, StepError};
use log::RaftLog;
use read::Reads;
use rng::Rng;
use snapshot::Incoming;
use transfer::Transfer;

/// Whether a deliberately broken variant is switched on (tests only).
macro_rules! mutant {
    ($name:ident) => {{
        #[cfg(feature = "__mutants")]
        {
            crate::engine::mutants::active(crate::engine::mutants::Mutant::$name)
        }
        #[cfg(not(feature = "__mutants"))]
        {
            false
        }
    }};
}
pub(crate) use mutant;

/// The role a node plays in its group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader, or waits for one.
    Follower,
    /// Asks whether it could win an election before raising its term (§9.6).
    PreCandidate,
    /// Campaigns for votes in a new term (§5.2).
    Candidate,
    /// Replicates the log and decides what is committed.
    Leader,
}

/// Everything needed to create (or re-create after a restart) an engine.
#[derive(Clone, Debug)]
pub struct EngineInit {
    /// This node.
    pub id: NodeId,
    /// The group the engine runs.
    pub group: GroupId,
    /// Voting members the group starts with, used until the log or a
    /// snapshot holds a membership. A node joining an existing group (as a
    /// learner) passes an empty list: it learns the membership from the
    /// leader and never campaigns before it is a voter.
    pub voters: Vec<NodeId>,
    /// Settings; validated by [`Engine::new`].
    pub config: Config,
    /// Seed of the engine's random choices (election timeouts).
    pub seed: u64,
    /// The driver's clock at creation, in milliseconds.
    pub now: u64,
    /// Added to the driver's clock to get wall-clock time (milliseconds
    /// since the Unix epoch) for the hybrid logical clock that stamps
    /// entries; 0 when the driver's clock already is wall time.
    pub wall_offset_ms: u64,
    /// Durable hard state read back from the log store.
    pub hard_state: HardState,
    /// The entry before the first stored one (log compaction point).
    pub compacted: LogId,
    /// Durable entries after `compacted`, in order.
    pub entries: Vec<Entry>,
    /// The group's latest snapshot, if it has one.
    pub snapshot: Option<Snapshot>,
    /// The last index the state machine has already applied. When it is
    /// behind the snapshot, the engine first emits
    /// [`Action::RestoreSnapshot`].
    pub applied: LogIndex,
}

impl EngineInit {
    /// A fresh engine with an empty log: seed 0, time 0, nothing stored.
    pub fn new(id: NodeId, group: GroupId, voters: Vec<NodeId>, config: Config) -> Self {
        Self {
            id,
            group,
            voters,
            config,
            seed: 0,
            now: 0,
            wall_offset_ms: 0,
            hard_state: HardState::default(),
            compacted: LogId::default(),
            entries: Vec::new(),
            snapshot: None,
            applied: LogIndex(0),
        }
    }
}

/// One Raft group on one node. See the [module documentation](self).
#[derive(Debug)]
pub struct Engine {
    id: NodeId,
    group: GroupId,
    config: Config,
    /// Memberships in effect from each index on, oldest first: the first is
    /// the snapshot's (or the bootstrap voters at index 0), the rest come
    /// from membership entries of the log. The last one is in effect.
    configs: Vec<(LogIndex, Membership)>,
    /// Leader only: the replication targets must be recomputed.
    members_dirty: bool,
    /// Leader only: new entries wait to be sent. Proposals only append
    /// locally; [`Engine::take_actions`] sends each follower one append
    /// for everything proposed since the last drain.
    replicate_due: bool,
    /// Leader only: the commit index moved since the last drain; followers
    /// with nothing new to receive get an empty append carrying it.
    commit_due: bool,
    role: Role,
    term: Term,
    vote: Option<NodeId>,
    leader: Option<NodeId>,
    log: RaftLog,
    commit: LogIndex,
    applied: LogIndex,
    /// Highest index of this node's own log known durable.
    persisted: LogIndex,
    /// The hard state last staged (emitted as an action).
    saved: HardState,
    /// The hard state staged as of the last [`Engine::take_actions`].
    drained: HardState,
    /// The hard state known durable (as of the last flush reported).
    durable: HardState,
    now: u64,
    wall_offset_ms: u64,
    election_deadline: u64,
    /// When this node last heard from a live leader (leader stickiness).
    leader_seen_at: Option<u64>,
    /// Pre-vote or vote answers in the current campaign.
    votes: BTreeMap<NodeId, bool>,
    /// Leader only: replication progress of every other member.
    progress: BTreeMap<NodeId, Progress>,
    /// Leader only: the next replication stream number of each member
    /// (a member removed and re-added in the term gets a new one).
    streams: BTreeMap<NodeId, u64>,
    next_heartbeat: u64,
    quorum_check_at: u64,
    /// Leader only: index of the first entry of its term. Until it is
    /// committed the leader does not know the full commit index (§8).
    term_start: LogIndex,
    /// Leader only: a leader transfer under way.
    transfer: Option<Transfer>,
    /// Read requests in every state they can be in.
    reads: Reads,
    /// The latest snapshot, sent to followers that need compacted entries.
    snapshot: Option<Snapshot>,
    /// A snapshot build was asked for and not yet reported.
    snapshot_building: bool,
    /// Entries applied since the last snapshot that ask for the next one:
    /// `snapshot_threshold` less up to a quarter, drawn anew for each
    /// snapshot, so replicas of a group do not all snapshot (and write
    /// their snapshots) at the same moment.
    snapshot_after: u64,
    /// Draws `snapshot_after`; apart from `rng`, so election timeouts do
    /// not depend on how often snapshots are taken.
    snapshot_rng: Rng,
    /// A snapshot being received from the leader.
    incoming: Option<Incoming>,
    /// Until then (after a restart) this node grants no vote, as if it
    /// heard from a leader: a leader's lease may still count on it.
    quiet_until: u64,
    /// The group is quiescent: no heartbeats (leader) or election timer
    /// (follower) until any message or request arrives.
    quiescent: bool,
    /// When a proposal, read, membership change or transfer last came.
    last_activity: u64,
    clock: HlcClock,
    rng: Rng,
    out: Vec<Action>,
}

impl Engine {
    /// Creates an engine from the state read back from storage. It starts as
    /// a follower; a group with a single voter campaigns on its first tick
    /// and leads as soon as its vote is durable.
    pub fn new(init: EngineInit) -> Result<Self, ConfigError> {
        init.config.validate()?;
        let mut log = RaftLog::new(init.compacted, init.entries);
        let snapshot = init
            .snapshot
            .filter(|s| s.meta.last.index >= log.compacted().index);
        if let Some(snap) = &snapshot
            && !log.matches(snap.meta.last)
        {
            // The log does not reach the snapshot (or disagrees with it):
            // the snapshot, which holds only committed entries, wins.
            log = RaftLog::new(snap.meta.last, Vec::new());
        }
        let configs =
            membership::configs_from(snapshot.as_ref().map(|s| &s.meta), &init.voters, &log);
        let last = log.last_index();
        let snap_index = snapshot.as_ref().map_or(LogIndex(0), |s| s.meta.last.index);
        let mut out = Vec::new();
        let mut applied = init.applied;
        if let Some(snap) = &snapshot
            && applied < snap_index
        {
            out.push(Action::RestoreSnapshot(snap.clone()));
            applied = snap_index;
        }
        // Whatever the state machine applied was committed, even if the
        // commit index on disk lags behind it.
        let commit = init.hard_state.commit.max(applied).min(last);
        let quiet_until = if init.hard_state.term > Term(0) {
            init.now + init.config.election_timeout_min_ms
        } else {
            0
        };
        let mut engine = Self {
            id: init.id,
            group: init.group,
            config: init.config,
            configs,
            members_dirty: false,
            replicate_due: false,
            commit_due: false,
            role: Role::Follower,
            term: init.hard_state.term,
            vote: init.hard_state.vote,
            leader: None,
            log,
            commit,
            applied: applied.min(commit),
            persisted: last,
            saved: init.hard_state,
            drained: init.hard_state,
            durable: init.hard_state,
            now: init.now,
            wall_offset_ms: init.wall_offset_ms,
            election_deadline: 0,
            leader_seen_at: None,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            streams: BTreeMap::new(),
            next_heartbeat: 0,
            quorum_check_at: 0,
            term_start: LogIndex(0),
            transfer: None,
            reads: Reads::default(),
            snapshot,
            snapshot_building: false,
            snapshot_after: 0,
            snapshot_rng: Rng::new(
                init.seed
                    ^ init.id.0.rotate_left(16)
                    ^ init.group.0.rotate_left(48)
                    ^ SNAPSHOT_SEED,
            ),
            incoming: None,
            quiet_until,
            quiescent: false,
            last_activity: init.now,
            clock: HlcClock::new(),
            rng: Rng::new(init.seed ^ init.id.0.rotate_left(32) ^ init.group.0),
            out,
        };
        engine.reset_election_deadline();
        engine.draw_snapshot_after();
        if engine.is_sole_voter() {
            engine.election_deadline = engine.now;
        }
        engine.apply_committed();
        Ok(engine)
    }

    // ----- inputs -----

    /// Advances the engine's clock to `now` (milliseconds, never going
    /// backwards) without firing any timer. A driver calls it before the
    /// other inputs of a turn, so that what they decide by the clock (a
    /// lease read above all) uses the time of the turn, not that of the last
    /// tick: after a pause of the process or a stall of its loop, the last
    /// tick may be long past and the lease long expired.
    pub fn observe_time(&mut self, now: u64) {
        self.now = self.now.max(now);
    }

    /// Advances the engine's clock to `now` (milliseconds, never going
    /// backwards) and fires whatever timers are due: election timeouts,
    /// heartbeats, check-quorum.
    pub fn tick(&mut self, now: u64) {
        self.now = self.now.max(now);
        if self.quiescent {
            self.finish();
            return;
        }
        match self.role {
            Role::Leader => self.tick_leader(),
            _ => {
                if self.now >= self.election_deadline && self.may_campaign() {
                    self.campaign();
                }
                self.reads.expire_forwarded(self.now, &mut self.out);
            }
        }
        self.finish();
    }

    /// Handles one message from a peer.
    pub fn step(&mut self, env: Envelope) -> Result<(), StepError> {
        if env.group != self.group {
            return Err(StepError::WrongGroup {
                expected: self.group,
                got: env.group,
            });
        }
        if env.to != self.id {
            return Err(StepError::WrongRecipient {
                expected: self.id,
                got: env.to,
            });
        }
        // Any node may write: a leader this node has not yet learned is a
        // member, a learner, a node being removed. Only voters' votes count.
        if env.from == self.id {
            return Err(StepError::FromSelf(env.from));
        }
        if let Some(detail) = malformed(&env) {
            return Err(StepError::Malformed {
                from: env.from,
                kind: env.msg.kind(),
                detail,
            });
        }
        if matches!(env.msg, Message::Quiesce) {
            self.handle_quiesce(env.from, env.term);
            self.finish();
            return Ok(());
        }
        // Answers to what a quiet leader sent before it went quiet (its last
        // heartbeats) need no action: they must not wake it. Anything else
        // does.
        let answer = matches!(
            env.msg,
            Message::HeartbeatResp(_) | Message::AppendResp(_) | Message::SnapshotResp(_)
        );
        if !(answer && self.role == Role::Leader) {
            self.wake(false);
        }
        self.step_inner(env);
        self.finish();
        Ok(())
    }

    /// Appends a command to the log if this node is the leader, and returns
    /// the id it will be committed under. The command is committed when an
    /// [`Action::Apply`] carries an entry with that id; if an entry with
    /// another term is applied at that index instead, the command was lost
    /// and never will be applied.
    pub fn propose(&mut self, command: Bytes) -> Result<LogId, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if let Some(t) = &self.transfer {
            return Err(ProposeError::TransferInProgress { target: t.target });
        }
        self.wake(true);
        let id = self.append_local(Payload::Command(command));
        // Sent when the actions are drained: one append per follower for
        // every proposal of the driver's turn.
        self.replicate_due = true;
        self.finish();
        Ok(id)
    }

    /// Starts an election now, as if the election timeout had fired (with a
    /// pre-vote round first when pre-vote is on). Does nothing on a leader.
    pub fn campaign(&mut self) {
        if self.role == Role::Leader || !self.may_campaign() {
            return;
        }
        self.wake(true);
        if self.config.pre_vote {
            self.become_pre_candidate();
        } else {
            self.become_candidate(false);
        }
        self.finish();
    }

    /// Tells the engine that the driver flushed: everything emitted before
    /// the last [`take_actions`](Self::take_actions) is durable (so the
    /// driver drains the actions, stages them, flushes, and only then calls
    /// this, without draining in between). `last` is
    /// the last log entry staged before the flush, or `None` when the flush
    /// held no entries. A leader counts only durable entries of its own log
    /// towards commitment, and a candidate counts its own vote only once it
    /// is durable.
    pub fn on_persisted(&mut self, last: Option<LogId>) {
        self.on_flushed(self.drained, last);
    }

    /// The hard state that the actions drained so far ask to make durable.
    /// A driver that keeps draining while a flush is under way records this
    /// when it stages the flush's writes, and hands it back to
    /// [`on_flushed`](Self::on_flushed) once that flush is done.
    pub fn drained_hard_state(&self) -> HardState {
        self.drained
    }

    /// Tells the engine that a flush is done which made durable the hard
    /// state `hard_state` (recorded with
    /// [`drained_hard_state`](Self::drained_hard_state) when its writes
    /// were staged) and the log up to `last` (the last entry staged in it,
    /// `None` if it held no entries). Unlike
    /// [`on_persisted`](Self::on_persisted), the driver may have drained
    /// (and not yet flushed) more actions since that flush began: an entry
    /// truncated since then no longer counts.
    pub fn on_flushed(&mut self, hard_state: HardState, last: Option<LogId>) {
        self.durable = hard_state;
        if let Some(last) = last
            && self.log.matches(last)
            && last.index > self.persisted
        {
            self.persisted = last.index;
            if self.role == Role::Leader {
                self.maybe_commit();
            }
        }
        if self.role == Role::Candidate {
            self.tally();
        }
        self.finish();
    }

    /// Whether [`take_actions`](Self::take_actions) would return anything: a
    /// driver hosting many groups skips the idle ones cheaply.
    pub fn has_actions(&self) -> bool {
        !self.out.is_empty() || self.replicate_due || self.commit_due
    }

    /// Drains the actions produced by the inputs so far, in order.
    ///
    /// Draining ends a batch of inputs: a leader sends each follower one
    /// append holding every entry proposed since the last drain (and the
    /// commit index), a follower answers each leader once for all the
    /// appends it took, and a commit index that moved is staged only along
    /// with other writes (it need not be durable; see
    /// [`Action::SaveHardState`]).
    pub fn take_actions(&mut self) -> Vec<Action> {
        self.send_due_appends();
        self.stage_commit_with_writes();
        self.coalesce_acks();
        self.drained = self.saved;
        std::mem::take(&mut self.out)
    }

    // ----- observers -----

    /// This node.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// This group.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// Current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Current term.
    pub fn term(&self) -> Term {
        self.term
    }

    /// The vote cast in the current term.
    pub fn vote(&self) -> Option<NodeId> {
        self.vote
    }

    /// The leader this node follows (itself when leader), if known.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// Highest index known committed.
    pub fn commit_index(&self) -> LogIndex {
        self.commit
    }

    /// Highest index handed out for application.
    pub fn applied_index(&self) -> LogIndex {
        self.applied
    }

    /// Highest index of this node's log known durable.
    pub fn persisted_index(&self) -> LogIndex {
        self.persisted
    }

    /// The hybrid logical clock's latest timestamp: entries this node
    /// stamps as leader are later than every entry it has received.
    pub fn clock(&self) -> raft_api::Hlc {
        self.clock.last()
    }

    /// Id of the last log entry.
    pub fn last_log_id(&self) -> LogId {
        self.log.last_id()
    }

    /// The log entry at `index`, if held in memory.
    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        self.log.get(index)
    }

    /// The membership in effect: the latest one in the log, committed or
    /// not.
    pub fn membership(&self) -> &Membership {
        &self.configs.last().expect("never empty").1
    }

    /// Index of the entry that set the membership in effect (0 for the
    /// bootstrap voters).
    pub fn membership_index(&self) -> LogIndex {
        self.configs.last().expect("never empty").0
    }

    /// The entry before the first one held (the log's compaction point).
    pub fn compacted(&self) -> LogId {
        self.log.compacted()
    }

    /// The size of the log entries held in memory (after the compaction
    /// point), as [`Entry::size`](raft_api::Entry::size) counts them.
    pub fn log_bytes(&self) -> u64 {
        self.log.bytes()
    }

    /// Whether a snapshot was asked for and is not yet built.
    pub fn is_building_snapshot(&self) -> bool {
        self.snapshot_building
    }

    /// The latest snapshot's metadata, if there is one.
    pub fn snapshot_meta(&self) -> Option<&raft_api::SnapshotMeta> {
        self.snapshot.as_ref().map(|s| &s.meta)
    }

    /// Leader only: the target of a leader transfer under way.
    pub fn transfer_target(&self) -> Option<NodeId> {
        self.transfer.as_ref().map(|t| t.target)
    }

    /// Leader only: replication progress of `peer`.
    pub fn progress(&self, peer: NodeId) -> Option<&Progress> {
        self.progress.get(&peer)
    }

    /// The engine's current notion of time.
    pub fn now(&self) -> u64 {
        self.now
    }

    // ----- internals shared by the role modules -----

    fn step_inner(&mut self, env: Envelope) {
        if env.term > self.term {
            match &env.msg {
                // A pre-vote asks about a future term; it changes nothing here.
                Message::PreVote(_) => {}
                // A granted pre-vote carries the term we would campaign in.
                Message::PreVoteResp(r) if r.granted => {}
                // Leader stickiness: while a live leader is known, a vote
                // request from a higher term is ignored entirely, so a node
                // that was cut off cannot depose a healthy leader.
                Message::Vote(req) if self.in_lease() && !req.transfer => return,
                Message::Append(_) | Message::Heartbeat(_) | Message::Snapshot(_) => {
                    self.become_follower(env.term, Some(env.from));
                }
                _ => self.become_follower(env.term, None),
            }
        } else if env.term < self.term {
            self.step_stale(env);
            return;
        }
        match env.msg {
            Message::PreVote(req) => self.handle_pre_vote(env.from, env.term, req),
            Message::PreVoteResp(resp) => self.handle_pre_vote_resp(env.from, env.term, resp),
            Message::Vote(req) => self.handle_vote(env.from, req),
            Message::VoteResp(resp) => self.handle_vote_resp(env.from, resp),
            Message::Append(req) => self.handle_append(env.from, req),
            Message::AppendResp(resp) => self.handle_append_resp(env.from, resp),
            Message::Heartbeat(req) => self.handle_heartbeat(env.from, req),
            Message::HeartbeatResp(resp) => self.handle_heartbeat_resp(env.from, resp),
            Message::Snapshot(chunk) => self.handle_snapshot(env.from, *chunk),
            Message::SnapshotResp(resp) => self.handle_snapshot_resp(env.from, resp),
            Message::TimeoutNow => self.handle_timeout_now(env.from),
            Message::ReadIndex(req) => self.handle_read_index(env.from, req),
            Message::ReadIndexResp(resp) => self.handle_read_index_resp(env.from, resp),
            // Messages of a newer protocol this engine does not know.
            _ => {}
        }
    }

    /// A message from an older term.
    fn step_stale(&mut self, env: Envelope) {
        match env.msg {
            // A leader of an older term: tell it ours so it steps down.
            Message::Append(_) | Message::Heartbeat(_) | Message::Snapshot(_) => self.send(
                env.from,
                Message::HeartbeatResp(raft_api::HeartbeatResponse { round: 0 }),
            ),
            // A follower asking an old leader: it cannot confirm anything.
            Message::ReadIndex(req) => self.send(
                env.from,
                Message::ReadIndexResp(raft_api::ReadIndexResponse {
                    id: req.id,
                    index: None,
                }),
            ),
            // Reject so the (pre-)candidate learns the newer term.
            Message::PreVote(_) => self.send(
                env.from,
                Message::PreVoteResp(raft_api::VoteResponse { granted: false }),
            ),
            Message::Vote(_) => self.send(
                env.from,
                Message::VoteResp(raft_api::VoteResponse { granted: false }),
            ),
            // Stale answers carry nothing useful.
            _ => {}
        }
    }

    /// Whether the group is quiescent (see `Config::quiesce_after_ms`).
    pub fn is_quiescent(&self) -> bool {
        self.quiescent
    }

    /// Leaves quiescence (any message or request does); `activity` marks
    /// a request that keeps the group busy.
    fn wake(&mut self, activity: bool) {
        if activity {
            self.last_activity = self.now;
        }
        if !self.quiescent {
            return;
        }
        self.quiescent = false;
        self.last_activity = self.now;
        if self.role == Role::Leader {
            // Start the check-quorum window and heartbeats afresh: nobody
            // was expected to talk while quiet.
            self.next_heartbeat = self.now;
            self.quorum_check_at = self.now + self.config.election_timeout_min_ms;
            for p in self.progress.values_mut() {
                p.recent_active = false;
            }
        } else {
            self.reset_election_deadline();
        }
    }

    /// Leader: goes quiet once the group has been idle long enough and
    /// every member holds the whole log, all of it committed.
    fn maybe_quiesce(&mut self) {
        let after = self.config.quiesce_after_ms;
        let last = self.log.last_index();
        let idle = after > 0
            && self.now >= self.last_activity.saturating_add(after)
            && self.commit == last
            && self.committed_in_term()
            && self.transfer.is_none()
            && self.reads.is_idle()
            && self.membership_index() <= self.commit
            && !self.membership().is_joint()
            && self.progress.values().all(|p| p.matched == last);
        if idle {
            self.quiescent = true;
            for peer in self.peers() {
                self.send(peer, Message::Quiesce);
            }
        }
    }

    /// A follower told to go quiet by its leader does, if it holds and has
    /// committed the leader's log (as far as it knows).
    fn handle_quiesce(&mut self, from: NodeId, term: Term) {
        if self.role == Role::Follower
            && term == self.term
            && self.leader == Some(from)
            && self.commit == self.log.last_index()
            && self.incoming.is_none()
        {
            self.quiescent = true;
            self.leader_seen_at = Some(self.now);
        }
    }

    /// Whether this node alone is a quorum.
    fn is_sole_voter(&self) -> bool {
        let id = self.id;
        self.membership().is_quorum(|n| n == id)
    }

    /// The other voters of either half of the configuration.
    fn voting_peers(&self) -> Vec<NodeId> {
        let id = self.id;
        self.membership()
            .all_voters()
            .into_iter()
            .filter(|&n| n != id)
            .collect()
    }

    /// Leader only: the other members it replicates to.
    fn peers(&self) -> Vec<NodeId> {
        self.progress.keys().copied().collect()
    }

    /// Leader only: whether an entry of its own term is committed, so its
    /// commit index is the group's (§8).
    fn committed_in_term(&self) -> bool {
        self.commit >= self.term_start
    }

    fn envelope(&self, to: NodeId, term: Term, msg: Message) -> Envelope {
        Envelope {
            group: self.group,
            from: self.id,
            to,
            term,
            msg,
        }
    }

    fn send(&mut self, to: NodeId, msg: Message) {
        let env = self.envelope(to, self.term, msg);
        self.out.push(Action::Send(env));
    }

    fn send_after_persist(&mut self, to: NodeId, msg: Message) {
        // The message may depend on a term or vote changed by this input:
        // stage the hard state before it.
        self.persist_hard_state();
        let env = self.envelope(to, self.term, msg);
        self.out.push(Action::SendAfterPersist(env));
    }

    fn reset_election_deadline(&mut self) {
        let timeout = self.rng.range(
            self.config.election_timeout_min_ms,
            self.config.election_timeout_max_ms,
        );
        self.election_deadline = self.now + timeout;
    }

    /// Whether a live leader is known (leader stickiness, with check-quorum).
    fn in_lease(&self) -> bool {
        if !self.config.check_quorum {
            return false;
        }
        if self.role == Role::Leader || self.now < self.quiet_until {
            return true;
        }
        self.leader.is_some()
            && self
                .leader_seen_at
                .is_some_and(|t| self.now < t + self.config.election_timeout_min_ms)
    }

    /// Stages the hard state if its term or vote changed since it was last
    /// staged. A commit index that moved alone is not worth a flush: it is
    /// staged along with the next write (see
    /// [`stage_commit_with_writes`](Self::stage_commit_with_writes)).
    fn persist_hard_state(&mut self) {
        let mut state = HardState {
            term: self.term,
            vote: self.vote,
            commit: self.commit,
        };
        if mutant!(TermVoteNotPersisted) {
            state.term = self.saved.term;
            state.vote = self.saved.vote;
        }
        if (state.term, state.vote) != (self.saved.term, self.saved.vote) {
            self.saved = state;
            self.out.push(Action::SaveHardState(state));
        }
    }

    /// Stages the commit index with the writes of this batch, if it has any
    /// and the index moved. Nothing depends on the commit index being
    /// durable: after a restart the node learns it again from the leader
    /// (or, alone, by committing an entry of its new term), and re-applies
    /// from what it finds.
    fn stage_commit_with_writes(&mut self) {
        if self.commit != self.saved.commit && self.out.iter().any(Action::is_persist) {
            self.saved.commit = self.commit;
            self.out.push(Action::SaveHardState(self.saved));
        }
    }

    /// Leader: sends the appends the inputs since the last drain made due.
    pub(super) fn send_due_appends(&mut self) {
        let (entries, commit) = (self.replicate_due, self.commit_due);
        self.replicate_due = false;
        self.commit_due = false;
        if self.role == Role::Leader && (entries || commit) {
            self.broadcast_append(commit);
        }
    }

    /// Follower: of several acknowledgements to the same leader in one
    /// batch, only the last is needed when it covers the earlier ones.
    fn coalesce_acks(&mut self) {
        let is_ack = |a: &Action| {
            matches!(
                a,
                Action::SendAfterPersist(Envelope {
                    msg: Message::AppendResp(raft_api::AppendResponse::Success { .. }),
                    ..
                })
            )
        };
        if self.out.iter().filter(|a| is_ack(a)).count() < 2 {
            return;
        }
        // The latest acknowledgement seen (walking backwards) per leader,
        // term and stream: earlier ones it covers are dropped.
        let mut latest: Vec<(NodeId, Term, u64, LogIndex)> = Vec::new();
        let mut keep = vec![true; self.out.len()];
        for (i, action) in self.out.iter().enumerate().rev() {
            let Action::SendAfterPersist(Envelope {
                to,
                term,
                msg: Message::AppendResp(raft_api::AppendResponse::Success { matched, stream }),
                ..
            }) = action
            else {
                continue;
            };
            let key = (*to, *term, *stream);
            match latest.iter().find(|l| (l.0, l.1, l.2) == key) {
                Some(l) if l.3 >= *matched => keep[i] = false,
                Some(_) => {}
                None => latest.push((key.0, key.1, key.2, *matched)),
            }
        }
        let mut i = 0;
        self.out.retain(|_| {
            i += 1;
            keep[i - 1]
        });
    }

    /// Emits newly committed entries for application.
    fn apply_committed(&mut self) {
        if self.commit <= self.applied {
            return;
        }
        let entries = self
            .log
            .slice(self.applied.next(), self.commit, usize::MAX, usize::MAX);
        if let Some(last) = entries.last() {
            self.applied = last.id.index;
            self.out.push(Action::Apply(entries));
        }
    }

    /// Common tail of every input.
    fn finish(&mut self) {
        if self.role == Role::Leader {
            self.leader_housekeeping();
        }
        self.persist_hard_state();
        self.apply_committed();
        self.maybe_build_snapshot();
    }

    /// A leader's follow-ups after any input: finish membership changes,
    /// step down once removed, confirm reads.
    fn leader_housekeeping(&mut self) {
        if self.members_dirty {
            self.members_dirty = false;
            // Members about to be dropped from replication still learn
            // what was committed so far (their removal, for one).
            self.send_due_appends();
            self.sync_progress();
        }
        self.advance_membership();
        if self.role != Role::Leader {
            return;
        }
        self.advance_reads();
    }

    /// Appends an entry of the current term to this (leader's) log.
    fn append_local(&mut self, payload: Payload) -> LogId {
        let id = LogId::new(self.term, self.log.last_index().next());
        let entry = Entry {
            id,
            timestamp: self.clock.now(self.now.saturating_add(self.wall_offset_ms)),
            payload,
        };
        self.log.append(std::slice::from_ref(&entry));
        if let Payload::Membership(m) = &entry.payload {
            self.configs.push((id.index, Membership::clone(m)));
            self.members_dirty = true;
        }
        // Proposals of one batch are written with one append.
        match self.out.last_mut() {
            Some(Action::AppendLog(batch)) => batch.push(entry),
            _ => self.out.push(Action::AppendLog(vec![entry])),
        }
        id
    }
}

/// Mixed into the seed of the snapshot spacing's generator.
const SNAPSHOT_SEED: u64 = 0x5eed_5ab5_0000_0001;

/// Terms and indexes above these cannot come from a correct peer (a group
/// would need millions of years to reach them); refusing them keeps every
/// increment inside the engine from overflowing.
const MAX_TERM: Term = Term(1 << 62);
const MAX_INDEX: u64 = 1 << 62;

/// Why a message cannot have come from a correct peer, if it cannot.
fn malformed(env: &Envelope) -> Option<String> {
    if env.term > MAX_TERM {
        return Some(format!("term {} is beyond any real cluster's", env.term));
    }
    let req = match &env.msg {
        Message::Append(req) => req,
        Message::Snapshot(chunk) => return snapshot::malformed(env.term, chunk),
        _ => return None,
    };
    if req
        .prev
        .index
        .0
        .checked_add(req.entries.len() as u64 + 1)
        .is_none_or(|end| end > MAX_INDEX)
    {
        return Some(format!("index {} is beyond any real log's", req.prev.index));
    }
    if req.prev.term > env.term {
        return Some(format!(
            "previous entry {} is newer than {}",
            req.prev, env.term
        ));
    }
    let mut expected = req.prev.index.next();
    let mut term = req.prev.term;
    for e in &req.entries {
        if e.id.index != expected {
            return Some(format!("entry {} where index {expected} was due", e.id));
        }
        if e.id.term < term || e.id.term > env.term {
            return Some(format!(
                "entry {} out of term order (after {term}, sent in {})",
                e.id, env.term
            ));
        }
        if let Payload::Membership(m) = &e.payload
            && let Err(err) = m.validate()
        {
            return Some(format!(
                "entry {} holds an unusable membership: {err}",
                e.id
            ));
        }
        term = e.id.term;
        expected = expected.next();
    }
    None
}
