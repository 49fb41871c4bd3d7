//! The hello each side sends first on its control stream, the first
//! unidirectional stream it opens on a connection.

use std::sync::Arc;

use raft_api::NodeId;
use raft_api::codec::{FrameCodec, HELLO_LEN, Hello};
use tokio::time::timeout;

use crate::close_code;
use crate::context::Context;

/// Opens this node's control stream on `connection` and sends its hello.
pub(crate) async fn open_control(
    connection: &quinn::Connection,
    cluster_id: u64,
    node: NodeId,
) -> Result<quinn::SendStream, quinn::WriteError> {
    let mut control = connection.open_uni().await?;
    control
        .write_all(&Hello::new(cluster_id, node).encode())
        .await?;
    Ok(control)
}

/// Why no valid hello was read.
#[derive(Debug)]
pub(crate) enum HelloError {
    /// The other side closed the connection before its hello because it
    /// does not need it ([`close_code::DUPLICATE`],
    /// [`close_code::OWN_ADDRESS`]): not a refusal.
    Withdrawn,
    /// The connection failed, or the hello is missing, malformed, or of
    /// another cluster or version.
    Failed(String),
}

impl std::fmt::Display for HelloError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HelloError::Withdrawn => f.write_str("closed by the other side before its hello"),
            HelloError::Failed(reason) => f.write_str(reason),
        }
    }
}

/// Sorts a connection error met while waiting for a hello.
fn lost(error: &quinn::ConnectionError) -> HelloError {
    match error {
        quinn::ConnectionError::ApplicationClosed(close)
            if [close_code::DUPLICATE, close_code::OWN_ADDRESS]
                .map(quinn::VarInt::from_u32)
                .contains(&close.error_code) =>
        {
            HelloError::Withdrawn
        }
        other => HelloError::Failed(format!("connection lost: {other}")),
    }
}

/// Accepts the other side's control stream on `connection` and reads its
/// hello, checked against `codec` (cluster, version). Returns the hello
/// and the stream, positioned at the first frame.
pub(crate) async fn read_hello(
    codec: &FrameCodec,
    connection: &quinn::Connection,
) -> Result<(Hello, quinn::RecvStream), HelloError> {
    let mut control = connection.accept_uni().await.map_err(|e| lost(&e))?;
    let mut bytes = [0u8; HELLO_LEN];
    control.read_exact(&mut bytes).await.map_err(|e| match e {
        quinn::ReadExactError::ReadError(quinn::ReadError::ConnectionLost(e)) => lost(&e),
        other => HelloError::Failed(format!("no hello: {other}")),
    })?;
    let hello = Hello::decode(&bytes).map_err(|e| HelloError::Failed(format!("bad hello: {e}")))?;
    codec
        .check_hello(&hello)
        .map_err(|e| HelloError::Failed(format!("bad hello: {e}")))?;
    Ok((hello, control))
}

/// A connection this node dialled whose other side answered its hello:
/// the streams to use.
pub(crate) struct Answered {
    /// This node's control stream (its hello sent).
    pub(crate) control: quinn::SendStream,
    /// The other side's control stream, after its hello.
    pub(crate) peer_control: quinn::RecvStream,
}

/// Why a dialled connection was not answered.
pub(crate) struct Unanswered {
    /// The code to close the connection with.
    pub(crate) code: u32,
    pub(crate) reason: String,
    /// The other side took this node's hello but closed the connection as
    /// a duplicate: the pair already has a connection.
    pub(crate) withdrawn: bool,
}

/// On `connection`, which this node dialled: sends this node's hello and
/// waits, within the handshake timeout, for the other side's answering
/// hello, which must be of this cluster and name `peer` (the node of the
/// certificate).
pub(crate) async fn exchange(
    context: Arc<Context>,
    connection: quinn::Connection,
    peer: NodeId,
) -> Result<Answered, Unanswered> {
    let failed = |code, reason| Unanswered {
        code,
        reason,
        withdrawn: false,
    };
    let work = async {
        let control = open_control(&connection, context.config.cluster_id, context.node())
            .await
            .map_err(|e| failed(close_code::NORMAL, format!("cannot send the hello: {e}")))?;
        let (hello, peer_control) = match read_hello(&context.codec, &connection).await {
            Ok(answer) => answer,
            Err(HelloError::Withdrawn) => {
                return Err(Unanswered {
                    code: close_code::NORMAL,
                    reason: "the peer already has a connection with this node".into(),
                    withdrawn: true,
                });
            }
            Err(HelloError::Failed(reason)) => {
                return Err(failed(close_code::REJECTED, format!("no answer: {reason}")));
            }
        };
        if hello.node_id != peer {
            return Err(failed(
                close_code::REJECTED,
                format!(
                    "the answer names {} but the certificate is for {peer}",
                    hello.node_id
                ),
            ));
        }
        Ok(Answered {
            control,
            peer_control,
        })
    };
    timeout(context.config.handshake_timeout, work)
        .await
        .unwrap_or_else(|_| {
            Err(failed(
                close_code::NORMAL,
                "no answer to the hello in time".into(),
            ))
        })
}
