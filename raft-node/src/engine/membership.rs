//! Membership changes (§6, thesis chapter 4): learners, promotion, removal,
//! and replacing any set of voters through a joint configuration.
//!
//! A membership is in effect as soon as its entry is appended. A change of
//! at most one voter goes straight to the new configuration (any majority
//! of the old and any of the new overlap); a larger change first enters the
//! joint configuration (old and new majorities both needed) and the leader
//! leaves it automatically once the joint entry is committed. One change is
//! in flight at a time, and a new leader changes nothing before an entry of
//! its own term is committed: without that rule a leader that does not yet
//! know an earlier, uncommitted change could commit a conflicting one.

use std::collections::BTreeSet;

use raft_api::{LogId, LogIndex, Membership, NodeId, Payload, SnapshotMeta};

use super::log::RaftLog;
use super::{Engine, Role, mutant};
use crate::engine::progress::Progress;
use crate::error::ChangeError;

/// A membership change requested from the leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// Add a node that receives the log but does not vote.
    AddLearner(NodeId),
    /// Make a learner a voter (only once it is within `max_promote_lag`
    /// entries of the leader).
    Promote(NodeId),
    /// Remove a voter or a learner (the leader itself included: it steps
    /// down once the change is committed).
    Remove(NodeId),
    /// Make exactly these nodes the voters, in one change. Every new voter
    /// must be a learner within `max_promote_lag` (or already a voter);
    /// voters left out are removed; other learners stay.
    ReplaceVoters(BTreeSet<NodeId>),
}

/// The memberships known from a snapshot and a log, oldest first.
pub(super) fn configs_from(
    snapshot: Option<&SnapshotMeta>,
    bootstrap: &[NodeId],
    log: &RaftLog,
) -> Vec<(LogIndex, Membership)> {
    let base = match snapshot {
        Some(meta) => (meta.last.index, meta.membership.clone()),
        None => (LogIndex(0), Membership::new(bootstrap.iter().copied())),
    };
    let mut configs = vec![base.clone()];
    for e in log.entries_after(base.0) {
        if let Payload::Membership(m) = &e.payload {
            configs.push((e.id.index, Membership::clone(m)));
        }
    }
    configs
}

impl Engine {
    /// Asks the leader to change the group's membership; returns the id of
    /// the entry that carries the change. The change is done when that
    /// entry is committed and, for a change of more than one voter, once
    /// the joint configuration it starts has been left (the leader does
    /// that by itself, see [`membership_index`](Self::membership_index)).
    pub fn change_membership(&mut self, change: MembershipChange) -> Result<LogId, ChangeError> {
        self.wake(true);
        let result = self.try_change_membership(change);
        self.finish();
        result
    }

    fn try_change_membership(&mut self, change: MembershipChange) -> Result<LogId, ChangeError> {
        if self.role != Role::Leader {
            return Err(ChangeError::NotLeader {
                leader: self.leader,
            });
        }
        if let Some(t) = &self.transfer {
            return Err(ChangeError::TransferInProgress { target: t.target });
        }
        if !self.committed_in_term() && !mutant!(MembershipBeforeOwnTermCommit) {
            return Err(ChangeError::NotReady);
        }
        let current = self.membership().clone();
        if current.is_joint() || self.membership_index() > self.commit {
            return Err(ChangeError::InProgress);
        }
        let mut next = current.clone();
        match change {
            MembershipChange::AddLearner(node) => {
                if current.contains(node) {
                    return Err(ChangeError::AlreadyMember(node));
                }
                next.learners.insert(node);
            }
            MembershipChange::Promote(node) => {
                self.check_promotable(&current, node)?;
                next.learners.remove(&node);
                next.voters.insert(node);
            }
            MembershipChange::Remove(node) => {
                if !current.contains(node) {
                    return Err(ChangeError::NotMember(node));
                }
                next.voters.remove(&node);
                next.learners.remove(&node);
            }
            MembershipChange::ReplaceVoters(voters) => {
                for &node in voters.difference(&current.voters) {
                    self.check_promotable(&current, node)?;
                }
                next.learners.retain(|n| !voters.contains(n));
                next.voters = voters;
            }
        }
        next.validate()?;
        let changed = current.voters.symmetric_difference(&next.voters).count();
        if changed > 1 {
            next.outgoing = current.voters.clone();
        }
        Ok(self.append_membership(next))
    }

    fn check_promotable(&self, current: &Membership, node: NodeId) -> Result<(), ChangeError> {
        if !current.is_learner(node) {
            return Err(ChangeError::NotLearner(node));
        }
        let matched = self.progress.get(&node).map_or(LogIndex(0), |p| p.matched);
        let lag = self.log.last_index().0.saturating_sub(matched.0);
        if lag > self.config.max_promote_lag {
            return Err(ChangeError::LearnerBehind {
                node,
                lag,
                max: self.config.max_promote_lag,
            });
        }
        Ok(())
    }

