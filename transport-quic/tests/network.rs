//! End-to-end tests of [`QuicTransport`] over loopback: delivery, snapshot
//! streams, certificate checks, restarts.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Ca, RawClient, address, any_port, config, start, start_node};
use raft_api::codec::Hello;
use raft_api::testkit::transport::{DEADLINE, Recorder, eventually, numbered, seq_of};
use raft_api::{
    Envelope, GroupId, HeartbeatRequest, LogIndex, Message, NodeId, SnapshotChunk, Term, Transport,
    TransportError,
};
use transport_quic::{QuicConfig, QuicError, QuicTransport};

const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);
const N3: NodeId = NodeId(3);

fn seqs(inbox: &Recorder, from: NodeId) -> Vec<u64> {
    inbox.envelopes_from(from).iter().map(seq_of).collect()
}

#[tokio::test]
async fn three_nodes_deliver_batches_in_order() {
    let ca = Ca::new("test CA");
    let (t1, i1) = start_node(N1, &ca).await;
    let (t2, i2) = start_node(N2, &ca).await;
    let (t3, i3) = start_node(N3, &ca).await;
    for (t, others) in [
        (&t1, [(N2, &t2), (N3, &t3)]),
        (&t2, [(N1, &t1), (N3, &t3)]),
        (&t3, [(N1, &t1), (N2, &t2)]),
    ] {
        for (id, other) in others {
            t.add_peer(id, address(other));
        }
    }
    for seq in (0..300u64).step_by(3) {
        let batch = |from, to| (seq..seq + 3).map(|s| numbered(from, to, s)).collect();
        t1.send(N2, batch(N1, N2)).expect("send");
        t3.send(N2, batch(N3, N2)).expect("send");
        t2.send(N1, batch(N2, N1)).expect("send");
    }
    eventually("all batches delivered", DEADLINE, || {
        i2.count_from(N1) == 300 && i2.count_from(N3) == 300 && i1.count_from(N2) == 300
    })
    .await;
    let want: Vec<u64> = (0..300).collect();
    assert_eq!(seqs(&i2, N1), want);
    assert_eq!(seqs(&i2, N3), want);
    assert_eq!(seqs(&i1, N2), want);
    assert_eq!(i3.batch_count(), 0);
    assert_eq!(t1.metrics().batches_sent, 100);
    assert_eq!(t2.metrics().batches_received, 200);
    assert_eq!(t2.metrics().connections_accepted, 2);
    assert_eq!(t1.metrics().dropped_batches(), 0);
    for t in [t1, t2, t3] {
        t.shutdown().await;
    }
}

#[tokio::test]
async fn large_snapshot_chunk_does_not_hold_up_heartbeats() {
    let ca = Ca::new("test CA");
    let (t1, _) = start_node(N1, &ca).await;
    let (t2, i2) = start_node(N2, &ca).await;
    t1.add_peer(N2, address(&t2));
    // Open the connection first.
    t1.send(N2, vec![numbered(N1, N2, 0)]).expect("send");
    eventually("first message", DEADLINE, || i2.count_from(N1) == 1).await;

    let chunk = Envelope {
        group: GroupId(1),
        from: N1,
        to: N2,
        term: Term(1),
        msg: Message::Snapshot(Box::new(SnapshotChunk {
            meta: Default::default(),
            total: 4 << 20,
            offset: 0,
            data: Bytes::from(vec![0xA5; 4 << 20]),
            stream: 1,
        })),
    };
    let heartbeat = Envelope {
        group: GroupId(1),
        from: N1,
        to: N2,
        term: Term(1),
        msg: Message::Heartbeat(HeartbeatRequest {
            commit: LogIndex(5),
            round: 9,
        }),
    };
    t1.send(N2, vec![chunk.clone()]).expect("send chunk");
    t1.send(N2, vec![heartbeat.clone()])
        .expect("send heartbeat");
    eventually("chunk and heartbeat", DEADLINE, || i2.count_from(N1) == 3).await;
    let got = i2.envelopes_from(N1);
    assert!(got.contains(&chunk), "the 4 MiB chunk arrived intact");
    assert!(got.contains(&heartbeat), "the heartbeat arrived");
    let m = t1.metrics();
    assert_eq!(m.snapshot_streams, 1, "the chunk went on its own stream");
    assert_eq!(m.batches_sent, 3);
    t1.shutdown().await;
    t2.shutdown().await;
}

