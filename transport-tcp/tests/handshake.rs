//! The two-way handshake (the accepting node answers with its hello, the
//! dialling node checks who answered), the frame idle timeout, and peers
//! known only by address (`add_address`, `remove_address`) over plain TCP.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{CLUSTER, address, any_port, closed_by_peer, config, raw_connect, start};
use raft_api::codec::{FrameCodec, HEADER_LEN, HELLO_LEN, Hello};
use raft_api::testkit::transport::{DEADLINE, Recorder, eventually, numbered};
use raft_api::{Envelope, NodeId, Transport, TransportError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use transport_tcp::{TcpConfig, TcpTransport};

const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);
const N3: NodeId = NodeId(3);

/// Writes `bytes`, ignoring errors: the other end may already have closed.
async fn write(stream: &mut TcpStream, bytes: &[u8]) {
    let _ = stream.write_all(bytes).await;
    let _ = stream.flush().await;
}

fn hello(node: NodeId) -> [u8; HELLO_LEN] {
    Hello::new(CLUSTER, node).encode()
}

fn frame(batch: &[Envelope]) -> Vec<u8> {
    FrameCodec::new(CLUSTER, 1 << 20)
        .encode(batch)
        .expect("encodes")
        .to_vec()
}

/// Everything the other end sends until it closes (within the suite's
/// deadline).
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the other end never closed");
    got
}

/// Checks that `sender` reaches `receiver`'s inbox with a fresh batch.
async fn still_serves(sender: &TcpTransport, receiver: &Recorder, to: NodeId, seq: u64) {
    let from = sender.config().node_id;
    sender
        .send(to, vec![numbered(from, to, seq)])
        .expect("send");
    eventually("the batch to arrive", DEADLINE, || {
        receiver
            .envelopes_from(from)
            .iter()
            .any(|e| e.term.0 == seq)
    })
    .await;
}

/// A port nothing listens on.
fn free_port() -> std::net::SocketAddr {
    transport_util::ports::free_loopback_port(transport_util::ports::Protocol::Tcp)
        .expect("a free port")
}

/// A listener that reads the hello of each connection, answers with
/// `answer` (or nothing), and records every byte each connection sends
/// until it closes.
async fn fake_peer(answer: Option<[u8; HELLO_LEN]>) -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind(any_port()).await.expect("bind");
    let address = listener.local_addr().expect("bound").to_string();
    let received = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&received);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                let mut got = vec![0u8; HELLO_LEN];
                if stream.read_exact(&mut got).await.is_ok() {
                    if let Some(answer) = answer {
                        let _ = stream.write_all(&answer).await;
                    }
                    let _ = stream.read_to_end(&mut got).await;
                }
                record.lock().unwrap().push(got);
            });
        }
    });
    (address, received)
}

/// An accepted hello is answered with the node's own hello (its cluster,
/// id and version); a refused one gets no answer.
#[tokio::test]
async fn an_accepted_hello_is_answered_with_the_nodes_own() {
    let (n2, _) = start(config(N2, any_port())).await;
    let mut raw = raw_connect(&address(&n2)).await;
    write(&mut raw, &hello(N1)).await;
    let mut answer = [0u8; HELLO_LEN];
    tokio::time::timeout(DEADLINE, raw.read_exact(&mut answer))
        .await
        .expect("answered in time")
        .expect("answered");
    assert_eq!(Hello::decode(&answer), Ok(Hello::new(CLUSTER, N2)));

    let mut foreign = raw_connect(&address(&n2)).await;
    write(&mut foreign, &Hello::new(CLUSTER + 1, N1).encode()).await;
    assert_eq!(
        read_until_closed(&mut foreign).await,
        b"",
        "a refused hello is not answered"
    );
    assert_eq!(n2.metrics().handshakes_refused, 1);
    assert_eq!(n2.metrics().connections_accepted, 1);
    n2.shutdown().await;
}

/// A node dialling its peer at an address where another node answers
/// sends it nothing, logs and counts it, and backs off; once given the
/// peer's real address it reaches it.
#[tokio::test]
async fn another_node_answering_at_the_address_is_refused() {
    let (n3, inbox3) = start(config(N3, any_port())).await;
    let (n1, _) = start(config(N1, any_port())).await;
    n1.add_peer(N2, address(&n3));
    eventually("the wrong node to be noticed twice", DEADLINE, || {
        let _ = n1.send(N2, vec![numbered(N1, N2, 1)]);
        n1.metrics().wrong_node_answers >= 2
    })
    .await;
    let metrics = n1.metrics();
    assert!(metrics.connect_failures >= metrics.wrong_node_answers);
    assert_eq!(metrics.connections_opened, 0, "{metrics:?}");
    assert_eq!(metrics.batches_sent, 0, "{metrics:?}");
    assert_eq!(inbox3.batch_count(), 0, "nothing reached the wrong node");

    let (n2, inbox2) = start(config(N2, any_port())).await;
    n1.add_peer(N2, address(&n2));
    still_serves(&n1, &inbox2, N2, 10).await;
    assert_eq!(inbox3.batch_count(), 0);
    n1.shutdown().await;
    n2.shutdown().await;
    n3.shutdown().await;
}

