//! Runs the `LogStore` conformance suite of `raft-api` against
//! [`MemLogStore`]. A "reopen" is a simulated crash: the store keeps its
//! durable copy and loses what was staged since the last flush.

use raft_api::testkit::log_store::{LogStoreHarness, run_log_store_suite};
use storage_mem::MemLogStore;

struct MemHarness;

impl LogStoreHarness for MemHarness {
    type Store = MemLogStore;

    fn open(&mut self) -> MemLogStore {
        MemLogStore::new()
    }

    fn reopen(&mut self, mut store: MemLogStore) -> MemLogStore {
        store.crash();
        store
    }
}

#[test]
fn mem_log_store_passes_the_log_store_suite() {
    run_log_store_suite(MemHarness);
}
