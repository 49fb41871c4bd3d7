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

    /// Stops listening and closes every connection; resolves once the
    /// listening address is free again. The node calls it when it shuts
    /// down. The default does nothing (for transports with nothing to
    /// release).
    fn shutdown(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}