/// Nothing but the hello goes to a peer that does not answer it, or
/// answers with a hello of another cluster: frames wait for a valid
/// answer.
#[tokio::test]
async fn frames_wait_for_a_valid_answer() {
    let (mute, mute_received) = fake_peer(None).await;
    let (foreign, foreign_received) = fake_peer(Some(Hello::new(CLUSTER + 1, N2).encode())).await;
    let (n1, _) = start(TcpConfig {
        connect_timeout: Duration::from_millis(200),
        ..config(N1, any_port())
    })
    .await;
    for (peer, address) in [(N2, &mute), (N3, &foreign)] {
        n1.add_peer(peer, address.clone());
    }
    eventually("both peers to fail twice", DEADLINE, || {
        for peer in [N2, N3] {
            let _ = n1.send(peer, vec![numbered(N1, peer, 1)]);
        }
        let done = |r: &Mutex<Vec<Vec<u8>>>| r.lock().unwrap().len() >= 2;
        done(&mute_received) && done(&foreign_received)
    })
    .await;
    for received in [mute_received, foreign_received] {
        for connection in received.lock().unwrap().iter() {
            assert_eq!(connection.as_slice(), hello(N1), "only the hello was sent");
        }
    }
    let metrics = n1.metrics();
    assert!(metrics.connect_failures >= 4, "{metrics:?}");
    assert_eq!(metrics.connections_opened, 0, "{metrics:?}");
    assert_eq!(metrics.wrong_node_answers, 0, "{metrics:?}");
    assert_eq!(metrics.batches_sent, 0, "{metrics:?}");
    n1.shutdown().await;
}

/// A connection that stops in the middle of a frame (or of a frame
/// header) is closed after the frame idle timeout and counted; one that is
/// quiet between frames, or slow but steady, is not.
#[tokio::test]
async fn a_partial_frame_is_closed_after_the_idle_timeout() {
    let idle = Duration::from_millis(150);
    let (n2, inbox) = start(TcpConfig {
        frame_idle_timeout: idle,
        ..config(N2, any_port())
    })
    .await;
    let whole = frame(&[numbered(N1, N2, 1)]);

    let mut half = raw_connect(&address(&n2)).await;
    write(&mut half, &hello(N1)).await;
    write(&mut half, &whole[..whole.len() / 2]).await;
    let mut header = raw_connect(&address(&n2)).await;
    write(&mut header, &hello(N1)).await;
    write(&mut header, &whole[..HEADER_LEN - 3]).await;
    assert!(closed_by_peer(&mut half).await, "half a frame: closed");
    assert!(
        closed_by_peer(&mut header).await,
        "part of a header: closed"
    );
    let metrics = n2.metrics();
    assert_eq!(metrics.idle_timeouts, 2, "{metrics:?}");
    assert_eq!(metrics.decode_errors, 0, "{metrics:?}");
    assert_eq!(inbox.batch_count(), 0);

    // Quiet between frames: kept.
    let mut quiet = raw_connect(&address(&n2)).await;
    write(&mut quiet, &hello(N1)).await;
    write(&mut quiet, &frame(&[numbered(N1, N2, 2)])).await;
    tokio::time::sleep(idle * 3).await;
    write(&mut quiet, &frame(&[numbered(N1, N2, 3)])).await;
    // Slow but steady: a few bytes at a time, each gap under the timeout,
    // the whole frame longer than it.
    let mut slow = raw_connect(&address(&n2)).await;
    write(&mut slow, &hello(N3)).await;
    let dripped = frame(&[numbered(N3, N2, 4)]);
    for chunk in dripped.chunks(dripped.len().div_ceil(5)) {
        write(&mut slow, chunk).await;
        tokio::time::sleep(idle / 3).await;
    }
    eventually("the quiet and the slow frames", DEADLINE, || {
        inbox.count_from(N1) == 2 && inbox.count_from(N3) == 1
    })
    .await;
    assert_eq!(n2.metrics().idle_timeouts, 2, "{:?}", n2.metrics());
    n2.shutdown().await;
}

