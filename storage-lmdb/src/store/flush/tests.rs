//! Where a flush commits (a blocking thread inside a Tokio runtime, the
//! polling thread elsewhere), and what a dropped or panicking flush leaves
//! behind.

use std::fs;
use std::future::Future;
use std::path::Path;
use std::pin::{Pin, pin};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread::{self, ThreadId};

use bytes::Bytes;
use raft_api::{
    Entry, GroupId, HardState, Hlc, LogId, LogIndex, LogStore, Payload, Snapshot, SnapshotMeta,
    StorageError, Term,
};
use tokio::runtime::{Builder, Runtime};

use crate::store::LmdbLogStore;
use crate::{LmdbOptions, snapshot_file};

const G: GroupId = GroupId(4);

fn entry(index: u64) -> Entry {
    Entry {
        id: LogId::new(Term(1), LogIndex(index)),
        timestamp: Hlc::default(),
        payload: Payload::Command(Bytes::from(format!("command {index}"))),
    }
}

fn entries(from: u64, to: u64) -> Vec<Entry> {
    (from..=to).map(entry).collect()
}

fn hard_state(term: u64) -> HardState {
    HardState {
        term: Term(term),
        ..HardState::default()
    }
}

fn snapshot(data: &'static [u8]) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta::default(),
        data: Bytes::from_static(data),
    }
}

/// A store whose every flush is a checkpoint (no journal): these tests are
/// about the LMDB commit (the journal's are in `store::tests`).
fn open(dir: &Path) -> LmdbLogStore {
    let options = LmdbOptions {
        checkpoint_bytes: 0,
        ..LmdbOptions::new(6)
    };
    LmdbLogStore::open(dir, options).unwrap()
}

fn current_thread() -> Runtime {
    Builder::new_current_thread().build().unwrap()
}

fn poll_once<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

/// Every entry of the group's log, staged or flushed.
fn read_all(store: &LmdbLogStore, group: GroupId) -> Vec<Entry> {
    let state = store.log_state(group).unwrap();
    store
        .entries(
            group,
            state.compacted.index.next()..state.last.index.next(),
            usize::MAX,
        )
        .unwrap()
}

/// The snapshot files in the store's directory.
fn snapshot_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Makes every commit of `store` record the thread it runs on.
fn record_threads(store: &mut LmdbLogStore) -> Arc<Mutex<Vec<ThreadId>>> {
    let threads = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&threads);
    store.commit_hook = Some(Arc::new(move || {
        recorded.lock().unwrap().push(thread::current().id());
    }));
    threads
}

/// Holds every commit of a store back until released: a commit says it
/// started, then waits for `release` to send or be dropped.
struct Gate {
    started: Receiver<()>,
    release: Sender<()>,
}

fn gate(store: &mut LmdbLogStore) -> Gate {
    let (started_tx, started) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let (started_tx, release_rx) = (Mutex::new(started_tx), Mutex::new(release_rx));
    store.commit_hook = Some(Arc::new(move || {
        let _ = started_tx.lock().unwrap().send(());
        let _ = release_rx.lock().unwrap().recv();
    }));
    Gate { started, release }
}

#[test]
fn inside_a_current_thread_runtime_the_commit_runs_on_another_thread() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let threads = record_threads(&mut store);
    let caller = current_thread().block_on(async {
        store.append(G, &entries(1, 3)).unwrap();
        store.save_hard_state(G, hard_state(2)).unwrap();
        store.flush().await.unwrap();
        // Reads after the flush come from the disk.
        assert_eq!(read_all(&store, G), entries(1, 3));
        thread::current().id()
    });
    let threads = threads.lock().unwrap().clone();
    assert_eq!(threads.len(), 1);
    assert_ne!(threads[0], caller);
    assert!(!store.has_unflushed());
    drop(store);
    let store = open(dir.path());
    assert_eq!(read_all(&store, G), entries(1, 3));
    assert_eq!(store.hard_state(G).unwrap(), hard_state(2));
}

