//! Group membership: voters, learners, and joint consensus (§6 of the Raft
//! paper, chapter 4 of Ongaro's thesis); and the metadata of snapshots,
//! which carry the membership as of their last entry.

use std::collections::BTreeSet;
use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::types::{LogId, LogIndex, NodeId};

/// Who takes part in a Raft group.
///
/// Membership lives in the log (as [`Payload::Membership`](crate::Payload)
/// entries) and in snapshots; a node uses the latest membership in its log
/// as soon as the entry is appended, committed or not.
///
/// In a *joint* configuration (`outgoing` not empty) every decision (an
/// election, a commit) needs a majority of `voters` **and** a majority of
/// `outgoing`, so any set of voters can be replaced safely in one change.
/// Learners receive the log but never vote and never count.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Membership {
    /// The voters (of the new configuration, while joint).
    pub voters: BTreeSet<NodeId>,
    /// The voters of the old configuration while joint; empty otherwise.
    pub outgoing: BTreeSet<NodeId>,
    /// Non-voting members that receive the log.
    pub learners: BTreeSet<NodeId>,
}

impl Membership {
    /// A simple (non-joint) configuration of `voters`, without learners.
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Self {
        Self {
            voters: voters.into_iter().collect(),
            outgoing: BTreeSet::new(),
            learners: BTreeSet::new(),
        }
    }

    /// Whether this is a joint configuration (old and new voters).
    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Whether `node` votes in either half of the configuration.
    pub fn is_voter(&self, node: NodeId) -> bool {
        self.voters.contains(&node) || self.outgoing.contains(&node)
    }

    /// Whether `node` is a learner.
    pub fn is_learner(&self, node: NodeId) -> bool {
        self.learners.contains(&node)
    }

    /// Whether `node` is a voter or a learner.
    pub fn contains(&self, node: NodeId) -> bool {
        self.is_voter(node) || self.is_learner(node)
    }

    /// Every voter of either half, sorted, without repeats.
    pub fn all_voters(&self) -> BTreeSet<NodeId> {
        self.voters.union(&self.outgoing).copied().collect()
    }

    /// Every member: voters of either half and learners.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut all = self.all_voters();
        all.extend(self.learners.iter().copied());
        all
    }

    /// Whether the voters for which `yes` holds form a quorum: a majority of
    /// `voters`, and also of `outgoing` when joint. An empty voter set has
    /// no quorum.
    pub fn is_quorum(&self, yes: impl Fn(NodeId) -> bool) -> bool {
        let majority = |set: &BTreeSet<NodeId>| {
            !set.is_empty() && set.iter().filter(|&&n| yes(n)).count() > set.len() / 2
        };
        majority(&self.voters) && (self.outgoing.is_empty() || majority(&self.outgoing))
    }

    /// Whether the voters for which `no` holds make a quorum impossible, in
    /// either half.
    pub fn is_quorum_impossible(&self, no: impl Fn(NodeId) -> bool) -> bool {
        let blocked = |set: &BTreeSet<NodeId>| {
            set.is_empty() || set.iter().filter(|&&n| no(n)).count() >= set.len().div_ceil(2)
        };
        blocked(&self.voters) || (!self.outgoing.is_empty() && blocked(&self.outgoing))
    }

    /// The highest index that a quorum stores, given each voter's stored
    /// index: the smaller of the two halves' values when joint.
    pub fn quorum_index(&self, index_of: impl Fn(NodeId) -> LogIndex) -> LogIndex {
        let half = |set: &BTreeSet<NodeId>| {
            if set.is_empty() {
                return LogIndex(0);
            }
            // Groups are small: sort on the stack, not in an allocation.
            let mut small = [LogIndex(0); 16];
            let mut large = Vec::new();
            let idx: &mut [LogIndex] = if set.len() <= small.len() {
                for (slot, &n) in small.iter_mut().zip(set) {
                    *slot = index_of(n);
                }
                &mut small[..set.len()]
            } else {
                large.extend(set.iter().map(|&n| index_of(n)));
                &mut large
            };
            idx.sort_unstable_by(|a, b| b.cmp(a));
            idx[set.len() / 2]
        };
        let new = half(&self.voters);
        if self.outgoing.is_empty() {
            new
        } else {
            new.min(half(&self.outgoing))
        }
    }

    /// Checks the configuration is usable: at least one voter, and no node
    /// both voter and learner.
    pub fn validate(&self) -> Result<(), MembershipError> {
        if self.voters.is_empty() {
            return Err(MembershipError::NoVoters);
        }
        if let Some(&n) = self.all_voters().intersection(&self.learners).next() {
            return Err(MembershipError::VoterAndLearner(n));
        }
        Ok(())
    }
}

