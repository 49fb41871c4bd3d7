//! Damaged, truncated and foreign data directories (SCENARIOS.md cases 28
//! and 29): every one is reported as a clear error, none panics, and no
//! damaged byte is returned as data.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use raft_api::{
    Entry, GroupId, HardState, Hlc, LogId, LogIndex, LogStore, Membership, NodeId, Payload,
    Snapshot, SnapshotMeta, StorageError, Term,
};
use storage_lmdb::{LmdbLogStore, LmdbOptions};

const G: GroupId = GroupId(2);
const CLUSTER: u64 = 0xc1;

fn now<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the LMDB flush completes when first polled"),
    }
}

fn options() -> LmdbOptions {
    LmdbOptions::new(CLUSTER)
}

fn open(dir: &Path) -> Result<LmdbLogStore, StorageError> {
    LmdbLogStore::open(dir, options())
}

fn open_verified(dir: &Path) -> Result<LmdbLogStore, StorageError> {
    LmdbLogStore::open(
        dir,
        LmdbOptions {
            verify_on_open: true,
            ..options()
        },
    )
}

/// A recognisable command for the entry at `index`.
fn needle(index: u64) -> Vec<u8> {
    format!("needle-{index:04}-0123456789abcdef").into_bytes()
}

fn entry(index: u64) -> Entry {
    Entry {
        id: LogId::new(Term(2), LogIndex(index)),
        timestamp: Hlc::new(index, 0),
        payload: Payload::Command(Bytes::from(needle(index))),
    }
}

fn snapshot(data: &[u8]) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            last: LogId::new(Term(2), LogIndex(4)),
            membership: Membership::new([1, 2, 3].map(NodeId)),
        },
        data: Bytes::copy_from_slice(data),
    }
}

/// A closed store in `dir` with entries 1..=9 of `G`, a hard state and a
/// snapshot.
fn populate(dir: &Path) {
    let mut store = open(dir).unwrap();
    store
        .append(G, &(1..=9).map(entry).collect::<Vec<_>>())
        .unwrap();
    store
        .save_hard_state(
            G,
            HardState {
                term: Term(2),
                vote: Some(NodeId(1)),
                commit: LogIndex(9),
            },
        )
        .unwrap();
    store
        .save_snapshot(G, &snapshot(b"snapshot image bytes"))
        .unwrap();
    now(store.flush()).unwrap();
}

/// Flips one bit in the middle of every copy of `pattern` in `path`
/// (LMDB copies pages on write, so older copies may linger in free pages);
/// returns how many copies it changed.
fn flip_every(path: &Path, pattern: &[u8]) -> usize {
    let mut bytes = fs::read(path).unwrap();
    let mut found = 0;
    let mut at = 0;
    while let Some(pos) = bytes[at..]
        .windows(pattern.len())
        .position(|w| w == pattern)
    {
        let hit = at + pos;
        bytes[hit + pattern.len() / 2] ^= 0x04;
        found += 1;
        at = hit + pattern.len();
    }
    fs::write(path, bytes).unwrap();
    found
}

fn snapshot_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// The error's path and detail, asserting it is `Corrupt`.
fn corrupt<T: std::fmt::Debug>(result: Result<T, StorageError>) -> (PathBuf, String) {
    match result {
        Err(StorageError::Corrupt { path, detail }) => (path, detail),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn a_bit_flip_in_a_stored_entry_is_reported_not_returned() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    let data = dir.path().join("data.mdb");
    assert!(flip_every(&data, &needle(5)) >= 1);

    // Open only checks the ends of each log, so it succeeds...
    let store = open(dir.path()).unwrap();
    // ...and reading the damaged entry names the file and the key.
    let (path, detail) = corrupt(store.entries(G, LogIndex(1)..LogIndex(10), usize::MAX));
    assert_eq!(path, data);
    assert!(detail.contains("g2/i5"), "{detail}");
    assert!(detail.contains("checksum mismatch"), "{detail}");
    let message = StorageError::Corrupt { path, detail }.to_string();
    assert!(message.contains("data.mdb"), "{message}");
    // Entries around it are intact.
    assert_eq!(
        store
            .entries(G, LogIndex(1)..LogIndex(5), usize::MAX)
            .unwrap(),
        (1..=4).map(entry).collect::<Vec<_>>()
    );
    assert_eq!(
        store
            .entries(G, LogIndex(6)..LogIndex(10), usize::MAX)
            .unwrap(),
        (6..=9).map(entry).collect::<Vec<_>>()
    );
    // A full check finds it, and so does an open that verifies.
    assert!(corrupt(store.verify()).1.contains("g2/i5"));
    drop(store);
    assert!(corrupt(open_verified(dir.path())).1.contains("g2/i5"));
}

#[test]
fn a_bit_flip_in_the_last_entry_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    assert!(flip_every(&dir.path().join("data.mdb"), &needle(9)) >= 1);
    let (_, detail) = corrupt(open(dir.path()));
    assert!(detail.contains("g2/i9"), "{detail}");
}

