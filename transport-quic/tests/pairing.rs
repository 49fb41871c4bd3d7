//! One connection per pair of nodes: which connection survives when both
//! nodes dial, that queued batches survive the switch, that traffic flows
//! both ways on the one connection, and that restarts recover.
//!
//! The rule is checked step by step against a raw QUIC endpoint playing the
//! other node (so the race is laid out deterministically), then end to end
//! between two transports.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{
    Ca, RawNode, Relay, address, any_port, close_code_of, config, read_envelopes, read_hello,
    send_hello, start, start_node, write_batch,
};
use raft_api::testkit::transport::{DEADLINE, Recorder, eventually, numbered, seq_of};
use raft_api::{Envelope, NodeId, Transport};
use transport_quic::{QuicTransport, close_code};

const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);

fn seqs(envelopes: &[Envelope]) -> Vec<u64> {
    envelopes.iter().map(seq_of).collect()
}

fn send_range(t: &QuicTransport, from: NodeId, to: NodeId, range: std::ops::Range<u64>) {
    for seq in range {
        t.send(to, vec![numbered(from, to, seq)]).expect("send");
    }
}

/// The higher node dials; the lower node dials it too before answering. The
/// higher node switches to the lower node's connection, closes its own as
/// a duplicate, and writes there every batch it had queued.
#[tokio::test]
async fn higher_node_switches_to_the_lower_nodes_connection_and_keeps_its_queue() {
    let ca = Ca::new("test CA");
    let (t2, i2) = start_node(N2, &ca).await;
    let raw1 = RawNode::new(&ca, &ca.node(N1));
    t2.add_peer(N1, raw1.address());
    send_range(&t2, N2, N1, 0..5);

    // Node 2's dial arrives; "node 1" does not answer it ...
    let from_t2 = raw1.accept().await;
    let (hello, _) = read_hello(&from_t2).await;
    assert_eq!(hello.node_id, N2);
    // ... but dials node 2 itself.
    let to_t2 = raw1.dial(&address(&t2), N2).await;
    let mut raw_control = send_hello(&to_t2, N1).await;

    // Node 2 answers on node 1's connection and sends its queue there.
    let (answer, mut t2_control) = read_hello(&to_t2).await;
    assert_eq!(answer.node_id, N2);
    let got = read_envelopes(&mut t2_control, 5).await;
    assert_eq!(seqs(&got), (0..5).collect::<Vec<_>>());
    assert_eq!(close_code_of(&from_t2).await, Some(close_code::DUPLICATE));

    // Both directions on the one connection.
    send_range(&t2, N2, N1, 5..10);
    let got = read_envelopes(&mut t2_control, 5).await;
    assert_eq!(seqs(&got), (5..10).collect::<Vec<_>>());
    let batch: Vec<Envelope> = (0..3).map(|s| numbered(N1, N2, s)).collect();
    write_batch(&mut raw_control, &batch).await;
    eventually("node 2 to receive from node 1", DEADLINE, || {
        i2.count_from(N1) == 3
    })
    .await;
    assert_eq!(i2.envelopes_from(N1), batch);

    assert_eq!(t2.connections(N1), 1);
    let m = t2.metrics();
    assert_eq!(m.duplicates_closed, 1, "{m:?}");
    assert_eq!(m.dropped_batches(), 0, "{m:?}");
    assert_eq!(m.connections_open, 1, "{m:?}");
    assert_eq!(m.batches_sent, 10, "{m:?}");
    t2.shutdown().await;
}

