//! Runs the `LogStore` conformance suite of `raft-api` against
//! [`LmdbLogStore`]. A "reopen" drops the store (closing the environment
//! without a flush) and opens its directory again.

use raft_api::testkit::log_store::{LogStoreHarness, run_log_store_suite};
use storage_lmdb::{LmdbLogStore, LmdbOptions};
use tempfile::TempDir;

struct LmdbHarness {
    root: TempDir,
    stores: u32,
    options: LmdbOptions,
}

impl LmdbHarness {
    fn new(options: LmdbOptions) -> Self {
        Self {
            root: tempfile::tempdir().expect("temporary directory"),
            stores: 0,
            options,
        }
    }
}

impl LogStoreHarness for LmdbHarness {
    type Store = LmdbLogStore;

    fn open(&mut self) -> LmdbLogStore {
        self.stores += 1;
        let dir = self.root.path().join(format!("store-{}", self.stores));
        LmdbLogStore::open(&dir, self.options.clone()).expect("open a new store")
    }

    fn reopen(&mut self, store: LmdbLogStore) -> LmdbLogStore {
        let dir = store.path().to_path_buf();
        drop(store);
        let store = LmdbLogStore::open(&dir, self.options.clone()).expect("reopen the store");
        store.verify().expect("the reopened store verifies");
        store
    }
}

#[test]
fn lmdb_log_store_passes_the_log_store_suite() {
    run_log_store_suite(LmdbHarness::new(LmdbOptions::new(1)));
}

/// The same without the journal (every flush an LMDB commit), with a map
/// that starts at 1 MiB and must grow many times (the suite writes a few
/// megabytes in total).
#[test]
fn lmdb_log_store_passes_the_suite_without_journal_and_with_a_small_growing_map() {
    run_log_store_suite(LmdbHarness::new(LmdbOptions {
        initial_map_size: 1 << 20,
        max_map_size: 1 << 30,
        verify_on_open: true,
        checkpoint_bytes: 0,
        ..LmdbOptions::new(2)
    }));
}

/// The same with a journal so small that flushes alternate between
/// journal records and checkpoints.
#[test]
fn lmdb_log_store_passes_the_suite_with_frequent_checkpoints() {
    run_log_store_suite(LmdbHarness::new(LmdbOptions {
        checkpoint_bytes: 4096,
        ..LmdbOptions::new(3)
    }));
}
