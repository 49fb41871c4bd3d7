//! Bad input on the port, restarts on the same port, and bounded queues
//! (SCENARIOS.md cases 25 and 26 for the TCP transport).

mod common;

use std::time::Duration;

use bytes::BytesMut;
use common::{CLUSTER, address, any_port, closed_by_peer, config, raw_connect, start};
use raft_api::codec::{FrameCodec, FrameHeader, HEADER_LEN, Hello, PROTOCOL_VERSION};
use raft_api::testkit::transport::{DEADLINE, eventually, numbered};
use raft_api::{Envelope, Message, NodeId, Transport, TransportError};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use transport_tcp::{TcpConfig, TcpTransport};

const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);

/// Writes `bytes`, ignoring errors: the other end may already have closed.
async fn write(stream: &mut TcpStream, bytes: &[u8]) {
    let _ = stream.write_all(bytes).await;
    let _ = stream.flush().await;
}

/// A frame of `batch` for this test cluster.
fn frame(batch: &[Envelope]) -> Vec<u8> {
    FrameCodec::new(CLUSTER, 1 << 20)
        .encode(batch)
        .expect("encodes")
        .to_vec()
}

fn hello(node: NodeId) -> [u8; raft_api::codec::HELLO_LEN] {
    Hello::new(CLUSTER, node).encode()
}

/// Checks that a node still serves a regular peer: `sender` reaches
/// `receiver`'s inbox with a fresh batch.
async fn still_serves(
    sender: &TcpTransport,
    receiver: &raft_api::testkit::transport::Recorder,
    to: NodeId,
    seq: u64,
) {
    let from = sender.config().node_id;
    sender
        .send(to, vec![numbered(from, to, seq)])
        .expect("send");
    eventually("the node to keep serving", DEADLINE, || {
        receiver
            .envelopes_from(from)
            .iter()
            .any(|e| e.term.0 == seq)
    })
    .await;
}

