//! The [`Transport`] conformance suite.
//!
//! Every transport backend runs these cases from its own tests, through a
//! [`TransportHarness`] that makes its transports. Each case starts a few
//! nodes (ids 1, 2 and 3), tells every node the address of every other,
//! exchanges batches and checks what each [`Inbox`] got, then stops the
//! nodes. Run each case with a fresh harness:
//!
//! ```text
//! use raft_api::testkit::transport as suite;
//!
//! #[tokio::test]
//! async fn delivery_and_order() {
//!     suite::delivery_and_order(&mut MyHarness::new()).await;
//! }
//! // ... one test per case, or all at once:
//! #[tokio::test]
//! async fn conformance() {
//!     suite::run_all(MyHarness::new).await;
//! }
//! ```
//!
//! # What the suite expects of a backend
//!
//! - Batches from one node to another arrive in the order sent, each
//!   envelope once, attributed to the sender (the `from` passed to
//!   [`Inbox::deliver`] and every envelope's `from`). A backend may split or
//!   merge batches; the suite compares the stream of envelopes.
//! - No loss while both nodes run and nothing fails. The suite never has
//!   more than [`WINDOW`] envelopes outstanding on one link, so a backend
//!   with bounded queues must hold at least that many batches per peer.
//! - Batches of [`LARGE_PAYLOAD`] bytes of payload and more (about 1 MiB in
//!   all) get through: configure the frame limit above that.
//! - A node that restarts (stopped with [`TransportHarness::stop`], then a
//!   new transport made for the same id) is reached again, without help
//!   beyond a new [`Transport::add_peer`] with its address, and reaches the
//!   others again. Batches sent while it is down may be lost.
//! - `send` to a node whose address is unknown is
//!   [`TransportError::UnknownPeer`]; `send` never blocks, even towards a
//!   peer that is down.
//!
//! Backends that learn node ids from addresses
//! ([`Transport::add_address`]) also run [`add_address_suite`], through an
//! [`AddressHarness`] that can make a node of another cluster.
//!
//! The cases poll with generous deadlines ([`DEADLINE`]) instead of
//! sleeping for fixed times, so a slow machine makes them slower, not
//! flaky. They run on any tokio runtime, current-thread included; for real
//! sockets, use real time (not a paused clock).

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::error::TransportError;
use crate::hlc::Hlc;
use crate::message::{
    AppendRequest, Envelope, ForwardRequest, HeartbeatRequest, Message, SnapshotChunk,
};
use crate::transport::{Inbox, Transport};
use crate::types::{Entry, GroupId, LogId, LogIndex, NodeId, Payload, Term};

/// How long a case waits for something that must happen before failing.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Most envelopes a case leaves outstanding (sent, not yet delivered) on one
/// link before it waits for deliveries.
pub const WINDOW: usize = 128;

/// Payload bytes of each large message in [`large_messages`].
pub const LARGE_PAYLOAD: usize = 512 * 1024;

/// How often [`eventually`] checks its condition.
const POLL: Duration = Duration::from_millis(5);

/// Makes the transports of one backend for the suite.
///
/// A harness may keep whatever it needs between calls (a network hub, the
/// ports it bound). Implementations may write `async fn` for the methods.
pub trait TransportHarness {
    /// The backend's transport.
    type Transport: Transport;

    /// Makes the transport of node `id`, not started yet. Called again for
    /// an id after [`stop`](Self::stop): the node restarts, and should come
    /// back at the same address if the backend has addresses (the suite
    /// still passes the new address to [`Transport::add_peer`]).
    fn make(&mut self, id: NodeId) -> impl Future<Output = Self::Transport>;

    /// The address other nodes pass to [`Transport::add_peer`] to reach
    /// `id`, whose `transport` has been started.
    fn address(&mut self, id: NodeId, transport: &Self::Transport) -> String;

    /// Stops node `id`. Once the future completes the transport delivers
    /// nothing more and a new transport for `id` can take its address. The
    /// default drops the transport.
    fn stop(&mut self, id: NodeId, transport: Self::Transport) -> impl Future<Output = ()> {
        let _ = id;
        async move { drop(transport) }
    }
}

