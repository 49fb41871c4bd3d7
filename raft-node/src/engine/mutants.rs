//! Deliberately broken engine variants, compiled only with the private
//! `__mutants` feature. The simulator switches one on for its own thread and
//! must then find a safety violation; a mutant that survives means the test
//! suite cannot see that class of bug.

use std::cell::Cell;

/// A deliberate bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutant {
    /// (a) Votes and pre-votes are granted without the log up-to-date check
    /// (§5.4.1).
    VoteWithoutLogCheck,
    /// (b) A leader commits by counting replicas of an entry from an earlier
    /// term (figure 8, §5.4.2).
    CommitOldTermByCount,
    /// (c) A follower acknowledges an append before the entries are durable.
    AckBeforePersist,
    /// (d) Term and vote are never made durable.
    TermVoteNotPersisted,
    /// (e) A leader serves ReadIndex reads before it committed an entry of
    /// its own term, from a commit index that may lag the group's.
    ReadBeforeOwnTermCommit,
    /// (f) Installing a snapshot keeps the log after the snapshot's last
    /// entry even when the log conflicts with the snapshot (figure 13).
    SnapshotKeepsConflictingSuffix,
    /// (g) A new leader accepts a membership change before it committed an
    /// entry of its own term.
    MembershipBeforeOwnTermCommit,
}

impl Mutant {
    /// Every mutant.
    pub const ALL: [Mutant; 7] = [
        Mutant::VoteWithoutLogCheck,
        Mutant::CommitOldTermByCount,
        Mutant::AckBeforePersist,
        Mutant::TermVoteNotPersisted,
        Mutant::ReadBeforeOwnTermCommit,
        Mutant::SnapshotKeepsConflictingSuffix,
        Mutant::MembershipBeforeOwnTermCommit,
    ];
}

thread_local! {
    static ACTIVE: Cell<Option<Mutant>> = const { Cell::new(None) };
}

/// Switches `mutant` on (or every mutant off) for engines running on the
/// calling thread.
pub fn set(mutant: Option<Mutant>) {
    ACTIVE.with(|a| a.set(mutant));
}

/// Whether `mutant` is on for this thread.
pub(crate) fn active(mutant: Mutant) -> bool {
    ACTIVE.with(|a| a.get() == Some(mutant))
}
