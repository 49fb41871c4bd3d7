//! End-to-end: 5 `raft-kv serve` processes over TCP with LMDB hosting two
//! partitions, under kills, pauses and partitions (3|2 splits among them);
//! the client history must be linearizable.

mod e2e;

use e2e::scenario::{Scenario, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_lmdb_5_nodes_2_partitions_linearizable() {
    run(Scenario {
        transport: "tcp",
        storage: "lmdb",
        nodes: 5,
        partitions: 2,
        reads: "linearizable",
        clients: 5,
        keys: 6,
    })
    .await;
}