#[test]
fn inside_a_multi_thread_runtime_the_commit_runs_off_the_polling_thread() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let threads = record_threads(&mut store);
    let runtime = Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let (store, polled_on) = runtime
        .block_on(runtime.spawn(async move {
            let mut polled_on = Vec::new();
            for index in 1..=5 {
                store.append(G, &[entry(index)]).unwrap();
                // The flush is first polled right here, on this thread.
                polled_on.push(thread::current().id());
                store.flush().await.unwrap();
            }
            (store, polled_on)
        }))
        .unwrap();
    let committed_on = threads.lock().unwrap().clone();
    assert_eq!(committed_on.len(), 5);
    for (committed, polled) in committed_on.iter().zip(&polled_on) {
        assert_ne!(committed, polled);
    }
    drop(store);
    assert_eq!(read_all(&open(dir.path()), G), entries(1, 5));
}

#[test]
fn outside_a_runtime_the_flush_commits_on_the_polling_thread_when_first_polled() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let threads = record_threads(&mut store);
    store.append(G, &entries(1, 2)).unwrap();
    store.save_snapshot(G, &snapshot(b"image")).unwrap();
    assert!(matches!(
        poll_once(pin!(store.flush())),
        Poll::Ready(Ok(()))
    ));
    assert_eq!(*threads.lock().unwrap(), [thread::current().id()]);
    assert!(!store.has_unflushed());
    drop(store);
    let store = open(dir.path());
    assert_eq!(read_all(&store, G), entries(1, 2));
    assert_eq!(store.snapshot(G).unwrap(), Some(snapshot(b"image")));
}

#[test]
fn a_flush_dropped_after_its_first_poll_leaves_the_store_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    current_thread().block_on(async {
        store.append(G, &entries(1, 3)).unwrap();
        store.save_snapshot(G, &snapshot(b"one")).unwrap();
        let gate = gate(&mut store);
        assert!(poll_once(pin!(store.flush())).is_pending());
        // The flush future is gone; its commit has started and is held.
        gate.started.recv().unwrap();
        assert!(store.has_unflushed());
        assert_eq!(store.log_state(G).unwrap().last.index, LogIndex(3));
        assert_eq!(store.snapshot(G).unwrap(), Some(snapshot(b"one")));
        // The store takes new writes meanwhile.
        store.append(G, &[entry(4)]).unwrap();
        store.save_hard_state(G, hard_state(3)).unwrap();
        store.save_snapshot(G, &snapshot(b"two")).unwrap();
        gate.release.send(()).unwrap();
        assert_eq!(read_all(&store, G), entries(1, 4));
        // The next flush takes the dropped flush's commit into account and
        // commits what is still staged.
        store.commit_hook = None;
        store.flush().await.unwrap();
        assert!(!store.has_unflushed());
        assert_eq!(read_all(&store, G), entries(1, 4));
        assert_eq!(store.snapshot(G).unwrap(), Some(snapshot(b"two")));
    });
    drop(store);
    let store = open(dir.path());
    store.verify().unwrap();
    assert_eq!(read_all(&store, G), entries(1, 4));
    assert_eq!(store.hard_state(G).unwrap(), hard_state(3));
    assert_eq!(store.snapshot(G).unwrap(), Some(snapshot(b"two")));
    // The dropped flush's image (generation 1) was replaced and removed.
    assert_eq!(snapshot_files(dir.path()), [snapshot_file::file_name(G, 2)]);
}

#[test]
fn a_dropped_flush_that_committed_is_not_committed_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    current_thread().block_on(async {
        store.append(G, &entries(1, 3)).unwrap();
        store.save_snapshot(G, &snapshot(b"one")).unwrap();
        let gate = gate(&mut store);
        assert!(poll_once(pin!(store.flush())).is_pending());
        gate.started.recv().unwrap();
        drop(gate.release);
        // Nothing was staged since: the flush only applies that commit.
        store.flush().await.unwrap();
        assert!(gate.started.try_recv().is_err(), "a second commit ran");
        assert!(!store.has_unflushed());
        assert_eq!(read_all(&store, G), entries(1, 3));
        assert_eq!(store.snapshot(G).unwrap(), Some(snapshot(b"one")));
    });
    drop(store);
    let store = open(dir.path());
    assert_eq!(read_all(&store, G), entries(1, 3));
    assert_eq!(store.snapshot(G).unwrap(), Some(snapshot(b"one")));
}

