//! Safety invariants checked after every simulation step.
//!
//! Logs are tracked by a hash chain: each entry's *prefix hash* covers the
//! entry and every entry before it, so comparing one prefix hash compares
//! whole log prefixes.

use std::collections::BTreeMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use raft_api::{Entry, LogId, LogIndex, NodeId, Term};

pub fn entry_hash(e: &Entry) -> u64 {
    let mut h = DefaultHasher::new();
    e.hash(&mut h);
    h.finish()
}

fn chain(prev: u64, e: &Entry) -> u64 {
    let mut h = DefaultHasher::new();
    prev.hash(&mut h);
    entry_hash(e).hash(&mut h);
    h.finish()
}

/// One node's log as the checker sees it: ids and prefix hashes of the
/// entries after its compaction point (`base`).
#[derive(Clone, Debug, Default)]
pub struct LogMirror {
    base: LogId,
    base_hash: u64,
    ids: Vec<LogId>,
    prefix: Vec<u64>,
}

impl LogMirror {
    pub fn prefix_hash(&self, index: LogIndex) -> Option<u64> {
        if index == self.base.index {
            return Some(self.base_hash);
        }
        let offset = index.0.checked_sub(self.base.index.0 + 1)?;
        self.prefix.get(offset as usize).copied()
    }

    fn id_at(&self, index: LogIndex) -> Option<LogId> {
        if index == self.base.index {
            return Some(self.base);
        }
        let offset = index.0.checked_sub(self.base.index.0 + 1)?;
        self.ids.get(offset as usize).copied()
    }

    pub fn last_index(&self) -> LogIndex {
        LogIndex(self.base.index.0 + self.ids.len() as u64)
    }

    fn last_id(&self) -> LogId {
        self.ids.last().copied().unwrap_or(self.base)
    }
}

/// Global facts every node must agree with.
#[derive(Debug, Default)]
pub struct Invariants {
    /// Leader of each term.
    leaders: BTreeMap<Term, NodeId>,
    /// Prefix hash of every (index, term) ever written by any node.
    written: BTreeMap<(LogIndex, Term), u64>,
    /// Prefix hashes of the committed log.
    committed: Vec<u64>,
    /// Hash of the entry applied at each index.
    applied: Vec<u64>,
    /// Commit index seen per node incarnation.
    commit_seen: BTreeMap<NodeId, LogIndex>,
    /// State machine hash after applying up to an index (recorded at the
    /// end of apply batches).
    state_at: BTreeMap<LogIndex, u64>,
}

pub type Violation = String;

impl Invariants {
    /// A node appended entries (after truncating from `entries[0].index`).
    pub fn appended(
        &mut self,
        node: NodeId,
        mirror: &mut LogMirror,
        entries: &[Entry],
    ) -> Result<(), Violation> {
        for e in entries {
            if e.id.index != mirror.last_index().next() {
                return Err(format!(
                    "{node} appended {} but its log ends at {}",
                    e.id,
                    mirror.last_index()
                ));
            }
            if mirror.last_id().term > e.id.term {
                return Err(format!(
                    "{node} appended {} after an entry of a later term {}",
                    e.id,
                    mirror.last_id().term
                ));
            }
            let prev = mirror.prefix.last().copied().unwrap_or(mirror.base_hash);
            let hash = chain(prev, e);
            // Log matching: two logs holding an entry with the same index
            // and term are identical up to it.
            match self.written.get(&(e.id.index, e.id.term)) {
                Some(&h) if h != hash => {
                    return Err(format!(
                        "log matching violated: {node} holds {} with a different prefix than \
                         another node",
                        e.id
                    ));
                }
                Some(_) => {}
                None => {
                    self.written.insert((e.id.index, e.id.term), hash);
                }
            }
            mirror.ids.push(e.id);
            mirror.prefix.push(hash);
        }
        Ok(())
    }

    /// A node truncated its log from `from`.
    pub fn truncated(
        &mut self,
        node: NodeId,
        mirror: &mut LogMirror,
        from: LogIndex,
    ) -> Result<(), Violation> {
        let i = from.0 as usize;
        if from <= mirror.base.index {
            return Err(format!(
                "{node} truncated from {from}, at or before its compaction point {}",
                mirror.base
            ));
        }
        if i <= self.committed.len() && mirror.prefix_hash(from) == Some(self.committed[i - 1]) {
            return Err(format!("{node} truncated the committed entry at {from}"));
        }
        let keep = (from.0 - mirror.base.index.0 - 1) as usize;
        mirror.ids.truncate(keep);
        mirror.prefix.truncate(keep);
        Ok(())
    }

    /// A node compacted its log up to `upto` (after a snapshot, its own or
    /// the leader's). A snapshot holds only committed entries, and whatever
    /// log the node keeps after it must continue the committed log.
    pub fn compacted(
        &mut self,
        node: NodeId,
        mirror: &mut LogMirror,
        upto: LogId,
        commit: LogIndex,
    ) -> Result<(), Violation> {
        if upto.index <= mirror.base.index {
            return Ok(());
        }
        let holds = mirror.id_at(upto.index) == Some(upto);
        if holds {
            // The node may know of commits the checker has not yet observed.
            self.learn_committed(node, mirror, commit.min(upto.index))?;
        }
        let i = upto.index.0 as usize;
        let Some(&hash) = self.committed.get(i - 1) else {
            return Err(format!(
                "{node} compacted up to {upto}, past the committed log (ends at {})",
                self.committed.len()
            ));
        };
        if holds {
            if mirror.prefix_hash(upto.index) != Some(hash) {
                return Err(format!(
                    "{node} compacted up to {upto}, but its log up to there differs from the \
                     committed log"
                ));
            }
            let drop = (upto.index.0 - mirror.base.index.0) as usize;
            mirror.ids.drain(..drop);
            mirror.prefix.drain(..drop);
        } else if mirror.last_index() > upto.index {
            return Err(format!(
                "{node} installed a snapshot up to {upto} but keeps the log after it, which \
                 conflicts with the snapshot (figure 13: a conflicting log is discarded)"
            ));
        } else {
            mirror.ids.clear();
            mirror.prefix.clear();
        }
        mirror.base = upto;
        mirror.base_hash = hash;
        Ok(())
    }

