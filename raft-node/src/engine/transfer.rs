//! Leader transfer (thesis §3.10): the leader stops taking proposals, brings
//! the target's log up to date, and sends it `TimeoutNow`; the target
//! campaigns at once, and voters grant it past leader stickiness. A transfer
//! that has not completed within an election timeout is abandoned.

use raft_api::{LogIndex, Message, NodeId};

use super::{Engine, Role};
use crate::error::TransferError;

/// A transfer under way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Transfer {
    pub(super) target: NodeId,
    /// Abandoned at this time.
    deadline: u64,
    /// `TimeoutNow` has been sent.
    sent: bool,
}

impl Engine {
    /// Hands leadership to `target`, or with `None` to the most caught-up
    /// voter; returns the target. Proposals and membership changes are
    /// refused until the transfer completes (this node steps down) or is
    /// abandoned after an election timeout.
    pub fn transfer_leader(&mut self, target: Option<NodeId>) -> Result<NodeId, TransferError> {
        self.wake(true);
        let result = self.try_transfer(target);
        self.finish();
        result
    }

    fn try_transfer(&mut self, target: Option<NodeId>) -> Result<NodeId, TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader {
                leader: self.leader,
            });
        }
        if let Some(t) = &self.transfer {
            return Err(TransferError::InProgress { target: t.target });
        }
        let target = match target {
            Some(t) if t == self.id => return Ok(t),
            Some(t) => {
                if !self.membership().voters.contains(&t) {
                    return Err(TransferError::NotVoter(t));
                }
                t
            }
            None => self.best_transfer_target().ok_or(TransferError::NoTarget)?,
        };
        self.transfer = Some(Transfer {
            target,
            deadline: self.now + self.config.election_timeout_min_ms,
            sent: false,
        });
        self.advance_transfer();
        Ok(target)
    }

    /// The voter (of the new half) with the most of the log, other than
    /// this node; ties go to the lowest id.
    pub(super) fn best_transfer_target(&self) -> Option<NodeId> {
        self.membership()
            .voters
            .iter()
            .filter(|&&n| n != self.id)
            .max_by_key(|&&n| {
                let matched = self.progress.get(&n).map_or(LogIndex(0), |p| p.matched);
                (matched, std::cmp::Reverse(n))
            })
            .copied()
    }

    /// Sends `TimeoutNow` once the target holds the whole log; until then
    /// keeps replicating to it.
    pub(super) fn advance_transfer(&mut self) {
        let Some(t) = self.transfer else { return };
        if t.sent {
            return;
        }
        let matched = self.progress.get(&t.target).map(|p| p.matched);
        if matched == Some(self.log.last_index()) {
            // From here the target may win an election while this node
            // still leads: no lease reads for the rest of the term.
            self.void_lease();
            self.send(t.target, Message::TimeoutNow);
            if let Some(t) = &mut self.transfer {
                t.sent = true;
            }
        } else {
            self.send_append(t.target, false);
        }
    }

    /// Abandons a transfer that did not complete in time.
    pub(super) fn expire_transfer(&mut self) {
        if self.transfer.is_some_and(|t| self.now >= t.deadline) {
            self.transfer = None;
        }
    }

    pub(super) fn handle_timeout_now(&mut self, from: NodeId) {
        if self.role == Role::Leader || self.leader != Some(from) || !self.may_campaign() {
            return;
        }
        self.become_candidate(true);
    }
}
