//! The sending side: one writer task per peer, fed by a bounded queue,
//! owning at most one outgoing connection to that peer.
//!
//! ```text
//! send ──try_send──► queue (bounded) ──► writer task ──► control stream (hello, frames)
//!          │ full: drop + count           │ batch with a snapshot chunk:
//!                                          └──► snapshot task ──► a new uni stream each
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use transport_util::Backoff;

use bytes::BytesMut;
use raft_api::codec::{CodecError, FrameCodec, Hello};
use raft_api::{Envelope, Message, NodeId};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tracing::{debug, info, warn};

use crate::config::QuicConfig;
use crate::metrics::{Counters, add};
use crate::tls::node_server_name;

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

/// Application error code of a connection closed normally.
pub(crate) const CLOSE_NORMAL: u32 = 0;

/// What a writer task needs; shared by all writers of a transport.
pub(crate) struct WriterContext {
    pub(crate) config: Arc<QuicConfig>,
    pub(crate) codec: FrameCodec,
    pub(crate) metrics: Arc<Counters>,
    pub(crate) endpoint: quinn::Endpoint,
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

impl Writer {
    /// Starts the writer of `peer` on `runtime`, reading the peer's address
    /// from `address` (updates close the connection and reconnect).
    pub(crate) fn spawn(
        context: &Arc<WriterContext>,
        peer: NodeId,
        address: watch::Receiver<String>,
        runtime: &tokio::runtime::Handle,
    ) -> Self {
        let (queue, batches) = mpsc::channel(context.config.queue_capacity);
        let task = runtime.spawn(run(Arc::clone(context), peer, batches, address));
        Self { queue, task }
    }

