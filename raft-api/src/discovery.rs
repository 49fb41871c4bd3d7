//! How nodes find each other.

use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::error::DiscoveryError;
use crate::types::NodeId;

/// A node and where to reach it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Peer {
    /// The node's id, when known (DNS may give only an address; the id is
    /// then learned in the transport handshake).
    pub id: Option<NodeId>,
    /// Address in the transport's syntax, for example `10.0.0.7:7000`.
    pub address: String,
}

/// A change in the set of known peers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerChange {
    /// A peer appeared or changed address.
    Up(Peer),
    /// A peer is gone.
    Down(Peer),
}

/// A source of peers: a static list, DNS, ...
pub trait Discovery: Send + Sync + 'static {
    /// The peers known now.
    fn peers(&self) -> impl Future<Output = Result<Vec<Peer>, DiscoveryError>> + Send;

    /// Calls `on_change` for every later change until the discovery is
    /// dropped.
    fn watch(&self, on_change: Box<dyn Fn(PeerChange) + Send + Sync>);
}
