//! Snapshots and log compaction (§7, figure 13): building and saving a
//! snapshot, compacting behind it, sending it in chunks to a follower whose
//! next entry was compacted, installing it, and restoring it on restart.

use super::*;
use crate::engine::ReplicationState;
use crate::error::StepError;

/// A follower of `[1, 2, 3]` holding six entries of term 1, five of them
/// committed and handed out for application (drained).
fn follower_applied_to_5() -> Engine {
    let mut e = engine(2, &[1, 2, 3], stored(&[1, 1, 1, 1, 1, 1], 1, None, 5));
    assert_eq!(applied(&e.take_actions()), log_of(&[1, 1, 1, 1, 1]));
    e
}

/// §7: a snapshot the state machine built up to an applied entry is saved
/// with the membership in effect there, and the log is compacted up to
/// `snapshot_trailing` (2) entries before the snapshot's last one.
#[test]
fn s7_built_snapshot_is_saved_and_log_compacted_keeping_trailing_entries() {
    let mut e = follower_applied_to_5();
    assert!(e.on_snapshot_built(lid(1, 5), Bytes::from_static(b"image")));
    let s = snap(lid(1, 5), &[1, 2, 3], b"image");
    assert_eq!(
        e.take_actions(),
        vec![
            Action::SaveSnapshot(s.clone()),
            Action::CompactLog { upto: lid(1, 3) },
        ]
    );
    assert_eq!(e.snapshot_meta(), Some(&s.meta));
    assert_eq!(e.compacted(), lid(1, 3));
    assert_eq!(e.entry(LogIndex(3)), None);
    assert_eq!(e.entry(LogIndex(4)), Some(&ent(1, 4)));
    assert_eq!(e.last_log_id(), lid(1, 6));
}

/// §7: a snapshot whose trailing entries reach back to the start of the
/// log is saved, but nothing is compacted.
#[test]
fn s7_snapshot_within_trailing_entries_compacts_nothing() {
    let mut e = follower_applied_to_5();
    assert!(e.on_snapshot_built(lid(1, 2), Bytes::from_static(b"s")));
    assert_eq!(
        e.take_actions(),
        vec![Action::SaveSnapshot(snap(lid(1, 2), &[1, 2, 3], b"s"))]
    );
    assert_eq!(e.compacted(), lid(0, 0));
    assert_eq!(e.entry(LogIndex(1)), Some(&ent(1, 1)));
}

/// §7: a snapshot report the engine cannot use is ignored (returns false,
/// emits nothing): one covering entries not yet handed out, one whose last
/// entry is not in the log (unknown term), and one not newer than the
/// current snapshot.
#[test]
fn s7_stale_or_unknown_snapshot_reports_are_ignored() {
    let mut e = follower_applied_to_5();
    let data = Bytes::from_static(b"x");
    assert!(!e.on_snapshot_built(lid(1, 6), data.clone()), "not applied");
    assert!(
        !e.on_snapshot_built(lid(2, 5), data.clone()),
        "unknown term"
    );
    assert_eq!(e.take_actions(), vec![]);
    assert_eq!(e.snapshot_meta(), None);

    assert!(e.on_snapshot_built(lid(1, 4), data.clone()));
    e.take_actions();
    assert!(!e.on_snapshot_built(lid(1, 4), data.clone()), "same");
    assert!(!e.on_snapshot_built(lid(1, 3), data), "older");
    assert_eq!(e.take_actions(), vec![]);
    assert_eq!(e.snapshot_meta().map(|m| m.last), Some(lid(1, 4)));
    assert_eq!(e.compacted(), lid(1, 2));
}

/// The spacing of automatic snapshots is the threshold less up to a
/// quarter of it, drawn for each snapshot and differently on each replica
/// (so replicas do not all write a snapshot at once); a threshold under 4
/// stays exact.
#[test]
fn snapshot_spacing_is_the_threshold_less_a_random_quarter() {
    let draws = |id: u64, threshold: u64| {
        let mut e = engine(id, &[1, 2, 3], |i| i.config.snapshot_threshold = threshold);
        (0..200)
            .map(|_| {
                e.draw_snapshot_after();
                e.snapshot_after
            })
            .collect::<Vec<u64>>()
    };
    let (a, b) = (draws(1, 1000), draws(2, 1000));
    assert!(
        a.iter().chain(&b).all(|n| (750..=1000).contains(n)),
        "{a:?}"
    );
    assert_ne!(a, b, "replicas draw apart");
    let spread = a.iter().max().unwrap() - a.iter().min().unwrap();
    assert!(spread > 150, "the draws cover the range: {spread}");
    assert_eq!(draws(1, 1000), a, "deterministic from the seed");
    assert!(draws(3, 3).iter().all(|&n| n == 3));
    assert!(draws(3, 0).iter().all(|&n| n == 0));
}

