//! A fixed list of peers given in configuration.

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};
use std::str::FromStr;

use raft_api::{Discovery, DiscoveryError, NodeId, Peer, PeerChange};

/// The form every entry must have; quoted in every parse error.
const EXPECTED: &str = "expected id@host:port";

/// Peers from a fixed list such as `"1@10.0.0.1:7000,2@10.0.0.2:7000"`.
///
/// # Syntax
///
/// Entries are `id@host:port`, separated by commas, whitespace or newlines
/// (in any mix; empty entries are skipped, so a trailing comma is fine):
///
/// - `id` is the node id, a decimal `u64`;
/// - `host` is a DNS name (`node-1.example`), an IPv4 literal
///   (`10.0.0.1`) or an IPv6 literal in brackets (`[fd00::1]`);
/// - `port` is a decimal port from 1 to 65535.
///
/// Each id and each address may appear once. An empty list is valid (a
/// single-node cluster has no peers).
///
/// Every peer has its id (`Peer::id` is always `Some`). IP literals are
/// written back in canonical form (`[fd00:0::1]:7000` becomes
/// `[fd00::1]:7000`); names are kept as written, lower-cased, and are not
/// resolved here: the transport resolves them when it connects.
///
/// # Watching
///
/// The list never changes, so [`Discovery::watch`] never calls back; it
/// only drops the callback.
///
/// ```
/// use discovery::StaticDiscovery;
///
/// let err = "1@10.0.0.1:7000, x@h:1".parse::<StaticDiscovery>().unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     r#"invalid peer entry `x@h:1`: node id "x" is not a number; expected id@host:port"#,
/// );
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StaticDiscovery {
    peers: Vec<Peer>,
}

impl StaticDiscovery {
    /// Parses a list of `id@host:port` entries; see the type's docs for the
    /// syntax. Errors are [`DiscoveryError::InvalidPeer`], naming the bad
    /// entry, what is wrong with it and the expected form.
    pub fn parse(list: &str) -> Result<Self, DiscoveryError> {
        let mut peers: Vec<Peer> = Vec::new();
        let mut by_id: HashMap<NodeId, &str> = HashMap::new();
        let mut by_address: HashMap<String, &str> = HashMap::new();
        let entries = list
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|entry| !entry.is_empty());
        for entry in entries {
            let peer = parse_entry(entry).map_err(|detail| invalid(entry, detail))?;
            let id = peer.id.expect("parse_entry always sets the id");
            if let Some(first) = by_id.insert(id, entry) {
                return Err(invalid(
                    entry,
                    format!("node id {} is already used by `{first}`", id.0),
                ));
            }
            if let Some(first) = by_address.insert(peer.address.clone(), entry) {
                return Err(invalid(
                    entry,
                    format!("address {} is already used by `{first}`", peer.address),
                ));
            }
            peers.push(peer);
        }
        Ok(Self { peers })
    }

    /// The peers, in the order they were given.
    pub fn list(&self) -> &[Peer] {
        &self.peers
    }
}

impl FromStr for StaticDiscovery {
    type Err = DiscoveryError;

    fn from_str(list: &str) -> Result<Self, Self::Err> {
        Self::parse(list)
    }
}

/// Writes the list back in the syntax [`StaticDiscovery::parse`] reads,
/// entries separated by commas.
impl fmt::Display for StaticDiscovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, peer) in self.peers.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let id = peer.id.map_or(0, |id| id.0);
            write!(f, "{id}@{}", peer.address)?;
        }
        Ok(())
    }
}

impl Discovery for StaticDiscovery {
    async fn peers(&self) -> Result<Vec<Peer>, DiscoveryError> {
        Ok(self.peers.clone())
    }

    /// Never calls back: a static list does not change.
    fn watch(&self, on_change: Box<dyn Fn(PeerChange) + Send + Sync>) {
        drop(on_change);
    }
}

fn invalid(entry: &str, detail: String) -> DiscoveryError {
    DiscoveryError::InvalidPeer {
        entry: entry.to_owned(),
        detail,
    }
}

