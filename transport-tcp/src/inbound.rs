//! The receiving side: the accept loop and one reader task per accepted
//! connection.
//!
//! A connection must open with a valid [`Hello`] within the handshake
//! timeout; once accepted, this node answers with its own hello (so the
//! dialling node learns or checks who it reached), then every frame the
//! connection carries is decoded and its batch delivered as coming from
//! the node that said hello. Anything wrong (bad hello, another cluster,
//! garbage, an oversized or corrupt frame, an envelope claiming another
//! sender) closes that connection only. With TLS, the TLS handshake comes
//! first (within the same timeout), and with mutual TLS the hello must
//! name the node of the client certificate.
//!
//! Memory held per connection follows the bytes actually received: the
//! header of a frame is checked as soon as it arrives (length within the
//! limit), but room for the payload is not reserved in advance; and a
//! connection that stops in the middle of a frame for
//! [`TcpConfig::frame_idle_timeout`] is closed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use raft_api::codec::{CodecError, FrameCodec, Hello};
use raft_api::{Inbox, NodeId};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout, timeout_at};
use tracing::{debug, info, warn};
use transport_util::{Counters, add};

use crate::config::TcpConfig;
use crate::dial::{HelloError, read_hello};
use crate::lock;
use crate::tls::Tls;

/// Free space kept in a connection's read buffer before each read.
const READ_CHUNK: usize = 64 * 1024;

/// Pause after a failed `accept` (for example out of file descriptors), so
/// the loop does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// What the accept loop and its connections share.
pub(crate) struct Receiver {
    pub(crate) config: Arc<TcpConfig>,
    pub(crate) codec: FrameCodec,
    pub(crate) metrics: Arc<Counters>,
    pub(crate) inbox: Arc<dyn Inbox>,
    /// One permit per connection served.
    pub(crate) slots: Arc<Semaphore>,
    /// The tasks of the accepted connections; aborted on shutdown.
    pub(crate) connections: Arc<Mutex<JoinSet<()>>>,
    /// TLS for every accepted connection, if configured.
    pub(crate) tls: Option<Arc<Tls>>,
}

