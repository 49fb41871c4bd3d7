//! The sending side: one writer task per peer, fed by a bounded queue,
//! owning at most one connection to that peer.
//!
//! ```text
//! send ──try_send──► queue (bounded) ──► writer task ──► TCP (or TLS) connection
//!          │ full: drop + count           │ dial: hellos exchanged (see dial.rs)
//!                                          │ then frames, several per write
//!                                          │ failure: backoff, reconnect
//! ```

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use raft_api::codec::{CodecError, FrameCodec};
use raft_api::{Envelope, NodeId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tracing::{debug, info, warn};
use transport_util::{AddressWatch, Backoff, Counters, PeerWriter, add};

use crate::config::TcpConfig;
use crate::dial::{Connection, DialError, Dialer};
use crate::tls::Tls;

/// Bytes of frames gathered for one write, when more batches are queued.
const WRITE_CHUNK: usize = 1024 * 1024;

/// A connection that lasted this long was healthy: the next failure starts
/// the backoff from its minimum again.
const HEALTHY_SESSION: Duration = Duration::from_secs(1);

/// A buffer grown past this by a large frame is released after the write.
const KEEP_BUFFER: usize = 4 * WRITE_CHUNK;

/// What a writer task (and an address probe) needs; shared by all writers
/// of a transport.
pub(crate) struct WriterContext {
    pub(crate) config: Arc<TcpConfig>,
    pub(crate) codec: FrameCodec,
    pub(crate) metrics: Arc<Counters>,
    /// TLS for every connection opened, if configured.
    pub(crate) tls: Option<Arc<Tls>>,
}

impl WriterContext {
    /// Opens connections with these settings.
    pub(crate) fn dialer(&self) -> Dialer<'_> {
        Dialer {
            config: &self.config,
            codec: self.codec,
            tls: self.tls.as_deref(),
        }
    }
}

