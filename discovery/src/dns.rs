//! Peers from DNS: A/AAAA or SRV records, refreshed by a Tokio task.

mod config;
mod diff;

use std::cmp::Reverse;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{Name, ResolveError, Resolver, TokioResolver};
use raft_api::{Discovery, DiscoveryError, NodeId, Peer, PeerChange};
use tokio::task::AbortHandle;
use tokio::time::MissedTickBehavior;
use tracing::{debug, warn};

pub use config::{DnsConfig, DnsKind};

/// Peers from DNS records, looked up again every [`DnsConfig::refresh`] by
/// [`watch`](Discovery::watch).
///
/// # Records
///
/// - [`DnsKind::AddressRecords`]: the A and AAAA records of the name give
///   one peer per address, on the default port. Their ids are unknown
///   (`Peer::id` is `None`): the transport learns each id in its handshake.
/// - [`DnsKind::Srv`]: the SRV records of the name give targets and ports;
///   each target's A and AAAA records give its addresses. A target whose
///   first label is `n` followed by digits (`n3.raft.example.`) is node 3,
///   and yields one peer: its first IPv4 address, else its first IPv6
///   address. Any other target yields one peer per address, with no id.
///   Records are taken in SRV order (lowest priority, then highest weight);
///   a second record for an id already seen is skipped with a warning, as
///   are targets without addresses and the target `.` ("no service").
///
/// Peers come out sorted by id (known ids first), then address.
///
/// # Failures
///
/// A look-up fails when a name server cannot be reached or answers with an
/// error, and also when the records give no peer at all (the name does not
/// exist or has no records). [`Discovery::peers`] then returns
/// [`DiscoveryError::Resolve`]; a watch task logs a warning and keeps the
/// peers it knew, so a DNS outage (or an emptied zone) never reports every
/// peer `Down`. Only a successful look-up that no longer lists a peer does.
///
/// Every look-up asks the name servers afresh: the resolver's cache is
/// cleared first, so a change is seen within one `refresh` of the name
/// servers serving it (caching servers on the way still honour TTLs).
///
/// # Watching
///
/// [`watch`](Discovery::watch) spawns a Tokio task, so it must be called
/// within a Tokio runtime (it panics otherwise, as `tokio::spawn` does). The
/// task looks up at once and then every `refresh`. It compares each result
/// with the last peers returned by [`peers`](Discovery::peers) before the
/// call (or with no peers, when `peers` has not succeeded yet, so every peer
/// is first reported `Up`), then with its own previous result, and calls
/// back with `PeerChange::Down` for each vanished peer, then
/// `PeerChange::Up` for each new peer or known id at a new address. Every
/// task stops when the `DnsDiscovery` is dropped.
#[derive(Debug)]
pub struct DnsDiscovery {
    shared: Arc<Shared>,
    watchers: Mutex<Vec<AbortHandle>>,
}

/// What the watch tasks share with the `DnsDiscovery`.
#[derive(Debug)]
struct Shared {
    name: Name,
    kind: DnsKind,
    refresh: Duration,
    resolver: TokioResolver,
    /// Result of the last successful [`Discovery::peers`], the baseline of
    /// a new watch task.
    last_seen: Mutex<Option<Vec<Peer>>>,
}

impl DnsDiscovery {
    /// Checks `config` and builds the resolver; nothing is looked up yet.
    ///
    /// Fails with [`DiscoveryError::Resolve`] when the name is not a valid
    /// DNS name, `refresh` is zero, `name_servers` is an empty list, or (with
    /// `name_servers: None`) the system configuration cannot be read.
    pub fn new(config: DnsConfig) -> Result<Self, DiscoveryError> {
        let fail = |detail: String| DiscoveryError::Resolve {
            name: config.name.clone(),
            detail,
        };
        let name =
            Name::from_str(&config.name).map_err(|e| fail(format!("not a valid DNS name: {e}")))?;
        if config.refresh.is_zero() {
            return Err(fail("the refresh interval must not be zero".to_owned()));
        }
        let resolver = match &config.name_servers {
            None => TokioResolver::builder_tokio()
                .map_err(|e| fail(format!("cannot read the system DNS configuration: {e}")))?
                .build(),
            Some(servers) if servers.is_empty() => {
                return Err(fail("the list of name servers is empty".to_owned()));
            }
            Some(servers) => {
                let mut resolver_config = ResolverConfig::new();
                for &server in servers {
                    resolver_config.add_name_server(NameServerConfig::new(server, Protocol::Udp));
                    resolver_config.add_name_server(NameServerConfig::new(server, Protocol::Tcp));
                }
                let mut builder = Resolver::builder_with_config(
                    resolver_config,
                    TokioConnectionProvider::default(),
                );
                builder.options_mut().timeout = config.timeout;
                builder.build()
            }
        };
        Ok(Self {
            shared: Arc::new(Shared {
                name,
                kind: config.kind,
                refresh: config.refresh,
                resolver,
                last_seen: Mutex::new(None),
            }),
            watchers: Mutex::new(Vec::new()),
        })
    }
}