/// Parses one `id@host:port`; the error is the detail, without the entry.
fn parse_entry(entry: &str) -> Result<Peer, String> {
    let Some((id, address)) = entry.split_once('@') else {
        return Err(format!(
            "missing `@` between node id and address; {EXPECTED}"
        ));
    };
    let id = id
        .parse::<u64>()
        .map_err(|_| format!("node id \"{id}\" is not a number; {EXPECTED}"))?;
    let address = parse_address(address)?;
    Ok(Peer {
        id: Some(NodeId(id)),
        address,
    })
}

/// Parses `host:port` into the address kept in [`Peer::address`].
fn parse_address(address: &str) -> Result<String, String> {
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let Some((ip, port)) = rest.split_once(']') else {
            return Err(format!("missing `]` after IPv6 address; {EXPECTED}"));
        };
        let ip = ip
            .parse::<Ipv6Addr>()
            .map_err(|_| format!("\"{ip}\" is not an IPv6 address; {EXPECTED}"))?;
        let Some(port) = port.strip_prefix(':') else {
            return Err(format!("missing `:port` after `[{ip}]`; {EXPECTED}"));
        };
        let port = parse_port(port)?;
        return Ok(SocketAddr::new(ip.into(), port).to_string());
    } else {
        match address.rsplit_once(':') {
            None => return Err(format!("missing `:port`; {EXPECTED}")),
            Some((host, _)) if host.contains(':') => {
                return Err(format!(
                    "IPv6 address \"{host}\" must be in brackets, as in [{host}]:port; {EXPECTED}"
                ));
            }
            Some(split) => split,
        }
    };
    let port = parse_port(port)?;
    if let Ok(addr) = format!("{host}:{port}").parse::<SocketAddr>() {
        // An IPv4 literal: canonical form.
        return Ok(addr.to_string());
    }
    check_host_name(host)?;
    Ok(format!("{}:{port}", host.to_ascii_lowercase()))
}

fn parse_port(port: &str) -> Result<u16, String> {
    match port.parse::<u16>() {
        Ok(0) => Err(format!("port 0 cannot be connected to; {EXPECTED}")),
        Ok(port) => Ok(port),
        Err(_) => Err(format!(
            "port \"{port}\" is not a number from 1 to 65535; {EXPECTED}"
        )),
    }
}