    fn append_membership(&mut self, membership: Membership) -> LogId {
        let id = self.append_local(Payload::Membership(Box::new(membership)));
        self.sync_progress();
        self.broadcast_append(false);
        id
    }

    /// Leader only: once a joint configuration is committed, leave it; once
    /// a configuration without this node is committed, step down.
    pub(super) fn advance_membership(&mut self) {
        if self.membership_index() > self.commit || self.transfer.is_some() {
            return;
        }
        let current = self.membership();
        if current.is_joint() {
            let mut next = current.clone();
            next.outgoing.clear();
            self.append_membership(next);
        } else if !current.is_voter(self.id) {
            // Removed (thesis §4.2.2): hand over to the most caught-up voter
            // at once rather than leave the group waiting for a timeout.
            let target = self.best_transfer_target();
            // The followers learn the commit index before the target
            // campaigns.
            self.send_due_appends();
            if let Some(target) = target {
                self.send(target, raft_api::Message::TimeoutNow);
            }
            self.become_follower(self.term, None);
        }
    }

    /// Whether this node may start elections: it votes in a configuration
    /// from the last committed one on. A node removed by a configuration
    /// not yet committed may still be needed to commit it (thesis §4.2.2),
    /// for example when the leader that removed itself lost its quorum.
    pub(super) fn may_campaign(&self) -> bool {
        let committed = self.last_committed_config();
        self.configs[committed..]
            .iter()
            .any(|(_, m)| m.is_voter(self.id))
    }

    /// Whether the membership in effect is recorded in the group's data: in
    /// a membership entry of the log or in the snapshot. Otherwise it is the
    /// bootstrap voters, which only the engine's creator knows.
    pub(super) fn membership_recorded(&self) -> bool {
        self.membership_index() > LogIndex(0) || self.snapshot.is_some()
    }

    /// Whether committing up to `upto` (from the current commit index)
    /// commits a configuration whose members differ from those of the one
    /// before it, so the replication targets may change. The bootstrap
    /// voters written by a new leader (see `become_leader`) change none.
    pub(super) fn members_change_committed(&self, upto: LogIndex) -> bool {
        self.configs.windows(2).any(|pair| {
            let ((_, before), (index, after)) = (&pair[0], &pair[1]);
            *index > self.commit && *index <= upto && before.members() != after.members()
        })
    }

    /// Position in `configs` of the latest membership known committed.
    fn last_committed_config(&self) -> usize {
        self.configs
            .iter()
            .rposition(|(i, _)| *i <= self.commit)
            .unwrap_or(0)
    }

    /// Leader only: the members replicated to are those of every
    /// configuration from the last committed one on, so a node being
    /// removed still learns of its removal. Progress of new members starts
    /// fresh (probing after the leader's last entry): answers to messages
    /// sent before a node was removed and re-added then cannot count.
    pub(super) fn sync_progress(&mut self) {
        let committed = self.last_committed_config();
        let mut targets: BTreeSet<NodeId> = BTreeSet::new();
        for (_, m) in &self.configs[committed..] {
            targets.extend(m.members());
        }
        targets.remove(&self.id);
        self.progress.retain(|n, _| targets.contains(n));
        let next = self.log.last_index().next();
        for n in targets {
            if !self.progress.contains_key(&n) {
                let stream = self.streams.entry(n).or_insert(0);
                self.progress.insert(n, Progress::new(next, *stream));
                *stream += 1;
            }
        }
    }

    /// Follows the log: membership entries appended are in effect at once;
    /// truncated ones are undone.
    pub(super) fn configs_appended(&mut self, entries: &[raft_api::Entry]) {
        for e in entries {
            if let Payload::Membership(m) = &e.payload {
                self.configs.push((e.id.index, Membership::clone(m)));
                self.members_dirty = true;
            }
        }
    }

    /// Forgets memberships from entries at `from` and after.
    pub(super) fn configs_truncated(&mut self, from: LogIndex) {
        let keep = self.configs.partition_point(|(i, _)| *i < from).max(1);
        if keep < self.configs.len() {
            self.configs.truncate(keep);
            self.members_dirty = true;
        }
    }

    /// The membership in effect at `index`.
    pub(super) fn membership_at(&self, index: LogIndex) -> Membership {
        let at = self
            .configs
            .iter()
            .rposition(|(i, _)| *i <= index)
            .unwrap_or(0);
        self.configs[at].1.clone()
    }

    /// Drops memberships no snapshot or read will ask about: those before
    /// the one in effect at `index`.
    pub(super) fn configs_compacted(&mut self, index: LogIndex) {
        let at = self
            .configs
            .iter()
            .rposition(|(i, _)| *i <= index)
            .unwrap_or(0);
        self.configs.drain(..at);
    }
}