impl Discovery for DnsDiscovery {
    /// Looks the peers up now.
    async fn peers(&self) -> Result<Vec<Peer>, DiscoveryError> {
        let peers = self.shared.lookup().await?;
        *lock(&self.shared.last_seen) = Some(peers.clone());
        Ok(peers)
    }

    /// Spawns a task that looks up every `refresh` and reports changes; see
    /// the type's docs.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime.
    fn watch(&self, on_change: Box<dyn Fn(PeerChange) + Send + Sync>) {
        let runtime = tokio::runtime::Handle::try_current()
            .expect("DnsDiscovery::watch must be called within a Tokio runtime");
        let known = lock(&self.shared.last_seen).clone().unwrap_or_default();
        let task = runtime.spawn(watch_loop(Arc::clone(&self.shared), known, on_change));
        let mut watchers = lock(&self.watchers);
        watchers.retain(|watcher| !watcher.is_finished());
        watchers.push(task.abort_handle());
    }
}

impl Drop for DnsDiscovery {
    fn drop(&mut self) {
        for watcher in lock(&self.watchers).drain(..) {
            watcher.abort();
        }
    }
}

async fn watch_loop(
    shared: Arc<Shared>,
    mut known: Vec<Peer>,
    on_change: Box<dyn Fn(PeerChange) + Send + Sync>,
) {
    let mut ticks = tokio::time::interval(shared.refresh);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match shared.lookup().await {
            Ok(peers) => {
                for change in diff::changes(&known, &peers) {
                    debug!(name = %shared.name, ?change, "DNS peers changed");
                    on_change(change);
                }
                known = peers;
            }
            Err(error) => {
                warn!(%error, "DNS refresh failed; keeping the last known peers");
            }
        }
    }
}

impl Shared {
    /// One look-up of the configured records.
    async fn lookup(&self) -> Result<Vec<Peer>, DiscoveryError> {
        self.resolver.clear_cache();
        let (mut peers, what) = match self.kind {
            DnsKind::AddressRecords { default_port } => {
                let peers = self
                    .addresses(&self.name)
                    .await?
                    .into_iter()
                    .map(|ip| Peer {
                        id: None,
                        address: SocketAddr::new(ip, default_port).to_string(),
                    })
                    .collect();
                (peers, "no A or AAAA records")
            }
            DnsKind::Srv => (self.srv_peers().await?, "no SRV record with an address"),
        };
        if peers.is_empty() {
            return Err(DiscoveryError::Resolve {
                name: self.name.to_string(),
                detail: what.to_owned(),
            });
        }
        peers.sort_by(|a, b| {
            (a.id.is_none(), a.id, &a.address).cmp(&(b.id.is_none(), b.id, &b.address))
        });
        peers.dedup();
        Ok(peers)
    }

