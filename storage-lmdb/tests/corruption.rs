//! Damaged, truncated and foreign data directories (SCENARIOS.md cases 28
//! and 29): every one is reported as a clear error, none panics, and no
//! damaged byte is returned as data. Damaged directories are
//! [`StorageError::Corrupt`]; intact ones the node may not use (another
//! cluster's, another LMDB data version) are
//! [`StorageError::Incompatible`].

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

/// Every flush is a checkpoint (no journal): these tests damage what a
/// flush wrote into LMDB's data file.
fn options() -> LmdbOptions {
    LmdbOptions {
        checkpoint_bytes: 0,
        ..LmdbOptions::new(CLUSTER)
    }
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
fn case_29_a_bit_flip_in_a_stored_entry_is_reported_not_returned() {
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
fn case_29_a_bit_flip_in_the_last_entry_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    assert!(flip_every(&dir.path().join("data.mdb"), &needle(9)) >= 1);
    let (_, detail) = corrupt(open(dir.path()));
    assert!(detail.contains("g2/i9"), "{detail}");
}

#[test]
fn case_29_a_bit_flip_in_a_snapshot_image_is_reported() {
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
fn case_29_a_truncated_snapshot_file_is_refused() {
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
fn case_28_a_missing_snapshot_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    let file = snapshot_files(dir.path()).remove(0);

    // Removed while the store is open: the read reports it.
    let store = open(dir.path()).unwrap();
    fs::remove_file(&file).unwrap();
    let (path, detail) = corrupt(store.snapshot(G));
    assert_eq!(path, file);
    assert!(detail.contains("missing"), "{detail}");
    assert_eq!(corrupt(store.verify()).0, file);
    drop(store);

    // Missing while closed: the store refuses to open.
    let (path, detail) = corrupt(open(dir.path()));
    assert_eq!(path, file);
    assert!(detail.contains("missing"), "{detail}");
}

#[test]
fn case_29_a_snapshot_file_with_bytes_appended_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    let file = snapshot_files(dir.path()).remove(0);
    let mut image = fs::read(&file).unwrap();
    image.extend_from_slice(b"torn tail");
    fs::write(&file, &image).unwrap();
    let (path, detail) = corrupt(open(dir.path()));
    assert_eq!(path, file);
    assert!(
        detail.contains(&format!("holds {} bytes", image.len())),
        "{detail}"
    );
}

#[test]
fn case_29_a_snapshot_file_replaced_by_another_of_the_same_length_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    let file = snapshot_files(dir.path()).remove(0);
    let len = fs::metadata(&file).unwrap().len() as usize;
    fs::write(&file, vec![b'x'; len]).unwrap();
    // Open checks only the length; the read and a verifying open check the
    // checksum.
    let store = open(dir.path()).unwrap();
    let (path, detail) = corrupt(store.snapshot(G));
    assert_eq!(path, file);
    assert!(detail.contains("checksum mismatch"), "{detail}");
    drop(store);
    let (path, _) = corrupt(open_verified(dir.path()));
    assert_eq!(path, file);
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
fn case_28_a_truncated_data_file_is_refused() {
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
    let original = fs::read(&data).unwrap();
    let len = original.len();
    // Cut in half, by one page, by one byte, and down to the first page.
    for cut in [len / 2, len - 4096, len - 1, 4096] {
        OpenOptions::new()
            .write(true)
            .open(&data)
            .unwrap()
            .set_len(cut as u64)
            .unwrap();
        let (path, detail) = corrupt(open(dir.path()));
        assert_eq!(path, data, "cut at {cut}");
        assert!(
            detail.contains("truncated") || detail.contains("LMDB"),
            "cut at {cut}: {detail}"
        );
        fs::write(&data, &original).unwrap();
    }
    // Restored, the directory opens again: the refusals changed nothing.
    let store = open(dir.path()).unwrap();
    assert_eq!(store.log_state(G).unwrap().last.index, LogIndex(32));
}

#[test]
fn case_28_an_empty_or_garbage_data_file_is_refused() {
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
fn case_28_a_deleted_data_file_next_to_snapshots_is_refused() {
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
fn case_28_a_deleted_data_file_is_refused_even_without_snapshot_images() {
    // A store with a log and a vote but no snapshot: if it came back empty,
    // the node could vote a second time in term 2.
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = open(dir.path()).unwrap();
        store.append(G, &[entry(1)]).unwrap();
        store
            .save_hard_state(
                G,
                HardState {
                    term: Term(2),
                    vote: Some(NodeId(3)),
                    commit: LogIndex(0),
                },
            )
            .unwrap();
        now(store.flush()).unwrap();
    }
    assert!(snapshot_files(dir.path()).is_empty());
    let data = dir.path().join("data.mdb");
    fs::remove_file(&data).unwrap();
    let (path, detail) = corrupt(open(dir.path()));
    assert_eq!(path, data);
    assert!(detail.contains("missing"), "{detail}");
    assert!(detail.contains("remove the whole directory"), "{detail}");
    assert!(!data.exists(), "nothing was created in its place");
    // A directory emptied on purpose starts afresh.
    fs::remove_dir_all(dir.path()).unwrap();
    let store = open(dir.path()).unwrap();
    assert!(store.groups().unwrap().is_empty());
}

#[test]
fn a_new_store_opens_in_an_existing_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    assert!(store.groups().unwrap().is_empty());
    assert!(dir.path().join("snapshots").is_dir());
    drop(store);
    // And in one that does not exist yet, parents included.
    let nested = dir.path().join("a").join("b");
    let store = open(&nested).unwrap();
    assert!(nested.join("data.mdb").exists());
    drop(store);
    open(&nested).unwrap();
}

/// The error's path, reason, fix and message, asserting it is
/// `Incompatible`.
fn incompatible<T: std::fmt::Debug>(
    result: Result<T, StorageError>,
) -> (PathBuf, String, String, String) {
    match result {
        Err(err @ StorageError::Incompatible { .. }) => {
            let message = err.to_string();
            let StorageError::Incompatible { path, reason, fix } = err else {
                unreachable!()
            };
            (path, reason, fix, message)
        }
        other => panic!("expected Incompatible, got {other:?}"),
    }
}

#[test]
fn another_clusters_directory_is_incompatible() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    let (path, reason, fix, message) = incompatible(LmdbLogStore::open(
        dir.path(),
        LmdbOptions::new(CLUSTER + 1),
    ));
    assert_eq!(path, dir.path());
    assert!(
        reason.contains(&format!("belongs to cluster {CLUSTER}"))
            && reason.contains(&format!("configured for cluster {}", CLUSTER + 1)),
        "{reason}"
    );
    assert!(fix.contains("its own data directory"), "{fix}");
    assert!(fix.contains("wipe"), "{fix}");
    assert!(
        message.contains(&dir.path().display().to_string())
            && message.contains(&reason)
            && message.contains(&fix),
        "{message}"
    );
    // Nothing was changed: the right cluster still opens it.
    let store = open(dir.path()).unwrap();
    assert_eq!(store.log_state(G).unwrap().last.index, LogIndex(9));
}

#[test]
fn an_environment_of_another_lmdb_data_version_is_incompatible() {
    /// LMDB's magic number, first in its meta pages (little-endian here).
    const LMDB_MAGIC: [u8; 4] = 0xBEEF_C0DE_u32.to_le_bytes();
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    let data = dir.path().join("data.mdb");
    let mut bytes = fs::read(&data).unwrap();
    // The data version follows the magic in the first meta page.
    let at = bytes[..64]
        .windows(4)
        .position(|w| w == LMDB_MAGIC)
        .expect("LMDB's magic in the first meta page")
        + 4;
    let version = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    bytes[at..at + 4].copy_from_slice(&(version + 1).to_le_bytes());
    fs::write(&data, &bytes).unwrap();
    let (path, reason, fix, _) = incompatible(open(dir.path()));
    assert_eq!(path, data);
    assert!(reason.contains("version of LMDB"), "{reason}");
    assert!(fix.contains("the build that wrote"), "{fix}");
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