impl Receiver {
    /// Accepts connections until the task is aborted.
    pub(crate) async fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        let node = self.config.node_id;
        loop {
            let (stream, remote) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%node, %error, "accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() else {
                add(&self.metrics.handshakes_refused, 1);
                warn!(%node, %remote, "too many connections; closing the new one");
                continue;
            };
            let mut connections = lock(&self.connections);
            // Forget the connections that ended.
            while connections.try_join_next().is_some() {}
            connections.spawn(Arc::clone(&self).serve(stream, remote, permit));
        }
    }

    /// Serves one accepted connection until it ends or misbehaves: first
    /// the TLS handshake (with TLS), then the hello, then frames.
    async fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        remote: SocketAddr,
        _slot: OwnedSemaphorePermit,
    ) {
        let deadline = Instant::now() + self.config.handshake_timeout;
        // The answering hello goes out at once.
        let _ = stream.set_nodelay(true);
        let Some(tls) = self.tls.clone() else {
            return self.serve_stream(stream, remote, None, deadline).await;
        };
        let stream = match timeout_at(deadline, tls.accept(stream)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                return self.refuse(remote, &format!("TLS handshake failed: {error}"));
            }
            Err(_) => {
                return self.refuse_late(remote, "no TLS handshake within the handshake timeout");
            }
        };
        let certified = if tls.mutual {
            match Tls::peer_node_id(&stream) {
                Some(id) => Some(id),
                None => {
                    return self.refuse(
                        remote,
                        "the client certificate names no node (DNS name node-<id>.raft)",
                    );
                }
            }
        } else {
            None
        };
        self.serve_stream(stream, remote, certified, deadline).await;
    }

    /// Counts and logs a refused connection.
    fn refuse(&self, remote: SocketAddr, error: &str) {
        add(&self.metrics.handshakes_refused, 1);
        warn!(node = %self.config.node_id, %remote, %error, "refused connection");
    }

    /// Counts and logs a connection refused for not completing its
    /// handshake in time.
    fn refuse_late(&self, remote: SocketAddr, error: &str) {
        add(&self.metrics.handshake_timeouts, 1);
        self.refuse(remote, error);
    }

    /// Reads the hello (before `deadline`), answers it, then reads frames
    /// from `stream`, plain or TLS. With `certified`, the node id of the
    /// peer's certificate, the hello must name that node.
    async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
        remote: SocketAddr,
        certified: Option<NodeId>,
        deadline: Instant,
    ) {
        let node = self.config.node_id;
        let from = match read_hello(&mut stream, deadline).await {
            Ok(hello) => match self.codec.check_hello(&hello) {
                Ok(()) => hello.node_id,
                Err(error) => {
                    return self.refuse(remote, &format!("hello from {}: {error}", hello.node_id));
                }
            },
            Err(HelloError::Timeout) => {
                return self.refuse_late(remote, "no hello within the handshake timeout");
            }
            Err(error) => return self.refuse(remote, &error.to_string()),
        };
        if let Some(certified) = certified
            && certified != from
        {
            return self.refuse(
                remote,
                &format!("hello from {from} over a certificate of {certified}"),
            );
        }
        // The answer: who this node is, within the same deadline.
        let answer = Hello::new(self.config.cluster_id, node).encode();
        let answered = timeout_at(deadline, async {
            stream.write_all(&answer).await?;
            stream.flush().await
        });
        match answered.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                return self.refuse(remote, &format!("cannot answer the hello: {error}"));
            }
            Err(_) => {
                return self.refuse_late(remote, "answering the hello timed out");
            }
        }
        add(&self.metrics.connections_accepted, 1);
        info!(%node, %remote, peer = %from, "accepted connection");
        match self.read_frames(&mut stream, from).await {
            Ok(()) => debug!(%node, peer = %from, "connection closed by peer"),
            Err(ReadError::Io(error)) => info!(%node, peer = %from, %error, "connection failed"),
            Err(ReadError::Truncated(pending)) => {
                info!(%node, peer = %from, pending, "connection closed in the middle of a frame");
            }
            Err(ReadError::Idle(pending)) => {
                add(&self.metrics.idle_timeouts, 1);
                warn!(
                    %node,
                    peer = %from,
                    %remote,
                    pending,
                    timeout = ?self.config.frame_idle_timeout,
                    "no byte in the middle of a frame for too long; closing the connection"
                );
            }
            Err(ReadError::Invalid(error)) => {
                add(&self.metrics.decode_errors, 1);
                warn!(%node, peer = %from, %remote, %error, "bad frame; closing the connection");
            }
        }
    }

    /// Delivers the batches of every frame until the peer closes the
    /// connection, sends something invalid, or stops in the middle of a
    /// frame for the frame idle timeout.
    async fn read_frames<S: AsyncRead + Unpin>(
        &self,
        stream: &mut S,
        from: NodeId,
    ) -> Result<(), ReadError> {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        loop {
            // Every whole frame in the buffer. The header of a partial one
            // is checked as soon as it is there; its payload is awaited
            // without reserving room for it in advance (`decode` would).
            while let Some(header) = self.codec.check_header(&buf).map_err(ReadError::Invalid)?
                && buf.len() >= header.frame_len()
            {
                let Some(batch) = self.codec.decode(&mut buf).map_err(ReadError::Invalid)? else {
                    break;
                };
                if let Some(stranger) = batch.iter().find(|e| e.from != from) {
                    return Err(ReadError::Invalid(CodecError::Malformed(format!(
                        "envelope from {} on the connection of {from}",
                        stranger.from
                    ))));
                }
                add(&self.metrics.batches_received, 1);
                self.inbox.deliver(from, batch);
            }
            buf.reserve(READ_CHUNK);
            let read = if buf.is_empty() {
                // Between frames: a quiet peer is fine.
                stream.read_buf(&mut buf).await
            } else {
                match timeout(self.config.frame_idle_timeout, stream.read_buf(&mut buf)).await {
                    Ok(read) => read,
                    Err(_) => return Err(ReadError::Idle(buf.len())),
                }
            };
            match read {
                Ok(0) if buf.is_empty() => return Ok(()),
                Ok(0) => return Err(ReadError::Truncated(buf.len())),
                Ok(_) => {}
                Err(error) => return Err(ReadError::Io(error)),
            }
        }
    }
}

/// Why a connection stopped being read.
enum ReadError {
    /// The socket failed.
    Io(std::io::Error),
    /// The peer closed with this many bytes of an incomplete frame pending.
    Truncated(usize),
    /// The peer sent nothing for the frame idle timeout with this many
    /// bytes of an incomplete frame pending.
    Idle(usize),
    /// The peer sent something invalid.
    Invalid(CodecError),
}
