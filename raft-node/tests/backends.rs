//! One 3-node cluster test run over every transport x storage pair, the
//! backends chosen by configuration strings alone (as a deployment would,
//! from its config file).

#![allow(missing_docs)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use raft_api::{Config, GroupId, NodeId, Transport};
use raft_node::backends::{
    StorageKind, TlsFiles, TransportKind, TransportSettings, build_transport, open_log_store,
};
use raft_node::driver::{Consistency, Node, NodeConfig};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use storage_mem::{KvCommand, KvStateMachine};
use transport_util::ports::Protocol;

const CLUSTER: u64 = 42;
const G: GroupId = GroupId(1);

/// A free loopback port for `kind` (TCP or UDP).
fn free_port(kind: TransportKind) -> SocketAddr {
    transport_util::ports::free_loopback_port(match kind {
        TransportKind::Quic => Protocol::Udp,
        _ => Protocol::Tcp,
    })
    .expect("a free port")
}

/// A cluster CA and a certificate per node (`node-<id>.raft`), as PEM files.
fn write_certs(dir: &Path, nodes: u64) -> Vec<TlsFiles> {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();
    (1..=nodes)
        .map(|id| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(vec![format!("node-{id}.raft")]).unwrap();
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
            let (cert_path, key_path) = (
                dir.join(format!("n{id}.pem")),
                dir.join(format!("n{id}.key")),
            );
            std::fs::write(&cert_path, cert.pem()).unwrap();
            std::fs::write(&key_path, key.serialize_pem()).unwrap();
            TlsFiles {
                ca: ca_path.clone(),
                cert: cert_path,
                key: key_path,
            }
        })
        .collect()
}

/// Runs three nodes with the named backends: elect, write through a
/// follower, read linearizably everywhere, restart a follower on its
/// stored state.
async fn cluster_over(transport: &str, storage: &str) {
    cluster_over_with(transport, storage, transport == "quic").await;
}

