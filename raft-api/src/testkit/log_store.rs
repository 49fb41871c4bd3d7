//! The [`LogStore`] conformance suite.
//!
//! Every log store backend runs the same cases through a small
//! [`LogStoreHarness`]: it opens empty stores and "reopens" them, which means
//! a crash and a restart over the same durable data. A backend with files
//! drops the store and opens its directory again; an in-memory backend keeps
//! its durable copy and throws away what was staged (`MemLogStore::crash`).
//!
//! The cases check the contract written on [`LogStore`]: appends (by
//! reference and by value) that must continue the log, reads bounded by `max_bytes`, errors for compacted and
//! missing entries, truncation, compaction within the log and past its end,
//! hard states, snapshots, independent groups, staged writes visible at once,
//! durability of flushed writes across a reopen and loss of unflushed ones.
//! A last case runs a long deterministic series of random operations against
//! a reference model, with flushes and reopens at random points.
//!
//! Nothing depends on timing: every case is a fixed sequence of calls, and
//! the random case uses a fixed seed.
//!
//! ```
//! use raft_api::testkit::log_store::{LogStoreHarness, run_log_store_suite};
//! # use raft_api::{Entry, GroupId, HardState, LogIndex, LogState, LogStore, Snapshot, StorageError};
//! # #[derive(Default)]
//! # struct MyStore;
//! # impl LogStore for MyStore {
//! #     fn groups(&self) -> Result<Vec<GroupId>, StorageError> { unimplemented!() }
//! #     fn hard_state(&self, _: GroupId) -> Result<HardState, StorageError> { unimplemented!() }
//! #     fn log_state(&self, _: GroupId) -> Result<LogState, StorageError> { unimplemented!() }
//! #     fn entries(&self, _: GroupId, _: std::ops::Range<LogIndex>, _: usize)
//! #         -> Result<Vec<Entry>, StorageError> { unimplemented!() }
//! #     fn save_hard_state(&mut self, _: GroupId, _: HardState) -> Result<(), StorageError> { unimplemented!() }
//! #     fn append(&mut self, _: GroupId, _: &[Entry]) -> Result<(), StorageError> { unimplemented!() }
//! #     fn truncate(&mut self, _: GroupId, _: LogIndex) -> Result<(), StorageError> { unimplemented!() }
//! #     fn compact(&mut self, _: GroupId, _: raft_api::LogId) -> Result<(), StorageError> { unimplemented!() }
//! #     fn save_snapshot(&mut self, _: GroupId, _: &Snapshot) -> Result<(), StorageError> { unimplemented!() }
//! #     fn snapshot(&self, _: GroupId) -> Result<Option<Snapshot>, StorageError> { unimplemented!() }
//! #     async fn flush(&mut self) -> Result<(), StorageError> { unimplemented!() }
//! # }
//! # impl MyStore { fn lose_unflushed_writes(&mut self) {} }
//! struct Harness;
//!
//! impl LogStoreHarness for Harness {
//!     type Store = MyStore;
//!
//!     fn open(&mut self) -> MyStore {
//!         MyStore::default()
//!     }
//!
//!     fn reopen(&mut self, mut store: MyStore) -> MyStore {
//!         store.lose_unflushed_writes();
//!         store
//!     }
//! }
//!
//! // In the backend's tests, as a plain `#[test]`:
//! fn conformance() {
//!     run_log_store_suite(Harness);
//! }
//! ```

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::error::StorageError;
use crate::hlc::Hlc;
use crate::membership::{Membership, Snapshot, SnapshotMeta};
use crate::storage::{LogState, LogStore};
use crate::types::{Entry, GroupId, HardState, LogId, LogIndex, NodeId, Payload, Term};

/// How the suite obtains stores of the backend under test.
pub trait LogStoreHarness {
    /// The store under test.
    type Store: LogStore;

    /// Opens a new, empty store that shares nothing with any store opened
    /// before. Panics if that fails (this is test code).
    fn open(&mut self) -> Self::Store;

    /// Simulates a crash and a restart: the store goes away without another
    /// flush, and the returned store sees its durable data. Everything
    /// flushed must be there; everything staged after the last successful
    /// flush must be gone. A backend with files drops `store` and opens the
    /// same directory again; an in-memory one discards its staged writes.
    fn reopen(&mut self, store: Self::Store) -> Self::Store;
}

/// Runs every case of the suite, each on a fresh store from
/// [`LogStoreHarness::open`]. Panics on the first failure; the name of the
/// case that was running is written to stderr beforehand (shown by the test
/// runner on failure).
pub async fn log_store_suite<H: LogStoreHarness>(harness: &mut H) {
    macro_rules! cases {
        ($($case:ident),* $(,)?) => {
            $(
                eprintln!("log_store_suite: {}", stringify!($case));
                $case(harness).await;
            )*
        };
    }
    cases!(
        empty_store_has_defaults,
        append_and_read_back,
        every_payload_round_trips,
        append_must_follow_the_last_index,
        owned_appends_are_appends,
        reads_are_bounded_by_max_bytes,
        reading_compacted_or_missing_entries_fails,
        truncate_removes_the_tail,
        truncate_of_flushed_entries,
        compact_within_the_log,
        compact_past_the_end_of_the_log,
        hard_state_round_trips,
        snapshots_are_saved_replaced_and_read,
        groups_are_independent_and_listed,
        staged_writes_are_visible_before_flush,
        flushed_writes_survive_reopen,
        unflushed_writes_are_lost_on_reopen,
        random_operations_match_a_model,
    );
}

