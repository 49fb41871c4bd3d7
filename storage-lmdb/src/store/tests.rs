//! Tests that damage the stored data through the store's own environment
//! (no second environment, so no `unsafe`): records in the wrong place,
//! missing records, a newer format version.

use std::path::Path;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use heed::types::Bytes as RawBytes;
use raft_api::{Entry, GroupId, Hlc, LogId, LogIndex, LogStore, Payload, StorageError, Term};

use super::LmdbLogStore;
use crate::codec;
use crate::options::LmdbOptions;

const G: GroupId = GroupId(3);

fn now<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the LMDB flush completes when first polled"),
    }
}

fn entry(index: u64) -> Entry {
    Entry {
        id: LogId::new(Term(1), LogIndex(index)),
        timestamp: Hlc::default(),
        payload: Payload::Command(Bytes::from(format!("command {index}"))),
    }
}

/// A store whose every flush is a checkpoint, so that what a flush writes
/// is in LMDB, where these tests damage it.
fn open(dir: &Path) -> Result<LmdbLogStore, StorageError> {
    LmdbLogStore::open(dir, options())
}

fn options() -> LmdbOptions {
    LmdbOptions {
        checkpoint_bytes: 0,
        ..LmdbOptions::new(5)
    }
}

/// A store in `dir` with entries 1..=5 of group `G`, flushed.
fn populated(dir: &Path) -> LmdbLogStore {
    let mut store = open(dir).unwrap();
    store
        .append(G, &(1..=5).map(entry).collect::<Vec<_>>())
        .unwrap();
    now(store.flush()).unwrap();
    store
}

/// Runs `damage` in a write transaction of the store's environment, then
/// closes the store.
fn damage(store: LmdbLogStore, damage: impl FnOnce(&LmdbLogStore, &mut heed::RwTxn<'_>)) {
    let mut txn = store.env.write_txn().unwrap();
    damage(&store, &mut txn);
    txn.commit().unwrap();
}

fn corrupt_detail(result: Result<impl std::fmt::Debug, StorageError>) -> String {
    match result {
        Err(StorageError::Corrupt { path, detail }) => {
            assert!(path.ends_with("data.mdb"), "{path:?}");
            detail
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// Replaces the format record with `record(the current one)`.
fn rewrite_format(dir: &Path, record: impl FnOnce(Vec<u8>) -> Vec<u8>) {
    let store = open(dir).unwrap();
    damage(store, |store, txn| {
        let meta = store
            .env
            .open_database::<RawBytes, RawBytes>(txn, Some("meta"))
            .unwrap()
            .unwrap();
        let current = meta.get(txn, codec::FORMAT_KEY).unwrap().unwrap().to_vec();
        meta.put(txn, codec::FORMAT_KEY, &record(current)).unwrap();
    });
}

#[test]
fn a_newer_format_version_is_incompatible_not_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    // Version 2 -> 3 (big-endian, after the checksum and the magic),
    // sealed again as a newer version would write it.
    rewrite_format(dir.path(), |record| {
        let mut body = record[4..].to_vec();
        body[11] = 3;
        codec::seal(codec::FORMAT_KEY, &body)
    });
    match open(dir.path()) {
        Err(err @ StorageError::Incompatible { .. }) => {
            let message = err.to_string();
            let StorageError::Incompatible { path, reason, fix } = err else {
                unreachable!()
            };
            assert_eq!(path, dir.path());
            assert!(reason.contains("format version 3"), "{reason}");
            assert!(reason.contains("newer"), "{reason}");
            assert!(fix.contains("reads format version 3"), "{fix}");
            assert!(fix.contains("wiping the directory"), "{fix}");
            assert!(
                message.contains(&dir.path().display().to_string()),
                "{message}"
            );
            assert!(message.contains("cannot be used by this node"), "{message}");
        }
        other => panic!("expected Incompatible, got {other:?}"),
    }
    // Refused again, and the directory is unlocked after each refusal.
    assert!(matches!(
        open(dir.path()),
        Err(StorageError::Incompatible { .. })
    ));
}

#[test]
fn case_29_a_bit_flip_that_makes_the_format_version_look_newer_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    rewrite_format(dir.path(), |mut record| {
        record[15] ^= 0x04;
        record
    });
    let detail = corrupt_detail(open(dir.path()));
    assert!(detail.contains("fails its checksum"), "{detail}");
    assert!(detail.contains("format version 6"), "{detail}");
}

#[test]
fn a_version_1_directory_is_read_and_marked_version_2() {
    let dir = tempfile::tempdir().unwrap();
    drop(populated(dir.path()));
    rewrite_format(dir.path(), |record| {
        let mut body = record[4..].to_vec();
        body[11] = 1;
        codec::seal(codec::FORMAT_KEY, &body)
    });
    let store = open(dir.path()).unwrap();
    assert_eq!(store.log_state(G).unwrap().last.index, LogIndex(5));
    let txn = store.read_txn().unwrap();
    let record = store
        .dbs
        .meta
        .get(&txn, codec::FORMAT_KEY)
        .unwrap()
        .unwrap();
    assert_eq!(
        codec::decode_format(record),
        Ok(codec::Format::Current {
            cluster_id: 5,
            version: codec::FORMAT_VERSION
        })
    );
}

#[test]
fn case_29_a_bit_flip_in_the_cluster_id_is_corrupt_not_another_cluster() {
    let dir = tempfile::tempdir().unwrap();
    rewrite_format(dir.path(), |mut record| {
        let last = record.len() - 1;
        record[last] ^= 0x01;
        record
    });
    let detail = corrupt_detail(open(dir.path()));
    assert!(
        detail.contains("format record: checksum mismatch"),
        "{detail}"
    );
}

#[test]
fn a_missing_format_record_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    damage(store, |store, txn| {
        let meta = store
            .env
            .open_database::<RawBytes, RawBytes>(txn, Some("meta"))
            .unwrap()
            .unwrap();
        meta.delete(txn, codec::FORMAT_KEY).unwrap();
    });
    let detail = corrupt_detail(open(dir.path()));
    assert!(detail.contains("format record is missing"), "{detail}");
}

#[test]
fn a_value_under_the_wrong_key_fails_its_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated(dir.path());
    damage(store, |store, txn| {
        let two = codec::entry_key(G, LogIndex(2));
        let three = codec::entry_key(G, LogIndex(3));
        let value = store.dbs.entries.get(txn, &two).unwrap().unwrap().to_vec();
        store.dbs.entries.put(txn, &three, &value).unwrap();
    });
    let store = open(dir.path()).unwrap();
    let all = store.entries(G, LogIndex(1)..LogIndex(6), usize::MAX);
    let detail = corrupt_detail(all);
    assert!(detail.contains("g3/i3"), "{detail}");
    assert!(detail.contains("checksum"), "{detail}");
    // Entries before it are fine.
    assert_eq!(
        store
            .entries(G, LogIndex(1)..LogIndex(3), usize::MAX)
            .unwrap()
            .len(),
        2
    );
    assert!(matches!(store.verify(), Err(StorageError::Corrupt { .. })));
}