    /// Batches waiting in the queue.
    pub(crate) fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
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

/// Whether `batch` carries a snapshot chunk, and so goes on its own stream.
fn has_snapshot(batch: &[Envelope]) -> bool {
    batch.iter().any(|e| matches!(e.msg, Message::Snapshot(_)))
}

/// The writer task of one peer: connects when there is something to send,
/// writes until the connection fails, backs off, reconnects.
async fn run(
    context: Arc<WriterContext>,
    peer: NodeId,
    mut batches: mpsc::Receiver<Vec<Envelope>>,
    mut address: watch::Receiver<String>,
) {
    let node = context.config.node_id;
    let mut backoff = Backoff::new(
        context.config.backoff_min,
        context.config.backoff_max,
        node,
        peer,
    );
    loop {
        // Connect only when there is something to send.
        let Some(first) = batches.recv().await else {
            return;
        };
        let target = address.borrow_and_update().clone();
        let connection = match connect(&context, peer, &target).await {
            Ok(connection) => connection,
            Err(error) => {
                add(&context.metrics.connect_failures, 1);
                let delay = backoff.next_delay();
                warn!(%node, %peer, address = %target, %error, ?delay, "cannot connect");
                // The batch in hand is dropped: it would be stale by then.
                add(&context.metrics.dropped_unsendable, 1);
                if sleep_or_address_change(delay, &mut address).await.is_err() {
                    return;
                }
                continue;
            }
        };
        add(&context.metrics.connections_opened, 1);
        info!(%node, %peer, address = %target, "connected");
        let since = Instant::now();
        let end = serve(
            &context,
            peer,
            &connection,
            first,
            &mut batches,
            &mut address,
        )
        .await;
        connection.close(CLOSE_NORMAL.into(), b"reconnecting");
        if since.elapsed() >= HEALTHY_SESSION {
            backoff.reset();
        }
        match end {
            End::Stopped => return,
            End::AddressChanged => info!(%node, %peer, "address changed; reconnecting"),
            End::Failed => {
                let delay = backoff.next_delay();
                if sleep_or_address_change(delay, &mut address).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Resolves `address` ("host:port"), preferring an address of the local
/// endpoint's family, and connects to it as `node-<peer>.raft`, within the
/// handshake timeout.
async fn connect(
    context: &WriterContext,
    peer: NodeId,
    address: &str,
) -> Result<quinn::Connection, String> {
    let limit = context.config.handshake_timeout;
    let resolved: Vec<SocketAddr> = timeout(limit, tokio::net::lookup_host(address))
        .await
        .map_err(|_| "address resolution timed out".to_owned())?
        .map_err(|e| format!("cannot resolve: {e}"))?
        .collect();
    let ipv6 = context
        .endpoint
        .local_addr()
        .map(|a| a.is_ipv6())
        .unwrap_or(false);
    let target = resolved
        .iter()
        .find(|a| a.is_ipv6() == ipv6)
        .or(resolved.first())
        .copied()
        .ok_or_else(|| "address resolves to nothing".to_owned())?;
    let connecting = context
        .endpoint
        .connect(target, &node_server_name(peer))
        .map_err(|e| e.to_string())?;
    timeout(limit, connecting)
        .await
        .map_err(|_| "handshake timed out".to_owned())?
        .map_err(|e| e.to_string())
}

/// Sleeps for `delay`, cut short by a new address. Fails when the peer was
/// dropped (the address sender is gone).
async fn sleep_or_address_change(
    delay: Duration,
    address: &mut watch::Receiver<String>,
) -> Result<(), ()> {
    tokio::select! {
        () = tokio::time::sleep(delay) => Ok(()),
        changed = address.changed() => changed.map_err(|_| ()),
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Opens the control stream, sends the hello, then `first` and every batch
/// that follows, until the connection fails, the address changes or the
/// peer is dropped. Batches with a snapshot chunk go to a companion task
/// that sends each on a new stream.
async fn serve(
    context: &Arc<WriterContext>,
    peer: NodeId,
    connection: &quinn::Connection,
    first: Vec<Envelope>,
    batches: &mut mpsc::Receiver<Vec<Envelope>>,
    address: &mut watch::Receiver<String>,
) -> End {
    let node = context.config.node_id;
    let write_limit = context.config.idle_timeout;
    let hello = Hello::new(context.config.cluster_id, node).encode();
    let opened = async {
        let mut control = connection.open_uni().await?;
        control.write_all(&hello).await?;
        Ok::<_, quinn::WriteError>(control)
    };
    let mut control = match timeout(context.config.handshake_timeout, opened).await {
        Ok(Ok(control)) => control,
        Ok(Err(error)) => {
            add(&context.metrics.dropped_unsendable, 1);
            warn!(%node, %peer, %error, "cannot open the control stream");
            return End::Failed;
        }
        Err(_) => {
            add(&context.metrics.dropped_unsendable, 1);
            warn!(%node, %peer, "opening the control stream timed out");
            return End::Failed;
        }
    };
    let (snapshots, snapshot_queue) = mpsc::channel(SNAPSHOT_QUEUE);
    let _snapshot_task = AbortOnDrop(tokio::spawn(send_snapshots(
        Arc::clone(context),
        peer,
        connection.clone(),
        snapshot_queue,
    )));
    let mut buf = BytesMut::new();
    let mut next = Some(first);
    loop {
        // Gather the batch in hand and whatever else is queued, up to a
        // chunk, into one write.
        let mut count = 0u64;
        while let Some(batch) = next.take() {
            if has_snapshot(&batch) {
                if snapshots.try_send(batch).is_err() {
                    add(&context.metrics.dropped_unsendable, 1);
                    warn!(%node, %peer, "snapshot streams backlogged; batch dropped");
                }
            } else if encode(context, peer, &batch, &mut buf) {
                count += 1;
            } else {
                add(&context.metrics.dropped_unsendable, 1);
            }
            if buf.len() < WRITE_CHUNK {
                next = batches.try_recv().ok();
            }
        }
        if !buf.is_empty() {
            let error = match timeout(write_limit, control.write_all(&buf)).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("write made no progress".to_owned()),
            };
            if let Some(error) = error {
                add(&context.metrics.dropped_unsendable, count);
                warn!(%node, %peer, %error, lost = count, "connection failed");
                return End::Failed;
            }
            add(&context.metrics.batches_sent, count);
            buf.clear();
            if buf.capacity() > KEEP_BUFFER {
                buf = BytesMut::new();
            }
        }
        tokio::select! {
            batch = batches.recv() => match batch {
                Some(batch) => next = Some(batch),
                None => return End::Stopped,
            },
            reason = connection.closed() => {
                info!(%node, %peer, %reason, "connection closed");
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

/// Sends each batch of `queue` on a new unidirectional stream of
/// `connection`, one after the other, so snapshot chunks keep their order
/// and never hold up the control stream.
async fn send_snapshots(
    context: Arc<WriterContext>,
    peer: NodeId,
    connection: quinn::Connection,
    mut queue: mpsc::Receiver<Vec<Envelope>>,
) {
    let node = context.config.node_id;
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
fn encode(context: &WriterContext, peer: NodeId, batch: &[Envelope], buf: &mut BytesMut) -> bool {
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
                node = %context.config.node_id,
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
        let chunk = Message::Snapshot(SnapshotChunk {
            meta: Default::default(),
            total: 1,
            offset: 0,
            data: bytes::Bytes::from_static(b"x"),
            stream: 1,
        });
        assert!(!has_snapshot(&[envelope(Message::TimeoutNow)]));
        assert!(has_snapshot(&[
            envelope(Message::TimeoutNow),
            envelope(chunk)
        ]));
    }
}
