//! TLS: who is refused by a node with mutual TLS (no client certificate,
//! a certificate of another CA, a certificate of another node than the
//! hello), server-only TLS, server authentication by the dialling node
//! (also when it learns the id of a peer given by address), the handshake
//! timeout, and PEM errors reported by `TcpTransport::new`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{
    CLUSTER, Ca, NodeCert, address, any_port, closed_by_peer, config, raw_connect, start, tls,
    tls_config, tls_connect,
};
use raft_api::codec::{FrameCodec, HELLO_LEN, Hello};
use raft_api::testkit::transport::{DEADLINE, Recorder, eventually, numbered};
use raft_api::{Envelope, NodeId, Transport};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;
use transport_tcp::{PemSource, TcpConfig, TcpTransport, node_server_name};

const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);
const N3: NodeId = NodeId(3);

/// Writes `bytes` and flushes, ignoring errors: the other end may already
/// have closed.
async fn write<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) {
    let _ = stream.write_all(bytes).await;
    let _ = stream.flush().await;
}

/// A hello then a frame of `batch`.
fn hello_and_frame(hello: NodeId, batch: &[Envelope]) -> Vec<u8> {
    let mut wire = Hello::new(CLUSTER, hello).encode().to_vec();
    let frame = FrameCodec::new(CLUSTER, 1 << 20)
        .encode(batch)
        .expect("encodes");
    wire.extend_from_slice(&frame);
    wire
}