#[test]
fn a_missing_entry_inside_the_log_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated(dir.path());
    damage(store, |store, txn| {
        let key = codec::entry_key(G, LogIndex(3));
        assert!(store.dbs.entries.delete(txn, &key).unwrap());
    });
    // Open checks only the ends of each log; reads and verify see the hole.
    let mut store = open(dir.path()).unwrap();
    let detail = corrupt_detail(store.entries(G, LogIndex(2)..LogIndex(5), usize::MAX));
    assert!(detail.contains("g3/i3: missing"), "{detail}");
    let detail = corrupt_detail(store.verify());
    assert!(detail.contains("g3/i3: missing"), "{detail}");
    // Truncating right after the hole needs the entry before it: an error,
    // and nothing is staged.
    assert!(store.truncate(G, LogIndex(4)).is_err());
    assert!(!store.has_unflushed());
    drop(store);
    let verified = LmdbLogStore::open(
        dir.path(),
        LmdbOptions {
            verify_on_open: true,
            ..options()
        },
    );
    assert!(corrupt_detail(verified).contains("missing"));
}

#[test]
fn a_log_shorter_than_its_bounds_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated(dir.path());
    damage(store, |store, txn| {
        let key = codec::entry_key(G, LogIndex(5));
        assert!(store.dbs.entries.delete(txn, &key).unwrap());
    });
    let detail = corrupt_detail(open(dir.path()));
    assert!(detail.contains("last entry of group g3"), "{detail}");
}

#[test]
fn entries_below_the_compaction_point_are_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = populated(dir.path());
    store.compact(G, LogId::new(Term(1), LogIndex(2))).unwrap();
    now(store.flush()).unwrap();
    damage(store, |store, txn| {
        let key = codec::entry_key(G, LogIndex(2));
        let value = codec::encode(&key, &entry(2)).unwrap();
        store.dbs.entries.put(txn, &key, &value).unwrap();
    });
    let detail = corrupt_detail(open(dir.path()));
    assert!(detail.contains("first entry of group g3"), "{detail}");
}

#[test]
fn entries_of_an_unknown_group_are_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated(dir.path());
    damage(store, |store, txn| {
        let key = codec::entry_key(GroupId(9), LogIndex(1));
        let value = codec::encode(&key, &entry(1)).unwrap();
        store.dbs.entries.put(txn, &key, &value).unwrap();
    });
    let detail = corrupt_detail(open(dir.path()));
    assert!(detail.contains("group g9, which has no bounds"), "{detail}");
}

#[test]
fn records_must_come_in_pairs_and_pass_their_checksums() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated(dir.path());
    damage(store, |store, txn| {
        store
            .dbs
            .hard_states
            .delete(txn, &codec::group_key(G))
            .unwrap();
    });
    let detail = corrupt_detail(open(dir.path()));
    assert!(
        detail.contains("database `bounds` has group g3"),
        "{detail}"
    );

    let dir = tempfile::tempdir().unwrap();
    let store = populated(dir.path());
    damage(store, |store, txn| {
        let key = codec::group_key(G);
        let mut value = store.dbs.bounds.get(txn, &key).unwrap().unwrap().to_vec();
        let last = value.len() - 1;
        value[last] ^= 0x40;
        store.dbs.bounds.put(txn, &key, &value).unwrap();
    });
    let detail = corrupt_detail(open(dir.path()));
    assert!(
        detail.contains("database `bounds`, key g3: checksum"),
        "{detail}"
    );
}

