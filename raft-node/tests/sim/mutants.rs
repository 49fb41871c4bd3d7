//! Proof that the simulator can fail: each deliberately broken engine
//! variant must be caught by a safety or linearizability check within the
//! default seed count.

use raft_node::engine::mutants::{self, Mutant};

use crate::cluster::FailureKind;
use crate::{replay_command, run_seed, total_seeds};

/// Runs seeds against `mutant` until one fails a safety or
/// linearizability check; returns how many seeds it took.
fn seeds_to_catch(mutant: Mutant) -> Option<u64> {
    mutants::set(Some(mutant));
    let sizes = [3, 5, 7];
    let mut result = None;
    for i in 0..total_seeds() {
        let nodes = sizes[(i % 3) as usize];
        if let Err(f) = run_seed(i, nodes)
            && matches!(f.kind, FailureKind::Safety | FailureKind::Linearizability)
        {
            println!(
                "{mutant:?} caught after {} seeds (seed {i}, {nodes} nodes): {:?}: {}\n  replay: \
                 RAFT_SIM_MUTANT={mutant:?} {}",
                i + 1,
                f.kind,
                f.message,
                replay_command(i, nodes)
            );
            result = Some(i + 1);
            break;
        }
    }
    mutants::set(None);
    result
}

fn assert_caught(mutant: Mutant) {
    let caught = seeds_to_catch(mutant);
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