#[test]
fn a_bit_flip_in_a_snapshot_image_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    let files = snapshot_files(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(flip_every(&files[0], b"image"), 1);

    let store = open(dir.path()).unwrap();
    let (path, detail) = corrupt(store.snapshot(G));
    assert_eq!(path, files[0]);
    assert!(detail.contains("checksum mismatch"), "{detail}");
    // The log itself is fine.
    assert_eq!(store.log_state(G).unwrap().last.index, LogIndex(9));
    drop(store);
    assert_eq!(corrupt(open_verified(dir.path())).0, files[0]);
}

#[test]
fn a_truncated_snapshot_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    let file = snapshot_files(dir.path()).remove(0);
    let len = fs::metadata(&file).unwrap().len();

    // Truncated while the store is open: the read reports it.
    let store = open(dir.path()).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let (path, detail) = corrupt(store.snapshot(G));
    assert_eq!(path, file);
    assert!(detail.contains("truncated"), "{detail}");
    drop(store);

    // Truncated while closed: the store refuses to open.
    let (path, detail) = corrupt(open(dir.path()));
    assert_eq!(path, file);
    assert!(detail.contains("truncated"), "{detail}");
}

#[test]
fn a_missing_snapshot_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    let file = snapshot_files(dir.path()).remove(0);
    fs::remove_file(&file).unwrap();
    let (path, detail) = corrupt(open(dir.path()));
    assert_eq!(path, file);
    assert!(detail.contains("missing"), "{detail}");
}

#[test]
fn replaced_and_stray_snapshot_files_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    let mut store = open(dir.path()).unwrap();
    store.save_snapshot(G, &snapshot(b"second image")).unwrap();
    now(store.flush()).unwrap();
    let files = snapshot_files(dir.path());
    assert_eq!(files.len(), 1, "the replaced image is removed: {files:?}");
    drop(store);

    // Left by a crash: a temporary file, and an image whose record never
    // committed. Files of other names are left alone.
    let snapshots = dir.path().join("snapshots");
    let tmp = snapshots.join("0000000000000002-0000000000000009.snap.tmp");
    let uncommitted = snapshots.join("0000000000000002-0000000000000008.snap");
    let unrelated = snapshots.join("README");
    for path in [&tmp, &uncommitted, &unrelated] {
        fs::write(path, b"left over").unwrap();
    }
    let store = open(dir.path()).unwrap();
    assert_eq!(store.snapshot(G).unwrap(), Some(snapshot(b"second image")));
    assert!(!tmp.exists() && !uncommitted.exists());
    assert!(unrelated.exists());
}

#[test]
fn a_truncated_data_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        // Enough data for many pages.
        let mut store = open(dir.path()).unwrap();
        let big = Entry {
            payload: Payload::Command(Bytes::from(vec![7u8; 64 * 1024])),
            ..entry(1)
        };
        for index in 1..=32 {
            let e = Entry {
                id: LogId::new(Term(2), LogIndex(index)),
                ..big.clone()
            };
            store.append(G, &[e]).unwrap();
        }
        now(store.flush()).unwrap();
    }
    let data = dir.path().join("data.mdb");
    let len = fs::metadata(&data).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&data)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let (path, detail) = corrupt(open(dir.path()));
    assert_eq!(path, data);
    assert!(detail.contains("truncated"), "{detail}");
}

#[test]
fn an_empty_or_garbage_data_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    let data = dir.path().join("data.mdb");
    fs::write(&data, b"").unwrap();
    let (path, detail) = corrupt(open(dir.path()));
    assert_eq!(path, data);
    assert!(detail.contains("empty"), "{detail}");

    fs::write(&data, vec![0xab; 64 * 1024]).unwrap();
    let (path, _) = corrupt(open(dir.path()));
    assert_eq!(path, data);

    fs::write(&data, b"short").unwrap();
    corrupt(open(dir.path()));
}

#[test]
fn a_deleted_data_file_next_to_snapshots_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    let data = dir.path().join("data.mdb");
    fs::remove_file(&data).unwrap();
    let (path, detail) = corrupt(open(dir.path()));
    assert_eq!(path, data);
    assert!(detail.contains("missing"), "{detail}");
    // The images are left alone for whoever repairs the directory.
    assert_eq!(snapshot_files(dir.path()).len(), 1);
}

#[test]
fn another_clusters_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    let (path, detail) = corrupt(LmdbLogStore::open(
        dir.path(),
        LmdbOptions::new(CLUSTER + 1),
    ));
    assert_eq!(path, dir.path().join("data.mdb"));
    assert!(
        detail.contains(&format!("belongs to cluster {CLUSTER}"))
            && detail.contains(&format!("configured for cluster {}", CLUSTER + 1)),
        "{detail}"
    );
    // Nothing was changed: the right cluster still opens it.
    let store = open(dir.path()).unwrap();
    assert_eq!(store.log_state(G).unwrap().last.index, LogIndex(9));
}

#[test]
fn inconsistent_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let refused = LmdbLogStore::open(
        dir.path(),
        LmdbOptions {
            initial_map_size: 8 << 20,
            max_map_size: 4 << 20,
            ..options()
        },
    );
    match refused {
        Err(StorageError::Other(message)) => assert!(message.contains("max_map_size")),
        other => panic!("expected Other, got {other:?}"),
    }
}
