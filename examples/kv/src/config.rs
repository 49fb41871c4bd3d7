//! The settings of `raft-kv serve`: flags and a TOML file, merged and
//! checked into a [`ServeConfig`].
//!
//! Every flag can also be set in the file given by `--config`, under the
//! flag's name with `_` for `-` (`--raft-listen` is `raft_listen`); a flag
//! overrides the file. Lists (`peers`, `http_peers`, `voters`) are written
//! as in the flags (`"1@host:7001,2@host:7002"`) or as TOML arrays.
//!
//! ```
//! use raft_kv::config::{ServeConfig, ServeSettings};
//!
//! let file: ServeSettings = toml::from_str(r#"
//!     id = 2
//!     peers = ["1@127.0.0.1:7001", "2@127.0.0.1:7002", "3@127.0.0.1:7003"]
//!     storage = "mem"
//! "#).unwrap();
//! let flags = ServeSettings { raft_listen: Some("127.0.0.1:7002".into()), ..Default::default() };
//! let config = ServeConfig::from_settings(flags.over(file)).unwrap();
//! assert_eq!(config.voters.len(), 3);
//! assert_eq!(config.raft_listen.port(), 7002);
//!
//! // Errors name the setting.
//! let bad = ServeSettings { id: Some(1), partitions: Some(0), peers: Some("1@h:1".into()), ..Default::default() };
//! let err = ServeConfig::from_settings(bad).unwrap_err().to_string();
//! assert!(err.contains("`partitions`"), "{err}");
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use raft_api::{NodeId, Peer};
use raft_node::backends::{StorageKind, TlsFiles, TransportKind};
use serde::{Deserialize, Deserializer};

use crate::Error;

/// Most partitions a node may host.
pub const MAX_PARTITIONS: u64 = 1024;
/// Largest allowed `max_value_bytes`: half the transports' frame limit, so
/// a value always fits in a message with room to spare.
pub const MAX_VALUE_LIMIT: u64 = 8 * 1024 * 1024;

/// The settings of `serve` as given: each may come from a flag or from the
/// TOML file; `None` means not given (the default applies).
#[derive(clap::Args, Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSettings {
    /// TOML file with any of these settings (flags override it).
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// This node's id (required, at least 1).
    #[arg(long)]
    pub id: Option<u64>,
    /// Cluster id: nodes of other clusters are refused [default: 1].
    #[arg(long)]
    pub cluster_id: Option<u64>,
    /// Raft address to listen on [default: 127.0.0.1:7001].
    #[arg(long, value_name = "ADDR")]
    pub raft_listen: Option<String>,
    /// HTTP address to listen on [default: 127.0.0.1:8001].
    #[arg(long, value_name = "ADDR")]
    pub http_listen: Option<String>,
    /// Raft addresses of the initial voters, self included: id@host:port,...
    #[arg(long, value_name = "LIST")]
    #[serde(default, deserialize_with = "list")]
    pub peers: Option<String>,
    /// How peers are found: static (from --peers) or dns (from --dns-name)
    /// [default: static].
    #[arg(long)]
    pub discovery: Option<String>,
    /// With --discovery dns: name:port (A/AAAA records) or srv:name (SRV).
    #[arg(long, value_name = "NAME")]
    pub dns_name: Option<String>,
    /// Initial voter ids, 1,2,3 [default: the ids of --peers]. A node not
    /// among them starts empty and waits to be added as a learner.
    #[arg(long, value_name = "IDS")]
    #[serde(default, deserialize_with = "list")]
    pub voters: Option<String>,
    /// HTTP addresses of the other nodes (id@host:port,...), for the leader
    /// hint in errors and in /cluster.
    #[arg(long, value_name = "LIST")]
    #[serde(default, deserialize_with = "list")]
    pub http_peers: Option<String>,
    /// Transport: tcp or quic [default: tcp].
    #[arg(long)]
    pub transport: Option<String>,
    /// Log storage: lmdb or mem [default: lmdb].
    #[arg(long)]
    pub storage: Option<String>,
    /// Data directory [default: ./data/node-<id>].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Number of partitions (Raft groups 0..n) [default: 1].
    #[arg(long)]
    pub partitions: Option<u64>,
    /// CA certificate (PEM) of the cluster: required for quic; with tcp the
    /// three TLS files turn on mutual TLS.
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// This node's certificate (PEM), naming node-<id>.raft.
    #[arg(long, value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long, value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// Largest value accepted, in bytes [default: 1048576].
    #[arg(long)]
    pub max_value_bytes: Option<u64>,
    /// How long a request may wait for its outcome [default: 5000].
    #[arg(long)]
    pub request_timeout_ms: Option<u64>,
    /// Shortest election timeout (overrides the Raft default).
    #[arg(long)]
    pub election_timeout_min_ms: Option<u64>,
    /// Longest election timeout (overrides the Raft default).
    #[arg(long)]
    pub election_timeout_max_ms: Option<u64>,
    /// Heartbeat interval (overrides the Raft default).
    #[arg(long)]
    pub heartbeat_ms: Option<u64>,
}

