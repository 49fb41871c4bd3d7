//! Backends chosen at run time from configuration strings.
//!
//! Each backend is its own crate, compiled in by a cargo feature of
//! `raft-node`: `mem` (in-memory log store and in-process transport, on by
//! default), `tcp`, `quic`, `lmdb`, `dns`, or `full` for all of them. Static
//! discovery comes with the runtime. A deployment then picks among the
//! compiled backends by name (`"tcp"`, `"quic"`, `"mem"`, `"lmdb"`,
//! `"static"`, `"dns"`), so changing the transport or the storage needs no
//! code change. Asking for a backend whose feature is off is an error that
//! names the feature to enable.
//!
//! ```
//! use raft_node::backends::{BackendError, StorageKind, TransportKind};
//!
//! let kind: TransportKind = "tcp".parse().unwrap();
//! assert_eq!(kind, TransportKind::Tcp);
//! let err = "carrier-pigeon".parse::<TransportKind>().unwrap_err();
//! assert!(err.to_string().contains("mem, tcp, quic"));
//! # let _ = StorageKind::Mem;
//! # let _: Option<BackendError> = None;
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use raft_api::{
    Discovery, DiscoveryError, Entry, Envelope, GroupId, HardState, Inbox, LogId, LogIndex,
    LogState, LogStore, NodeId, Peer, PeerChange, Snapshot, StorageError, Transport,
    TransportError,
};

/// Which transport to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// In-process channels (`mem` feature): nodes in one process.
    Mem,
    /// TCP (`tcp` feature).
    Tcp,
    /// QUIC with mutual TLS (`quic` feature).
    Quic,
}

/// Which log store to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StorageKind {
    /// In memory (`mem` feature): lost when the process ends.
    Mem,
    /// LMDB on disk (`lmdb` feature).
    Lmdb,
}

/// How nodes find each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DiscoveryKind {
    /// A fixed list of `id@host:port`.
    Static,
    /// DNS names (`dns` feature).
    Dns,
}

/// A backend that cannot be used as asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The name is not a known backend of that kind.
    #[error("unknown {what} `{name}`; expected one of: {expected}")]
    Unknown {
        /// What was being chosen ("transport", "storage", "discovery").
        what: &'static str,
        /// The name given.
        name: String,
        /// The accepted names.
        expected: &'static str,
    },
    /// The backend exists but this build does not include it.
    #[error("{what} `{name}` is not compiled in: enable the `{feature}` feature of raft-node")]
    NotCompiled {
        /// What was being chosen.
        what: &'static str,
        /// The backend.
        name: &'static str,
        /// The cargo feature that adds it.
        feature: &'static str,
    },
    /// A setting the backend needs is missing or wrong.
    #[error("{what} `{name}`: {problem}")]
    Settings {
        /// What was being built.
        what: &'static str,
        /// The backend.
        name: &'static str,
        /// What is wrong, and how to fix it.
        problem: String,
    },
    /// Opening the log store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The discovery source is unusable.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
}

macro_rules! kind_from_str {
    ($ty:ident, $what:literal, $expected:literal, { $($name:literal => $variant:ident),* $(,)? }) => {
        impl FromStr for $ty {
            type Err = BackendError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s.trim().to_ascii_lowercase().as_str() {
                    $($name => Ok($ty::$variant),)*
                    _ => Err(BackendError::Unknown {
                        what: $what,
                        name: s.to_owned(),
                        expected: $expected,
                    }),
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self { $($ty::$variant => $name,)* })
            }
        }
    };
}

kind_from_str!(TransportKind, "transport", "mem, tcp, quic", {
    "mem" => Mem, "tcp" => Tcp, "quic" => Quic,
});
kind_from_str!(StorageKind, "storage", "mem, lmdb", { "mem" => Mem, "lmdb" => Lmdb });
kind_from_str!(DiscoveryKind, "discovery", "static, dns", { "static" => Static, "dns" => Dns });

/// PEM files of a node's TLS identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster's certificate authority.
    pub ca: PathBuf,
    /// This node's certificate (for QUIC it must name `node-<id>.raft`).
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
}

/// What a transport is built from.
#[derive(Clone, Debug)]
pub struct TransportSettings {
    /// Which transport.
    pub kind: TransportKind,
    /// This node.
    pub node_id: NodeId,
    /// Nodes of other clusters are refused.
    pub cluster_id: u64,
    /// Where to listen (network transports).
    pub listen: SocketAddr,
    /// TLS identity: required by QUIC; with TCP it turns mutual TLS on.
    pub tls: Option<TlsFiles>,
    /// The in-process network to join (`mem`; a fresh one when `None`).
    #[cfg(feature = "mem")]
    pub network: Option<transport_mem::MemNetwork>,
}