/// `add_address` learns the id from the answering hello and keeps the
/// probe's connection as the peer's: one connection in all.
#[tokio::test]
async fn a_learned_peer_keeps_the_connection_it_was_learned_on() {
    let (n2, inbox) = start(config(N2, any_port())).await;
    let (n1, _) = start(config(N1, any_port())).await;
    let n2_address = address(&n2);
    assert!(matches!(
        n1.send(N2, vec![numbered(N1, N2, 0)]),
        Err(TransportError::UnknownPeer(N2))
    ));
    n1.add_address(n2_address.clone()).expect("add_address");
    eventually("node 2 to be learned", DEADLINE, || {
        n1.learned(&n2_address) == Some(N2)
    })
    .await;
    assert_eq!(n1.peer_address(N2).as_deref(), Some(n2_address.as_str()));
    still_serves(&n1, &inbox, N2, 1).await;
    still_serves(&n1, &inbox, N2, 2).await;
    let metrics = n1.metrics();
    assert_eq!(metrics.addresses_learned, 1, "{metrics:?}");
    assert_eq!(metrics.connections_opened, 1, "{metrics:?}");
    assert_eq!(n2.metrics().connections_accepted, 1, "{:?}", n2.metrics());
    n1.shutdown().await;
    n2.shutdown().await;
}

/// A node's own address is recognised from the answer and ignored.
#[tokio::test]
async fn its_own_address_is_ignored() {
    let (n1, inbox) = start(config(N1, any_port())).await;
    let own = address(&n1);
    n1.add_address(own.clone()).expect("add_address");
    eventually("its own id to be recognised", DEADLINE, || {
        n1.learned(&own) == Some(N1)
    })
    .await;
    assert_eq!(n1.peer_address(N1), None);
    assert!(matches!(
        n1.send(N1, vec![numbered(N1, N1, 1)]),
        Err(TransportError::UnknownPeer(N1))
    ));
    assert_eq!(n1.metrics().addresses_learned, 0);
    assert_eq!(inbox.batch_count(), 0);
    n1.shutdown().await;
}

/// An address nobody listens on yet is retried until its node comes up;
/// removed while still probing, it is never learned.
#[tokio::test]
async fn an_address_is_probed_until_its_node_comes_up() {
    let (n1, _) = start(config(N1, any_port())).await;
    let later = free_port();
    n1.add_address(later.to_string()).expect("add_address");
    eventually("a few failed attempts", DEADLINE, || {
        n1.metrics().connect_failures >= 2
    })
    .await;
    assert_eq!(n1.learned(&later.to_string()), None);
    let (n2, inbox) = start(config(N2, later)).await;
    eventually("node 2 to be learned once up", DEADLINE, || {
        n1.learned(&later.to_string()) == Some(N2)
    })
    .await;
    still_serves(&n1, &inbox, N2, 1).await;

    // Removed while probing: never learned.
    let gone = free_port();
    n1.add_address(gone.to_string()).expect("add_address");
    n1.remove_address(&gone.to_string());
    let (n3, _) = start(config(N3, gone)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(n1.learned(&gone.to_string()), None);
    assert_eq!(n1.peer_address(N3), None);
    assert_eq!(n3.metrics().connections_accepted, 0, "{:?}", n3.metrics());
    n1.shutdown().await;
    n2.shutdown().await;
    n3.shutdown().await;
}

/// `remove_address` forgets the peer learned from it, but not a peer also
/// given by `add_peer`.
#[tokio::test]
async fn remove_address_forgets_only_what_it_taught() {
    let (n2, inbox2) = start(config(N2, any_port())).await;
    let (n3, _) = start(config(N3, any_port())).await;
    let (n1, _) = start(config(N1, any_port())).await;
    let (a2, a3) = (address(&n2), address(&n3));
    n1.add_peer(N2, a2.clone());
    n1.add_address(a2.clone()).expect("add_address");
    n1.add_address(a3.clone()).expect("add_address");
    eventually("both to be learned", DEADLINE, || {
        n1.learned(&a2) == Some(N2) && n1.learned(&a3) == Some(N3)
    })
    .await;

    n1.remove_address(&a2);
    n1.remove_address(&a3);
    assert_eq!(n1.learned(&a2), None);
    assert_eq!(n1.peer_address(N2).as_deref(), Some(a2.as_str()));
    still_serves(&n1, &inbox2, N2, 1).await;
    assert_eq!(n1.peer_address(N3), None);
    assert!(matches!(
        n1.send(N3, vec![numbered(N1, N3, 1)]),
        Err(TransportError::UnknownPeer(N3))
    ));
    n1.shutdown().await;
    n2.shutdown().await;
    n3.shutdown().await;
}
