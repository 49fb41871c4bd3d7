//! In-process clusters of whole nodes, built from backend names.
//!
//! ```no_run
//! # async fn demo() -> Result<(), benches::BenchError> {
//! use benches::cluster::{Cluster, ClusterSpec};
//!
//! let spec = ClusterSpec::new("tcp".parse()?, "lmdb".parse()?, 3);
//! let cluster = Cluster::start(&spec).await?;
//! cluster.put(0, bytes::Bytes::from("key"), bytes::Bytes::from("value")).await.unwrap();
//! cluster.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use raft_api::{Config, GroupId, NodeId, Transport};
use raft_node::ProposeError;
use raft_node::backends::{
    StorageKind, TlsFiles, TransportKind, TransportSettings, build_transport, open_log_store,
};
use raft_node::driver::{Node, NodeConfig, NodeMetrics};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use storage_mem::{KvCommand, KvStateMachine};
use transport_mem::MemNetwork;
use transport_util::ports::Protocol;

use crate::BenchError;

/// Cluster id the benchmark nodes share.
const CLUSTER_ID: u64 = 0xBE7C;

/// What to build.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// The transport between nodes.
    pub transport: TransportKind,
    /// Each node's log store.
    pub storage: StorageKind,
    /// Voters (every node hosts every group).
    pub nodes: usize,
    /// Raft groups, numbered from 1.
    pub groups: u64,
    /// Where LMDB directories go; a fresh temporary directory when `None`.
    pub data_dir: Option<PathBuf>,
    /// Engine settings of every group.
    pub raft: Config,
    /// Each node's bound on the log its groups hold in memory
    /// (`NodeConfig::max_log_bytes`); the node's default when `None`.
    pub max_log_bytes: Option<u64>,
}

impl ClusterSpec {
    /// One group on `nodes` nodes with the given backends; election
    /// timeouts of 150 to 300 ms and 50 ms heartbeats, so clusters start
    /// fast.
    pub fn new(transport: TransportKind, storage: StorageKind, nodes: usize) -> Self {
        Self {
            transport,
            storage,
            nodes,
            groups: 1,
            data_dir: None,
            raft: Config {
                election_timeout_min_ms: 150,
                election_timeout_max_ms: 300,
                heartbeat_interval_ms: 50,
                lease_clock_drift_ms: 50,
                ..Config::default()
            },
            max_log_bytes: None,
        }
    }

    /// A short name: `tcp+lmdb/3n/1g`.
    pub fn label(&self) -> String {
        format!(
            "{}+{}/{}n/{}g",
            self.transport, self.storage, self.nodes, self.groups
        )
    }
}

/// A running in-process cluster.
pub struct Cluster {
    nodes: Vec<Node<KvStateMachine>>,
    groups: Vec<GroupId>,
    _dir: tempfile::TempDir,
}

/// A free loopback port for `kind` (TCP or UDP).
fn free_port(kind: TransportKind) -> Result<SocketAddr, BenchError> {
    Ok(transport_util::ports::free_loopback_port(match kind {
        TransportKind::Quic => Protocol::Udp,
        _ => Protocol::Tcp,
    })?)
}

/// A cluster CA and one certificate per node (`node-<id>.raft`), as PEM
/// files in `dir`.
pub fn write_certs(dir: &Path, nodes: usize) -> Result<Vec<TlsFiles>, BenchError> {
    let cert_err = |e: rcgen::Error| BenchError::Certificates(e.to_string());
    let ca_key = KeyPair::generate().map_err(cert_err)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).map_err(cert_err)?;
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca_cert.pem())?;
    let mut files = Vec::new();
    for id in 1..=nodes {
        let key = KeyPair::generate().map_err(cert_err)?;
        let mut params =
            CertificateParams::new(vec![format!("node-{id}.raft")]).map_err(cert_err)?;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params
            .signed_by(&key, &ca_cert, &ca_key)
            .map_err(cert_err)?;
        let (cert_path, key_path) = (
            dir.join(format!("node{id}.pem")),
            dir.join(format!("node{id}.key")),
        );
        std::fs::write(&cert_path, cert.pem())?;
        std::fs::write(&key_path, key.serialize_pem())?;
        files.push(TlsFiles {
            ca: ca_path.clone(),
            cert: cert_path,
            key: key_path,
        });
    }
    Ok(files)
}