impl TransportSettings {
    /// Settings for `kind` with no TLS and a fresh in-process network.
    pub fn new(kind: TransportKind, node_id: NodeId, cluster_id: u64, listen: SocketAddr) -> Self {
        Self {
            kind,
            node_id,
            cluster_id,
            listen,
            tls: None,
            #[cfg(feature = "mem")]
            network: None,
        }
    }
}

/// One of the compiled-in transports (built once per node, so the size of
/// the larger variants does not matter).
#[non_exhaustive]
#[allow(clippy::large_enum_variant)]
pub enum AnyTransport {
    /// In-process.
    #[cfg(feature = "mem")]
    Mem(transport_mem::MemTransport),
    /// TCP.
    #[cfg(feature = "tcp")]
    Tcp(transport_tcp::TcpTransport),
    /// QUIC.
    #[cfg(feature = "quic")]
    Quic(transport_quic::QuicTransport),
}

macro_rules! each_transport {
    ($self:expr, $t:ident => $body:expr) => {
        match $self {
            #[cfg(feature = "mem")]
            AnyTransport::Mem($t) => $body,
            #[cfg(feature = "tcp")]
            AnyTransport::Tcp($t) => $body,
            #[cfg(feature = "quic")]
            AnyTransport::Quic($t) => $body,
            #[allow(unreachable_patterns)]
            _ => unreachable!("no transport compiled in"),
        }
    };
}

impl AnyTransport {
    /// The address the transport listens on, once started (network
    /// transports).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            #[cfg(feature = "tcp")]
            AnyTransport::Tcp(t) => t.local_addr(),
            #[cfg(feature = "quic")]
            AnyTransport::Quic(t) => t.local_addr(),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }
}

// With some features off, a method's arguments may go unused.
#[allow(unused_variables)]
impl Transport for AnyTransport {
    async fn start(&self, inbox: Arc<dyn Inbox>) -> Result<(), TransportError> {
        each_transport!(self, t => t.start(inbox).await)
    }

    fn send(&self, to: NodeId, batch: Vec<Envelope>) -> Result<(), TransportError> {
        each_transport!(self, t => t.send(to, batch))
    }

    fn add_peer(&self, id: NodeId, address: String) {
        each_transport!(self, t => t.add_peer(id, address))
    }

    fn remove_peer(&self, id: NodeId) {
        each_transport!(self, t => t.remove_peer(id))
    }

    fn add_address(&self, address: String) -> Result<(), TransportError> {
        each_transport!(self, t => t.add_address(address))
    }

    fn remove_address(&self, address: &str) {
        each_transport!(self, t => t.remove_address(address))
    }

    async fn shutdown(&self) {
        each_transport!(self, t => t.shutdown().await)
    }
}

/// Builds the transport `settings` ask for.
pub fn build_transport(settings: TransportSettings) -> Result<AnyTransport, BackendError> {
    match settings.kind {
        TransportKind::Mem => {
            #[cfg(feature = "mem")]
            {
                let net = settings.network.unwrap_or_default();
                Ok(AnyTransport::Mem(net.transport(settings.node_id)))
            }
            #[cfg(not(feature = "mem"))]
            Err(not_compiled("transport", "mem", "mem"))
        }
        TransportKind::Tcp => {
            #[cfg(feature = "tcp")]
            {
                let mut config = transport_tcp::TcpConfig::new(
                    settings.node_id,
                    settings.cluster_id,
                    settings.listen,
                );
                // With TLS files, TCP uses mutual TLS against the cluster CA.
                config.tls = settings.tls.map(|tls| {
                    transport_tcp::TcpTls::new(tls.ca.into(), tls.cert.into(), tls.key.into())
                });
                transport_tcp::TcpTransport::new(config)
                    .map(AnyTransport::Tcp)
                    .map_err(|e| settings_error("transport", "tcp", e.to_string()))
            }
            #[cfg(not(feature = "tcp"))]
            Err(not_compiled("transport", "tcp", "tcp"))
        }
        TransportKind::Quic => {
            #[cfg(feature = "quic")]
            {
                let Some(tls) = settings.tls else {
                    return Err(settings_error(
                        "transport",
                        "quic",
                        "needs TLS files (CA, certificate, key): QUIC always uses mutual TLS"
                            .into(),
                    ));
                };
                let config = transport_quic::QuicConfig::new(
                    settings.node_id,
                    settings.cluster_id,
                    settings.listen,
                    tls.ca.into(),
                    tls.cert.into(),
                    tls.key.into(),
                );
                transport_quic::QuicTransport::new(config)
                    .map(AnyTransport::Quic)
                    .map_err(|e| settings_error("transport", "quic", e.to_string()))
            }
            #[cfg(not(feature = "quic"))]
            Err(not_compiled("transport", "quic", "quic"))
        }
    }
}

