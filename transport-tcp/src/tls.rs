//! Certificates, keys and the rustls configurations of both sides, when
//! [`TcpConfig::tls`] is set.

use std::sync::Arc;

use raft_api::{ConfigError, NodeId};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};

use transport_util::{ANY_NODE_SERVER_NAME, AnyNodeVerifier};

use crate::config::{PemSource, TcpConfig, TcpTls};

pub use transport_util::{node_id_of_certificate, node_server_name};

/// What both sides of a TLS transport use.
pub(crate) struct Tls {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) connector: TlsConnector,
    /// Whether accepted connections carry a client certificate whose node
    /// id must match the hello.
    pub(crate) mutual: bool,
}

impl Tls {
    /// Reads and parses the PEM material of `config.tls` and builds both
    /// rustls configurations. `Ok(None)` without TLS.
    pub(crate) fn load(config: &TcpConfig) -> Result<Option<Arc<Self>>, ConfigError> {
        let Some(tls) = &config.tls else {
            return Ok(None);
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let identity = Identity::load(config.node_id, tls)?;
        let server = identity.server_config(&provider, tls.mutual)?;
        let client = identity.client_config(&provider, tls.mutual)?;
        Ok(Some(Arc::new(Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
            mutual: tls.mutual,
        })))
    }

    /// The server side of the handshake on an accepted connection.
    pub(crate) async fn accept(
        &self,
        stream: TcpStream,
    ) -> std::io::Result<server::TlsStream<TcpStream>> {
        self.acceptor.accept(stream).await
    }

    /// The client side of the handshake with `peer` (when known; the
    /// server name sent), accepting a certificate of the CA that names any
    /// node: the caller checks the node with
    /// [`server_node_id`](Self::server_node_id).
    pub(crate) async fn connect(
        &self,
        peer: Option<NodeId>,
        stream: TcpStream,
    ) -> std::io::Result<client::TlsStream<TcpStream>> {
        let name = match peer {
            Some(peer) => node_server_name(peer),
            None => ANY_NODE_SERVER_NAME.to_owned(),
        };
        let name = ServerName::try_from(name)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        self.connector.connect(name, stream).await
    }

    /// The node id named by the server certificate of an opened
    /// connection (verified against the CA by the handshake).
    pub(crate) fn server_node_id(stream: &client::TlsStream<TcpStream>) -> Option<NodeId> {
        let (_, connection) = stream.get_ref();
        let leaf = connection.peer_certificates()?.first()?;
        node_id_of_certificate(leaf.as_ref())
    }

    /// The node id named by the client certificate of an accepted
    /// connection (mutual TLS only).
    pub(crate) fn peer_node_id(stream: &server::TlsStream<TcpStream>) -> Option<NodeId> {
        let (_, connection) = stream.get_ref();
        let leaf = connection.peer_certificates()?.first()?;
        node_id_of_certificate(leaf.as_ref())
    }
}

/// The PEM material of a node, parsed.
struct Identity {
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn pem_error(field: &'static str, problem: String) -> ConfigError {
    ConfigError {
        field,
        problem,
        fix: "give PEM text, or the path of a readable PEM file, of the cluster CA, \
              this node's certificate (DNS name node-<id>.raft) and its private key"
            .into(),
    }
}

fn tls_error(problem: String) -> ConfigError {
    ConfigError {
        field: "tls",
        problem,
        fix: "check that the certificate and key match and are supported by rustls (ring)".into(),
    }
}

impl Identity {
    fn load(node_id: NodeId, tls: &TcpTls) -> Result<Self, ConfigError> {
        let ca = read_certs("tls.ca_pem", &tls.ca_pem)?;
        let mut roots = RootCertStore::empty();
        for cert in ca {
            roots.add(cert).map_err(|e| {
                pem_error("tls.ca_pem", format!("is not a usable CA certificate: {e}"))
            })?;
        }
        let chain = read_certs("tls.cert_pem", &tls.cert_pem)?;
        let key_text = read("tls.key_pem", &tls.key_pem)?;
        let key = rustls_pemfile::private_key(&mut key_text.as_slice())
            .map_err(|e| pem_error("tls.key_pem", format!("is not valid PEM: {e}")))?
            .ok_or_else(|| pem_error("tls.key_pem", "holds no private key".into()))?;
        let named = chain
            .first()
            .and_then(|leaf| node_id_of_certificate(leaf.as_ref()));
        if named != Some(node_id) {
            return Err(pem_error(
                "tls.cert_pem",
                match named {
                    Some(other) => format!(
                        "is a certificate for {other}, not for {node_id} (its DNS name is {})",
                        node_server_name(other)
                    ),
                    None => format!(
                        "names no node: it needs exactly one DNS subject alternative \
                         name {}",
                        node_server_name(node_id)
                    ),
                },
            ));
        }
        Ok(Self {
            roots: Arc::new(roots),
            chain,
            key,
        })
    }

