//! A group created at runtime (not passed to `Node::start`) keeps working
//! after every node restarts without being told its voters again: the
//! first leader writes the bootstrap voters into the log as a membership
//! entry, and a snapshot that compacts that entry away carries them.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Cluster, G, SharedStore, get, node_config, put, put_retrying};
use raft_api::{LogIndex, LogStore, Membership, NodeId};
use raft_node::driver::{Consistency, NodeConfig};
use transport_mem::MemNetwork;

const IDS: [u64; 3] = [1, 2, 3];

fn voters() -> Vec<NodeId> {
    IDS.iter().copied().map(NodeId).collect()
}

/// Three nodes started with no group at all, on stores that survive
/// restarts, each node configured by `config`.
async fn start_empty(config: fn(u64) -> NodeConfig) -> Cluster {
    let mut c = Cluster {
        net: MemNetwork::new(),
        nodes: BTreeMap::new(),
        stores: BTreeMap::new(),
        started_with: BTreeMap::new(),
    };
    for id in IDS {
        c.spawn(id, config(id), &[], &[]).await;
    }
    c
}

/// Creates G with voters 1, 2, 3 on every node at runtime.
async fn create_everywhere(c: &Cluster) {
    for id in IDS {
        c.node(id)
            .create_group(G, voters())
            .await
            .expect("group created");
    }
}

/// Stops every node (losing what was not durable), then starts them all
/// again with no group named: G is restored from the store alone, with an
/// empty voter list.
async fn restart_all(c: &mut Cluster, config: fn(u64) -> NodeConfig) {
    for id in IDS {
        c.kill(id).await;
    }
    c.net.heal();
    for id in IDS {
        c.spawn(id, config(id), &[], &[]).await;
    }
}

/// After the restart: a leader is elected, the values written before are
/// there, and a new write commits and is read back linearizably.
async fn check_after_restart(c: &Cluster, written: usize) {
    let leader = tokio::time::timeout(Duration::from_secs(10), c.leader(G))
        .await
        .expect("a leader of the restored group within 10 s");
    let node = c.node(leader.0);
    for i in 0..written {
        let value = common::read_retrying(&node, G, &format!("k{i}"), Consistency::Linearizable)
            .await
            .expect("value written before the restart");
        assert_eq!(&value[..], format!("v{i}").as_bytes());
    }
    put(&node, G, "after", "restart")
        .await
        .expect("a write after the restart commits");
    let value = get(&node, G, "after", Consistency::Linearizable).await;
    assert_eq!(value.as_deref(), Some(&b"restart"[..]));
    for id in IDS {
        let metrics = c.node(id).metrics().await.expect("metrics");
        assert_eq!(
            metrics.groups.get(&G).map(|g| g.membership.clone()),
            Some(Membership::new(voters())),
            "node {id} knows the voters after the restart"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_group_elects_after_restart_without_voters() {
    let mut c = start_empty(node_config).await;
    create_everywhere(&c).await;
    let leader = c.leader(G).await;
    let node = c.node(leader.0);
    for i in 0..5 {
        put_retrying(&node, G, &format!("k{i}"), &format!("v{i}")).await;
    }
    // Every node holds the log (with the membership entry) durably.
    common::eventually("every node applied the writes", || async {
        IDS.iter().all(|&id| {
            c.stores[&id]
                .log_state(G)
                .is_ok_and(|s| s.last.index >= LogIndex(6))
        })
    })
    .await;

    restart_all(&mut c, node_config).await;
    check_after_restart(&c, 5).await;
    c.shutdown().await;
}

/// Snapshots after every few entries, compacting the whole log they cover.
fn snapshotting_config(id: u64) -> NodeConfig {
    let mut c = node_config(id);
    c.raft.snapshot_threshold = 4;
    c.raft.snapshot_trailing = 0;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_group_elects_after_restart_from_a_snapshot() {
    let mut c = start_empty(snapshotting_config).await;
    create_everywhere(&c).await;
    let leader = c.leader(G).await;
    let node = c.node(leader.0);
    for i in 0..10 {
        put_retrying(&node, G, &format!("k{i}"), &format!("v{i}")).await;
    }
    for id in IDS {
        // Ask as well, in case the threshold was not crossed since the
        // last snapshot.
        c.node(id)
            .trigger_snapshot(G)
            .await
            .expect("snapshot asked");
    }
    // Every node's store holds a snapshot carrying the voters, and its log
    // no longer holds the first entries (the membership entry among them).
    let expected = Membership::new(voters());
    common::eventually("every node compacted past the membership entry", || {
        let stores: Vec<SharedStore> = c.stores.values().cloned().collect();
        let expected = expected.clone();
        async move {
            stores.iter().all(|s| {
                let compacted = s.log_state(G).map(|l| l.compacted.index);
                let snapshot = s.snapshot(G).ok().flatten();
                compacted.is_ok_and(|i| i >= LogIndex(1))
                    && snapshot.is_some_and(|s| s.meta.membership == expected)
            })
        }
    })
    .await;

    restart_all(&mut c, snapshotting_config).await;
    check_after_restart(&c, 10).await;
    c.shutdown().await;
}
