//! Helpers shared by the integration tests: a CA and node certificates made
//! with rcgen in memory, transports on free ports, a harness for the
//! conformance suite, and a raw QUIC client for handshakes a well-behaved
//! node would never attempt.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use raft_api::codec::{FrameCodec, Hello};
use raft_api::testkit::transport::{AddressHarness, Recorder, TransportHarness};
use raft_api::{Envelope, NodeId, Transport};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use transport_quic::{PemSource, QuicConfig, QuicTransport, node_server_name};

/// The cluster of every test.
pub const CLUSTER: u64 = 0x5EED_C1A5;

pub use transport_util::testing::{Ca, NodeCert};

/// Any free port on loopback.
pub fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Settings for tests: CA `ca`, certificate `cert`, quick reconnects and
/// timeouts, 8 MiB frames.
pub fn config(id: NodeId, listen: SocketAddr, ca: &Ca, cert: &NodeCert) -> QuicConfig {
    QuicConfig {
        max_frame_bytes: 8 * 1024 * 1024,
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(250),
        keep_alive: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(5),
        ..QuicConfig::new(
            id,
            CLUSTER,
            listen,
            PemSource::from(ca.pem()),
            PemSource::from(cert.cert_pem.clone()),
            PemSource::from(cert.key_pem.clone()),
        )
    }
}

/// Makes and starts a transport with `config`; returns it with its inbox.
pub async fn start(config: QuicConfig) -> (QuicTransport, Arc<Recorder>) {
    let transport = QuicTransport::new(config).expect("valid config");
    let inbox = Recorder::new();
    transport.start(inbox.clone()).await.expect("start");
    (transport, inbox)
}

/// Makes and starts node `id` of `ca` on any port.
pub async fn start_node(id: NodeId, ca: &Ca) -> (QuicTransport, Arc<Recorder>) {
    start(config(id, any_port(), ca, &ca.node(id))).await
}

/// The address of a started transport, for `add_peer`.
pub fn address(transport: &QuicTransport) -> String {
    transport.local_addr().expect("started").to_string()
}

/// Runs the conformance suite over loopback with one CA; a restarted node
/// listens on the port it had and keeps its certificate.
pub struct QuicHarness {
    ca: Ca,
    certs: HashMap<NodeId, NodeCert>,
    ports: HashMap<NodeId, SocketAddr>,
}

impl Default for QuicHarness {
    fn default() -> Self {
        Self {
            ca: Ca::new("conformance CA"),
            certs: HashMap::new(),
            ports: HashMap::new(),
        }
    }
}

impl TransportHarness for QuicHarness {
    type Transport = QuicTransport;

    async fn make(&mut self, id: NodeId) -> QuicTransport {
        let listen = self.ports.get(&id).copied().unwrap_or_else(any_port);
        let ca = &self.ca;
        let cert = self.certs.entry(id).or_insert_with(|| ca.node(id)).clone();
        QuicTransport::new(config(id, listen, &self.ca, &cert)).expect("valid config")
    }

    fn address(&mut self, id: NodeId, transport: &QuicTransport) -> String {
        let address = transport.local_addr().expect("started");
        self.ports.insert(id, address);
        address.to_string()
    }

    async fn stop(&mut self, _id: NodeId, transport: QuicTransport) {
        transport.shutdown().await;
    }
}

impl AddressHarness for QuicHarness {
    /// Node `id` of cluster `CLUSTER + 1`, with a certificate of the same
    /// CA.
    async fn make_foreign(&mut self, id: NodeId) -> QuicTransport {
        let cert = self.ca.node(id);
        let mut config = config(id, any_port(), &self.ca, &cert);
        config.cluster_id = CLUSTER + 1;
        QuicTransport::new(config).expect("valid config")
    }
}

/// A bare QUIC client that trusts `trusted` and presents `cert`, for
/// handshakes the transport itself refuses to make.
pub struct RawClient {
    endpoint: quinn::Endpoint,
}