/// §7: with `snapshot_threshold` 3, the engine asks for a snapshot
/// (`BuildSnapshot`, after the `Apply`) once 3 entries were applied since
/// the last one, asks only once while the build is under way, and counts
/// again from the new snapshot.
#[test]
fn s7_threshold_asks_for_a_snapshot_once_applied_passes_it() {
    let mut e = engine(2, &[1, 2, 3], |i| {
        stored(&[1, 1, 1, 1, 1, 1], 1, None, 0)(i);
        i.config.snapshot_threshold = 3;
    });
    step(&mut e, env(1, 2, 1, heartbeat(2)));
    assert_eq!(
        e.take_actions(),
        vec![
            send(2, 1, 1, heartbeat_resp()),
            Action::Apply(log_of(&[1, 1])),
        ]
    );
    step(&mut e, env(1, 2, 1, heartbeat(3)));
    assert_eq!(
        e.take_actions(),
        vec![
            send(2, 1, 1, heartbeat_resp()),
            Action::Apply(vec![ent(1, 3)]),
            Action::BuildSnapshot,
        ]
    );
    step(&mut e, env(1, 2, 1, heartbeat(5)));
    assert_eq!(
        e.take_actions(),
        vec![
            send(2, 1, 1, heartbeat_resp()),
            Action::Apply(vec![ent(1, 4), ent(1, 5)]),
        ],
        "one build at a time"
    );
    assert!(e.on_snapshot_built(lid(1, 3), Bytes::from_static(b"s")));
    assert_eq!(
        e.take_actions(),
        vec![
            Action::SaveSnapshot(snap(lid(1, 3), &[1, 2, 3], b"s")),
            Action::CompactLog { upto: lid(1, 1) },
            // The commit index rides along with these writes.
            save(1, None, 5),
        ]
    );
    step(&mut e, env(1, 2, 1, heartbeat(6)));
    assert_eq!(
        e.take_actions(),
        vec![
            send(2, 1, 1, heartbeat_resp()),
            Action::Apply(vec![ent(1, 6)]),
            Action::BuildSnapshot,
        ]
    );
}

/// §7: `trigger_snapshot` asks for a snapshot only when entries were
/// applied since the last one and no build is under way; a failed build
/// may be asked for again.
#[test]
fn s7_trigger_snapshot_asks_only_when_useful() {
    let mut e = engine(2, &[1, 2, 3], stored(&[1, 1, 1], 1, None, 0));
    assert!(!e.trigger_snapshot(), "nothing applied");
    assert_eq!(e.take_actions(), vec![]);

    step(&mut e, env(1, 2, 1, heartbeat(2)));
    e.take_actions();
    assert!(e.trigger_snapshot());
    assert_eq!(e.take_actions(), vec![Action::BuildSnapshot]);
    assert!(!e.trigger_snapshot(), "a build is under way");
    assert_eq!(e.take_actions(), vec![]);

    e.on_snapshot_failed();
    assert!(e.trigger_snapshot());
    assert_eq!(e.take_actions(), vec![Action::BuildSnapshot]);
    assert!(e.on_snapshot_built(lid(1, 2), Bytes::from_static(b"s")));
    e.take_actions();
    assert!(!e.trigger_snapshot(), "nothing applied since the snapshot");
    assert_eq!(e.take_actions(), vec![]);
}

/// Case 8 (§7): an append whose previous entry lies below the follower's
/// compaction point is answered with its match index and truncates
/// nothing: neither the compacted prefix nor the (longer) log after it.
#[test]
fn case_8_append_below_compaction_point_never_truncates() {
    let mut e = follower_applied_to_5();
    assert!(e.on_snapshot_built(lid(1, 5), Bytes::from_static(b"s")));
    e.take_actions();
    assert_eq!(e.compacted(), lid(1, 3));

    step(
        &mut e,
        env(1, 2, 1, append(lid(1, 1), vec![ent(1, 2), ent(1, 3)], 5)),
    );
    assert_eq!(
        e.take_actions(),
        vec![send_after_persist(2, 1, 1, success(3))]
    );
    step(&mut e, env(1, 2, 1, append(lid(1, 2), vec![], 5)));
    assert_eq!(
        e.take_actions(),
        vec![send_after_persist(2, 1, 1, success(2))]
    );
    assert_eq!(e.compacted(), lid(1, 3));
    assert_eq!(e.last_log_id(), lid(1, 6));
    assert_eq!(e.entry(LogIndex(6)), Some(&ent(1, 6)));
    assert_eq!(e.commit_index(), LogIndex(5));
}

