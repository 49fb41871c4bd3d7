//! What to look up, how often, and where.

use std::net::SocketAddr;
use std::time::Duration;

/// Configuration of a [`DnsDiscovery`](crate::DnsDiscovery).
///
/// Build it with [`DnsConfig::new`] and adjust fields or use the `with_*`
/// methods:
///
/// ```
/// use std::time::Duration;
/// use discovery::{DnsConfig, DnsKind};
///
/// let config = DnsConfig::new("_raft._tcp.example.", DnsKind::Srv)
///     .with_refresh(Duration::from_secs(10))
///     .with_name_servers(vec!["10.0.0.53:53".parse().unwrap()]);
/// assert_eq!(config.timeout, Duration::from_secs(5));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DnsConfig {
    /// The name to look up. Write it fully qualified, with the trailing dot
    /// (`raft.example.`), to skip the system's search domains.
    pub name: String,
    /// Which records to look up.
    pub kind: DnsKind,
    /// Time between two look-ups of a [`watch`](raft_api::Discovery::watch)
    /// task. Must not be zero. Default: 30 s.
    pub refresh: Duration,
    /// Name servers to ask, over UDP (and TCP for truncated answers); `None`
    /// uses the system configuration (`/etc/resolv.conf` on Unix). Default:
    /// `None`.
    pub name_servers: Option<Vec<SocketAddr>>,
    /// How long to wait for one answer before asking again (twice in all)
    /// or failing. Only used with `name_servers`; the system configuration
    /// has its own. Default: 5 s.
    pub timeout: Duration,
}

/// Which records name the peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DnsKind {
    /// A and AAAA records of the name: one peer per address, all on
    /// `default_port`, ids unknown.
    AddressRecords {
        /// Port of every peer.
        default_port: u16,
    },
    /// SRV records of the name: one peer per target, on the record's port,
    /// with an id when the target's first label is `n<id>`.
    Srv,
}

impl DnsConfig {
    /// A configuration with the defaults: refresh every 30 s, system name
    /// servers.
    pub fn new(name: impl Into<String>, kind: DnsKind) -> Self {
        Self {
            name: name.into(),
            kind,
            refresh: Duration::from_secs(30),
            name_servers: None,
            timeout: Duration::from_secs(5),
        }
    }

    /// Sets [`refresh`](Self::refresh).
    pub fn with_refresh(mut self, refresh: Duration) -> Self {
        self.refresh = refresh;
        self
    }

    /// Sets [`name_servers`](Self::name_servers) to `servers`.
    pub fn with_name_servers(mut self, servers: Vec<SocketAddr>) -> Self {
        self.name_servers = Some(servers);
        self
    }

    /// Sets [`timeout`](Self::timeout).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}
