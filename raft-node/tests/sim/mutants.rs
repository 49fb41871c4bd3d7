//! Proof that the simulator can fail: each deliberately broken engine
//! variant must be caught by a safety or linearizability check within the
//! default seed count.

use raft_node::engine::mutants::{self, Mutant};

use crate::cases::membership_race;
use crate::cluster::{FailureKind, SimFailure};
use crate::{replay_command, run_seed, total_seeds};

/// A fault schedule aimed at one bug, run with a seed.
type Schedule = fn(u64) -> Result<(), SimFailure>;

/// Runs seeds against `mutant` until one fails a safety or
/// linearizability check; returns how many seeds it took. Each seed runs a
/// random fault mix and, when given, the schedule aimed at this bug.
fn seeds_to_catch(mutant: Mutant, schedule: Option<Schedule>) -> Option<u64> {
    mutants::set(Some(mutant));
    let sizes = [3, 5, 7];
    let mut result = None;
    for i in 0..total_seeds() {
        let nodes = sizes[(i % 3) as usize];
        let random = run_seed(i, nodes)
            .err()
            .map(|f| (f, replay_command(i, nodes)));
        let aimed = || {
            schedule
                .and_then(|run| run(i).err())
                .map(|f| (f, format!("the aimed schedule with seed {i}")))
        };
        if let Some((f, replay)) = random
            .filter(|(f, _)| is_safety(f))
            .or_else(|| aimed().filter(|(f, _)| is_safety(f)))
        {
            println!(
                "{mutant:?} caught after {} seeds (seed {i}): {:?}: {}\n  replay: \
                 RAFT_SIM_MUTANT={mutant:?} {replay}",
                i + 1,
                f.kind,
                f.message,
            );
            result = Some(i + 1);
            break;
        }
    }
    mutants::set(None);
    result
}

fn is_safety(f: &SimFailure) -> bool {
    matches!(f.kind, FailureKind::Safety | FailureKind::Linearizability)
}

fn assert_caught(mutant: Mutant) {
    assert_caught_with(mutant, None);
}

fn assert_caught_with(mutant: Mutant, schedule: Option<Schedule>) {
    let caught = seeds_to_catch(mutant, schedule);
    assert!(
        caught.is_some(),
        "mutant {mutant:?} survived {} seeds: the simulator cannot see this bug",
        total_seeds()
    );
}

#[test]
fn mutant_vote_without_log_check_is_caught() {
    assert_caught(Mutant::VoteWithoutLogCheck);
}

#[test]
fn mutant_commit_old_term_by_count_is_caught() {
    assert_caught(Mutant::CommitOldTermByCount);
}

#[test]
fn mutant_ack_before_persist_is_caught() {
    assert_caught(Mutant::AckBeforePersist);
}

#[test]
fn mutant_term_vote_not_persisted_is_caught() {
    assert_caught(Mutant::TermVoteNotPersisted);
}

#[test]
fn mutant_read_before_own_term_commit_is_caught() {
    assert_caught(Mutant::ReadBeforeOwnTermCommit);
}

#[test]
fn mutant_snapshot_keeps_conflicting_suffix_is_caught() {
    assert_caught(Mutant::SnapshotKeepsConflictingSuffix);
}

/// The random fault mix rarely lines up the four conditions this bug
/// needs (an even number of voters, a change left on a minority, a change
/// by the next leader before it commits, a voter missing that leader's
/// entries), so each seed also runs the schedule aimed at it.
#[test]
fn mutant_membership_before_own_term_commit_is_caught() {
    assert_caught_with(
        Mutant::MembershipBeforeOwnTermCommit,
        Some(|seed| membership_race(seed).map(|_| ())),
    );
}
