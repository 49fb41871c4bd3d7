//! Peer discovery for Raft nodes: implementations of
//! [`raft_api::Discovery`].
//!
//! - [`StaticDiscovery`]: a fixed list such as
//!   `"1@10.0.0.1:7000,2@10.0.0.2:7000"`, for example from a command-line
//!   flag or an environment variable. It never changes.
//! - `DnsDiscovery` (feature `dns`): peers from A/AAAA records (addresses
//!   on a default port, ids learned later in the transport handshake) or SRV
//!   records (targets and ports; a target `n<id>.…` names its node id),
//!   refreshed by a Tokio task that reports `PeerChange::Up` and
//!   `PeerChange::Down`. A failed look-up keeps the peers known so far: a
//!   DNS outage does not remove anyone.
//!
//! Discovery only says where nodes may be reached. Who votes is decided by
//! the Raft membership, never by a peer appearing or vanishing here.
//!
//! ```
//! use discovery::StaticDiscovery;
//! use raft_api::{Discovery, NodeId, Peer};
//!
//! let peers: StaticDiscovery = "1@10.0.0.1:7000, 2@[fd00::2]:7000\n3@node-3.example:7000"
//!     .parse()
//!     .expect("a valid list");
//! assert_eq!(
//!     peers.list()[1],
//!     Peer { id: Some(NodeId(2)), address: "[fd00::2]:7000".to_owned() },
//! );
//!
//! // `Discovery::peers` returns the same list; `watch` never calls back.
//! let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
//! let all = runtime.block_on(peers.peers()).unwrap();
//! assert_eq!(all.len(), 3);
//!
//! // Errors name the entry and the expected form.
//! let err = "1@10.0.0.1:7000,1@10.0.0.2:7000".parse::<StaticDiscovery>().unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "invalid peer entry `1@10.0.0.2:7000`: node id 1 is already used by `1@10.0.0.1:7000`",
//! );
//! ```

#[cfg(feature = "dns")]
mod dns;
mod static_list;

#[cfg(feature = "dns")]
pub use dns::{DnsConfig, DnsDiscovery, DnsKind};
pub use static_list::StaticDiscovery;