/// Runs [`log_store_suite`] to completion on a current-thread Tokio runtime
/// of its own. Call it from a plain `#[test]`, not from inside a runtime.
pub fn run_log_store_suite<H: LogStoreHarness>(mut harness: H) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("log_store_suite: cannot build a Tokio runtime");
    runtime.block_on(log_store_suite(&mut harness));
}

// ---------------------------------------------------------------------------
// Helpers.

const G: GroupId = GroupId(1);

fn id(term: u64, index: u64) -> LogId {
    LogId::new(Term(term), LogIndex(index))
}

/// An entry carrying a command that names its position (11 to 20 bytes).
fn entry(term: u64, index: u64) -> Entry {
    Entry {
        id: id(term, index),
        timestamp: Hlc::new(1_000 + index, (term % 7) as u32),
        payload: Payload::Command(Bytes::from(format!("t{term}-i{index}"))),
    }
}

/// Entries `from..=to` in `term`.
fn run(term: u64, from: u64, to: u64) -> Vec<Entry> {
    (from..=to).map(|i| entry(term, i)).collect()
}

/// An entry whose [`Entry::size`] is exactly 34 bytes.
fn sized(term: u64, index: u64) -> Entry {
    Entry {
        id: id(term, index),
        timestamp: Hlc::default(),
        payload: Payload::Command(Bytes::from_static(b"0123456789")),
    }
}

fn hs(term: u64, vote: Option<u64>, commit: u64) -> HardState {
    HardState {
        term: Term(term),
        vote: vote.map(NodeId),
        commit: LogIndex(commit),
    }
}

fn snap(term: u64, index: u64, data: &[u8]) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            last: id(term, index),
            membership: Membership::new([1, 2, 3].map(NodeId)),
        },
        data: Bytes::copy_from_slice(data),
    }
}

fn indexes(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.id.index.0).collect()
}

fn read(store: &impl LogStore, group: GroupId, from: u64, to: u64) -> Vec<Entry> {
    store
        .entries(group, LogIndex(from)..LogIndex(to), usize::MAX)
        .unwrap_or_else(|e| panic!("reading {group} {from}..{to}: {e}"))
}

/// Every stored entry of the group, per its log state.
fn all(store: &impl LogStore, group: GroupId) -> Vec<Entry> {
    let state = store.log_state(group).expect("log_state");
    read(
        store,
        group,
        state.compacted.index.next().0,
        state.last.index.next().0,
    )
}

fn state(compacted: LogId, last: LogId) -> LogState {
    LogState { compacted, last }
}

async fn flush(store: &mut impl LogStore) {
    store.flush().await.unwrap_or_else(|e| panic!("flush: {e}"));
}

fn sorted_groups(store: &impl LogStore) -> Vec<GroupId> {
    let mut groups = store.groups().expect("groups");
    groups.sort();
    groups
}

/// Everything a store holds for one group.
#[derive(Clone, Debug, PartialEq, Eq)]
struct GroupImage {
    hard_state: HardState,
    log_state: LogState,
    entries: Vec<Entry>,
    snapshot: Option<Snapshot>,
}

fn image(store: &impl LogStore, group: GroupId) -> GroupImage {
    GroupImage {
        hard_state: store.hard_state(group).expect("hard_state"),
        log_state: store.log_state(group).expect("log_state"),
        entries: all(store, group),
        snapshot: store.snapshot(group).expect("snapshot"),
    }
}

/// Everything a store holds, by group.
fn images(store: &impl LogStore) -> BTreeMap<GroupId, GroupImage> {
    sorted_groups(store)
        .into_iter()
        .map(|g| (g, image(store, g)))
        .collect()
}

// ---------------------------------------------------------------------------
// Cases.

async fn empty_store_has_defaults<H: LogStoreHarness>(harness: &mut H) {
    let mut store = harness.open();
    assert!(store.groups().unwrap().is_empty());
    assert_eq!(store.hard_state(G).unwrap(), HardState::default());
    assert_eq!(store.log_state(G).unwrap(), LogState::default());
    assert_eq!(store.snapshot(G).unwrap(), None);
    assert!(read(&store, G, 1, 1).is_empty(), "an empty range is empty");
    // A flush with nothing staged succeeds, and a reopen keeps nothing.
    flush(&mut store).await;
    let store = harness.reopen(store);
    assert!(store.groups().unwrap().is_empty());
    assert_eq!(store.log_state(G).unwrap(), LogState::default());
}

async fn append_and_read_back<H: LogStoreHarness>(harness: &mut H) {
    let mut store = harness.open();
    store.append(G, &run(1, 1, 3)).unwrap();
    store.append(G, &run(2, 4, 5)).unwrap();
    assert_eq!(
        store.log_state(G).unwrap(),
        state(LogId::default(), id(2, 5))
    );
    assert_eq!(
        read(&store, G, 2, 5),
        [entry(1, 2), entry(1, 3), entry(2, 4)]
    );
    assert_eq!(all(&store, G), [run(1, 1, 3), run(2, 4, 5)].concat());
    assert!(read(&store, G, 3, 3).is_empty());

    // The same after a flush, and reads spanning flushed and staged entries.
    flush(&mut store).await;
    store.append(G, &run(2, 6, 8)).unwrap();
    assert_eq!(read(&store, G, 4, 8), [run(2, 4, 5), run(2, 6, 7)].concat());
    assert_eq!(read(&store, G, 7, 9), run(2, 7, 8));
    flush(&mut store).await;
    let store = harness.reopen(store);
    assert_eq!(all(&store, G), [run(1, 1, 3), run(2, 4, 8)].concat());
    assert_eq!(store.log_state(G).unwrap().last, id(2, 8));
}