/// Accepts DNS names: dot-separated labels of letters, digits, `-` and `_`
/// (a trailing dot is allowed), at most 253 characters.
fn check_host_name(host: &str) -> Result<(), String> {
    let bad = || format!("host \"{host}\" is not a valid name or IP address; {EXPECTED}");
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() || name.len() > 253 {
        return Err(bad());
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !name.split('.').all(label_ok) {
        return Err(bad());
    }
    // All-numeric dotted names are malformed IPv4 addresses, not names.
    if name.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: u64, address: &str) -> Peer {
        Peer {
            id: Some(NodeId(id)),
            address: address.to_owned(),
        }
    }

    fn error(list: &str) -> String {
        StaticDiscovery::parse(list).unwrap_err().to_string()
    }

    #[test]
    fn parses_comma_separated_entries() {
        let d = StaticDiscovery::parse("1@10.0.0.1:7000,2@10.0.0.2:7000").unwrap();
        assert_eq!(
            d.list(),
            [peer(1, "10.0.0.1:7000"), peer(2, "10.0.0.2:7000")]
        );
    }

    #[test]
    fn accepts_whitespace_newlines_and_trailing_separators() {
        let d: StaticDiscovery = "\n 1@a.example:1 ,\n\t2@b.example:2\n3@c.example:3,\n"
            .parse()
            .unwrap();
        assert_eq!(
            d.list(),
            [
                peer(1, "a.example:1"),
                peer(2, "b.example:2"),
                peer(3, "c.example:3")
            ]
        );
    }

    #[test]
    fn empty_list_has_no_peers() {
        assert!(StaticDiscovery::parse("").unwrap().list().is_empty());
        assert!(StaticDiscovery::parse(" ,\n ").unwrap().list().is_empty());
    }

    #[test]
    fn accepts_names_and_ip_literals() {
        let d = StaticDiscovery::parse(
            "1@Node-1.Raft.Example:7000 2@[fd00:0::1]:7001 3@127.0.0.1:7002 4@localhost:7003 \
             5@_raft.n5.example.:7004 6@[::ffff:10.0.0.1]:7005",
        )
        .unwrap();
        assert_eq!(
            d.list(),
            [
                peer(1, "node-1.raft.example:7000"),
                peer(2, "[fd00::1]:7001"),
                peer(3, "127.0.0.1:7002"),
                peer(4, "localhost:7003"),
                peer(5, "_raft.n5.example.:7004"),
                peer(6, "[::ffff:10.0.0.1]:7005"),
            ]
        );
    }

    #[test]
    fn display_round_trips() {
        let d = StaticDiscovery::parse("1@a.example:1\n2@[::1]:2 3@10.0.0.3:3").unwrap();
        assert_eq!(d.to_string(), "1@a.example:1,2@[::1]:2,3@10.0.0.3:3");
        assert_eq!(StaticDiscovery::parse(&d.to_string()).unwrap(), d);
    }

    #[test]
    fn bad_id_names_the_entry_and_the_form() {
        assert_eq!(
            error("x@h:1"),
            r#"invalid peer entry `x@h:1`: node id "x" is not a number; expected id@host:port"#
        );
        assert_eq!(
            error("1@a:1,-2@b:2"),
            r#"invalid peer entry `-2@b:2`: node id "-2" is not a number; expected id@host:port"#
        );
        assert_eq!(
            error("@h:1"),
            r#"invalid peer entry `@h:1`: node id "" is not a number; expected id@host:port"#
        );
    }

    #[test]
    fn missing_parts_are_named() {
        assert_eq!(
            error("10.0.0.1:7000"),
            "invalid peer entry `10.0.0.1:7000`: missing `@` between node id and address; \
             expected id@host:port"
        );
        assert_eq!(
            error("1@10.0.0.1"),
            "invalid peer entry `1@10.0.0.1`: missing `:port`; expected id@host:port"
        );
        assert_eq!(
            error("1@[::1]"),
            "invalid peer entry `1@[::1]`: missing `:port` after `[::1]`; expected id@host:port"
        );
        assert_eq!(
            error("1@[::1:7000"),
            "invalid peer entry `1@[::1:7000`: missing `]` after IPv6 address; \
             expected id@host:port"
        );
    }

    #[test]
    fn bad_ports_are_refused() {
        assert_eq!(
            error("1@h:70000"),
            r#"invalid peer entry `1@h:70000`: port "70000" is not a number from 1 to 65535; expected id@host:port"#
        );
        assert_eq!(
            error("1@h:"),
            r#"invalid peer entry `1@h:`: port "" is not a number from 1 to 65535; expected id@host:port"#
        );
        assert_eq!(
            error("1@h:0"),
            "invalid peer entry `1@h:0`: port 0 cannot be connected to; expected id@host:port"
        );
    }

    #[test]
    fn bad_hosts_are_refused() {
        assert_eq!(
            error("1@::1:7000"),
            r#"invalid peer entry `1@::1:7000`: IPv6 address "::1" must be in brackets, as in [::1]:port; expected id@host:port"#
        );
        assert_eq!(
            error("1@[zz::1]:7000"),
            r#"invalid peer entry `1@[zz::1]:7000`: "zz::1" is not an IPv6 address; expected id@host:port"#
        );
        for bad in [
            "1@:7000",
            "1@a..b:1",
            "1@-a:1",
            "1@a/b:1",
            "1@10.0.0.256:1",
            "1@1.2.3:1",
        ] {
            let message = error(bad);
            assert!(
                message.contains("is not a valid name or IP address; expected id@host:port"),
                "{bad}: {message}"
            );
        }
    }

    #[test]
    fn duplicate_ids_and_addresses_are_refused() {
        assert_eq!(
            error("1@a:1,2@b:2,1@c:3"),
            "invalid peer entry `1@c:3`: node id 1 is already used by `1@a:1`"
        );
        assert_eq!(
            error("1@a:1 2@A:1"),
            "invalid peer entry `2@A:1`: address a:1 is already used by `1@a:1`"
        );
    }

    #[test]
    fn peers_returns_the_list_and_watch_never_calls_back() {
        let d = StaticDiscovery::parse("1@a:1,2@b:2").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(d.peers()).unwrap(), d.list());
        d.watch(Box::new(|change| panic!("unexpected change {change:?}")));
    }
}