/// Case 25: garbage instead of a hello, and garbage after a valid hello,
/// each close that connection; the node keeps serving its peers and a
/// well-behaved raw connection.
#[tokio::test]
async fn garbage_bytes_close_the_connection_and_the_node_keeps_serving() {
    let (n2, inbox) = start(config(N2, any_port())).await;
    let (n1, _) = start(config(N1, any_port())).await;
    n1.add_peer(N2, address(&n2));
    still_serves(&n1, &inbox, N2, 1).await;

    // Garbage from the first byte.
    let mut garbage = raw_connect(&address(&n2)).await;
    write(&mut garbage, b"GET / HTTP/1.1\r\nHost: raft\r\n\r\n").await;
    assert!(closed_by_peer(&mut garbage).await, "garbage hello: closed");

    // A valid hello, then garbage.
    let mut late = raw_connect(&address(&n2)).await;
    write(&mut late, &hello(NodeId(7))).await;
    write(&mut late, &[0xde, 0xad, 0xbe, 0xef].repeat(64)).await;
    assert!(closed_by_peer(&mut late).await, "garbage frame: closed");

    // A valid frame after a valid hello, then a corrupt one: the first is
    // delivered, the second closes the connection.
    let mut raw = raw_connect(&address(&n2)).await;
    write(&mut raw, &hello(NodeId(7))).await;
    write(&mut raw, &frame(&[numbered(NodeId(7), N2, 100)])).await;
    let mut corrupt = frame(&[numbered(NodeId(7), N2, 101)]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    write(&mut raw, &corrupt).await;
    assert!(closed_by_peer(&mut raw).await, "corrupt frame: closed");
    let from_raw: Vec<u64> = inbox
        .envelopes_from(NodeId(7))
        .iter()
        .map(|e| e.term.0)
        .collect();
    assert_eq!(from_raw, [100], "only the valid frame was delivered");

    still_serves(&n1, &inbox, N2, 2).await;
    let metrics = n2.metrics();
    assert_eq!(metrics.handshakes_refused, 1);
    assert_eq!(metrics.handshake_timeouts, 0, "a bad hello is no timeout");
    assert_eq!(metrics.decode_errors, 2);
    n1.shutdown().await;
    n2.shutdown().await;
}

/// Case 25: a frame header announcing more than the maximum closes the
/// connection at once, without waiting for (or buffering) the payload.
#[tokio::test]
async fn an_oversized_frame_header_closes_the_connection() {
    let (n2, inbox) = start(config(N2, any_port())).await;
    let max = n2.config().max_frame_bytes;
    let mut raw = raw_connect(&address(&n2)).await;
    write(&mut raw, &hello(N1)).await;
    let header = FrameHeader {
        version: PROTOCOL_VERSION,
        cluster_id: CLUSTER,
        payload_len: u32::try_from(max - HEADER_LEN + 1).expect("fits"),
        crc: 0,
    };
    // The header alone, and the connection stays open on our side: the
    // node must not wait for the payload.
    write(&mut raw, &header.encode()).await;
    assert!(closed_by_peer(&mut raw).await, "oversized header: closed");
    assert_eq!(n2.metrics().decode_errors, 1);
    assert_eq!(inbox.batch_count(), 0);

    // A truncated frame (the peer hangs up in the middle) is dropped too.
    let mut raw = raw_connect(&address(&n2)).await;
    let whole = frame(&[numbered(N1, N2, 5)]);
    write(&mut raw, &hello(N1)).await;
    write(&mut raw, &whole[..whole.len() / 2]).await;
    drop(raw);

    // The node keeps serving.
    let (n1, _) = start(config(N1, any_port())).await;
    n1.add_peer(N2, address(&n2));
    still_serves(&n1, &inbox, N2, 6).await;
    let terms: Vec<u64> = inbox.envelopes_from(N1).iter().map(|e| e.term.0).collect();
    assert_eq!(terms, [6], "nothing of the truncated frame was delivered");
    n1.shutdown().await;
    n2.shutdown().await;
}

/// Case 26: a hello of another cluster is refused and nothing from that
/// connection is delivered, whether it comes from a raw socket or from a
/// transport of the other cluster; a frame of another cluster after a
/// valid hello closes the connection.
#[tokio::test]
async fn another_cluster_is_refused() {
    let (n2, inbox) = start(config(N2, any_port())).await;

    let mut raw = raw_connect(&address(&n2)).await;
    write(&mut raw, &Hello::new(CLUSTER + 1, N1).encode()).await;
    let foreign = FrameCodec::new(CLUSTER + 1, 1 << 20)
        .encode(&[numbered(N1, N2, 1)])
        .expect("encodes");
    write(&mut raw, &foreign).await;
    assert!(closed_by_peer(&mut raw).await, "foreign hello: closed");

    let mut raw = raw_connect(&address(&n2)).await;
    write(&mut raw, &hello(N1)).await;
    write(&mut raw, &foreign).await;
    assert!(closed_by_peer(&mut raw).await, "foreign frame: closed");

    let stranger_config = TcpConfig {
        cluster_id: CLUSTER + 1,
        ..config(NodeId(9), any_port())
    };
    let (stranger, _) = start(stranger_config).await;
    stranger.add_peer(N2, address(&n2));
    for seq in 0..20 {
        let _ = stranger.send(N2, vec![numbered(NodeId(9), N2, seq)]);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eventually("the stranger's hello to be refused", DEADLINE, || {
        n2.metrics().handshakes_refused >= 2
    })
    .await;
    assert_eq!(inbox.batch_count(), 0, "nothing from another cluster");
    assert_eq!(
        n2.metrics().connections_accepted,
        1,
        "only the raw hello of this cluster"
    );
    stranger.shutdown().await;
    n2.shutdown().await;
}

/// Case 26: a connection cannot pass off envelopes as coming from another
/// node than the one that said hello.
#[tokio::test]
async fn envelopes_from_another_node_than_the_hello_are_refused() {
    let (n2, inbox) = start(config(N2, any_port())).await;
    let mut raw = raw_connect(&address(&n2)).await;
    write(&mut raw, &hello(NodeId(7))).await;
    write(&mut raw, &frame(&[numbered(NodeId(8), N2, 1)])).await;
    assert!(closed_by_peer(&mut raw).await, "impersonation: closed");
    assert_eq!(inbox.batch_count(), 0);
    assert_eq!(n2.metrics().decode_errors, 1);
    n2.shutdown().await;
}

/// A hello that never comes is given up after the handshake timeout.
#[tokio::test]
async fn a_silent_connection_is_closed_after_the_handshake_timeout() {
    let (n2, _) = start(TcpConfig {
        handshake_timeout: Duration::from_millis(100),
        ..config(N2, any_port())
    })
    .await;
    let mut raw = raw_connect(&address(&n2)).await;
    write(&mut raw, b"RAF").await;
    assert!(closed_by_peer(&mut raw).await, "part of a hello: closed");
    let mut mute = raw_connect(&address(&n2)).await;
    assert!(closed_by_peer(&mut mute).await, "no byte at all: closed");
    let metrics = n2.metrics();
    assert_eq!(metrics.handshakes_refused, 2, "{metrics:?}");
    assert_eq!(metrics.handshake_timeouts, 2, "{metrics:?}");
    assert_eq!(metrics.connections_accepted, 0, "{metrics:?}");
    n2.shutdown().await;
}

/// Connections beyond the limit are closed at once; the others are served.
#[tokio::test]
async fn connections_beyond_the_limit_are_closed() {
    let (n2, inbox) = start(TcpConfig {
        max_inbound_connections: 1,
        ..config(N2, any_port())
    })
    .await;
    let mut first = raw_connect(&address(&n2)).await;
    write(&mut first, &hello(N1)).await;
    eventually("the first connection to be accepted", DEADLINE, || {
        n2.metrics().connections_accepted == 1
    })
    .await;
    let mut second = raw_connect(&address(&n2)).await;
    assert!(closed_by_peer(&mut second).await, "over the limit: closed");
    write(&mut first, &frame(&[numbered(N1, N2, 1)])).await;
    eventually("the first connection to deliver", DEADLINE, || {
        inbox.batch_count() == 1
    })
    .await;
    n2.shutdown().await;
}

/// A peer that restarts on the same port gets messages again once the
/// sender has reconnected; with the default backoff settings.
#[tokio::test]
async fn a_peer_restarting_on_the_same_port_is_reached_again() {
    let defaults = |id| TcpConfig::new(id, CLUSTER, any_port());
    let (n2, inbox) = start(defaults(N2)).await;
    let port = n2.local_addr().expect("started");
    let (n1, _) = start(defaults(N1)).await;
    n1.add_peer(N2, port.to_string());
    still_serves(&n1, &inbox, N2, 1).await;

    n2.shutdown().await;
    // Sends while it is down are dropped or queued; never an error.
    for seq in 2..5 {
        n1.send(N2, vec![numbered(N1, N2, seq)]).expect("send");
    }
    let (n2, inbox) = start(TcpConfig {
        listen: port,
        ..defaults(N2)
    })
    .await;
    let mut seq = 10;
    eventually("n1 to reach the restarted n2", DEADLINE, || {
        n1.send(N2, vec![numbered(N1, N2, seq)]).expect("send");
        seq += 1;
        inbox.count_from(N1) > 0
    })
    .await;
    assert!(n1.metrics().connections_opened >= 2, "{:?}", n1.metrics());
    n1.shutdown().await;
    n2.shutdown().await;
}

/// A new address for a peer closes the old connection; later batches go to
/// the new address.
#[tokio::test]
async fn a_changed_address_reconnects() {
    let (old, old_inbox) = start(config(N2, any_port())).await;
    let (new, new_inbox) = start(config(N2, any_port())).await;
    let (n1, _) = start(config(N1, any_port())).await;
    n1.add_peer(N2, address(&old));
    still_serves(&n1, &old_inbox, N2, 1).await;
    n1.add_peer(N2, address(&new));
    let mut seq = 2;
    eventually("batches to reach the new address", DEADLINE, || {
        n1.send(N2, vec![numbered(N1, N2, seq)]).expect("send");
        seq += 1;
        new_inbox.count_from(N1) > 0
    })
    .await;
    let before = old_inbox.count_from(N1);
    still_serves(&n1, &new_inbox, N2, 1_000).await;
    assert_eq!(
        old_inbox.count_from(N1),
        before,
        "the old address gets nothing more"
    );
    n1.shutdown().await;
    old.shutdown().await;
    new.shutdown().await;
}

/// Many batches to a peer that is down: the queue stays within its
/// capacity and the rest is dropped and counted.
#[tokio::test]
async fn an_absent_peer_does_not_grow_the_queue() {
    // A port with nothing listening: bind, note the port, close.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let (n1, _) = start(TcpConfig {
        queue_capacity: 16,
        ..config(N1, any_port())
    })
    .await;
    n1.add_peer(N2, closed_port.to_string());
    const SENT: u64 = 10_000;
    for seq in 0..SENT {
        n1.send(N2, vec![numbered(N1, N2, seq)]).expect("send");
        assert!(n1.queued(N2) <= 16);
    }
    let metrics = n1.metrics();
    // Each batch is queued, dropped, or (one at most) in the writer's hands.
    let accounted = metrics.dropped_batches() + n1.queued(N2) as u64;
    assert!(
        accounted + 1 >= SENT,
        "{SENT} sent, {accounted} queued or dropped: {metrics:?}"
    );
    assert!(metrics.dropped_queue_full >= SENT - 16 - 1);
    assert_eq!(metrics.batches_sent, 0);
    n1.shutdown().await;
}

