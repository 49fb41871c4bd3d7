//! A development certificate authority and per-node certificates for the
//! mutual TLS of both transports.
//!
//! `raft-kv certs --out DIR --nodes 1,2,3` writes `ca.pem` and
//! `ca-key.pem` (the CA), and for each node `node-<id>.pem` and
//! `node-<id>-key.pem`. A node's certificate carries its id as the DNS
//! name `node-<id>.raft` (how both transports tell who is on the other
//! end), the extra host names and IP addresses given, and is valid for
//! both server and client authentication. Private keys are written
//! readable by their owner only.
//!
//! When `DIR` already holds a CA (`ca.pem` and `ca-key.pem`), it is kept
//! and signs the new certificates, so nodes can be added later.
//!
//! These are for development and tests: keep `ca-key.pem` secret, or use
//! your own PKI in production.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use raft_api::NodeId;
use raft_node::backends::TlsFiles;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::Error;

/// The files written by [`generate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFiles {
    /// The CA certificate.
    pub ca: PathBuf,
    /// The CA's private key.
    pub ca_key: PathBuf,
    /// Each node's certificate and key, with the CA.
    pub nodes: BTreeMap<u64, TlsFiles>,
}

/// The TLS files of node `id` in `dir`, as [`generate`] names them.
pub fn node_files(dir: &Path, id: u64) -> TlsFiles {
    TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join(format!("node-{id}.pem")),
        key: dir.join(format!("node-{id}-key.pem")),
    }
}

fn cert_error(what: &str, e: rcgen::Error) -> Error {
    Error::Certificate(format!("{what}: {e}"))
}

fn ca_params() -> Result<CertificateParams, Error> {
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| cert_error("CA", e))?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "raft-kv development CA");
    name.push(DnType::OrganizationName, "raft-kv");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

fn write(path: &Path, text: &str, private: bool) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|e| Error::file("writing", path, e))?;
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::file("restricting access to", path, e))?;
    }
    Ok(())
}

/// Writes a CA (unless `out` has one) and a certificate for each of
/// `nodes` into `out` (created if missing), each naming `node-<id>.raft`
/// and every entry of `hosts` (DNS names or IP addresses).
pub fn generate(out: &Path, nodes: &[u64], hosts: &[String]) -> Result<CertFiles, Error> {
    if nodes.is_empty() {
        return Err(Error::Config {
            field: "nodes",
            problem: "no node ids given".into(),
        });
    }
    if let Some(zero) = nodes.iter().find(|&&id| id == 0) {
        return Err(Error::Config {
            field: "nodes",
            problem: format!("node id {zero}: ids start at 1"),
        });
    }
    std::fs::create_dir_all(out).map_err(|e| Error::file("creating", out, e))?;
    let ca_path = out.join("ca.pem");
    let ca_key_path = out.join("ca-key.pem");
    let ca_key = if ca_path.is_file() && ca_key_path.is_file() {
        let pem = std::fs::read_to_string(&ca_key_path)
            .map_err(|e| Error::file("reading", &ca_key_path, e))?;
        KeyPair::from_pem(&pem).map_err(|e| cert_error("reading the CA key", e))?
    } else {
        let key = KeyPair::generate().map_err(|e| cert_error("CA key", e))?;
        let cert = ca_params()?
            .self_signed(&key)
            .map_err(|e| cert_error("CA certificate", e))?;
        write(&ca_key_path, &key.serialize_pem(), true)?;
        write(&ca_path, &cert.pem(), false)?;
        key
    };
    // Signing needs the issuer's name and key; the same parameters and key
    // give the issuer of the CA certificate on disk.
    let issuer = ca_params()?
        .self_signed(&ca_key)
        .map_err(|e| cert_error("CA certificate", e))?;
    let mut files = BTreeMap::new();
    for &id in nodes {
        let mut names = vec![transport_util::node_server_name(NodeId(id))];
        names.extend(
            hosts
                .iter()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty()),
        );
        let mut params = CertificateParams::new(names)
            .map_err(|e| cert_error(&format!("node {id}: host names"), e))?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, format!("raft-kv node {id}"));
        params.distinguished_name = name;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().map_err(|e| cert_error(&format!("node {id} key"), e))?;
        let cert = params
            .signed_by(&key, &issuer, &ca_key)
            .map_err(|e| cert_error(&format!("node {id} certificate"), e))?;
        let paths = node_files(out, id);
        write(&paths.cert, &cert.pem(), false)?;
        write(&paths.key, &key.serialize_pem(), true)?;
        files.insert(id, paths);
    }
    Ok(CertFiles {
        ca: ca_path,
        ca_key: ca_key_path,
        nodes: files,
    })
}