/// Case 14 (§7): a follower cut off while the leader compacted its log
/// gets, once it answers again, the snapshot in chunks of at most
/// `snapshot_chunk_bytes` (4) bytes, restores it, and then receives the
/// entries after it as log entries, which it applies.
#[test]
fn case_14_far_behind_follower_catches_up_by_chunked_snapshot_then_log() {
    let mut c = Cluster::new(vec![
        engine(1, &[1, 2, 3], plain),
        engine(2, &[1, 2, 3], plain),
        engine(3, &[1, 2, 3], plain),
    ]);
    c.cut = vec![(1, 3), (3, 1)];
    c.node_mut(1).campaign();
    c.run();
    assert_eq!(c.node(1).role(), Role::Leader);
    for cmd in ["a", "b", "c", "d"] {
        c.node_mut(1).propose(Bytes::from(cmd)).unwrap();
    }
    c.run();
    assert_eq!(c.node(1).commit_index(), LogIndex(5));
    let image = Bytes::from_static(b"0123456789");
    assert!(c.node_mut(1).on_snapshot_built(lid(1, 5), image));
    for cmd in ["e", "f"] {
        c.node_mut(1).propose(Bytes::from(cmd)).unwrap();
    }
    c.run();
    assert_eq!(c.node(1).compacted(), lid(1, 3));
    assert_eq!(c.node(1).commit_index(), LogIndex(7));
    assert_eq!(c.node(3).last_log_id(), lid(0, 0));

    c.cut.clear();
    let from = c.sent.len();
    c.tick(20);

    let s = snap(lid(1, 5), &[1, 2, 3], b"0123456789");
    let to_3: Vec<Message> = c.sent[from..]
        .iter()
        .filter(|m| m.from == NodeId(1) && m.to == NodeId(3))
        .map(|m| m.msg.clone())
        .filter(|m| matches!(m, Message::Snapshot(_) | Message::Append(_)))
        .collect();
    let tail = vec![entry_at(c.node(1), 6), entry_at(c.node(1), 7)];
    assert_eq!(
        to_3,
        vec![
            chunk(&s, 0, 4),
            chunk(&s, 4, 4),
            chunk(&s, 8, 2),
            append(lid(1, 5), tail.clone(), 7),
        ]
    );
    assert_eq!(c.restored[&NodeId(3)], vec![s.clone()]);
    assert_eq!(c.applied_by(3), tail);
    let f = c.node(3);
    assert_eq!(f.snapshot_meta(), Some(&s.meta));
    assert_eq!(f.compacted(), lid(1, 5));
    assert_eq!(f.last_log_id(), lid(1, 7));
    assert_eq!(f.commit_index(), LogIndex(7));
    assert_eq!(
        c.node(1).progress(NodeId(3)).map(|p| (p.matched, p.state)),
        Some((LogIndex(7), ReplicationState::Replicate))
    );
}

/// Node 1, restarted with a snapshot of `[1, 2, 3]` up to 1-5 holding
/// `image` and nothing else, elected for term 2 (blank entry 2-6).
fn leader_from_snapshot(image: &'static [u8]) -> Engine {
    let s = snap(lid(1, 5), &[1, 2, 3], image);
    let mut e = restarted(engine(1, &[1, 2, 3], |i| {
        i.snapshot = Some(s);
        i.compacted = lid(1, 5);
        i.hard_state = hs(1, None, 5);
        i.applied = LogIndex(5);
    }));
    elect(&mut e);
    assert_eq!(e.last_log_id(), lid(2, 6));
    // The snapshot records the membership: the term starts with a blank.
    assert_eq!(entry_at(&e, 6).payload, Payload::Blank);
    e
}