/// Checks that `sender` reaches `receiver`'s inbox with a fresh batch.
async fn still_serves(sender: &TcpTransport, receiver: &Recorder, to: NodeId, seq: u64) {
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

/// A client without a certificate, over plain TCP or over TLS, is refused
/// by a node with mutual TLS, which keeps serving its peers.
#[tokio::test]
async fn a_client_without_certificate_is_refused() {
    let ca = Ca::new("cluster");
    let (n2, inbox) = start(tls_config(N2, any_port(), &ca, true)).await;
    let (n1, _) = start(tls_config(N1, any_port(), &ca, true)).await;
    n1.add_peer(N2, address(&n2));
    still_serves(&n1, &inbox, N2, 1).await;

    // Plain TCP: a hello and a frame are not a TLS handshake.
    let mut plain = raw_connect(&address(&n2)).await;
    write(&mut plain, &hello_and_frame(N3, &[numbered(N3, N2, 100)])).await;
    assert!(closed_by_peer(&mut plain).await, "plain TCP: closed");

    // TLS without a client certificate.
    match tls_connect(&address(&n2), N2, &ca, None).await {
        Err(_) => {}
        Ok(mut stream) => {
            write(&mut stream, &hello_and_frame(N3, &[numbered(N3, N2, 101)])).await;
            assert!(closed_by_peer(&mut stream).await, "no certificate: closed");
        }
    }

    eventually("both to be refused", DEADLINE, || {
        n2.metrics().handshakes_refused == 2
    })
    .await;
    assert!(inbox.envelopes_from(N3).is_empty(), "nothing delivered");
    still_serves(&n1, &inbox, N2, 2).await;
    assert_eq!(n2.metrics().connections_accepted, 1, "{:?}", n2.metrics());
    n1.shutdown().await;
    n2.shutdown().await;
}

/// A certificate of another CA is refused, from a raw client and from a
/// transport; the dialling transport of the other CA does not trust the
/// node either.
#[tokio::test]
async fn a_certificate_of_another_ca_is_refused() {
    let ca = Ca::new("cluster");
    let other = Ca::new("another cluster");
    let (n2, inbox) = start(tls_config(N2, any_port(), &ca, true)).await;

    // A raw client trusting the cluster CA but presenting a certificate of
    // the other CA.
    match tls_connect(&address(&n2), N2, &ca, Some(&other.node(N3))).await {
        Err(_) => {}
        Ok(mut stream) => {
            write(&mut stream, &hello_and_frame(N3, &[numbered(N3, N2, 1)])).await;
            assert!(closed_by_peer(&mut stream).await, "other CA: closed");
        }
    }
    eventually("the raw client to be refused", DEADLINE, || {
        n2.metrics().handshakes_refused == 1
    })
    .await;

    // A transport of the other CA.
    let (stranger, _) = start(tls_config(N3, any_port(), &other, true)).await;
    stranger.add_peer(N2, address(&n2));
    eventually("the stranger to be refused", DEADLINE, || {
        let _ = stranger.send(N2, vec![numbered(N3, N2, 2)]);
        n2.metrics().handshakes_refused >= 2
    })
    .await;
    assert!(stranger.metrics().connect_failures >= 1);
    assert_eq!(stranger.metrics().batches_sent, 0);
    assert_eq!(inbox.batch_count(), 0, "nothing from another CA");
    assert_eq!(n2.metrics().connections_accepted, 0);

    // The node keeps serving its cluster.
    let (n1, _) = start(tls_config(N1, any_port(), &ca, true)).await;
    n1.add_peer(N2, address(&n2));
    still_serves(&n1, &inbox, N2, 3).await;
    n1.shutdown().await;
    stranger.shutdown().await;
    n2.shutdown().await;
}

/// A valid certificate of node 2 cannot say hello as node 3; as node 2 it
/// is accepted.
#[tokio::test]
async fn a_hello_must_name_the_node_of_the_certificate() {
    let ca = Ca::new("cluster");
    let (n1, inbox) = start(tls_config(N1, any_port(), &ca, true)).await;
    let n2_cert = ca.node(N2);

    let mut liar = tls_connect(&address(&n1), N1, &ca, Some(&n2_cert))
        .await
        .expect("valid certificate: the handshake succeeds");
    write(&mut liar, &hello_and_frame(N3, &[numbered(N3, N1, 1)])).await;
    assert!(closed_by_peer(&mut liar).await, "node 2 claiming 3: closed");
    assert_eq!(n1.metrics().handshakes_refused, 1);
    assert_eq!(n1.metrics().connections_accepted, 0);
    assert_eq!(inbox.batch_count(), 0);

    let mut honest = tls_connect(&address(&n1), N1, &ca, Some(&n2_cert))
        .await
        .expect("handshake");
    write(&mut honest, &hello_and_frame(N2, &[numbered(N2, N1, 2)])).await;
    eventually("node 2's batch", DEADLINE, || inbox.count_from(N2) == 1).await;
    assert_eq!(n1.metrics().connections_accepted, 1);
    assert_eq!(n1.metrics().handshakes_refused, 1);
    n1.shutdown().await;
}

/// With server-only TLS, a client without a certificate is accepted on
/// its hello; plain TCP is still refused.
#[tokio::test]
async fn server_only_tls_accepts_clients_without_certificate() {
    let ca = Ca::new("cluster");
    let (n2, inbox) = start(tls_config(N2, any_port(), &ca, false)).await;
    let mut client = tls_connect(&address(&n2), N2, &ca, None)
        .await
        .expect("handshake");
    write(&mut client, &hello_and_frame(N3, &[numbered(N3, N2, 1)])).await;
    eventually("the batch", DEADLINE, || inbox.count_from(N3) == 1).await;

    let mut plain = raw_connect(&address(&n2)).await;
    write(&mut plain, &hello_and_frame(N3, &[numbered(N3, N2, 2)])).await;
    assert!(closed_by_peer(&mut plain).await, "plain TCP: closed");
    // The failed TLS handshake closes the socket before it is counted.
    eventually("plain TCP to be refused", DEADLINE, || {
        n2.metrics().handshakes_refused == 1
    })
    .await;
    assert_eq!(inbox.count_from(N3), 1);

    // Transports of the cluster talk to each other.
    let (n1, _) = start(tls_config(N1, any_port(), &ca, false)).await;
    n1.add_peer(N2, address(&n2));
    still_serves(&n1, &inbox, N2, 3).await;
    n1.shutdown().await;
    n2.shutdown().await;
}

/// The dialling node checks that the certificate of the node it reaches
/// names the peer it meant: a node 3 listening at node 2's address gets
/// nothing. A plain TCP node is not reached by a TLS node either.
#[tokio::test]
async fn the_dialled_node_must_be_the_peer() {
    let ca = Ca::new("cluster");
    let (n3, inbox) = start(tls_config(N3, any_port(), &ca, true)).await;
    let (n1, _) = start(tls_config(N1, any_port(), &ca, true)).await;
    n1.add_peer(N2, address(&n3));
    eventually("the connection to fail", DEADLINE, || {
        let _ = n1.send(N2, vec![numbered(N1, N2, 1)]);
        n1.metrics().connect_failures >= 2
    })
    .await;
    assert_eq!(n1.metrics().connections_opened, 0);
    assert!(
        n1.metrics().wrong_node_answers >= 1,
        "a certificate of node 3 where node 2 was dialled: {:?}",
        n1.metrics()
    );
    assert_eq!(inbox.batch_count(), 0);

    let (plain, plain_inbox) = start(config(N2, any_port())).await;
    n1.add_peer(N2, address(&plain));
    let failures = n1.metrics().connect_failures;
    eventually("the connection to a plain node to fail", DEADLINE, || {
        let _ = n1.send(N2, vec![numbered(N1, N2, 2)]);
        n1.metrics().connect_failures >= failures + 2
    })
    .await;
    assert_eq!(plain_inbox.batch_count(), 0);
    n1.shutdown().await;
    n3.shutdown().await;
    plain.shutdown().await;
}

/// Unreadable or wrong PEM material fails `TcpTransport::new` with an
/// error naming the field.
#[test]
fn pem_errors_are_reported_by_new() {
    let ca = Ca::new("cluster");
    let field = |change: &dyn Fn(&mut TcpConfig)| {
        let mut config = tls_config(N1, any_port(), &ca, true);
        change(&mut config);
        let error = TcpTransport::new(config).expect_err("invalid");
        (error.field, error.to_string())
    };
    fn tls_of(c: &mut TcpConfig) -> &mut transport_tcp::TcpTls {
        c.tls.as_mut().expect("tls")
    }

    let (name, message) = field(&|c| {
        tls_of(c).ca_pem = PemSource::File("/nonexistent/raft/ca.pem".into());
    });
    assert_eq!(name, "tls.ca_pem");
    assert!(message.contains("/nonexistent/raft/ca.pem"), "{message}");

    let (name, _) = field(&|c| tls_of(c).cert_pem = PemSource::from("garbage"));
    assert_eq!(name, "tls.cert_pem");
    let (name, _) = field(&|c| tls_of(c).key_pem = PemSource::from(""));
    assert_eq!(name, "tls.key_pem");

    // A certificate of another node.
    let n2_cert = ca.node(N2);
    let (name, message) = field(&|c| c.tls = Some(tls(&ca, &n2_cert, true)));
    assert_eq!(name, "tls.cert_pem");
    assert!(message.contains("node-2.raft"), "{message}");

    // A key that does not match the certificate.
    let other_key = ca.node(N1).key_pem;
    let (name, _) = field(&|c| tls_of(c).key_pem = PemSource::from(other_key.clone()));
    assert!(name.starts_with("tls"), "{name}");

    // Without TLS nothing is read.
    TcpTransport::new(config(N1, any_port())).expect("plain");
}

/// A TLS server presenting `cert` (no client certificate asked) that
/// answers each hello with `answer`; returns its address and the number of
/// connections it accepted.
async fn fake_tls_peer(cert: &NodeCert, answer: Hello) -> (String, Arc<AtomicUsize>) {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_der.clone()));
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3")
    .with_no_client_auth()
    .with_single_cert(vec![CertificateDer::from(cert.cert_der.clone())], key)
    .expect("server certificate");
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let listener = tokio::net::TcpListener::bind(any_port())
        .await
        .expect("bind");
    let address = listener.local_addr().expect("bound").to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut stream) = acceptor.accept(stream).await else {
                    return;
                };
                let mut hello = [0u8; HELLO_LEN];
                if stream.read_exact(&mut hello).await.is_ok() {
                    write(&mut stream, &answer.encode()).await;
                    let _ = stream.read_to_end(&mut Vec::new()).await;
                }
            });
        }
    });
    (address, accepted)
}

