//! Test helpers (feature `testing`): a certificate authority and node
//! certificates made in memory with rcgen, for the transports' tests.
//!
//! ```
//! use raft_api::NodeId;
//! use transport_util::testing::Ca;
//!
//! let ca = Ca::new("test cluster");
//! let cert = ca.node(NodeId(3));
//! assert!(cert.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
//! assert_eq!(transport_util::node_id_of_certificate(&cert.cert_der), Some(NodeId(3)));
//! ```

use raft_api::NodeId;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::CertificateDer;

use crate::node_server_name;

/// A certificate authority made in memory. Panics if rcgen fails (test
/// code only).
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A node's certificate and key, PEM and DER (the key in PKCS#8).
#[derive(Clone)]
pub struct NodeCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM.
    pub key_pem: String,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The private key, PKCS#8 DER.
    pub key_der: Vec<u8>,
}

impl std::fmt::Debug for NodeCert {
    /// Never shows the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCert")
            .field("node", &crate::node_id_of_certificate(&self.cert_der))
            .finish_non_exhaustive()
    }
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

    /// A node-style certificate (server and client authentication) with
    /// the given DNS names, for example none naming a node, or two.
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

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}
