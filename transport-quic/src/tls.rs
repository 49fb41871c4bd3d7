//! Certificates, keys and the rustls configurations of both sides.
//!
//! Every node has one certificate, used both as a server (for connections
//! it accepts) and as a client (for connections it opens), signed by the
//! cluster CA. Its node id is a DNS subject alternative name
//! `node-<id>.raft` ([`node_server_name`]).
//!
//! A node dials a known peer as `node-<peer>.raft`. It dials an address
//! whose node is not known yet ([`Transport::add_address`]) with
//! [`AnyNodeVerifier`], which accepts a certificate of the CA valid for any
//! one node name, and takes the id from that certificate.
//!
//! [`Transport::add_address`]: raft_api::Transport::add_address

use std::sync::Arc;

use raft_api::NodeId;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use transport_util::AnyNodeVerifier;

use crate::QuicError;
use crate::config::{PemSource, QuicConfig};

/// The ALPN protocol both sides require.
pub(crate) const ALPN: &[u8] = b"raft-quic/1";

pub use transport_util::{node_id_from_name, node_id_of_certificate, node_server_name};

/// The PEM material of a node, parsed.
pub(crate) struct Identity {
    pub(crate) roots: Arc<RootCertStore>,
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
}

impl Identity {
    /// Reads and parses the CA, certificate chain and key of `config`, and
    /// checks that the certificate names `config.node_id`.
    pub(crate) fn load(config: &QuicConfig) -> Result<Self, QuicError> {
        let ca = read_certs("ca_pem", &config.ca_pem)?;
        let mut roots = RootCertStore::empty();
        for cert in ca {
            roots.add(cert).map_err(|e| QuicError::Pem {
                what: "ca_pem",
                detail: format!("not a usable CA certificate: {e}"),
            })?;
        }
        let chain = read_certs("cert_pem", &config.cert_pem)?;
        let key_text = read("key_pem", &config.key_pem)?;
        let key = rustls_pemfile::private_key(&mut key_text.as_slice())
            .map_err(|e| QuicError::Pem {
                what: "key_pem",
                detail: e.to_string(),
            })?
            .ok_or_else(|| QuicError::Pem {
                what: "key_pem",
                detail: "no private key found".into(),
            })?;
        let named = chain
            .first()
            .and_then(|leaf| node_id_of_certificate(leaf.as_ref()));
        if named != Some(config.node_id) {
            return Err(QuicError::Pem {
                what: "cert_pem",
                detail: match named {
                    Some(other) => format!(
                        "the certificate is for {other}, not for {} (its DNS name {})",
                        config.node_id,
                        node_server_name(other)
                    ),
                    None => format!(
                        "the certificate names no node: it needs exactly one DNS \
                         subject alternative name {}",
                        node_server_name(config.node_id)
                    ),
                },
            });
        }
        Ok(Self {
            roots: Arc::new(roots),
            chain,
            key,
        })
    }

    /// The rustls server configuration: TLS 1.3, this node's certificate,
    /// and client certificates required and verified against the CA.
    pub(crate) fn server_config(
        &self,
        provider: &Arc<CryptoProvider>,
    ) -> Result<rustls::ServerConfig, QuicError> {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider.clone())
                .build()
                .map_err(|e| QuicError::Tls(format!("client verifier: {e}")))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| QuicError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| QuicError::Tls(format!("certificate or key: {e}")))?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }

    /// The rustls client configuration: TLS 1.3, servers verified against
    /// the CA (and the `node-<id>.raft` name dialled), this node's
    /// certificate presented.
    pub(crate) fn client_config(
        &self,
        provider: &Arc<CryptoProvider>,
    ) -> Result<rustls::ClientConfig, QuicError> {
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| QuicError::Tls(e.to_string()))?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| QuicError::Tls(format!("certificate or key: {e}")))?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }
}

