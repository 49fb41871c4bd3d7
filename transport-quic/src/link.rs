//! The link with one peer: its bounded queue, and the task that owns the
//! one connection the pair of nodes shares and writes the queue to it.
//!
//! ```text
//! send ──try_send──► queue (bounded) ──► link task ──► this node's control stream (hello, frames)
//!          │ full: drop + count          │ batch with a snapshot chunk:
//!                                         └──► snapshot task ──► a new uni stream each
//! acceptor ──(certificate, hello checked)──► link task: use it, hold it, or close it
//! ```
//!
//! # One connection per pair
//!
//! Whichever node connects first, the connection carries both directions:
//! each side opens its own control stream on it (hello, then frames) and
//! reads the other's. A node dials only while it holds no connection with
//! the peer. The accepting node *answers* with its own hello once it uses
//! the connection. A connection the higher node dialled carries no batch
//! until it is answered; one the lower node dialled carries batches right
//! after its hello, since the higher node always uses it (a reader checks
//! the answer when it comes, and closes the connection if it is wrong or
//! late). So a connection that loses a race is closed before it carried
//! anything, and the queue keeps every batch meanwhile.
//!
//! The node with the lower id decides which connection the pair keeps;
//! the higher node always uses a connection accepted from the lower one.
//! In detail, for a connection accepted from the peer:
//!
//! - The higher node uses it. A dial of its own in progress is abandoned
//!   ([`close_code::DUPLICATE`]); a connection it used before is stale,
//!   since the lower node dials only when it has none
//!   ([`close_code::REPLACED`]).
//! - The lower node uses it when it has nothing else, or replaces an older
//!   accepted one with it. If its own dial has not finished its handshake,
//!   the peer cannot have seen its hello: it gives the dial up (closing it
//!   as a duplicate, before any hello) and uses the peer's connection.
//!   When it already uses a connection it dialled, it holds the new one
//!   unanswered and probes its own (an empty stream the peer must
//!   acknowledge): if the peer acknowledges, the peer has that connection
//!   and uses it, dropping its own dial, so the held one is closed as a
//!   duplicate; if not, its connection is stale (the peer restarted) and
//!   the held one replaces it.
//!
//! So of two crossing dials, the lower node's wins once its hello is sent,
//! and gives way to the higher node's before that; both nodes see the same
//! outcome either way. The higher node, whose dial may lose, keeps its
//! batches queued until the lower node answers.
//!
//! A restarted node resets connections its previous run left open (its
//! stateless reset key is derived from its private key), so the peer
//! notices at its next packet rather than at the idle timeout.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use raft_api::codec::CodecError;
use raft_api::{Envelope, Message, NodeId};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tracing::{debug, info, warn};
use transport_util::Backoff;

use crate::close_code;
use crate::context::{BoxFuture, ConnSet, Context};
use crate::dial::connect;
use crate::hello::{Answered, Unanswered, exchange, open_control};
use crate::inbound::{read_answered, read_connection};
use crate::metrics::add;

/// Bytes of frames gathered for one write, when more batches are queued.
const WRITE_CHUNK: usize = 1024 * 1024;

/// A connection that lasted this long was healthy: the next failure starts
/// the backoff from its minimum again.
const HEALTHY_SESSION: Duration = Duration::from_secs(1);

/// A buffer grown past this by a large frame is released after the write.
const KEEP_BUFFER: usize = 4 * WRITE_CHUNK;

/// Snapshot batches waiting for their own stream, per connection; more are
/// dropped (Raft keeps one chunk in flight, so this is plenty).
const SNAPSHOT_QUEUE: usize = 16;

/// What the acceptor and the address dialler hand to a link.
pub(crate) enum LinkEvent {
    /// An incoming connection from the peer, certificate and hello checked.
    Accepted(quinn::Connection),
    /// A connection this node dialled to an address whose node turned out
    /// to be the peer, which answered the hello.
    Answered(quinn::Connection, Answered),
}

