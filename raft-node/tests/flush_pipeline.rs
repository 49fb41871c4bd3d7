//! The node's loop keeps working while a flush is under way, and still
//! sends nothing that promises durability before the flush that makes it
//! true.

mod common;

use std::time::Duration;

use common::{Cluster, G, get, put};
use raft_node::driver::Consistency;

/// A leader whose own disk stalls still commits with its two followers
/// (a quorum without it), applies and answers: its loop takes their
/// acknowledgements while its flush waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_commits_with_its_followers_while_its_own_flush_waits() {
    let cluster = Cluster::start(&[1, 2, 3], &[1, 2, 3]).await;
    let leader = cluster.leader(G).await.0;
    let node = cluster.node(leader);
    put(&node, G, "before", "1").await.unwrap();

    cluster.stores[&leader].hold_flushes();
    let written = tokio::time::timeout(Duration::from_secs(2), async {
        for i in 0..20 {
            put(&node, G, &format!("k{i}"), "v").await.unwrap();
        }
    })
    .await;
    assert!(
        written.is_ok(),
        "writes did not commit while the leader's flush waited"
    );
    assert_eq!(
        get(&node, G, "k19", Consistency::Linearizable)
            .await
            .as_deref(),
        Some(&b"v"[..])
    );

    // Once the disk is back, the writes held meanwhile are made durable.
    let before = cluster.stores[&leader].flushes();
    cluster.stores[&leader].release_flushes();
    common::eventually("the leader flushes again", || {
        let after = cluster.stores[&leader].flushes();
        async move { after > before }
    })
    .await;
    put(&node, G, "after", "1").await.unwrap();
    cluster.shutdown().await;
}

/// With both followers' disks stalled, a write cannot commit: their
/// acknowledgements wait for their flushes, even though their loops go
/// on. It commits as soon as one of them flushes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledgement_leaves_before_its_flush() {
    let cluster = Cluster::start(&[1, 2, 3], &[1, 2, 3]).await;
    let leader = cluster.leader(G).await.0;
    let node = cluster.node(leader);
    put(&node, G, "before", "1").await.unwrap();
    let followers: Vec<u64> = [1, 2, 3].into_iter().filter(|&n| n != leader).collect();
    for f in &followers {
        cluster.stores[f].hold_flushes();
    }

    let write = tokio::spawn({
        let node = node.clone();
        async move { put(&node, G, "held", "1").await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !write.is_finished(),
        "a write committed while no follower had flushed it"
    );
    // Heartbeats still flow meanwhile: nobody started an election.
    assert_eq!(cluster.leader(G).await.0, leader);

    cluster.stores[&followers[0]].release_flushes();
    let result = tokio::time::timeout(Duration::from_secs(2), write)
        .await
        .expect("the write commits once a follower flushed")
        .expect("task");
    assert_eq!(result, Ok(()));
    cluster.stores[&followers[1]].release_flushes();
    cluster.shutdown().await;
}
