//! The end-to-end harness itself: the local cluster manager against real
//! `raft-kv serve` processes (start, ready line, SIGKILL and restart with
//! the same data, SIGSTOP/SIGCONT, SIGTERM, logs, cleanup on drop) and the
//! TCP and UDP fault proxies.

#[path = "e2e/proxy.rs"]
mod proxy;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use proxy::{FaultNet, Protocol};
use raft_kv::local_cluster::{ClusterConfig, LocalCluster, NodeState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

const BINARY: &str = env!("CARGO_BIN_EXE_raft-kv");

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap()
}

async fn put(url: &str, key: &str, value: &str) -> reqwest::StatusCode {
    http()
        .put(format!("{url}/kv/{key}"))
        .body(value.to_string())
        .send()
        .await
        .map(|r| r.status())
        .unwrap_or(reqwest::StatusCode::SERVICE_UNAVAILABLE)
}

async fn put_until_ok(url: &str, key: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while put(url, key, value).await != reqwest::StatusCode::OK {
        assert!(
            Instant::now() < deadline,
            "PUT {key} never succeeded via {url}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get_stale(url: &str, key: &str) -> Option<String> {
    let r = http()
        .get(format!("{url}/kv/{key}?consistency=stale"))
        .send()
        .await
        .ok()?;
    if r.status() != reqwest::StatusCode::OK {
        return None;
    }
    r.text().await.ok()
}

fn config(dir: &Path, nodes: u64) -> ClusterConfig {
    let mut config = ClusterConfig::new(BINARY, nodes, dir);
    config.election_timeout_ms = Some((200, 400));
    config.heartbeat_ms = Some(40);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cluster_kills_pauses_restarts_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::new(config(dir.path(), 3)).unwrap();
    assert_eq!(cluster.ids(), vec![1, 2, 3]);
    assert!(cluster.running().is_empty());
    cluster.start_all().await.unwrap();
    assert_eq!(cluster.running(), vec![1, 2, 3]);
    let (leader, term) = cluster
        .wait_for_leader(0, Duration::from_secs(20))
        .await
        .unwrap();
    let status = cluster.status(leader).await.unwrap();
    assert_eq!(status.node, leader);
    assert_eq!(status.partitions[0].voters, vec![1, 2, 3]);

    // Written before the kill, found after the restart (LMDB data kept).
    put_until_ok(&cluster.url(leader), "kept", "before-kill").await;
    cluster.kill(leader).unwrap();
    assert_eq!(cluster.state(leader), NodeState::Stopped);
    assert!(cluster.kill(leader).is_err(), "killing a stopped node");
    let (next, next_term) = cluster
        .wait_for_leader(0, Duration::from_secs(20))
        .await
        .unwrap();
    assert_ne!(next, leader);
    assert!(next_term > term);
    cluster.start(leader).await.unwrap();
    assert!(
        cluster.start(leader).await.is_err(),
        "starting a running node"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while get_stale(&cluster.url(leader), "kept").await.as_deref() != Some("before-kill") {
        assert!(Instant::now() < deadline, "restarted node lacks the write");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = std::fs::read_to_string(cluster.log_path(leader)).unwrap();
    assert!(log.contains(&format!("start #2 of node {leader}")), "{log}");

    // A paused leader is replaced; resumed, it follows.
    let (paused, _) = cluster
        .wait_for_leader(0, Duration::from_secs(20))
        .await
        .unwrap();
    cluster.pause(paused).unwrap();
    assert_eq!(cluster.state(paused), NodeState::Paused);
    assert!(!cluster.running().contains(&paused));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some((l, _)) = cluster.leader(0).await
            && l != paused
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new leader while {paused} is paused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.resume(paused).unwrap();
    assert_eq!(cluster.state(paused), NodeState::Running);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = cluster.status(paused).await.unwrap();
        if status.partitions[0].role == "follower" {
            break;
        }
        assert!(Instant::now() < deadline, "resumed node never followed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // SIGTERM: a graceful exit with status 0.
    let status = cluster
        .terminate(paused, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(cluster.state(paused), NodeState::Stopped);

    // Dropping the cluster kills the rest.
    let pids: Vec<u32> = cluster
        .ids()
        .iter()
        .filter_map(|&id| cluster.pid(id))
        .collect();
    assert_eq!(pids.len(), 2);
    drop(cluster);
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "{pid} survived"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_start_is_reported_with_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), 1);
    config.transport = "carrier-pigeon".into();
    let mut cluster = LocalCluster::new(config).unwrap();
    let err = format!("{:#}", cluster.start(1).await.unwrap_err());
    assert!(err.contains("node 1 exited before it was ready"), "{err}");
    assert!(
        err.contains("carrier-pigeon"),
        "the log tail names the problem: {err}"
    );
    assert_eq!(cluster.state(1), NodeState::Stopped);
}

/// A TCP echo server.
async fn echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

async fn tcp_echo(addr: std::net::SocketAddr) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(b"ping").await?;
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf))
        .await
        .map_err(|_| std::io::ErrorKind::TimedOut)??;
    Ok(buf.to_vec())
}

#[tokio::test]
async fn tcp_proxy_forwards_until_cut_and_closes_connections_when_cut() {
    let targets: BTreeMap<u64, _> =
        BTreeMap::from([(1, echo_server().await), (2, echo_server().await)]);
    let net = FaultNet::start(Protocol::Tcp, &targets).await.unwrap();
    assert_eq!(net.pairs(), vec![(1, 2), (2, 1)]);
    assert_eq!(tcp_echo(net.addr(1, 2)).await.unwrap(), b"ping");

    // An open connection is closed by the cut.
    let mut open = TcpStream::connect(net.addr(1, 2)).await.unwrap();
    open.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    open.read_exact(&mut buf).await.unwrap();
    net.cut_one_way(1, 2);
    let n = tokio::time::timeout(Duration::from_secs(2), open.read(&mut buf))
        .await
        .expect("the cut closes the connection");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    // New connections are refused (closed at once); the other way works.
    assert!(tcp_echo(net.addr(1, 2)).await.is_err());
    assert_eq!(tcp_echo(net.addr(2, 1)).await.unwrap(), b"ping");

    net.heal();
    assert_eq!(tcp_echo(net.addr(1, 2)).await.unwrap(), b"ping");
    net.split(&BTreeSet::from([2]));
    assert!(tcp_echo(net.addr(1, 2)).await.is_err());
    assert!(tcp_echo(net.addr(2, 1)).await.is_err());
}

/// A UDP echo server.
async fn udp_echo_server() -> std::net::SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    addr
}

