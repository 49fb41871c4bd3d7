//! Acceptance tests of the driver: real tokio, the in-process transport
//! and in-memory storage, one test per case. The cases come from the two
//! libraries this one grows from (Rafty, Kommander) and from our own
//! requirements.

#![allow(missing_docs)]

mod common;
#[path = "acceptance/kommander.rs"]
mod kommander;
#[path = "acceptance/ours.rs"]
mod ours;

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use raft_api::NodeId;
use raft_node::MembershipChange;
use raft_node::driver::Consistency;

use common::{Cluster, G, eventually, get, put};

/// Rafty: a node alone elects itself and takes commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rafty_single_node_elects_itself() {
    let c = Cluster::start(&[1], &[1]).await;
    assert_eq!(c.leader(G).await, NodeId(1));
    put(&c.node(1), G, "a", "1").await.unwrap();
    assert_eq!(
        get(&c.node(1), G, "a", Consistency::Linearizable).await,
        Some(Bytes::from("1"))
    );
    c.shutdown().await;
}

/// Grows node 1, alone, into a group of five: a command before the joins,
/// then four nodes join as learners and are promoted.
async fn grow_to_five() -> Cluster {
    let mut c = Cluster::start(&[1], &[1]).await;
    c.leader(G).await;
    put(&c.node(1), G, "before", "joins").await.unwrap();
    for id in 2..=5 {
        c.spawn(id, common::node_config(id), &[], &[G]).await;
        let leader = c.node(1);
        leader
            .change_membership(G, MembershipChange::AddLearner(NodeId(id)))
            .await
            .expect("learner added");
        eventually("the learner catches up and is promoted", || async {
            leader
                .change_membership(G, MembershipChange::Promote(NodeId(id)))
                .await
                .is_ok()
        })
        .await;
    }
    c
}

/// Rafty: four nodes join a running node later and follow its leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rafty_four_nodes_join_later_and_follow() {
    let c = grow_to_five().await;
    assert_eq!(c.leader(G).await, NodeId(1));
    let m = c.node(1).metrics().await.unwrap();
    let voters: BTreeSet<u64> = m.groups[&G].membership.voters.iter().map(|n| n.0).collect();
    assert_eq!(voters, (1..=5).collect());
    c.shutdown().await;
}

/// Rafty: a command accepted before the joins reaches the new nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rafty_command_before_joins_reaches_new_nodes() {
    let c = grow_to_five().await;
    for id in 2..=5 {
        let node = c.node(id);
        eventually("the early command reaches the new node", || async {
            get(&node, G, "before", Consistency::Stale).await == Some(Bytes::from("joins"))
        })
        .await;
    }
    c.shutdown().await;
}

/// Rafty: five nodes elect one leader, and it stays leader while all is
/// well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rafty_five_nodes_elect_one_leader_that_stays() {
    let c = Cluster::start(&[1, 2, 3, 4, 5], &[1, 2, 3, 4, 5]).await;
    let leader = c.leader(G).await;
    let term = c.node(leader.0).metrics().await.unwrap().groups[&G].term;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(c.leader(G).await, leader);
    let now = c.node(leader.0).metrics().await.unwrap().groups[&G].term;
    assert_eq!(now, term, "no election while the leader is healthy");
    let leaders = c.nodes.values().filter(|n| n.is_leader(G)).count();
    assert_eq!(leaders, 1);
    c.shutdown().await;
}

/// Rafty: when the leader dies the others elect a new one; the old leader
/// rejoins as a follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rafty_new_leader_after_old_dies_and_old_rejoins_as_follower() {
    let mut c = Cluster::start(&[1, 2, 3, 4, 5], &[1, 2, 3, 4, 5]).await;
    let old = c.leader(G).await;
    put(&c.node(old.0), G, "k", "v1").await.unwrap();
    c.kill(old.0).await;
    let new = c.leader(G).await;
    assert_ne!(new, old);
    put(&c.node(new.0), G, "k", "v2").await.unwrap();
    c.restart(old.0).await;
    let back = c.node(old.0);
    eventually("the old leader follows the new one", || async {
        back.leader(G) == Some(new) && !back.is_leader(G)
    })
    .await;
    eventually("and catches up", || async {
        get(&back, G, "k", Consistency::Stale).await == Some(Bytes::from("v2"))
    })
    .await;
    c.shutdown().await;
}