async fn every_payload_round_trips<H: LogStoreHarness>(harness: &mut H) {
    let mut joint = Membership::new([4, 5, 6].map(NodeId));
    joint.outgoing = [1, 2, 3].map(NodeId).into_iter().collect();
    joint.learners = [7, u64::MAX].map(NodeId).into_iter().collect();
    let large: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let payloads = [
        Payload::Blank,
        Payload::Command(Bytes::new()),
        Payload::Command(Bytes::from_static(&[0, 0xff, 0, 0xff])),
        Payload::Command(Bytes::from(large)),
        Payload::Membership(Box::new(joint)),
        Payload::Membership(Box::default()),
    ];
    let entries: Vec<Entry> = payloads
        .into_iter()
        .enumerate()
        .map(|(i, payload)| Entry {
            id: id(u64::MAX - 10 + i as u64 / 2, i as u64 + 1),
            timestamp: Hlc::new(u64::MAX - i as u64, u32::MAX - i as u32),
            payload,
        })
        .collect();
    let mut store = harness.open();
    store.append(G, &entries).unwrap();
    assert_eq!(all(&store, G), entries);
    flush(&mut store).await;
    let store = harness.reopen(store);
    assert_eq!(all(&store, G), entries);
}

async fn append_must_follow_the_last_index<H: LogStoreHarness>(harness: &mut H) {
    let mut store = harness.open();
    let refused = |r: Result<(), StorageError>, last: u64, got: u64| match r {
        Err(StorageError::NotContiguous {
            group,
            last: l,
            got: g,
        }) => {
            assert_eq!((group, l, g), (G, LogIndex(last), LogIndex(got)));
        }
        other => panic!("expected NotContiguous {{ last: {last}, got: {got} }}, got {other:?}"),
    };
    refused(store.append(G, &run(1, 2, 3)), 0, 2);
    refused(store.append(G, &run(1, 0, 1)), 0, 0);
    store.append(G, &run(1, 1, 3)).unwrap();
    refused(store.append(G, &run(1, 5, 5)), 3, 5);
    refused(store.append(G, &run(1, 3, 4)), 3, 3);
    // A batch with a gap inside is refused as a whole (which `last` the
    // error names, the log's or the batch's, is up to the backend).
    assert!(matches!(
        store.append(G, &[entry(1, 4), entry(1, 6)]),
        Err(StorageError::NotContiguous {
            group: G,
            got: LogIndex(6),
            ..
        })
    ));
    assert_eq!(store.log_state(G).unwrap().last, id(1, 3));
    // An empty batch changes nothing.
    store.append(G, &[]).unwrap();
    assert_eq!(store.log_state(G).unwrap().last, id(1, 3));

    // The same against flushed entries and after a reopen.
    flush(&mut store).await;
    let mut store = harness.reopen(store);
    refused(store.append(G, &run(2, 5, 6)), 3, 5);
    store.append(G, &run(2, 4, 4)).unwrap();
    assert_eq!(store.log_state(G).unwrap().last, id(2, 4));

    // After a compaction past the end, the log continues after it.
    store.compact(G, id(3, 10)).unwrap();
    refused(store.append(G, &run(3, 5, 5)), 10, 5);
    store.append(G, &run(3, 11, 11)).unwrap();
    assert_eq!(all(&store, G), run(3, 11, 11));
}

/// `append_owned` is `append` taking the entries by value: the same reads,
/// the same refusals (nothing staged), the same durability, and the two
/// mix freely.
async fn owned_appends_are_appends<H: LogStoreHarness>(harness: &mut H) {
    let mut store = harness.open();
    store.append_owned(G, run(1, 1, 3)).unwrap();
    store.append(G, &run(1, 4, 4)).unwrap();
    store.append_owned(G, run(2, 5, 6)).unwrap();
    assert_eq!(all(&store, G), [run(1, 1, 4), run(2, 5, 6)].concat());
    assert_eq!(store.log_state(G).unwrap().last, id(2, 6));
    for (batch, got) in [
        (run(2, 8, 9), 8),
        (run(2, 6, 7), 6),
        (vec![entry(2, 7), entry(2, 9)], 9),
    ] {
        match store.append_owned(G, batch) {
            Err(StorageError::NotContiguous {
                group: G, got: g, ..
            }) => {
                assert_eq!(g, LogIndex(got));
            }
            other => panic!("expected NotContiguous for index {got}, got {other:?}"),
        }
    }
    store.append_owned(G, Vec::new()).unwrap();
    assert_eq!(store.log_state(G).unwrap().last, id(2, 6));
    assert_eq!(all(&store, G).len(), 6, "a refused batch stages nothing");

    // Flushed owned appends survive a reopen; unflushed ones are lost.
    flush(&mut store).await;
    store.append_owned(G, run(3, 7, 8)).unwrap();
    let mut store = harness.reopen(store);
    assert_eq!(all(&store, G), [run(1, 1, 4), run(2, 5, 6)].concat());
    store.append_owned(G, run(3, 7, 8)).unwrap();
    flush(&mut store).await;
    let store = harness.reopen(store);
    assert_eq!(
        all(&store, G),
        [run(1, 1, 4), run(2, 5, 6), run(3, 7, 8)].concat()
    );
}

