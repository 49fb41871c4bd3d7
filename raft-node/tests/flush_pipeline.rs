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

/// A group removed while its writes wait for a flush, and created again
/// under the same id, starts from what the store holds: the writes that
/// were not yet staged are dropped with the old group, not written behind
/// the new one's back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_removed_and_created_again_during_a_flush_starts_from_the_store() {
    use raft_api::{GroupId, NodeId};
    let g2 = GroupId(2);
    let cluster = Cluster::start(&[1], &[1]).await;
    let node = cluster.node(1);
    node.create_group(g2, vec![NodeId(1)]).await.unwrap();
    common::eventually("node 1 leads group 2", || {
        let leads = node.is_leader(g2);
        async move { leads }
    })
    .await;
    put(&node, g2, "a", "1").await.unwrap();

    // The next write waits in a held flush, the one after it is not staged.
    cluster.stores[&1].hold_flushes();
    let first = tokio::spawn({
        let node = node.clone();
        async move { put(&node, g2, "b", "2").await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = tokio::spawn({
        let node = node.clone();
        async move { put(&node, g2, "c", "3").await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    node.remove_group(g2).await.unwrap();
    let created = tokio::spawn({
        let node = node.clone();
        async move { node.create_group(g2, vec![NodeId(1)]).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    cluster.stores[&1].release_flushes();
    created.await.unwrap().unwrap();
    // The old group's callers learn it is gone (not that it applied).
    assert!(first.await.unwrap().is_err());
    assert!(second.await.unwrap().is_err());

    // The new group takes writes: its log and the store agree.
    common::eventually("node 1 leads group 2 again", || {
        let leads = node.is_leader(g2);
        async move { leads }
    })
    .await;
    put(&node, g2, "d", "4").await.unwrap();
    assert_eq!(
        get(&node, g2, "a", Consistency::Linearizable)
            .await
            .as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(get(&node, g2, "c", Consistency::Linearizable).await, None);
    assert_eq!(
        get(&node, g2, "d", Consistency::Linearizable)
            .await
            .as_deref(),
        Some(&b"4"[..])
    );
    cluster.shutdown().await;
}