/// One of the compiled-in log stores.
#[non_exhaustive]
pub enum AnyLogStore {
    /// In memory.
    #[cfg(feature = "mem")]
    Mem(storage_mem::MemLogStore),
    /// LMDB (boxed: the store is far larger than the other variants).
    #[cfg(feature = "lmdb")]
    Lmdb(Box<storage_lmdb::LmdbLogStore>),
}

macro_rules! each_store {
    ($self:expr, $s:ident => $body:expr) => {
        match $self {
            #[cfg(feature = "mem")]
            AnyLogStore::Mem($s) => $body,
            #[cfg(feature = "lmdb")]
            AnyLogStore::Lmdb($s) => $body,
            #[allow(unreachable_patterns)]
            _ => unreachable!("no log store compiled in"),
        }
    };
}

#[allow(unused_variables)]
impl LogStore for AnyLogStore {
    fn groups(&self) -> Result<Vec<GroupId>, StorageError> {
        each_store!(self, s => s.groups())
    }

    fn hard_state(&self, group: GroupId) -> Result<HardState, StorageError> {
        each_store!(self, s => s.hard_state(group))
    }

    fn log_state(&self, group: GroupId) -> Result<LogState, StorageError> {
        each_store!(self, s => s.log_state(group))
    }

    fn entries(
        &self,
        group: GroupId,
        range: Range<LogIndex>,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        each_store!(self, s => s.entries(group, range, max_bytes))
    }

    fn save_hard_state(&mut self, group: GroupId, state: HardState) -> Result<(), StorageError> {
        each_store!(self, s => s.save_hard_state(group, state))
    }

    fn append(&mut self, group: GroupId, entries: &[Entry]) -> Result<(), StorageError> {
        each_store!(self, s => s.append(group, entries))
    }

    fn append_owned(&mut self, group: GroupId, entries: Vec<Entry>) -> Result<(), StorageError> {
        each_store!(self, s => s.append_owned(group, entries))
    }

    fn truncate(&mut self, group: GroupId, from: LogIndex) -> Result<(), StorageError> {
        each_store!(self, s => s.truncate(group, from))
    }

    fn compact(&mut self, group: GroupId, upto: LogId) -> Result<(), StorageError> {
        each_store!(self, s => s.compact(group, upto))
    }

    fn save_snapshot(&mut self, group: GroupId, snapshot: &Snapshot) -> Result<(), StorageError> {
        each_store!(self, s => s.save_snapshot(group, snapshot))
    }

    fn snapshot(&self, group: GroupId) -> Result<Option<Snapshot>, StorageError> {
        each_store!(self, s => s.snapshot(group))
    }

    async fn flush(&mut self) -> Result<(), StorageError> {
        each_store!(self, s => s.flush().await)
    }
}

/// Opens the log store of `kind`; LMDB needs a data directory and keeps
/// the cluster id in it (a directory of another cluster is refused).
pub fn open_log_store(
    kind: StorageKind,
    dir: Option<&std::path::Path>,
    cluster_id: u64,
) -> Result<AnyLogStore, BackendError> {
    match kind {
        StorageKind::Mem => {
            #[cfg(feature = "mem")]
            {
                let _ = (dir, cluster_id);
                Ok(AnyLogStore::Mem(storage_mem::MemLogStore::new()))
            }
            #[cfg(not(feature = "mem"))]
            Err(not_compiled("storage", "mem", "mem"))
        }
        StorageKind::Lmdb => {
            #[cfg(feature = "lmdb")]
            {
                let Some(dir) = dir else {
                    return Err(settings_error(
                        "storage",
                        "lmdb",
                        "needs a data directory".into(),
                    ));
                };
                let options = storage_lmdb::LmdbOptions::new(cluster_id);
                Ok(AnyLogStore::Lmdb(Box::new(
                    storage_lmdb::LmdbLogStore::open(dir, options)?,
                )))
            }
            #[cfg(not(feature = "lmdb"))]
            {
                let _ = (dir, cluster_id);
                Err(not_compiled("storage", "lmdb", "lmdb"))
            }
        }
    }
}

/// One of the compiled-in discovery sources.
#[non_exhaustive]
pub enum AnyDiscovery {
    /// A fixed list.
    Static(discovery::StaticDiscovery),
    /// DNS.
    #[cfg(feature = "dns")]
    Dns(discovery::DnsDiscovery),
}