/// A peer's queue and link task. Dropping it stops the task.
pub(crate) struct Link {
    pub(crate) queue: mpsc::Sender<Vec<Envelope>>,
    pub(crate) events: mpsc::UnboundedSender<LinkEvent>,
    pub(crate) task: JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Link {
    /// Starts the link with `peer`, reading its address from `address`
    /// and recording its connections in `connections`.
    pub(crate) fn spawn(
        context: &Arc<Context>,
        peer: NodeId,
        address: watch::Receiver<Option<String>>,
        connections: Arc<ConnSet>,
    ) -> Self {
        let (queue, batches) = mpsc::channel(context.config.queue_capacity);
        let (events, incoming) = mpsc::unbounded_channel();
        let node = context.node();
        let task = LinkTask {
            context: Arc::clone(context),
            peer,
            lower: node < peer,
            batches,
            events: incoming,
            address,
            connections,
            backoff: Backoff::new(
                context.config.backoff_min,
                context.config.backoff_max,
                node,
                peer,
            ),
            current: None,
            dial: None,
            held: None,
            probe: None,
            in_hand: None,
            retry_at: None,
            buf: BytesMut::new(),
        };
        let task = context.runtime.spawn(task.run());
        Self {
            queue,
            events,
            task,
        }
    }

    /// Batches waiting in the queue.
    pub(crate) fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// Whether the task still runs.
    pub(crate) fn is_running(&self) -> bool {
        !self.task.is_finished() && !self.queue.is_closed()
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The connection the pair uses.
struct Active {
    connection: quinn::Connection,
    /// Dialled by this node (else accepted from the peer).
    dialed: bool,
    /// This node's control stream on it.
    control: quinn::SendStream,
    snapshots: mpsc::Sender<Vec<Envelope>>,
    _snapshot_task: AbortOnDrop,
    since: Instant,
}

impl Active {
    fn new(
        context: &Arc<Context>,
        peer: NodeId,
        connection: quinn::Connection,
        dialed: bool,
        control: quinn::SendStream,
    ) -> Self {
        let (snapshots, queue) = mpsc::channel(SNAPSHOT_QUEUE);
        let task = context.runtime.spawn(send_snapshots(
            Arc::clone(context),
            peer,
            connection.clone(),
            queue,
        ));
        Self {
            connection,
            dialed,
            control,
            snapshots,
            _snapshot_task: AbortOnDrop(task),
            since: Instant::now(),
        }
    }
}

/// A dial of this node in progress.
enum Dial {
    /// QUIC and TLS handshake.
    Connecting(BoxFuture<Result<quinn::Connection, String>>),
    /// Hello sent; waiting for the peer's.
    Confirming {
        connection: quinn::Connection,
        answer: BoxFuture<Result<Answered, Unanswered>>,
    },
}

/// What woke the link task.
enum Step {
    Batch(Option<Vec<Envelope>>),
    Event(LinkEvent),
    Connected(Result<quinn::Connection, String>),
    Confirmed(Result<Answered, Unanswered>),
    Closed(quinn::ConnectionError),
    Probe(bool),
    HeldClosed,
    Retry,
    Address(bool),
}

/// The state of one link task.
struct LinkTask {
    context: Arc<Context>,
    peer: NodeId,
    /// Whether this node has the lower id of the pair (its dials win).
    lower: bool,
    batches: mpsc::Receiver<Vec<Envelope>>,
    events: mpsc::UnboundedReceiver<LinkEvent>,
    address: watch::Receiver<Option<String>>,
    connections: Arc<ConnSet>,
    backoff: Backoff,
    /// The connection in use.
    current: Option<Active>,
    dial: Option<Dial>,
    /// A connection accepted from the peer, held unanswered (lower node
    /// only) while the probe tells whether this node's own connection is
    /// still alive.
    held: Option<quinn::Connection>,
    /// Probe of `current` while `held` waits.
    probe: Option<BoxFuture<bool>>,
    /// A batch taken from the queue, to write once connected.
    in_hand: Option<Vec<Envelope>>,
    /// No dial before this (backoff after a failure).
    retry_at: Option<Instant>,
    buf: BytesMut,
}

impl LinkTask {
    async fn run(mut self) {
        loop {
            self.settle().await;
            if self.current.is_some() && self.in_hand.is_some() {
                self.write().await;
                continue;
            }
            // Take a batch to write it, or to start a dial; otherwise leave
            // them queued.
            let want_batch = self.in_hand.is_none()
                && (self.current.is_some() || (self.dial.is_none() && self.retry_at.is_none()));
            let step = tokio::select! {
                batch = self.batches.recv(), if want_batch => Step::Batch(batch),
                Some(event) = self.events.recv() => Step::Event(event),
                step = dial_step(&mut self.dial) => step,
                reason = closed(self.current.as_ref().map(|a| &a.connection)) => Step::Closed(reason),
                alive = probed(&mut self.probe) => Step::Probe(alive),
                _ = closed(self.held.as_ref()) => Step::HeldClosed,
                () = sleep_until(self.retry_at) => Step::Retry,
                changed = self.address.changed() => Step::Address(changed.is_ok()),
            };
            match step {
                Step::Batch(None) | Step::Address(false) => return,
                Step::Batch(Some(batch)) => self.in_hand = Some(batch),
                Step::Event(LinkEvent::Accepted(connection)) => self.on_accepted(connection).await,
                Step::Event(LinkEvent::Answered(connection, answered)) => {
                    self.on_answered(connection, answered);
                }
                Step::Connected(Ok(connection)) => self.on_connected(connection).await,
                Step::Connected(Err(error)) => self.dial_failed(&error),
                Step::Confirmed(answer) => self.on_confirmed(answer),
                Step::Closed(reason) => self.on_closed(&reason),
                Step::Probe(alive) => self.on_probe(alive),
                Step::HeldClosed => self.held = None,
                Step::Retry => self.retry_at = None,
                Step::Address(true) => self.on_address_changed(),
            }
        }
    }

    /// Uses a held connection once nothing else can carry traffic, and
    /// dials when a batch waits and nothing is under way.
    async fn settle(&mut self) {
        if self.current.is_none() && self.dial.is_none() {
            self.probe = None;
            if let Some(held) = self.held.take()
                && held.close_reason().is_none()
            {
                self.retry_at = None;
                self.adopt(held).await;
            }
        }
        if self.current.is_none()
            && self.dial.is_none()
            && self.retry_at.is_none()
            && self.in_hand.is_some()
        {
            self.start_dial();
        }
    }

    fn node(&self) -> NodeId {
        self.context.node()
    }

    fn start_dial(&mut self) {
        let Some(target) = self.address.borrow_and_update().clone() else {
            // Known only because it connected: nowhere to dial.
            if self.in_hand.take().is_some() {
                add(&self.context.metrics.dropped_unsendable, 1);
            }
            return;
        };
        let context = Arc::clone(&self.context);
        let peer = self.peer;
        debug!(node = %self.node(), %peer, address = %target, "dialling");
        self.dial = Some(Dial::Connecting(Box::pin(async move {
            connect(&context, peer, &target).await
        })));
    }

    /// Gives up this node's dial, closing its connection with `code`.
    /// Returns whether there was one.
    fn abandon_dial(&mut self, code: u32, reason: &'static [u8]) -> bool {
        match self.dial.take() {
            None => false,
            Some(Dial::Connecting(connecting)) => {
                // Let the handshake finish, then close it with the code, so
                // the peer does not count it as a failed handshake.
                self.context.runtime.spawn(async move {
                    if let Ok(connection) = connecting.await {
                        connection.close(code.into(), reason);
                    }
                });
                true
            }
            Some(Dial::Confirming { connection, .. }) => {
                connection.close(code.into(), reason);
                true
            }
        }
    }

    /// Holds `connection` from the peer unanswered.
    fn hold(&mut self, connection: quinn::Connection) {
        if let Some(older) = self.held.replace(connection) {
            older.close(close_code::REPLACED.into(), b"a newer connection arrived");
            add(&self.context.metrics.connections_replaced, 1);
        }
    }

    /// Takes the current connection out (the caller closes it or not).
    fn drop_current(&mut self) -> Option<Active> {
        self.probe = None;
        self.current.take()
    }

    /// Backs off after a connection that ended.
    fn back_off(&mut self, since: Instant) {
        if since.elapsed() >= HEALTHY_SESSION {
            self.backoff.reset();
        }
        if self.held.is_none() {
            self.retry_at = Some(Instant::now() + self.backoff.next_delay());
        }
    }

    /// Uses `connection`, accepted from the peer: answers with this node's
    /// hello on a control stream of its own.
    async fn adopt(&mut self, connection: quinn::Connection) {
        let (node, peer) = (self.node(), self.peer);
        let opened = timeout(
            self.context.config.handshake_timeout,
            open_control(&connection, self.context.config.cluster_id, node),
        )
        .await;
        match opened {
            Ok(Ok(control)) => {
                info!(%node, %peer, "using the connection the peer opened");
                self.probe = None;
                self.current = Some(Active::new(&self.context, peer, connection, false, control));
            }
            Ok(Err(error)) => {
                warn!(%node, %peer, %error, "cannot answer on the peer's connection");
                connection.close(close_code::NORMAL.into(), b"cannot answer");
            }
            Err(_) => {
                warn!(%node, %peer, "answering on the peer's connection timed out");
                connection.close(close_code::NORMAL.into(), b"cannot answer");
            }
        }
    }

    async fn on_accepted(&mut self, connection: quinn::Connection) {
        if connection.close_reason().is_some() {
            return;
        }
        if !self.lower {
            // The lower node's connection always wins.
            if self.abandon_dial(close_code::DUPLICATE, b"the lower node's connection wins") {
                add(&self.context.metrics.duplicates_closed, 1);
            }
            if let Some(old) = self.drop_current() {
                old.connection
                    .close(close_code::REPLACED.into(), b"the peer connected again");
                add(&self.context.metrics.connections_replaced, 1);
            }
            self.retry_at = None;
            self.adopt(connection).await;
            return;
        }
        if self.dial.is_some() {
            // The lower node's dial is only in progress during its
            // handshake (its hello goes right after): the peer has not seen
            // it, so give the dial up and use the peer's connection.
            if self.abandon_dial(close_code::DUPLICATE, b"the peer's connection came first") {
                add(&self.context.metrics.duplicates_closed, 1);
            }
            self.retry_at = None;
            self.adopt(connection).await;
            return;
        }
        match &self.current {
            None => {
                self.retry_at = None;
                self.adopt(connection).await;
            }
            Some(active) if !active.dialed => {
                // The peer dials only when it holds no connection: the
                // older one is stale.
                if let Some(old) = self.drop_current() {
                    old.connection
                        .close(close_code::REPLACED.into(), b"the peer connected again");
                    add(&self.context.metrics.connections_replaced, 1);
                }
                self.adopt(connection).await;
            }
            Some(active) => {
                // Either the peer dialled at the same time (it will close
                // its dial once it sees this node's), or it lost this
                // connection (restarted): ask the connection.
                if self.probe.is_none() {
                    let limit = self.context.config.handshake_timeout / 2;
                    self.probe = Some(Box::pin(probe(active.connection.clone(), limit)));
                }
                self.hold(connection);
            }
        }
    }

    async fn on_connected(&mut self, connection: quinn::Connection) {
        add(&self.context.metrics.connections_opened, 1);
        self.connections.add(&connection);
        info!(
            node = %self.node(),
            peer = %self.peer,
            remote = %connection.remote_address(),
            "connected"
        );
        if self.lower {
            self.dial = None;
            self.use_own_dial(connection).await;
        } else {
            self.confirm(connection);
        }
    }

    /// The lower node's dial wins once its hello is sent (the higher node
    /// always uses it), so it writes at once: sends the hello and uses the
    /// connection; a reader checks the peer's answer, closing the
    /// connection if it is wrong or does not come in time.
    async fn use_own_dial(&mut self, connection: quinn::Connection) {
        let (node, peer) = (self.node(), self.peer);
        let opened = timeout(
            self.context.config.handshake_timeout,
            open_control(&connection, self.context.config.cluster_id, node),
        )
        .await;
        let control = match opened {
            Ok(Ok(control)) => control,
            Ok(Err(error)) => {
                connection.close(close_code::NORMAL.into(), b"cannot send the hello");
                self.dial_failed(&format!("cannot send the hello: {error}"));
                return;
            }
            Err(_) => {
                connection.close(close_code::NORMAL.into(), b"cannot send the hello");
                self.dial_failed("sending the hello timed out");
                return;
            }
        };
        self.context.spawn_task(read_answered(
            Arc::clone(&self.context),
            connection.clone(),
            peer,
        ));
        self.retry_at = None;
        self.probe = None;
        self.current = Some(Active::new(&self.context, peer, connection, true, control));
    }

    /// Sends this node's hello on `connection`, which it dialled, and
    /// waits for the peer's answer.
    fn confirm(&mut self, connection: quinn::Connection) {
        let answer = Box::pin(exchange(
            Arc::clone(&self.context),
            connection.clone(),
            self.peer,
        ));
        self.dial = Some(Dial::Confirming { connection, answer });
    }

    fn on_confirmed(&mut self, answer: Result<Answered, Unanswered>) {
        let Some(Dial::Confirming { connection, .. }) = self.dial.take() else {
            return;
        };
        match answer {
            Ok(answered) => self.on_answered(connection, answered),
            Err(Unanswered {
                code,
                reason,
                withdrawn,
            }) => {
                connection.close(code.into(), reason.as_bytes());
                if withdrawn {
                    // The peer has another connection with this node and
                    // will use it: keep the batch in hand for it, and dial
                    // again only if none comes.
                    debug!(node = %self.node(), peer = %self.peer, "peer already connected");
                    self.retry_at = Some(Instant::now() + self.backoff.next_delay());
                } else {
                    self.dial_failed(&reason);
                }
            }
        }
    }

    /// A connection this node dialled, answered by the peer (so the peer
    /// uses it): the newest connection dialled by the lower node of the
    /// pair wins, as the peer decides the same way.
    fn on_answered(&mut self, connection: quinn::Connection, answered: Answered) {
        let keep_current = !self.lower && self.current.as_ref().is_some_and(|a| !a.dialed);
        if keep_current {
            // The lower node's connection, in use, wins over this one.
            connection.close(
                close_code::DUPLICATE.into(),
                b"the lower node's connection wins",
            );
            add(&self.context.metrics.duplicates_closed, 1);
            return;
        }
        if self.abandon_dial(close_code::DUPLICATE, b"already connected") {
            add(&self.context.metrics.duplicates_closed, 1);
        }
        if let Some(held) = self.held.take() {
            held.close(
                close_code::DUPLICATE.into(),
                b"the lower node's connection wins",
            );
            add(&self.context.metrics.duplicates_closed, 1);
        }
        if let Some(old) = self.drop_current() {
            if old.dialed {
                old.connection
                    .close(close_code::REPLACED.into(), b"a newer connection");
                add(&self.context.metrics.connections_replaced, 1);
            } else {
                old.connection.close(
                    close_code::DUPLICATE.into(),
                    b"the lower node's connection wins",
                );
                add(&self.context.metrics.duplicates_closed, 1);
            }
        }
        self.retry_at = None;
        info!(node = %self.node(), peer = %self.peer, "peer answered; connection in use");
        self.context.spawn_task(read_connection(
            Arc::clone(&self.context),
            connection.clone(),
            self.peer,
            answered.peer_control,
        ));
        self.current = Some(Active::new(
            &self.context,
            self.peer,
            connection,
            true,
            answered.control,
        ));
    }

    fn dial_failed(&mut self, error: &str) {
        add(&self.context.metrics.connect_failures, 1);
        self.dial = None;
        let delay = self.backoff.next_delay();
        warn!(node = %self.node(), peer = %self.peer, %error, ?delay, "cannot connect");
        // The batch in hand is dropped: it would be stale by then.
        if self.in_hand.take().is_some() {
            add(&self.context.metrics.dropped_unsendable, 1);
        }
        self.retry_at = Some(Instant::now() + delay);
    }

    fn on_closed(&mut self, reason: &quinn::ConnectionError) {
        let Some(active) = self.drop_current() else {
            return;
        };
        if matches!(reason, quinn::ConnectionError::Reset) {
            add(&self.context.metrics.connections_reset, 1);
        }
        info!(node = %self.node(), peer = %self.peer, %reason, "connection closed");
        self.back_off(active.since);
    }

    fn on_probe(&mut self, alive: bool) {
        self.probe = None;
        if alive {
            if let Some(held) = self.held.take() {
                held.close(
                    close_code::DUPLICATE.into(),
                    b"the lower node's connection wins",
                );
                add(&self.context.metrics.duplicates_closed, 1);
            }
        } else if let Some(stale) = self.drop_current() {
            info!(node = %self.node(), peer = %self.peer, "connection does not answer; using the peer's new one");
            stale
                .connection
                .close(close_code::REPLACED.into(), b"no answer");
            add(&self.context.metrics.connections_replaced, 1);
        }
    }

    fn on_address_changed(&mut self) {
        self.retry_at = None;
        let abandoned = self.abandon_dial(close_code::NORMAL, b"address changed");
        let dialed = self.current.as_ref().is_some_and(|a| a.dialed);
        if dialed && let Some(old) = self.drop_current() {
            old.connection
                .close(close_code::NORMAL.into(), b"address changed");
        }
        if abandoned || dialed {
            info!(node = %self.node(), peer = %self.peer, "address changed; reconnecting");
        }
    }

    /// Writes the batch in hand, and whatever else is queued up to a
    /// chunk, on the current connection.
    async fn write(&mut self) {
        let Some(active) = self.current.as_mut() else {
            return;
        };
        let context = &self.context;
        let (node, peer) = (context.node(), self.peer);
        let mut count = 0u64;
        let mut next = self.in_hand.take();
        while let Some(batch) = next.take() {
            if has_snapshot(&batch) {
                if active.snapshots.try_send(batch).is_err() {
                    add(&context.metrics.dropped_unsendable, 1);
                    warn!(%node, %peer, "snapshot streams backlogged; batch dropped");
                }
            } else if encode(context, peer, &batch, &mut self.buf) {
                count += 1;
            } else {
                add(&context.metrics.dropped_unsendable, 1);
            }
            if self.buf.len() < WRITE_CHUNK {
                next = self.batches.try_recv().ok();
            }
        }
        if self.buf.is_empty() {
            return;
        }
        let written = timeout(
            context.config.idle_timeout,
            active.control.write_all(&self.buf),
        )
        .await;
        self.buf.clear();
        if self.buf.capacity() > KEEP_BUFFER {
            self.buf = BytesMut::new();
        }
        let error = match written {
            Ok(Ok(())) => {
                add(&context.metrics.batches_sent, count);
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "write made no progress".to_owned(),
        };
        add(&context.metrics.dropped_unsendable, count);
        warn!(%node, %peer, %error, lost = count, "connection failed");
        if let Some(failed) = self.drop_current() {
            failed
                .connection
                .close(close_code::NORMAL.into(), b"write failed");
            self.back_off(failed.since);
        }
    }
}

/// The next step of a dial, if any (never resolves otherwise).
async fn dial_step(dial: &mut Option<Dial>) -> Step {
    match dial {
        Some(Dial::Connecting(connecting)) => Step::Connected(connecting.await),
        Some(Dial::Confirming { answer, .. }) => Step::Confirmed(answer.await),
        None => std::future::pending().await,
    }
}

/// Resolves when `connection` closes (never without one).
async fn closed(connection: Option<&quinn::Connection>) -> quinn::ConnectionError {
    match connection {
        Some(connection) => connection.closed().await,
        None => std::future::pending().await,
    }
}

/// The outcome of the probe, if one runs (never resolves otherwise).
async fn probed(probe: &mut Option<BoxFuture<bool>>) -> bool {
    match probe {
        Some(probe) => probe.await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at` (forever without one).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Whether the other end of `connection` acknowledges an empty stream
/// within `limit`: a live peer does within a round trip or two; a
/// restarted one cannot (or resets the connection).
async fn probe(connection: quinn::Connection, limit: Duration) -> bool {
    let asked = async {
        let mut stream = connection.open_uni().await.ok()?;
        stream.finish().ok()?;
        stream.stopped().await.ok()
    };
    matches!(timeout(limit, asked).await, Ok(Some(_)))
}

/// Whether `batch` carries a snapshot chunk, and so goes on its own stream.
fn has_snapshot(batch: &[Envelope]) -> bool {
    batch.iter().any(|e| matches!(e.msg, Message::Snapshot(_)))
}

/// Sends each batch of `queue` on a new unidirectional stream of
/// `connection`, one after the other, so snapshot chunks keep their order
/// and never hold up the control stream.
async fn send_snapshots(
    context: Arc<Context>,
    peer: NodeId,
    connection: quinn::Connection,
    mut queue: mpsc::Receiver<Vec<Envelope>>,
) {
    let node = context.node();
    let mut buf = BytesMut::new();
    while let Some(batch) = queue.recv().await {
        buf.clear();
        if !encode(&context, peer, &batch, &mut buf) {
            add(&context.metrics.dropped_unsendable, 1);
            continue;
        }
        let sent = async {
            let mut stream = connection.open_uni().await?;
            stream.write_all(&buf).await?;
            stream
                .finish()
                .map_err(|_| quinn::WriteError::ClosedStream)?;
            Ok::<_, quinn::WriteError>(())
        };
        match timeout(context.config.idle_timeout, sent).await {
            Ok(Ok(())) => {
                add(&context.metrics.batches_sent, 1);
                add(&context.metrics.snapshot_streams, 1);
            }
            Ok(Err(error)) => {
                add(&context.metrics.dropped_unsendable, 1);
                warn!(%node, %peer, %error, "cannot send a snapshot stream");
                return;
            }
            Err(_) => {
                add(&context.metrics.dropped_unsendable, 1);
                warn!(%node, %peer, "snapshot stream made no progress");
                return;
            }
        }
        if buf.capacity() > KEEP_BUFFER {
            buf = BytesMut::new();
        }
    }
    debug!(%node, %peer, "snapshot sender done");
}

/// Appends the frames of `batch` to `buf`: one frame, or several when the
/// batch exceeds the frame limit (split in halves, order kept). Envelopes
/// too large for any frame are dropped with a warning. Returns whether
/// anything of the batch was encoded.
fn encode(context: &Context, peer: NodeId, batch: &[Envelope], buf: &mut BytesMut) -> bool {
    match context.codec.encode_into(batch, buf) {
        Ok(_) => true,
        Err(CodecError::TooLarge { .. }) if batch.len() > 1 => {
            let (a, b) = batch.split_at(batch.len() / 2);
            let first = encode(context, peer, a, buf);
            encode(context, peer, b, buf) || first
        }
        Err(error) => {
            let kind = batch.first().map_or("empty batch", |e| e.msg.kind());
            warn!(
                node = %context.node(),
                %peer,
                %error,
                kind,
                "cannot send message; dropped"
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_snapshot_batches_get_their_own_stream() {
        use raft_api::{GroupId, SnapshotChunk, Term};
        let envelope = |msg| Envelope {
            group: GroupId(1),
            from: NodeId(1),
            to: NodeId(2),
            term: Term(1),
            msg,
        };
        let chunk = Message::Snapshot(Box::new(SnapshotChunk {
            meta: Default::default(),
            total: 1,
            offset: 0,
            data: bytes::Bytes::from_static(b"x"),
            stream: 1,
        }));
        assert!(!has_snapshot(&[envelope(Message::TimeoutNow)]));
        assert!(has_snapshot(&[
            envelope(Message::TimeoutNow),
            envelope(chunk)
        ]));
    }
}
