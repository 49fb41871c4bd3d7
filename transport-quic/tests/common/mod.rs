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
use raft_api::testkit::transport::{Recorder, TransportHarness};
use raft_api::{Envelope, NodeId, Transport};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use transport_quic::{PemSource, QuicConfig, QuicTransport, node_server_name};

/// The cluster of every test.
pub const CLUSTER: u64 = 0x5EED_C1A5;

/// A certificate authority made in memory.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A node's certificate and key, PEM.
#[derive(Clone)]
pub struct NodeCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
}

impl Ca {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("CA certificate");
        Self { cert, key }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// The CA certificate, DER.
    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A certificate for node `id`: DNS name `node-<id>.raft`, for TLS
    /// server and client authentication.
    pub fn node(&self, id: NodeId) -> NodeCert {
        self.with_names(vec![node_server_name(id)])
    }

    /// A node-style certificate with the given DNS names (for example none
    /// naming a node).
    pub fn with_names(&self, names: Vec<String>) -> NodeCert {
        let key = KeyPair::generate().expect("node key");
        let mut params = CertificateParams::new(names).expect("node params");
        params
            .distinguished_name
            .push(DnType::CommonName, "raft node");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("node certificate");
        NodeCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        }
    }
}

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