    /// Peers from the SRV records of the name.
    async fn srv_peers(&self) -> Result<Vec<Peer>, DiscoveryError> {
        let lookup = match self.resolver.srv_lookup(self.name.clone()).await {
            Ok(lookup) => lookup,
            Err(e) if e.is_no_records_found() => return Ok(Vec::new()),
            Err(e) => return Err(resolve_error(&self.name, e)),
        };
        let mut records: Vec<_> = lookup.iter().collect();
        records.sort_by_key(|srv| (srv.priority(), Reverse(srv.weight())));
        let mut peers = Vec::new();
        let mut ids = HashSet::new();
        for srv in records {
            let target = srv.target();
            if target.is_root() {
                continue;
            }
            let ips = self.addresses(target).await?;
            if ips.is_empty() {
                warn!(name = %self.name, %target, "SRV target has no A or AAAA record; skipped");
                continue;
            }
            let address = |ip: IpAddr| SocketAddr::new(ip, srv.port()).to_string();
            match node_id(target) {
                Some(id) if !ids.insert(id) => {
                    warn!(name = %self.name, %target, "a second SRV record for {id}; skipped");
                }
                Some(id) => peers.push(Peer {
                    id: Some(id),
                    address: address(ips[0]),
                }),
                None => peers.extend(ips.into_iter().map(|ip| Peer {
                    id: None,
                    address: address(ip),
                })),
            }
        }
        Ok(peers)
    }

    /// The A and AAAA addresses of `name`, IPv4 first, each sorted. A name
    /// without records has none; any other failure is an error.
    async fn addresses(&self, name: &Name) -> Result<Vec<IpAddr>, DiscoveryError> {
        let (v4, v6) = tokio::join!(
            self.resolver.ipv4_lookup(name.clone()),
            self.resolver.ipv6_lookup(name.clone()),
        );
        let mut ips: Vec<IpAddr> = Vec::new();
        match v4 {
            Ok(found) => ips.extend(found.iter().map(|a| IpAddr::V4(a.0))),
            Err(e) if e.is_no_records_found() => {}
            Err(e) => return Err(resolve_error(name, e)),
        }
        match v6 {
            Ok(found) => ips.extend(found.iter().map(|aaaa| IpAddr::V6(aaaa.0))),
            Err(e) if e.is_no_records_found() => {}
            Err(e) => return Err(resolve_error(name, e)),
        }
        ips.sort();
        ips.dedup();
        Ok(ips)
    }
}

/// The node id named by a SRV target: its first label is `n` (or `N`)
/// followed by decimal digits only.
fn node_id(target: &Name) -> Option<NodeId> {
    let label = target.iter().next()?;
    let digits = label
        .strip_prefix(b"n")
        .or_else(|| label.strip_prefix(b"N"))?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok().map(NodeId)
}

fn resolve_error(name: &Name, error: ResolveError) -> DiscoveryError {
    DiscoveryError::Resolve {
        name: name.to_string(),
        detail: error.to_string(),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_of(target: &str) -> Option<u64> {
        node_id(&Name::from_str(target).unwrap()).map(|id| id.0)
    }

    #[test]
    fn ids_come_from_a_first_label_n_digits() {
        assert_eq!(id_of("n1.raft.example."), Some(1));
        assert_eq!(id_of("N42.raft.example."), Some(42));
        assert_eq!(id_of("n007.raft.example"), Some(7));
        assert_eq!(id_of("n.raft.example."), None);
        assert_eq!(id_of("node1.raft.example."), None);
        assert_eq!(id_of("n1x.raft.example."), None);
        assert_eq!(id_of("1.raft.example."), None);
        assert_eq!(id_of("raft.n1.example."), None);
        assert_eq!(id_of("n99999999999999999999.raft.example."), None);
    }

    #[test]
    fn config_is_checked() {
        let error = |config| DnsDiscovery::new(config).unwrap_err().to_string();
        let base = DnsConfig::new("raft.example.", DnsKind::Srv)
            .with_name_servers(vec!["127.0.0.1:53".parse().unwrap()]);
        assert_eq!(
            error(base.clone().with_refresh(Duration::ZERO)),
            "cannot resolve `raft.example.`: the refresh interval must not be zero"
        );
        assert_eq!(
            error(base.clone().with_name_servers(Vec::new())),
            "cannot resolve `raft.example.`: the list of name servers is empty"
        );
        let bad_name = DnsConfig {
            name: "a..b".to_owned(),
            ..base.clone()
        };
        assert!(error(bad_name).starts_with("cannot resolve `a..b`: not a valid DNS name"));
        DnsDiscovery::new(base).unwrap();
    }
}
