//! Generated certificates work for the mutual TLS of both transports.

#![allow(missing_docs)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{Plan, Spec, url};
use raft_kv::client::Client;
use raft_node::driver::Consistency;

/// Writes through one node and reads back from each, with the client.
async fn replicates(servers: &[raft_kv::server::Server]) {
    let list: Vec<String> = servers.iter().map(|s| s.http_addr().to_string()).collect();
    let client = Client::new(list).unwrap();
    client.put("tls", "works").await.unwrap();
    for s in servers {
        let one = Client::new([s.http_addr().to_string()]).unwrap();
        let v = one.get("tls", Consistency::Linearizable).await.unwrap();
        assert_eq!(v.as_deref(), Some(&b"works"[..]), "{}", url(s, ""));
    }
}

#[test]
fn files_are_written_with_private_keys_kept_private() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    let files =
        raft_kv::certs::generate(&out, &[1, 2], &["localhost".into(), "127.0.0.1".into()]).unwrap();
    for name in [
        "ca.pem",
        "ca-key.pem",
        "node-1.pem",
        "node-1-key.pem",
        "node-2.pem",
        "node-2-key.pem",
    ] {
        assert!(out.join(name).is_file(), "{name}");
    }
    assert_eq!(files.nodes.len(), 2);
    for key in ["ca-key.pem", "node-1-key.pem"] {
        let mode = std::fs::metadata(out.join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{key} is readable by others");
    }
    let ca = std::fs::read_to_string(out.join("ca.pem")).unwrap();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
    // Generating more nodes keeps the existing CA.
    raft_kv::certs::generate(&out, &[3], &[]).unwrap();
    assert_eq!(std::fs::read_to_string(out.join("ca.pem")).unwrap(), ca);
    assert!(raft_kv::certs::generate(&out, &[], &[]).is_err());
    assert!(raft_kv::certs::generate(&out, &[0], &[]).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quic_cluster_runs_on_generated_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    raft_kv::certs::generate(&certs, &[1, 2], &["localhost".into()]).unwrap();
    // Node 3's certificate comes from a later run, signed by the same CA.
    raft_kv::certs::generate(&certs, &[3], &[]).unwrap();
    let mut spec = Spec::new(3, "quic", "mem");
    spec.certs = Some(certs);
    let plan = Plan::new(spec);
    let servers = plan.start_all(dir.path()).await;
    replicates(&servers).await;
    for s in servers {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_tcp_cluster_runs_on_generated_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    raft_kv::certs::generate(&certs, &[1, 2, 3], &[]).unwrap();
    let mut spec = Spec::new(3, "tcp", "mem");
    spec.certs = Some(certs);
    let plan = Plan::new(spec);
    let servers = plan.start_all(dir.path()).await;
    replicates(&servers).await;
    for s in servers {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_certificate_of_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    raft_kv::certs::generate(&certs, &[1, 2], &[]).unwrap();
    let other = dir.path().join("other");
    raft_kv::certs::generate(&other, &[3], &[]).unwrap();
    for name in ["node-3.pem", "node-3-key.pem"] {
        std::fs::copy(other.join(name), certs.join(name)).unwrap();
    }
    let mut spec = Spec::new(3, "quic", "mem");
    spec.certs = Some(certs);
    let plan = Plan::new(spec);
    // Nodes 1 and 2 form a quorum; node 3 (its certificate from another
    // CA, its CA file the cluster's) never hears from them.
    let mut servers = Vec::new();
    for id in 1..=3 {
        servers.push(plan.start(id, dir.path()).await);
    }
    common::wait_for_leaders(&servers[..2], 1).await;
    Client::new([servers[0].http_addr().to_string()])
        .unwrap()
        .put("k", "v")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let outsider = Client::new([servers[2].http_addr().to_string()])
        .unwrap()
        .with_retry_for(Duration::from_millis(100));
    assert_eq!(outsider.get("k", Consistency::Stale).await.unwrap(), None);
    assert!(servers[2].node().leader(raft_api::GroupId(0)).is_none());
    for s in servers {
        s.shutdown().await;
    }
}
