//! Learning the node id of a peer known only by its address
//! ([`Transport::add_address`](raft_api::Transport::add_address)).
//!
//! One task per address dials it as any node of the cluster, reads the id
//! from the answering hello (with TLS, also from the server certificate,
//! which must agree), and hands it to the peer table: from then on the
//! peer is as if added with `add_peer(id, address)`, and its writer starts
//! on the probe's connection. Failures back off like reconnects, until it
//! succeeds or the address is removed (which aborts the task).

use std::convert::Infallible;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use tracing::{debug, info};
use transport_util::{AddressTicket, Backoff, Learned, PeerTable, add};

use crate::outbound::{Writer, WriterContext};

/// Probes the address of `ticket` until its node id is learned (or the
/// task is aborted).
pub(crate) async fn run(
    context: Arc<WriterContext>,
    peers: Arc<PeerTable<Writer>>,
    ticket: AddressTicket,
    runtime: tokio::runtime::Handle,
) {
    let node = context.config.node_id;
    let address = ticket.address().to_owned();
    let mut hasher = DefaultHasher::new();
    (node, &address).hash(&mut hasher);
    let mut backoff = Backoff::seeded(
        context.config.backoff_min,
        context.config.backoff_max,
        hasher.finish(),
    );
    loop {
        match context.dialer().dial(&address, None).await {
            Ok(dialed) => {
                let peer = dialed.peer;
                let connection = dialed.connection;
                // A peer with a working writer keeps its connection; the
                // probe's is then closed (dropped with the closure).
                let learned = peers.learn(&ticket, peer, |known| {
                    let _ = known.running_writer(|id, watched, ()| {
                        Ok::<_, Infallible>(Writer::spawn(
                            &context,
                            id,
                            watched,
                            &runtime,
                            Some(connection),
                        ))
                    });
                });
                match learned {
                    Learned::Own => {
                        info!(%node, %address, "the address is this node's own; ignored");
                    }
                    Learned::Added | Learned::Known => {
                        add(&context.metrics.addresses_learned, 1);
                        info!(%node, %address, %peer, "learned the node at the address");
                    }
                    Learned::Withdrawn => {
                        debug!(%node, %address, "address removed while it was probed");
                    }
                }
                return;
            }
            Err(error) => {
                add(&context.metrics.connect_failures, 1);
                let delay = backoff.next_delay();
                debug!(%node, %address, %error, ?delay, "cannot learn the node at the address");
                tokio::time::sleep(delay).await;
            }
        }
    }
}
