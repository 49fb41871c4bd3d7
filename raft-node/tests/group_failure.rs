//! A group stops on a node that cannot go on safely: its state machine
//! refuses the snapshot its leader sent (it would diverge), or its storage
//! fails (nothing more can be promised). Requests there fail with the
//! reason, the stopped group says nothing more, and the rest of the cluster
//! goes on.

#![allow(missing_docs)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{G, SharedStore, node_config, poll_for};
use raft_api::{Entry, GroupId, LogId, LogStore, NodeId, StateMachine, StorageError};
use raft_node::driver::Consistency;
use raft_node::driver::{Event, Node, NodeConfig};
use raft_node::{AdminError, ProposeError, ReadError};
use storage_mem::MemLogStore;
use tokio::sync::broadcast;
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
    let nodes = start_three(
        &net,
        |config| {
            // Snapshots every few entries, compacting everything they
            // cover: a node cut off for a while can only catch up from a
            // snapshot.
            config.raft.snapshot_threshold = 4;
            config.raft.snapshot_trailing = 0;
        },
        |_| MemLogStore::new(),
    )
    .await;
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
    let mut events = nodes[behind].subscribe();
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
    // Subscribers are told, with the same reason.
    assert_eq!(stopped_event(&mut events).await, (G, why.clone()));
    // Reads there are refused too, naming the group.
    for consistency in [
        Consistency::Stale,
        Consistency::Lease,
        Consistency::Linearizable,
    ] {
        assert_eq!(
            nodes[behind].read(G, consistency).await,
            Err(ReadError::GroupStopped(G)),
            "{consistency:?} read on the stopped group"
        );
    }
    // So are changes to it.
    assert!(
        matches!(
            nodes[behind].trigger_snapshot(G).await,
            Err(AdminError::Failed(ref w)) if w.contains("restores nothing")
        ),
        "a snapshot of the stopped group"
    );
    assert!(
        matches!(
            nodes[behind].transfer_leader(G, None).await,
            Err(AdminError::Failed(_))
        ),
        "a transfer of the stopped group"
    );
    // A stopped group is silent: it neither campaigns nor answers, so it
    // cannot unsettle the others (its election timer would otherwise fire
    // every 150-300 ms, since it takes no messages).
    let sent = messages_sent(&nodes[behind]).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let later = messages_sent(&nodes[behind]).await;
    assert_eq!(later, sent, "messages sent by the stopped group");
    // The others go on.
    let result = nodes[leader].propose(G, Bytes::from_static(b"after")).await;
    assert!(result.is_ok(), "the leader still commits: {result:?}");
    for node in &nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_disk_stops_the_node_and_answers_its_callers_at_once() {
    let net = MemNetwork::new();
    let stores: Vec<SharedStore> = (0..3).map(|_| SharedStore::default()).collect();
    let nodes = start_three(
        &net,
        // Long enough that a caller answered within it was not timed out.
        |config| config.propose_timeout = Duration::from_secs(60),
        |id| stores[id.0 as usize - 1].clone(),
    )
    .await;
    let leader = poll_for("a leader", WAIT, || async {
        nodes.iter().position(|n| n.is_leader(G))
    })
    .await;
    let result = nodes[leader]
        .propose(G, Bytes::from_static(b"before"))
        .await;
    assert!(result.is_ok(), "{result:?}");

    let mut events = nodes[leader].subscribe();
    stores[leader].fail_writes(true);
    // The proposal that finds the disk failed is answered with the reason,
    // not left to time out.
    let result = tokio::time::timeout(
        WAIT,
        nodes[leader].propose(G, Bytes::from_static(b"during")),
    )
    .await
    .expect("answered before its timeout");
    assert!(
        matches!(result, Err(ProposeError::Failed(ref why)) if why.contains("injected write failure")),
        "{result:?}"
    );
    assert_eq!(
        nodes[leader].read(G, Consistency::Linearizable).await,
        Err(ReadError::GroupStopped(G))
    );
    let (group, reason) = stopped_event(&mut events).await;
    assert_eq!(group, G);
    assert!(reason.contains("injected write failure"), "{reason}");
    // Silent: it neither heartbeats nor campaigns, so the others elect a
    // leader of their own and go on.
    let sent = messages_sent(&nodes[leader]).await;
    let next = poll_for("a new leader", WAIT, || async {
        (0..nodes.len()).find(|&i| i != leader && nodes[i].is_leader(G))
    })
    .await;
    let result = nodes[next].propose(G, Bytes::from_static(b"after")).await;
    assert!(result.is_ok(), "the others go on: {result:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = messages_sent(&nodes[leader]).await;
    assert_eq!(later, sent, "messages sent by the stopped node");
    for node in &nodes {
        node.shutdown().await;
    }
}

/// Starts voters 1, 2 and 3 of group [`G`] on `net`, each with its
/// configuration changed by `tune` and the store `store` gives for its id.
async fn start_three<L: LogStore>(
    net: &MemNetwork,
    tune: impl Fn(&mut NodeConfig),
    store: impl Fn(NodeId) -> L,
) -> Vec<Node<NoRestore>> {
    let voters: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let mut nodes = Vec::new();
    for &id in &voters {
        let mut config = node_config(id.0);
        tune(&mut config);
        let node = Node::start(
            config,
            net.transport(id),
            store(id),
            |_| NoRestore::default(),
            &[(G, voters.clone())],
        )
        .await
        .expect("node starts");
        nodes.push(node);
    }
    nodes
}

/// Messages `node` has sent so far.
async fn messages_sent(node: &Node<NoRestore>) -> u64 {
    node.metrics().await.expect("metrics").node.messages_sent
}

/// The next `GroupStopped` event: its group and reason.
async fn stopped_event(events: &mut broadcast::Receiver<Event>) -> (GroupId, String) {
    tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(Event::GroupStopped { group, reason }) => return (group, reason),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("events closed"),
            }
        }
    })
    .await
    .expect("a GroupStopped event")
}
