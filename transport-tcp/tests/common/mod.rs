//! Helpers shared by the integration tests: harnesses for the conformance
//! suites (plain and TLS), transports on free ports, raw sockets; the CA
//! and node certificates come from `transport_util::testing`.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use raft_api::testkit::transport::{AddressHarness, DEADLINE, Recorder, TransportHarness};
use raft_api::{NodeId, Transport};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use transport_tcp::{PemSource, TcpConfig, TcpTls, TcpTransport, node_server_name};
pub use transport_util::testing::{Ca, NodeCert};

/// The cluster of every test.
pub const CLUSTER: u64 = 0x5EED_C1A5;

/// Settings for tests: any free port on loopback, quick reconnects, 4 MiB
/// frames.
pub fn config(id: NodeId, listen: SocketAddr) -> TcpConfig {
    TcpConfig {
        max_frame_bytes: 4 * 1024 * 1024,
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(250),
        ..TcpConfig::new(id, CLUSTER, listen)
    }
}

/// Any free port on loopback.
pub fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Makes and starts a transport with `config`; returns it with its inbox.
pub async fn start(config: TcpConfig) -> (TcpTransport, Arc<Recorder>) {
    let transport = TcpTransport::new(config).expect("valid config");
    let inbox = Recorder::new();
    transport.start(inbox.clone()).await.expect("start");
    (transport, inbox)
}

/// The address of a started transport, for `add_peer`.
pub fn address(transport: &TcpTransport) -> String {
    transport.local_addr().expect("started").to_string()
}

/// Runs the conformance suite over loopback; a restarted node listens on
/// the port it had.
#[derive(Default)]
pub struct TcpHarness {
    ports: HashMap<NodeId, SocketAddr>,
}

impl TransportHarness for TcpHarness {
    type Transport = TcpTransport;

    async fn make(&mut self, id: NodeId) -> TcpTransport {
        let listen = self.ports.get(&id).copied().unwrap_or_else(any_port);
        TcpTransport::new(config(id, listen)).expect("valid config")
    }

    fn address(&mut self, id: NodeId, transport: &TcpTransport) -> String {
        let address = transport.local_addr().expect("started");
        self.ports.insert(id, address);
        address.to_string()
    }

    async fn stop(&mut self, _id: NodeId, transport: TcpTransport) {
        transport.shutdown().await;
    }
}

impl AddressHarness for TcpHarness {
    async fn make_foreign(&mut self, id: NodeId) -> TcpTransport {
        TcpTransport::new(TcpConfig {
            cluster_id: CLUSTER + 1,
            ..config(id, any_port())
        })
        .expect("valid config")
    }
}

/// Opens a raw connection.
pub async fn raw_connect(address: &str) -> TcpStream {
    TcpStream::connect(address).await.expect("connect")
}

/// Whether the other end closes `stream` (end of file or reset) within the
/// suite's deadline. Data it sends is ignored.
pub async fn closed_by_peer<S: AsyncRead + Unpin>(stream: &mut S) -> bool {
    let mut buf = [0u8; 256];
    let wait = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(DEADLINE, wait).await.is_ok()
}

/// TLS settings with CA `ca` and certificate `cert`.
pub fn tls(ca: &Ca, cert: &NodeCert, mutual: bool) -> TcpTls {
    TcpTls {
        mutual,
        ..TcpTls::new(
            PemSource::from(ca.pem()),
            PemSource::from(cert.cert_pem.clone()),
            PemSource::from(cert.key_pem.clone()),
        )
    }
}

/// Test settings ([`config`]) with TLS: CA `ca`, a fresh certificate of
/// `ca` for `id`.
pub fn tls_config(id: NodeId, listen: SocketAddr, ca: &Ca, mutual: bool) -> TcpConfig {
    TcpConfig {
        tls: Some(tls(ca, &ca.node(id), mutual)),
        ..config(id, listen)
    }
}

/// Runs the conformance suite over TLS on loopback with one CA; a
/// restarted node listens on the port it had and keeps its certificate.
pub struct TlsHarness {
    ca: Ca,
    mutual: bool,
    certs: HashMap<NodeId, NodeCert>,
    ports: HashMap<NodeId, SocketAddr>,
}

impl TlsHarness {
    /// With mutual TLS or not.
    pub fn new(mutual: bool) -> Self {
        Self {
            ca: Ca::new("conformance CA"),
            mutual,
            certs: HashMap::new(),
            ports: HashMap::new(),
        }
    }
}

impl Default for TlsHarness {
    fn default() -> Self {
        Self::new(true)
    }
}

impl TransportHarness for TlsHarness {
    type Transport = TcpTransport;

    async fn make(&mut self, id: NodeId) -> TcpTransport {
        let listen = self.ports.get(&id).copied().unwrap_or_else(any_port);
        let ca = &self.ca;
        let cert = self.certs.entry(id).or_insert_with(|| ca.node(id)).clone();
        TcpTransport::new(TcpConfig {
            tls: Some(tls(&self.ca, &cert, self.mutual)),
            ..config(id, listen)
        })
        .expect("valid config")
    }

    fn address(&mut self, id: NodeId, transport: &TcpTransport) -> String {
        let address = transport.local_addr().expect("started");
        self.ports.insert(id, address);
        address.to_string()
    }

    async fn stop(&mut self, _id: NodeId, transport: TcpTransport) {
        transport.shutdown().await;
    }
}

impl AddressHarness for TlsHarness {
    /// A node of another cluster with a certificate of the same CA: TLS
    /// succeeds, the hellos do not.
    async fn make_foreign(&mut self, id: NodeId) -> TcpTransport {
        let cert = self.ca.node(id);
        TcpTransport::new(TcpConfig {
            cluster_id: CLUSTER + 1,
            tls: Some(tls(&self.ca, &cert, self.mutual)),
            ..config(id, any_port())
        })
        .expect("valid config")
    }
}

/// Opens a raw TLS connection to `address`, expected to be node
/// `server_id`, trusting `trusted` and presenting `cert` if any. Fails if
/// the handshake fails on the client's side (with TLS 1.3 the server
/// checks the client certificate after that: a refusal then shows as the
/// connection being closed).
pub async fn tls_connect(
    address: &str,
    server_id: NodeId,
    trusted: &Ca,
    cert: Option<&NodeCert>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.der()).expect("root");
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots);
    let config = match cert {
        Some(cert) => {
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_der.clone()));
            builder
                .with_client_auth_cert(vec![CertificateDer::from(cert.cert_der.clone())], key)
                .expect("client certificate")
        }
        None => builder.with_no_client_auth(),
    };
    let stream = raw_connect(address).await;
    let name = ServerName::try_from(node_server_name(server_id)).expect("name");
    TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
}
