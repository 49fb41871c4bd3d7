//! Engines alone: a group of [`Engine`]s wired together in one thread, with
//! no runtime and no I/O. Messages go through a queue; every persist action
//! is staged in a [`MemLogStore`] and flushed before the engine hears
//! `on_persisted`, as a driver would; committed entries are counted, not
//! applied to anything. What this measures is the consensus core's own
//! cost per proposal.

use std::collections::VecDeque;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use raft_api::{Config, Envelope, GroupId, LogId, LogStore, NodeId};
use raft_node::engine::{Action, Engine, EngineInit, Role};
use storage_mem::MemLogStore;

use crate::BenchError;

const GROUP: GroupId = GroupId(1);

/// Runs a future that is ready at once (the in-memory store's).
fn ready<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => unreachable!("in-memory futures are ready at once"),
    }
}

struct Member {
    engine: Engine,
    store: MemLogStore,
    /// Messages that may leave once the next flush is done.
    held: Vec<Envelope>,
    /// Last entry handed out for application.
    applied: LogId,
    /// Entries applied on this member.
    applied_count: u64,
}

/// A group of engines driven synchronously.
pub struct EngineCluster {
    members: Vec<Member>,
    queue: VecDeque<Envelope>,
    leader: usize,
    now: u64,
    delivered: u64,
}

impl EngineCluster {
    /// A group of `nodes` voters with node 1 elected leader.
    pub fn new(nodes: usize) -> Result<Self, BenchError> {
        if nodes == 0 {
            return Err(BenchError::Settings(
                "a group needs at least one node".into(),
            ));
        }
        let voters: Vec<NodeId> = (1..=nodes as u64).map(NodeId).collect();
        let config = Config {
            // Snapshots every 64k entries keep the in-memory log bounded
            // without building one on every run.
            snapshot_threshold: 65_536,
            ..Config::default()
        };
        let mut members = Vec::new();
        for &id in &voters {
            let mut init = EngineInit::new(id, GROUP, voters.clone(), config.clone());
            init.seed = id.0;
            let engine = Engine::new(init).map_err(|e| BenchError::Settings(e.to_string()))?;
            members.push(Member {
                engine,
                store: MemLogStore::new(),
                held: Vec::new(),
                applied: LogId::default(),
                applied_count: 0,
            });
        }
        let mut cluster = Self {
            members,
            queue: VecDeque::new(),
            leader: 0,
            now: 0,
            delivered: 0,
        };
        cluster.now = 1;
        cluster.members[0].engine.tick(cluster.now);
        cluster.members[0].engine.campaign();
        cluster.run_until_quiet();
        if cluster.members[0].engine.role() != Role::Leader {
            return Err(BenchError::NoLeader { group: 1, secs: 0 });
        }
        Ok(cluster)
    }

    /// Proposes `count` commands of `value` on the leader and runs the
    /// group until every one is committed and applied on the leader;
    /// returns how many were applied there.
    pub fn propose_batch(&mut self, count: usize, value: &Bytes) -> Result<u64, BenchError> {
        let before = self.members[self.leader].applied_count;
        for _ in 0..count {
            self.members[self.leader]
                .engine
                .propose(value.clone())
                .map_err(|e| BenchError::Settings(format!("propose: {e}")))?;
        }
        self.run_until_quiet();
        Ok(self.members[self.leader].applied_count - before)
    }

    /// Messages delivered between the engines so far.
    pub fn messages(&self) -> u64 {
        self.delivered
    }

    /// Entries applied on each member so far.
    pub fn applied(&self) -> Vec<u64> {
        self.members.iter().map(|m| m.applied_count).collect()
    }

    /// Carries out every action and delivers every message until nothing
    /// is left to do.
    fn run_until_quiet(&mut self) {
        loop {
            let mut busy = false;
            for i in 0..self.members.len() {
                busy |= self.drive(i);
            }
            while let Some(env) = self.queue.pop_front() {
                busy = true;
                self.delivered += 1;
                let to = (env.to.0 - 1) as usize;
                // Refused messages (wrong group, malformed) cannot happen
                // here; ignoring the result mirrors a driver.
                let _ = self.members[to].engine.step(env);
                self.drive(to);
            }
            if !busy {
                return;
            }
        }
    }

    /// Carries out member `i`'s actions; whether there were any.
    fn drive(&mut self, i: usize) -> bool {
        let mut any = false;
        loop {
            let m = &mut self.members[i];
            let actions = m.engine.take_actions();
            if actions.is_empty() {
                return any;
            }
            any = true;
            let mut staged = false;
            let mut last: Option<LogId> = None;
            for action in actions {
                match action {
                    Action::SaveHardState(hs) => {
                        let _ = m.store.save_hard_state(GROUP, hs);
                        staged = true;
                    }
                    Action::TruncateLog { from } => {
                        let _ = m.store.truncate(GROUP, from);
                        staged = true;
                    }
                    Action::AppendLog(entries) => {
                        let _ = m.store.append(GROUP, &entries);
                        last = entries.last().map(|e| e.id).or(last);
                        staged = true;
                    }
                    Action::SaveSnapshot(s) => {
                        let _ = m.store.save_snapshot(GROUP, &s);
                        staged = true;
                    }
                    Action::CompactLog { upto } => {
                        let _ = m.store.compact(GROUP, upto);
                        staged = true;
                    }
                    Action::Send(env) => self.queue.push_back(env),
                    Action::SendAfterPersist(env) => m.held.push(env),
                    Action::Apply(entries) => {
                        if let Some(e) = entries.last() {
                            m.applied = e.id;
                        }
                        m.applied_count += entries.len() as u64;
                    }
                    Action::RestoreSnapshot(s) => m.applied = s.meta.last,
                    Action::BuildSnapshot => {
                        let at = m.applied;
                        m.engine.on_snapshot_built(at, Bytes::new());
                    }
                    Action::ReadReady { .. } | Action::ReadFailed { .. } => {}
                }
            }
            if staged {
                let _ = ready(m.store.flush());
                m.engine.on_persisted(last);
            }
            self.queue.extend(m.held.drain(..));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_engines_commit_every_proposal_everywhere() {
        let mut c = EngineCluster::new(3).unwrap();
        let value = Bytes::from_static(&[1u8; 16]);
        let base = c.applied();
        assert_eq!(c.propose_batch(100, &value).unwrap(), 100);
        let sent = c.messages();
        assert_eq!(c.propose_batch(1, &value).unwrap(), 1);
        // An append to each follower and an answer from each, at least.
        assert!(c.messages() >= sent + 4);
        // Followers learn the commit index with the next append or
        // heartbeat; all but the last batch reached them.
        let now = c.applied();
        assert_eq!(now[0] - base[0], 101);
        for f in &now[1..] {
            assert!(*f >= base[1] + 100, "{now:?}");
        }
    }

    #[test]
    fn a_single_engine_commits_alone_and_zero_nodes_is_refused() {
        let mut c = EngineCluster::new(1).unwrap();
        assert_eq!(c.propose_batch(10, &Bytes::new()).unwrap(), 10);
        assert!(EngineCluster::new(0).is_err());
    }
}
