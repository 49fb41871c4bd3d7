//! Log replication (§5.3): the follower's consistency check and conflict
//! hints, the leader's backtracking, flow control and heartbeats.

use super::*;
use crate::engine::ReplicationState;

/// §5.3: an append whose previous entry matches is appended, then
/// acknowledged with its match index once durable.
#[test]
fn s5_3_follower_appends_when_prev_matches() {
    let mut e = engine(2, &[1, 2, 3], stored(&[1], 1, None, 0));
    let entries = vec![ent(1, 2), ent(1, 3)];
    step(&mut e, env(1, 2, 1, append(lid(1, 1), entries.clone(), 0)));
    assert_eq!(
        e.take_actions(),
        vec![
            Action::AppendLog(entries),
            send_after_persist(2, 1, 1, success(3)),
        ]
    );
    assert_eq!(e.last_log_id(), lid(1, 3));
    assert_eq!(e.leader(), Some(NodeId(1)));
}

/// §5.3: when the follower's log is too short for `prev`, it rejects with a
/// hint of one past its last index and no term.
#[test]
fn s5_3_follower_rejects_when_log_too_short() {
    let mut e = engine(2, &[1, 2, 3], stored(&[1, 1], 1, None, 0));
    step(&mut e, env(1, 2, 1, append(lid(1, 5), vec![ent(1, 6)], 0)));
    assert_eq!(
        e.take_actions(),
        vec![send_after_persist(2, 1, 1, conflict(5, 3, None))]
    );
    assert_eq!(e.last_log_id(), lid(1, 2));
}

/// §5.3: when the follower holds another term at `prev`, it rejects with
/// that term and the first index it holds for it.
#[test]
fn s5_3_follower_rejects_term_mismatch_with_first_index_of_term() {
    let mut e = engine(2, &[1, 2, 3], stored(&[1, 1, 2, 2, 2], 3, None, 0));
    step(&mut e, env(1, 2, 3, append(lid(3, 5), vec![ent(3, 6)], 0)));
    assert_eq!(
        e.take_actions(),
        vec![send_after_persist(2, 1, 3, conflict(5, 3, Some(2)))]
    );
    assert_eq!(e.last_log_id(), lid(2, 5));
}

/// §5.3: an existing entry that conflicts with a new one is deleted with
/// everything after it (`TruncateLog`), then the new entries are appended;
/// entries already present are not rewritten.
#[test]
fn s5_3_conflicting_entries_are_truncated_then_replaced() {
    let mut e = engine(2, &[1, 2, 3], stored(&[1, 1, 2, 2], 3, None, 0));
    step(
        &mut e,
        env(1, 2, 3, append(lid(1, 1), vec![ent(1, 2), ent(3, 3)], 0)),
    );
    assert_eq!(
        e.take_actions(),
        vec![
            Action::TruncateLog { from: LogIndex(3) },
            Action::AppendLog(vec![ent(3, 3)]),
            send_after_persist(2, 1, 3, success(3)),
        ]
    );
    assert_eq!(log_entries(&e), vec![ent(1, 1), ent(1, 2), ent(3, 3)]);
}

/// §5.3: a delayed, shorter copy of an append the follower already took
/// matches what it holds, so nothing is truncated or rewritten; the answer
/// covers only that request.
#[test]
fn s5_3_reordered_old_append_does_not_truncate() {
    let mut e = engine(2, &[1, 2, 3], stored(&[], 1, None, 0));
    let all = vec![ent(1, 1), ent(1, 2), ent(1, 3)];
    step(&mut e, env(1, 2, 1, append(lid(0, 0), all.clone(), 0)));
    e.take_actions();

    step(&mut e, env(1, 2, 1, append(lid(0, 0), vec![ent(1, 1)], 0)));
    assert_eq!(
        e.take_actions(),
        vec![send_after_persist(2, 1, 1, success(1))]
    );
    step(&mut e, env(1, 2, 1, append(lid(1, 1), vec![ent(1, 2)], 0)));
    assert_eq!(
        e.take_actions(),
        vec![send_after_persist(2, 1, 1, success(2))]
    );
    assert_eq!(log_entries(&e), all);
}

