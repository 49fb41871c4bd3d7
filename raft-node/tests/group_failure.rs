//! A state machine that cannot restore the snapshot its leader sent stops
//! its group on that node (it cannot go on without diverging): proposals
//! there fail with the reason, while the rest of the cluster goes on.

#![allow(missing_docs)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{G, node_config, poll_for};
use raft_api::{Entry, LogId, NodeId, StateMachine, StorageError};
use raft_node::ProposeError;
use raft_node::driver::Node;
use storage_mem::MemLogStore;
use transport_mem::MemNetwork;

const WAIT: Duration = Duration::from_secs(10);

/// Applies anything; refuses every snapshot image.
#[derive(Default)]
struct NoRestore {
    last: LogId,
}

impl StateMachine for NoRestore {
    async fn apply(&mut self, entries: &[Entry]) -> Vec<Bytes> {
        if let Some(e) = entries.last() {
            self.last = e.id;
        }
        vec![Bytes::new(); entries.len()]
    }

    fn last_applied(&self) -> LogId {
        self.last
    }

    async fn snapshot(&self) -> Result<Bytes, StorageError> {
        Ok(Bytes::from_static(b"image"))
    }

    async fn restore(&mut self, _last: LogId, _image: Bytes) -> Result<(), StorageError> {
        Err(StorageError::Other("this machine restores nothing".into()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_restore_stops_the_group_on_that_node_only() {
    let net = MemNetwork::new();
    let voters: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let mut nodes = Vec::new();
    for &id in &voters {
        let mut config = node_config(id.0);
        // Snapshots every few entries, compacting everything they cover:
        // a node cut off for a while can only catch up from a snapshot.
        config.raft.snapshot_threshold = 4;
        config.raft.snapshot_trailing = 0;
        let node = Node::start(
            config,
            net.transport(id),
            MemLogStore::new(),
            |_| NoRestore::default(),
            &[(G, voters.clone())],
        )
        .await
        .expect("node starts");
        nodes.push(node);
    }
    let leader = poll_for("a leader", WAIT, || async {
        nodes.iter().position(|n| n.is_leader(G))
    })
    .await;
    let behind = (leader + 1) % nodes.len();
    net.isolate(nodes[behind].id());
    for i in 0..20u32 {
        let command = Bytes::from(i.to_be_bytes().to_vec());
        let result = nodes[leader].propose(G, command).await;
        assert!(
            result.is_ok(),
            "write {i} with two of three voters: {result:?}"
        );
    }
    net.heal();

    // The node that was cut off gets a snapshot it cannot restore: its
    // group stops there, and says why.
    let why = poll_for("the group stops on the node behind", WAIT, || async {
        match nodes[behind].propose(G, Bytes::from_static(b"x")).await {
            Err(ProposeError::Failed(why)) => Some(why),
            _ => None,
        }
    })
    .await;
    assert!(why.contains("restores nothing"), "{why}");
    // The others go on.
    let result = nodes[leader].propose(G, Bytes::from_static(b"after")).await;
    assert!(result.is_ok(), "the leader still commits: {result:?}");
    for node in &nodes {
        node.shutdown().await;
    }
}
