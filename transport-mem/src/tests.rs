use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use raft_api::{Envelope, GroupId, Inbox, Message, NodeId, Term, Transport, TransportError};

use super::MemNetwork;

/// Collects what arrives, in order.
#[derive(Default)]
struct Collect(Mutex<Vec<(NodeId, Vec<Envelope>)>>);

impl Inbox for Collect {
    fn deliver(&self, from: NodeId, batch: Vec<Envelope>) {
        self.0.lock().unwrap().push((from, batch));
    }
}

impl Collect {
    /// Number of batches received.
    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// Terms of every envelope received, in order of arrival.
    fn terms(&self) -> Vec<u64> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(_, batch)| batch.iter().map(|e| e.term.0))
            .collect()
    }

    /// Senders of the batches received, in order of arrival.
    fn senders(&self) -> Vec<u64> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(from, _)| from.0)
            .collect()
    }
}

fn n(id: u64) -> NodeId {
    NodeId(id)
}

/// An envelope tagged by its term.
fn env(from: u64, to: u64, term: u64) -> Envelope {
    Envelope {
        group: GroupId(1),
        from: n(from),
        to: n(to),
        term: Term(term),
        msg: Message::TimeoutNow,
    }
}

/// A batch of one envelope tagged `term`.
fn one(from: u64, to: u64, term: u64) -> Vec<Envelope> {
    vec![env(from, to, term)]
}

/// Polls a future that is ready at once (`start` is).
fn now<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("future not ready"),
    }
}

/// A network with `count` started nodes numbered from 1.
fn cluster(count: u64) -> (MemNetwork, Vec<super::MemTransport>, Vec<Arc<Collect>>) {
    let network = MemNetwork::new();
    let mut transports = Vec::new();
    let mut inboxes = Vec::new();
    for id in 1..=count {
        let transport = network.transport(n(id));
        let inbox = Arc::new(Collect::default());
        now(transport.start(inbox.clone())).unwrap();
        transports.push(transport);
        inboxes.push(inbox);
    }
    (network, transports, inboxes)
}

/// Sends one batch from every node to every other node, tagged `term`.
fn all_to_all(transports: &[super::MemTransport], term: u64) {
    for from in transports {
        for to in transports {
            if from.id() != to.id() {
                from.send(to.id(), one(from.id().0, to.id().0, term))
                    .unwrap();
            }
        }
    }
}

#[test]
fn delivers_at_once_without_delay_or_runtime() {
    let (network, t, inbox) = cluster(2);
    let batch: Vec<Envelope> = (1..=5).map(|term| env(1, 2, term)).collect();
    t[0].send(n(2), batch).unwrap();
    t[0].send(n(2), one(1, 2, 6)).unwrap();
    assert_eq!(inbox[1].count(), 2);
    assert_eq!(inbox[1].terms(), [1, 2, 3, 4, 5, 6]);
    assert_eq!(inbox[1].senders(), [1, 1]);
    assert_eq!(inbox[0].count(), 0);
    assert_eq!(network.delivered(), 2);
    assert_eq!(network.dropped(), 0);
}

#[tokio::test(start_paused = true)]
async fn delayed_batches_keep_their_order() {
    let (network, t, inbox) = cluster(3);
    network.set_seed(7);
    network.set_delay(Duration::from_millis(10), Duration::from_millis(50));
    for term in 1..=100 {
        let batch = vec![env(1, 2, 2 * term), env(1, 2, 2 * term + 1)];
        t[0].send(n(2), batch).unwrap();
        t[2].send(n(2), one(3, 2, 1000 + term)).unwrap();
    }
    // Nothing arrives before the smallest delay.
    tokio::time::sleep(Duration::from_millis(9)).await;
    assert_eq!(inbox[1].count(), 0);

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(inbox[1].count(), 200);
    let received = inbox[1].0.lock().unwrap();
    let from1: Vec<u64> = received
        .iter()
        .filter(|(from, _)| *from == n(1))
        .flat_map(|(_, batch)| batch.iter().map(|e| e.term.0))
        .collect();
    let from3: Vec<u64> = received
        .iter()
        .filter(|(from, _)| *from == n(3))
        .flat_map(|(_, batch)| batch.iter().map(|e| e.term.0))
        .collect();
    assert_eq!(from1, (2..=201).collect::<Vec<_>>());
    assert_eq!(from3, (1001..=1100).collect::<Vec<_>>());
    drop(received);
    assert_eq!(network.delivered(), 200);
    assert_eq!(network.sent_between(n(1), n(2)), 100);
    assert_eq!(network.sent_between(n(3), n(2)), 100);
}