impl Identity {
    /// The rustls client configuration for dialling an address whose node
    /// is not known: like [`client_config`](Self::client_config), but the
    /// server's certificate may name any node (exactly one); it must still
    /// chain to the CA and be valid for that name.
    pub(crate) fn any_node_client_config(
        &self,
        provider: &Arc<CryptoProvider>,
    ) -> Result<rustls::ClientConfig, QuicError> {
        let verifier = AnyNodeVerifier::new(self.roots.clone(), provider.clone())
            .map_err(|e| QuicError::Tls(format!("server verifier: {e}")))?;
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| QuicError::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| QuicError::Tls(format!("certificate or key: {e}")))?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }

    /// The QUIC endpoint settings of `node` that must stay the same across
    /// its restarts: the key of its stateless reset tokens, and the key its
    /// connection ids are checked with, both derived from its private key
    /// (so unknown to anyone without it). A restarted node then recognises
    /// packets for connections its previous run left open and resets
    /// them: their peers reconnect at once instead of waiting for the idle
    /// timeout.
    pub(crate) fn endpoint_config(&self, node: NodeId) -> quinn::EndpointConfig {
        let reset_key = self.derive(node, b"raft-quic stateless reset key");
        let reset_key: Arc<dyn quinn::crypto::HmacKey> =
            Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &reset_key));
        let cid_key = self.derive(node, b"raft-quic connection id key");
        let mut cid_key_bytes = [0u8; 8];
        cid_key_bytes.copy_from_slice(&cid_key[..8]);
        let cid_key = u64::from_le_bytes(cid_key_bytes);
        let mut config = quinn::EndpointConfig::new(reset_key);
        config.cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        });
        config
    }

    /// 32 bytes derived from this node's private key for `purpose`.
    fn derive(&self, node: NodeId, purpose: &[u8]) -> [u8; 32] {
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        digest.update(purpose);
        digest.update(&[0]);
        digest.update(&node.0.to_be_bytes());
        digest.update(self.key.secret_der());
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.finish().as_ref());
        out
    }
}

/// The node id named by the certificate the other end of `connection`
/// presented (verified against the CA during the handshake).
pub(crate) fn peer_node(connection: &quinn::Connection) -> Option<NodeId> {
    let identity = connection.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    let leaf = chain.first()?;
    node_id_of_certificate(leaf.as_ref())
}

fn read(what: &'static str, source: &PemSource) -> Result<Vec<u8>, QuicError> {
    source.read().map_err(|e| QuicError::Pem {
        what,
        detail: format!("cannot read {source:?}: {e}"),
    })
}

fn read_certs(
    what: &'static str,
    source: &PemSource,
) -> Result<Vec<CertificateDer<'static>>, QuicError> {
    let text = read(what, source)?;
    let certs = rustls_pemfile::certs(&mut text.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| QuicError::Pem {
            what,
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(QuicError::Pem {
            what,
            detail: "no certificate found".into(),
        });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for id in [0, 1, 42, u64::MAX] {
            assert_eq!(
                node_id_from_name(&node_server_name(NodeId(id))),
                Some(NodeId(id))
            );
        }
        for bad in [
            "node-.raft",
            "node--1.raft",
            "node-+1.raft",
            "node-1.raft.evil",
            "xnode-1.raft",
            "node-18446744073709551616.raft",
            "*.raft",
        ] {
            assert_eq!(node_id_from_name(bad), None, "{bad}");
        }
    }

    fn certificate(names: &[&str]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let params = rcgen::CertificateParams::new(names).unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn node_id_comes_from_exactly_one_node_name() {
        let id = |names: &[&str]| node_id_of_certificate(&certificate(names));
        assert_eq!(id(&["node-5.raft"]), Some(NodeId(5)));
        assert_eq!(id(&["example.com", "node-5.raft"]), Some(NodeId(5)));
        assert_eq!(id(&["node-5.raft", "node-5.raft"]), Some(NodeId(5)));
        assert_eq!(id(&["node-5.raft", "node-6.raft"]), None, "ambiguous");
        assert_eq!(id(&["example.com"]), None);
        assert_eq!(id(&[]), None);
    }

    #[test]
    fn garbage_is_no_certificate() {
        assert_eq!(node_id_of_certificate(b"not a certificate"), None);
        assert_eq!(node_id_of_certificate(&[]), None);
    }
}