#[tokio::test]
async fn certificate_from_another_ca_is_rejected() {
    let ca = Ca::new("cluster CA");
    let rogue = Ca::new("rogue CA");
    let (t1, i1) = start_node(N1, &ca).await;
    // A node that trusts the cluster CA but presents a certificate of
    // another CA: through the transport itself ...
    let (intruder, _) = start(config(N2, any_port(), &ca, &rogue.node(N2))).await;
    intruder.add_peer(N1, address(&t1));
    intruder.send(N1, vec![numbered(N2, N1, 0)]).expect("send");
    eventually("the handshake to be rejected", DEADLINE, || {
        t1.metrics().handshakes_rejected >= 1
    })
    .await;
    // ... and through a raw client, which waits for the outcome.
    let raw = RawClient::new(&ca, &rogue.node(N2));
    let ended = raw
        .try_send(
            &address(&t1),
            N1,
            Hello::new(common::CLUSTER, N2),
            &[numbered(N2, N1, 1)],
        )
        .await;
    assert!(ended, "the connection was refused");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(i1.batch_count(), 0, "nothing delivered");
    let m = t1.metrics();
    assert!(m.handshakes_rejected >= 2, "{m:?}");
    assert_eq!(m.connections_accepted, 0);
    intruder.shutdown().await;
    t1.shutdown().await;
}

#[tokio::test]
async fn hello_naming_another_node_than_the_certificate_is_rejected() {
    let ca = Ca::new("cluster CA");
    let (t1, i1) = start_node(N1, &ca).await;
    // Node 2's certificate, used by a process that claims to be node 3.
    let raw = RawClient::new(&ca, &ca.node(N2));
    let ended = raw
        .try_send(
            &address(&t1),
            N1,
            Hello::new(common::CLUSTER, N3),
            &[numbered(N3, N1, 0)],
        )
        .await;
    assert!(ended, "the connection was closed");
    // A hello of another cluster is refused too.
    let ended = raw
        .try_send(
            &address(&t1),
            N1,
            Hello::new(common::CLUSTER + 1, N2),
            &[numbered(N2, N1, 0)],
        )
        .await;
    assert!(ended, "the connection was closed");
    // So is a certificate of the right CA that names no node.
    let raw = RawClient::new(&ca, &ca.with_names(vec!["example.com".into()]));
    let ended = raw
        .try_send(
            &address(&t1),
            N1,
            Hello::new(common::CLUSTER, N2),
            &[numbered(N2, N1, 0)],
        )
        .await;
    assert!(ended, "the connection was closed");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(i1.batch_count(), 0, "nothing delivered");
    let m = t1.metrics();
    assert_eq!(m.handshakes_rejected, 3, "{m:?}");
    assert_eq!(m.connections_accepted, 0);

    // The same certificate with a truthful hello is accepted.
    let raw = RawClient::new(&ca, &ca.node(N2));
    let connection = raw
        .open(
            &address(&t1),
            N1,
            Hello::new(common::CLUSTER, N2),
            &[numbered(N2, N1, 7)],
        )
        .await
        .expect("handshake");
    eventually("the truthful client's batch", DEADLINE, || {
        i1.count_from(N2) == 1
    })
    .await;
    assert_eq!(t1.metrics().connections_accepted, 1);
    connection.close(0u32.into(), b"done");
    t1.shutdown().await;
}