/// Case 15 (§7): when a chunk is lost, the leader resends it from where the
/// follower stands once a heartbeat answer arrives more than two heartbeat
/// intervals after it left (not before); the transfer then completes and
/// replication continues with log entries.
#[test]
fn case_15_lost_chunk_is_resent_after_heartbeat_answers() {
    let s = snap(lid(1, 5), &[1, 2, 3], b"0123456789");
    let mut l = leader_from_snapshot(b"0123456789");
    let mut f = engine(3, &[1, 2, 3], plain);
    let blank = entry_at(&l, 6);

    // The follower's empty log rejects the probe; entry 1 is compacted, so
    // the snapshot starts (at time 100).
    step(&mut l, env(3, 1, 2, conflict(5, 1, None)));
    let first = l.take_actions();
    assert_eq!(first, vec![send(1, 3, 2, chunk(&s, 0, 4))]);
    deliver(&first, &mut f);
    let answer = f.take_actions();
    assert_eq!(
        answer,
        vec![
            send(3, 1, 2, snapshot_resp(lid(1, 5), 4, false)),
            save(2, None, 0),
        ]
    );
    deliver(&answer, &mut l);
    // The second chunk is lost.
    assert_eq!(l.take_actions(), vec![send(1, 3, 2, chunk(&s, 4, 4))]);

    // A heartbeat answer 20 ms later: the chunk is not yet overdue.
    l.tick(120);
    let hb = l.take_actions();
    deliver(&hb, &mut f);
    deliver(&f.take_actions(), &mut l);
    assert_eq!(l.take_actions(), vec![]);
    // 40 ms later it is: resent from the follower's 4 bytes.
    l.tick(140);
    let hb = l.take_actions();
    deliver(&hb, &mut f);
    deliver(&f.take_actions(), &mut l);
    let resent = l.take_actions();
    assert_eq!(resent, vec![send(1, 3, 2, chunk(&s, 4, 4))]);

    deliver(&resent, &mut f);
    let answer = f.take_actions();
    assert_eq!(
        answer,
        vec![send(3, 1, 2, snapshot_resp(lid(1, 5), 8, false))]
    );
    deliver(&answer, &mut l);
    let last = l.take_actions();
    assert_eq!(last, vec![send(1, 3, 2, chunk(&s, 8, 2))]);
    deliver(&last, &mut f);
    let installed = f.take_actions();
    assert_eq!(
        installed,
        vec![
            Action::SaveSnapshot(s.clone()),
            Action::CompactLog { upto: lid(1, 5) },
            Action::RestoreSnapshot(s.clone()),
            send_after_persist(3, 1, 2, snapshot_resp(lid(1, 5), 10, true)),
            save(2, None, 5),
        ]
    );
    deliver(&installed, &mut l);
    assert_eq!(
        l.take_actions(),
        vec![send(1, 3, 2, append(lid(1, 5), vec![blank], 5))]
    );
    assert_eq!(
        l.progress(NodeId(3)).map(|p| (p.matched, p.state)),
        Some((LogIndex(5), ReplicationState::Replicate))
    );
}

/// Case 15 (§7, figure 13): a follower whose entry at the snapshot's
/// index has another term discards its whole log: `TruncateLog` of the
/// entries after the snapshot's index, then `SaveSnapshot`, `CompactLog`
/// (which drops the entries up to it) and `RestoreSnapshot`; it takes the
/// snapshot's membership and acknowledges after the flush.
#[test]
fn case_15_follower_with_conflicting_entry_at_snapshot_index_discards_its_log() {
    let mut f = engine(3, &[1, 2, 3], stored(&[1, 1, 1, 1, 1, 1], 1, None, 2));
    f.take_actions();
    let mut s = snap(lid(2, 5), &[1, 2, 3], b"abcd");
    s.meta.membership.learners.insert(NodeId(4));
    step(&mut f, env(1, 3, 2, chunk(&s, 0, 4)));
    assert_eq!(
        f.take_actions(),
        vec![
            Action::TruncateLog { from: LogIndex(6) },
            Action::SaveSnapshot(s.clone()),
            Action::CompactLog { upto: lid(2, 5) },
            Action::RestoreSnapshot(s.clone()),
            save(2, None, 5),
            send_after_persist(3, 1, 2, snapshot_resp(lid(2, 5), 4, true)),
        ]
    );
    assert_eq!(f.last_log_id(), lid(2, 5));
    assert_eq!(f.compacted(), lid(2, 5));
    for i in 1..=6 {
        assert_eq!(f.entry(LogIndex(i)), None, "entry {i}");
    }
    assert_eq!(f.snapshot_meta(), Some(&s.meta));
    assert_eq!(f.membership(), &s.meta.membership);
    assert_eq!(
        (f.commit_index(), f.applied_index()),
        (LogIndex(5), LogIndex(5))
    );
}

