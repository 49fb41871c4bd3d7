//! The journal on disk: a torn last record (a crash in the middle of a
//! flush) loses that flush only, a damaged record followed by valid ones is
//! refused, journal files of other generations are not replayed, and a
//! journal file is given its length once, up front.

use std::fs;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use raft_api::{Entry, GroupId, Hlc, LogId, LogIndex, LogStore, Payload, StorageError, Term};
use storage_lmdb::{DEFAULT_CHECKPOINT_BYTES, LmdbLogStore, LmdbOptions};

const G: GroupId = GroupId(9);

fn now<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("outside a runtime the flush completes when first polled"),
    }
}

fn entry(index: u64) -> Entry {
    Entry {
        id: LogId::new(Term(1), LogIndex(index)),
        timestamp: Hlc::new(index, 0),
        payload: Payload::Command(Bytes::from(format!("journaled {index}"))),
    }
}

fn open(dir: &Path) -> Result<LmdbLogStore, StorageError> {
    LmdbLogStore::open(dir, LmdbOptions::new(21))
}

fn last(store: &LmdbLogStore) -> u64 {
    store.log_state(G).unwrap().last.index.0
}

/// A store with entries 1..=3 flushed one per flush (three records), and
/// the path of its journal.
fn three_flushes(dir: &Path) -> PathBuf {
    let mut store = open(dir).unwrap();
    for i in 1..=3 {
        store.append(G, &[entry(i)]).unwrap();
        now(store.flush()).unwrap();
    }
    drop(store);
    the_journal(dir)
}

/// The one journal file in `dir`.
fn the_journal(dir: &Path) -> PathBuf {
    let journals: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("journal-")
        })
        .collect();
    assert_eq!(journals.len(), 1, "{journals:?}");
    journals[0].clone()
}

/// Where the records of `bytes` end: the zeros the file was given up
/// front follow them (each record here ends with a non-zero byte).
fn records_end(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&b| b != 0).unwrap() + 1
}

/// The length every journal file of these stores is given up front: the
/// largest checkpoint limit (a quarter over `checkpoint_bytes`).
const PREFILLED: u64 = DEFAULT_CHECKPOINT_BYTES + DEFAULT_CHECKPOINT_BYTES / 4;

#[test]
fn a_journal_file_is_given_its_length_once_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let journal = three_flushes(dir.path());
    let bytes = fs::read(&journal).unwrap();
    assert_eq!(bytes.len() as u64, PREFILLED);
    // Three records, then zeros.
    let end = records_end(&bytes);
    assert!(end < 1000, "{end}");
    assert_eq!(
        bytes.windows(4).filter(|w| *w == b"RJN1").count(),
        3,
        "three records"
    );
    // Zeros end the journal: all three flushes are read back, and more
    // records go after them, in the same length.
    let mut store = open(dir.path()).unwrap();
    assert_eq!(last(&store), 3);
    store.append(G, &[entry(4)]).unwrap();
    now(store.flush()).unwrap();
    drop(store);
    assert_eq!(fs::metadata(&journal).unwrap().len(), PREFILLED);
    assert_eq!(last(&open(dir.path()).unwrap()), 4);
}

#[test]
fn a_journal_file_without_zeros_after_its_records_still_reads_and_grows() {
    // As a journal written before files were given their length is.
    let dir = tempfile::tempdir().unwrap();
    let journal = three_flushes(dir.path());
    let bytes = fs::read(&journal).unwrap();
    let end = records_end(&bytes);
    fs::write(&journal, &bytes[..end]).unwrap();
    let mut store = open(dir.path()).unwrap();
    assert_eq!(last(&store), 3);
    store.append(G, &[entry(4)]).unwrap();
    now(store.flush()).unwrap();
    drop(store);
    assert!(fs::metadata(&journal).unwrap().len() > end as u64);
    assert_eq!(last(&open(dir.path()).unwrap()), 4);
}

#[test]
fn a_torn_last_record_loses_only_the_last_flush() {
    let dir = tempfile::tempdir().unwrap();
    let journal = three_flushes(dir.path());
    // The last bytes of the last record never reached the disk.
    let mut bytes = fs::read(&journal).unwrap();
    let end = records_end(&bytes);
    bytes[end - 3..end].fill(0);
    fs::write(&journal, &bytes).unwrap();
    let mut store = open(dir.path()).unwrap();
    assert_eq!(last(&store), 2);
    // Cut off with zeros: the file keeps its length.
    let cut = fs::read(&journal).unwrap();
    assert_eq!(cut.len() as u64, PREFILLED);
    assert!(records_end(&cut) < end - 3);
    // The torn bytes are gone: a new flush after them is read back.
    store.append(G, &[entry(3), entry(4)]).unwrap();
    now(store.flush()).unwrap();
    drop(store);
    let store = open(dir.path()).unwrap();
    assert_eq!(last(&store), 4);
    let read = store
        .entries(G, LogIndex(1)..LogIndex(5), usize::MAX)
        .unwrap();
    assert_eq!(read, (1..=4).map(entry).collect::<Vec<_>>());
}

#[test]
fn garbage_after_the_last_record_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let journal = three_flushes(dir.path());
    let mut bytes = fs::read(&journal).unwrap();
    bytes.extend_from_slice(&[0; 100]);
    bytes.extend_from_slice(b"RJN1 and then nothing valid");
    fs::write(&journal, &bytes).unwrap();
    let end = records_end(&fs::read(&journal).unwrap()[..PREFILLED as usize]);
    assert_eq!(last(&open(dir.path()).unwrap()), 3);
    // The garbage is zeros now; the records are whole.
    let cut = fs::read(&journal).unwrap();
    assert_eq!(cut.len(), bytes.len());
    assert_eq!(records_end(&cut), end);
    assert_eq!(last(&open(dir.path()).unwrap()), 3);
}