/// Rafty: a command through the leader is applied on all five nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rafty_command_through_leader_applied_on_all_five() {
    let c = Cluster::start(&[1, 2, 3, 4, 5], &[1, 2, 3, 4, 5]).await;
    let leader = c.leader(G).await;
    put(&c.node(leader.0), G, "x", "1").await.unwrap();
    for id in 1..=5 {
        let node = c.node(id);
        eventually("applied everywhere", || async {
            get(&node, G, "x", Consistency::Stale).await == Some(Bytes::from("1"))
        })
        .await;
    }
    c.shutdown().await;
}

/// Rafty: a command sent to a follower is forwarded to the leader and its
/// response comes back through the follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rafty_command_through_follower_is_forwarded() {
    let c = Cluster::start(&[1, 2, 3, 4, 5], &[1, 2, 3, 4, 5]).await;
    let leader = c.leader(G).await;
    let follower = (1..=5).find(|&id| id != leader.0).unwrap();
    put(&c.node(follower), G, "via", "follower").await.unwrap();
    assert_eq!(
        get(&c.node(leader.0), G, "via", Consistency::Linearizable).await,
        Some(Bytes::from("follower"))
    );
    // A linearizable read on the follower goes through the leader too.
    assert_eq!(
        get(&c.node(follower), G, "via", Consistency::Linearizable).await,
        Some(Bytes::from("follower"))
    );
    c.shutdown().await;
}

/// Rafty: many commands, from many callers at once, all applied on every
/// node in the same order (same final state).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rafty_many_commands() {
    let c = Cluster::start(&[1, 2, 3], &[1, 2, 3]).await;
    c.leader(G).await;
    let mut tasks = Vec::new();
    for i in 0..400u32 {
        let node = c.node(1 + u64::from(i % 3));
        tasks.push(tokio::spawn(async move {
            put(&node, G, &format!("k{}", i % 50), &format!("v{i}")).await
        }));
    }
    for t in tasks {
        t.await.unwrap().expect("every command succeeds");
    }
    let leader = c.leader(G).await;
    let expected: Vec<Option<Bytes>> = {
        let node = c.node(leader.0);
        let mut v = Vec::new();
        for k in 0..50 {
            v.push(get(&node, G, &format!("k{k}"), Consistency::Linearizable).await);
        }
        v
    };
    for id in 1..=3 {
        let node = c.node(id);
        let expected = expected.clone();
        eventually("every node holds the same state", || {
            let node = node.clone();
            let expected = expected.clone();
            async move {
                let mut v = Vec::new();
                for k in 0..50 {
                    v.push(get(&node, G, &format!("k{k}"), Consistency::Stale).await);
                }
                v == expected
            }
        })
        .await;
    }
    c.shutdown().await;
}

/// Rafty: a node killed while the others take commands catches up after it
/// returns (from its own durable log, then from the leader).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rafty_killed_node_catches_up_after_return() {
    let mut c = Cluster::start(&[1, 2, 3], &[1, 2, 3]).await;
    let leader = c.leader(G).await;
    put(&c.node(leader.0), G, "early", "1").await.unwrap();
    let victim = (1..=3).find(|&id| id != leader.0).unwrap();
    c.kill(victim).await;
    for i in 0..50 {
        put(&c.node(leader.0), G, &format!("late{i}"), "x")
            .await
            .unwrap();
    }
    c.restart(victim).await;
    let node = c.node(victim);
    eventually("the returning node catches up", || async {
        get(&node, G, "late49", Consistency::Stale).await == Some(Bytes::from("x"))
            && get(&node, G, "early", Consistency::Stale).await == Some(Bytes::from("1"))
    })
    .await;
    c.shutdown().await;
}