/// As [`cluster_over`]; `tls` gives every node a certificate (mutual TLS).
async fn cluster_over_with(transport: &str, storage: &str, tls: bool) {
    let tk: TransportKind = transport.parse().unwrap();
    let sk: StorageKind = storage.parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = write_certs(dir.path(), 3);
    let addrs: Vec<SocketAddr> = (0..3).map(|_| free_port(tk)).collect();
    let start = |id: u64| {
        let dir = dir.path().join(format!("data{id}"));
        let certs = certs.clone();
        let addrs = addrs.clone();
        async move {
            let mut settings =
                TransportSettings::new(tk, NodeId(id), CLUSTER, addrs[id as usize - 1]);
            if tls {
                settings.tls = Some(certs[id as usize - 1].clone());
            }
            let transport = build_transport(settings).expect("transport");
            for peer in 1..=3u64 {
                if peer != id {
                    transport.add_peer(NodeId(peer), addrs[peer as usize - 1].to_string());
                }
            }
            std::fs::create_dir_all(&dir).unwrap();
            let store = open_log_store(sk, Some(&dir), CLUSTER).expect("log store");
            let mut config = NodeConfig::new(NodeId(id));
            config.raft = Config {
                election_timeout_min_ms: 150,
                election_timeout_max_ms: 300,
                heartbeat_interval_ms: 30,
                lease_clock_drift_ms: 50,
                ..Config::default()
            };
            let voters = vec![NodeId(1), NodeId(2), NodeId(3)];
            Node::start(
                config,
                transport,
                store,
                |_| KvStateMachine::new(),
                &[(G, voters)],
            )
            .await
            .expect("node starts")
        }
    };
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start(id).await);
    }
    let leader = nodes[0]
        .wait_for_leader(G, Duration::from_secs(10))
        .await
        .unwrap_or_else(|_| panic!("{transport}+{storage}: no leader"));
    let follower = (1..=3).find(|&i| NodeId(i) != leader).unwrap();
    let put = KvCommand::Put {
        key: Bytes::from("k"),
        value: Bytes::from(format!("{transport}+{storage}")),
    };
    // A follower forwards to the leader, so it must know it first.
    nodes[follower as usize - 1]
        .wait_for_leader(G, Duration::from_secs(10))
        .await
        .unwrap();
    nodes[follower as usize - 1]
        .propose(G, put.encode())
        .await
        .unwrap_or_else(|e| panic!("{transport}+{storage}: write through a follower: {e}"));
    for n in &nodes {
        // A follower reads through the leader, so it must know it first.
        n.wait_for_leader(G, Duration::from_secs(10)).await.unwrap();
        let v = n
            .read_with(G, Consistency::Linearizable, |kv: &KvStateMachine| {
                kv.get(b"k")
            })
            .await
            .unwrap();
        assert_eq!(v, Some(Bytes::from(format!("{transport}+{storage}"))));
    }
    // With durable storage, a follower restarts on what it stored and
    // catches up. (An in-memory store would come back empty: a node that
    // lost its state must rejoin as a learner, not as the voter it was.)
    if sk == StorageKind::Mem {
        for n in &nodes {
            n.shutdown().await;
        }
        return;
    }
    let other = (1..=3)
        .find(|&i| NodeId(i) != leader && i != follower)
        .unwrap();
    nodes[other as usize - 1].shutdown().await;
    nodes[other as usize - 1] = start(other).await;
    let restarted = nodes[other as usize - 1].clone();
    let mut caught_up = false;
    for _ in 0..500 {
        let v = restarted
            .read_with(G, Consistency::Stale, |kv: &KvStateMachine| kv.get(b"k"))
            .await
            .unwrap();
        if v.is_some() {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        caught_up,
        "{transport}+{storage}: the restarted node caught up"
    );
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_over_tcp_and_mem() {
    cluster_over("tcp", "mem").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_over_tcp_and_lmdb() {
    cluster_over("tcp", "lmdb").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_over_quic_and_mem() {
    cluster_over("quic", "mem").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_over_quic_and_lmdb() {
    cluster_over("quic", "lmdb").await;
}

/// The same cluster over TCP with mutual TLS (TLS files in the settings).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_over_tls_tcp_and_lmdb() {
    cluster_over_with("tcp", "lmdb", true).await;
}

/// Discovery that knows addresses but no node ids, as DNS A/AAAA records
/// give them.
struct AddressesOnly(Vec<String>);

impl raft_api::Discovery for AddressesOnly {
    async fn peers(&self) -> Result<Vec<raft_api::Peer>, raft_api::DiscoveryError> {
        Ok(self
            .0
            .iter()
            .map(|address| raft_api::Peer {
                id: None,
                address: address.clone(),
            })
            .collect())
    }

    fn watch(&self, _on_change: Box<dyn Fn(raft_api::PeerChange) + Send + Sync>) {}
}

/// Three TCP nodes told only the addresses of the cluster (their own
/// included, as a DNS name listing every node gives them): each learns the
/// others' ids from the handshake, and the cluster elects and commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_over_tcp_with_peers_known_by_address_only() {
    let addrs: Vec<SocketAddr> = (0..3).map(|_| free_port(TransportKind::Tcp)).collect();
    let listing = AddressesOnly(addrs.iter().map(|a| a.to_string()).collect());
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        let settings = TransportSettings::new(
            TransportKind::Tcp,
            NodeId(id),
            CLUSTER,
            addrs[id as usize - 1],
        );
        let transport = std::sync::Arc::new(build_transport(settings).expect("transport"));
        let store = open_log_store(StorageKind::Mem, None, CLUSTER).expect("log store");
        let mut config = NodeConfig::new(NodeId(id));
        config.raft = Config {
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
            heartbeat_interval_ms: 30,
            lease_clock_drift_ms: 50,
            ..Config::default()
        };
        let voters = vec![NodeId(1), NodeId(2), NodeId(3)];
        let node = Node::start(
            config,
            transport.clone(),
            store,
            |_| KvStateMachine::new(),
            &[(G, voters)],
        )
        .await
        .expect("node starts");
        node.attach_discovery(&listing, transport)
            .await
            .expect("discovery attached");
        nodes.push(node);
    }
    let leader = nodes[0]
        .wait_for_leader(G, Duration::from_secs(10))
        .await
        .expect("a leader is elected over peers learned by address");
    let put = KvCommand::Put {
        key: Bytes::from("k"),
        value: Bytes::from("learned"),
    };
    nodes[leader.0 as usize - 1]
        .propose(G, put.encode())
        .await
        .expect("a write commits");
    for n in &nodes {
        n.wait_for_leader(G, Duration::from_secs(10)).await.unwrap();
        let v = n
            .read_with(G, Consistency::Linearizable, |kv: &KvStateMachine| {
                kv.get(b"k")
            })
            .await
            .unwrap();
        assert_eq!(v, Some(Bytes::from("learned")));
    }
    for n in &nodes {
        n.shutdown().await;
    }
}