#[test]
fn constructor_refuses_a_certificate_of_another_node() {
    let ca = Ca::new("cluster CA");
    let err = QuicTransport::new(config(N3, any_port(), &ca, &ca.node(N2)))
        .expect_err("certificate of node 2 for node 3");
    assert!(
        matches!(
            err,
            QuicError::Pem {
                what: "cert_pem",
                ..
            }
        ),
        "{err}"
    );
    let err = QuicTransport::new(config(
        N1,
        any_port(),
        &ca,
        &ca.with_names(vec!["x.raft".into()]),
    ))
    .expect_err("certificate without node id");
    assert!(
        matches!(
            err,
            QuicError::Pem {
                what: "cert_pem",
                ..
            }
        ),
        "{err}"
    );
    let mut bad = config(N1, any_port(), &ca, &ca.node(N1));
    bad.key_pem = "no key here".into();
    assert!(matches!(
        QuicTransport::new(bad),
        Err(QuicError::Pem {
            what: "key_pem",
            ..
        })
    ));
    let mut bad = config(N1, any_port(), &ca, &ca.node(N1));
    bad.ca_pem = transport_quic::PemSource::File("/nonexistent/ca.pem".into());
    assert!(matches!(
        QuicTransport::new(bad),
        Err(QuicError::Pem { what: "ca_pem", .. })
    ));
}

#[tokio::test]
async fn pem_files_on_disk_work() {
    let ca = Ca::new("cluster CA");
    let dir = std::env::temp_dir().join(format!("transport-quic-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let node = ca.node(N1);
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    std::fs::write(dir.join("node.pem"), &node.cert_pem).expect("write");
    std::fs::write(dir.join("node.key"), &node.key_pem).expect("write");
    let config = QuicConfig::new(
        N1,
        common::CLUSTER,
        any_port(),
        dir.join("ca.pem").into(),
        dir.join("node.pem").into(),
        dir.join("node.key").into(),
    );
    let transport = QuicTransport::new(config);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(transport.is_ok(), "{:?}", transport.err());
}

#[tokio::test]
async fn peer_restart_reconnects() {
    let ca = Ca::new("test CA");
    let (t1, _) = start_node(N1, &ca).await;
    let n2_cert = ca.node(N2);
    let (t2, i2) = start(config(N2, any_port(), &ca, &n2_cert)).await;
    let n2_address = t2.local_addr().expect("started");
    t1.add_peer(N2, n2_address.to_string());
    t1.send(N2, vec![numbered(N1, N2, 0)]).expect("send");
    eventually("first delivery", DEADLINE, || i2.count_from(N1) == 1).await;

    t2.shutdown().await;
    drop(t2);
    // Sends while it is down: never block, may be lost.
    for seq in 1..10 {
        let _ = t1.send(N2, vec![numbered(N1, N2, seq)]);
    }
    let (t2, i2) = start(config(N2, n2_address, &ca, &n2_cert)).await;
    let mut seq = 100;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while i2.count_from(N1) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never reconnected");
        t1.send(N2, vec![numbered(N1, N2, seq)]).expect("send");
        seq += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(t1.metrics().connections_opened >= 2, "{:?}", t1.metrics());
    t1.shutdown().await;
    t2.shutdown().await;
}

#[tokio::test]
async fn full_queue_drops_and_counts() {
    let ca = Ca::new("test CA");
    let mut cfg = config(N1, any_port(), &ca, &ca.node(N1));
    cfg.queue_capacity = 4;
    let (t1, _) = start(cfg).await;
    // Nobody listens there: the writer keeps failing to connect.
    t1.add_peer(N2, "127.0.0.1:9".into());
    for seq in 0..1_000 {
        t1.send(N2, vec![numbered(N1, N2, seq)])
            .expect("send never fails");
    }
    assert!(t1.metrics().dropped_queue_full > 0, "{:?}", t1.metrics());
    assert!(t1.queued(N2) <= 4);
    assert!(matches!(
        t1.send(NodeId(9), vec![numbered(N1, NodeId(9), 0)]),
        Err(TransportError::UnknownPeer(NodeId(9)))
    ));
    t1.shutdown().await;
    assert!(matches!(
        t1.send(N2, vec![numbered(N1, N2, 0)]),
        Err(TransportError::Closed)
    ));
}
