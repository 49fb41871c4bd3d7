//! Helpers shared by the in-process tests: free ports and clusters of
//! [`Server`]s.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use raft_api::{GroupId, NodeId};
use raft_kv::config::{ServeConfig, ServeSettings};
use raft_kv::server::Server;

use transport_util::ports::{Protocol, free_loopback_port};

/// A free loopback TCP port.
pub fn free_tcp() -> SocketAddr {
    free_loopback_port(Protocol::Tcp).unwrap()
}

/// A free loopback UDP port.
pub fn free_udp() -> SocketAddr {
    free_loopback_port(Protocol::Udp).unwrap()
}

/// How to run the nodes of a test cluster.
#[derive(Clone, Debug)]
pub struct Spec {
    pub nodes: u64,
    pub transport: &'static str,
    pub storage: &'static str,
    pub partitions: u64,
    pub max_value_bytes: u64,
    /// Directory with `ca.pem`, `node-<id>.pem`, `node-<id>-key.pem`.
    pub certs: Option<std::path::PathBuf>,
    pub request_timeout_ms: u64,
    /// `--voters` (default: every node).
    pub voters: Option<String>,
}

impl Spec {
    pub fn new(nodes: u64, transport: &'static str, storage: &'static str) -> Self {
        Self {
            nodes,
            transport,
            storage,
            partitions: 1,
            max_value_bytes: 1024 * 1024,
            certs: None,
            request_timeout_ms: 3000,
            voters: None,
        }
    }
}

/// The addresses of a cluster's nodes, picked before any starts.
#[derive(Clone, Debug)]
pub struct Plan {
    pub spec: Spec,
    pub raft: Vec<SocketAddr>,
    pub http: Vec<SocketAddr>,
}

impl Plan {
    pub fn new(spec: Spec) -> Self {
        let raft = (0..spec.nodes)
            .map(|_| {
                if spec.transport == "quic" {
                    free_udp()
                } else {
                    free_tcp()
                }
            })
            .collect();
        let http = (0..spec.nodes).map(|_| free_tcp()).collect();
        Self { spec, raft, http }
    }

    fn list(addrs: &[SocketAddr]) -> String {
        addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}@{a}", i + 1))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The settings of node `id` (1-based).
    pub fn settings(&self, id: u64, data: &Path) -> ServeSettings {
        let i = id as usize - 1;
        let certs = self
            .spec
            .certs
            .as_ref()
            .map(|d| raft_kv::certs::node_files(d, id));
        ServeSettings {
            id: Some(id),
            raft_listen: Some(self.raft[i].to_string()),
            http_listen: Some(self.http[i].to_string()),
            peers: Some(Self::list(&self.raft)),
            http_peers: Some(Self::list(&self.http)),
            voters: self.spec.voters.clone(),
            transport: Some(self.spec.transport.into()),
            storage: Some(self.spec.storage.into()),
            data_dir: Some(data.join(format!("node-{id}"))),
            partitions: Some(self.spec.partitions),
            max_value_bytes: Some(self.spec.max_value_bytes),
            request_timeout_ms: Some(self.spec.request_timeout_ms),
            election_timeout_min_ms: Some(150),
            election_timeout_max_ms: Some(300),
            heartbeat_ms: Some(30),
            tls_ca: certs.as_ref().map(|c| c.ca.clone()),
            tls_cert: certs.as_ref().map(|c| c.cert.clone()),
            tls_key: certs.map(|c| c.key),
            ..Default::default()
        }
    }

    /// Starts node `id`.
    pub async fn start(&self, id: u64, data: &Path) -> Server {
        let config = ServeConfig::from_settings(self.settings(id, data)).expect("valid settings");
        Server::start(config).await.expect("node starts")
    }

    /// Starts every node and waits until every partition has a leader
    /// known to every node.
    pub async fn start_all(&self, data: &Path) -> Vec<Server> {
        let mut servers = Vec::new();
        for id in 1..=self.spec.nodes {
            servers.push(self.start(id, data).await);
        }
        wait_for_leaders(&servers, self.spec.partitions).await;
        servers
    }
}

/// Waits until each node knows a leader of each partition, and they agree.
pub async fn wait_for_leaders(servers: &[Server], partitions: u64) -> Vec<NodeId> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let leaders: Vec<NodeId> = (0..partitions)
            .filter_map(|p| {
                let seen: Vec<Option<NodeId>> = servers
                    .iter()
                    .map(|s| s.node().leader(GroupId(p)))
                    .collect();
                let first = seen[0]?;
                seen.iter().all(|l| *l == Some(first)).then_some(first)
            })
            .collect();
        if leaders.len() as u64 == partitions {
            return leaders;
        }
        assert!(Instant::now() < deadline, "no agreed leader within 15 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The index (0-based) of the leader of partition 0 among `servers`.
pub fn leader_index(servers: &[Server]) -> usize {
    servers
        .iter()
        .position(|s| s.node().is_leader(GroupId(0)))
        .expect("a leader")
}

pub fn url(server: &Server, path: &str) -> String {
    format!("http://{}{path}", server.http_addr())
}

/// Parses a JSON error body and checks its shape.
pub async fn json_error(response: reqwest::Response) -> serde_json::Value {
    let ct = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(ct.starts_with("application/json"), "content type {ct}");
    let body: serde_json::Value = response.json().await.expect("a JSON error body");
    assert!(body["error"].is_string(), "{body}");
    assert!(body.get("leader").is_some(), "{body}");
    body
}

/// Sends a raw HTTP/1.1 request (`head` without its blank line, then as
/// much of `body` as the server takes) and returns the status and body of
/// the answer. The server may answer, and close, before the body is sent.
pub async fn raw_request(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("{head}\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // The server may stop reading (and close) once it has answered.
    let _ = stream.write_all(body).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within 10 s");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
