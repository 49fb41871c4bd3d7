//! The receiving side: the accept loop and one reader task per accepted
//! connection.
//!
//! A connection must open with a valid [`Hello`] within the handshake
//! timeout; then every frame it carries is decoded and its batch delivered
//! as coming from the node that said hello. Anything wrong (bad hello,
//! another cluster, garbage, an oversized or corrupt frame, an envelope
//! claiming another sender) closes that connection only.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use raft_api::codec::{CodecError, FrameCodec, HELLO_LEN, Hello};
use raft_api::{Inbox, NodeId};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tracing::{debug, info, warn};

use crate::config::TcpConfig;
use crate::lock;
use crate::metrics::{Counters, add};

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

    /// Serves one accepted connection until it ends or misbehaves.
    async fn serve(
        self: Arc<Self>,
        mut stream: TcpStream,
        remote: SocketAddr,
        _slot: OwnedSemaphorePermit,
    ) {
        let node = self.config.node_id;
        let from = match self.handshake(&mut stream).await {
            Ok(from) => from,
            Err(error) => {
                add(&self.metrics.handshakes_refused, 1);
                warn!(%node, %remote, %error, "refused connection");
                return;
            }
        };
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

    /// Reads and checks the peer's hello within the handshake timeout.
    async fn handshake(&self, stream: &mut TcpStream) -> Result<NodeId, String> {
        let mut hello = [0u8; HELLO_LEN];
        match timeout(self.config.handshake_timeout, stream.read_exact(&mut hello)).await {
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
    async fn read_frames(&self, stream: &mut TcpStream, from: NodeId) -> Result<(), ReadError> {
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
