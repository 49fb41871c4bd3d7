//! Linearizable reads without writing to the log (thesis §6.4).
//!
//! - **ReadIndex**: the leader notes its commit index, proves it is still
//!   leader with a heartbeat round a quorum answers (one round serves every
//!   read that arrived before it was sent), and the read is served once the
//!   state machine has applied that index. A new leader first commits an
//!   entry of its own term: before that its commit index may lag the
//!   group's.
//! - **Lease** (with check-quorum): a round a quorum answered also means no
//!   other leader can be elected for a minimum election timeout after it
//!   was *sent*, since those voters refuse votes that long. Minus a margin
//!   for clock drift, the leader serves reads in that window without a new
//!   round. A leader that started a transfer never uses its lease again in
//!   that term: its target may be elected at once.
//! - **Follower reads**: a follower asks the leader for a read index and
//!   serves the read once it has applied that index itself.

use std::collections::VecDeque;

use raft_api::{LogIndex, Message, NodeId, ReadIndexRequest, ReadIndexResponse};

use super::{Action, Engine, Role, mutant};
use crate::error::ReadError;

/// How a read is confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// A quorum round (ReadIndex); on a follower, asked of the leader.
    ReadIndex,
    /// The leader's lease when it holds one, otherwise a quorum round.
    Lease,
}

/// A read waiting on the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PendingRead {
    id: u64,
    /// Who asked: `None` for a local read, a follower otherwise.
    origin: Option<NodeId>,
    /// The commit index when the read arrived (set once the leader has
    /// committed in its term).
    index: LogIndex,
    /// The first heartbeat round sent after the read arrived.
    round: u64,
}

/// Every read the engine is tracking, and the leader's rounds.
#[derive(Debug, Default)]
pub(super) struct Reads {
    /// Leader: reads that wait for an entry of its term to commit.
    unindexed: Vec<PendingRead>,
    /// Leader: reads that wait for a round to be confirmed.
    pending: VecDeque<PendingRead>,
    /// Follower: reads sent to the leader: (id, leader, expiry).
    forwarded: Vec<(u64, NodeId, u64)>,
    /// Leader: last heartbeat round sent, and when each unconfirmed one
    /// left.
    pub(super) round: u64,
    sent_at: VecDeque<(u64, u64)>,
    /// Leader: highest round a quorum answered.
    confirmed: u64,
    /// Leader: lease reads are served before this time.
    lease_until: u64,
    /// Leader: no lease for the rest of the term (a transfer started).
    lease_void: bool,
}

impl Reads {
    /// Whether no read waits on this leader or its leader.
    pub(super) fn is_idle(&self) -> bool {
        self.unindexed.is_empty() && self.pending.is_empty() && self.forwarded.is_empty()
    }

    /// Follower reads whose answer never came fail after their expiry.
    pub(super) fn expire_forwarded(&mut self, now: u64, out: &mut Vec<Action>) {
        self.forwarded.retain(|&(id, _, expiry)| {
            if now >= expiry {
                out.push(Action::ReadFailed {
                    id,
                    error: ReadError::LeadershipLost,
                });
                return false;
            }
            true
        });
    }
}

/// Most unconfirmed rounds remembered; older ones are confirmed by newer.
const MAX_ROUNDS: usize = 1024;

impl Engine {
    /// Starts a linearizable read with a caller-chosen `id`. The engine
    /// later emits [`Action::ReadReady`] with the index the state machine
    /// must have applied before the read is served, or
    /// [`Action::ReadFailed`]. On a follower the read is confirmed through
    /// the leader; with no leader known it fails at once.
    pub fn read(&mut self, id: u64, mode: ReadMode) -> Result<(), ReadError> {
        self.wake(true);
        match self.role {
            Role::Leader => self.leader_read(id, None, mode),
            _ => match self.leader {
                Some(leader) => {
                    let expiry = self.now + self.config.election_timeout_min_ms;
                    self.reads.forwarded.push((id, leader, expiry));
                    self.send(leader, Message::ReadIndex(ReadIndexRequest { id }));
                }
                None => return Err(ReadError::NotLeader { leader: None }),
            },
        }
        self.finish();
        Ok(())
    }

    fn leader_read(&mut self, id: u64, origin: Option<NodeId>, mode: ReadMode) {
        let read = PendingRead {
            id,
            origin,
            index: self.commit,
            round: self.reads.round + 1,
        };
        if !self.committed_in_term() && !mutant!(ReadBeforeOwnTermCommit) {
            self.reads.unindexed.push(read);
            return;
        }
        if mode == ReadMode::Lease && self.lease_valid() {
            self.read_ready(read);
            return;
        }
        self.reads.pending.push_back(read);
    }

    fn lease_valid(&self) -> bool {
        self.config.check_quorum
            && !self.reads.lease_void
            && self.committed_in_term()
            && self.now < self.reads.lease_until
    }

    /// The leader will not serve lease reads again in this term.
    pub(super) fn void_lease(&mut self) {
        self.reads.lease_void = true;
        self.reads.lease_until = 0;
    }