/// A list written as a string (`"a,b"`) or as a TOML array (of strings or
/// integers), kept as the comma-separated string.
fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Item {
        Text(String),
        Number(u64),
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List {
        One(Item),
        Many(Vec<Item>),
    }
    let text = |item: Item| match item {
        Item::Text(s) => s,
        Item::Number(n) => n.to_string(),
    };
    Ok(Some(match List::deserialize(d)? {
        List::One(item) => text(item),
        List::Many(items) => items.into_iter().map(text).collect::<Vec<_>>().join(","),
    }))
}

impl ServeSettings {
    /// These settings, with those not given taken from `base`.
    pub fn over(self, base: ServeSettings) -> ServeSettings {
        macro_rules! merge {
            ($($field:ident),*) => {
                ServeSettings { $($field: self.$field.or(base.$field)),* }
            };
        }
        merge!(
            config,
            id,
            cluster_id,
            raft_listen,
            http_listen,
            peers,
            discovery,
            dns_name,
            voters,
            http_peers,
            transport,
            storage,
            data_dir,
            partitions,
            tls_ca,
            tls_cert,
            tls_key,
            max_value_bytes,
            request_timeout_ms,
            election_timeout_min_ms,
            election_timeout_max_ms,
            heartbeat_ms
        )
    }

    /// Reads settings from a TOML file.
    pub fn from_file(path: &Path) -> Result<ServeSettings, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::file("reading", path, e))?;
        toml::from_str(&text).map_err(|e| Error::Config {
            field: "config",
            problem: format!("{}: {e}", path.display()),
        })
    }
}

/// Where the other nodes' Raft addresses come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerSource {
    /// A fixed list of `id@host:port` (self included).
    Static(Vec<Peer>),
    /// DNS: `name:port` (A/AAAA records) or `srv:name` (SRV records).
    Dns(String),
}

/// The checked settings of one node.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// This node.
    pub id: NodeId,
    /// Cluster id.
    pub cluster_id: u64,
    /// Raft listen address (port 0 picks a free port).
    pub raft_listen: SocketAddr,
    /// HTTP listen address (port 0 picks a free port).
    pub http_listen: SocketAddr,
    /// Raft addresses of the other nodes.
    pub peers: PeerSource,
    /// Initial voters of every partition; when this node is not among them
    /// it starts empty, to be added as a learner.
    pub voters: Vec<NodeId>,
    /// HTTP addresses of other nodes (leader hints, `/cluster`).
    pub http_peers: BTreeMap<NodeId, String>,
    /// Transport.
    pub transport: TransportKind,
    /// Log storage.
    pub storage: StorageKind,
    /// Data directory (LMDB).
    pub data_dir: PathBuf,
    /// Number of partitions: groups `0..partitions`.
    pub partitions: u64,
    /// TLS identity (required by QUIC; mutual TLS for TCP).
    pub tls: Option<TlsFiles>,
    /// Largest value accepted, in bytes.
    pub max_value_bytes: usize,
    /// How long a request may wait for its outcome.
    pub request_timeout: Duration,
    /// Raft settings of every group.
    pub raft: raft_api::Config,
}