async fn reads_are_bounded_by_max_bytes<H: LogStoreHarness>(harness: &mut H) {
    let mut store = harness.open();
    let batch = |from: u64, to: u64| (from..=to).map(|i| sized(1, i)).collect::<Vec<_>>();
    assert_eq!(sized(1, 1).size(), 34);
    store.append(G, &batch(1, 4)).unwrap();
    flush(&mut store).await;
    // 5..=8 staged on top of flushed 1..=4: reads cross the boundary.
    store.append(G, &batch(5, 8)).unwrap();
    let bounded = |store: &H::Store, from: u64, to: u64, max: usize| {
        indexes(
            &store
                .entries(G, LogIndex(from)..LogIndex(to), max)
                .unwrap_or_else(|e| panic!("entries {from}..{to} max {max}: {e}")),
        )
    };
    for _ in 0..2 {
        assert_eq!(bounded(&store, 1, 9, 0), [1], "at least one entry");
        assert_eq!(bounded(&store, 1, 9, 33), [1]);
        assert_eq!(bounded(&store, 1, 9, 34), [1]);
        assert_eq!(bounded(&store, 1, 9, 67), [1]);
        assert_eq!(bounded(&store, 1, 9, 68), [1, 2]);
        assert_eq!(bounded(&store, 3, 9, 3 * 34), [3, 4, 5]);
        assert_eq!(bounded(&store, 3, 9, 3 * 34 + 33), [3, 4, 5]);
        assert_eq!(bounded(&store, 5, 9, 0), [5]);
        assert_eq!(bounded(&store, 6, 8, 1000), [6, 7]);
        assert_eq!(bounded(&store, 1, 9, usize::MAX), [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(bounded(&store, 1, 9, 8 * 34), [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(bounded(&store, 1, 9, 8 * 34 - 1), [1, 2, 3, 4, 5, 6, 7]);
        // Once everything is flushed and reopened the answers are the same.
        flush(&mut store).await;
        store = harness.reopen(store);
    }
}

async fn reading_compacted_or_missing_entries_fails<H: LogStoreHarness>(harness: &mut H) {
    let mut store = harness.open();
    let unavailable = |r: Result<Vec<Entry>, StorageError>, last: u64, asked: u64| match r {
        Err(StorageError::Unavailable {
            group,
            last: l,
            asked: a,
        }) => assert_eq!((group, l, a), (G, LogIndex(last), LogIndex(asked))),
        other => panic!("expected Unavailable {{ last: {last}, asked: {asked} }}, got {other:?}"),
    };
    let compacted = |r: Result<Vec<Entry>, StorageError>, upto: u64, asked: u64| match r {
        Err(StorageError::Compacted {
            group,
            compacted: c,
            asked: a,
        }) => assert_eq!((group, c, a), (G, LogIndex(upto), LogIndex(asked))),
        other => {
            panic!("expected Compacted {{ compacted: {upto}, asked: {asked} }}, got {other:?}")
        }
    };
    let get = |store: &H::Store, from: u64, to: u64| {
        store.entries(G, LogIndex(from)..LogIndex(to), usize::MAX)
    };

    unavailable(get(&store, 1, 2), 0, 1);
    store.append(G, &run(1, 1, 6)).unwrap();
    unavailable(get(&store, 5, 8), 6, 7);
    unavailable(get(&store, 7, 8), 6, 7);
    // Index 0 is never an entry.
    compacted(get(&store, 0, 2), 0, 0);
    store.compact(G, id(1, 3)).unwrap();
    compacted(get(&store, 3, 5), 3, 3);
    compacted(get(&store, 1, 2), 3, 1);
    assert_eq!(indexes(&read(&store, G, 4, 7)), [4, 5, 6]);

    // The same with everything flushed and reopened.
    flush(&mut store).await;
    let store = harness.reopen(store);
    compacted(get(&store, 3, 5), 3, 3);
    unavailable(get(&store, 6, 9), 6, 8);
    assert_eq!(indexes(&read(&store, G, 4, 7)), [4, 5, 6]);
    // Another group has nothing.
    assert!(matches!(
        store.entries(GroupId(2), LogIndex(1)..LogIndex(2), usize::MAX),
        Err(StorageError::Unavailable { .. })
    ));
}

async fn truncate_removes_the_tail<H: LogStoreHarness>(harness: &mut H) {
    let mut store = harness.open();
    store.append(G, &run(1, 1, 6)).unwrap();
    store.truncate(G, LogIndex(4)).unwrap();
    assert_eq!(store.log_state(G).unwrap().last, id(1, 3));
    assert_eq!(all(&store, G), run(1, 1, 3));
    assert!(store.entries(G, LogIndex(4)..LogIndex(5), 100).is_err());
    // Entries of a new term replace the removed ones.
    store.append(G, &run(2, 4, 5)).unwrap();
    assert_eq!(all(&store, G), [run(1, 1, 3), run(2, 4, 5)].concat());
    // Truncating past the end changes nothing.
    store.truncate(G, LogIndex(6)).unwrap();
    store.truncate(G, LogIndex(60)).unwrap();
    assert_eq!(store.log_state(G).unwrap().last, id(2, 5));
    // Truncating everything leaves an empty log after the compaction point.
    store.truncate(G, LogIndex(1)).unwrap();
    assert_eq!(store.log_state(G).unwrap(), LogState::default());
    assert!(all(&store, G).is_empty());
    store.append(G, &run(3, 1, 2)).unwrap();

    // Truncating at or below the compaction point is refused.
    store.append(G, &run(3, 3, 5)).unwrap();
    store.compact(G, id(3, 2)).unwrap();
    assert!(store.truncate(G, LogIndex(2)).is_err());
    assert!(store.truncate(G, LogIndex(1)).is_err());
    assert_eq!(all(&store, G), run(3, 3, 5));
    store.truncate(G, LogIndex(3)).unwrap();
    assert_eq!(store.log_state(G).unwrap(), state(id(3, 2), id(3, 2)));
    store.append(G, &run(4, 3, 3)).unwrap();
    flush(&mut store).await;
    let store = harness.reopen(store);
    assert_eq!(store.log_state(G).unwrap(), state(id(3, 2), id(4, 3)));
    assert_eq!(all(&store, G), run(4, 3, 3));
}

async fn truncate_of_flushed_entries<H: LogStoreHarness>(harness: &mut H) {
    let mut store = harness.open();
    store.append(G, &run(1, 1, 8)).unwrap();
    flush(&mut store).await;
    // Staged: truncate into the flushed entries, append over them, then
    // truncate again inside the new staged ones.
    store.truncate(G, LogIndex(5)).unwrap();
    assert_eq!(store.log_state(G).unwrap().last, id(1, 4));
    store.append(G, &run(2, 5, 9)).unwrap();
    store.truncate(G, LogIndex(7)).unwrap();
    assert_eq!(store.log_state(G).unwrap().last, id(2, 6));
    let expected = [run(1, 1, 4), run(2, 5, 6)].concat();
    assert_eq!(all(&store, G), expected);

    // Not flushed: a reopen brings the old entries back.
    let mut store = harness.reopen(store);
    assert_eq!(all(&store, G), run(1, 1, 8));

    // Flushed: the removed entries stay removed, even where nothing replaced
    // them.
    store.truncate(G, LogIndex(5)).unwrap();
    store.append(G, &run(2, 5, 6)).unwrap();
    flush(&mut store).await;
    let mut store = harness.reopen(store);
    assert_eq!(store.log_state(G).unwrap().last, id(2, 6));
    assert_eq!(all(&store, G), expected);
    assert!(store.entries(G, LogIndex(7)..LogIndex(8), 100).is_err());
    store.truncate(G, LogIndex(3)).unwrap();
    flush(&mut store).await;
    let store = harness.reopen(store);
    assert_eq!(all(&store, G), run(1, 1, 2));
    assert_eq!(store.log_state(G).unwrap().last, id(1, 2));
}

async fn compact_within_the_log<H: LogStoreHarness>(harness: &mut H) {
    let mut store = harness.open();
    store.append(G, &run(1, 1, 4)).unwrap();
    flush(&mut store).await;
    store.append(G, &run(2, 5, 8)).unwrap();
    // Compacting flushed entries.
    store.compact(G, id(1, 2)).unwrap();
    assert_eq!(store.log_state(G).unwrap(), state(id(1, 2), id(2, 8)));
    assert_eq!(all(&store, G), [run(1, 3, 4), run(2, 5, 8)].concat());
    // Compacting into staged entries.
    store.compact(G, id(2, 6)).unwrap();
    assert_eq!(store.log_state(G).unwrap(), state(id(2, 6), id(2, 8)));
    assert_eq!(all(&store, G), run(2, 7, 8));
    // At or before the compaction point: nothing happens.
    store.compact(G, id(2, 6)).unwrap();
    store.compact(G, id(1, 3)).unwrap();
    store.compact(G, LogId::default()).unwrap();
    assert_eq!(store.log_state(G).unwrap(), state(id(2, 6), id(2, 8)));
    // Up to the last entry: the log is empty and continues after it.
    store.compact(G, id(2, 8)).unwrap();
    assert_eq!(store.log_state(G).unwrap(), state(id(2, 8), id(2, 8)));
    assert!(all(&store, G).is_empty());
    store.append(G, &run(3, 9, 10)).unwrap();

    flush(&mut store).await;
    let mut store = harness.reopen(store);
    assert_eq!(store.log_state(G).unwrap(), state(id(2, 8), id(3, 10)));
    assert_eq!(all(&store, G), run(3, 9, 10));
    // A compaction that was not flushed is undone by a reopen.
    store.compact(G, id(3, 9)).unwrap();
    let store = harness.reopen(store);
    assert_eq!(store.log_state(G).unwrap(), state(id(2, 8), id(3, 10)));
    assert_eq!(all(&store, G), run(3, 9, 10));
}

async fn compact_past_the_end_of_the_log<H: LogStoreHarness>(harness: &mut H) {
    let mut store = harness.open();
    store.append(G, &run(1, 1, 3)).unwrap();
    flush(&mut store).await;
    store.append(G, &run(1, 4, 5)).unwrap();
    // A follower installing a snapshot past its log.
    store.compact(G, id(4, 20)).unwrap();
    assert_eq!(store.log_state(G).unwrap(), state(id(4, 20), id(4, 20)));
    assert!(all(&store, G).is_empty());
    assert!(matches!(
        store.entries(G, LogIndex(3)..LogIndex(4), 100),
        Err(StorageError::Compacted { .. })
    ));
    store.append(G, &run(4, 21, 22)).unwrap();
    flush(&mut store).await;
    let mut store = harness.reopen(store);
    assert_eq!(store.log_state(G).unwrap(), state(id(4, 20), id(4, 22)));
    assert_eq!(all(&store, G), run(4, 21, 22));

    // On a group that never had an entry.
    let other = GroupId(9);
    store.compact(other, id(2, 7)).unwrap();
    assert_eq!(store.log_state(other).unwrap(), state(id(2, 7), id(2, 7)));
    flush(&mut store).await;
    let mut store = harness.reopen(store);
    assert_eq!(store.log_state(other).unwrap(), state(id(2, 7), id(2, 7)));
    store.append(other, &run(2, 8, 8)).unwrap();
    assert_eq!(all(&store, other), run(2, 8, 8));

    // After a truncation, right past the new end.
    store.truncate(G, LogIndex(22)).unwrap();
    store.compact(G, id(5, 23)).unwrap();
    assert_eq!(store.log_state(G).unwrap(), state(id(5, 23), id(5, 23)));
    flush(&mut store).await;
    let store = harness.reopen(store);
    assert_eq!(store.log_state(G).unwrap(), state(id(5, 23), id(5, 23)));
    assert!(all(&store, G).is_empty());
}

async fn hard_state_round_trips<H: LogStoreHarness>(harness: &mut H) {
    let mut store = harness.open();
    store.save_hard_state(G, hs(1, Some(2), 0)).unwrap();
    assert_eq!(store.hard_state(G).unwrap(), hs(1, Some(2), 0));
    store.save_hard_state(G, hs(2, None, 5)).unwrap();
    assert_eq!(store.hard_state(G).unwrap(), hs(2, None, 5));
    assert_eq!(store.groups().unwrap(), [G]);
    // Saving a hard state touches nothing else.
    assert_eq!(store.log_state(G).unwrap(), LogState::default());
    assert_eq!(store.snapshot(G).unwrap(), None);
    flush(&mut store).await;
    let mut store = harness.reopen(store);
    assert_eq!(store.hard_state(G).unwrap(), hs(2, None, 5));
    store
        .save_hard_state(G, hs(u64::MAX, Some(u64::MAX), u64::MAX))
        .unwrap();
    flush(&mut store).await;
    let store = harness.reopen(store);
    assert_eq!(
        store.hard_state(G).unwrap(),
        hs(u64::MAX, Some(u64::MAX), u64::MAX)
    );
    assert_eq!(store.hard_state(GroupId(2)).unwrap(), HardState::default());
}

async fn snapshots_are_saved_replaced_and_read<H: LogStoreHarness>(harness: &mut H) {
    let mut store = harness.open();
    let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect();
    store.save_snapshot(G, &snap(1, 3, b"first")).unwrap();
    assert_eq!(store.snapshot(G).unwrap(), Some(snap(1, 3, b"first")));
    assert_eq!(store.groups().unwrap(), [G]);
    // Saving a snapshot touches neither the log nor the hard state.
    assert_eq!(store.log_state(G).unwrap(), LogState::default());
    assert_eq!(store.hard_state(G).unwrap(), HardState::default());
    // Replaced before a flush.
    store.save_snapshot(G, &snap(2, 8, &big)).unwrap();
    assert_eq!(store.snapshot(G).unwrap(), Some(snap(2, 8, &big)));
    flush(&mut store).await;
    let mut store = harness.reopen(store);
    assert_eq!(store.snapshot(G).unwrap(), Some(snap(2, 8, &big)));

    // Replaced after a flush; an unflushed replacement is lost on reopen.
    store.save_snapshot(G, &snap(3, 9, b"")).unwrap();
    assert_eq!(store.snapshot(G).unwrap(), Some(snap(3, 9, b"")));
    let mut store = harness.reopen(store);
    assert_eq!(store.snapshot(G).unwrap(), Some(snap(2, 8, &big)));
    store.save_snapshot(G, &snap(3, 9, b"")).unwrap();
    store
        .save_snapshot(GroupId(2), &snap(1, 1, b"other"))
        .unwrap();
    flush(&mut store).await;
    let store = harness.reopen(store);
    assert_eq!(store.snapshot(G).unwrap(), Some(snap(3, 9, b"")));
    assert_eq!(
        store.snapshot(GroupId(2)).unwrap(),
        Some(snap(1, 1, b"other"))
    );
    assert_eq!(store.snapshot(GroupId(3)).unwrap(), None);
    assert_eq!(sorted_groups(&store), [G, GroupId(2)]);
}

async fn groups_are_independent_and_listed<H: LogStoreHarness>(harness: &mut H) {
    let (a, b, c, d) = (GroupId(0), GroupId(7), GroupId(u64::MAX), GroupId(3));
    let mut store = harness.open();
    store.append(a, &run(1, 1, 5)).unwrap();
    store.append(b, &run(2, 1, 2)).unwrap();
    store.append(c, &run(3, 1, 3)).unwrap();
    store.save_hard_state(d, hs(4, Some(1), 0)).unwrap();
    store.truncate(a, LogIndex(4)).unwrap();
    store.compact(c, id(3, 2)).unwrap();
    store.save_hard_state(b, hs(2, Some(2), 1)).unwrap();
    store.save_snapshot(c, &snap(3, 2, b"c")).unwrap();
    // Each log continues from its own last index.
    assert!(matches!(
        store.append(b, &run(2, 4, 4)),
        Err(StorageError::NotContiguous { group, .. }) if group == b
    ));

    let check = |store: &H::Store| {
        assert_eq!(sorted_groups(store), [a, d, b, c]);
        assert_eq!(all(store, a), run(1, 1, 3));
        assert_eq!(all(store, b), run(2, 1, 2));
        assert_eq!(all(store, c), run(3, 3, 3));
        assert!(all(store, d).is_empty());
        assert_eq!(store.log_state(c).unwrap().compacted, id(3, 2));
        assert_eq!(store.log_state(a).unwrap().compacted, LogId::default());
        assert_eq!(store.hard_state(a).unwrap(), HardState::default());
        assert_eq!(store.hard_state(b).unwrap(), hs(2, Some(2), 1));
        assert_eq!(store.hard_state(d).unwrap(), hs(4, Some(1), 0));
        assert_eq!(store.snapshot(c).unwrap(), Some(snap(3, 2, b"c")));
        assert_eq!(store.snapshot(a).unwrap(), None);
    };
    check(&store);
    flush(&mut store).await;
    let mut store = harness.reopen(store);
    check(&store);
    // Unflushed writes to one group do not disturb the others' durable data.
    store.append(a, &run(1, 4, 9)).unwrap();
    store.truncate(b, LogIndex(1)).unwrap();
    store.append(GroupId(5), &run(1, 1, 1)).unwrap();
    let store = harness.reopen(store);
    check(&store);
}

async fn staged_writes_are_visible_before_flush<H: LogStoreHarness>(harness: &mut H) {
    let mut store = harness.open();
    store.save_hard_state(G, hs(3, Some(1), 2)).unwrap();
    store.append(G, &run(3, 1, 4)).unwrap();
    store.compact(G, id(3, 1)).unwrap();
    store.truncate(G, LogIndex(4)).unwrap();
    store.save_snapshot(G, &snap(3, 1, b"s")).unwrap();
    // Every read sees every write, with no flush in between.
    assert_eq!(store.groups().unwrap(), [G]);
    assert_eq!(store.hard_state(G).unwrap(), hs(3, Some(1), 2));
    assert_eq!(store.log_state(G).unwrap(), state(id(3, 1), id(3, 3)));
    assert_eq!(all(&store, G), run(3, 2, 3));
    assert_eq!(store.snapshot(G).unwrap(), Some(snap(3, 1, b"s")));
}

async fn flushed_writes_survive_reopen<H: LogStoreHarness>(harness: &mut H) {
    let mut store = harness.open();
    for g in 0..4u64 {
        let group = GroupId(g);
        store.append(group, &run(1, 1, 10 + g)).unwrap();
        store.save_hard_state(group, hs(g + 1, Some(g), g)).unwrap();
    }
    flush(&mut store).await;
    // A second round with every kind of write, several groups in one flush.
    store.truncate(GroupId(0), LogIndex(6)).unwrap();
    store.append(GroupId(0), &run(2, 6, 7)).unwrap();
    store.compact(GroupId(1), id(1, 4)).unwrap();
    store.compact(GroupId(2), id(5, 40)).unwrap();
    store
        .save_snapshot(GroupId(2), &snap(5, 40, b"image"))
        .unwrap();
    store.save_hard_state(GroupId(3), hs(9, None, 13)).unwrap();
    let before = images(&store);
    flush(&mut store).await;
    assert_eq!(images(&store), before, "a flush changes nothing visible");
    let store = harness.reopen(store);
    assert_eq!(images(&store), before);
    let store = harness.reopen(store);
    assert_eq!(images(&store), before, "a second reopen changes nothing");
}

async fn unflushed_writes_are_lost_on_reopen<H: LogStoreHarness>(harness: &mut H) {
    let mut store = harness.open();
    store.save_hard_state(G, hs(1, Some(1), 2)).unwrap();
    store.append(G, &run(1, 1, 6)).unwrap();
    store.compact(G, id(1, 1)).unwrap();
    store.save_snapshot(G, &snap(1, 1, b"old")).unwrap();
    flush(&mut store).await;
    let durable = images(&store);

    // Every kind of write, staged and lost.
    store.save_hard_state(G, hs(2, None, 4)).unwrap();
    store.truncate(G, LogIndex(5)).unwrap();
    store.append(G, &run(2, 5, 8)).unwrap();
    store.compact(G, id(1, 3)).unwrap();
    store.save_snapshot(G, &snap(1, 3, b"new")).unwrap();
    store.append(GroupId(2), &run(1, 1, 1)).unwrap();
    store.save_hard_state(GroupId(3), hs(1, None, 0)).unwrap();
    store.compact(GroupId(4), id(1, 9)).unwrap();
    store.save_snapshot(GroupId(5), &snap(1, 1, b"s")).unwrap();
    assert_eq!(sorted_groups(&store).len(), 5);
    let mut store = harness.reopen(store);
    assert_eq!(images(&store), durable);

    // A flush after the reopen does not resurrect them either.
    flush(&mut store).await;
    let store = harness.reopen(store);
    assert_eq!(images(&store), durable);
}

// ---------------------------------------------------------------------------
// Random operations against a reference model.

/// splitmix64: a tiny deterministic generator, enough for test schedules.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A number in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

/// The reference model of one group: the contract of [`LogStore`], written
/// as plainly as possible.
#[derive(Clone, Debug, Default)]
struct ModelGroup {
    hard_state: HardState,
    compacted: LogId,
    entries: Vec<Entry>,
    snapshot: Option<Snapshot>,
}

impl ModelGroup {
    fn last(&self) -> LogId {
        self.entries.last().map_or(self.compacted, |e| e.id)
    }

    fn image(&self) -> GroupImage {
        GroupImage {
            hard_state: self.hard_state,
            log_state: state(self.compacted, self.last()),
            entries: self.entries.clone(),
            snapshot: self.snapshot.clone(),
        }
    }

    /// Entries `from..to` (within the log) bounded by `max_bytes`.
    fn read(&self, from: u64, to: u64, max_bytes: usize) -> Vec<Entry> {
        let base = self.compacted.index.0 + 1;
        let mut out = Vec::new();
        let mut total = 0usize;
        for e in &self.entries[(from - base) as usize..(to - base) as usize] {
            if !out.is_empty() && total.saturating_add(e.size()) > max_bytes {
                break;
            }
            total = total.saturating_add(e.size());
            out.push(e.clone());
        }
        out
    }
}

async fn random_operations_match_a_model<H: LogStoreHarness>(harness: &mut H) {
    const GROUPS: u64 = 4;
    const STEPS: usize = 600;
    let mut rng = Rng(0x5eed_1064_5704_e001);
    let mut store = harness.open();
    let mut view: BTreeMap<GroupId, ModelGroup> = BTreeMap::new();
    let mut durable = view.clone();
    let check_all = |store: &H::Store, view: &BTreeMap<GroupId, ModelGroup>, step: usize| {
        let expected: BTreeMap<GroupId, GroupImage> =
            view.iter().map(|(&g, m)| (g, m.image())).collect();
        assert_eq!(images(store), expected, "step {step}: whole store");
    };

    for step in 0..STEPS {
        let group = GroupId(rng.below(GROUPS));
        let model = view.get(&group).cloned().unwrap_or_default();
        let last = model.last();
        let compacted = model.compacted;
        match rng.below(100) {
            0..=34 => {
                let count = rng.between(1, 4);
                let term = last.term.0.max(1) + rng.below(2);
                let batch: Vec<Entry> = (1..=count)
                    .map(|k| {
                        let index = last.index.0 + k;
                        let len = rng.below(60) as usize;
                        Entry {
                            id: id(term, index),
                            timestamp: Hlc::new(rng.below(1 << 40), rng.below(9) as u32),
                            payload: match rng.below(8) {
                                0 => Payload::Blank,
                                1 => Payload::Membership(Box::new(Membership::new(
                                    (1..=rng.between(1, 5)).map(NodeId),
                                ))),
                                _ => Payload::Command(Bytes::from(vec![step as u8; len])),
                            },
                        }
                    })
                    .collect();
                if step % 2 == 0 {
                    store.append(group, &batch).unwrap();
                } else {
                    store.append_owned(group, batch.clone()).unwrap();
                }
                view.entry(group).or_default().entries.extend(batch);
            }
            35..=44 if compacted.index < last.index => {
                let from = rng.between(compacted.index.0 + 1, last.index.0 + 1);
                store.truncate(group, LogIndex(from)).unwrap();
                let m = view.entry(group).or_default();
                m.entries.truncate((from - compacted.index.0 - 1) as usize);
            }
            45..=54 if compacted.index < last.index => {
                let at = rng.between(compacted.index.0 + 1, last.index.0);
                let m = view.entry(group).or_default();
                let upto = m.entries[(at - compacted.index.0 - 1) as usize].id;
                store.compact(group, upto).unwrap();
                m.entries.drain(..(at - compacted.index.0) as usize);
                m.compacted = upto;
            }
            55..=57 => {
                let upto = id(last.term.0 + 1, last.index.0 + rng.between(1, 3));
                store.compact(group, upto).unwrap();
                let m = view.entry(group).or_default();
                m.entries.clear();
                m.compacted = upto;
            }
            58..=67 => {
                let state = HardState {
                    term: Term(model.hard_state.term.0 + rng.below(2)),
                    vote: rng.below(2).eq(&0).then(|| NodeId(rng.below(5))),
                    commit: LogIndex(rng.below(last.index.0 + 1)),
                };
                store.save_hard_state(group, state).unwrap();
                view.entry(group).or_default().hard_state = state;
            }
            68..=72 => {
                let len = rng.below(3000) as usize;
                let data: Vec<u8> = (0..len).map(|i| (i as u64 + step as u64) as u8).collect();
                let snapshot = snap(last.term.0, last.index.0, &data);
                store.save_snapshot(group, &snapshot).unwrap();
                view.entry(group).or_default().snapshot = Some(snapshot);
            }
            73..=87 if compacted.index < last.index => {
                let from = rng.between(compacted.index.0 + 1, last.index.0);
                let to = rng.between(from, last.index.0) + 1;
                let max_bytes = match rng.below(3) {
                    0 => 0,
                    1 => rng.below(200) as usize,
                    _ => usize::MAX,
                };
                let got = store
                    .entries(group, LogIndex(from)..LogIndex(to), max_bytes)
                    .unwrap_or_else(|e| panic!("step {step}: entries {from}..{to}: {e}"));
                assert_eq!(
                    got,
                    model.read(from, to, max_bytes),
                    "step {step}: {group} entries {from}..{to} max {max_bytes}"
                );
            }
            88..=94 => {
                flush(&mut store).await;
                durable = view.clone();
                check_all(&store, &view, step);
            }
            95..=99 => {
                store = harness.reopen(store);
                view = durable.clone();
                check_all(&store, &view, step);
            }
            _ => {}
        }
        let expected = view.get(&group).map(ModelGroup::image);
        let present: BTreeSet<GroupId> = store.groups().unwrap().into_iter().collect();
        assert_eq!(
            present,
            view.keys().copied().collect::<BTreeSet<_>>(),
            "step {step}: groups"
        );
        if let Some(expected) = expected {
            assert_eq!(image(&store, group), expected, "step {step}: {group}");
        }
    }
    flush(&mut store).await;
    let store = harness.reopen(store);
    check_all(&store, &view, STEPS);
}
