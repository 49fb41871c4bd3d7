//! End-to-end: 3 `raft-kv serve` processes over TCP with LMDB, with
//! linearizable reads, under kills, pauses and partitions; the client
//! history must be linearizable. (Built with the test-only feature
//! `__broken_local_reads`, this test must fail.)

mod e2e;

use e2e::scenario::{Scenario, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_lmdb_3_nodes_linearizable() {
    run(Scenario {
        transport: "tcp",
        storage: "lmdb",
        nodes: 3,
        partitions: 1,
        reads: "linearizable",
        clients: 4,
        keys: 4,
    })
    .await;
}
