//! Log replication (§5.3), commitment (§5.4.2), heartbeats and
//! check-quorum.

use raft_api::{
    AppendRequest, AppendResponse, ConflictHint, HeartbeatRequest, HeartbeatResponse, LogId,
    LogIndex, Message, NodeId,
};

use super::{Action, Engine, ReplicationState, Role, mutant};

impl Engine {
    pub(super) fn tick_leader(&mut self) {
        self.expire_transfer();
        if self.config.check_quorum && self.now >= self.quorum_check_at {
            self.quorum_check_at = self.now + self.config.election_timeout_min_ms;
            let id = self.id;
            let active = self
                .membership()
                .is_quorum(|n| n == id || self.progress.get(&n).is_some_and(|p| p.recent_active));
            for p in self.progress.values_mut() {
                p.recent_active = false;
            }
            if !active {
                // Cut off from a quorum: stop acting as leader, so clients
                // go to a leader that can commit (check-quorum).
                self.become_follower(self.term, None);
                return;
            }
        }
        if self.now >= self.next_heartbeat {
            self.broadcast_heartbeat();
            self.maybe_quiesce();
        }
    }

    /// Sends a heartbeat round to every other member.
    pub(super) fn broadcast_heartbeat(&mut self) {
        self.next_heartbeat = self.now + self.config.heartbeat_interval_ms;
        let round = self.round_sent();
        for peer in self.peers() {
            let matched = self.progress.get(&peer).map_or(LogIndex(0), |p| p.matched);
            let commit = self.commit.min(matched);
            self.send(peer, Message::Heartbeat(HeartbeatRequest { commit, round }));
        }
    }

    /// Sends appends to every follower that can take one. With
    /// `allow_empty`, followers that are up to date get an empty append
    /// carrying the commit index.
    pub(super) fn broadcast_append(&mut self, allow_empty: bool) {
        for peer in self.peers() {
            self.send_append(peer, allow_empty);
        }
    }

    /// Sends one append to `peer` if flow control allows; returns whether a
    /// message carrying entries was sent.
    pub(super) fn send_append(&mut self, peer: NodeId, allow_empty: bool) -> bool {
        let last = self.log.last_index();
        let Some(p) = self.progress.get(&peer) else {
            return false;
        };
        if p.is_paused(self.config.max_inflight) {
            return false;
        }
        let prev_index = p.next.prev();
        let probing = p.state == ReplicationState::Probe;
        let Some(prev_term) = self.log.term(prev_index) else {
            // The entries the follower needs were compacted away.
            return self.start_snapshot(peer);
        };
        let entries = self.log.slice(
            p.next,
            last,
            self.config.max_append_entries,
            self.config.max_append_bytes,
        );
        if entries.is_empty() && !allow_empty && !probing {
            return false;
        }
        let sent_last = entries.last().map(|e| e.id.index);
        let req = AppendRequest {
            prev: LogId::new(prev_term, prev_index),
            entries,
            commit: self.commit,
            stream: p.stream,
        };
        let p = self.progress.get_mut(&peer).expect("checked above");
        match p.state {
            ReplicationState::Probe => p.probe_sent = true,
            ReplicationState::Replicate => {
                if let Some(last) = sent_last {
                    p.sent(last);
                }
            }
            ReplicationState::Snapshot => {}
        }
        self.send(peer, Message::Append(req));
        sent_last.is_some()
    }

    /// Sends as many appends to `peer` as flow control allows.
    pub(super) fn fill_pipeline(&mut self, peer: NodeId) {
        while self.send_append(peer, false) {
            if self
                .progress
                .get(&peer)
                .is_none_or(|p| p.state == ReplicationState::Probe)
            {
                break;
            }
        }
    }

    /// A message only a leader of the current term sends arrived: follow it.
    pub(super) fn follow(&mut self, leader: NodeId) {
        if self.role != Role::Follower || self.leader != Some(leader) {
            // A candidate of this term learns it lost (§5.2).
            self.become_follower(self.term, Some(leader));
        }
        self.leader_seen_at = Some(self.now);
        self.reset_election_deadline();
    }