fn bad(field: &'static str, problem: impl Into<String>) -> Error {
    Error::Config {
        field,
        problem: problem.into(),
    }
}

fn address(field: &'static str, value: Option<String>, default: &str) -> Result<SocketAddr, Error> {
    let text = value.unwrap_or_else(|| default.to_owned());
    text.trim().parse().map_err(|_| {
        bad(
            field,
            format!("`{text}` is not an IP address and port such as 127.0.0.1:7001"),
        )
    })
}

/// Parses an `id@host:port` list.
fn peer_list(field: &'static str, list: &str) -> Result<Vec<Peer>, Error> {
    discovery::StaticDiscovery::parse(list)
        .map(|d| d.list().to_vec())
        .map_err(|e| bad(field, e.to_string()))
}

/// Parses `1,2,3`.
fn id_list(field: &'static str, list: &str) -> Result<Vec<NodeId>, Error> {
    let mut ids = Vec::new();
    for item in list.split(|c: char| c == ',' || c.is_whitespace()) {
        if item.is_empty() {
            continue;
        }
        let id: u64 = item
            .parse()
            .map_err(|_| bad(field, format!("`{item}` is not a node id")))?;
        if id == 0 {
            return Err(bad(field, "node ids start at 1"));
        }
        if ids.contains(&NodeId(id)) {
            return Err(bad(field, format!("node {id} is listed twice")));
        }
        ids.push(NodeId(id));
    }
    if ids.is_empty() {
        return Err(bad(field, "the list is empty"));
    }
    Ok(ids)
}

fn check_dns_name(spec: &str) -> Result<(), Error> {
    let ok = match spec.strip_prefix("srv:") {
        Some(name) => !name.is_empty(),
        None => spec
            .rsplit_once(':')
            .is_some_and(|(name, port)| !name.is_empty() && port.parse::<u16>().is_ok()),
    };
    if ok {
        Ok(())
    } else {
        Err(bad(
            "dns_name",
            format!("`{spec}`: expected name:port (A/AAAA records) or srv:name (SRV records)"),
        ))
    }
}

impl ServeConfig {
    /// The settings of `serve`: the flags over the file they name (if
    /// any), checked.
    pub fn load(flags: ServeSettings) -> Result<ServeConfig, Error> {
        let settings = match &flags.config {
            Some(path) => {
                let file = ServeSettings::from_file(path)?;
                flags.over(file)
            }
            None => flags,
        };
        ServeConfig::from_settings(settings)
    }

