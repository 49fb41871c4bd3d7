//! The receiving side: the accept loop and one reader task per accepted
//! connection.
//!
//! A connection must open with a valid [`Hello`] within the handshake
//! timeout; then every frame it carries is decoded and its batch delivered
//! as coming from the node that said hello. Anything wrong (bad hello,
//! another cluster, garbage, an oversized or corrupt frame, an envelope
//! claiming another sender) closes that connection only. With TLS, the
//! TLS handshake comes first (within the same timeout), and with mutual
//! TLS the hello must name the node of the client certificate.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use raft_api::codec::{CodecError, FrameCodec, HELLO_LEN, Hello};
use raft_api::{Inbox, NodeId};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout_at};
use tracing::{debug, info, warn};

use crate::config::TcpConfig;
use crate::lock;
use crate::metrics::{Counters, add};
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
        let Some(tls) = self.tls.clone() else {
            return self.serve_stream(stream, remote, None, deadline).await;
        };
        let _ = stream.set_nodelay(true);
        let stream = match timeout_at(deadline, tls.accept(stream)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                return self.refuse(remote, &format!("TLS handshake failed: {error}"));
            }
            Err(_) => {
                return self.refuse(remote, "no TLS handshake within the handshake timeout");
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

    /// Reads the hello (before `deadline`) then frames from `stream`,
    /// plain or TLS. With `certified`, the node id of the peer's
    /// certificate, the hello must name that node.
    async fn serve_stream<S: AsyncRead + Unpin>(
        &self,
        mut stream: S,
        remote: SocketAddr,
        certified: Option<NodeId>,
        deadline: Instant,
    ) {
        let node = self.config.node_id;
        let from = match self.handshake(&mut stream, deadline).await {
            Ok(from) => from,
            Err(error) => return self.refuse(remote, &error),
        };
        if let Some(certified) = certified
            && certified != from
        {
            return self.refuse(
                remote,
                &format!("hello from {from} over a certificate of {certified}"),
            );
        }
        add(&self.metrics.connections_accepted, 1);
        info!(%node, %remote, peer = %from, "accepted connection");
        match self.read_frames(&mut stream, from).await {
            Ok(()) => debug!(%node, peer = %from, "connection closed by peer"),
            Err(ReadError::Io(error)) => info!(%node, peer = %from, %error, "connection failed"),
            Err(ReadError::Truncated(pending)) => {
                info!(%node, peer = %from, pending, "connection closed in the middle of a frame");
            }
            Err(ReadError::Invalid(error)) => {
                add(&self.metrics.decode_errors, 1);
                warn!(%node, peer = %from, %remote, %error, "bad frame; closing the connection");
            }
        }
    }

    /// Reads and checks the peer's hello before `deadline` (the handshake
    /// timeout after the connection was accepted).
    async fn handshake<S: AsyncRead + Unpin>(
        &self,
        stream: &mut S,
        deadline: Instant,
    ) -> Result<NodeId, String> {
        let mut hello = [0u8; HELLO_LEN];
        match timeout_at(deadline, stream.read_exact(&mut hello)).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(format!("no hello: {error}")),
            Err(_) => return Err("no hello within the handshake timeout".into()),
        }
        let hello = Hello::decode(&hello).map_err(|e| format!("bad hello: {e}"))?;
        self.codec
            .check_hello(&hello)
            .map_err(|e| format!("hello from {}: {e}", hello.node_id))?;
        Ok(hello.node_id)
    }

    /// Delivers the batches of every frame until the peer closes the
    /// connection or sends something invalid.
    async fn read_frames<S: AsyncRead + Unpin>(
        &self,
        stream: &mut S,
        from: NodeId,
    ) -> Result<(), ReadError> {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        loop {
            while let Some(batch) = self.codec.decode(&mut buf).map_err(ReadError::Invalid)? {
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
            match stream.read_buf(&mut buf).await {
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
    /// The peer sent something invalid.
    Invalid(CodecError),
}