/// The lower node dials and writes right after its hello (the higher node
/// always uses the lower node's connection); the higher node dials it too
/// before answering. The lower node checks that its own connection is
/// alive and closes the other as a duplicate; the answer comes later.
#[tokio::test]
async fn lower_node_writes_at_once_and_closes_the_higher_nodes_dial() {
    let ca = Ca::new("test CA");
    let (t1, i1) = start_node(N1, &ca).await;
    let raw2 = RawNode::new(&ca, &ca.node(N2));
    t1.add_peer(N2, raw2.address());
    send_range(&t1, N1, N2, 0..5);

    let from_t1 = raw2.accept().await;
    let (hello, mut t1_control) = read_hello(&from_t1).await;
    assert_eq!(hello.node_id, N1);
    // The batches come before any answer.
    let got = read_envelopes(&mut t1_control, 5).await;
    assert_eq!(seqs(&got), (0..5).collect::<Vec<_>>());
    // "Node 2" dials node 1 too.
    let to_t1 = raw2.dial(&address(&t1), N1).await;
    let _unused = send_hello(&to_t1, N2).await;
    assert_eq!(close_code_of(&to_t1).await, Some(close_code::DUPLICATE));
    assert!(
        to_t1.accept_uni().await.is_err(),
        "node 1 never answered on the losing connection"
    );
    // Now "node 2" answers node 1's dial, and talks back on it.
    let mut raw_control = send_hello(&from_t1, N2).await;
    let batch: Vec<Envelope> = (0..4).map(|s| numbered(N2, N1, s)).collect();
    write_batch(&mut raw_control, &batch).await;
    eventually("node 1 to receive from node 2", DEADLINE, || {
        i1.count_from(N2) == 4
    })
    .await;
    assert_eq!(i1.envelopes_from(N2), batch);
    send_range(&t1, N1, N2, 5..8);
    assert_eq!(
        seqs(&read_envelopes(&mut t1_control, 3).await),
        vec![5, 6, 7]
    );
    eventually("one connection", DEADLINE, || t1.connections(N2) == 1).await;
    let m = t1.metrics();
    assert_eq!(m.duplicates_closed, 1, "{m:?}");
    assert_eq!(m.connections_replaced, 0, "{m:?}");
    assert_eq!(m.dropped_batches(), 0, "{m:?}");
    t1.shutdown().await;
}

/// A connection the lower node dialled and wrote on is closed if the
/// answer does not come in time, or names another node than the
/// certificate.
#[tokio::test]
async fn lower_node_closes_its_dial_without_a_right_answer() {
    let ca = Ca::new("test CA");
    let mut cfg = config(N1, any_port(), &ca, &ca.node(N1));
    cfg.handshake_timeout = Duration::from_millis(500);
    let (t1, _) = start(cfg).await;
    let raw2 = RawNode::new(&ca, &ca.node(N2));
    t1.add_peer(N2, raw2.address());

    // No answer.
    send_range(&t1, N1, N2, 0..2);
    let silent = raw2.accept().await;
    let (_, mut control) = read_hello(&silent).await;
    assert_eq!(seqs(&read_envelopes(&mut control, 2).await), vec![0, 1]);
    assert_eq!(close_code_of(&silent).await, Some(close_code::NORMAL));

    // An answer for another node.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let liar = loop {
        // Sends start the next dial once the backoff is over.
        let _ = t1.send(N2, vec![numbered(N1, N2, 2)]);
        let accepted = tokio::time::timeout(Duration::from_millis(200), raw2.accept()).await;
        if let Ok(connection) = accepted {
            break connection;
        }
        assert!(tokio::time::Instant::now() < deadline, "no second dial");
    };
    let _ = read_hello(&liar).await;
    let _lie = send_hello(&liar, NodeId(3)).await;
    assert_eq!(close_code_of(&liar).await, Some(close_code::REJECTED));
    let m = t1.metrics();
    assert_eq!(m.connect_failures, 2, "{m:?}");
    assert_eq!(m.connections_opened, 2, "{m:?}");
    t1.shutdown().await;
}