#[tokio::test(start_paused = true)]
async fn delay_then_no_delay_keeps_fifo() {
    let (network, t, inbox) = cluster(2);
    network.set_delay(Duration::from_millis(50), Duration::from_millis(50));
    t[0].send(n(2), one(1, 2, 1)).unwrap();
    network.set_delay(Duration::ZERO, Duration::ZERO);
    // Would be delivered at once, but must not overtake the delayed batch.
    t[0].send(n(2), one(1, 2, 2)).unwrap();
    assert_eq!(inbox[1].count(), 0);
    // Another link is not held up.
    t[1].send(n(1), one(2, 1, 3)).unwrap();
    assert_eq!(inbox[0].terms(), [3]);

    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(inbox[1].terms(), [1, 2]);
    // The queue is empty again: back to delivery at once.
    t[0].send(n(2), one(1, 2, 4)).unwrap();
    assert_eq!(inbox[1].terms(), [1, 2, 4]);
}

#[test]
fn delay_without_runtime_is_an_error() {
    let (network, t, _inbox) = cluster(2);
    network.set_delay(Duration::from_millis(1), Duration::from_millis(1));
    let err = t[0].send(n(2), one(1, 2, 1)).unwrap_err();
    assert!(matches!(err, TransportError::Other(_)), "{err:?}");
    assert_eq!(network.sent_between(n(1), n(2)), 0);
}

#[test]
fn partition_drops_between_sides_until_healed() {
    let (network, t, inbox) = cluster(5);
    // 5 is in no side and talks to everyone.
    network.partition(&[&[n(1), n(2)], &[n(3), n(4)]]);
    all_to_all(&t, 1);
    assert_eq!(inbox[0].senders(), [2, 5]);
    assert_eq!(inbox[1].senders(), [1, 5]);
    assert_eq!(inbox[2].senders(), [4, 5]);
    assert_eq!(inbox[3].senders(), [3, 5]);
    assert_eq!(inbox[4].senders(), [1, 2, 3, 4]);
    assert_eq!(network.dropped(), 8);
    assert_eq!(network.sent_between(n(1), n(3)), 0);
    assert_eq!(network.sent_between(n(1), n(2)), 1);

    // A new partition replaces the old one.
    network.partition(&[&[n(1)], &[n(2), n(3), n(4), n(5)]]);
    t[0].send(n(2), one(1, 2, 2)).unwrap();
    t[2].send(n(1), one(3, 1, 2)).unwrap();
    t[2].send(n(2), one(3, 2, 2)).unwrap();
    assert_eq!(inbox[1].terms(), [1, 1, 2]);
    assert_eq!(inbox[0].terms(), [1, 1]);

    network.heal();
    all_to_all(&t, 3);
    for inbox in &inbox {
        assert_eq!(inbox.terms().iter().filter(|&&term| term == 3).count(), 4);
    }
}

#[test]
fn one_way_cut() {
    let (network, t, inbox) = cluster(3);
    network.cut(n(1), n(2));
    t[0].send(n(2), one(1, 2, 1)).unwrap();
    t[1].send(n(1), one(2, 1, 1)).unwrap();
    t[0].send(n(3), one(1, 3, 1)).unwrap();
    assert_eq!(inbox[1].count(), 0);
    assert_eq!(inbox[0].senders(), [2]);
    assert_eq!(inbox[2].senders(), [1]);
    assert_eq!(network.dropped(), 1);

    network.heal();
    t[0].send(n(2), one(1, 2, 2)).unwrap();
    assert_eq!(inbox[1].terms(), [2]);
}

#[test]
fn isolate_cuts_both_ways() {
    let (network, t, inbox) = cluster(3);
    network.isolate(n(2));
    all_to_all(&t, 1);
    assert_eq!(inbox[0].senders(), [3]);
    assert_eq!(inbox[1].senders(), Vec::<u64>::new());
    assert_eq!(inbox[2].senders(), [1]);
    assert_eq!(network.dropped(), 4);

    network.heal();
    all_to_all(&t, 2);
    assert_eq!(inbox[1].senders(), [1, 3]);
}

