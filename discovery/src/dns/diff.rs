//! Turning two successive peer sets into change events.

use std::collections::BTreeMap;

use raft_api::{NodeId, Peer, PeerChange};

/// What identifies a peer across look-ups: its id when known, else its
/// address. A peer with an id that moves is the same peer at a new address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key<'a> {
    Id(NodeId),
    Address(&'a str),
}

fn key(peer: &Peer) -> Key<'_> {
    match peer.id {
        Some(id) => Key::Id(id),
        None => Key::Address(&peer.address),
    }
}

fn by_key(peers: &[Peer]) -> BTreeMap<Key<'_>, &Peer> {
    peers.iter().map(|peer| (key(peer), peer)).collect()
}

/// The changes from `old` to `new`: `Down` for every peer of `old` whose key
/// is gone, then `Up` for every peer of `new` that is new or changed
/// address. Downs come first so that a consumer keyed by address does not
/// remove a peer it was just told about. Each group is in key order.
pub(crate) fn changes(old: &[Peer], new: &[Peer]) -> Vec<PeerChange> {
    let old = by_key(old);
    let new = by_key(new);
    let downs = old
        .iter()
        .filter(|(key, _)| !new.contains_key(key))
        .map(|(_, peer)| PeerChange::Down((*peer).clone()));
    let ups = new
        .iter()
        .filter(|(key, peer)| old.get(key) != Some(peer))
        .map(|(_, peer)| PeerChange::Up((*peer).clone()));
    downs.chain(ups).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: Option<u64>, address: &str) -> Peer {
        Peer {
            id: id.map(NodeId),
            address: address.to_owned(),
        }
    }

    #[test]
    fn same_set_gives_nothing() {
        let set = [peer(None, "a:1"), peer(Some(2), "b:2")];
        assert!(changes(&set, &set).is_empty());
    }

    #[test]
    fn added_and_removed_addresses() {
        let old = [peer(None, "a:1"), peer(None, "b:1")];
        let new = [peer(None, "b:1"), peer(None, "c:1")];
        assert_eq!(
            changes(&old, &new),
            [
                PeerChange::Down(peer(None, "a:1")),
                PeerChange::Up(peer(None, "c:1"))
            ]
        );
    }

    #[test]
    fn a_known_id_at_a_new_address_is_one_up() {
        let old = [peer(Some(1), "a:1")];
        let new = [peer(Some(1), "b:1")];
        assert_eq!(changes(&old, &new), [PeerChange::Up(peer(Some(1), "b:1"))]);
    }

    #[test]
    fn an_address_gaining_an_id_is_down_then_up() {
        let old = [peer(None, "a:1")];
        let new = [peer(Some(1), "a:1")];
        assert_eq!(
            changes(&old, &new),
            [
                PeerChange::Down(peer(None, "a:1")),
                PeerChange::Up(peer(Some(1), "a:1"))
            ]
        );
    }

    #[test]
    fn from_nothing_everything_is_up() {
        let new = [peer(Some(2), "b:1"), peer(None, "a:1")];
        assert_eq!(
            changes(&[], &new),
            [
                PeerChange::Up(peer(Some(2), "b:1")),
                PeerChange::Up(peer(None, "a:1"))
            ]
        );
    }
}