/// §5.3: an append lying entirely at or below the commit index never
/// truncates anything, even when the follower's log is longer.
#[test]
fn s5_3_append_below_commit_never_truncates() {
    let mut e = engine(2, &[1, 2, 3], stored(&[1, 1, 1, 1, 1], 1, None, 3));
    e.take_actions(); // the restart re-applies 1..=3
    step(
        &mut e,
        env(1, 2, 1, append(lid(0, 0), vec![ent(1, 1), ent(1, 2)], 1)),
    );
    assert_eq!(
        e.take_actions(),
        vec![send_after_persist(2, 1, 1, success(2))]
    );
    step(&mut e, env(1, 2, 1, append(lid(1, 2), vec![], 1)));
    assert_eq!(
        e.take_actions(),
        vec![send_after_persist(2, 1, 1, success(2))]
    );
    assert_eq!(e.last_log_id(), lid(1, 5));
    assert_eq!(e.commit_index(), LogIndex(3));
}

/// §5.3: an append that starts below the commit index and runs past it
/// appends only the part after what the follower holds.
#[test]
fn s5_3_append_straddling_commit_appends_only_new_part() {
    let mut e = engine(2, &[1, 2, 3], stored(&[1, 1], 1, None, 2));
    e.take_actions();
    let entries = vec![ent(1, 1), ent(1, 2), ent(1, 3)];
    step(&mut e, env(1, 2, 1, append(lid(0, 0), entries, 2)));
    assert_eq!(
        e.take_actions(),
        vec![
            Action::AppendLog(vec![ent(1, 3)]),
            send_after_persist(2, 1, 1, success(3)),
        ]
    );
}

/// §5.3: the follower adopts the leader's commit index, capped at the last
/// entry the append covered, and applies what became committed.
#[test]
fn s5_3_follower_commit_is_capped_at_append_end() {
    let mut e = engine(2, &[1, 2, 3], stored(&[], 1, None, 0));
    step(
        &mut e,
        env(1, 2, 1, append(lid(0, 0), vec![ent(1, 1), ent(1, 2)], 9)),
    );
    assert_eq!(
        e.take_actions(),
        vec![
            Action::AppendLog(vec![ent(1, 1), ent(1, 2)]),
            send_after_persist(2, 1, 1, success(2)),
            Action::Apply(vec![ent(1, 1), ent(1, 2)]),
            save(1, None, 2),
        ]
    );
}

/// A leader of term 3 whose log is `1 1 2 2 2` followed by the first entry
/// of its term (the bootstrap voters), probing peers 2 and 3 from index 6.
fn leader_with_terms_1_1_2_2_2() -> Engine {
    let mut e = engine(1, &[1, 2, 3], stored(&[1, 1, 2, 2, 2], 2, None, 0));
    elect(&mut e);
    assert_eq!(e.last_log_id(), lid(3, 6));
    e
}

/// §5.3: a rejection whose hint names a term the leader does not hold at
/// all sends the next probe from the hinted index.
#[test]
fn s5_3_leader_backtracks_to_hint_index_for_unknown_term() {
    let mut e = engine(1, &[1, 2, 3], stored(&[1, 1, 3, 3], 3, None, 0));
    elect(&mut e);
    step(&mut e, env(2, 1, 4, conflict(4, 3, Some(2))));
    let rest = (3..=5).map(|i| entry_at(&e, i)).collect();
    assert_eq!(
        e.take_actions(),
        vec![send(1, 2, 4, append(lid(1, 2), rest, 0))]
    );
    assert_eq!(e.progress(NodeId(2)).unwrap().next, LogIndex(3));
}

/// §5.3: a rejection whose hint names a term the leader also holds resumes
/// right after the leader's last entry of that term.
#[test]
fn s5_3_leader_backtracks_past_its_last_entry_of_hinted_term() {
    let mut e = leader_with_terms_1_1_2_2_2();
    // Peer 2 holds term 1 up to index 5: first index of that run is 1.
    step(&mut e, env(2, 1, 3, conflict(5, 1, Some(1))));
    let rest: Vec<_> = (3..=6).map(|i| entry_at(&e, i)).collect();
    assert_eq!(
        e.take_actions(),
        vec![send(1, 2, 3, append(lid(1, 2), rest.clone(), 0))]
    );
    // A duplicate of that rejection is stale and ignored.
    step(&mut e, env(2, 1, 3, conflict(5, 1, Some(1))));
    assert_eq!(e.take_actions(), vec![]);

    // Peer 3's log is too short: it ends at 2.
    step(&mut e, env(3, 1, 3, conflict(5, 3, None)));
    assert_eq!(
        e.take_actions(),
        vec![send(1, 3, 3, append(lid(1, 2), rest, 0))]
    );
}

