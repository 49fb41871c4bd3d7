//! End-to-end: 3 `raft-kv serve` processes over TCP with LMDB, the clients
//! reading with leases (`consistency=lease`), under kills, pauses (longer
//! than any lease) and partitions; the client history must be
//! linearizable.

mod e2e;

use e2e::scenario::{Scenario, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_lmdb_3_nodes_lease_reads_linearizable() {
    run(Scenario {
        transport: "tcp",
        storage: "lmdb",
        nodes: 3,
        partitions: 1,
        reads: "lease",
        clients: 4,
        keys: 4,
    })
    .await;
}
