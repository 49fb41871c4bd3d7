//! A TLS server verifier for dialling a peer whose node id is not known
//! yet (a peer given by address only): it accepts a certificate of the
//! cluster CA naming any node, and the transport then reads the id from
//! the certificate ([`node_id_of_certificate`]).

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::{node_id_of_certificate, node_server_name};

/// The TLS server name to dial with when the peer's id is not known yet:
/// [`AnyNodeVerifier`] ignores it (the server presents its one
/// certificate whatever the name).
pub const ANY_NODE_SERVER_NAME: &str = "node.raft";

/// Verifies a server certificate against the cluster CA as a normal
/// client would, for the name `node-<id>.raft` of whichever node the
/// certificate names ([`node_id_of_certificate`]), instead of the name
/// dialled. A certificate that names no node, or several, is refused.
///
/// Use it only to learn the id of a peer known by address: once the
/// handshake is done, take the id from the server's certificate and check
/// that the peer's hello names the same node.
#[derive(Debug)]
pub struct AnyNodeVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl AnyNodeVerifier {
    /// A verifier trusting `roots` (the cluster CA), with the signature
    /// algorithms of `provider`.
    pub fn new(
        roots: Arc<RootCertStore>,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, rustls::client::VerifierBuilderError> {
        let inner = WebPkiServerVerifier::builder_with_provider(roots, provider).build()?;
        Ok(Self { inner })
    }
}

impl ServerCertVerifier for AnyNodeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let id = node_id_of_certificate(end_entity.as_ref()).ok_or(
            rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
        )?;
        let name = ServerName::try_from(node_server_name(id))
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::NotValidForName))?;
        self.inner
            .verify_server_cert(end_entity, intermediates, &name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Ca;
    use raft_api::NodeId;

    fn verifier(ca: &Ca) -> AnyNodeVerifier {
        let mut roots = RootCertStore::empty();
        roots.add(ca.der()).expect("root");
        AnyNodeVerifier::new(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .expect("verifier")
    }

    fn verify(verifier: &AnyNodeVerifier, cert_der: &[u8]) -> Result<(), rustls::Error> {
        let name = ServerName::try_from(ANY_NODE_SERVER_NAME).expect("name");
        verifier
            .verify_server_cert(
                &CertificateDer::from(cert_der),
                &[],
                &name,
                &[],
                UnixTime::now(),
            )
            .map(|_| ())
    }

    #[test]
    fn any_node_of_the_ca_is_accepted() {
        let ca = Ca::new("cluster");
        let verifier = verifier(&ca);
        for id in [1, 2, 42] {
            let cert = ca.node(NodeId(id));
            assert_eq!(verify(&verifier, &cert.cert_der), Ok(()));
            assert_eq!(node_id_of_certificate(&cert.cert_der), Some(NodeId(id)));
        }
    }

    #[test]
    fn other_cas_and_certificates_without_a_node_are_refused() {
        let ca = Ca::new("cluster");
        let verifier = verifier(&ca);
        let stranger = Ca::new("another cluster").node(NodeId(2));
        assert!(verify(&verifier, &stranger.cert_der).is_err(), "another CA");
        let no_node = ca.with_names(vec!["example.com".into()]);
        assert_eq!(
            verify(&verifier, &no_node.cert_der),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName
            ))
        );
        let two_nodes = ca.with_names(vec![
            node_server_name(NodeId(1)),
            node_server_name(NodeId(2)),
        ]);
        assert!(verify(&verifier, &two_nodes.cert_der).is_err(), "two nodes");
        assert!(verify(&verifier, b"garbage").is_err());
    }
}
