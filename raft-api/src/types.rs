//! Identifiers, log entries and durable state.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::hlc::Hlc;
use crate::membership::Membership;

macro_rules! id_newtype {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl From<u64> for $name {
            fn from(value: u64) -> Self {
                Self(value)
            }
        }
    };
}

id_newtype!(
    /// Identifies a node (a process taking part in one or more Raft groups).
    NodeId,
    "n"
);
id_newtype!(
    /// Identifies a Raft group ("partition"). Every message names its group,
    /// so many groups can share one node, one transport and one log store.
    GroupId,
    "g"
);
id_newtype!(
    /// A Raft term: a logical period with at most one leader (§5.1).
    Term,
    "t"
);
id_newtype!(
    /// A position in the replicated log; the first entry has index 1 and
    /// index 0 stands for "before the first entry".
    LogIndex,
    "i"
);

impl LogIndex {
    /// The index right after this one.
    pub const fn next(self) -> Self {
        Self(self.0 + 1)
    }

    /// The index right before this one (0 stays 0).
    pub const fn prev(self) -> Self {
        Self(self.0.saturating_sub(1))
    }
}

/// The position and term of a log entry. Ordering compares the term first,
/// then the index, which is exactly Raft's "at least as up-to-date" order of
/// logs by their last entry (§5.4.1).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogId {
    /// Term in which the entry was created by a leader.
    pub term: Term,
    /// Position of the entry in the log.
    pub index: LogIndex,
}

impl LogId {
    /// Builds a log id.
    pub const fn new(term: Term, index: LogIndex) -> Self {
        Self { term, index }
    }
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.term, self.index)
    }
}

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Payload {
    /// An empty entry a new leader appends to commit entries of earlier terms
    /// (§5.4.2, §8).
    Blank,
    /// An application command, opaque to Raft.
    Command(Bytes),
    /// A new membership of the group; in effect from the moment it is
    /// appended to a log. Boxed: memberships are rare, and inline they
    /// would make every entry (and every vector of entries) larger.
    Membership(Box<Membership>),
}

impl Payload {
    /// Bytes this payload occupies, used to bound message sizes.
    pub fn size(&self) -> usize {
        match self {
            Payload::Blank => 0,
            Payload::Command(data) => data.len(),
            Payload::Membership(m) => 8 * (m.voters.len() + m.outgoing.len() + m.learners.len()),
        }
    }
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    /// Term and index of the entry.
    pub id: LogId,
    /// Hybrid logical clock time at which the leader created the entry.
    pub timestamp: Hlc,
    /// What the entry carries.
    pub payload: Payload,
}

impl Entry {
    /// Approximate encoded size in bytes, used to bound messages and reads.
    pub fn size(&self) -> usize {
        // Fixed header: term, index and timestamp.
        24 + self.payload.size()
    }
}

/// The part of a group's state that must be durable before the node acts on
/// it: the current term and the vote cast in it (§5.2, figure 2), plus the
/// highest index known committed (an optimisation: it lets a restarted node
/// apply entries without waiting for a leader).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HardState {
    /// Latest term this node has seen.
    pub term: Term,
    /// Candidate that received this node's vote in `term`, if any.
    pub vote: Option<NodeId>,
    /// Highest log index known to be committed.
    pub commit: LogIndex,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ids_order_by_term_then_index() {
        let old_long = LogId::new(Term(1), LogIndex(100));
        let new_short = LogId::new(Term(2), LogIndex(1));
        assert!(new_short > old_long);
        assert!(LogId::new(Term(2), LogIndex(2)) > new_short);
    }

    #[test]
    fn index_arithmetic_saturates_at_zero() {
        assert_eq!(LogIndex(0).prev(), LogIndex(0));
        assert_eq!(LogIndex(4).prev(), LogIndex(3));
        assert_eq!(LogIndex(4).next(), LogIndex(5));
    }

    #[test]
    fn display_is_compact() {
        assert_eq!(LogId::new(Term(3), LogIndex(9)).to_string(), "t3-i9");
        assert_eq!(NodeId(4).to_string(), "n4");
        assert_eq!(GroupId(0).to_string(), "g0");
    }

    #[test]
    fn entry_size_counts_payload() {
        let e = Entry {
            id: LogId::default(),
            timestamp: Hlc::default(),
            payload: Payload::Command(Bytes::from_static(b"hello")),
        };
        assert_eq!(e.size(), 29);
    }
}
