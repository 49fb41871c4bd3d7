//! How batches of envelopes move between nodes.

use std::future::Future;

use crate::error::TransportError;
use crate::message::Envelope;
use crate::types::NodeId;

/// Where a transport delivers what arrives. Implemented by the driver;
/// `deliver` must not block (it queues the batch).
pub trait Inbox: Send + Sync + 'static {
    /// Hands over a batch received from `from`.
    fn deliver(&self, from: NodeId, batch: Vec<Envelope>);
}

/// Moves batches of envelopes between nodes. Raft tolerates loss, so a
/// transport may drop messages (for example when a peer's queue is full), but
/// it must not reorder the messages of one batch and must never block the
/// caller on the network.
pub trait Transport: Send + Sync + 'static {
    /// Starts listening; everything received goes to `inbox`.
    fn start(
        &self,
        inbox: std::sync::Arc<dyn Inbox>,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Queues a batch for `to` and returns without waiting for the network.
    fn send(&self, to: NodeId, batch: Vec<Envelope>) -> Result<(), TransportError>;

    /// Learns or updates the address of a peer.
    fn add_peer(&self, id: NodeId, address: String);

    /// Forgets a peer and closes any connection to it.
    fn remove_peer(&self, id: NodeId);

    /// Learns a peer known only by its address (DNS may give addresses
    /// without node ids). The transport connects, learns the peer's node id
    /// from its answer to the handshake, and from then on routes to it as
    /// if [`add_peer`](Self::add_peer) had been called with that id; it
    /// keeps retrying in the background until it succeeds or the address is
    /// removed. An address that turns out to be this node's own is ignored.
    /// The default refuses with [`TransportError::Unsupported`].
    fn add_address(&self, address: String) -> Result<(), TransportError> {
        let _ = address;
        Err(TransportError::Unsupported(
            "learning node ids from addresses",
        ))
    }

    /// Forgets a peer added by [`add_address`](Self::add_address): stops
    /// trying to reach it and, when its id was learned, forgets that peer.
    /// The default does nothing.
    fn remove_address(&self, address: &str) {
        let _ = address;
    }

    /// Stops listening and closes every connection; resolves once the
    /// listening address is free again. The node calls it when it shuts
    /// down. The default does nothing (for transports with nothing to
    /// release).
    fn shutdown(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// A shared transport is a transport: a node can own an `Arc` of it while
/// the caller keeps another (for example to hand it to discovery with
/// `Node::attach_discovery`, or to read its metrics).
impl<T: Transport> Transport for std::sync::Arc<T> {
    fn start(
        &self,
        inbox: std::sync::Arc<dyn Inbox>,
    ) -> impl Future<Output = Result<(), TransportError>> + Send {
        T::start(self, inbox)
    }

    fn send(&self, to: NodeId, batch: Vec<Envelope>) -> Result<(), TransportError> {
        T::send(self, to, batch)
    }

    fn add_peer(&self, id: NodeId, address: String) {
        T::add_peer(self, id, address)
    }

    fn remove_peer(&self, id: NodeId) {
        T::remove_peer(self, id)
    }

    fn add_address(&self, address: String) -> Result<(), TransportError> {
        T::add_address(self, address)
    }

    fn remove_address(&self, address: &str) {
        T::remove_address(self, address)
    }

    fn shutdown(&self) -> impl Future<Output = ()> + Send {
        T::shutdown(self)
    }
}