async fn udp_echo(client: &UdpSocket, via: std::net::SocketAddr) -> Option<Vec<u8>> {
    client.send_to(b"ping", via).await.unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = tokio::time::timeout(Duration::from_millis(300), client.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    assert_eq!(from, via, "answers come back from the proxy");
    Some(buf[..n].to_vec())
}

#[tokio::test]
async fn udp_proxy_forwards_both_ways_and_drops_when_cut() {
    let targets = BTreeMap::from([
        (1, udp_echo_server().await),
        (2, udp_echo_server().await),
        (3, udp_echo_server().await),
    ]);
    let net = FaultNet::start(Protocol::Udp, &targets).await.unwrap();
    assert_eq!(net.pairs().len(), 6);
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert_eq!(
        udp_echo(&client, net.addr(1, 3)).await.as_deref(),
        Some(&b"ping"[..])
    );
    net.split(&BTreeSet::from([3]));
    assert_eq!(udp_echo(&client, net.addr(1, 3)).await, None);
    assert_eq!(udp_echo(&client, net.addr(3, 2)).await, None);
    assert_eq!(
        udp_echo(&client, net.addr(1, 2)).await.as_deref(),
        Some(&b"ping"[..])
    );
    net.heal();
    assert_eq!(
        udp_echo(&client, net.addr(1, 3)).await.as_deref(),
        Some(&b"ping"[..])
    );
}