impl Discovery for AnyDiscovery {
    async fn peers(&self) -> Result<Vec<Peer>, DiscoveryError> {
        match self {
            AnyDiscovery::Static(d) => d.peers().await,
            #[cfg(feature = "dns")]
            AnyDiscovery::Dns(d) => d.peers().await,
        }
    }

    fn watch(&self, on_change: Box<dyn Fn(PeerChange) + Send + Sync>) {
        match self {
            AnyDiscovery::Static(d) => d.watch(on_change),
            #[cfg(feature = "dns")]
            AnyDiscovery::Dns(d) => d.watch(on_change),
        }
    }
}

/// Builds the discovery of `kind` from its specification: for `static` a
/// list of `id@host:port`; for `dns` a name, `name:port` for A/AAAA records
/// with that port, or `srv:name` for SRV records.
pub fn build_discovery(kind: DiscoveryKind, spec: &str) -> Result<AnyDiscovery, BackendError> {
    match kind {
        DiscoveryKind::Static => Ok(AnyDiscovery::Static(discovery::StaticDiscovery::parse(
            spec,
        )?)),
        DiscoveryKind::Dns => {
            #[cfg(feature = "dns")]
            {
                use discovery::{DnsConfig, DnsDiscovery, DnsKind};
                let config = if let Some(name) = spec.strip_prefix("srv:") {
                    DnsConfig::new(name.to_owned(), DnsKind::Srv)
                } else {
                    let (name, port) = spec.rsplit_once(':').ok_or_else(|| {
                        settings_error(
                            "discovery",
                            "dns",
                            format!("`{spec}`: expected name:port or srv:name"),
                        )
                    })?;
                    let port: u16 = port.parse().map_err(|_| {
                        settings_error("discovery", "dns", format!("`{port}` is not a port"))
                    })?;
                    DnsConfig::new(
                        name.to_owned(),
                        DnsKind::AddressRecords { default_port: port },
                    )
                };
                Ok(AnyDiscovery::Dns(DnsDiscovery::new(config)?))
            }
            #[cfg(not(feature = "dns"))]
            {
                let _ = spec;
                Err(not_compiled("discovery", "dns", "dns"))
            }
        }
    }
}

#[allow(dead_code)]
fn not_compiled(what: &'static str, name: &'static str, feature: &'static str) -> BackendError {
    BackendError::NotCompiled {
        what,
        name,
        feature,
    }
}

#[allow(dead_code)]
fn settings_error(what: &'static str, name: &'static str, problem: String) -> BackendError {
    BackendError::Settings {
        what,
        name,
        problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_print() {
        for kind in [TransportKind::Mem, TransportKind::Tcp, TransportKind::Quic] {
            assert_eq!(kind.to_string().parse::<TransportKind>().unwrap(), kind);
        }
        assert_eq!(" LMDB ".parse::<StorageKind>().unwrap(), StorageKind::Lmdb);
        assert_eq!("dns".parse::<DiscoveryKind>().unwrap(), DiscoveryKind::Dns);
        let err = "disk".parse::<StorageKind>().unwrap_err().to_string();
        assert!(
            err.contains("unknown storage `disk`") && err.contains("mem, lmdb"),
            "{err}"
        );
    }

    #[test]
    fn static_discovery_from_a_spec() {
        let d =
            build_discovery(DiscoveryKind::Static, "1@127.0.0.1:7001,2@127.0.0.1:7002").unwrap();
        let AnyDiscovery::Static(list) = &d else {
            panic!("static")
        };
        assert_eq!(list.list().len(), 2);
        assert!(build_discovery(DiscoveryKind::Static, "1@nowhere").is_err());
    }

    #[test]
    fn a_backend_not_compiled_in_names_its_feature() {
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        #[cfg(not(feature = "quic"))]
        {
            let s = TransportSettings::new(TransportKind::Quic, NodeId(1), 1, listen);
            let err = build_transport(s).err().unwrap().to_string();
            assert!(err.contains("enable the `quic` feature"), "{err}");
        }
        #[cfg(feature = "quic")]
        {
            // Compiled in, but QUIC without TLS files is refused clearly.
            let s = TransportSettings::new(TransportKind::Quic, NodeId(1), 1, listen);
            let err = build_transport(s).err().unwrap().to_string();
            assert!(err.contains("needs TLS files"), "{err}");
        }
        #[cfg(not(feature = "lmdb"))]
        {
            let err = open_log_store(StorageKind::Lmdb, None, 1)
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains("enable the `lmdb` feature"), "{err}");
        }
        #[cfg(feature = "lmdb")]
        {
            let err = open_log_store(StorageKind::Lmdb, None, 1)
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains("needs a data directory"), "{err}");
        }
    }
}