/// §5.3: the leader brings a follower with a longer, divergent log (figure
/// 7 (f)-like) and a follower with a short log in line, using the hints;
/// every log ends identical and every node applies the same entries once.
#[test]
fn s5_3_leader_converges_divergent_followers() {
    let leader_terms: &'static [u64] = &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    let mut cluster = Cluster::new(vec![
        restarted(engine(1, &[1, 2, 3], stored(leader_terms, 6, None, 0))),
        restarted(engine(2, &[1, 2, 3], stored(&[1, 1, 1, 4], 4, None, 0))),
        restarted(engine(
            3,
            &[1, 2, 3],
            stored(&[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3], 3, None, 0),
        )),
    ]);
    cluster.node_mut(1).campaign();
    cluster.run();

    let leader = cluster.node(1);
    assert_eq!(leader.role(), Role::Leader);
    assert_eq!(leader.term(), Term(7));
    assert_eq!(leader.last_log_id(), lid(7, 11));
    assert_eq!(leader.commit_index(), LogIndex(11));
    let expected = log_entries(leader);
    for id in 2..=3 {
        let node = cluster.node(id);
        assert_eq!(log_entries(node), expected, "log of node {id}");
        assert_eq!(node.commit_index(), LogIndex(11), "commit of node {id}");
        assert_eq!(node.leader(), Some(NodeId(1)));
    }
    for id in 1..=3 {
        assert_eq!(cluster.applied_by(id), expected, "applied by node {id}");
    }
}

/// Flow control: in `Replicate`, at most `max_inflight` appends of at most
/// `max_append_entries` entries are outstanding; an acknowledgement frees a
/// slot and the next entry goes at once.
#[test]
fn flow_control_bounds_inflight_appends() {
    let mut e = engine(1, &[1, 2], |i| {
        i.config.max_inflight = 2;
        i.config.max_append_entries = 1;
    });
    elect(&mut e);
    step(&mut e, env(2, 1, 1, success(1)));
    assert_eq!(e.take_actions(), vec![]);
    assert_eq!(
        e.progress(NodeId(2)).unwrap().state,
        ReplicationState::Replicate
    );

    e.propose(Bytes::from_static(b"a")).unwrap();
    let e2 = entry_at(&e, 2);
    assert_eq!(
        e.take_actions(),
        vec![
            Action::AppendLog(vec![e2.clone()]),
            send(1, 2, 1, append(lid(1, 1), vec![e2], 0)),
        ]
    );
    e.propose(Bytes::from_static(b"b")).unwrap();
    let e3 = entry_at(&e, 3);
    assert_eq!(
        e.take_actions(),
        vec![
            Action::AppendLog(vec![e3.clone()]),
            send(1, 2, 1, append(lid(1, 2), vec![e3], 0)),
        ]
    );
    // The window is full: the third entry waits.
    e.propose(Bytes::from_static(b"c")).unwrap();
    let e4 = entry_at(&e, 4);
    assert_eq!(e.take_actions(), vec![Action::AppendLog(vec![e4.clone()])]);
    assert_eq!(e.progress(NodeId(2)).unwrap().inflight.len(), 2);

    step(&mut e, env(2, 1, 1, success(2)));
    assert_eq!(
        e.take_actions(),
        vec![send(1, 2, 1, append(lid(1, 3), vec![e4], 0))]
    );
    assert_eq!(e.progress(NodeId(2)).unwrap().inflight.len(), 2);
}

/// Flow control: `max_append_bytes` bounds the entries of one message, but
/// one entry always goes, however large.
#[test]
fn flow_control_bounds_message_bytes_but_sends_one_entry() {
    let mut e = engine(1, &[1, 2], |i| i.config.max_append_bytes = 100);
    elect(&mut e);
    // The probe with the term's first entry is still unanswered: proposals
    // wait.
    for cmd in [&[0u8; 10][..], &[1; 10], &[2; 200], &[3; 10]] {
        e.propose(Bytes::copy_from_slice(cmd)).unwrap();
    }
    let _ = e.take_actions();
    // Sizes (24-byte header + payload): 34, 34, 224, 34.
    step(&mut e, env(2, 1, 1, success(1)));
    let at = |i| entry_at(&e, i);
    let expected = vec![
        send(1, 2, 1, append(lid(1, 1), vec![at(2), at(3)], 0)),
        send(1, 2, 1, append(lid(1, 3), vec![at(4)], 0)),
        send(1, 2, 1, append(lid(1, 4), vec![at(5)], 0)),
    ];
    assert_eq!(e.take_actions(), expected);
}

