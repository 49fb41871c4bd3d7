//! End-to-end: 3 `raft-kv serve` processes over QUIC (mutual TLS) with
//! LMDB, under kills, pauses and partitions (a UDP fault proxy between
//! every pair); the client history must be linearizable.

mod e2e;

use e2e::scenario::{Scenario, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_lmdb_3_nodes_linearizable() {
    run(Scenario {
        transport: "quic",
        storage: "lmdb",
        nodes: 3,
        partitions: 1,
        reads: "linearizable",
        clients: 4,
        keys: 4,
    })
    .await;
}