/// §7, figure 13: a follower that holds the snapshot's last entry keeps
/// the entries after it; only the prefix is compacted.
#[test]
fn case_15_follower_holding_snapshot_last_entry_keeps_its_suffix() {
    let mut f = engine(3, &[1, 2, 3], stored(&[1, 1, 1, 1, 1, 1, 1], 1, None, 2));
    f.take_actions();
    let s = snap(lid(1, 5), &[1, 2, 3], b"abcd");
    step(&mut f, env(1, 3, 1, chunk(&s, 0, 4)));
    assert_eq!(
        f.take_actions(),
        vec![
            Action::SaveSnapshot(s.clone()),
            Action::CompactLog { upto: lid(1, 5) },
            Action::RestoreSnapshot(s.clone()),
            send_after_persist(3, 1, 1, snapshot_resp(lid(1, 5), 4, true)),
            save(1, None, 5),
        ]
    );
    assert_eq!(f.compacted(), lid(1, 5));
    assert_eq!(f.last_log_id(), lid(1, 7));
    assert_eq!(f.entry(LogIndex(6)), Some(&ent(1, 6)));
    assert_eq!(f.applied_index(), LogIndex(5));
    // The kept suffix is applied normally once committed.
    step(&mut f, env(1, 3, 1, heartbeat(7)));
    assert_eq!(applied(&f.take_actions()), vec![ent(1, 6), ent(1, 7)]);
}

/// §7: a snapshot the follower already covers by its commit index is
/// acknowledged as installed at once, without touching its log or state
/// machine.
#[test]
fn s7_snapshot_covered_by_commit_is_acknowledged_without_install() {
    let mut f = follower_applied_to_5();
    let s = snap(lid(1, 4), &[1, 2, 3], b"0123456789");
    step(&mut f, env(1, 2, 1, chunk(&s, 0, 4)));
    assert_eq!(
        f.take_actions(),
        vec![send_after_persist(
            2,
            1,
            1,
            snapshot_resp(lid(1, 4), 10, true)
        )]
    );
    assert_eq!(f.snapshot_meta(), None);
    assert_eq!(f.last_log_id(), lid(1, 6));
}

/// §7: a chunk past the start of a snapshot the follower holds nothing of
/// is answered with 0 bytes received, so the leader restarts from 0.
#[test]
fn s7_chunk_of_unknown_snapshot_is_answered_with_zero_received() {
    let mut f = engine(3, &[1, 2, 3], plain);
    let s = snap(lid(1, 5), &[1, 2, 3], b"0123456789");
    step(&mut f, env(1, 3, 1, chunk(&s, 4, 4)));
    assert_eq!(
        f.take_actions(),
        vec![
            send(3, 1, 1, snapshot_resp(lid(1, 5), 0, false)),
            save(1, None, 0),
        ]
    );
    assert_eq!(f.snapshot_meta(), None);
}

/// Case 11 (§7): an engine restarted with a snapshot its state machine has
/// not applied (applied 0) first restores the snapshot, then applies only
/// the committed entries after it.
#[test]
fn case_11_restart_restores_snapshot_then_applies_entries_after_it() {
    let s = snap(lid(1, 5), &[1, 2, 3], b"image");
    let mut e = engine(2, &[1, 2, 3], |i| {
        i.snapshot = Some(s.clone());
        i.compacted = lid(1, 3);
        i.entries = log_of(&[1, 1, 1, 1, 1, 1, 1])[3..].to_vec();
        i.hard_state = hs(1, None, 6);
        i.applied = LogIndex(0);
    });
    assert_eq!(
        e.take_actions(),
        vec![
            Action::RestoreSnapshot(s.clone()),
            Action::Apply(vec![ent(1, 6)])
        ]
    );
    assert_eq!(e.applied_index(), LogIndex(6));
    assert_eq!(e.snapshot_meta(), Some(&s.meta));
    step(&mut e, env(1, 2, 1, heartbeat(7)));
    assert_eq!(applied(&e.take_actions()), vec![ent(1, 7)]);
}