#[test]
fn a_flush_dropped_while_waiting_for_an_earlier_dropped_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    current_thread().block_on(async {
        store.append(G, &entries(1, 2)).unwrap();
        let gate = gate(&mut store);
        assert!(poll_once(pin!(store.flush())).is_pending());
        gate.started.recv().unwrap();
        store.append(G, &[entry(3)]).unwrap();
        // This one waits for the held commit, and is dropped too.
        assert!(poll_once(pin!(store.flush())).is_pending());
        assert!(gate.started.try_recv().is_err());
        drop(gate.release);
        store.flush().await.unwrap();
        assert!(!store.has_unflushed());
    });
    drop(store);
    assert_eq!(read_all(&open(dir.path()), G), entries(1, 3));
}

#[test]
fn a_dropped_flush_whose_commit_fails_leaves_the_writes_staged() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    current_thread().block_on(async {
        store.append(G, &entries(1, 2)).unwrap();
        store.flush().await.unwrap();
        store.append(G, &entries(3, 4)).unwrap();
        let (started_tx, started) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let (started_tx, release_rx) = (Mutex::new(started_tx), Mutex::new(release_rx));
        store.commit_hook = Some(Arc::new(move || {
            started_tx.lock().unwrap().send(()).unwrap();
            let _ = release_rx.lock().unwrap().recv();
            panic!("the disk went away");
        }));
        assert!(poll_once(pin!(store.flush())).is_pending());
        started.recv().unwrap();
        drop(release);
        // Reading the disk waits for the commit; it changed nothing.
        store.verify().unwrap();
        assert_eq!(read_all(&store, G), entries(1, 4));
        assert!(store.has_unflushed());
        store.commit_hook = None;
        store.flush().await.unwrap();
        assert!(!store.has_unflushed());
    });
    drop(store);
    assert_eq!(read_all(&open(dir.path()), G), entries(1, 4));
}

#[test]
fn dropping_the_store_waits_for_a_commit_left_running() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let runtime = current_thread();
    runtime.block_on(async {
        store.append(G, &entries(1, 3)).unwrap();
        let gate = gate(&mut store);
        assert!(poll_once(pin!(store.flush())).is_pending());
        gate.started.recv().unwrap();
        let releaser = thread::spawn(move || {
            thread::sleep(std::time::Duration::from_millis(50));
            drop(gate.release);
        });
        drop(store);
        releaser.join().unwrap();
    });
    // The directory is free, and the commit landed.
    let store = open(dir.path());
    assert_eq!(read_all(&store, G), entries(1, 3));
    assert!(!store.has_unflushed());
}

#[test]
fn reads_wait_for_a_dropped_commit_that_grows_the_map() {
    let dir = tempfile::tempdir().unwrap();
    let options = LmdbOptions {
        initial_map_size: 1 << 20,
        ..LmdbOptions::new(6)
    };
    let mut store = LmdbLogStore::open(dir.path(), options.clone()).unwrap();
    let big = |index: u64| Entry {
        payload: Payload::Command(Bytes::from(vec![index as u8; 16 * 1024])),
        ..entry(index)
    };
    current_thread().block_on(async {
        store.append(G, &entries(1, 8)).unwrap();
        store.flush().await.unwrap();
        // About 3 MiB: the commit must grow the 1 MiB map twice.
        store
            .append(G, &(9..=200).map(big).collect::<Vec<_>>())
            .unwrap();
        let gate = gate(&mut store);
        assert!(poll_once(pin!(store.flush())).is_pending());
        gate.started.recv().unwrap();
        drop(gate.release);
        // Each of these waits for the commit before touching the map.
        assert_eq!(
            store
                .entries(G, LogIndex(1)..LogIndex(9), usize::MAX)
                .unwrap(),
            entries(1, 8)
        );
        assert!(store.map_size() >= 4 << 20, "{}", store.map_size());
        store.verify().unwrap();
        store.commit_hook = None;
        store.flush().await.unwrap();
    });
    drop(store);
    let store = LmdbLogStore::open(dir.path(), options).unwrap();
    assert_eq!(store.log_state(G).unwrap().last.index, LogIndex(200));
    store.verify().unwrap();
}