impl fmt::Display for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |set: &BTreeSet<NodeId>| {
            set.iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        write!(f, "voters [{}]", list(&self.voters))?;
        if self.is_joint() {
            write!(f, " joint with [{}]", list(&self.outgoing))?;
        }
        if !self.learners.is_empty() {
            write!(f, " learners [{}]", list(&self.learners))?;
        }
        Ok(())
    }
}

/// A membership that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MembershipError {
    /// The configuration has no voter, so nothing could ever be decided.
    #[error("a group needs at least one voter")]
    NoVoters,
    /// A node is listed both as voter and as learner.
    #[error("{0} is listed both as voter and as learner")]
    VoterAndLearner(NodeId),
}

/// Describes a snapshot: the last entry it covers and the membership as of
/// that entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The last log entry whose effect the snapshot contains.
    pub last: LogId,
    /// The group's membership as of `last`.
    pub membership: Membership,
}

/// A state machine image with its metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Snapshot {
    /// What the image covers.
    pub meta: SnapshotMeta,
    /// The image, as built by [`StateMachine::snapshot`](crate::StateMachine::snapshot).
    pub data: Bytes,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u64]) -> BTreeSet<NodeId> {
        v.iter().copied().map(NodeId).collect()
    }

    #[test]
    fn simple_quorum_is_a_majority() {
        let m = Membership::new([1, 2, 3].map(NodeId));
        assert!(m.is_quorum(|n| n.0 <= 2));
        assert!(!m.is_quorum(|n| n.0 == 1));
        assert!(m.is_quorum_impossible(|n| n.0 >= 2));
        assert!(!m.is_quorum_impossible(|n| n.0 == 3));
    }

    #[test]
    fn joint_quorum_needs_both_halves() {
        let m = Membership {
            voters: ids(&[4, 5, 6]),
            outgoing: ids(&[1, 2, 3]),
            learners: BTreeSet::new(),
        };
        assert!(!m.is_quorum(|n| n.0 <= 3), "old majority alone");
        assert!(!m.is_quorum(|n| n.0 >= 4), "new majority alone");
        assert!(m.is_quorum(|n| [1, 2, 4, 5].contains(&n.0)));
        assert!(m.is_quorum_impossible(|n| n.0 == 1 || n.0 == 2));
    }

    #[test]
    fn quorum_index_takes_the_lower_half() {
        let m = Membership {
            voters: ids(&[4, 5, 6]),
            outgoing: ids(&[1, 2, 3]),
            learners: BTreeSet::new(),
        };
        let idx = |n: NodeId| LogIndex([0, 9, 9, 2, 7, 7, 1][n.0 as usize]);
        assert_eq!(m.quorum_index(idx), LogIndex(7));
        let simple = Membership::new([1, 2, 3, 4].map(NodeId));
        // Four voters: the third highest is on a majority of three.
        assert_eq!(simple.quorum_index(idx), LogIndex(7));
    }

    #[test]
    fn quorum_index_of_a_large_group() {
        // More voters than fit the stack buffer: the same rule applies.
        let m = Membership::new((1..=21).map(NodeId));
        let idx = |n: NodeId| LogIndex(n.0 * 10);
        // Eleven of 21 hold 110 or more.
        assert_eq!(m.quorum_index(idx), LogIndex(110));
    }

    #[test]
    fn learners_never_count() {
        let mut m = Membership::new([1].map(NodeId));
        m.learners.insert(NodeId(2));
        assert!(m.is_quorum(|n| n.0 == 1));
        assert!(!m.is_quorum(|n| n.0 == 2));
        assert!(m.contains(NodeId(2)) && !m.is_voter(NodeId(2)));
    }

    #[test]
    fn validation() {
        assert_eq!(
            Membership::default().validate(),
            Err(MembershipError::NoVoters)
        );
        let mut m = Membership::new([1, 2].map(NodeId));
        m.learners.insert(NodeId(2));
        assert_eq!(
            m.validate(),
            Err(MembershipError::VoterAndLearner(NodeId(2)))
        );
        assert_eq!(m.to_string(), "voters [n1,n2] learners [n2]");
    }
}
