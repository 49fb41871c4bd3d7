//! The memory map grows on demand up to its maximum; past it a flush fails
//! with a "storage full" I/O error (SCENARIOS.md case 23) that changes
//! nothing, and the store keeps working.

use std::io::ErrorKind;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use raft_api::{Entry, GroupId, Hlc, LogId, LogIndex, LogStore, Payload, StorageError, Term};
use storage_lmdb::{LmdbLogStore, LmdbOptions};

const G: GroupId = GroupId(1);

fn now<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the LMDB flush completes when first polled"),
    }
}

/// Entries `from..=to`, 16 KiB each.
fn batch(from: u64, to: u64) -> Vec<Entry> {
    (from..=to)
        .map(|i| Entry {
            id: LogId::new(Term(1), LogIndex(i)),
            timestamp: Hlc::default(),
            payload: Payload::Command(Bytes::from(vec![i as u8; 16 * 1024])),
        })
        .collect()
}

fn options(max_map_size: usize) -> LmdbOptions {
    LmdbOptions {
        initial_map_size: 1 << 20,
        max_map_size,
        // Every flush commits into LMDB, so every flush may grow the map.
        checkpoint_bytes: 0,
        ..LmdbOptions::new(1)
    }
}

#[test]
fn the_map_grows_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LmdbLogStore::open(dir.path(), options(256 << 20)).unwrap();
    assert_eq!(store.map_size(), 1 << 20);
    // 8 MiB in one flush, then 8 MiB more in small flushes.
    store.append(G, &batch(1, 512)).unwrap();
    now(store.flush()).unwrap();
    for from in (513..=1024).step_by(64) {
        store.append(G, &batch(from, from + 63)).unwrap();
        now(store.flush()).unwrap();
    }
    assert!(store.map_size() >= 16 << 20, "{}", store.map_size());
    assert!(store.map_size() <= 256 << 20);
    drop(store);
    let store = LmdbLogStore::open(dir.path(), options(256 << 20)).unwrap();
    assert_eq!(store.log_state(G).unwrap().last.index, LogIndex(1024));
    store.verify().unwrap();
}

#[test]
fn a_full_map_fails_the_flush_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LmdbLogStore::open(dir.path(), options(4 << 20)).unwrap();
    store.append(G, &batch(1, 16)).unwrap();
    now(store.flush()).unwrap();

    // About 8 MiB does not fit in 4 MiB.
    store.append(G, &batch(17, 528)).unwrap();
    match now(store.flush()) {
        Err(StorageError::Io { path, source }) => {
            assert_eq!(source.kind(), ErrorKind::StorageFull);
            assert!(path.ends_with("data.mdb"), "{path:?}");
            assert!(source.to_string().contains("max_map_size"), "{source}");
        }
        other => panic!("expected a storage-full error, got {other:?}"),
    }
    assert_eq!(store.map_size(), 4 << 20);
    // Still staged and readable; the flushed part is intact.
    assert!(store.has_unflushed());
    assert_eq!(store.log_state(G).unwrap().last.index, LogIndex(528));
    assert_eq!(
        store
            .entries(G, LogIndex(1)..LogIndex(3), usize::MAX)
            .unwrap(),
        batch(1, 2)
    );
    drop(store);

    // After a restart only the flushed entries are there, and with a larger
    // maximum the same writes fit.
    let mut store = LmdbLogStore::open(dir.path(), options(64 << 20)).unwrap();
    assert_eq!(store.log_state(G).unwrap().last.index, LogIndex(16));
    store.append(G, &batch(17, 528)).unwrap();
    now(store.flush()).unwrap();
    store.verify().unwrap();
}