/// The lower node's own dial is still in its handshake (nothing answers at
/// the address it has) when the higher node's connection arrives: the
/// higher node cannot have seen its hello, so it gives the dial up and
/// uses the higher node's connection at once, with the batches it holds.
#[tokio::test]
async fn lower_node_gives_up_a_dial_still_in_its_handshake() {
    let ca = Ca::new("test CA");
    let (t1, _) = start_node(N1, &ca).await;
    // A bound socket that never answers: the dial never completes.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    t1.add_peer(N2, silent.local_addr().expect("bound").to_string());
    send_range(&t1, N1, N2, 0..3);

    let raw2 = RawNode::new(&ca, &ca.node(N2));
    let to_t1 = raw2.dial(&address(&t1), N1).await;
    let _control = send_hello(&to_t1, N2).await;
    let (answer, mut t1_control) = read_hello(&to_t1).await;
    assert_eq!(answer.node_id, N1);
    let got = read_envelopes(&mut t1_control, 3).await;
    assert_eq!(seqs(&got), vec![0, 1, 2]);
    let m = t1.metrics();
    assert_eq!(
        m.connect_failures, 0,
        "the dial was given up, not failed: {m:?}"
    );
    assert_eq!(m.duplicates_closed, 1, "{m:?}");
    assert_eq!(m.dropped_batches(), 0, "{m:?}");
    assert_eq!(t1.connections(N2), 1);
    t1.shutdown().await;
}

/// A late dial from the higher node while the lower node's connection
/// works (the higher node answers the probe): the late one is closed as a
/// duplicate and traffic stays on the first.
#[tokio::test]
async fn lower_node_keeps_a_live_connection_when_the_higher_node_dials_late() {
    let ca = Ca::new("test CA");
    let (t1, _) = start_node(N1, &ca).await;
    let raw2 = RawNode::new(&ca, &ca.node(N2));
    t1.add_peer(N2, raw2.address());
    send_range(&t1, N1, N2, 0..3);
    let from_t1 = raw2.accept().await;
    let (_, mut t1_control) = read_hello(&from_t1).await;
    let _answer = send_hello(&from_t1, N2).await;
    assert_eq!(
        seqs(&read_envelopes(&mut t1_control, 3).await),
        vec![0, 1, 2]
    );

    let late = raw2.dial(&address(&t1), N1).await;
    let _hello = send_hello(&late, N2).await;
    assert_eq!(close_code_of(&late).await, Some(close_code::DUPLICATE));

    send_range(&t1, N1, N2, 3..6);
    assert_eq!(
        seqs(&read_envelopes(&mut t1_control, 3).await),
        vec![3, 4, 5]
    );
    assert!(
        from_t1.close_reason().is_none(),
        "the first connection stays"
    );
    let m = t1.metrics();
    assert_eq!(m.duplicates_closed, 1, "{m:?}");
    assert_eq!(m.connections_replaced, 0, "{m:?}");
    t1.shutdown().await;
}

/// The lower node's connection stops answering (the path to the higher
/// node is cut, as if it had died) and the higher node dials anew: the
/// probe gets no answer, so the new connection replaces the old.
#[tokio::test]
async fn lower_node_replaces_a_connection_that_stopped_answering() {
    let ca = Ca::new("test CA");
    let mut cfg = config(N1, any_port(), &ca, &ca.node(N1));
    cfg.handshake_timeout = Duration::from_secs(1);
    let (t1, _) = start(cfg).await;
    let raw2 = RawNode::new(&ca, &ca.node(N2));
    let raw2_address: SocketAddr = raw2.address().parse().expect("address");
    let relay = Relay::new(raw2_address).await;
    t1.add_peer(N2, relay.address());
    send_range(&t1, N1, N2, 0..3);
    let old = raw2.accept().await;
    let (_, mut old_control) = read_hello(&old).await;
    let _answer = send_hello(&old, N2).await;
    assert_eq!(
        seqs(&read_envelopes(&mut old_control, 3).await),
        vec![0, 1, 2]
    );

    relay.block(true);
    let new = raw2.dial(&address(&t1), N1).await;
    let _hello = send_hello(&new, N2).await;
    let (answer, mut new_control) = read_hello(&new).await;
    assert_eq!(answer.node_id, N1);
    send_range(&t1, N1, N2, 3..6);
    assert_eq!(
        seqs(&read_envelopes(&mut new_control, 3).await),
        vec![3, 4, 5]
    );
    eventually("one connection", DEADLINE, || t1.connections(N2) == 1).await;
    let m = t1.metrics();
    assert_eq!(m.connections_replaced, 1, "{m:?}");
    assert_eq!(m.duplicates_closed, 0, "{m:?}");
    t1.shutdown().await;
}

