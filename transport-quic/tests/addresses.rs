//! `add_address` / `remove_address`: learning a peer's node id from the
//! certificate of the node answering at an address.

mod common;

use std::time::Duration;

use common::{
    Ca, RawNode, address, any_port, close_code_of, config, read_hello, send_hello, start,
    start_node,
};
use raft_api::codec::Hello;
use raft_api::testkit::transport::{DEADLINE, Recorder, eventually, numbered, seq_of};
use raft_api::{NodeId, Transport, TransportError};
use transport_quic::{AddressStatus, QuicTransport, close_code};

const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);
const N3: NodeId = NodeId(3);

fn send_range(t: &QuicTransport, from: NodeId, to: NodeId, range: std::ops::Range<u64>) {
    for seq in range {
        t.send(to, vec![numbered(from, to, seq)]).expect("send");
    }
}

fn seqs(inbox: &Recorder, from: NodeId) -> Vec<u64> {
    inbox.envelopes_from(from).iter().map(seq_of).collect()
}

/// A free UDP port on loopback, with nothing listening on it.
fn free_address() -> String {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.local_addr().expect("bound").to_string()
}

async fn wait_status(t: &QuicTransport, at: &str, want: AddressStatus) {
    eventually(format_args!("{at} to be {want:?}"), DEADLINE, || {
        t.address_status(at) == Some(want)
    })
    .await;
}

#[tokio::test]
async fn add_address_learns_the_node_id_from_the_certificate() {
    let ca = Ca::new("test CA");
    let (t1, i1) = start_node(N1, &ca).await;
    let (t2, i2) = start_node(N2, &ca).await;
    let at = address(&t2);
    assert!(matches!(
        t1.send(N2, vec![numbered(N1, N2, 0)]),
        Err(TransportError::UnknownPeer(N2))
    ));
    t1.add_address(at.clone()).expect("add_address");
    wait_status(&t1, &at, AddressStatus::Peer(N2)).await;
    send_range(&t1, N1, N2, 0..20);
    eventually("node 2 to receive", DEADLINE, || i2.count_from(N1) == 20).await;
    assert_eq!(seqs(&i2, N1), (0..20).collect::<Vec<_>>());
    // The connection made to learn the id is the pair's connection.
    t2.add_peer(N1, address(&t1));
    send_range(&t2, N2, N1, 0..20);
    eventually("node 1 to receive", DEADLINE, || i1.count_from(N2) == 20).await;
    assert_eq!((t1.connections(N2), t2.connections(N1)), (1, 1));
    let (m1, m2) = (t1.metrics(), t2.metrics());
    assert_eq!(m1.addresses_learned, 1, "{m1:?}");
    assert_eq!(m1.connections_opened, 1, "{m1:?}");
    assert_eq!(m2.connections_opened, 0, "{m2:?}");
    assert_eq!(m2.handshakes_rejected, 0, "{m2:?}");
    // Adding it again changes nothing.
    t1.add_address(at.clone()).expect("add_address");
    assert_eq!(t1.address_status(&at), Some(AddressStatus::Peer(N2)));
    t1.shutdown().await;
    t2.shutdown().await;
}

#[tokio::test]
async fn own_address_is_ignored() {
    let ca = Ca::new("test CA");
    let (t1, _) = start_node(N1, &ca).await;
    let at = address(&t1);
    t1.add_address(at.clone()).expect("add_address");
    wait_status(&t1, &at, AddressStatus::Own).await;
    assert!(matches!(
        t1.send(N1, vec![numbered(N1, N1, 0)]),
        Err(TransportError::UnknownPeer(N1))
    ));
    let m = t1.metrics();
    assert_eq!(m.addresses_learned, 0, "{m:?}");
    assert_eq!(m.connections_accepted, 0, "{m:?}");
    assert_eq!(m.handshakes_rejected, 0, "not a refusal: {m:?}");
    assert_eq!(m.connections_open, 0, "{m:?}");
    t1.shutdown().await;
}

#[tokio::test]
async fn add_address_retries_until_a_node_answers() {
    let ca = Ca::new("test CA");
    let mut cfg = config(N1, any_port(), &ca, &ca.node(N1));
    cfg.handshake_timeout = Duration::from_millis(200);
    let (t1, _) = start(cfg).await;
    let at = free_address();
    t1.add_address(at.clone()).expect("add_address");
    eventually("a failed attempt", DEADLINE, || {
        t1.metrics().connect_failures >= 1
    })
    .await;
    assert_eq!(t1.address_status(&at), Some(AddressStatus::Connecting));
    // Node 2 comes up there.
    let (t2, i2) = start(config(N2, at.parse().expect("address"), &ca, &ca.node(N2))).await;
    wait_status(&t1, &at, AddressStatus::Peer(N2)).await;
    send_range(&t1, N1, N2, 0..5);
    eventually("node 2 to receive", DEADLINE, || i2.count_from(N1) == 5).await;
    t1.shutdown().await;
    t2.shutdown().await;
}