/// Flow control: in `Probe` the leader sends one append and waits for its
/// answer; proposals meanwhile are only appended locally. A heartbeat
/// answer resumes probing with one append.
#[test]
fn flow_control_probe_sends_one_and_heartbeat_resp_resumes() {
    let mut e = engine(1, &[1, 2], plain);
    elect(&mut e);
    assert_eq!(
        e.progress(NodeId(2)).unwrap().state,
        ReplicationState::Probe
    );
    e.propose(Bytes::from_static(b"x")).unwrap();
    assert_eq!(
        e.take_actions(),
        vec![Action::AppendLog(vec![entry_at(&e, 2)])]
    );
    e.propose(Bytes::from_static(b"y")).unwrap();
    assert_eq!(
        e.take_actions(),
        vec![Action::AppendLog(vec![entry_at(&e, 3)])]
    );

    step(&mut e, env(2, 1, 1, heartbeat_resp()));
    let all = log_entries(&e);
    assert_eq!(
        e.take_actions(),
        vec![send(1, 2, 1, append(lid(0, 0), all, 0))]
    );
    e.propose(Bytes::from_static(b"z")).unwrap();
    assert_eq!(
        e.take_actions(),
        vec![Action::AppendLog(vec![entry_at(&e, 4)])]
    );
}

/// Heartbeats: the leader sends them every heartbeat interval, each
/// carrying `min(commit, match)` of its receiver.
#[test]
fn heartbeat_carries_commit_capped_at_match() {
    let mut e = engine(1, &[1, 2, 3], plain);
    elect(&mut e);
    let first = entry_at(&e, 1);
    step(&mut e, env(2, 1, 1, success(1)));
    assert_eq!(e.take_actions(), vec![]);
    e.on_persisted(Some(lid(1, 1)));
    assert_eq!(
        e.take_actions(),
        vec![
            Action::Apply(vec![first]),
            send(1, 2, 1, append(lid(1, 1), vec![], 1)),
        ]
    );

    e.tick(19);
    assert_eq!(e.take_actions(), vec![]);
    e.tick(20);
    assert_eq!(
        e.take_actions(),
        vec![
            send(1, 2, 1, heartbeat_round(1, 1)),
            send(1, 3, 1, heartbeat_round(0, 1))
        ]
    );
    e.tick(39);
    assert_eq!(e.take_actions(), vec![]);
    e.tick(40);
    assert_eq!(e.take_actions().len(), 2);
}

/// Heartbeats: a follower adopts the heartbeat's commit index (capped at
/// its last entry) and applies the newly committed entries.
#[test]
fn heartbeat_commit_is_adopted_and_applied() {
    let mut e = engine(2, &[1, 2, 3], stored(&[1, 1, 1], 1, None, 0));
    step(&mut e, env(1, 2, 1, heartbeat(2)));
    assert_eq!(
        e.take_actions(),
        vec![
            send(2, 1, 1, heartbeat_resp()),
            Action::Apply(vec![ent(1, 1), ent(1, 2)]),
        ]
    );
    step(&mut e, env(1, 2, 1, heartbeat(9)));
    assert_eq!(
        e.take_actions(),
        vec![
            send(2, 1, 1, heartbeat_resp()),
            Action::Apply(vec![ent(1, 3)]),
        ]
    );
    assert_eq!(e.commit_index(), LogIndex(3));
}

/// Hybrid logical clock: a follower merges the clock of the entries it
/// receives, so if it leads later, its entries are stamped after every
/// entry in its log, even when its own physical clock is far behind.
#[test]
fn hlc_new_leader_stamps_after_every_entry_it_holds() {
    let ahead = Hlc::new(1_000_000, 3);
    let mut f = engine(2, &[1, 2], |init| init.wall_offset_ms = 5);
    let mut e = ent(1, 1);
    e.timestamp = ahead;
    step(&mut f, env(1, 2, 1, append(lid(0, 0), vec![e], 0)));
    f.take_actions();
    assert!(f.clock() > ahead, "merged: {} > {ahead}", f.clock());
    // Node 2 takes over; the first entry of its term comes after.
    f.tick(10_000);
    f.take_actions();
    let term = f.term().0 + 1;
    step(&mut f, env(1, 2, term, pre_vote_resp(true)));
    f.take_actions();
    f.on_persisted(None);
    step(&mut f, env(1, 2, term, vote_resp(true)));
    assert_eq!(f.role(), Role::Leader);
    let first = f.entry(LogIndex(2)).expect("the new leader's first entry");
    assert!(first.timestamp > ahead, "{} > {ahead}", first.timestamp);
}