impl RawClient {
    pub fn new(trusted: &Ca, cert: &NodeCert) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(trusted.der()).expect("root");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_der.clone()));
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![CertificateDer::from(cert.cert_der.clone())], key)
            .expect("client certificate");
        tls.alpn_protocols = vec![b"raft-quic/1".to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC TLS");
        let mut endpoint = quinn::Endpoint::client(any_port()).expect("client endpoint");
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        Self { endpoint }
    }

    /// Connects to `server` (expected to be node `server_id`) and sends
    /// `hello` then `batch` on a control stream. Returns the connection,
    /// or `None` if the handshake failed.
    pub async fn open(
        &self,
        server: &str,
        server_id: NodeId,
        hello: Hello,
        batch: &[Envelope],
    ) -> Option<quinn::Connection> {
        let address: SocketAddr = server.parse().expect("address");
        let connection = self
            .endpoint
            .connect(address, &node_server_name(server_id))
            .ok()?
            .await
            .ok()?;
        if let Ok(mut stream) = connection.open_uni().await {
            let _ = stream.write_all(&hello.encode()).await;
            if !batch.is_empty() {
                let frame = FrameCodec::new(CLUSTER, 1 << 20)
                    .encode(batch)
                    .expect("frame");
                let _ = stream.write_all(&frame).await;
            }
        }
        Some(connection)
    }

    /// Like [`open`](Self::open), then waits (up to 10 s) for the
    /// connection to be closed. Returns whether it was closed (by the peer,
    /// or because the handshake failed).
    pub async fn try_send(
        &self,
        server: &str,
        server_id: NodeId,
        hello: Hello,
        batch: &[Envelope],
    ) -> bool {
        let attempt = async {
            if let Some(connection) = self.open(server, server_id, hello, batch).await {
                connection.closed().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), attempt)
            .await
            .is_ok()
    }
}

/// How long the raw helpers wait for something before failing.
pub const RAW_DEADLINE: Duration = Duration::from_secs(20);

/// A bare QUIC endpoint that plays a node with certificate `cert`: it
/// accepts connections (client certificates of `ca` required) and dials,
/// and the test drives every stream by hand.
pub struct RawNode {
    endpoint: quinn::Endpoint,
}

impl RawNode {
    pub fn new(ca: &Ca, cert: &NodeCert) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der()).expect("root");
        let roots = Arc::new(roots);
        let chain = vec![CertificateDer::from(cert.cert_der.clone())];
        let key = || PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_der.clone()));

        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .expect("client verifier");
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key())
            .expect("server certificate");
        server.alpn_protocols = vec![b"raft-quic/1".to_vec()];
        let server = quinn::crypto::rustls::QuicServerConfig::try_from(server).expect("QUIC TLS");

        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key())
            .expect("client certificate");
        client.alpn_protocols = vec![b"raft-quic/1".to_vec()];
        let client = quinn::crypto::rustls::QuicClientConfig::try_from(client).expect("QUIC TLS");

        let mut endpoint = quinn::Endpoint::server(
            quinn::ServerConfig::with_crypto(Arc::new(server)),
            any_port(),
        )
        .expect("raw endpoint");
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(client)));
        Self { endpoint }
    }

    /// Where it listens.
    pub fn address(&self) -> String {
        self.endpoint.local_addr().expect("bound").to_string()
    }

    /// The next incoming connection, its TLS handshake done.
    pub async fn accept(&self) -> quinn::Connection {
        let work = async {
            let incoming = self.endpoint.accept().await.expect("endpoint open");
            incoming.await.expect("handshake")
        };
        tokio::time::timeout(RAW_DEADLINE, work)
            .await
            .expect("a connection in time")
    }

    /// Accepts every incoming connection in the background, so their
    /// handshakes run (and fail or succeed), then drops them.
    pub fn keep_accepting(&self) -> tokio::task::JoinHandle<()> {
        let endpoint = self.endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let _ = incoming.await;
            }
        })
    }

    /// Dials node `server` at `address`.
    pub async fn dial(&self, address: &str, server: NodeId) -> quinn::Connection {
        let address: SocketAddr = address.parse().expect("address");
        let connecting = self
            .endpoint
            .connect(address, &node_server_name(server))
            .expect("connect");
        tokio::time::timeout(RAW_DEADLINE, connecting)
            .await
            .expect("handshake in time")
            .expect("handshake")
    }
}

/// Opens a control stream on `connection` and sends the hello of `node`.
pub async fn send_hello(connection: &quinn::Connection, node: NodeId) -> quinn::SendStream {
    let mut stream = connection.open_uni().await.expect("open stream");
    stream
        .write_all(&Hello::new(CLUSTER, node).encode())
        .await
        .expect("write hello");
    stream
}