    /// Checks a node's role, term and commit index after it handled an input.
    /// Returns whether the node just became the first leader of `term`.
    pub fn observe(
        &mut self,
        node: NodeId,
        mirror: &LogMirror,
        is_leader: bool,
        term: Term,
        commit: LogIndex,
    ) -> Result<bool, Violation> {
        let mut new_leader = false;
        if is_leader {
            match self.leaders.get(&term) {
                Some(&other) if other != node => {
                    return Err(format!("two leaders in {term}: {other} and {node}"));
                }
                Some(_) => {}
                None => {
                    // Leader completeness: a new leader holds every entry
                    // committed so far.
                    let known = LogIndex(self.committed.len() as u64);
                    if known.0 > 0 && mirror.prefix_hash(known) != self.committed.last().copied() {
                        return Err(format!(
                            "leader completeness violated: {node} became leader of {term} \
                             without the committed entries up to {known}"
                        ));
                    }
                    self.leaders.insert(term, node);
                    new_leader = true;
                }
            }
        }
        let seen = self.commit_seen.entry(node).or_default();
        // §5.4.2: a leader decides commitment only by counting replicas of
        // an entry of its own term.
        if is_leader && commit > *seen {
            let committed_term = mirror.id_at(commit).map(|id| id.term);
            if committed_term != Some(term) {
                return Err(format!(
                    "{node}, leader of {term}, advanced its commit index to {commit}, an entry of \
                     {committed_term:?} (§5.4.2: only entries of the leader's term are committed \
                     by counting replicas)"
                ));
            }
        }
        if commit < *seen {
            return Err(format!(
                "{node} commit index went back from {} to {commit}",
                *seen
            ));
        }
        *seen = commit;
        if commit > mirror.last_index() {
            return Err(format!(
                "{node} commit index {commit} is past its last entry {}",
                mirror.last_index()
            ));
        }
        self.learn_committed(node, mirror, commit)?;
        Ok(new_leader)
    }

    /// Committed prefixes agree across nodes and never change; the global
    /// committed log grows with what `node` knows committed.
    fn learn_committed(
        &mut self,
        node: NodeId,
        mirror: &LogMirror,
        commit: LogIndex,
    ) -> Result<(), Violation> {
        let overlap = self.committed.len().min(commit.0 as usize);
        if overlap as u64 > mirror.base.index.0
            && mirror.prefix_hash(LogIndex(overlap as u64)) != Some(self.committed[overlap - 1])
        {
            return Err(format!(
                "{node} committed a log that differs from the committed log at or before index \
                 {overlap}"
            ));
        }
        for i in self.committed.len()..commit.0 as usize {
            let hash = mirror
                .prefix_hash(LogIndex(i as u64 + 1))
                .ok_or_else(|| format!("{node} committed index {} it does not hold", i + 1))?;
            self.committed.push(hash);
        }
        Ok(())
    }

    /// A node restarted: its volatile commit index starts over.
    pub fn restarted(&mut self, node: NodeId) {
        self.commit_seen.remove(&node);
    }

    /// A node's state machine applied `entry`, expecting index `expected`.
    pub fn applied(
        &mut self,
        node: NodeId,
        expected: LogIndex,
        e: &Entry,
    ) -> Result<(), Violation> {
        if e.id.index != expected {
            return Err(format!(
                "{node} applied {} out of order (expected index {expected})",
                e.id
            ));
        }
        let i = e.id.index.0 as usize;
        let hash = entry_hash(e);
        if i <= self.applied.len() {
            if self.applied[i - 1] != hash {
                return Err(format!(
                    "{node} applied {} but another node applied a different entry at that index",
                    e.id
                ));
            }
        } else {
            self.applied.push(hash);
        }
        Ok(())
    }

    /// The state machine's hash after applying everything up to `index`:
    /// every replica must have the same state there.
    pub fn state_after(
        &mut self,
        node: NodeId,
        index: LogIndex,
        hash: u64,
        restored: bool,
    ) -> Result<(), Violation> {
        match self.state_at.get(&index) {
            Some(&h) if h != hash => Err(format!(
                "{node} {} a state at {index} that differs from another replica's",
                if restored { "restored" } else { "applied" }
            )),
            Some(_) => Ok(()),
            None => {
                self.state_at.insert(index, hash);
                Ok(())
            }
        }
    }

    /// Mirror of a restarted node, built from its durable log.
    pub fn rebuild(
        &mut self,
        node: NodeId,
        compacted: LogId,
        entries: &[Entry],
    ) -> Result<LogMirror, Violation> {
        let base_hash = match compacted.index.0 as usize {
            0 => 0,
            i => *self.committed.get(i - 1).ok_or_else(|| {
                format!("{node} restarted with a log compacted past the committed log")
            })?,
        };
        let mut mirror = LogMirror {
            base: compacted,
            base_hash,
            ..LogMirror::default()
        };
        self.appended(node, &mut mirror, entries)?;
        Ok(mirror)
    }

    pub fn committed_len(&self) -> usize {
        self.committed.len()
    }

    pub fn leader_terms(&self) -> usize {
        self.leaders.len()
    }
}
