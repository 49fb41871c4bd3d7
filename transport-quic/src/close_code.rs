//! The QUIC application error codes a node closes connections with. A peer
//! sees them in [`quinn::ConnectionError::ApplicationClosed`]; they are part
//! of the protocol, so their values never change.

/// Closed normally: shutting down, peer removed, address changed, a write
/// that failed, or no answer to the hello in time.
pub const NORMAL: u32 = 0;

/// Refused at the handshake: a certificate naming no node, a missing or
/// bad hello, a hello of another cluster, or naming another node than the
/// certificate.
pub const REJECTED: u32 = 1;

/// Closed for a bad frame: garbage, oversized, corrupt, another cluster,
/// or envelopes not from the node the certificate names.
pub const BAD_FRAME: u32 = 2;

/// Not needed: the pair of nodes already has a connection. When both nodes
/// dial each other at once, one connection is kept (the one dialled by the
/// node with the lower id, unless the other node's arrived before that dial
/// finished its handshake) and the other is closed with this code,
/// normally before it carried any batch (a dialled connection carries none
/// until its hello is answered). A node closing a connection it dialled before
/// sending its hello uses it too, and the other side does not count that
/// as a rejected handshake.
pub const DUPLICATE: u32 = 3;

/// Replaced: the peer opened a newer connection (it dials only when it
/// holds none, so the old one is stale, typically after a restart), or the
/// old connection stopped answering while a newer one was waiting.
pub const REPLACED: u32 = 4;

/// The address dialled turned out to be this node's own; closed before
/// the hello.
pub const OWN_ADDRESS: u32 = 5;
