//! The receiving side: accepts connections, checks who is calling, reads
//! frames from the control stream and from snapshot streams, and hands the
//! batches to the inbox.

use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use raft_api::codec::{FrameCodec, HELLO_LEN, Hello};
use raft_api::{Inbox, NodeId};
use rustls::pki_types::CertificateDer;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tracing::{debug, info, warn};

use crate::config::QuicConfig;
use crate::lock;
use crate::metrics::{Counters, add};
use crate::tls::node_id_of_certificate;

/// Application error code of a connection refused at its handshake
/// (certificate without a node id, bad hello).
pub(crate) const CLOSE_REJECTED: u32 = 1;

/// Application error code of a connection closed for a bad frame.
pub(crate) const CLOSE_BAD_FRAME: u32 = 2;

/// Largest piece read from a stream at once.
const READ_CHUNK: usize = 256 * 1024;

/// What the accepting side needs; shared by every connection.
pub(crate) struct Receiver {
    pub(crate) config: Arc<QuicConfig>,
    pub(crate) codec: FrameCodec,
    pub(crate) metrics: Arc<Counters>,
    pub(crate) inbox: Arc<dyn Inbox>,
    pub(crate) connections: Arc<Mutex<JoinSet<()>>>,
}

impl Receiver {
    /// Accepts connections until the endpoint closes, serving each on its
    /// own task.
    pub(crate) async fn accept_loop(self: Arc<Self>, endpoint: quinn::Endpoint) {
        while let Some(incoming) = endpoint.accept().await {
            let this = Arc::clone(&self);
            let mut connections = lock(&self.connections);
            // Reap finished connection tasks so the set stays small.
            while connections.try_join_next().is_some() {}
            connections.spawn(this.serve(incoming));
        }
        debug!(node = %self.config.node_id, "endpoint closed; no more connections");
    }

    /// Counts and logs a refused connection, and closes it if established.
    fn reject(&self, connection: Option<&quinn::Connection>, reason: &str) {
        add(&self.metrics.handshakes_rejected, 1);
        let remote = connection.map(quinn::Connection::remote_address);
        warn!(node = %self.config.node_id, ?remote, reason, "connection rejected");
        if let Some(connection) = connection {
            connection.close(CLOSE_REJECTED.into(), reason.as_bytes());
        }
    }

    /// One incoming connection: TLS handshake (the client's certificate
    /// must chain to the CA), node id from the certificate, hello on the
    /// first stream, then frames until the connection ends.
    async fn serve(self: Arc<Self>, incoming: quinn::Incoming) {
        let limit = self.config.handshake_timeout;
        let connection = match timeout(limit, incoming).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => {
                self.reject(None, &format!("TLS/QUIC handshake failed: {error}"));
                return;
            }
            Err(_) => {
                self.reject(None, "handshake timed out");
                return;
            }
        };
        let Some(peer) = certificate_node(&connection) else {
            self.reject(Some(&connection), "certificate names no node");
            return;
        };
        let hello = async {
            let mut control = connection.accept_uni().await.map_err(|e| e.to_string())?;
            let mut bytes = [0u8; HELLO_LEN];
            control
                .read_exact(&mut bytes)
                .await
                .map_err(|e| format!("no hello: {e}"))?;
            let hello = Hello::decode(&bytes).map_err(|e| format!("bad hello: {e}"))?;
            self.codec
                .check_hello(&hello)
                .map_err(|e| format!("bad hello: {e}"))?;
            Ok::<_, String>((hello, control))
        };
        let control = match timeout(limit, hello).await {
            Ok(Ok((hello, _))) if hello.node_id != peer => {
                self.reject(
                    Some(&connection),
                    &format!(
                        "hello names {} but the certificate is for {peer}",
                        hello.node_id
                    ),
                );
                return;
            }
            Ok(Ok((_, control))) => control,
            Ok(Err(error)) => {
                self.reject(Some(&connection), &error);
                return;
            }
            Err(_) => {
                self.reject(Some(&connection), "no hello in time");
                return;
            }
        };
        add(&self.metrics.connections_accepted, 1);
        info!(
            node = %self.config.node_id,
            %peer,
            remote = %connection.remote_address(),
            "accepted connection"
        );
        // The control stream and every snapshot stream, read concurrently;
        // dropping the set (when this task ends or is aborted) stops them.
        let mut streams = JoinSet::new();
        streams.spawn(Arc::clone(&self).read_stream(connection.clone(), peer, control));
        loop {
            tokio::select! {
                stream = connection.accept_uni() => match stream {
                    Ok(stream) => {
                        streams.spawn(
                            Arc::clone(&self).read_stream(connection.clone(), peer, stream),
                        );
                    }
                    Err(reason) => {
                        debug!(node = %self.config.node_id, %peer, %reason, "connection ended");
                        break;
                    }
                },
                Some(_) = streams.join_next() => {}
            }
        }
        streams.shutdown().await;
    }

    /// Reads frames from one stream of `peer` until it ends, delivering
    /// each batch. A bad frame, or an envelope not from `peer`, closes the
    /// connection.
    async fn read_stream(
        self: Arc<Self>,
        connection: quinn::Connection,
        peer: NodeId,
        mut stream: quinn::RecvStream,
    ) {
        let node = self.config.node_id;
        let mut buf = BytesMut::new();
        loop {
            loop {
                match self.codec.decode(&mut buf) {
                    Ok(Some(batch)) => {
                        if let Some(stray) = batch.iter().find(|e| e.from != peer) {
                            add(&self.metrics.decode_errors, 1);
                            warn!(
                                %node,
                                %peer,
                                claimed = %stray.from,
                                "envelope not from the connected node; closing"
                            );
                            connection.close(CLOSE_BAD_FRAME.into(), b"envelope from another node");
                            return;
                        }
                        add(&self.metrics.batches_received, 1);
                        self.inbox.deliver(peer, batch);
                    }
                    Ok(None) => break,
                    Err(error) => {
                        add(&self.metrics.decode_errors, 1);
                        warn!(%node, %peer, %error, "bad frame; closing the connection");
                        connection.close(CLOSE_BAD_FRAME.into(), b"bad frame");
                        return;
                    }
                }
            }
            match stream.read_chunk(READ_CHUNK, true).await {
                Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
                Ok(None) => {
                    if !buf.is_empty() {
                        add(&self.metrics.decode_errors, 1);
                        warn!(%node, %peer, left = buf.len(), "stream ended inside a frame");
                    }
                    return;
                }
                Err(error) => {
                    debug!(%node, %peer, %error, "stream ended");
                    return;
                }
            }
        }
    }
}

/// The node id named by the certificate the peer presented.
fn certificate_node(connection: &quinn::Connection) -> Option<NodeId> {
    let identity = connection.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    let leaf = chain.first()?;
    node_id_of_certificate(leaf.as_ref())
}