#[test]
fn a_damaged_record_before_valid_ones_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let journal = three_flushes(dir.path());
    let mut bytes = fs::read(&journal).unwrap();
    // Inside the first record's body.
    bytes[25] ^= 0x10;
    fs::write(&journal, &bytes).unwrap();
    match open(dir.path()) {
        Err(StorageError::Corrupt { path, detail }) => {
            assert_eq!(path, journal);
            assert!(detail.contains("valid record follows"), "{detail}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Refused every time: nothing was cut off.
    assert!(matches!(
        open(dir.path()),
        Err(StorageError::Corrupt { .. })
    ));
}

#[test]
fn a_journal_of_another_generation_is_removed_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let journal = three_flushes(dir.path());
    let stale = dir.path().join("journal-00000000000000000007.log");
    fs::copy(&journal, &stale).unwrap();
    fs::remove_file(&journal).unwrap();
    let store = open(dir.path()).unwrap();
    assert_eq!(last(&store), 0);
    assert!(!stale.exists());
}

/// A checkpoint's next generation writes over the old journal file: a torn
/// first record there, with the older generation's records after it, is a
/// torn tail, and none of the older records is replayed.
#[test]
fn a_reused_journal_file_replays_only_its_own_generation() {
    use raft_api::{Membership, NodeId, Snapshot, SnapshotMeta};
    let dir = tempfile::tempdir().unwrap();
    let journal = three_flushes(dir.path());
    let mut store = open(dir.path()).unwrap();
    let meta = SnapshotMeta {
        last: entry(3).id,
        membership: Membership::new([NodeId(1)]),
    };
    store
        .save_snapshot(
            G,
            &Snapshot {
                meta,
                data: Bytes::from_static(b"image"),
            },
        )
        .unwrap();
    store.compact(G, entry(2).id).unwrap();
    // A checkpoint: generation 1 begins, and generation 0's file stays.
    now(store.flush()).unwrap();
    assert!(journal.exists());
    store.append(G, &[entry(4)]).unwrap();
    now(store.flush()).unwrap();
    drop(store);
    assert!(!journal.exists(), "generation 0's file was reused");
    let reused = the_journal(dir.path());
    let bytes = fs::read(&reused).unwrap();
    // The old records are still there after the new one.
    assert!(bytes.windows(12).filter(|w| w.starts_with(b"RJN1")).count() >= 3);
    let store = open(dir.path()).unwrap();
    assert_eq!(last(&store), 4);
    assert_eq!(store.log_state(G).unwrap().compacted, entry(2).id);
    drop(store);
    // Tear the one record of generation 1.
    let mut bytes = fs::read(&reused).unwrap();
    bytes[22] ^= 0x01;
    fs::write(&reused, &bytes).unwrap();
    let store = open(dir.path()).unwrap();
    assert_eq!(last(&store), 3);
    assert_eq!(store.log_state(G).unwrap().compacted, entry(2).id);
}

/// A record as the store writes one, whole and valid for `generation`: what
/// a client can put inside a command.
fn forged_record(generation: u64) -> Vec<u8> {
    let body = b"forged";
    let len = (body.len() as u32).to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len);
    crc.update(&generation.to_le_bytes());
    crc.update(body);
    [
        b"RJN1".as_slice(),
        &len,
        &generation.to_le_bytes(),
        &crc.finalize().to_le_bytes(),
        body,
    ]
    .concat()
}

/// An entry whose command embeds valid records of generations 0 to 63.
fn forging(index: u64) -> Entry {
    let forged: Vec<u8> = (0..64).flat_map(forged_record).collect();
    Entry {
        payload: Payload::Command(Bytes::from(forged)),
        ..entry(index)
    }
}

/// Commands that embed records of guessable generations, in the records of
/// a journal file the next generation writes over, are not taken for
/// records of that generation (which would make the journal unreadable).
#[test]
fn records_forged_in_commands_are_not_read_after_a_reused_file() {
    use raft_api::{Membership, NodeId, Snapshot, SnapshotMeta};
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path()).unwrap();
    for i in 1..=3 {
        store.append(G, &[forging(i)]).unwrap();
        now(store.flush()).unwrap();
    }
    let meta = SnapshotMeta {
        last: entry(3).id,
        membership: Membership::new([NodeId(1)]),
    };
    let image = Bytes::from_static(b"image");
    store
        .save_snapshot(G, &Snapshot { meta, data: image })
        .unwrap();
    now(store.flush()).unwrap();
    store.append(G, &[entry(4)]).unwrap();
    now(store.flush()).unwrap();
    drop(store);
    let store = open(dir.path()).unwrap();
    assert_eq!(last(&store), 4);
}

/// The same inside a torn last record: the tail is cut off, not refused.
#[test]
fn records_forged_in_a_torn_record_are_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path()).unwrap();
    store.append(G, &[entry(1)]).unwrap();
    now(store.flush()).unwrap();
    store.append(G, &[forging(2)]).unwrap();
    now(store.flush()).unwrap();
    drop(store);
    let journal = the_journal(dir.path());
    let mut bytes = fs::read(&journal).unwrap();
    let end = records_end(&bytes);
    bytes[end - 1] ^= 0xff;
    fs::write(&journal, &bytes).unwrap();
    let store = open(dir.path()).unwrap();
    assert_eq!(last(&store), 1);
}
