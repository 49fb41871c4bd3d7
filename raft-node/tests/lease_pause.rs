//! Case 7, a lease read after a pause: a leader whose consensus loop stood
//! still for longer than its lease (a stopped process, a blocked thread)
//! must judge the lease by the clock of the turn that takes the read, not by
//! the last tick before the pause. Otherwise it serves a read from a state a
//! newer leader has already overwritten.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use common::{Cluster, G, get, leader_among, put_retrying};
use raft_api::NodeId;
use raft_node::driver::Consistency;

/// How long the old leader's loop stands still: several leases (each
/// 150 - 50 ms in the tests' configuration).
const PAUSE: Duration = Duration::from_millis(1200);

/// Rounds of the scenario: each may take the read before the loop's first
/// tick after the pause, the order that exposes a stale clock.
const ROUNDS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn case_7_no_stale_lease_read_after_the_leader_loop_stood_still() {
    let c = Cluster::start(&[1, 2, 3], &[1, 2, 3]).await;
    for round in 0..ROUNDS {
        let old = c.leader(G).await.0;
        let old_node = c.node(old);
        let before = format!("before-{round}");
        put_retrying(&old_node, G, "k", &before).await;
        // The lease holds: a confirmed round just answered the write.
        assert_eq!(
            get(&old_node, G, "k", Consistency::Lease).await,
            Some(Bytes::from(before.clone()))
        );

        // Stand the old leader's loop still: its next write to the store
        // blocks on the store's lock, held here on a thread of its own.
        let store = c.stores[&old].clone();
        let (locked_tx, locked_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            store.while_locked(|| {
                locked_tx.send(()).unwrap();
                release_rx.recv().unwrap();
            });
        });
        locked_rx.recv().unwrap();
        c.net.isolate(NodeId(old));
        let stuck = old_node.clone();
        let blocked = tokio::spawn(async move {
            let _ = common::put(&stuck, G, "k", "lost").await;
        });

        // The others elect a new leader, which overwrites the key.
        let others: Vec<u64> = [1, 2, 3].into_iter().filter(|&n| n != old).collect();
        let new = leader_among(&c, &others, G).await;
        let after = format!("after-{round}");
        put_retrying(&c.node(new), G, "k", &after).await;

        // A lease read on the old leader, asked after the overwrite was
        // acknowledged, taken once its loop moves again.
        let reader = old_node.clone();
        let read = tokio::spawn(async move {
            let k = b"k".to_vec();
            reader
                .read_with(
                    G,
                    Consistency::Lease,
                    move |kv: &storage_mem::KvStateMachine| kv.get(&k),
                )
                .await
        });
        tokio::time::sleep(PAUSE).await;
        release_tx.send(()).unwrap();
        holder.join().unwrap();

        // Refused or timed out is right too: the lease had run out.
        if let Ok(value) = read.await.unwrap() {
            assert_eq!(
                value,
                Some(Bytes::from(after.clone())),
                "round {round}: node {old} served a lease read from before the pause"
            );
        }
        blocked.await.unwrap();
        c.net.heal();
        // The old leader catches up before the next round.
        common::eventually("the old leader catches up", || {
            let node = c.node(old);
            let after = after.clone();
            async move {
                common::stale_value(&node, G, "k").await == Some(Some(Bytes::from(after)))
            }
        })
        .await;
    }
    c.shutdown().await;
}
