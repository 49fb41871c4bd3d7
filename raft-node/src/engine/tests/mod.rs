//! Unit tests of the engine, one rule per test, each naming the section of
//! the Raft paper ("In Search of an Understandable Consensus Algorithm") or
//! of Ongaro's thesis it checks.
//!
//! Every test builds engines with [`engine`], feeds them inputs by hand and
//! compares the exact actions they produce. [`Cluster`] routes actions
//! between a few engines for the tests that need a whole conversation.

mod commit;
mod election;
mod membership;
mod read;
mod replication;
mod robustness;
mod snapshot;
mod transfer;
mod vote;

use std::collections::BTreeMap;

use bytes::Bytes;
use raft_api::{
    AppendRequest, AppendResponse, Config, ConflictHint, Entry, Envelope, GroupId, HardState,
    HeartbeatRequest, HeartbeatResponse, Hlc, LogId, LogIndex, Membership, Message, NodeId,
    Payload, Snapshot, SnapshotChunk, SnapshotMeta, SnapshotResponse, Term, VoteRequest,
    VoteResponse,
};

use super::{Action, Engine, EngineInit, ReadMode, Role};

/// The group every test engine runs.
const G: GroupId = GroupId(7);

/// Small, explicit settings: elections time out after 100..200 ms,
/// heartbeats every 20 ms.
fn config() -> Config {
    Config {
        election_timeout_min_ms: 100,
        election_timeout_max_ms: 200,
        heartbeat_interval_ms: 20,
        max_append_entries: 64,
        max_append_bytes: 1 << 20,
        max_inflight: 8,
        pre_vote: true,
        check_quorum: true,
        snapshot_threshold: 0,
        snapshot_trailing: 2,
        snapshot_chunk_bytes: 4,
        max_promote_lag: 2,
        lease_clock_drift_ms: 30,
        quiesce_after_ms: 0,
    }
}

/// Engine `id` of a group with `voters`, empty log, seed 1, created at time
/// 0; `tweak` adjusts the init (config, hard state, entries...) first.
fn engine(id: u64, voters: &[u64], tweak: impl FnOnce(&mut EngineInit)) -> Engine {
    let mut init = EngineInit::new(
        NodeId(id),
        G,
        voters.iter().copied().map(NodeId).collect(),
        config(),
    );
    init.seed = 1;
    tweak(&mut init);
    Engine::new(init).expect("valid test engine")
}

/// No tweak.
fn plain(_: &mut EngineInit) {}

/// Lets a restarted engine (one with a stored term) through its quiet
/// period, during which it grants no vote because a leader's lease may
/// still count on it.
fn restarted(mut e: Engine) -> Engine {
    let quiet = config().election_timeout_min_ms;
    e.tick(quiet);
    assert_eq!(
        e.role(),
        Role::Follower,
        "no election during the quiet period"
    );
    e.take_actions();
    e
}

/// Pre-vote switched off.
fn no_pre_vote(init: &mut EngineInit) {
    init.config.pre_vote = false;
}

/// An init tweak that installs a durable log with the given entry terms
/// (index 1, 2, ...) and hard state.
fn stored(
    terms: &'static [u64],
    term: u64,
    vote: Option<u64>,
    commit: u64,
) -> impl FnOnce(&mut EngineInit) {
    move |init| {
        init.entries = log_of(terms);
        init.hard_state = hs(term, vote, commit);
    }
}

fn lid(term: u64, index: u64) -> LogId {
    LogId::new(Term(term), LogIndex(index))
}

fn hs(term: u64, vote: Option<u64>, commit: u64) -> HardState {
    HardState {
        term: Term(term),
        vote: vote.map(NodeId),
        commit: LogIndex(commit),
    }
}

/// A pre-built entry. Entries with the same id carry the same command, as
/// they would in a real cluster (Log Matching Property, §5.3).
fn ent(term: u64, index: u64) -> Entry {
    Entry {
        id: lid(term, index),
        timestamp: Hlc::default(),
        payload: Payload::Command(Bytes::from(format!("t{term}i{index}"))),
    }
}