    /// Checks settings and fills in the defaults; errors name the setting.
    pub fn from_settings(s: ServeSettings) -> Result<ServeConfig, Error> {
        let id = match s.id {
            None => return Err(bad("id", "missing: give this node's id with --id")),
            Some(0) => return Err(bad("id", "node ids start at 1")),
            Some(id) => NodeId(id),
        };
        let raft_listen = address("raft_listen", s.raft_listen, "127.0.0.1:7001")?;
        let http_listen = address("http_listen", s.http_listen, "127.0.0.1:8001")?;
        let discovery = s
            .discovery
            .as_deref()
            .unwrap_or("static")
            .trim()
            .to_ascii_lowercase();
        let (peers, default_voters) = match discovery.as_str() {
            "static" => {
                let list = s.peers.as_deref().ok_or_else(|| {
                    bad(
                        "peers",
                        "missing: list the initial voters' Raft addresses, id@host:port,... (self included)",
                    )
                })?;
                let peers = peer_list("peers", list)?;
                if peers.is_empty() {
                    return Err(bad("peers", "the list is empty"));
                }
                let ids: Vec<NodeId> = peers.iter().filter_map(|p| p.id).collect();
                (PeerSource::Static(peers), Some(ids))
            }
            "dns" => {
                let name = s.dns_name.clone().ok_or_else(|| {
                    bad(
                        "dns_name",
                        "missing: --discovery dns needs --dns-name name:port or srv:name",
                    )
                })?;
                check_dns_name(&name)?;
                (PeerSource::Dns(name), None)
            }
            other => {
                return Err(bad(
                    "discovery",
                    format!("unknown discovery `{other}`; expected static or dns"),
                ));
            }
        };
        let voters = match (&s.voters, default_voters) {
            (Some(list), _) => id_list("voters", list)?,
            (None, Some(ids)) => ids,
            (None, None) => {
                return Err(bad(
                    "voters",
                    "missing: with --discovery dns give the initial voter ids, 1,2,3",
                ));
            }
        };
        let mut http_peers = BTreeMap::new();
        if let Some(list) = &s.http_peers {
            for peer in peer_list("http_peers", list)? {
                if let Some(peer_id) = peer.id {
                    http_peers.insert(peer_id, peer.address);
                }
            }
        }
        let transport: TransportKind = s
            .transport
            .as_deref()
            .unwrap_or("tcp")
            .parse()
            .map_err(|e: raft_node::backends::BackendError| bad("transport", e.to_string()))?;
        if transport == TransportKind::Mem {
            return Err(bad(
                "transport",
                "`mem` only connects nodes inside one process; use tcp or quic",
            ));
        }
        let storage: StorageKind = s
            .storage
            .as_deref()
            .unwrap_or("lmdb")
            .parse()
            .map_err(|e: raft_node::backends::BackendError| bad("storage", e.to_string()))?;
        let data_dir = s
            .data_dir
            .unwrap_or_else(|| PathBuf::from(format!("./data/node-{}", id.0)));
        let partitions = s.partitions.unwrap_or(1);
        if partitions == 0 || partitions > MAX_PARTITIONS {
            return Err(bad(
                "partitions",
                format!("{partitions} is out of range; give 1 to {MAX_PARTITIONS}"),
            ));
        }
        let tls = match (s.tls_ca, s.tls_cert, s.tls_key) {
            (None, None, None) => None,
            (Some(ca), Some(cert), Some(key)) => {
                for (field, path) in [("tls_ca", &ca), ("tls_cert", &cert), ("tls_key", &key)] {
                    if !path.is_file() {
                        return Err(bad(
                            field,
                            format!("{} is not a readable file", path.display()),
                        ));
                    }
                }
                Some(TlsFiles { ca, cert, key })
            }
            (ca, cert, _) => {
                let missing = if ca.is_none() {
                    "tls_ca"
                } else if cert.is_none() {
                    "tls_cert"
                } else {
                    "tls_key"
                };
                return Err(bad(
                    missing,
                    "missing: TLS needs --tls-ca, --tls-cert and --tls-key together",
                ));
            }
        };
        if transport == TransportKind::Quic && tls.is_none() {
            return Err(bad(
                "tls_ca",
                "missing: quic always uses mutual TLS; give --tls-ca, --tls-cert and --tls-key (see `raft-kv certs`)",
            ));
        }
        let max_value_bytes = s.max_value_bytes.unwrap_or(1024 * 1024);
        if max_value_bytes == 0 || max_value_bytes > MAX_VALUE_LIMIT {
            return Err(bad(
                "max_value_bytes",
                format!("{max_value_bytes} is out of range; give 1 to {MAX_VALUE_LIMIT}"),
            ));
        }
        let request_timeout_ms = s.request_timeout_ms.unwrap_or(5000);
        if request_timeout_ms == 0 {
            return Err(bad(
                "request_timeout_ms",
                "is 0; give a timeout such as 5000",
            ));
        }
        let mut raft = raft_api::Config::default();
        if let Some(ms) = s.election_timeout_min_ms {
            raft.election_timeout_min_ms = ms;
        }
        if let Some(ms) = s.election_timeout_max_ms {
            raft.election_timeout_max_ms = ms;
        }
        if let Some(ms) = s.heartbeat_ms {
            raft.heartbeat_interval_ms = ms;
        }
        // Short election timeouts (tests, fast failover) need a smaller
        // allowance for clock drift under leases: keep it a third of the
        // shortest timeout.
        if raft.lease_clock_drift_ms >= raft.election_timeout_min_ms / 2 {
            raft.lease_clock_drift_ms = raft.election_timeout_min_ms / 3;
        }
        raft.validate().map_err(|e| {
            let field = match e.field {
                "heartbeat_interval_ms" => "heartbeat_ms",
                other => other,
            };
            bad(field, format!("{}; {}", e.problem, e.fix))
        })?;
        Ok(ServeConfig {
            id,
            cluster_id: s.cluster_id.unwrap_or(1),
            raft_listen,
            http_listen,
            peers,
            voters,
            http_peers,
            transport,
            storage,
            data_dir,
            partitions,
            tls,
            max_value_bytes: max_value_bytes as usize,
            request_timeout: Duration::from_millis(request_timeout_ms),
            raft,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> ServeSettings {
        ServeSettings {
            id: Some(1),
            peers: Some("1@127.0.0.1:7001,2@127.0.0.1:7002".into()),
            ..Default::default()
        }
    }

    fn field_of(s: ServeSettings) -> &'static str {
        match ServeConfig::from_settings(s) {
            Err(Error::Config { field, .. }) => field,
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = ServeConfig::from_settings(base()).unwrap();
        assert_eq!(c.cluster_id, 1);
        assert_eq!(c.raft_listen, "127.0.0.1:7001".parse().unwrap());
        assert_eq!(c.http_listen, "127.0.0.1:8001".parse().unwrap());
        assert_eq!(c.voters, vec![NodeId(1), NodeId(2)]);
        assert_eq!(c.transport, TransportKind::Tcp);
        assert_eq!(c.storage, StorageKind::Lmdb);
        assert_eq!(c.data_dir, PathBuf::from("./data/node-1"));
        assert_eq!(c.partitions, 1);
        assert_eq!(c.max_value_bytes, 1024 * 1024);
        assert_eq!(c.request_timeout, Duration::from_secs(5));
        assert!(c.tls.is_none());
        assert_eq!(c.raft, raft_api::Config::default());
    }

    #[test]
    fn every_invalid_setting_is_named() {
        let cases: Vec<(&str, ServeSettings)> = vec![
            ("id", ServeSettings { id: None, ..base() }),
            (
                "id",
                ServeSettings {
                    id: Some(0),
                    ..base()
                },
            ),
            (
                "peers",
                ServeSettings {
                    peers: None,
                    ..base()
                },
            ),
            (
                "peers",
                ServeSettings {
                    peers: Some("1@nowhere".into()),
                    ..base()
                },
            ),
            (
                "peers",
                ServeSettings {
                    peers: Some(" ".into()),
                    ..base()
                },
            ),
            (
                "raft_listen",
                ServeSettings {
                    raft_listen: Some("here".into()),
                    ..base()
                },
            ),
            (
                "http_listen",
                ServeSettings {
                    http_listen: Some("1.2.3.4".into()),
                    ..base()
                },
            ),
            (
                "transport",
                ServeSettings {
                    transport: Some("pigeon".into()),
                    ..base()
                },
            ),
            (
                "transport",
                ServeSettings {
                    transport: Some("mem".into()),
                    ..base()
                },
            ),
            (
                "storage",
                ServeSettings {
                    storage: Some("disk".into()),
                    ..base()
                },
            ),
            (
                "partitions",
                ServeSettings {
                    partitions: Some(0),
                    ..base()
                },
            ),
            (
                "partitions",
                ServeSettings {
                    partitions: Some(100_000),
                    ..base()
                },
            ),
            (
                "max_value_bytes",
                ServeSettings {
                    max_value_bytes: Some(0),
                    ..base()
                },
            ),
            (
                "request_timeout_ms",
                ServeSettings {
                    request_timeout_ms: Some(0),
                    ..base()
                },
            ),
            (
                "voters",
                ServeSettings {
                    voters: Some("1,x".into()),
                    ..base()
                },
            ),
            (
                "voters",
                ServeSettings {
                    voters: Some("1,1".into()),
                    ..base()
                },
            ),
            (
                "http_peers",
                ServeSettings {
                    http_peers: Some("2".into()),
                    ..base()
                },
            ),
            (
                "discovery",
                ServeSettings {
                    discovery: Some("mdns".into()),
                    ..base()
                },
            ),
            (
                "dns_name",
                ServeSettings {
                    discovery: Some("dns".into()),
                    voters: Some("1".into()),
                    ..base()
                },
            ),
            (
                "dns_name",
                ServeSettings {
                    discovery: Some("dns".into()),
                    dns_name: Some("raft.example".into()),
                    voters: Some("1".into()),
                    ..base()
                },
            ),
            (
                "voters",
                ServeSettings {
                    discovery: Some("dns".into()),
                    dns_name: Some("raft.example:7001".into()),
                    ..base()
                },
            ),
            (
                "tls_ca",
                ServeSettings {
                    transport: Some("quic".into()),
                    ..base()
                },
            ),
            (
                "tls_key",
                ServeSettings {
                    tls_ca: Some("/".into()),
                    tls_cert: Some("/".into()),
                    ..base()
                },
            ),
            (
                "tls_ca",
                ServeSettings {
                    tls_ca: Some("/nonexistent".into()),
                    tls_cert: Some("/".into()),
                    tls_key: Some("/".into()),
                    ..base()
                },
            ),
            (
                "election_timeout_max_ms",
                ServeSettings {
                    election_timeout_min_ms: Some(500),
                    election_timeout_max_ms: Some(400),
                    ..base()
                },
            ),
        ];
        for (field, settings) in cases {
            assert_eq!(field_of(settings.clone()), field, "{settings:?}");
        }
    }

    #[test]
    fn flags_override_the_file_and_lists_take_both_forms() {
        let file: ServeSettings = toml::from_str(
            r#"
            id = 3
            cluster_id = 9
            peers = "1@127.0.0.1:7001,3@127.0.0.1:7003"
            http_peers = ["1@127.0.0.1:8001"]
            voters = [1, 3]
            storage = "mem"
            partitions = 4
            heartbeat_ms = 20
            election_timeout_min_ms = 100
            election_timeout_max_ms = 200
            "#,
        )
        .unwrap();
        let flags = ServeSettings {
            partitions: Some(2),
            ..Default::default()
        };
        let c = ServeConfig::from_settings(flags.over(file)).unwrap();
        assert_eq!(c.id, NodeId(3));
        assert_eq!(c.cluster_id, 9);
        assert_eq!(c.partitions, 2);
        assert_eq!(c.storage, StorageKind::Mem);
        assert_eq!(c.voters, vec![NodeId(1), NodeId(3)]);
        assert_eq!(c.http_peers.get(&NodeId(1)).unwrap(), "127.0.0.1:8001");
        assert_eq!(c.raft.heartbeat_interval_ms, 20);
        assert_eq!(c.raft.election_timeout_max_ms, 200);
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, "id = 1\nshards = 3\n").unwrap();
        let flags = ServeSettings {
            config: Some(path.clone()),
            ..Default::default()
        };
        let err = ServeConfig::load(flags).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("shards") && text.contains("node.toml"),
            "{text}"
        );
        let missing = ServeSettings {
            config: Some(dir.path().join("absent.toml")),
            ..Default::default()
        };
        assert!(
            ServeConfig::load(missing)
                .unwrap_err()
                .to_string()
                .contains("absent.toml")
        );
    }

    #[test]
    fn a_node_missing_from_the_voters_joins_later() {
        let c = ServeConfig::from_settings(ServeSettings {
            id: Some(4),
            voters: Some("1,2,3".into()),
            peers: Some("1@h:1,2@h:2,3@h:3,4@h:4".into()),
            ..Default::default()
        })
        .unwrap();
        assert!(!c.voters.contains(&c.id));
        let dns = ServeConfig::from_settings(ServeSettings {
            id: Some(1),
            discovery: Some("dns".into()),
            dns_name: Some("srv:_raft._tcp.example.".into()),
            voters: Some("1 2 3".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(dns.peers, PeerSource::Dns("srv:_raft._tcp.example.".into()));
        assert_eq!(dns.voters.len(), 3);
    }
}
