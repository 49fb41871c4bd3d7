//! Opening a connection to a peer: TCP (`TCP_NODELAY`), the TLS handshake
//! when configured, then the two-way hello, all within
//! [`TcpConfig::connect_timeout`](crate::TcpConfig::connect_timeout).
//!
//! ```text
//!  dialling node                              accepting node
//!  ── TCP connect ──────────────────────────►
//!  ── TLS handshake (optional) ─────────────►  certificate of the CA naming node-<id>.raft
//!  ── Hello(cluster, my id, version) ───────►  checked: cluster, version (and certificate)
//!  ◄─────────────── Hello(cluster, its id, version)
//!  checked: cluster, version, the node meant (when known), the certificate
//!  ── frames ───────────────────────────────►
//! ```
//!
//! The answering hello tells the dialling node who is at the address: a
//! writer refuses another node than its peer (the address belongs to
//! someone else now), and a probe of an address learns the id from it.

use raft_api::NodeId;
use raft_api::codec::{CodecError, FrameCodec, HELLO_LEN, Hello};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use crate::config::TcpConfig;
use crate::tls::Tls;

/// A byte stream to a peer, plain or TLS.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An established connection, handshake done.
pub(crate) type Connection = Box<dyn Io>;

/// A connection to a node, with the id it answered with.
pub(crate) struct Dialed {
    pub(crate) connection: Connection,
    pub(crate) peer: NodeId,
}

/// Why a connection could not be established.
#[derive(Debug)]
pub(crate) enum DialError {
    /// Unreachable, refused, timed out, TLS failed, no or bad answering
    /// hello (another cluster or version, or a hello naming another node
    /// than the certificate).
    Failed(String),
    /// The address answered as another node than the one dialled.
    WrongNode {
        /// The node dialled.
        expected: NodeId,
        /// The node that answered.
        got: NodeId,
    },
}

impl std::fmt::Display for DialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DialError::Failed(error) => f.write_str(error),
            DialError::WrongNode { expected, got } => {
                write!(f, "{got} answered instead of {expected}")
            }
        }
    }
}

/// What dialling needs.
pub(crate) struct Dialer<'a> {
    pub(crate) config: &'a TcpConfig,
    pub(crate) codec: FrameCodec,
    pub(crate) tls: Option<&'a Tls>,
}

impl Dialer<'_> {
    /// Connects to `address` ("host:port") and exchanges hellos, expecting
    /// node `expected`, or any node of the cluster when `None`.
    pub(crate) async fn dial(
        &self,
        address: &str,
        expected: Option<NodeId>,
    ) -> Result<Dialed, DialError> {
        let deadline = Instant::now() + self.config.connect_timeout;
        let failed = |what: &str, error: &dyn std::fmt::Display| {
            DialError::Failed(format!("{what}: {error}"))
        };
        let stream = match timeout_at(deadline, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(failed("cannot connect", &error)),
            Err(_) => return Err(DialError::Failed("connect timed out".into())),
        };
        stream
            .set_nodelay(true)
            .map_err(|e| failed("cannot set TCP_NODELAY", &e))?;
        let Some(tls) = self.tls else {
            return self
                .exchange(Box::new(stream), expected, None, deadline)
                .await;
        };
        let stream = match timeout_at(deadline, tls.connect(expected, stream)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(failed("TLS handshake failed", &error)),
            Err(_) => return Err(DialError::Failed("TLS handshake timed out".into())),
        };
        let certified = Tls::server_node_id(&stream)
            .ok_or_else(|| DialError::Failed("the server certificate names no node".into()))?;
        if let Some(expected) = expected
            && certified != expected
        {
            return Err(DialError::WrongNode {
                expected,
                got: certified,
            });
        }
        self.exchange(Box::new(stream), expected, Some(certified), deadline)
            .await
    }

    /// Sends this node's hello and reads and checks the answer.
    async fn exchange(
        &self,
        mut stream: Connection,
        expected: Option<NodeId>,
        certified: Option<NodeId>,
        deadline: Instant,
    ) -> Result<Dialed, DialError> {
        let hello = Hello::new(self.config.cluster_id, self.config.node_id).encode();
        let sent = timeout_at(deadline, async {
            stream.write_all(&hello).await?;
            stream.flush().await
        });
        match sent.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(DialError::Failed(format!("cannot send hello: {error}"))),
            Err(_) => return Err(DialError::Failed("sending the hello timed out".into())),
        }
        let answer = read_hello(&mut stream, deadline)
            .await
            .map_err(|e| DialError::Failed(format!("answer: {e}")))?;
        self.codec
            .check_hello(&answer)
            .map_err(|e| DialError::Failed(format!("answer from {}: {e}", answer.node_id)))?;
        if let Some(certified) = certified
            && certified != answer.node_id
        {
            return Err(DialError::Failed(format!(
                "hello from {} over a certificate of {certified}",
                answer.node_id
            )));
        }
        if let Some(expected) = expected
            && expected != answer.node_id
        {
            return Err(DialError::WrongNode {
                expected,
                got: answer.node_id,
            });
        }
        Ok(Dialed {
            connection: stream,
            peer: answer.node_id,
        })
    }
}

/// Why no hello could be read.
#[derive(Debug)]
pub(crate) enum HelloError {
    /// None arrived before the deadline.
    Timeout,
    /// The connection failed or closed first.
    Io(std::io::Error),
    /// The bytes are not a hello.
    Bad(CodecError),
}

impl std::fmt::Display for HelloError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HelloError::Timeout => f.write_str("no hello within the timeout"),
            HelloError::Io(error) => write!(f, "no hello: {error}"),
            HelloError::Bad(error) => write!(f, "bad hello: {error}"),
        }
    }
}

/// Reads one [`Hello`] before `deadline` (not checked against the cluster:
/// see [`FrameCodec::check_hello`]). Reads exactly [`HELLO_LEN`] bytes,
/// never more.
pub(crate) async fn read_hello<S: AsyncRead + Unpin>(
    stream: &mut S,
    deadline: Instant,
) -> Result<Hello, HelloError> {
    let mut bytes = [0u8; HELLO_LEN];
    match timeout_at(deadline, stream.read_exact(&mut bytes)).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => return Err(HelloError::Io(error)),
        Err(_) => return Err(HelloError::Timeout),
    }
    Hello::decode(&bytes).map_err(HelloError::Bad)
}
