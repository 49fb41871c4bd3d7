//! A read that cannot be served gets the reason why, never
//! `ReadError::Shutdown` while the node runs: Shutdown means the node was
//! shut down, and a caller retrying on other errors must be able to rely on
//! that.

#![allow(missing_docs)]

mod common;

use std::time::Duration;

use raft_api::{Config, GroupId, NodeId};
use raft_node::ReadError;
use raft_node::driver::{Consistency, Node, NodeConfig};
use storage_mem::{KvStateMachine, MemLogStore};
use transport_mem::MemNetwork;

const G: GroupId = GroupId(1);

fn config(id: u64) -> NodeConfig {
    let mut c = NodeConfig::new(NodeId(id));
    c.raft = Config {
        election_timeout_min_ms: 150,
        election_timeout_max_ms: 300,
        heartbeat_interval_ms: 30,
        lease_clock_drift_ms: 50,
        ..Config::default()
    };
    c.read_timeout = Duration::from_millis(300);
    c
}

/// Node 1 of a 3-voter group whose other voters never start: it never
/// learns of a leader, so every linearizable read it is asked fails at once.
async fn leaderless_node() -> Node<KvStateMachine> {
    let net = MemNetwork::new();
    let voters = vec![NodeId(1), NodeId(2), NodeId(3)];
    Node::start(
        config(1),
        net.transport(NodeId(1)),
        MemLogStore::new(),
        |_| KvStateMachine::new(),
        &[(G, voters)],
    )
    .await
    .expect("node starts")
}

/// Many reads refused at once (no leader known): every one must say
/// NotLeader. The refusal used to race the dropped read closure in the
/// caller, so about half came back as Shutdown.
async fn refused_reads_name_their_cause() {
    let node = leaderless_node().await;
    for consistency in [Consistency::Linearizable, Consistency::Lease] {
        for i in 0..300 {
            let got = node
                .read_with(G, consistency, |kv: &KvStateMachine| kv.get(b"k"))
                .await;
            assert_eq!(
                got,
                Err(ReadError::NotLeader { leader: None }),
                "{consistency:?} read {i} on a running node without a leader"
            );
        }
    }
    node.shutdown().await;
    let got = node.read(G, Consistency::Linearizable).await;
    assert_eq!(got, Err(ReadError::Shutdown), "after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_reads_are_not_shutdown_multi_thread() {
    refused_reads_name_their_cause().await;
}

#[tokio::test(flavor = "current_thread")]
async fn refused_reads_are_not_shutdown_current_thread() {
    refused_reads_name_their_cause().await;
}

/// Many reads in flight at once, all refused: none is Shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refused_reads_are_not_shutdown() {
    let node = leaderless_node().await;
    let reads: Vec<_> = (0..200)
        .map(|_| {
            let node = node.clone();
            tokio::spawn(async move { node.read(G, Consistency::Linearizable).await })
        })
        .collect();
    for (i, r) in reads.into_iter().enumerate() {
        let got = r.await.unwrap();
        assert_eq!(
            got,
            Err(ReadError::NotLeader { leader: None }),
            "read {i} of many in flight"
        );
    }
    node.shutdown().await;
}

/// The case as seen in a deployment: a follower of a 3-node cluster is
/// restarted and polled with linearizable reads every 20 ms at once. Until
/// it learns of the leader its reads are refused (NotLeader); after that
/// they are served. No answer on the running node is Shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_follower_reads_are_never_shutdown() {
    let mut c = common::Cluster::start(&[1, 2, 3], &[1, 2, 3]).await;
    let leader = c.leader(G).await;
    common::put(&c.node(leader.0), G, "k", "v").await.unwrap();
    let follower = (1..=3).find(|&i| NodeId(i) != leader).unwrap();
    c.kill(follower).await;
    c.restart(follower).await;
    let node = c.node(follower);
    let (mut refused, mut served) = (0, 0);
    while served < 10 {
        match node
            .read_with(G, Consistency::Linearizable, |kv: &KvStateMachine| {
                kv.get(b"k")
            })
            .await
        {
            Ok(v) => {
                assert_eq!(
                    v.as_deref(),
                    Some(&b"v"[..]),
                    "a served read sees the write"
                );
                served += 1;
            }
            Err(ReadError::NotLeader { .. } | ReadError::LeadershipLost) => refused += 1,
            Err(e) => panic!("read on the restarted, running follower: {e:?}"),
        }
        assert!(refused < 500, "the restarted follower never served a read");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.shutdown().await;
}