/// A peer's queue and writer task. Dropping it stops the task, which
/// closes the connection.
pub(crate) struct Writer {
    pub(crate) queue: mpsc::Sender<Vec<Envelope>>,
    pub(crate) task: JoinHandle<()>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PeerWriter for Writer {
    fn queue(&self) -> &mpsc::Sender<Vec<Envelope>> {
        &self.queue
    }
}

impl Writer {
    /// Starts the writer of `peer` on `runtime`, reading the peer's address
    /// from `address` (updates close the connection and reconnect). With
    /// `connection` (already through its handshake with `peer`), the
    /// writer uses it first instead of dialling.
    pub(crate) fn spawn(
        context: &Arc<WriterContext>,
        peer: NodeId,
        address: AddressWatch,
        runtime: &tokio::runtime::Handle,
        connection: Option<Connection>,
    ) -> Self {
        let (queue, batches) = mpsc::channel(context.config.queue_capacity);
        let task = runtime.spawn(run(Arc::clone(context), peer, batches, address, connection));
        Self { queue, task }
    }
}

/// Why a connection ended.
enum End {
    /// It failed; reconnect after a backoff.
    Failed,
    /// The peer's address changed; reconnect at once.
    AddressChanged,
    /// The transport dropped the peer; stop.
    Stopped,
}

/// The writer task of one peer: connects when there is something to send
/// (or starts on the connection it was given), writes until the
/// connection fails, backs off, reconnects.
async fn run(
    context: Arc<WriterContext>,
    peer: NodeId,
    mut batches: mpsc::Receiver<Vec<Envelope>>,
    mut address: AddressWatch,
    connection: Option<Connection>,
) {
    let node = context.config.node_id;
    let mut backoff = Backoff::new(
        context.config.backoff_min,
        context.config.backoff_max,
        node,
        peer,
    );
    let mut session = Session {
        context: &context,
        peer,
        buf: BytesMut::new(),
    };
    let mut ready = connection;
    loop {
        let (connection, first, target) = match ready.take() {
            Some(connection) => {
                let target = address.borrow_and_update().clone().unwrap_or_default();
                (connection, None, target)
            }
            None => {
                // Connect only when there is something to send.
                let Some(first) = batches.recv().await else {
                    return;
                };
                let Some(target) = address.borrow_and_update().clone() else {
                    // No address to dial (the table only sends to peers
                    // with one, but stay robust): wait for one.
                    add(&context.metrics.dropped_unsendable, 1);
                    if address.changed().await.is_err() {
                        return;
                    }
                    continue;
                };
                match context.dialer().dial(&target, Some(peer)).await {
                    Ok(dialed) => (dialed.connection, Some(first), target),
                    Err(error) => {
                        if retry_later(&context, &mut backoff, peer, &target, &error, &mut address)
                            .await
                            .is_err()
                        {
                            return;
                        }
                        continue;
                    }
                }
            }
        };
        let since = Instant::now();
        let end = session
            .serve(&target, connection, first, &mut batches, &mut address)
            .await;
        if since.elapsed() >= HEALTHY_SESSION {
            backoff.reset();
        }
        match end {
            End::Stopped => return,
            End::AddressChanged => {
                info!(%node, %peer, "address changed; reconnecting");
            }
            End::Failed => {
                let delay = backoff.next_delay();
                if sleep_or_address_change(delay, &mut address).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// After a failed attempt to connect to `peer` at `target`: counts it,
/// drops the batch in hand (it would be stale by then) and sleeps for the
/// next backoff delay, cut short by a new address. Fails when the peer was
/// dropped.
async fn retry_later(
    context: &WriterContext,
    backoff: &mut Backoff,
    peer: NodeId,
    target: &str,
    error: &DialError,
    address: &mut AddressWatch,
) -> Result<(), ()> {
    let node = context.config.node_id;
    add(&context.metrics.connect_failures, 1);
    add(&context.metrics.dropped_unsendable, 1);
    let delay = backoff.next_delay();
    if let DialError::WrongNode { .. } = error {
        add(&context.metrics.wrong_node_answers, 1);
        warn!(%node, %peer, address = %target, %error, ?delay, "the address belongs to another node");
    } else {
        debug!(%node, %peer, address = %target, %error, ?delay, "cannot connect");
    }
    sleep_or_address_change(delay, address).await
}

/// Sleeps for `delay`, cut short by a new address. Fails when the peer was
/// dropped (the address sender is gone).
async fn sleep_or_address_change(delay: Duration, address: &mut AddressWatch) -> Result<(), ()> {
    tokio::select! {
        () = tokio::time::sleep(delay) => Ok(()),
        changed = address.changed() => changed.map_err(|_| ()),
    }
}

/// One connection's worth of writing, with the buffer kept across
/// connections.
struct Session<'a> {
    context: &'a WriterContext,
    peer: NodeId,
    buf: BytesMut,
}

impl Session<'_> {
    /// Sends `first` (if any) and every batch that follows on a
    /// connection through its handshake, until the connection fails, the
    /// address changes or the peer is dropped.
    async fn serve(
        &mut self,
        target: &str,
        stream: Connection,
        first: Option<Vec<Envelope>>,
        batches: &mut mpsc::Receiver<Vec<Envelope>>,
        address: &mut AddressWatch,
    ) -> End {
        let node = self.context.config.node_id;
        let peer = self.peer;
        add(&self.context.metrics.connections_opened, 1);
        info!(%node, %peer, address = %target, "connected");
        let (mut reader, mut writer) = tokio::io::split(stream);
        self.buf.clear();
        let mut next = first;
        loop {
            // Gather the batch in hand and whatever else is queued, up to a
            // chunk, into one write.
            let mut count = 0u64;
            while let Some(batch) = next.take() {
                if self.encode(&batch) {
                    count += 1;
                } else {
                    add(&self.context.metrics.dropped_unsendable, 1);
                }
                if self.buf.len() < WRITE_CHUNK {
                    next = batches.try_recv().ok();
                }
            }
            if !self.buf.is_empty() {
                // The flush pushes out what TLS may still buffer (a no-op
                // on plain TCP).
                let written = timeout(self.context.config.write_timeout, async {
                    writer.write_all(&self.buf).await?;
                    writer.flush().await
                })
                .await;
                let error = match written {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some("write timed out".to_owned()),
                };
                if let Some(error) = error {
                    add(&self.context.metrics.dropped_unsendable, count);
                    warn!(%node, %peer, %error, lost = count, "connection failed");
                    return End::Failed;
                }
                add(&self.context.metrics.batches_sent, count);
                self.buf.clear();
                if self.buf.capacity() > KEEP_BUFFER {
                    self.buf = BytesMut::new();
                }
            }
            // Wait for the next batch; meanwhile notice the peer closing
            // (it never sends anything on this connection) and address
            // changes.
            let mut probe = [0u8; 1];
            tokio::select! {
                batch = batches.recv() => match batch {
                    Some(batch) => next = Some(batch),
                    None => return End::Stopped,
                },
                read = reader.read(&mut probe) => {
                    match read {
                        Ok(0) => info!(%node, %peer, "peer closed the connection"),
                        Ok(_) => warn!(%node, %peer, "peer sent data on a send-only connection"),
                        Err(error) => info!(%node, %peer, %error, "connection failed"),
                    }
                    return End::Failed;
                }
                changed = address.changed() => {
                    return match changed {
                        Ok(()) => End::AddressChanged,
                        Err(_) => End::Stopped,
                    };
                }
            }
        }
    }

    /// Appends the frames of `batch` to the buffer: one frame, or several
    /// when the batch exceeds the frame limit (split in halves, order
    /// kept). Envelopes too large for any frame are dropped with a warning.
    /// Returns whether anything of the batch was encoded.
    fn encode(&mut self, batch: &[Envelope]) -> bool {
        match self.context.codec.encode_into(batch, &mut self.buf) {
            Ok(_) => true,
            Err(CodecError::TooLarge { .. }) if batch.len() > 1 => {
                let (a, b) = batch.split_at(batch.len() / 2);
                let first = self.encode(a);
                self.encode(b) || first
            }
            Err(error) => {
                let kind = batch.first().map_or("empty batch", |e| e.msg.kind());
                warn!(
                    node = %self.context.config.node_id,
                    peer = %self.peer,
                    %error,
                    kind,
                    "cannot send message; dropped"
                );
                false
            }
        }
    }
}