    pub(super) fn handle_append(&mut self, from: NodeId, req: AppendRequest) {
        self.follow(from);

        // Entries up to the commit index are committed, hence already here
        // and identical: skip them rather than re-check them. (Entries are
        // contiguous after `prev`; `step` refused any that are not.)
        let mut prev = req.prev;
        let mut entries = req.entries;
        let skip = entries
            .iter()
            .take_while(|e| e.id.index <= self.commit)
            .count();
        if skip > 0 {
            prev = entries[skip - 1].id;
            entries.drain(..skip);
        }
        if prev.index < self.commit {
            // Nothing past our commit index: acknowledge what was covered.
            self.ack_append(from, prev.index, req.stream);
            return;
        }

        if !self.log.matches(prev) {
            let hint = match self.log.term(prev.index) {
                Some(term) => ConflictHint {
                    index: self.log.first_index_of_term_at(prev.index, term),
                    term: Some(term),
                },
                None => ConflictHint {
                    index: self.log.last_index().next(),
                    term: None,
                },
            };
            self.send_after_persist(
                from,
                Message::AppendResp(AppendResponse::Conflict {
                    rejected: req.prev.index,
                    hint,
                    stream: req.stream,
                }),
            );
            return;
        }

        let matched = LogIndex(prev.index.0 + entries.len() as u64);
        // Find the first entry this log does not already hold (§5.3: an
        // existing entry that conflicts is deleted with all that follow).
        let new_from = entries
            .iter()
            .position(|e| !self.log.matches(e.id))
            .unwrap_or(entries.len());
        if new_from < entries.len() {
            let first = entries[new_from].id.index;
            if first <= self.log.last_index() {
                self.log.truncate(first);
                self.configs_truncated(first);
                self.persisted = self.persisted.min(first.prev());
                self.out.push(Action::TruncateLog { from: first });
            }
            let fresh = entries.split_off(new_from);
            // Merge the leader's clock: should this node lead later, its
            // entries are stamped after every entry it holds.
            let wall = self.now.saturating_add(self.wall_offset_ms);
            for e in &fresh {
                self.clock.update(wall, e.timestamp);
            }
            self.log.append(&fresh);
            self.configs_appended(&fresh);
            self.out.push(Action::AppendLog(fresh));
        }
        let commit = req.commit.min(matched);
        if commit > self.commit {
            self.commit = commit;
        }
        self.ack_append(from, matched, req.stream);
    }

    /// Acknowledges an append. The acknowledgement promises the entries are
    /// durable, so it leaves only after the flush.
    fn ack_append(&mut self, to: NodeId, matched: LogIndex, stream: u64) {
        let msg = Message::AppendResp(AppendResponse::Success { matched, stream });
        if mutant!(AckBeforePersist) {
            self.send(to, msg);
        } else {
            self.send_after_persist(to, msg);
        }
    }