/// An [`Inbox`] that records every delivery, for checks.
#[derive(Debug, Default)]
pub struct Recorder {
    batches: Mutex<Vec<(NodeId, Vec<Envelope>)>>,
}

impl Recorder {
    /// An empty recorder, shared.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<(NodeId, Vec<Envelope>)>> {
        self.batches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every delivery so far: the `from` given to [`Inbox::deliver`] and the
    /// batch.
    pub fn batches(&self) -> Vec<(NodeId, Vec<Envelope>)> {
        self.lock().clone()
    }

    /// Number of deliveries so far.
    pub fn batch_count(&self) -> usize {
        self.lock().len()
    }

    /// The envelopes delivered as coming from `from`, in delivery order.
    pub fn envelopes_from(&self, from: NodeId) -> Vec<Envelope> {
        self.lock()
            .iter()
            .filter(|(f, _)| *f == from)
            .flat_map(|(_, batch)| batch.iter().cloned())
            .collect()
    }

    /// The last envelope delivered as coming from `from`.
    pub fn last_from(&self, from: NodeId) -> Option<Envelope> {
        self.lock()
            .iter()
            .rev()
            .filter(|(f, _)| *f == from)
            .find_map(|(_, batch)| batch.last().cloned())
    }

    /// Number of envelopes delivered as coming from `from`.
    pub fn count_from(&self, from: NodeId) -> usize {
        self.lock()
            .iter()
            .filter(|(f, _)| *f == from)
            .map(|(_, batch)| batch.len())
            .sum()
    }
}

impl Inbox for Recorder {
    fn deliver(&self, from: NodeId, batch: Vec<Envelope>) {
        self.lock().push((from, batch));
    }
}