    fn read_ready(&mut self, read: PendingRead) {
        match read.origin {
            None => self.out.push(Action::ReadReady {
                id: read.id,
                index: read.index,
            }),
            Some(follower) => self.send(
                follower,
                Message::ReadIndexResp(ReadIndexResponse {
                    id: read.id,
                    index: Some(read.index),
                }),
            ),
        }
    }

    fn read_failed(&mut self, read: PendingRead, error: ReadError) {
        match read.origin {
            None => self.out.push(Action::ReadFailed { id: read.id, error }),
            Some(follower) => self.send(
                follower,
                Message::ReadIndexResp(ReadIndexResponse {
                    id: read.id,
                    index: None,
                }),
            ),
        }
    }

    pub(super) fn handle_read_index(&mut self, from: NodeId, req: ReadIndexRequest) {
        if self.role == Role::Leader {
            self.leader_read(req.id, Some(from), ReadMode::ReadIndex);
        } else {
            self.send(
                from,
                Message::ReadIndexResp(ReadIndexResponse {
                    id: req.id,
                    index: None,
                }),
            );
        }
    }

    pub(super) fn handle_read_index_resp(&mut self, from: NodeId, resp: ReadIndexResponse) {
        let Some(pos) = self
            .reads
            .forwarded
            .iter()
            .position(|&(id, leader, _)| id == resp.id && leader == from)
        else {
            return;
        };
        self.reads.forwarded.remove(pos);
        self.out.push(match resp.index {
            Some(index) => Action::ReadReady { id: resp.id, index },
            None => Action::ReadFailed {
                id: resp.id,
                error: ReadError::LeadershipLost,
            },
        });
    }

    /// Records that a heartbeat round left now.
    pub(super) fn round_sent(&mut self) -> u64 {
        self.reads.round += 1;
        self.reads.sent_at.push_back((self.reads.round, self.now));
        if self.reads.sent_at.len() > MAX_ROUNDS {
            self.reads.sent_at.pop_front();
        }
        self.reads.round
    }

    /// Leader: moves reads along: index those waiting for the term's first
    /// commit, confirm rounds a quorum answered, start a round when reads
    /// wait and none is in flight.
    pub(super) fn advance_reads(&mut self) {
        if !self.reads.unindexed.is_empty()
            && (self.committed_in_term() || mutant!(ReadBeforeOwnTermCommit))
        {
            for mut read in std::mem::take(&mut self.reads.unindexed) {
                read.index = self.commit;
                read.round = self.reads.round + 1;
                self.reads.pending.push_back(read);
            }
        }
        self.confirm_rounds();
        let waiting = self
            .reads
            .pending
            .back()
            .is_some_and(|r| r.round > self.reads.round);
        if waiting && self.reads.confirmed >= self.reads.round {
            self.broadcast_heartbeat();
            self.confirm_rounds();
        }
    }

    fn confirm_rounds(&mut self) {
        if self.reads.confirmed >= self.reads.round {
            // Every round sent is confirmed already.
            return;
        }
        let (id, round) = (self.id, self.reads.round);
        let confirmed = self
            .membership()
            .quorum_index(|n| {
                if n == id {
                    LogIndex(round)
                } else {
                    LogIndex(self.progress.get(&n).map_or(0, |p| p.acked_round))
                }
            })
            .0;
        if confirmed <= self.reads.confirmed {
            return;
        }
        self.reads.confirmed = confirmed;
        while let Some(&(r, at)) = self.reads.sent_at.front() {
            if r > confirmed {
                break;
            }
            self.reads.sent_at.pop_front();
            if r == confirmed && !self.reads.lease_void {
                // No other leader before a minimum election timeout after
                // the round left, minus the clocks' drift.
                self.reads.lease_until =
                    at + self.config.election_timeout_min_ms - self.config.lease_clock_drift_ms;
            }
        }
        while self
            .reads
            .pending
            .front()
            .is_some_and(|r| r.round <= confirmed)
        {
            let read = self.reads.pending.pop_front().expect("checked");
            self.read_ready(read);
        }
    }

    /// Leadership ended: every read waiting on this leader fails, and its
    /// rounds and lease are forgotten.
    pub(super) fn end_leader_reads(&mut self) {
        let reads: Vec<PendingRead> = self
            .reads
            .unindexed
            .drain(..)
            .chain(self.reads.pending.drain(..))
            .collect();
        for read in reads {
            self.read_failed(read, ReadError::LeadershipLost);
        }
        let forwarded = std::mem::take(&mut self.reads.forwarded);
        self.reads = Reads {
            forwarded,
            ..Reads::default()
        };
    }

    /// Follower reads sent to another leader than the current one fail.
    pub(super) fn leader_changed_reads(&mut self) {
        let leader = self.leader;
        let out = &mut self.out;
        self.reads.forwarded.retain(|&(id, to, _)| {
            if Some(to) == leader {
                return true;
            }
            out.push(Action::ReadFailed {
                id,
                error: ReadError::LeadershipLost,
            });
            false
        });
    }
}