impl Cluster {
    /// Starts every node and waits until every group has a leader that
    /// knows it leads.
    pub async fn start(spec: &ClusterSpec) -> Result<Self, BenchError> {
        if spec.nodes == 0 || spec.groups == 0 {
            return Err(BenchError::Settings(
                "a cluster needs at least one node and one group".into(),
            ));
        }
        let dir = match &spec.data_dir {
            Some(base) => {
                std::fs::create_dir_all(base)?;
                tempfile::Builder::new()
                    .prefix("raft-bench")
                    .tempdir_in(base)?
            }
            None => tempfile::Builder::new().prefix("raft-bench").tempdir()?,
        };
        let tls = if spec.transport == TransportKind::Quic {
            Some(write_certs(dir.path(), spec.nodes)?)
        } else {
            None
        };
        let addrs = (0..spec.nodes)
            .map(|_| free_port(spec.transport))
            .collect::<Result<Vec<_>, _>>()?;
        // A mem cluster's nodes join one in-process network.
        let network = (spec.transport == TransportKind::Mem).then(MemNetwork::new);
        let voters: Vec<NodeId> = (1..=spec.nodes as u64).map(NodeId).collect();
        let groups: Vec<GroupId> = (1..=spec.groups).map(GroupId).collect();
        let group_list: Vec<(GroupId, Vec<NodeId>)> =
            groups.iter().map(|g| (*g, voters.clone())).collect();
        let mut nodes = Vec::new();
        for (i, &id) in voters.iter().enumerate() {
            let mut settings = TransportSettings::new(spec.transport, id, CLUSTER_ID, addrs[i]);
            settings.tls = tls.as_ref().map(|t| t[i].clone());
            settings.network = network.clone();
            let transport = build_transport(settings)?;
            for (j, &peer) in voters.iter().enumerate() {
                if peer != id {
                    transport.add_peer(peer, addrs[j].to_string());
                }
            }
            let data = dir.path().join(format!("node{}", id.0));
            std::fs::create_dir_all(&data)?;
            let store = open_log_store(spec.storage, Some(&data), CLUSTER_ID)?;
            let mut config = NodeConfig::new(id);
            config.raft = spec.raft.clone();
            // Leaders stay where elections put them: moving them mid-run
            // would refuse proposals while a transfer is under way.
            config.balance_leaders = false;
            if let Some(bound) = spec.max_log_bytes {
                config.max_log_bytes = bound;
            }
            let node = Node::start(
                config,
                transport,
                store,
                |_| KvStateMachine::new(),
                &group_list,
            )
            .await?;
            nodes.push(node);
        }
        let cluster = Self {
            nodes,
            groups,
            _dir: dir,
        };
        cluster.wait_for_leaders(Duration::from_secs(20)).await?;
        Ok(cluster)
    }

    async fn wait_for_leaders(&self, timeout: Duration) -> Result<(), BenchError> {
        let deadline = tokio::time::Instant::now() + timeout;
        for &g in &self.groups {
            loop {
                if self.leader_of(g).is_some() {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(BenchError::NoLeader {
                        group: g.0,
                        secs: timeout.as_secs(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Ok(())
    }

    /// The node that leads `group` and knows it, if any.
    fn leader_of(&self, group: GroupId) -> Option<&Node<KvStateMachine>> {
        let hint = self.nodes[0].leader(group);
        if let Some(id) = hint
            && let Some(n) = self.nodes.get((id.0 - 1) as usize)
            && n.is_leader(group)
        {
            return Some(n);
        }
        self.nodes.iter().find(|n| n.is_leader(group))
    }

    /// Groups of the cluster.
    pub fn groups(&self) -> &[GroupId] {
        &self.groups
    }

    /// The nodes, node 1 first.
    pub fn nodes(&self) -> &[Node<KvStateMachine>] {
        &self.nodes
    }

    /// Writes `key = value` in group number `group_slot` (modulo the
    /// number of groups), on that group's leader (or node 1, which
    /// forwards, while no leader is known).
    pub async fn put(
        &self,
        group_slot: usize,
        key: Bytes,
        value: Bytes,
    ) -> Result<(), ProposeError> {
        let group = self.groups[group_slot % self.groups.len()];
        let node = self.leader_of(group).unwrap_or(&self.nodes[0]);
        node.propose(group, KvCommand::Put { key, value }.encode())
            .await
            .map(|_| ())
    }

    /// Every node's counters.
    pub async fn node_metrics(&self) -> Vec<NodeMetrics> {
        let mut out = Vec::new();
        for n in &self.nodes {
            if let Ok(m) = n.metrics().await {
                out.push(m.node);
            }
        }
        out
    }

    /// Stops every node.
    pub async fn shutdown(&self) {
        for n in &self.nodes {
            n.shutdown().await;
        }
    }
}

/// Resident memory of this process, in bytes (Linux; 0 elsewhere).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_name_the_backends() {
        let mut spec = ClusterSpec::new(TransportKind::Tcp, StorageKind::Lmdb, 3);
        spec.groups = 64;
        assert_eq!(spec.label(), "tcp+lmdb/3n/64g");
        assert!(spec.raft.validate().is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_empty_cluster_is_refused() {
        let spec = ClusterSpec::new(TransportKind::Mem, StorageKind::Mem, 0);
        assert!(matches!(
            Cluster::start(&spec).await,
            Err(BenchError::Settings(_))
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mem_cluster_takes_writes_in_every_group() {
        let mut spec = ClusterSpec::new(TransportKind::Mem, StorageKind::Mem, 3);
        spec.groups = 2;
        let c = Cluster::start(&spec).await.unwrap();
        for slot in 0..4 {
            c.put(slot, Bytes::from("k"), Bytes::from("v"))
                .await
                .unwrap();
        }
        let proposals: u64 = c.node_metrics().await.iter().map(|m| m.proposals).sum();
        assert!(proposals >= 4, "{proposals}");
        c.shutdown().await;
    }
}