#[tokio::test]
async fn add_address_before_start_is_tried_once_started() {
    let ca = Ca::new("test CA");
    let (t2, i2) = start_node(N2, &ca).await;
    let t1 = QuicTransport::new(config(N1, any_port(), &ca, &ca.node(N1))).expect("config");
    let at = address(&t2);
    t1.add_address(at.clone()).expect("add_address");
    assert_eq!(t1.address_status(&at), Some(AddressStatus::Connecting));
    t1.start(Recorder::new()).await.expect("start");
    wait_status(&t1, &at, AddressStatus::Peer(N2)).await;
    send_range(&t1, N1, N2, 0..3);
    eventually("node 2 to receive", DEADLINE, || i2.count_from(N1) == 3).await;
    t1.shutdown().await;
    t2.shutdown().await;
}

#[tokio::test]
async fn remove_address_stops_trying() {
    let ca = Ca::new("test CA");
    let mut cfg = config(N1, any_port(), &ca, &ca.node(N1));
    cfg.handshake_timeout = Duration::from_millis(100);
    let (t1, _) = start(cfg).await;
    let at = free_address();
    t1.add_address(at.clone()).expect("add_address");
    eventually("a failed attempt", DEADLINE, || {
        t1.metrics().connect_failures >= 1
    })
    .await;
    t1.remove_address(&at);
    assert_eq!(t1.address_status(&at), None);
    let (t2, _) = start(config(N2, at.parse().expect("address"), &ca, &ca.node(N2))).await;
    // Several backoff periods (at most 250 ms in tests) for a wrong
    // implementation to show itself.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let m = t2.metrics();
    assert_eq!(m.connections_accepted + m.handshakes_rejected, 0, "{m:?}");
    assert_eq!(t1.metrics().addresses_learned, 0);
    t1.shutdown().await;
    t2.shutdown().await;
}

#[tokio::test]
async fn remove_address_forgets_the_learned_peer() {
    let ca = Ca::new("test CA");
    let (t1, _) = start_node(N1, &ca).await;
    let (t2, i2) = start_node(N2, &ca).await;
    let at = address(&t2);
    t1.add_address(at.clone()).expect("add_address");
    wait_status(&t1, &at, AddressStatus::Peer(N2)).await;
    send_range(&t1, N1, N2, 0..3);
    eventually("node 2 to receive", DEADLINE, || i2.count_from(N1) == 3).await;
    t1.remove_address(&at);
    assert_eq!(t1.address_status(&at), None);
    assert!(matches!(
        t1.send(N2, vec![numbered(N1, N2, 3)]),
        Err(TransportError::UnknownPeer(N2))
    ));
    eventually("the connection to close", DEADLINE, || {
        t1.connections(N2) == 0 && t2.connections(N1) == 0
    })
    .await;
    t1.shutdown().await;
    t2.shutdown().await;
}

#[tokio::test]
async fn remove_address_keeps_a_peer_whose_address_changed_since() {
    let ca = Ca::new("test CA");
    let (t1, _) = start_node(N1, &ca).await;
    let (t2, _) = start_node(N2, &ca).await;
    let at = address(&t2);
    t1.add_address(at.clone()).expect("add_address");
    wait_status(&t1, &at, AddressStatus::Peer(N2)).await;
    // Node 2 is given by id at another address (say, by DNS SRV).
    let alias = format!("localhost:{}", t2.local_addr().expect("bound").port());
    t1.add_peer(N2, alias);
    t1.remove_address(&at);
    assert!(t1.send(N2, vec![numbered(N1, N2, 0)]).is_ok());
    t1.shutdown().await;
    t2.shutdown().await;
}

#[tokio::test]
async fn add_address_refuses_a_server_of_another_ca() {
    let ca = Ca::new("cluster CA");
    let rogue = Ca::new("rogue CA");
    let (t1, _) = start_node(N1, &ca).await;
    let (intruder, _) = start(config(N2, any_port(), &ca, &rogue.node(N2))).await;
    let at = address(&intruder);
    t1.add_address(at.clone()).expect("add_address");
    eventually("two failed attempts", DEADLINE, || {
        t1.metrics().connect_failures >= 2
    })
    .await;
    assert_eq!(t1.address_status(&at), Some(AddressStatus::Connecting));
    let m = t1.metrics();
    assert_eq!((m.addresses_learned, m.connections_open), (0, 0), "{m:?}");
    t1.shutdown().await;
    intruder.shutdown().await;
}

