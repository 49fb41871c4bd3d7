//! Elections: pre-vote (§9.6), votes (§5.2), the election restriction
//! (§5.4.1), and role changes.

use raft_api::{Message, NodeId, Payload, Term, VoteRequest, VoteResponse};

use super::{Engine, Role, mutant};

impl Engine {
    pub(super) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if self.role == Role::Leader && term == self.term {
            // Stepping down in its own term (check-quorum, removal): what
            // it committed still reaches the followers.
            self.send_due_appends();
        }
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        self.stop_leading();
        self.role = Role::Follower;
        self.set_leader(leader);
        if leader.is_some() {
            self.leader_seen_at = Some(self.now);
        }
        self.votes.clear();
        self.reset_election_deadline();
    }

    /// Leaves the leader role's state behind (if it was leading).
    fn stop_leading(&mut self) {
        if self.role == Role::Leader {
            self.end_leader_reads();
        }
        self.progress.clear();
        self.transfer = None;
    }

    fn set_leader(&mut self, leader: Option<NodeId>) {
        if self.leader != leader {
            self.leader = leader;
            self.leader_changed_reads();
        }
    }

    pub(super) fn become_pre_candidate(&mut self) {
        self.stop_leading();
        self.role = Role::PreCandidate;
        self.set_leader(None);
        self.votes.clear();
        self.votes.insert(self.id, true);
        self.reset_election_deadline();
        let req = VoteRequest {
            last_log: self.log.last_id(),
            transfer: false,
        };
        let term = Term(self.term.0 + 1);
        for peer in self.voting_peers() {
            let env = self.envelope(peer, term, Message::PreVote(req));
            self.out.push(super::Action::Send(env));
        }
        self.tally();
    }

    /// Starts an election; `transfer` when the leader asked for it with
    /// `TimeoutNow`.
    pub(super) fn become_candidate(&mut self, transfer: bool) {
        self.stop_leading();
        self.role = Role::Candidate;
        self.term = Term(self.term.0 + 1);
        self.vote = Some(self.id);
        self.set_leader(None);
        self.votes.clear();
        self.votes.insert(self.id, true);
        self.reset_election_deadline();
        // Term and vote must be durable before any vote request leaves
        // (§5.2): a restarted node must not vote again in this term.
        self.persist_hard_state();
        let req = VoteRequest {
            last_log: self.log.last_id(),
            transfer,
        };
        for peer in self.voting_peers() {
            self.send_after_persist(peer, Message::Vote(req));
        }
        self.tally();
    }

    pub(super) fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.set_leader(Some(self.id));
        self.votes.clear();
        self.reads = super::read::Reads::default();
        self.progress.clear();
        self.streams.clear();
        self.sync_progress();
        self.next_heartbeat = self.now + self.config.heartbeat_interval_ms;
        self.quorum_check_at = self.now + self.config.election_timeout_min_ms;
        // An entry of the new term lets the leader commit everything before
        // it (§5.4.2, §8). It is blank, except in a log that records no
        // membership yet: there the first leader writes the bootstrap
        // voters, exactly the configuration in effect, so they are
        // replicated like any entry and known after a restart to every
        // node that holds the entry (or a snapshot after it), even one
        // restarted without being told the voters (as etcd does with its
        // initial configuration). Being the term's first entry, it is also
        // the one whose commit lets the leader serve reads and change the
        // membership.
        let payload = if self.membership_recorded() {
            Payload::Blank
        } else {
            Payload::Membership(Box::new(self.membership().clone()))
        };
        self.term_start = self.append_local(payload).index;
        self.broadcast_append(true);
    }

    /// Whether a candidate whose log ends at `last_log` is at least as
    /// up-to-date as this node (§5.4.1).
    fn log_up_to_date(&self, req: &VoteRequest) -> bool {
        mutant!(VoteWithoutLogCheck) || req.last_log >= self.log.last_id()
    }

    pub(super) fn handle_pre_vote(&mut self, from: NodeId, term: Term, req: VoteRequest) {
        let granted =
            term > self.term && (!self.in_lease() || req.transfer) && self.log_up_to_date(&req);
        // A granted pre-vote answers in the asked term; a refusal in ours, so
        // a pre-candidate that is behind learns the newer term.
        let reply_term = if granted { term } else { self.term };
        let env = self.envelope(
            from,
            reply_term,
            Message::PreVoteResp(VoteResponse { granted }),
        );
        self.out.push(super::Action::Send(env));
    }

    pub(super) fn handle_vote(&mut self, from: NodeId, req: VoteRequest) {
        let can_vote = self.vote == Some(from) || (self.vote.is_none() && self.leader.is_none());
        let granted = can_vote && self.log_up_to_date(&req);
        if granted {
            self.vote = Some(from);
            self.reset_election_deadline();
        }
        self.send_after_persist(from, Message::VoteResp(VoteResponse { granted }));
    }

    pub(super) fn handle_pre_vote_resp(&mut self, from: NodeId, term: Term, resp: VoteResponse) {
        if self.role == Role::PreCandidate && term == Term(self.term.0 + 1) {
            self.votes.insert(from, resp.granted);
            self.tally();
        } else if self.role == Role::PreCandidate && !resp.granted {
            self.votes.insert(from, false);
            self.tally();
        }
    }

    pub(super) fn handle_vote_resp(&mut self, from: NodeId, resp: VoteResponse) {
        if self.role == Role::Candidate {
            self.votes.insert(from, resp.granted);
            self.tally();
        }
    }

    /// Moves a campaign on once a quorum has answered either way.
    pub(super) fn tally(&mut self) {
        // A candidate's own vote counts once it is durable: a node that
        // crashes before that must not have led in this term.
        let own_vote_durable = self.role == Role::PreCandidate
            || (self.durable.term == self.term && self.durable.vote == Some(self.id));
        let id = self.id;
        let membership = self.membership();
        let won = membership
            .is_quorum(|v| self.votes.get(&v) == Some(&true) && (v != id || own_vote_durable));
        let lost = membership.is_quorum_impossible(|v| self.votes.get(&v) == Some(&false));
        if won {
            match self.role {
                Role::PreCandidate => self.become_candidate(false),
                Role::Candidate => self.become_leader(),
                _ => {}
            }
        } else if lost {
            self.become_follower(self.term, None);
        }
    }
}