fn assert_panic_reported(result: Result<(), StorageError>) {
    match result {
        Err(StorageError::Other(message)) => {
            assert!(message.contains("panicked"), "{message}");
            assert!(message.contains("commit hook panics"), "{message}");
            assert!(message.contains("still staged"), "{message}");
        }
        other => panic!("expected a reported panic, got {other:?}"),
    }
}

#[test]
fn a_panic_during_the_commit_is_a_failed_flush() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    store.append(G, &entries(1, 2)).unwrap();
    store.commit_hook = Some(Arc::new(|| panic!("commit hook panics")));
    // On the blocking pool (a JoinError)...
    let runtime = current_thread();
    assert_panic_reported(runtime.block_on(store.flush()));
    assert!(store.has_unflushed());
    // ...and on the polling thread, without a runtime.
    store.append(G, &[entry(3)]).unwrap();
    match poll_once(pin!(store.flush())) {
        Poll::Ready(result) => assert_panic_reported(result),
        Poll::Pending => panic!("outside a runtime the flush completes when first polled"),
    }
    assert!(store.has_unflushed());
    assert_eq!(read_all(&store, G), entries(1, 3));
    store.commit_hook = None;
    runtime.block_on(store.flush()).unwrap();
    drop(store);
    assert_eq!(read_all(&open(dir.path()), G), entries(1, 3));
}

// -- With the journal --------------------------------------------------------

/// A store with the journal on, checkpointing past `checkpoint_bytes`.
fn open_journaled(dir: &Path, checkpoint_bytes: u64) -> LmdbLogStore {
    let options = LmdbOptions {
        checkpoint_bytes,
        ..LmdbOptions::new(6)
    };
    LmdbLogStore::open(dir, options).unwrap()
}

/// Names of the journal files in `dir`.
fn journal_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with("journal-"))
        .collect();
    names.sort();
    names
}

/// Entries flushed to the journal are durable but not in LMDB until a
/// checkpoint: reads still serve them, and a reopen replays them.
#[test]
fn a_journal_flush_is_durable_without_an_lmdb_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_journaled(dir.path(), 1 << 20);
    let first = store.journal.generation;
    let threads = record_threads(&mut store);
    current_thread().block_on(async {
        store.append(G, &entries(1, 3)).unwrap();
        store.save_hard_state(G, hard_state(2)).unwrap();
        assert!(store.has_unflushed());
        store.flush().await.unwrap();
        assert!(!store.has_unflushed());
        // Nothing new staged: no disk work at all.
        store.flush().await.unwrap();
        store.truncate(G, LogIndex(3)).unwrap();
        store.append(G, &[entry(3), entry(4)]).unwrap();
        store.flush().await.unwrap();
    });
    assert_eq!(threads.lock().unwrap().len(), 2);
    assert_eq!(
        journal_files(dir.path()),
        [crate::journal::file_name(first)]
    );
    // LMDB has no record of the group yet.
    let txn = store.read_txn().unwrap();
    assert!(
        store
            .dbs
            .bounds
            .get(&txn, &G.0.to_be_bytes())
            .unwrap()
            .is_none()
    );
    drop(txn);
    assert_eq!(read_all(&store, G), entries(1, 4));
    drop(store);
    let store = open_journaled(dir.path(), 1 << 20);
    assert_eq!(read_all(&store, G), entries(1, 4));
    assert_eq!(store.hard_state(G).unwrap(), hard_state(2));
    assert!(!store.has_unflushed());
}