/// Entries with the given terms at index 1, 2, ...
fn log_of(terms: &[u64]) -> Vec<Entry> {
    terms
        .iter()
        .zip(1..)
        .map(|(&term, index)| ent(term, index))
        .collect()
}

/// The entry an engine holds at `index` (for entries the engine created
/// itself, whose timestamps come from its clock).
fn entry_at(e: &Engine, index: u64) -> Entry {
    e.entry(LogIndex(index))
        .cloned()
        .unwrap_or_else(|| panic!("{} holds no entry at {index}", e.id()))
}

/// Every entry of an engine's log, in order.
fn log_entries(e: &Engine) -> Vec<Entry> {
    (1..=e.last_log_id().index.0)
        .map(|i| entry_at(e, i))
        .collect()
}

fn env(from: u64, to: u64, term: u64, msg: Message) -> Envelope {
    Envelope {
        group: G,
        from: NodeId(from),
        to: NodeId(to),
        term: Term(term),
        msg,
    }
}

fn send(from: u64, to: u64, term: u64, msg: Message) -> Action {
    Action::Send(env(from, to, term, msg))
}

fn send_after_persist(from: u64, to: u64, term: u64, msg: Message) -> Action {
    Action::SendAfterPersist(env(from, to, term, msg))
}

fn save(term: u64, vote: Option<u64>, commit: u64) -> Action {
    Action::SaveHardState(hs(term, vote, commit))
}

fn pre_vote(last: LogId) -> Message {
    Message::PreVote(VoteRequest {
        last_log: last,
        transfer: false,
    })
}

fn vote(last: LogId) -> Message {
    Message::Vote(VoteRequest {
        last_log: last,
        transfer: false,
    })
}

fn pre_vote_resp(granted: bool) -> Message {
    Message::PreVoteResp(VoteResponse { granted })
}

fn vote_resp(granted: bool) -> Message {
    Message::VoteResp(VoteResponse { granted })
}

/// An append of the leader's first replication stream to the receiver
/// (stream 0); [`on_stream`] moves any message to another stream.
fn append(prev: LogId, entries: Vec<Entry>, commit: u64) -> Message {
    Message::Append(AppendRequest {
        prev,
        entries,
        commit: LogIndex(commit),
        stream: 0,
    })
}

fn success(matched: u64) -> Message {
    Message::AppendResp(AppendResponse::Success {
        matched: LogIndex(matched),
        stream: 0,
    })
}

fn conflict(rejected: u64, hint_index: u64, hint_term: Option<u64>) -> Message {
    Message::AppendResp(AppendResponse::Conflict {
        rejected: LogIndex(rejected),
        hint: ConflictHint {
            index: LogIndex(hint_index),
            term: hint_term.map(Term),
        },
        stream: 0,
    })
}

/// `msg` on replication stream `stream` (a node re-added in the term is on
/// a new stream).
fn on_stream(stream: u64, mut msg: Message) -> Message {
    match &mut msg {
        Message::Append(r) => r.stream = stream,
        Message::AppendResp(
            AppendResponse::Success { stream: s, .. } | AppendResponse::Conflict { stream: s, .. },
        ) => *s = stream,
        Message::Snapshot(c) => c.stream = stream,
        Message::SnapshotResp(r) => r.stream = stream,
        _ => {}
    }
    msg
}

fn heartbeat(commit: u64) -> Message {
    heartbeat_round(commit, 0)
}

/// A leader's heartbeat of round `round`.
fn heartbeat_round(commit: u64, round: u64) -> Message {
    Message::Heartbeat(HeartbeatRequest {
        commit: LogIndex(commit),
        round,
    })
}

fn heartbeat_resp() -> Message {
    heartbeat_resp_round(0)
}

/// An answer to a heartbeat of round `round`.
fn heartbeat_resp_round(round: u64) -> Message {
    Message::HeartbeatResp(HeartbeatResponse { round })
}

/// A simple membership of `voters` and `learners`.
fn members(voters: &[u64], learners: &[u64]) -> Membership {
    let mut m = Membership::new(voters.iter().copied().map(NodeId));
    m.learners = learners.iter().copied().map(NodeId).collect();
    m
}