/// Case 11: an engine restarted with its state machine already past the
/// snapshot does not restore it and applies only after `applied`.
#[test]
fn case_11_restart_past_snapshot_does_not_restore() {
    let s = snap(lid(1, 5), &[1, 2, 3], b"image");
    let mut e = engine(2, &[1, 2, 3], |i| {
        i.snapshot = Some(s);
        i.compacted = lid(1, 3);
        i.entries = log_of(&[1, 1, 1, 1, 1, 1, 1])[3..].to_vec();
        i.hard_state = hs(1, None, 7);
        i.applied = LogIndex(6);
    });
    assert_eq!(e.take_actions(), vec![Action::Apply(vec![ent(1, 7)])]);
    assert_eq!(e.applied_index(), LogIndex(7));
}

/// A chunk whose data runs past the image size it announces cannot come
/// from a correct leader: `step` refuses it as `Malformed` and nothing
/// changes.
#[test]
fn s7_chunk_past_image_size_is_malformed() {
    let mut f = engine(3, &[1, 2, 3], stored(&[1], 1, None, 0));
    let s = snap(lid(1, 5), &[1, 2, 3], b"0123");
    let bad = Message::Snapshot(Box::new(SnapshotChunk {
        meta: s.meta.clone(),
        total: 4,
        offset: 2,
        data: Bytes::from_static(b"abc"),
        stream: 0,
    }));
    let err = f.step(env(1, 3, 2, bad)).unwrap_err();
    assert!(
        matches!(
            err,
            StepError::Malformed {
                from: NodeId(1),
                kind: "Snapshot",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(f.take_actions(), vec![]);
    assert_eq!(f.term(), Term(1));
    assert_eq!(f.snapshot_meta(), None);
}

/// §7: a follower only `snapshot_trailing` entries behind the leader's
/// snapshot catches up from the log: the leader kept those entries (and,
/// since node 3 streams from entry 2, it keeps entry 2 and 3 as well).
#[test]
fn s7_follower_within_trailing_entries_catches_up_from_log() {
    let mut l = engine(1, &[1, 2, 3], plain);
    elect(&mut l);
    commit_all(&mut l);
    for cmd in ["a", "b", "c", "d"] {
        l.propose(Bytes::from(cmd)).unwrap();
    }
    l.on_persisted(Some(lid(1, 5)));
    step(&mut l, env(2, 1, 1, success(5)));
    assert_eq!(l.commit_index(), LogIndex(5));
    assert!(l.on_snapshot_built(lid(1, 5), Bytes::from_static(b"s")));
    l.take_actions();
    assert_eq!(l.compacted(), lid(1, 1));

    // Node 3 holds 1..=3 and refuses the append after entry 4.
    step(&mut l, env(3, 1, 1, conflict(4, 4, None)));
    let tail = vec![entry_at(&l, 4), entry_at(&l, 5)];
    assert_eq!(
        l.take_actions(),
        vec![send(1, 3, 1, append(lid(1, 3), tail, 5))]
    );
}

/// §7: a leader keeps the entries its streaming followers still need: with
/// `snapshot_trailing` 2 it would compact up to 8 of 10, but follower 2
/// has only 7 and follower 3 only 4. Follower 3 is more than the slack (2)
/// behind the compaction point and does not hold it back past 6.
#[test]
fn s7_leader_compaction_spares_streaming_followers() {
    let mut e = engine(1, &[1, 2, 3], plain);
    elect(&mut e);
    for _ in 0..9 {
        e.propose(Bytes::from_static(b"x")).unwrap();
    }
    e.on_persisted(Some(lid(1, 10)));
    step(&mut e, env(2, 1, 1, success(7)));
    step(&mut e, env(3, 1, 1, success(4)));
    assert_eq!(e.commit_index(), LogIndex(7));
    e.take_actions();
    step(&mut e, env(2, 1, 1, success(10)));
    assert_eq!(e.commit_index(), LogIndex(10));
    e.take_actions();
    // Follower 2 is now up to date; follower 3 still streams from 5.
    assert!(e.on_snapshot_built(lid(1, 10), Bytes::from_static(b"s")));
    let actions = e.take_actions();
    assert!(
        actions.contains(&Action::CompactLog { upto: lid(1, 6) }),
        "{actions:?}"
    );
    assert_eq!(e.compacted(), lid(1, 6));
    assert_eq!(
        e.progress(NodeId(3)).map(|p| p.state),
        Some(ReplicationState::Replicate)
    );
}