/// Waits until `done` holds, checking every few milliseconds; panics naming
/// `what` if it still does not hold after `within`.
pub async fn eventually(what: impl Display, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    loop {
        if done() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Envelope number `seq` from `from` to `to`. The number is the term (see
/// [`seq_of`]); the message kind and group vary with it, so batches mix
/// kinds and groups.
pub fn numbered(from: NodeId, to: NodeId, seq: u64) -> Envelope {
    let msg = match seq % 4 {
        0 => Message::Heartbeat(HeartbeatRequest {
            commit: LogIndex(seq),
            round: seq,
        }),
        1 => Message::Append(AppendRequest {
            prev: LogId::new(Term(seq), LogIndex(seq)),
            entries: vec![Entry {
                id: LogId::new(Term(seq), LogIndex(seq + 1)),
                timestamp: Hlc::new(seq, 0),
                payload: Payload::Command(Bytes::from(seq.to_be_bytes().to_vec())),
            }],
            commit: LogIndex(seq),
            stream: 1,
        }),
        2 => Message::Forward(ForwardRequest {
            id: seq,
            command: Bytes::from(format!("command {seq}")),
        }),
        _ => Message::TimeoutNow,
    };
    Envelope {
        group: GroupId(seq % 7),
        from,
        to,
        term: Term(seq),
        msg,
    }
}

/// The number of an envelope made by [`numbered`].
pub fn seq_of(envelope: &Envelope) -> u64 {
    envelope.term.0
}

/// Envelopes `range` from `from` to `to` split into batches of `sizes`
/// (cycled), for sending.
fn batches(
    from: NodeId,
    to: NodeId,
    range: std::ops::Range<u64>,
    sizes: &[usize],
) -> Vec<Vec<Envelope>> {
    let mut out = Vec::new();
    let mut seqs = range.peekable();
    let mut sizes = sizes.iter().copied().cycle();
    while seqs.peek().is_some() {
        let size = sizes.next().unwrap_or(1).max(1);
        out.push(
            seqs.by_ref()
                .take(size)
                .map(|s| numbered(from, to, s))
                .collect(),
        );
    }
    out
}

/// A running node of a case.
struct Node<T> {
    transport: T,
    inbox: Arc<Recorder>,
    address: String,
}

/// The nodes of a case, with a full mesh of peer addresses.
struct Cluster<'h, H: TransportHarness> {
    harness: &'h mut H,
    nodes: BTreeMap<NodeId, Node<H::Transport>>,
}

impl<'h, H: TransportHarness> Cluster<'h, H> {
    fn new(harness: &'h mut H) -> Self {
        Self {
            harness,
            nodes: BTreeMap::new(),
        }
    }

    /// Makes and starts node `id` with a fresh inbox, and exchanges
    /// addresses with every running node.
    async fn start(&mut self, id: NodeId) {
        assert!(!self.nodes.contains_key(&id), "{id} is already running");
        let transport = self.harness.make(id).await;
        let inbox = Recorder::new();
        transport
            .start(inbox.clone())
            .await
            .unwrap_or_else(|e| panic!("starting {id}: {e}"));
        let address = self.harness.address(id, &transport);
        for (&other, node) in &self.nodes {
            node.transport.add_peer(id, address.clone());
            transport.add_peer(other, node.address.clone());
        }
        self.nodes.insert(
            id,
            Node {
                transport,
                inbox,
                address,
            },
        );
    }

    /// Stops node `id`; returns the inbox it had.
    async fn stop(&mut self, id: NodeId) -> Arc<Recorder> {
        let node = self
            .nodes
            .remove(&id)
            .unwrap_or_else(|| panic!("{id} is not running"));
        self.harness.stop(id, node.transport).await;
        node.inbox
    }

    /// Stops every node.
    async fn stop_all(mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }

    fn node(&self, id: NodeId) -> &Node<H::Transport> {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("{id} is not running"))
    }

    fn inbox(&self, id: NodeId) -> Arc<Recorder> {
        self.node(id).inbox.clone()
    }

    fn send(&self, from: NodeId, to: NodeId, batch: Vec<Envelope>) -> Result<(), TransportError> {
        self.node(from).transport.send(to, batch)
    }

    /// Sends `batches` from `from` to `to`, keeping at most about
    /// [`WINDOW`] envelopes outstanding (`base` envelopes from `from` were
    /// delivered to `to` before), then waits until the last envelope sent
    /// has been delivered (on an ordered link, everything before it has
    /// been too, or is lost: the caller's checks tell).
    async fn send_all(&self, from: NodeId, to: NodeId, batches: Vec<Vec<Envelope>>, base: usize) {
        let inbox = self.inbox(to);
        let last = batches.iter().rev().find_map(|b| b.last().cloned());
        let mut sent = base;
        for batch in batches {
            let len = batch.len();
            eventually(
                format_args!("{to} to receive from {from} (window)"),
                DEADLINE,
                || inbox.count_from(from) + WINDOW >= sent + len.min(WINDOW),
            )
            .await;
            self.send(from, to, batch)
                .unwrap_or_else(|e| panic!("send {from} -> {to}: {e}"));
            sent += len;
        }
        let Some(last) = last else { return };
        eventually(
            format_args!("{to} to receive {} from {from}", last.msg.kind()),
            DEADLINE,
            || inbox.last_from(from).as_ref() == Some(&last),
        )
        .await;
    }
}

/// Checks that `inbox` received from `from` exactly the envelopes numbered
/// `expected`, in order, each attributed to `from`.
fn assert_received(inbox: &Recorder, from: NodeId, to: NodeId, expected: std::ops::Range<u64>) {
    let got = inbox.envelopes_from(from);
    let want: Vec<Envelope> = expected.map(|s| numbered(from, to, s)).collect();
    if got != want {
        let seqs: Vec<u64> = got.iter().map(seq_of).collect();
        panic!(
            "{to} received from {from} {} envelopes (numbers {seqs:?}), expected {} in order",
            got.len(),
            want.len()
        );
    }
}

/// Checks that every delivery's `from` matches its envelopes' `from`.
fn assert_attributed(inbox: &Recorder) {
    for (from, batch) in inbox.batches() {
        for envelope in &batch {
            assert_eq!(
                envelope.from, from,
                "an envelope from {} was delivered as coming from {from}",
                envelope.from
            );
        }
    }
}

/// Batches between three nodes arrive in order on every link, attributed
/// to their sender, and only at their receiver.
pub async fn delivery_and_order<H: TransportHarness>(harness: &mut H) {
    let [n1, n2, n3] = [1, 2, 3].map(NodeId);
    let mut cluster = Cluster::new(harness);
    for id in [n1, n2, n3] {
        cluster.start(id).await;
    }
    // Interleave the links: 1 -> 2, 3 -> 2 and 2 -> 1 in turns.
    for round in 0..10u64 {
        let range = round * 20..(round + 1) * 20;
        cluster
            .send_all(
                n1,
                n2,
                batches(n1, n2, range.clone(), &[1]),
                range.start as usize,
            )
            .await;
        cluster
            .send_all(
                n3,
                n2,
                batches(n3, n2, range.clone(), &[2, 1]),
                range.start as usize,
            )
            .await;
        cluster
            .send_all(
                n2,
                n1,
                batches(n2, n1, range.clone(), &[3]),
                range.start as usize,
            )
            .await;
    }
    assert_received(&cluster.inbox(n2), n1, n2, 0..200);
    assert_received(&cluster.inbox(n2), n3, n2, 0..200);
    assert_received(&cluster.inbox(n1), n2, n1, 0..200);
    for id in [n1, n2, n3] {
        assert_attributed(&cluster.inbox(id));
    }
    assert_eq!(cluster.inbox(n3).batch_count(), 0, "n3 was sent nothing");
    assert!(
        cluster.inbox(n1).envelopes_from(n3).is_empty(),
        "n3 sent nothing to n1"
    );
    cluster.stop_all().await;
}

/// The envelopes of a batch keep their order: one batch of 500 mixed
/// messages, then batches of assorted sizes.
pub async fn batch_keeps_order<H: TransportHarness>(harness: &mut H) {
    let [n1, n2] = [1, 2].map(NodeId);
    let mut cluster = Cluster::new(harness);
    cluster.start(n1).await;
    cluster.start(n2).await;
    let big: Vec<Envelope> = (0..500).map(|s| numbered(n1, n2, s)).collect();
    cluster.send_all(n1, n2, vec![big], 0).await;
    cluster
        .send_all(n1, n2, batches(n1, n2, 500..700, &[1, 2, 17, 3, 64]), 500)
        .await;
    assert_received(&cluster.inbox(n2), n1, n2, 0..700);
    assert_attributed(&cluster.inbox(n2));
    cluster.stop_all().await;
}

/// Thousands of small batches from two senders to one receiver, all
/// delivered in order.
pub async fn many_batches<H: TransportHarness>(harness: &mut H) {
    const PER_SENDER: u64 = 5_000;
    const STEP: u64 = 500;
    let [n1, n2, n3] = [1, 2, 3].map(NodeId);
    let mut cluster = Cluster::new(harness);
    for id in [n1, n2, n3] {
        cluster.start(id).await;
    }
    let mut start = 0;
    while start < PER_SENDER {
        let range = start..start + STEP;
        cluster
            .send_all(
                n1,
                n2,
                batches(n1, n2, range.clone(), &[1, 1, 3]),
                start as usize,
            )
            .await;
        cluster
            .send_all(n3, n2, batches(n3, n2, range, &[1]), start as usize)
            .await;
        start += STEP;
    }
    assert_received(&cluster.inbox(n2), n1, n2, 0..PER_SENDER);
    assert_received(&cluster.inbox(n2), n3, n2, 0..PER_SENDER);
    assert_attributed(&cluster.inbox(n2));
    cluster.stop_all().await;
}

/// Large messages get through intact: commands, entries and snapshot
/// chunks of [`LARGE_PAYLOAD`] bytes each.
pub async fn large_messages<H: TransportHarness>(harness: &mut H) {
    let [n1, n2] = [1, 2].map(NodeId);
    let mut cluster = Cluster::new(harness);
    cluster.start(n1).await;
    cluster.start(n2).await;
    let blob = |seed: u64| {
        Bytes::from(
            (0..LARGE_PAYLOAD)
                .map(|i| (i as u64).wrapping_mul(31).wrapping_add(seed) as u8)
                .collect::<Vec<u8>>(),
        )
    };
    let envelope = |seq: u64, msg| Envelope {
        group: GroupId(1),
        from: n1,
        to: n2,
        term: Term(seq),
        msg,
    };
    let mut sent = Vec::new();
    for seq in 0..6u64 {
        let msg = match seq % 3 {
            0 => Message::Forward(ForwardRequest {
                id: seq,
                command: blob(seq),
            }),
            1 => Message::Append(AppendRequest {
                prev: LogId::new(Term(1), LogIndex(seq)),
                entries: vec![Entry {
                    id: LogId::new(Term(1), LogIndex(seq + 1)),
                    timestamp: Hlc::new(seq, 0),
                    payload: Payload::Command(blob(seq)),
                }],
                commit: LogIndex(seq),
                stream: 1,
            }),
            _ => Message::Snapshot(Box::new(SnapshotChunk {
                meta: Default::default(),
                total: 4 * LARGE_PAYLOAD as u64,
                offset: seq * LARGE_PAYLOAD as u64,
                data: blob(seq),
                stream: 1,
            })),
        };
        // Each large message with a small one behind it in the same batch.
        let batch = vec![envelope(seq, msg), numbered(n1, n2, 1_000 + seq)];
        sent.extend(batch.iter().cloned());
        cluster
            .send_all(n1, n2, vec![batch], 2 * seq as usize)
            .await;
    }
    let got = cluster.inbox(n2).envelopes_from(n1);
    assert_eq!(got.len(), sent.len(), "every large message arrived");
    for (i, (got, want)) in got.iter().zip(&sent).enumerate() {
        assert!(
            got == want,
            "envelope {i} ({}) arrived altered",
            want.msg.kind()
        );
    }
    cluster.stop_all().await;
}

/// Sends numbered batches from `from` to `to` every few milliseconds,
/// starting at number `first`, until `to` receives one of them; returns the
/// next number to use.
async fn send_until_received<H: TransportHarness>(
    cluster: &Cluster<'_, H>,
    from: NodeId,
    to: NodeId,
    first: u64,
) -> u64 {
    let inbox = cluster.inbox(to);
    let deadline = Instant::now() + DEADLINE;
    let mut seq = first;
    while !inbox
        .envelopes_from(from)
        .iter()
        .any(|e| seq_of(e) >= first)
    {
        assert!(
            Instant::now() < deadline,
            "{from} could not reach {to} within {DEADLINE:?}"
        );
        // Sending may fail or drop while the connection is re-established.
        let _ = cluster.send(from, to, vec![numbered(from, to, seq)]);
        seq += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seq
}

/// Checks that `from` reaches `to` (again, after a restart): some batch
/// numbered from `first` on gets through, and then a run of 100 envelopes
/// arrives completely and in order behind it.
async fn reaches_again<H: TransportHarness>(
    cluster: &Cluster<'_, H>,
    from: NodeId,
    to: NodeId,
    first: u64,
) {
    let next = send_until_received(cluster, from, to, first).await;
    let inbox = cluster.inbox(to);
    let run = batches(from, to, next..next + 100, &[1, 2]);
    // Probes still in flight land before the run (the link is ordered), so
    // counting them into the window only loosens it.
    cluster
        .send_all(from, to, run, inbox.count_from(from))
        .await;
    let got: Vec<u64> = inbox.envelopes_from(from).iter().map(seq_of).collect();
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "{to} received from {from} out of order: {got:?}"
    );
    let tail = got.get(got.len().saturating_sub(100)..).unwrap_or_default();
    assert_eq!(
        tail,
        (next..next + 100).collect::<Vec<u64>>(),
        "{to} missed part of the run from {from}"
    );
    assert_attributed(&inbox);
}

/// A node that restarts is reached again, and reaches the others again:
/// first the receiver restarts, then the sender. The stopped node's old
/// inbox receives nothing more.
pub async fn reconnect_after_restart<H: TransportHarness>(harness: &mut H) {
    let [n1, n2] = [1, 2].map(NodeId);
    let mut cluster = Cluster::new(harness);
    cluster.start(n1).await;
    cluster.start(n2).await;
    cluster
        .send_all(n1, n2, batches(n1, n2, 0..10, &[1]), 0)
        .await;
    cluster
        .send_all(n2, n1, batches(n2, n1, 0..10, &[1]), 0)
        .await;

    // The receiver restarts. Sends while it is down are allowed to be lost
    // but must not block or panic.
    let old_inbox = cluster.stop(n2).await;
    let delivered_before = old_inbox.batch_count();
    for seq in 10..20 {
        let _ = cluster.send(n1, n2, vec![numbered(n1, n2, seq)]);
    }
    cluster.start(n2).await;
    reaches_again(&cluster, n1, n2, 1_000).await;
    reaches_again(&cluster, n2, n1, 1_000).await;
    assert_eq!(
        old_inbox.batch_count(),
        delivered_before,
        "a stopped node's inbox received batches"
    );

    // The sender restarts.
    let old_inbox = cluster.stop(n1).await;
    let delivered_before = old_inbox.batch_count();
    cluster.start(n1).await;
    reaches_again(&cluster, n1, n2, 2_000).await;
    reaches_again(&cluster, n2, n1, 2_000).await;
    assert_eq!(old_inbox.batch_count(), delivered_before);
    cluster.stop_all().await;
}

/// After `remove_peer` nothing more reaches the peer; after `add_peer`
/// again, batches flow again.
pub async fn remove_and_add_peer<H: TransportHarness>(harness: &mut H) {
    let [n1, n2] = [1, 2].map(NodeId);
    let mut cluster = Cluster::new(harness);
    cluster.start(n1).await;
    cluster.start(n2).await;
    cluster
        .send_all(n1, n2, batches(n1, n2, 0..10, &[1]), 0)
        .await;

    cluster.node(n1).transport.remove_peer(n2);
    for seq in 10..20 {
        // Either refused (no address) or dropped: both are fine.
        let _ = cluster.send(n1, n2, vec![numbered(n1, n2, seq)]);
    }
    // Nothing should arrive; give a wrong implementation time to show it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_received(&cluster.inbox(n2), n1, n2, 0..10);

    let address = cluster.node(n2).address.clone();
    cluster.node(n1).transport.add_peer(n2, address);
    reaches_again(&cluster, n1, n2, 1_000).await;
    cluster.stop_all().await;
}

/// Sending to a node whose address was never given is
/// [`TransportError::UnknownPeer`].
pub async fn unknown_peer<H: TransportHarness>(harness: &mut H) {
    let n1 = NodeId(1);
    let stranger = NodeId(999);
    let mut cluster = Cluster::new(harness);
    cluster.start(n1).await;
    match cluster.send(n1, stranger, vec![numbered(n1, stranger, 0)]) {
        Err(TransportError::UnknownPeer(id)) => assert_eq!(id, stranger),
        other => panic!("send to a node never added: expected UnknownPeer, got {other:?}"),
    }
    cluster.stop_all().await;
}

/// `send` returns at once even when the peer is down: 10,000 sends to a
/// stopped node take well under a second of the caller's time (the bound
/// checked is a generous 5 s).
pub async fn send_never_blocks<H: TransportHarness>(harness: &mut H) {
    let [n1, n2] = [1, 2].map(NodeId);
    let mut cluster = Cluster::new(harness);
    cluster.start(n1).await;
    cluster.start(n2).await;
    cluster.stop(n2).await;
    let started = std::time::Instant::now();
    for seq in 0..10_000 {
        let _ = cluster.send(n1, n2, vec![numbered(n1, n2, seq)]);
    }
    let spent = started.elapsed();
    assert!(
        spent < Duration::from_secs(5),
        "10,000 sends to a node that is down took {spent:?}"
    );
    cluster.stop_all().await;
}

/// Runs every case, each with a fresh harness from `make_harness`.
pub async fn run_all<H: TransportHarness>(mut make_harness: impl FnMut() -> H) {
    delivery_and_order(&mut make_harness()).await;
    batch_keeps_order(&mut make_harness()).await;
    many_batches(&mut make_harness()).await;
    large_messages(&mut make_harness()).await;
    reconnect_after_restart(&mut make_harness()).await;
    remove_and_add_peer(&mut make_harness()).await;
    unknown_peer(&mut make_harness()).await;
    send_never_blocks(&mut make_harness()).await;
}

/// A [`TransportHarness`] for backends that implement
/// [`Transport::add_address`], as [`add_address_suite`] needs: it can also
/// make a transport of another cluster.
pub trait AddressHarness: TransportHarness {
    /// Makes the transport of node `id` of another cluster than the one
    /// [`make`](TransportHarness::make) builds (same everything else, with
    /// TLS the same CA), not started yet. The suite reaches it at
    /// [`address`](TransportHarness::address) and stops it with
    /// [`stop`](TransportHarness::stop).
    fn make_foreign(&mut self, id: NodeId) -> impl Future<Output = Self::Transport>;
}

/// Gives `address` to `node` with [`Transport::add_address`], which must
/// accept it.
fn add_address<T: Transport>(node: &Node<T>, owner: NodeId, address: &str) {
    node.transport
        .add_address(address.to_owned())
        .unwrap_or_else(|e| panic!("add_address of {owner} at {address}: {e}"));
}

/// Checks that sends from `node` to `to` still fail with
/// [`TransportError::UnknownPeer`]: `to`'s id was not learned.
fn assert_unknown<T: Transport>(node: &Node<T>, from: NodeId, to: NodeId, seq: u64, why: &str) {
    match node.transport.send(to, vec![numbered(from, to, seq)]) {
        Err(TransportError::UnknownPeer(id)) => assert_eq!(id, to),
        other => panic!("{why}: send {from} -> {to} should be UnknownPeer, got {other:?}"),
    }
}

/// Learning node ids from addresses ([`Transport::add_address`],
/// [`Transport::remove_address`]):
///
/// - a node given only by its address receives batches once its id is
///   learned (sends fail with [`TransportError::UnknownPeer`] until then),
///   in order;
/// - a node's own address is ignored (sending to itself stays
///   `UnknownPeer`);
/// - an address whose node belongs to another cluster is never learned,
///   and that node receives nothing;
/// - after `remove_address` nothing more reaches the node learned from it
///   (sends fail or are dropped), and adding the address again learns it
///   again.
///
/// Nodes 1 and 2 are of the cluster, node 3 of another; no node is told
/// any peer by id. Run it with a fresh harness.
pub async fn add_address_suite<H: AddressHarness>(harness: &mut H) {
    let [n1, n2, n3] = [1, 2, 3].map(NodeId);
    let mut nodes = BTreeMap::new();
    for id in [n1, n2] {
        let transport = harness.make(id).await;
        let inbox = Recorder::new();
        transport
            .start(inbox.clone())
            .await
            .unwrap_or_else(|e| panic!("starting {id}: {e}"));
        let address = harness.address(id, &transport);
        nodes.insert(
            id,
            Node {
                transport,
                inbox,
                address,
            },
        );
    }
    let foreign = harness.make_foreign(n3).await;
    let foreign_inbox = Recorder::new();
    foreign
        .start(foreign_inbox.clone())
        .await
        .unwrap_or_else(|e| panic!("starting {n3} of another cluster: {e}"));
    let foreign_address = harness.address(n3, &foreign);
    let node = |id: NodeId| &nodes[&id];

    // Before anything is learned, node 2 is unknown to node 1.
    assert_unknown(node(n1), n1, n2, 0, "nothing added yet");

    // Its own address, the foreign node's, then node 2's.
    let own = node(n1).address.clone();
    add_address(node(n1), n1, &own);
    add_address(node(n1), n3, &foreign_address);
    let n2_address = node(n2).address.clone();
    add_address(node(n1), n2, &n2_address);
    // Adding an address twice is harmless.
    add_address(node(n1), n2, &n2_address);

    // Node 2 is learned: batches reach it, in order, attributed to node 1.
    let inbox2 = node(n2).inbox.clone();
    let deadline = Instant::now() + DEADLINE;
    let mut seq = 1_000;
    while inbox2.count_from(n1) == 0 {
        assert!(
            Instant::now() < deadline,
            "{n1} never reached {n2}, given by address only, within {DEADLINE:?}"
        );
        match node(n1).transport.send(n2, vec![numbered(n1, n2, seq)]) {
            Ok(()) => seq += 1,
            Err(TransportError::UnknownPeer(_)) => {}
            Err(e) => panic!("send {n1} -> {n2} while learning its address: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sent = batches(n1, n2, 0..100, &[1, 3]);
    let mut outstanding = inbox2.count_from(n1);
    for batch in sent {
        let len = batch.len();
        eventually(
            format_args!("{n2} to receive from {n1} (window)"),
            DEADLINE,
            || inbox2.count_from(n1) + WINDOW >= outstanding + len.min(WINDOW),
        )
        .await;
        node(n1)
            .transport
            .send(n2, batch)
            .unwrap_or_else(|e| panic!("send {n1} -> {n2} once learned: {e}"));
        outstanding += len;
    }
    let last = numbered(n1, n2, 99);
    eventually(
        format_args!("{n2} to receive the run from {n1}"),
        DEADLINE,
        || inbox2.last_from(n1).as_ref() == Some(&last),
    )
    .await;
    let run: Vec<Envelope> = inbox2
        .envelopes_from(n1)
        .into_iter()
        .filter(|e| seq_of(e) < 1_000)
        .collect();
    assert_eq!(
        run,
        (0..100).map(|s| numbered(n1, n2, s)).collect::<Vec<_>>(),
        "{n2} received the run from {n1} out of order or in part"
    );
    assert_attributed(&inbox2);

    // Give the other probes time to do their worst: node 1's own address
    // and the foreign node's address are still not peers.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_unknown(node(n1), n1, n1, 1, "its own address is ignored");
    assert_unknown(
        node(n1),
        n1,
        n3,
        1,
        "a node of another cluster is never learned",
    );
    assert_eq!(
        node(n1).inbox.count_from(n1),
        0,
        "{n1} received from itself"
    );
    assert_eq!(
        foreign_inbox.batch_count(),
        0,
        "the other cluster received batches"
    );

    // Removing node 2's address stops delivery.
    node(n1).transport.remove_address(&n2_address);
    let before = inbox2.count_from(n1);
    for seq in 2_000..2_010 {
        // Refused (the peer is forgotten) or dropped: both are fine.
        let _ = node(n1).transport.send(n2, vec![numbered(n1, n2, seq)]);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        inbox2.count_from(n1),
        before,
        "{n2} received batches after its address was removed"
    );

    // Given again, it is learned again.
    add_address(node(n1), n2, &n2_address);
    let deadline = Instant::now() + DEADLINE;
    let mut seq = 3_000;
    while !inbox2.envelopes_from(n1).iter().any(|e| seq_of(e) >= 3_000) {
        assert!(
            Instant::now() < deadline,
            "{n1} never reached {n2} again after its address was added again"
        );
        if node(n1)
            .transport
            .send(n2, vec![numbered(n1, n2, seq)])
            .is_ok()
        {
            seq += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    node(n1).transport.remove_address(&own);
    node(n1).transport.remove_address(&foreign_address);
    harness.stop(n3, foreign).await;
    for (id, node) in nodes {
        harness.stop(id, node.transport).await;
    }
}