/// A membership entry, as a leader would replicate it.
fn membership_ent(term: u64, index: u64, membership: Membership) -> Entry {
    Entry {
        id: lid(term, index),
        timestamp: Hlc::default(),
        payload: Payload::Membership(Box::new(membership)),
    }
}

/// What a new leader appends as the first entry of its term (§8) when its
/// log records no membership yet (no membership entry, no snapshot): the
/// bootstrap `voters`, so that they are in the replicated log. With a
/// membership recorded, it appends [`Payload::Blank`].
fn bootstrap(voters: &[u64]) -> Payload {
    Payload::Membership(Box::new(members(voters, &[])))
}

/// A snapshot covering up to `last`, with the membership of `voters`.
fn snap(last: LogId, voters: &[u64], data: &'static [u8]) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            last,
            membership: members(voters, &[]),
        },
        data: Bytes::from_static(data),
    }
}

/// The chunk of `snapshot` of `len` bytes at `offset`.
fn chunk(snapshot: &Snapshot, offset: usize, len: usize) -> Message {
    Message::Snapshot(Box::new(SnapshotChunk {
        meta: snapshot.meta.clone(),
        total: snapshot.data.len() as u64,
        offset: offset as u64,
        data: snapshot.data.slice(offset..offset + len),
        stream: 0,
    }))
}

fn snapshot_resp(last: LogId, received: u64, installed: bool) -> Message {
    Message::SnapshotResp(SnapshotResponse {
        last,
        received,
        installed,
        stream: 0,
    })
}

/// For a leader just made by [`elect`]: its log is durable and every voter
/// acknowledged all of it, so the first entry of its term is committed;
/// drains the actions.
fn commit_all(e: &mut Engine) {
    let (me, term, last) = (e.id().0, e.term().0, e.last_log_id());
    e.on_persisted(Some(last));
    let peers: Vec<u64> = e
        .membership()
        .all_voters()
        .iter()
        .map(|v| v.0)
        .filter(|&v| v != me)
        .collect();
    for p in peers {
        step(e, env(p, me, term, success(last.index.0)));
    }
    assert_eq!(e.commit_index(), last.index);
    e.take_actions();
}