/// A snapshot, or a journal past its limit, makes the flush a checkpoint,
/// which starts a new journal generation and removes the old file; a
/// reopen does not replay what the checkpoint committed.
#[test]
fn a_checkpoint_starts_a_new_journal_and_nothing_is_replayed_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_journaled(dir.path(), 1 << 20);
    let first = store.journal.generation;
    let second = current_thread().block_on(async {
        store.append(G, &entries(1, 4)).unwrap();
        store.flush().await.unwrap();
        store.save_snapshot(G, &snapshot(b"image")).unwrap();
        store.compact(G, LogId::new(Term(1), LogIndex(2))).unwrap();
        store.flush().await.unwrap();
        let second = store.journal.generation;
        assert_ne!(second, first);
        // The first generation's file is kept for reuse...
        assert_eq!(
            journal_files(dir.path()),
            [crate::journal::file_name(first)]
        );
        let reused = fs::metadata(dir.path().join(crate::journal::file_name(first))).unwrap();
        store.append(G, &entries(5, 6)).unwrap();
        store.flush().await.unwrap();
        // ...by the second generation's first write, which writes over
        // its start.
        let now = fs::metadata(dir.path().join(crate::journal::file_name(second))).unwrap();
        assert_eq!(now.len(), reused.len());
        second
    });
    assert_eq!(
        journal_files(dir.path()),
        [crate::journal::file_name(second)]
    );
    drop(store);
    // Reopened with a tiny limit: the replayed journal is checkpointed by
    // the next flush, and a later reopen (journal on again) sees each
    // write once.
    let mut store = open_journaled(dir.path(), 1);
    assert_eq!(read_all(&store, G), entries(3, 6));
    current_thread().block_on(async {
        store.append(G, &[entry(7)]).unwrap();
        store.flush().await.unwrap();
    });
    // A third generation began; the second's file waits to be reused.
    assert_ne!(store.journal.generation, second);
    assert_eq!(
        journal_files(dir.path()),
        [crate::journal::file_name(second)]
    );
    drop(store);
    let store = open_journaled(dir.path(), 1 << 20);
    store.verify().unwrap();
    assert_eq!(read_all(&store, G), entries(3, 7));
    assert_eq!(store.snapshot(G).unwrap(), Some(snapshot(b"image")));
}

/// Turning the journal off keeps what it holds: the first flush
/// checkpoints it, in a new generation.
#[test]
fn a_store_reopened_without_journal_keeps_the_journaled_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_journaled(dir.path(), 1 << 20);
    current_thread().block_on(async {
        store.append(G, &entries(1, 3)).unwrap();
        store.flush().await.unwrap();
    });
    drop(store);
    let mut store = open(dir.path());
    assert_eq!(read_all(&store, G), entries(1, 3));
    current_thread().block_on(async {
        store.append(G, &[entry(4)]).unwrap();
        store.flush().await.unwrap();
    });
    assert!(journal_files(dir.path()).is_empty());
    drop(store);
    let store = open_journaled(dir.path(), 1 << 20);
    assert_eq!(read_all(&store, G), entries(1, 4));
    store.verify().unwrap();
}

/// A journal write whose flush was dropped lands once; one that fails
/// makes the next flush a checkpoint, which writes what it had taken.
#[test]
fn dropped_and_failed_journal_writes_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_journaled(dir.path(), 1 << 20);
    let first = store.journal.generation;
    current_thread().block_on(async {
        store.append(G, &entries(1, 2)).unwrap();
        let gate = gate(&mut store);
        assert!(poll_once(pin!(store.flush())).is_pending());
        gate.started.recv().unwrap();
        assert!(store.has_unflushed());
        store.append(G, &[entry(3)]).unwrap();
        drop(gate.release);
        store.flush().await.unwrap();
        assert!(!store.has_unflushed());
        // Now a failing one.
        store.append(G, &[entry(4)]).unwrap();
        store.commit_hook = Some(Arc::new(|| panic!("commit hook panics")));
        assert_panic_reported(store.flush().await);
        assert!(store.has_unflushed());
        store.append(G, &[entry(5)]).unwrap();
        store.commit_hook = None;
        store.flush().await.unwrap();
        assert!(!store.has_unflushed());
    });
    // The failed write was followed by a checkpoint: a new generation
    // began, and has no file yet; the first one's is kept for it to reuse.
    assert_ne!(store.journal.generation, first);
    assert_eq!(
        journal_files(dir.path()),
        [crate::journal::file_name(first)]
    );
    drop(store);
    let store = open_journaled(dir.path(), 1 << 20);
    assert_eq!(read_all(&store, G), entries(1, 5));
    store.verify().unwrap();
}