/// A leader sends each follower one append for all the proposals made
/// between two drains, not one per proposal.
#[test]
fn proposals_between_drains_leave_in_one_append_per_follower() {
    let mut e = engine(1, &[1, 2, 3], plain);
    elect(&mut e);
    commit_all(&mut e);
    let ids: Vec<LogId> = (0..10)
        .map(|i| e.propose(Bytes::from(format!("c{i}"))).unwrap())
        .collect();
    assert_eq!(ids.first().map(|i| i.index), Some(LogIndex(2)));
    let entries: Vec<Entry> = (2..=11).map(|i| entry_at(&e, i)).collect();
    let actions = e.take_actions();
    let appends: Vec<_> = messages(&actions)
        .into_iter()
        .filter(|m| matches!(m.msg, Message::Append(_)))
        .collect();
    assert_eq!(
        appends,
        vec![
            env(1, 2, 1, append(lid(1, 1), entries.clone(), 1)),
            env(1, 3, 1, append(lid(1, 1), entries.clone(), 1)),
        ]
    );
    // Each proposal was still staged for the log at once, in order.
    let staged: Vec<Entry> = actions
        .iter()
        .filter_map(|a| match a {
            Action::AppendLog(es) => Some(es.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(staged, entries);
    // Nothing more is due until something new happens.
    assert_eq!(e.take_actions(), vec![]);
}

/// A follower that takes several appends from its leader in one batch
/// answers once, with the highest match: the earlier answers say less.
#[test]
fn follower_answers_a_batch_of_appends_once() {
    let mut e = engine(2, &[1, 2, 3], plain);
    step(&mut e, env(1, 2, 1, append(lid(0, 0), vec![ent(1, 1)], 0)));
    step(&mut e, env(1, 2, 1, append(lid(1, 1), vec![ent(1, 2)], 0)));
    step(&mut e, env(1, 2, 1, append(lid(1, 2), vec![ent(1, 3)], 1)));
    let actions = e.take_actions();
    assert_eq!(
        messages(&actions),
        vec![env(2, 1, 1, success(3))],
        "{actions:?}"
    );
    assert!(matches!(
        actions.last(),
        Some(Action::SendAfterPersist(_)) | Some(Action::Apply(_)) | Some(Action::SaveHardState(_))
    ));
}

/// Answers on different replication streams, or a later answer that says
/// less (an append below the commit index answered late), are all kept:
/// only answers a later one covers are dropped.
#[test]
fn follower_keeps_answers_a_later_one_does_not_cover() {
    let mut e = engine(2, &[1, 2, 3], plain);
    step(
        &mut e,
        env(1, 2, 1, append(lid(0, 0), vec![ent(1, 1), ent(1, 2)], 2)),
    );
    step(
        &mut e,
        env(1, 2, 1, on_stream(1, append(lid(1, 2), vec![], 2))),
    );
    // An old duplicate, below the commit index: answered with less.
    step(&mut e, env(1, 2, 1, append(lid(0, 0), vec![ent(1, 1)], 0)));
    let answers: Vec<_> = messages(&e.take_actions())
        .into_iter()
        .map(|m| m.msg)
        .collect();
    assert_eq!(
        answers,
        vec![success(2), on_stream(1, success(2)), success(1),]
    );
}

/// A commit index that moved alone is not written (it would cost a flush
/// for nothing): it is staged with the next write.
#[test]
fn commit_index_alone_is_not_written_but_rides_with_the_next_write() {
    let mut e = engine(2, &[1, 2, 3], stored(&[1, 1], 1, None, 0));
    step(&mut e, env(1, 2, 1, heartbeat(2)));
    let actions = e.take_actions();
    assert!(!actions.iter().any(Action::is_persist), "{actions:?}");
    assert_eq!(e.commit_index(), LogIndex(2));

    step(&mut e, env(1, 2, 1, append(lid(1, 2), vec![ent(1, 3)], 2)));
    assert_eq!(
        e.take_actions(),
        vec![
            Action::AppendLog(vec![ent(1, 3)]),
            send_after_persist(2, 1, 1, success(3)),
            save(1, None, 2),
        ]
    );
}

/// `has_actions` tells whether a drain would return anything, including
/// appends a proposal made due.
#[test]
fn has_actions_reports_what_a_drain_would_return() {
    let mut e = engine(1, &[1, 2, 3], plain);
    elect(&mut e);
    commit_all(&mut e);
    assert!(!e.has_actions());
    assert_eq!(e.take_actions(), vec![]);
    e.propose(Bytes::from_static(b"x")).unwrap();
    assert!(e.has_actions());
    assert!(!e.take_actions().is_empty());
    assert!(!e.has_actions());
    e.tick(e.now() + 1);
    assert_eq!(e.has_actions(), !e.take_actions().is_empty());
}