/// A node that accepted a connection from a peer it did not know sends to
/// it on that connection once the peer is added, without dialling.
#[tokio::test]
async fn accepting_node_sends_on_the_accepted_connection() {
    let ca = Ca::new("test CA");
    let (t1, i1) = start_node(N1, &ca).await;
    let (t2, i2) = start_node(N2, &ca).await;
    t1.add_peer(N2, address(&t2));
    send_range(&t1, N1, N2, 0..3);
    eventually("node 2 to receive", DEADLINE, || i2.count_from(N1) == 3).await;
    assert!(matches!(
        t2.send(N1, vec![numbered(N2, N1, 0)]),
        Err(raft_api::TransportError::UnknownPeer(N1))
    ));
    t2.add_peer(N1, address(&t1));
    send_range(&t2, N2, N1, 0..10);
    eventually("node 1 to receive", DEADLINE, || i1.count_from(N2) == 10).await;
    assert_eq!(seqs(&i1.envelopes_from(N2)), (0..10).collect::<Vec<_>>());
    assert_eq!(t2.metrics().connections_opened, 0, "node 2 never dialled");
    assert_eq!(t1.metrics().connections_accepted, 0);
    assert_eq!((t1.connections(N2), t2.connections(N1)), (1, 1));
    t1.shutdown().await;
    t2.shutdown().await;
}

/// Sends numbered batches from `from` to `to` until one arrives; returns
/// the next number.
async fn send_until_received(
    from: &QuicTransport,
    from_id: NodeId,
    to_id: NodeId,
    inbox: &Recorder,
    first: u64,
) -> u64 {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut seq = first;
    while !inbox
        .envelopes_from(from_id)
        .iter()
        .any(|e| seq_of(e) >= first)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{from_id} never reached {to_id}"
        );
        let _ = from.send(to_id, vec![numbered(from_id, to_id, seq)]);
        seq += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seq
}

/// Both transports send to each other at the same moment, on several fresh
/// pairs: every batch arrives, in order, and each pair ends with exactly
/// one connection on each side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_sends_end_with_one_connection_each() {
    let ca = Ca::new("test CA");
    let mut duplicates = 0;
    for _ in 0..5 {
        let (t1, i1) = start_node(N1, &ca).await;
        let (t2, i2) = start_node(N2, &ca).await;
        t1.add_peer(N2, address(&t2));
        t2.add_peer(N1, address(&t1));
        for seq in 0..50 {
            t1.send(N2, vec![numbered(N1, N2, seq)]).expect("send");
            t2.send(N1, vec![numbered(N2, N1, seq)]).expect("send");
        }
        eventually("both directions delivered", DEADLINE, || {
            i2.count_from(N1) == 50 && i1.count_from(N2) == 50
        })
        .await;
        let want: Vec<u64> = (0..50).collect();
        assert_eq!(seqs(&i2.envelopes_from(N1)), want);
        assert_eq!(seqs(&i1.envelopes_from(N2)), want);
        eventually("one connection each", DEADLINE, || {
            t1.connections(N2) == 1 && t2.connections(N1) == 1
        })
        .await;
        // And it stays one while traffic goes on.
        send_range(&t1, N1, N2, 50..60);
        send_range(&t2, N2, N1, 50..60);
        eventually("more delivered", DEADLINE, || {
            i2.count_from(N1) == 60 && i1.count_from(N2) == 60
        })
        .await;
        let (m1, m2) = (t1.metrics(), t2.metrics());
        assert_eq!((m1.connections_open, m2.connections_open), (1, 1));
        assert_eq!(
            m1.dropped_batches() + m2.dropped_batches(),
            0,
            "{m1:?} {m2:?}"
        );
        duplicates += m1.duplicates_closed + m2.duplicates_closed;
        t1.shutdown().await;
        t2.shutdown().await;
    }
    eprintln!("duplicate connections closed over the rounds: {duplicates}");
}

