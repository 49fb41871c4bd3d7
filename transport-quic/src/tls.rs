//! Certificates, keys and the rustls configurations of both sides.
//!
//! Every node has one certificate, used both as a server (for connections
//! it accepts) and as a client (for connections it opens), signed by the
//! cluster CA. Its node id is a DNS subject alternative name
//! `node-<id>.raft` ([`node_server_name`]).

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

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
    use raft_api::NodeId;

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