/// Accepts the other side's control stream on `connection` and reads its
/// hello.
pub async fn read_hello(connection: &quinn::Connection) -> (Hello, quinn::RecvStream) {
    let work = async {
        let mut stream = connection.accept_uni().await.expect("a stream");
        let mut bytes = [0u8; raft_api::codec::HELLO_LEN];
        stream.read_exact(&mut bytes).await.expect("hello bytes");
        (Hello::decode(&bytes).expect("a hello"), stream)
    };
    tokio::time::timeout(RAW_DEADLINE, work)
        .await
        .expect("a hello in time")
}

/// Writes `batch` as one frame on `stream`.
pub async fn write_batch(stream: &mut quinn::SendStream, batch: &[Envelope]) {
    let frame = FrameCodec::new(CLUSTER, 1 << 20)
        .encode(batch)
        .expect("frame");
    stream.write_all(&frame).await.expect("write frame");
}

/// Reads frames from `stream` until `count` envelopes arrived.
pub async fn read_envelopes(stream: &mut quinn::RecvStream, count: usize) -> Vec<Envelope> {
    let codec = FrameCodec::new(CLUSTER, 8 << 20);
    let mut buf = bytes::BytesMut::new();
    let mut got = Vec::new();
    let work = async {
        while got.len() < count {
            while let Some(batch) = codec.decode(&mut buf).expect("a valid frame") {
                got.extend(batch);
            }
            if got.len() >= count {
                break;
            }
            let chunk = stream
                .read_chunk(1 << 20, true)
                .await
                .expect("read")
                .expect("stream open");
            buf.extend_from_slice(&chunk.bytes);
        }
    };
    tokio::time::timeout(RAW_DEADLINE, work)
        .await
        .expect("the envelopes in time");
    got
}

/// The application close code of a connection closed by its other end.
pub async fn close_code_of(connection: &quinn::Connection) -> Option<u32> {
    let reason = tokio::time::timeout(RAW_DEADLINE, connection.closed())
        .await
        .expect("closed in time");
    match reason {
        quinn::ConnectionError::ApplicationClosed(close) => {
            u32::try_from(close.error_code.into_inner()).ok()
        }
        _ => None,
    }
}

/// A UDP relay between a dialer and `target`, which the test can cut (it
/// then drops everything both ways) or point elsewhere. Serves one dialer.
pub struct Relay {
    address: SocketAddr,
    blocked: Arc<std::sync::atomic::AtomicBool>,
    target: Arc<std::sync::Mutex<SocketAddr>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    pub async fn new(target: SocketAddr) -> Self {
        use std::sync::atomic::Ordering;
        let front = tokio::net::UdpSocket::bind(any_port()).await.expect("bind");
        let back = tokio::net::UdpSocket::bind(any_port()).await.expect("bind");
        let address = front.local_addr().expect("bound");
        let blocked = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let target = Arc::new(std::sync::Mutex::new(target));
        let task = {
            let (blocked, target) = (blocked.clone(), target.clone());
            tokio::spawn(async move {
                let mut client: Option<SocketAddr> = None;
                let mut a = vec![0u8; 65536];
                let mut b = vec![0u8; 65536];
                loop {
                    tokio::select! {
                        Ok((n, from)) = front.recv_from(&mut a) => {
                            client = Some(from);
                            if !blocked.load(Ordering::SeqCst) {
                                let to = *target.lock().unwrap();
                                let _ = back.send_to(&a[..n], to).await;
                            }
                        }
                        Ok((n, _)) = back.recv_from(&mut b) => {
                            if let (false, Some(client)) = (blocked.load(Ordering::SeqCst), client) {
                                let _ = front.send_to(&b[..n], client).await;
                            }
                        }
                    }
                }
            })
        };
        Self {
            address,
            blocked,
            target,
            task,
        }
    }

    /// Where the dialer should send.
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    /// Drops everything from now on (or forwards again).
    pub fn block(&self, blocked: bool) {
        self.blocked
            .store(blocked, std::sync::atomic::Ordering::SeqCst);
    }

    /// Forwards to `target` from now on.
    pub fn retarget(&self, target: SocketAddr) {
        *self.target.lock().unwrap() = target;
    }
}