/// After either node restarts (same port, same certificate), messages flow
/// both ways again and the pair is back to one connection each.
#[tokio::test]
async fn restarts_of_either_side_recover_with_one_connection() {
    let ca = Ca::new("test CA");
    let certs = [ca.node(N1), ca.node(N2)];
    let (t1, i1) = start(config(N1, any_port(), &ca, &certs[0])).await;
    let (t2, i2) = start(config(N2, any_port(), &ca, &certs[1])).await;
    let addresses = [
        t1.local_addr().expect("bound"),
        t2.local_addr().expect("bound"),
    ];
    let mut nodes = [Some(t1), Some(t2)];
    let ids = [N1, N2];
    let mut inboxes = [i1, i2];
    for (round, restarted) in [0usize, 1, 0].into_iter().enumerate() {
        // Restart one node.
        let old = nodes[restarted].take().expect("running");
        old.shutdown().await;
        drop(old);
        let (t, inbox) = start(config(
            ids[restarted],
            addresses[restarted],
            &ca,
            &certs[restarted],
        ))
        .await;
        nodes[restarted] = Some(t);
        inboxes[restarted] = inbox;
        let other = 1 - restarted;
        for (i, node) in nodes.iter().enumerate() {
            let t = node.as_ref().expect("running");
            t.add_peer(ids[1 - i], addresses[1 - i].to_string());
        }
        let (a, b) = (
            nodes[restarted].as_ref().expect("running"),
            nodes[other].as_ref().expect("running"),
        );
        // Both ways, each until it gets through, then a run in order.
        for (from, from_id, to_id, inbox) in [
            (b, ids[other], ids[restarted], &inboxes[restarted]),
            (a, ids[restarted], ids[other], &inboxes[other]),
        ] {
            let first = 10_000 * (round as u64 + 1);
            let next = send_until_received(from, from_id, to_id, inbox, first).await;
            send_range(from, from_id, to_id, next..next + 30);
            eventually("the run", DEADLINE, || {
                inbox.last_from(from_id).map(|e| seq_of(&e)) == Some(next + 29)
            })
            .await;
            let got = seqs(&inbox.envelopes_from(from_id));
            assert!(got.windows(2).all(|w| w[0] < w[1]), "in order: {got:?}");
        }
        eventually("one connection each", DEADLINE, || {
            a.connections(ids[other]) == 1 && b.connections(ids[restarted]) == 1
        })
        .await;
    }
    for t in nodes.into_iter().flatten() {
        t.shutdown().await;
    }
}

/// A node that died without closing its connections and came back resets
/// them (its reset key is derived from its private key): the peer's next
/// packet on the old connection ends it, and the peer reconnects.
#[tokio::test]
async fn restarted_node_resets_the_connection_its_previous_run_left_open() {
    let ca = Ca::new("test CA");
    let n2_cert = ca.node(N2);
    let (t1, _) = start_node(N1, &ca).await;
    let (old, old_inbox) = start(config(N2, any_port(), &ca, &n2_cert)).await;
    let relay = Relay::new(old.local_addr().expect("bound")).await;
    t1.add_peer(N2, relay.address());
    send_range(&t1, N1, N2, 0..3);
    eventually("first delivery", DEADLINE, || old_inbox.count_from(N1) == 3).await;

    // Node 2 dies silently: its goodbye never reaches node 1.
    relay.block(true);
    old.shutdown().await;
    drop(old);
    let (new, inbox) = start(config(N2, any_port(), &ca, &n2_cert)).await;
    relay.retarget(new.local_addr().expect("bound"));
    relay.block(false);
    send_until_received(&t1, N1, N2, &inbox, 100).await;
    let m = t1.metrics();
    assert_eq!(m.connections_reset, 1, "{m:?}");
    eventually("one connection", DEADLINE, || t1.connections(N2) == 1).await;
    t1.shutdown().await;
    new.shutdown().await;
}
