//! The receiving side: accepts connections, checks who is calling, hands
//! each accepted connection to its peer's link, and reads frames from the
//! other side's control stream and snapshot streams of every connection
//! (accepted or dialled), handing the batches to the inbox.

use std::sync::Arc;

use bytes::BytesMut;
use raft_api::NodeId;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tracing::{debug, info, warn};

use crate::close_code;
use crate::context::Context;
use crate::hello::{HelloError, read_hello};
use crate::link::LinkEvent;
use crate::metrics::add;
use crate::tls::peer_node;

/// Largest piece read from a stream at once.
const READ_CHUNK: usize = 256 * 1024;

/// Accepts connections until the endpoint closes, serving each on its own
/// task.
pub(crate) async fn accept_loop(context: Arc<Context>) {
    while let Some(incoming) = context.endpoint.accept().await {
        context.spawn_task(serve(Arc::clone(&context), incoming));
    }
    debug!(node = %context.node(), "endpoint closed; no more connections");
}

/// Counts and logs a refused connection, and closes it if established.
fn reject(context: &Context, connection: Option<&quinn::Connection>, reason: &str) {
    add(&context.metrics.handshakes_rejected, 1);
    let remote = connection.map(quinn::Connection::remote_address);
    warn!(node = %context.node(), ?remote, reason, "connection rejected");
    if let Some(connection) = connection {
        connection.close(close_code::REJECTED.into(), reason.as_bytes());
    }
}

/// One incoming connection: TLS handshake (the client's certificate must
/// chain to the CA), node id from the certificate, hello on the first
/// stream naming that node; then the peer's link decides whether the pair
/// uses it, and this task reads it until it ends.
async fn serve(context: Arc<Context>, incoming: quinn::Incoming) {
    let limit = context.config.handshake_timeout;
    let connection = match timeout(limit, incoming).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => {
            reject(
                &context,
                None,
                &format!("TLS/QUIC handshake failed: {error}"),
            );
            return;
        }
        Err(_) => {
            reject(&context, None, "handshake timed out");
            return;
        }
    };
    let Some(peer) = peer_node(&connection) else {
        reject(&context, Some(&connection), "certificate names no node");
        return;
    };
    let control = match timeout(limit, read_hello(&context.codec, &connection)).await {
        Ok(Ok((hello, _))) if hello.node_id != peer => {
            reject(
                &context,
                Some(&connection),
                &format!(
                    "hello names {} but the certificate is for {peer}",
                    hello.node_id
                ),
            );
            return;
        }
        Ok(Ok(_)) if peer == context.node() => {
            reject(&context, Some(&connection), "a connection from this node");
            return;
        }
        Ok(Ok((_, control))) => control,
        Ok(Err(HelloError::Withdrawn)) => {
            debug!(node = %context.node(), %peer, "caller closed the connection before its hello");
            return;
        }
        Ok(Err(error)) => {
            reject(&context, Some(&connection), &error.to_string());
            return;
        }
        Err(_) => {
            reject(&context, Some(&connection), "no hello in time");
            return;
        }
    };
    add(&context.metrics.connections_accepted, 1);
    info!(
        node = %context.node(),
        %peer,
        remote = %connection.remote_address(),
        "accepted connection"
    );
    context.peers.offer(
        &context,
        peer,
        &connection,
        LinkEvent::Accepted(connection.clone()),
    );
    read_connection(context, connection, peer, control).await;
}

/// On a connection this node dialled and writes on before the answer (see
/// the `link` module): waits, within the handshake timeout, for the
/// peer's answering hello, which must be of this cluster and name `peer`,
/// then reads the connection. A missing or wrong answer closes it.
pub(crate) async fn read_answered(
    context: Arc<Context>,
    connection: quinn::Connection,
    peer: NodeId,
) {
    let limit = context.config.handshake_timeout;
    let refusal = match timeout(limit, read_hello(&context.codec, &connection)).await {
        Ok(Ok((hello, control))) if hello.node_id == peer => {
            debug!(node = %context.node(), %peer, "peer answered");
            read_connection(context, connection, peer, control).await;
            return;
        }
        Ok(Ok((hello, _))) => (
            close_code::REJECTED,
            format!(
                "the answer names {} but the certificate is for {peer}",
                hello.node_id
            ),
        ),
        Ok(Err(HelloError::Withdrawn)) => {
            debug!(node = %context.node(), %peer, "peer closed the connection as not needed");
            return;
        }
        Ok(Err(HelloError::Failed(_))) if connection.close_reason().is_some() => {
            // Closed meanwhile (by either side): the link sees it too.
            debug!(node = %context.node(), %peer, "connection closed before the answer");
            return;
        }
        Ok(Err(HelloError::Failed(reason))) => {
            (close_code::REJECTED, format!("no answer: {reason}"))
        }
        Err(_) => (
            close_code::NORMAL,
            "no answer to the hello in time".to_owned(),
        ),
    };
    add(&context.metrics.connect_failures, 1);
    warn!(node = %context.node(), %peer, reason = %refusal.1, "connection refused");
    connection.close(refusal.0.into(), refusal.1.as_bytes());
}

/// Reads the other side's control stream (positioned after its hello) and
/// every stream it opens later, concurrently, until `connection` ends.
pub(crate) async fn read_connection(
    context: Arc<Context>,
    connection: quinn::Connection,
    peer: NodeId,
    control: quinn::RecvStream,
) {
    // Dropping the set (when this task ends or is aborted) stops them.
    let mut streams = JoinSet::new();
    streams.spawn(read_stream(
        Arc::clone(&context),
        connection.clone(),
        peer,
        control,
    ));
    loop {
        tokio::select! {
            stream = connection.accept_uni() => match stream {
                Ok(stream) => {
                    streams.spawn(read_stream(
                        Arc::clone(&context),
                        connection.clone(),
                        peer,
                        stream,
                    ));
                }
                Err(reason) => {
                    debug!(node = %context.node(), %peer, %reason, "connection ended");
                    break;
                }
            },
            Some(_) = streams.join_next() => {}
        }
    }
    streams.shutdown().await;
}

/// Reads frames from one stream of `peer` until it ends, delivering each
/// batch. A bad frame, or an envelope not from `peer`, closes the
/// connection.
async fn read_stream(
    context: Arc<Context>,
    connection: quinn::Connection,
    peer: NodeId,
    mut stream: quinn::RecvStream,
) {
    let node = context.node();
    let mut buf = BytesMut::new();
    loop {
        loop {
            match context.codec.decode(&mut buf) {
                Ok(Some(batch)) => {
                    if let Some(stray) = batch.iter().find(|e| e.from != peer) {
                        add(&context.metrics.decode_errors, 1);
                        warn!(
                            %node,
                            %peer,
                            claimed = %stray.from,
                            "envelope not from the connected node; closing"
                        );
                        connection
                            .close(close_code::BAD_FRAME.into(), b"envelope from another node");
                        return;
                    }
                    add(&context.metrics.batches_received, 1);
                    context.inbox.deliver(peer, batch);
                }
                Ok(None) => break,
                Err(error) => {
                    add(&context.metrics.decode_errors, 1);
                    warn!(%node, %peer, %error, "bad frame; closing the connection");
                    connection.close(close_code::BAD_FRAME.into(), b"bad frame");
                    return;
                }
            }
        }
        match stream.read_chunk(READ_CHUNK, true).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            Ok(None) => {
                if !buf.is_empty() {
                    add(&context.metrics.decode_errors, 1);
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
