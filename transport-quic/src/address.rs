//! Peers known only by an address ([`Transport::add_address`]): a task per
//! address dials it until a node of the cluster answers, takes the node id
//! from its certificate, and hands the connection to that peer's link.
//!
//! [`Transport::add_address`]: raft_api::Transport::add_address

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use raft_api::{NodeId, TransportError};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use transport_util::Backoff;

use crate::close_code;
use crate::context::Context;
use crate::dial::connect_any;
use crate::hello::{Unanswered, exchange};
use crate::link::LinkEvent;
use crate::lock;
use crate::metrics::add;

/// What is known of an address given to
/// [`add_address`](raft_api::Transport::add_address), from
/// [`QuicTransport::address_status`](crate::QuicTransport::address_status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddressStatus {
    /// No node has answered there yet; the transport keeps trying (with
    /// backoff), or will once started.
    Connecting,
    /// The node with this id answered there: it is a peer at that address
    /// from then on, as if given to
    /// [`add_peer`](raft_api::Transport::add_peer).
    Peer(NodeId),
    /// The address is this node's own: ignored.
    Own,
}

/// The shared state of one address.
struct Learning {
    status: AddressStatus,
    /// Set by `remove_address`; the task then hands nothing over.
    removed: bool,
}

struct AddressEntry {
    state: Arc<Mutex<Learning>>,
    /// Started once the transport runs.
    task: Option<JoinHandle<()>>,
}

impl Drop for AddressEntry {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Every address given to `add_address` and not removed.
#[derive(Default)]
pub(crate) struct Addresses {
    map: Mutex<HashMap<String, AddressEntry>>,
}

/// Checks that `address` looks like `host:port`.
pub(crate) fn check_address(address: &str) -> Result<(), TransportError> {
    let valid = address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if valid {
        Ok(())
    } else {
        Err(TransportError::Other(format!(
            "address `{address}` is not host:port"
        )))
    }
}

impl Addresses {
    /// Records `address` (nothing if it is already there); starts its task
    /// if `context` is given (the transport runs).
    pub(crate) fn add(&self, address: String, context: Option<&Arc<Context>>) {
        let mut map = lock(&self.map);
        if map.contains_key(&address) {
            return;
        }
        let state = Arc::new(Mutex::new(Learning {
            status: AddressStatus::Connecting,
            removed: false,
        }));
        let task = context.map(|c| spawn(c, &address, &state));
        map.insert(address, AddressEntry { state, task });
    }

    /// Starts the task of every address recorded before the start.
    pub(crate) fn start_all(&self, context: &Arc<Context>) {
        for (address, entry) in lock(&self.map).iter_mut() {
            if entry.task.is_none() {
                entry.task = Some(spawn(context, address, &entry.state));
            }
        }
    }

    /// Forgets `address` and stops its task; returns the node id learned
    /// there, if any.
    pub(crate) fn remove(&self, address: &str) -> Option<NodeId> {
        let entry = lock(&self.map).remove(address)?;
        let mut state = lock(&entry.state);
        state.removed = true;
        match state.status {
            AddressStatus::Peer(id) => Some(id),
            _ => None,
        }
    }

    /// What is known of `address`, if it was added (and not removed).
    pub(crate) fn status(&self, address: &str) -> Option<AddressStatus> {
        lock(&self.map)
            .get(address)
            .map(|entry| lock(&entry.state).status)
    }

    /// Forgets every address, stopping their tasks.
    pub(crate) fn clear(&self) {
        let all = std::mem::take(&mut *lock(&self.map));
        drop(all);
    }
}

fn spawn(context: &Arc<Context>, address: &str, state: &Arc<Mutex<Learning>>) -> JoinHandle<()> {
    context.runtime.spawn(learn(
        Arc::clone(context),
        address.to_owned(),
        Arc::clone(state),
    ))
}

/// Dials `address` with backoff until a node of the cluster answers: its
/// certificate (of the CA) names the node, and it answers this node's
/// hello with one of this cluster naming the same node. Then records the
/// id, makes it a peer at `address` and hands the connection to its link.
/// Its own address is recorded as such and left alone.
async fn learn(context: Arc<Context>, address: String, state: Arc<Mutex<Learning>>) {
    let node = context.node();
    let mut hasher = DefaultHasher::new();
    address.hash(&mut hasher);
    let mut backoff = Backoff::new(
        context.config.backoff_min,
        context.config.backoff_max,
        node,
        NodeId(hasher.finish()),
    );
    let mut failures = 0u64;
    loop {
        let error = match attempt(&context, &address, &state).await {
            Ok(()) => return,
            Err(error) => error,
        };
        add(&context.metrics.connect_failures, 1);
        let delay = backoff.next_delay();
        if failures == 0 {
            warn!(%node, %address, %error, ?delay, "cannot learn the node at an address; retrying");
        } else {
            debug!(%node, %address, %error, ?delay, "cannot learn the node at an address; retrying");
        }
        failures += 1;
        tokio::time::sleep(delay).await;
    }
}

/// One attempt of [`learn`]: `Ok` once the address is settled (learned,
/// this node's own, or removed meanwhile).
async fn attempt(
    context: &Arc<Context>,
    address: &str,
    state: &Mutex<Learning>,
) -> Result<(), String> {
    let node = context.node();
    let (connection, id) = connect_any(context, address).await?;
    add(&context.metrics.connections_opened, 1);
    if id == node {
        lock(state).status = AddressStatus::Own;
        connection.close(close_code::OWN_ADDRESS.into(), b"own address");
        info!(%node, %address, "address is this node's own; ignored");
        return Ok(());
    }
    let answered = match exchange(Arc::clone(context), connection.clone(), id).await {
        Ok(answered) => Some(answered),
        // The node took this node's hello but already has a connection
        // with it: it is of this cluster, and that connection serves.
        Err(Unanswered {
            withdrawn: true, ..
        }) => None,
        Err(Unanswered { code, reason, .. }) => {
            connection.close(code.into(), reason.as_bytes());
            return Err(reason);
        }
    };
    let mut state = lock(state);
    if state.removed {
        connection.close(close_code::NORMAL.into(), b"address removed");
        return Ok(());
    }
    state.status = AddressStatus::Peer(id);
    add(&context.metrics.addresses_learned, 1);
    info!(%node, %address, peer = %id, "learned the node at an address");
    context.peers.add_peer(id, address.to_owned());
    if let Some(answered) = answered {
        context.peers.offer(
            context,
            id,
            &connection,
            LinkEvent::Answered(connection.clone(), answered),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_must_be_host_and_port() {
        for good in [
            "127.0.0.1:7000",
            "[::1]:7000",
            "node-1.example:1",
            "h:65535",
        ] {
            assert!(check_address(good).is_ok(), "{good}");
        }
        for bad in ["", "127.0.0.1", ":7000", "host:", "host:65536", "host:port"] {
            assert!(
                matches!(check_address(bad), Err(TransportError::Other(_))),
                "{bad}"
            );
        }
    }
}