/// The messages among `actions` (sent at once or after the flush).
fn messages(actions: &[Action]) -> Vec<Envelope> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(m) | Action::SendAfterPersist(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

/// Steps into `e` every message of `actions` addressed to it.
fn deliver(actions: &[Action], e: &mut Engine) {
    for m in messages(actions) {
        if m.to == e.id() {
            step(e, m);
        }
    }
}

/// Steps a message that must be accepted.
fn step(e: &mut Engine, envelope: Envelope) {
    e.step(envelope).expect("message accepted");
}

/// Makes `e` the leader of the next term: campaigns, collects grants from
/// its peers (pre-vote and vote), reports its vote durable, and drains the
/// actions (the first entry of its term and the first probes).
fn elect(e: &mut Engine) {
    let me = e.id().0;
    let peers: Vec<u64> = e
        .membership()
        .all_voters()
        .iter()
        .map(|v| v.0)
        .filter(|&v| v != me)
        .collect();
    e.campaign();
    if e.role() == Role::PreCandidate {
        let term = e.term().0 + 1;
        for &p in &peers {
            if e.role() != Role::PreCandidate {
                break;
            }
            step(e, env(p, me, term, pre_vote_resp(true)));
        }
    }
    assert_eq!(e.role(), Role::Candidate);
    e.take_actions();
    e.on_persisted(None);
    for &p in &peers {
        if e.role() == Role::Leader {
            break;
        }
        let term = e.term().0;
        step(e, env(p, me, term, vote_resp(true)));
    }
    assert_eq!(e.role(), Role::Leader);
    e.take_actions();
}

/// The entries of every `Apply` action, in order.
fn applied(actions: &[Action]) -> Vec<Entry> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Apply(entries) => Some(entries.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// A few engines joined by a perfect network and perfect disks: every
/// message is delivered, every persist action is flushed at once.
struct Cluster {
    nodes: BTreeMap<NodeId, Engine>,
    /// Everything each node handed to its state machine, in order.
    applied: BTreeMap<NodeId, Vec<Entry>>,
    /// Snapshots each node restored, in order.
    restored: BTreeMap<NodeId, Vec<Snapshot>>,
    /// Reads each node finished: id -> ready index, or `None` for failed.
    reads: BTreeMap<NodeId, BTreeMap<u64, Option<LogIndex>>>,
    /// Messages dropped instead of delivered: (from, to).
    cut: Vec<(u64, u64)>,
    /// Every message sent, delivered or dropped, in order.
    sent: Vec<Envelope>,
}

impl Cluster {
    fn new(engines: Vec<Engine>) -> Self {
        Self {
            nodes: engines.into_iter().map(|e| (e.id(), e)).collect(),
            applied: BTreeMap::new(),
            restored: BTreeMap::new(),
            reads: BTreeMap::new(),
            cut: Vec::new(),
            sent: Vec::new(),
        }
    }

    /// Three plain engines of the group {1, 2, 3}, node 1 elected leader.
    fn three_led_by_1() -> Self {
        let mut c = Self::new(vec![
            engine(1, &[1, 2, 3], plain),
            engine(2, &[1, 2, 3], plain),
            engine(3, &[1, 2, 3], plain),
        ]);
        c.node_mut(1).campaign();
        c.run();
        c
    }

    /// Advances every node's clock to `now`, then runs.
    fn tick(&mut self, now: u64) {
        for e in self.nodes.values_mut() {
            e.tick(now);
        }
        self.run();
    }

    /// The messages sent from `from` to `to`, delivered or not, in order.
    fn sent_between(&self, from: u64, to: u64) -> Vec<&Message> {
        self.sent
            .iter()
            .filter(|m| m.from == NodeId(from) && m.to == NodeId(to))
            .map(|m| &m.msg)
            .collect()
    }

    fn node(&self, id: u64) -> &Engine {
        &self.nodes[&NodeId(id)]
    }

    fn node_mut(&mut self, id: u64) -> &mut Engine {
        self.nodes.get_mut(&NodeId(id)).expect("known node")
    }

    fn applied_by(&self, id: u64) -> &[Entry] {
        self.applied.get(&NodeId(id)).map_or(&[], Vec::as_slice)
    }

    /// Carries out actions until no engine has anything left to do: each
    /// round drains every engine, flushes its persist actions (reporting the
    /// last staged entry with `on_persisted`), then delivers the messages.
    fn run(&mut self) {
        for _ in 0..1000 {
            let mut messages = Vec::new();
            let mut busy = false;
            for (id, e) in &mut self.nodes {
                let actions = e.take_actions();
                busy |= !actions.is_empty();
                let mut flushed = false;
                let mut last = None;
                for action in actions {
                    match action {
                        Action::SaveHardState(_)
                        | Action::TruncateLog { .. }
                        | Action::SaveSnapshot(_)
                        | Action::CompactLog { .. } => flushed = true,
                        Action::AppendLog(entries) => {
                            flushed = true;
                            last = entries.last().map(|x| x.id).or(last);
                        }
                        Action::Send(m) | Action::SendAfterPersist(m) => messages.push(m),
                        Action::Apply(entries) => {
                            self.applied.entry(*id).or_default().extend(entries);
                        }
                        Action::RestoreSnapshot(s) => {
                            self.restored.entry(*id).or_default().push(s);
                        }
                        Action::BuildSnapshot => {}
                        Action::ReadReady { id: read, index } => {
                            self.reads.entry(*id).or_default().insert(read, Some(index));
                        }
                        Action::ReadFailed { id: read, .. } => {
                            self.reads.entry(*id).or_default().insert(read, None);
                        }
                    }
                }
                if flushed {
                    e.on_persisted(last);
                }
            }
            if !busy {
                return;
            }
            self.sent.extend(messages.iter().cloned());
            for m in messages {
                let to = m.to;
                if self.cut.contains(&(m.from.0, to.0)) {
                    continue;
                }
                if let Some(e) = self.nodes.get_mut(&to) {
                    step(e, m);
                }
            }
        }
        panic!("the cluster did not settle");
    }
}