/// Learning a peer's id over TLS takes it from the certificate of the CA
/// and checks the answering hello names the same node: a server whose
/// certificate and hello agree is learned; one whose hello names another
/// node than its certificate, one with a certificate of another CA, and
/// one whose certificate names no node are not.
#[tokio::test]
async fn a_learned_id_must_match_the_certificate() {
    let ca = Ca::new("cluster");
    let other = Ca::new("another cluster");
    let (n1, _) = start(tls_config(N1, any_port(), &ca, true)).await;

    let (honest, _) = fake_tls_peer(&ca.node(N2), Hello::new(CLUSTER, N2)).await;
    n1.add_address(honest.clone()).expect("add_address");
    eventually("the honest server to be learned", DEADLINE, || {
        n1.learned(&honest) == Some(N2)
    })
    .await;
    n1.remove_address(&honest);

    let liars = [
        (
            ca.node(N3),
            "a hello naming another node than the certificate",
        ),
        (other.node(N2), "a certificate of another CA"),
        (
            ca.with_names(vec!["example.com".into()]),
            "a certificate naming no node",
        ),
        (
            ca.with_names(vec![node_server_name(N2), node_server_name(N3)]),
            "a certificate naming two nodes",
        ),
    ];
    let mut servers = Vec::new();
    for (cert, what) in &liars {
        let (address, accepted) = fake_tls_peer(cert, Hello::new(CLUSTER, N2)).await;
        n1.add_address(address.clone()).expect("add_address");
        servers.push((address, accepted, what));
    }
    eventually(
        "every liar to be tried twice (or learned)",
        DEADLINE,
        || {
            servers.iter().all(|(address, accepted, _)| {
                accepted.load(Ordering::SeqCst) >= 2 || n1.learned(address).is_some()
            })
        },
    )
    .await;
    for (address, _, what) in &servers {
        assert_eq!(n1.learned(address), None, "learned despite {what}");
    }
    assert_eq!(n1.peer_address(N2), None);
    assert_eq!(n1.peer_address(N3), None);
    assert_eq!(n1.metrics().addresses_learned, 1, "{:?}", n1.metrics());
    n1.shutdown().await;
}

/// With TLS, a connection that never starts its TLS handshake is closed
/// after the handshake timeout and counted.
#[tokio::test]
async fn a_silent_tls_connection_is_closed_after_the_handshake_timeout() {
    let ca = Ca::new("cluster");
    let (n2, _) = start(TcpConfig {
        handshake_timeout: Duration::from_millis(100),
        ..tls_config(N2, any_port(), &ca, true)
    })
    .await;
    let mut silent = raw_connect(&address(&n2)).await;
    assert!(closed_by_peer(&mut silent).await, "silent: closed");
    eventually("the timeout to be counted", DEADLINE, || {
        n2.metrics().handshake_timeouts == 1
    })
    .await;
    assert_eq!(n2.metrics().handshakes_refused, 1);
    n2.shutdown().await;
}