#[tokio::test]
async fn add_address_refuses_a_certificate_naming_no_node() {
    let ca = Ca::new("cluster CA");
    let (t1, _) = start_node(N1, &ca).await;
    let raw = RawNode::new(&ca, &ca.with_names(vec!["example.com".into()]));
    let _handshakes = raw.keep_accepting();
    let at = raw.address();
    t1.add_address(at.clone()).expect("add_address");
    eventually("two failed attempts", DEADLINE, || {
        t1.metrics().connect_failures >= 2
    })
    .await;
    assert_eq!(t1.address_status(&at), Some(AddressStatus::Connecting));
    assert_eq!(t1.metrics().addresses_learned, 0);
    t1.shutdown().await;
}

/// The id comes from the certificate, and the node must confirm it with
/// its answering hello: an answer naming another node is refused, and
/// nothing is learned from it.
#[tokio::test]
async fn an_answer_naming_another_node_than_the_certificate_is_refused() {
    let ca = Ca::new("cluster CA");
    let (t1, _) = start_node(N1, &ca).await;
    let raw = RawNode::new(&ca, &ca.node(N2));
    let at = raw.address();
    t1.add_address(at.clone()).expect("add_address");
    let from_t1 = raw.accept().await;
    let (hello, _) = read_hello(&from_t1).await;
    assert_eq!(hello, Hello::new(common::CLUSTER, N1));
    let _lie = send_hello(&from_t1, N3).await;
    assert_eq!(close_code_of(&from_t1).await, Some(close_code::REJECTED));
    eventually("the failed attempt", DEADLINE, || {
        t1.metrics().connect_failures >= 1
    })
    .await;
    assert_eq!(t1.address_status(&at), Some(AddressStatus::Connecting));
    for id in [N2, N3] {
        assert!(matches!(
            t1.send(id, vec![numbered(N1, id, 0)]),
            Err(TransportError::UnknownPeer(_))
        ));
    }
    t1.shutdown().await;
}

/// An answer of another cluster is refused the same way.
#[tokio::test]
async fn an_answer_of_another_cluster_is_refused() {
    let ca = Ca::new("cluster CA");
    let (t1, _) = start_node(N1, &ca).await;
    let raw = RawNode::new(&ca, &ca.node(N2));
    let at = raw.address();
    t1.add_address(at.clone()).expect("add_address");
    let from_t1 = raw.accept().await;
    let _ = read_hello(&from_t1).await;
    let mut control = from_t1.open_uni().await.expect("stream");
    control
        .write_all(&Hello::new(common::CLUSTER + 1, N2).encode())
        .await
        .expect("write");
    assert_eq!(close_code_of(&from_t1).await, Some(close_code::REJECTED));
    assert_eq!(t1.address_status(&at), Some(AddressStatus::Connecting));
    assert!(matches!(
        t1.send(N2, vec![numbered(N1, N2, 0)]),
        Err(TransportError::UnknownPeer(N2))
    ));
    t1.shutdown().await;
}

/// Two nodes that each learn the other by address end up sharing one
/// connection, and talk both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_learning_each_other_by_address_share_one_connection() {
    let ca = Ca::new("test CA");
    let (t1, i1) = start_node(N1, &ca).await;
    let (t2, i2) = start_node(N2, &ca).await;
    let (a1, a2) = (address(&t1), address(&t2));
    t1.add_address(a2.clone()).expect("add_address");
    t2.add_address(a1.clone()).expect("add_address");
    wait_status(&t1, &a2, AddressStatus::Peer(N2)).await;
    wait_status(&t2, &a1, AddressStatus::Peer(N1)).await;
    send_range(&t1, N1, N2, 0..20);
    send_range(&t2, N2, N1, 0..20);
    eventually("both directions", DEADLINE, || {
        i2.count_from(N1) == 20 && i1.count_from(N2) == 20
    })
    .await;
    assert_eq!(seqs(&i2, N1), (0..20).collect::<Vec<_>>());
    assert_eq!(seqs(&i1, N2), (0..20).collect::<Vec<_>>());
    eventually("one connection each", DEADLINE, || {
        t1.connections(N2) == 1 && t2.connections(N1) == 1
    })
    .await;
    t1.shutdown().await;
    t2.shutdown().await;
}

#[tokio::test]
async fn bad_addresses_are_refused() {
    let ca = Ca::new("test CA");
    let (t1, _) = start_node(N1, &ca).await;
    for bad in ["no-port", "host:notaport", ":7000"] {
        assert!(
            matches!(t1.add_address(bad.into()), Err(TransportError::Other(_))),
            "{bad}"
        );
        assert_eq!(t1.address_status(bad), None);
    }
    t1.shutdown().await;
    assert!(matches!(
        t1.add_address("127.0.0.1:7000".into()),
        Err(TransportError::Closed)
    ));
}