#[test]
fn pause_and_resume() {
    let (network, t, inbox) = cluster(3);
    network.pause(n(3));
    all_to_all(&t, 1);
    assert_eq!(inbox[0].senders(), [2]);
    assert_eq!(inbox[1].senders(), [1]);
    assert_eq!(inbox[2].count(), 0);
    assert_eq!(network.dropped(), 4);
    // Heal does not resume.
    network.heal();
    t[0].send(n(3), one(1, 3, 2)).unwrap();
    assert_eq!(inbox[2].count(), 0);

    network.resume(n(3));
    all_to_all(&t, 3);
    assert_eq!(inbox[2].terms(), [3, 3]);
    assert_eq!(inbox[0].senders(), [2, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn faults_drop_batches_in_flight() {
    let (network, t, inbox) = cluster(3);
    network.set_delay(Duration::from_millis(20), Duration::from_millis(20));
    t[0].send(n(2), one(1, 2, 1)).unwrap();
    t[0].send(n(3), one(1, 3, 1)).unwrap();
    assert_eq!(network.sent_between(n(1), n(2)), 1);
    network.pause(n(2));
    network.cut(n(1), n(3));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(inbox[1].count(), 0);
    assert_eq!(inbox[2].count(), 0);
    assert_eq!(network.dropped(), 2);
    assert_eq!(network.delivered(), 0);

    network.resume(n(2));
    network.heal();
    t[0].send(n(2), one(1, 2, 2)).unwrap();
    t[0].send(n(3), one(1, 3, 2)).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(inbox[1].terms(), [2]);
    assert_eq!(inbox[2].terms(), [2]);
    assert_eq!(network.delivered(), 2);
}

#[test]
fn drop_rate() {
    let (network, t, inbox) = cluster(2);
    network.set_drop_rate(1000);
    for term in 0..100 {
        t[0].send(n(2), one(1, 2, term)).unwrap();
    }
    assert_eq!(inbox[1].count(), 0);
    assert_eq!(network.dropped(), 100);
    assert_eq!(network.sent_between(n(1), n(2)), 0);

    network.set_drop_rate(0);
    for term in 0..100 {
        t[0].send(n(2), one(1, 2, term)).unwrap();
    }
    assert_eq!(inbox[1].count(), 100);
    assert_eq!(network.dropped(), 100);
    assert_eq!(network.delivered(), 100);
}

#[test]
fn drop_rate_is_reproducible_with_a_seed() {
    let pattern = |seed| {
        let (network, t, inbox) = cluster(2);
        network.set_seed(seed);
        network.set_drop_rate(300);
        for term in 0..1000 {
            t[0].send(n(2), one(1, 2, term)).unwrap();
        }
        assert_eq!(network.delivered() + network.dropped(), 1000);
        inbox[1].terms()
    };
    let a = pattern(42);
    assert_eq!(a, pattern(42));
    assert_ne!(a, pattern(43));
    // Roughly 70% arrive; the bounds are far from anything a fair generator
    // produces.
    assert!((600..=800).contains(&a.len()), "{} arrived", a.len());
}

#[test]
fn restart_replaces_the_inbox() {
    let network = MemNetwork::new();
    let sender = network.transport(n(1));
    let first = network.transport(n(2));
    let old = Arc::new(Collect::default());
    now(first.start(old.clone())).unwrap();
    sender.send(n(2), one(1, 2, 1)).unwrap();

    // The node restarts with a new transport and a new inbox.
    let second = network.transport(n(2));
    let new = Arc::new(Collect::default());
    now(second.start(new.clone())).unwrap();
    sender.send(n(2), one(1, 2, 2)).unwrap();
    // Dropping the old transport does not unregister the new inbox.
    drop(first);
    sender.send(n(2), one(1, 2, 3)).unwrap();
    assert_eq!(old.terms(), [1]);
    assert_eq!(new.terms(), [2, 3]);

    // Starting the same transport again also replaces the inbox.
    let newer = Arc::new(Collect::default());
    now(second.start(newer.clone())).unwrap();
    sender.send(n(2), one(1, 2, 4)).unwrap();
    assert_eq!(new.terms(), [2, 3]);
    assert_eq!(newer.terms(), [4]);

    // A stopped node receives nothing; sending to it is not an error.
    assert!(network.is_started(n(2)));
    drop(second);
    assert!(!network.is_started(n(2)));
    sender.send(n(2), one(1, 2, 5)).unwrap();
    assert_eq!(newer.terms(), [4]);
    assert_eq!(network.dropped(), 1);
}

#[test]
fn remove_peer_drops_until_added_again() {
    let (network, t, inbox) = cluster(2);
    t[0].add_peer(n(2), "mem://2".into());
    t[0].remove_peer(n(2));
    t[0].send(n(2), one(1, 2, 1)).unwrap();
    assert_eq!(inbox[1].count(), 0);
    assert_eq!(network.dropped(), 1);
    assert_eq!(network.sent_between(n(1), n(2)), 0);
    // Only the node that removed the peer stops talking to it.
    t[1].send(n(1), one(2, 1, 1)).unwrap();
    assert_eq!(inbox[0].terms(), [1]);

    t[0].add_peer(n(2), "mem://2".into());
    t[0].send(n(2), one(1, 2, 2)).unwrap();
    assert_eq!(inbox[1].terms(), [2]);
}

#[test]
fn unknown_and_unstarted_nodes() {
    let network = MemNetwork::new();
    let t1 = network.transport(n(1));
    // No transport was ever made for node 9.
    let err = t1.send(n(9), one(1, 9, 1)).unwrap_err();
    assert!(matches!(err, TransportError::UnknownPeer(id) if id == n(9)));
    assert_eq!(network.dropped(), 0);

    // Node 2 exists but is not started: the batch is lost, like one sent to
    // a node that is down.
    let t2 = network.transport(n(2));
    t1.send(n(2), one(1, 2, 1)).unwrap();
    assert_eq!(network.dropped(), 1);
    assert_eq!(network.delivered(), 0);
    let inbox = Arc::new(Collect::default());
    now(t2.start(inbox.clone())).unwrap();
    t1.send(n(2), one(1, 2, 2)).unwrap();
    assert_eq!(inbox.terms(), [2]);
}

#[test]
fn counters() {
    let (network, t, _inbox) = cluster(3);
    all_to_all(&t, 1);
    assert_eq!(network.delivered(), 6);
    assert_eq!(network.dropped(), 0);
    for from in 1..=3 {
        for to in 1..=3 {
            let expected = u64::from(from != to);
            assert_eq!(network.sent_between(n(from), n(to)), expected);
        }
    }
    t[0].send(n(2), one(1, 2, 2)).unwrap();
    assert_eq!(network.sent_between(n(1), n(2)), 2);
    assert_eq!(network.sent_between(n(2), n(1)), 1);

    network.reset_counters();
    assert_eq!(network.delivered(), 0);
    assert_eq!(network.sent_between(n(1), n(2)), 0);
    // An idle group sends nothing.
    assert!((1..=3).all(|a| (1..=3).all(|b| network.sent_between(n(a), n(b)) == 0)));

    network.isolate(n(1));
    all_to_all(&t, 3);
    assert_eq!(network.delivered(), 2);
    assert_eq!(network.dropped(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_senders_with_delays() {
    let (network, t, inbox) = cluster(4);
    network.set_delay(Duration::ZERO, Duration::from_millis(2));
    let t: Vec<_> = t.into_iter().map(Arc::new).collect();
    let mut tasks = Vec::new();
    for sender in &t[1..] {
        let sender = Arc::clone(sender);
        tasks.push(tokio::spawn(async move {
            for term in 1..=200 {
                let from = sender.id().0;
                sender.send(n(1), one(from, 1, term)).unwrap();
                if term % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // Generous: the longest delay is 2 ms per batch.
    for _ in 0..500 {
        if network.delivered() == 600 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(network.delivered(), 600);
    let received = inbox[0].0.lock().unwrap();
    for from in 2..=4 {
        let terms: Vec<u64> = received
            .iter()
            .filter(|(sender, _)| *sender == n(from))
            .map(|(_, batch)| batch[0].term.0)
            .collect();
        assert_eq!(terms, (1..=200).collect::<Vec<_>>(), "from n{from}");
    }
}

#[test]
fn dropping_the_network_with_batches_in_flight() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let inbox = Arc::new(Collect::default());
    runtime.block_on(async {
        let network = MemNetwork::new();
        let t1 = network.transport(n(1));
        let t2 = network.transport(n(2));
        t2.start(inbox.clone()).await.unwrap();
        network.set_delay(Duration::from_millis(10), Duration::from_millis(10));
        t1.send(n(2), one(1, 2, 1)).unwrap();
        drop((network, t1, t2));
        tokio::time::sleep(Duration::from_millis(50)).await;
    });
    // The link task found the network gone and delivered nothing.
    assert_eq!(inbox.count(), 0);
}

#[test]
fn links_survive_a_new_runtime() {
    let (network, t, inbox) = cluster(2);
    network.set_delay(Duration::from_millis(1), Duration::from_millis(1));
    for term in 1..=2 {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            t[0].send(n(2), one(1, 2, term)).unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        });
    }
    assert_eq!(inbox[1].terms(), [1, 2]);
}
