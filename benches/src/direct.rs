//! A transport that calls the other node's inbox directly (no queue, no
//! serialization), and a state machine that does nothing: the network and
//! the application of openraft's own cluster benchmark, for this library.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use raft_api::{
    Entry, Envelope, Inbox, LogId, NodeId, StateMachine, StorageError, Transport, TransportError,
};

/// The nodes of one process, by id: where [`DirectTransport::send`]
/// delivers.
#[derive(Clone, Default)]
pub struct DirectNetwork {
    inboxes: Arc<RwLock<HashMap<NodeId, Arc<dyn Inbox>>>>,
    delivered: Arc<AtomicU64>,
}

impl DirectNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// The transport of node `id`.
    pub fn transport(&self, id: NodeId) -> DirectTransport {
        DirectTransport {
            id,
            net: self.clone(),
        }
    }

    /// Batches delivered so far.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }
}

/// One node's end of a [`DirectNetwork`].
pub struct DirectTransport {
    id: NodeId,
    net: DirectNetwork,
}

impl Transport for DirectTransport {
    async fn start(&self, inbox: Arc<dyn Inbox>) -> Result<(), TransportError> {
        let mut map = self
            .net
            .inboxes
            .write()
            .map_err(|_| TransportError::Closed)?;
        map.insert(self.id, inbox);
        Ok(())
    }

    fn send(&self, to: NodeId, batch: Vec<Envelope>) -> Result<(), TransportError> {
        let inbox = {
            let map = self
                .net
                .inboxes
                .read()
                .map_err(|_| TransportError::Closed)?;
            map.get(&to)
                .cloned()
                .ok_or(TransportError::UnknownPeer(to))?
        };
        self.net.delivered.fetch_add(1, Ordering::Relaxed);
        inbox.deliver(self.id, batch);
        Ok(())
    }

    fn add_peer(&self, _id: NodeId, _address: String) {}

    fn remove_peer(&self, _id: NodeId) {}

    async fn shutdown(&self) {
        if let Ok(mut map) = self.net.inboxes.write() {
            map.remove(&self.id);
        }
    }
}

/// A state machine that keeps nothing but the last applied entry, and
/// answers every entry with an empty response.
#[derive(Debug, Default)]
pub struct NoopStateMachine {
    last: LogId,
}

impl StateMachine for NoopStateMachine {
    async fn apply(&mut self, entries: &[Entry]) -> Vec<Bytes> {
        if let Some(e) = entries.last() {
            self.last = e.id;
        }
        // Built, not cloned: a clone of `Bytes` is a call through its vtable.
        std::iter::repeat_with(Bytes::new)
            .take(entries.len())
            .collect()
    }

    fn last_applied(&self) -> LogId {
        self.last
    }

    async fn snapshot(&self) -> Result<Bytes, StorageError> {
        Ok(Bytes::new())
    }

    async fn restore(&mut self, last: LogId, _image: Bytes) -> Result<(), StorageError> {
        self.last = last;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use raft_api::{GroupId, Hlc, LogIndex, Message, Payload, Term};

    use super::*;

    #[derive(Default)]
    struct Collect(Mutex<Vec<(NodeId, Vec<Envelope>)>>);

    impl Inbox for Collect {
        fn deliver(&self, from: NodeId, batch: Vec<Envelope>) {
            self.0.lock().unwrap().push((from, batch));
        }
    }

    fn envelope(term: u64) -> Envelope {
        Envelope {
            group: GroupId(1),
            from: NodeId(1),
            to: NodeId(2),
            term: Term(term),
            msg: Message::TimeoutNow,
        }
    }

    fn now<F: Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("these futures are ready at once"),
        }
    }

    #[test]
    fn the_direct_transport_delivers_in_order_before_send_returns() {
        let net = DirectNetwork::new();
        let (a, b) = (net.transport(NodeId(1)), net.transport(NodeId(2)));
        let inbox = Arc::new(Collect::default());
        now(b.start(inbox.clone())).unwrap();
        a.send(NodeId(2), vec![envelope(1), envelope(2)]).unwrap();
        a.send(NodeId(2), vec![envelope(3)]).unwrap();
        let got = inbox.0.lock().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, NodeId(1));
        let terms: Vec<u64> = got
            .iter()
            .flat_map(|(_, b)| b.iter().map(|e| e.term.0))
            .collect();
        assert_eq!(terms, [1, 2, 3]);
        assert_eq!(net.delivered(), 2);
    }

    #[test]
    fn sending_to_a_node_not_started_or_shut_down_fails() {
        let net = DirectNetwork::new();
        let (a, b) = (net.transport(NodeId(1)), net.transport(NodeId(2)));
        assert!(matches!(
            a.send(NodeId(2), vec![envelope(1)]),
            Err(TransportError::UnknownPeer(NodeId(2)))
        ));
        now(b.start(Arc::new(Collect::default()))).unwrap();
        assert!(a.send(NodeId(2), vec![envelope(1)]).is_ok());
        now(b.shutdown());
        assert!(a.send(NodeId(2), vec![envelope(1)]).is_err());
    }

    #[test]
    fn the_noop_state_machine_answers_every_entry() {
        let mut sm = NoopStateMachine::default();
        let entries: Vec<Entry> = (1..=3)
            .map(|i| Entry {
                id: LogId::new(Term(1), LogIndex(i)),
                timestamp: Hlc::default(),
                payload: Payload::Command(Bytes::new()),
            })
            .collect();
        let out = now(sm.apply(&entries));
        assert_eq!(out.len(), 3);
        assert_eq!(sm.last_applied(), LogId::new(Term(1), LogIndex(3)));
        now(sm.restore(LogId::new(Term(2), LogIndex(9)), Bytes::new())).unwrap();
        assert_eq!(sm.last_applied().index, LogIndex(9));
    }
}