    pub(super) fn handle_append_resp(&mut self, from: NodeId, resp: AppendResponse) {
        if self.role != Role::Leader {
            return;
        }
        let compacted = self.log.compacted().index;
        let Some(p) = self.progress.get_mut(&from) else {
            return;
        };
        let stream = match resp {
            AppendResponse::Success { stream, .. } | AppendResponse::Conflict { stream, .. } => {
                stream
            }
        };
        if stream != p.stream {
            // An answer about this node from before it was removed and
            // re-added: it says nothing about its log now.
            return;
        }
        p.recent_active = true;
        match resp {
            AppendResponse::Success { matched, .. } => {
                if matched > self.log.last_index() {
                    // Claims entries this leader never had: ignore.
                    return;
                }
                let stale = match p.state {
                    // A probe's answer covers at least the probed entry. An
                    // older answer may predate this progress (the node was
                    // removed and re-added, possibly with a wiped log): it
                    // proves nothing.
                    ReplicationState::Probe => matched < p.next.prev(),
                    ReplicationState::Replicate => false,
                    // Log entries can take over from the snapshot only if
                    // the follower holds everything up to the compaction.
                    ReplicationState::Snapshot => matched < compacted,
                };
                if stale {
                    return;
                }
                let moved = p.ack(matched);
                if p.state != ReplicationState::Replicate {
                    p.become_replicate();
                }
                if moved {
                    self.maybe_commit();
                }
                self.fill_pipeline(from);
                if self.transfer.is_some_and(|t| t.target == from) {
                    self.advance_transfer();
                }
            }
            AppendResponse::Conflict { rejected, hint, .. } => {
                let stale = match p.state {
                    ReplicationState::Replicate => rejected <= p.matched,
                    ReplicationState::Probe => rejected != p.next.prev(),
                    ReplicationState::Snapshot => true,
                };
                if stale {
                    return;
                }
                let matched = p.matched;
                let mut next = match hint.term {
                    Some(term) => self
                        .log
                        .last_index_of_term(term, rejected)
                        .map_or(hint.index, LogIndex::next),
                    None => hint.index,
                };
                // Always move back, never past the match point: the search
                // ends.
                next = next.min(rejected).max(matched.next());
                let p = self.progress.get_mut(&from).expect("checked above");
                if p.state == ReplicationState::Probe && p.probe_sent && next == p.next {
                    // The follower refused the entry at its own match point
                    // (it lost entries it had acknowledged). Probing the same
                    // spot again at once would only multiply messages; the
                    // next heartbeat answer resumes probing.
                    return;
                }
                p.become_probe(next);
                self.send_append(from, true);
            }
        }
    }

    pub(super) fn handle_heartbeat(&mut self, from: NodeId, req: HeartbeatRequest) {
        self.follow(from);
        // The leader caps the commit index at what this node is known to
        // hold, so it is safe to adopt.
        let commit = req.commit.min(self.log.last_index());
        if commit > self.commit {
            self.commit = commit;
        }
        self.send(
            from,
            Message::HeartbeatResp(HeartbeatResponse { round: req.round }),
        );
    }

    pub(super) fn handle_heartbeat_resp(&mut self, from: NodeId, resp: HeartbeatResponse) {
        if self.role != Role::Leader {
            return;
        }
        let last = self.log.last_index();
        let Some(p) = self.progress.get_mut(&from) else {
            return;
        };
        p.recent_active = true;
        p.acked_round = p.acked_round.max(resp.round.min(self.reads.round));
        match p.state {
            ReplicationState::Snapshot => {
                self.resend_snapshot_if_overdue(from);
                return;
            }
            // The probe or its answer may have been lost: probe again.
            ReplicationState::Probe => p.probe_sent = false,
            // Appends may have been lost with a full window: free one slot so
            // replication resumes; a gap is answered by a rejection.
            ReplicationState::Replicate => {
                if p.is_paused(self.config.max_inflight) {
                    p.inflight.pop_front();
                }
            }
        }
        if p.matched < last {
            // Even with nothing new to send: appends may have been lost after
            // `next` moved past them, and an empty append makes the follower
            // answer with where it really stands.
            self.send_append(from, true);
        }
    }

    /// Advances the commit index to the highest index stored on a quorum,
    /// if that entry is of the current term (§5.4.2).
    pub(super) fn maybe_commit(&mut self) {
        let (id, persisted) = (self.id, self.persisted);
        let candidate = self.membership().quorum_index(|v| {
            if v == id {
                persisted
            } else {
                self.progress.get(&v).map_or(LogIndex(0), |p| p.matched)
            }
        });
        if candidate <= self.commit {
            return;
        }
        if self.log.term(candidate) == Some(self.term) || mutant!(CommitOldTermByCount) {
            if self.members_change_committed(candidate) {
                // A membership change is now committed: replicate to whom
                // it leaves (and stop replicating to whom it removed).
                self.members_dirty = true;
            }
            self.commit = candidate;
            // Followers learn the new commit index when the actions are
            // drained, once for the whole batch of inputs.
            self.commit_due = true;
        }
    }
}