    /// TLS 1.3, this node's certificate, and (when `mutual`) client
    /// certificates required and verified against the CA.
    fn server_config(
        &self,
        provider: &Arc<CryptoProvider>,
        mutual: bool,
    ) -> Result<rustls::ServerConfig, ConfigError> {
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_error(e.to_string()))?;
        let builder = if mutual {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider.clone())
                    .build()
                    .map_err(|e| tls_error(format!("client verifier: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| tls_error(format!("certificate or key: {e}")))?;
        // Connections are long-lived and never resumed.
        config.send_tls13_tickets = 0;
        Ok(config)
    }

    /// TLS 1.3, servers verified against the CA with a certificate naming
    /// a node (which node is checked once the handshake is done: a peer
    /// given by address is not known before), this node's certificate
    /// presented when `mutual`.
    fn client_config(
        &self,
        provider: &Arc<CryptoProvider>,
        mutual: bool,
    ) -> Result<rustls::ClientConfig, ConfigError> {
        let verifier = AnyNodeVerifier::new(self.roots.clone(), provider.clone())
            .map_err(|e| tls_error(format!("server verifier: {e}")))?;
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_error(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        if mutual {
            builder
                .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
                .map_err(|e| tls_error(format!("certificate or key: {e}")))
        } else {
            Ok(builder.with_no_client_auth())
        }
    }
}

fn read(field: &'static str, source: &PemSource) -> Result<Vec<u8>, ConfigError> {
    source
        .read()
        .map_err(|e| pem_error(field, format!("cannot be read from {source:?}: {e}")))
}

fn read_certs(
    field: &'static str,
    source: &PemSource,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let text = read(field, source)?;
    let certs = rustls_pemfile::certs(&mut text.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(field, format!("is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(pem_error(field, "holds no certificate".into()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use transport_util::node_id_from_name;

    #[test]
    fn names_round_trip() {
        for id in [0, 1, 42, u64::MAX] {
            assert_eq!(
                node_id_from_name(&node_server_name(NodeId(id))),
                Some(NodeId(id))
            );
        }
        for bad in ["node-.raft", "node-+1.raft", "node-1.raft.evil", "*.raft"] {
            assert_eq!(node_id_from_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn unreadable_pem_is_a_config_error_naming_the_field() {
        let mut config = TcpConfig::new(NodeId(1), 1, "127.0.0.1:0".parse().unwrap());
        config.tls = Some(TcpTls::new(
            PemSource::File("/nonexistent/ca.pem".into()),
            PemSource::from("x"),
            PemSource::from("y"),
        ));
        let error = Tls::load(&config).err().expect("fails");
        assert_eq!(error.field, "tls.ca_pem");
        assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");
        config.tls.as_mut().unwrap().ca_pem = PemSource::from("not PEM");
        let error = Tls::load(&config).err().expect("fails");
        assert_eq!(error.field, "tls.ca_pem");
        assert!(error.problem.contains("no certificate"), "{error}");
    }
}