#[test]
fn case_29_a_bit_flip_in_any_group_record_is_refused_at_open() {
    for name in ["hard_states", "bounds", "snapshots"] {
        let dir = tempfile::tempdir().unwrap();
        let mut store = populated(dir.path());
        let snapshot = raft_api::Snapshot {
            meta: raft_api::SnapshotMeta::default(),
            data: Bytes::from_static(b"image"),
        };
        store.save_snapshot(G, &snapshot).unwrap();
        now(store.flush()).unwrap();
        damage(store, |store, txn| {
            let db = match name {
                "hard_states" => store.dbs.hard_states,
                "bounds" => store.dbs.bounds,
                _ => store.dbs.snapshots,
            };
            let key = codec::group_key(G);
            let mut value = db.get(txn, &key).unwrap().unwrap().to_vec();
            let middle = value.len() / 2;
            value[middle] ^= 0x08;
            db.put(txn, &key, &value).unwrap();
        });
        let detail = corrupt_detail(open(dir.path()));
        assert!(
            detail.contains(&format!("database `{name}`, key g3: checksum mismatch")),
            "{name}: {detail}"
        );
    }
}

#[test]
fn the_same_directory_cannot_be_opened_twice_in_a_process() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = populated(dir.path());
    store.append(G, &[entry(6)]).unwrap();
    match open(dir.path()) {
        Err(err @ StorageError::Locked { .. }) => {
            let message = err.to_string();
            let StorageError::Locked { path, holder } = err else {
                unreachable!()
            };
            assert_eq!(path, dir.path().join("store.lock"));
            assert_eq!(holder, "another store in this process");
            assert!(message.contains("store.lock"), "{message}");
            assert!(message.contains("another node is using"), "{message}");
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    // The refused open changed nothing: the first store goes on.
    now(store.flush()).unwrap();
    assert_eq!(store.log_state(G).unwrap().last.index, LogIndex(6));
    // Dropping the store releases the directory.
    drop(store);
    let store = open(dir.path()).unwrap();
    assert_eq!(store.log_state(G).unwrap().last.index, LogIndex(6));
}

#[test]
fn the_lock_is_taken_through_another_spelling_of_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let _store = open(dir.path()).unwrap();
    let other = dir.path().join("snapshots").join("..");
    assert!(matches!(open(&other), Err(StorageError::Locked { .. })));
}

#[test]
fn a_failed_flush_keeps_the_writes_staged() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = populated(dir.path());
    store.append(G, &[entry(6)]).unwrap();
    let snapshot = raft_api::Snapshot {
        meta: raft_api::SnapshotMeta::default(),
        data: Bytes::from_static(b"image"),
    };
    store.save_snapshot(G, &snapshot).unwrap();
    // Make the snapshot directory unusable: the flush fails before its
    // transaction.
    let snapshots = dir.path().join("snapshots");
    std::fs::remove_dir(&snapshots).unwrap();
    std::fs::write(&snapshots, b"not a directory").unwrap();
    assert!(matches!(now(store.flush()), Err(StorageError::Io { .. })));
    assert!(store.has_unflushed());
    assert_eq!(store.log_state(G).unwrap().last.index, LogIndex(6));
    std::fs::remove_file(&snapshots).unwrap();
    std::fs::create_dir(&snapshots).unwrap();
    now(store.flush()).unwrap();
    assert!(!store.has_unflushed());
    drop(store);
    let store = open(dir.path()).unwrap();
    assert_eq!(store.log_state(G).unwrap().last.index, LogIndex(6));
    assert_eq!(store.snapshot(G).unwrap(), Some(snapshot));
}

/// A new store records a random journal generation at once; one that
/// recorded none but holds a journal of generation 0 (written before
/// generations were random) keeps 0 and replays that journal.
#[test]
fn the_first_journal_generation_is_random_unless_generation_0_is_there() {
    let journaled = |dir: &Path| LmdbLogStore::open(dir, LmdbOptions::new(5)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut store = journaled(dir.path());
    let first = store.journal.generation;
    assert_ne!(first, 0);
    assert_eq!(store.journal_generation().unwrap(), first);
    // As an older build left it: no generation recorded, and a journal of
    // generation 0.
    store.journal.generation = 0;
    store.append(G, &[entry(1), entry(2)]).unwrap();
    now(store.flush()).unwrap();
    damage(store, |store, txn| {
        store.dbs.meta.delete(txn, codec::JOURNAL_KEY).unwrap();
    });
    let store = journaled(dir.path());
    assert_eq!(store.journal.generation, 0);
    assert_eq!(store.log_state(G).unwrap().last, entry(2).id);
    // Every store gets a different one.
    let other = tempfile::tempdir().unwrap();
    assert_ne!(journaled(other.path()).journal.generation, first);
}