/// Many large batches to a peer that accepts the connection but never
/// reads: the writer blocks on the full socket, the queue stays within its
/// capacity, and the rest is dropped and counted.
#[tokio::test]
async fn a_slow_peer_does_not_grow_the_queue() {
    let listener = tokio::net::TcpListener::bind(any_port())
        .await
        .expect("bind");
    let slow_address = listener.local_addr().expect("bound");
    // Accept and hold connections without reading from them.
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let (n1, _) = start(TcpConfig {
        queue_capacity: 8,
        write_timeout: Duration::from_secs(60),
        ..config(N1, any_port())
    })
    .await;
    n1.add_peer(N2, slow_address.to_string());
    let big = |seq: u64| Envelope {
        msg: Message::Forward(raft_api::ForwardRequest {
            id: seq,
            command: bytes::Bytes::from(vec![0u8; 64 * 1024]),
        }),
        ..numbered(N1, N2, seq)
    };
    const SENT: u64 = 2_000; // 125 MiB offered
    for seq in 0..SENT {
        n1.send(N2, vec![big(seq)]).expect("send");
        assert!(n1.queued(N2) <= 8);
        if seq % 50 == 0 {
            // Let the writer run and fill the socket.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let metrics = n1.metrics();
    assert!(metrics.dropped_queue_full > SENT / 2, "{metrics:?}");
    assert!(
        metrics.batches_sent < SENT / 2,
        "the peer reads nothing: {metrics:?}"
    );
    holder.abort();
    n1.shutdown().await;
}

/// Sends after shutdown fail with `Closed`; a second start fails; send
/// before start inside a runtime is fine.
#[tokio::test]
async fn lifecycle_errors() {
    let n1 = TcpTransport::new(config(N1, any_port())).expect("valid");
    n1.add_peer(N2, "127.0.0.1:9".into());
    n1.send(N2, vec![numbered(N1, N2, 0)])
        .expect("send before start");
    let inbox = raft_api::testkit::transport::Recorder::new();
    n1.start(inbox.clone()).await.expect("start");
    assert!(matches!(
        n1.start(inbox.clone()).await,
        Err(TransportError::Other(_))
    ));
    n1.shutdown().await;
    assert!(matches!(
        n1.send(N2, vec![numbered(N1, N2, 1)]),
        Err(TransportError::Closed)
    ));
    assert!(matches!(n1.start(inbox).await, Err(TransportError::Closed)));
    assert!(matches!(
        n1.add_address("127.0.0.1:9".into()),
        Err(TransportError::Closed)
    ));
}

/// Outside a tokio runtime and before `start`, `add_address` (which spawns
/// a task) is an error, not a panic.
#[test]
fn add_address_outside_a_runtime_before_start_fails() {
    let n1 = TcpTransport::new(config(N1, any_port())).expect("valid");
    assert!(matches!(
        n1.add_address("127.0.0.1:9".into()),
        Err(TransportError::Other(_))
    ));
    assert_eq!(n1.learned("127.0.0.1:9"), None);
}

/// A port in use is an I/O error from `start`, not a panic.
#[tokio::test]
async fn start_on_a_busy_port_fails() {
    let (n1, _) = start(config(N1, any_port())).await;
    let busy = n1.local_addr().expect("started");
    let n2 = TcpTransport::new(config(N2, busy)).expect("valid");
    assert!(matches!(
        n2.start(raft_api::testkit::transport::Recorder::new())
            .await,
        Err(TransportError::Io(_))
    ));
    n1.shutdown().await;
}

/// A batch larger than the frame limit is split over several frames and
/// arrives whole and in order; a single envelope too large for any frame
/// is dropped and counted.
#[tokio::test]
async fn batches_over_the_frame_limit_are_split() {
    let small_frames = |id| TcpConfig {
        max_frame_bytes: 64 * 1024,
        ..config(id, any_port())
    };
    let (n2, inbox) = start(small_frames(N2)).await;
    let (n1, _) = start(small_frames(N1)).await;
    n1.add_peer(N2, address(&n2));
    let medium = |seq: u64| Envelope {
        msg: Message::Forward(raft_api::ForwardRequest {
            id: seq,
            command: bytes::Bytes::from(vec![seq as u8; 10_000]),
        }),
        ..numbered(N1, N2, seq)
    };
    // About 200 KB in one batch: at least four frames.
    let batch: Vec<Envelope> = (0..20).map(medium).collect();
    n1.send(N2, batch.clone()).expect("send");
    eventually("the split batch to arrive", DEADLINE, || {
        inbox.count_from(N1) == 20
    })
    .await;
    assert_eq!(inbox.envelopes_from(N1), batch);
    assert!(inbox.batch_count() >= 4);

    let huge = Envelope {
        msg: Message::Forward(raft_api::ForwardRequest {
            id: 99,
            command: bytes::Bytes::from(vec![0u8; 100_000]),
        }),
        ..numbered(N1, N2, 99)
    };
    n1.send(N2, vec![huge]).expect("send");
    eventually("the huge envelope to be dropped", DEADLINE, || {
        n1.metrics().dropped_unsendable == 1
    })
    .await;
    still_serves(&n1, &inbox, N2, 100).await;
    n1.shutdown().await;
    n2.shutdown().await;
}

/// Frames written back to back in one write are all decoded (the reader
/// keeps what follows a frame in its buffer).
#[tokio::test]
async fn frames_in_one_write_are_all_delivered() {
    let (n2, inbox) = start(config(N2, any_port())).await;
    let mut raw = raw_connect(&address(&n2)).await;
    let codec = FrameCodec::new(CLUSTER, 1 << 20);
    let mut wire = BytesMut::new();
    wire.extend_from_slice(&hello(N1));
    for seq in 0..50 {
        codec
            .encode_into(&[numbered(N1, N2, seq)], &mut wire)
            .expect("encodes");
    }
    write(&mut raw, &wire).await;
    eventually("50 batches", DEADLINE, || inbox.batch_count() == 50).await;
    let terms: Vec<u64> = inbox.envelopes_from(N1).iter().map(|e| e.term.0).collect();
    assert_eq!(terms, (0..50).collect::<Vec<u64>>());
    n2.shutdown().await;
}
