//! The wire format shared by the network transports: a connection starts
//! with a [`Hello`], then carries frames, each holding one batch of
//! [`Envelope`]s.
//!
//! # Frame layout
//!
//! All integers are big-endian.
//!
//! | bytes | field                                        |
//! |-------|----------------------------------------------|
//! | 4     | magic, [`FRAME_MAGIC`] (`b"RAFT"`)           |
//! | 2     | protocol version, [`PROTOCOL_VERSION`]       |
//! | 8     | cluster id                                   |
//! | 4     | payload length in bytes                      |
//! | 4     | CRC-32 (IEEE) of the payload                 |
//! | len   | payload: the batch, `Vec<Envelope>` in postcard |
//!
//! The header is [`HEADER_LEN`] bytes. A [`FrameCodec`] refuses frames
//! longer than its maximum (header included), from another cluster or of
//! another version, and it checks all of that **before** it waits for the
//! payload, so a peer cannot make a receiver buffer more than the maximum.
//! Decoding never panics, whatever the input: a bad frame is a
//! [`CodecError`], and the connection it came from should be closed (after
//! an error the framing of the stream cannot be trusted).
//!
//! # Handshake
//!
//! The first [`HELLO_LEN`] bytes a connecting node sends are a [`Hello`]:
//! magic [`HELLO_MAGIC`] (`b"RAFH"`), version (u16), cluster id (u64) and the
//! sender's node id (u64). The receiver checks it with
//! [`FrameCodec::check_hello`] and attributes every batch of the connection
//! to that node.
//!
//! Once it has accepted the caller's hello, the accepting node answers with
//! its own [`Hello`] (same layout: its cluster id, its node id, its
//! version), so the caller learns or checks which node it reached and
//! checks the answer with [`FrameCodec::check_hello`] too. A refused hello
//! gets no answer: the connection is closed.
//!
//! ```
//! use bytes::BytesMut;
//! use raft_api::codec::{FrameCodec, Hello};
//! use raft_api::{Envelope, GroupId, Message, NodeId, Term};
//!
//! let codec = FrameCodec::new(7, 1 << 20);
//! let batch = vec![Envelope {
//!     group: GroupId(1),
//!     from: NodeId(1),
//!     to: NodeId(2),
//!     term: Term(3),
//!     msg: Message::TimeoutNow,
//! }];
//!
//! // The sender: a hello, then frames.
//! let mut wire = BytesMut::new();
//! wire.extend_from_slice(&Hello::new(7, NodeId(1)).encode());
//! wire.extend_from_slice(&codec.encode(&batch)?);
//!
//! // The receiver, as bytes arrive.
//! let hello = Hello::decode(&wire.split_to(raft_api::codec::HELLO_LEN))?;
//! codec.check_hello(&hello)?;
//! assert_eq!(hello.node_id, NodeId(1));
//! let mut partial = wire.split_to(5);
//! assert_eq!(codec.decode(&mut partial)?, None, "incomplete: wait for more");
//! partial.extend_from_slice(&wire);
//! assert_eq!(codec.decode(&mut partial)?, Some(batch));
//! assert!(partial.is_empty(), "exactly one frame was consumed");
//! # Ok::<(), raft_api::codec::CodecError>(())
//! ```

use bytes::{Bytes, BytesMut};

use crate::message::Envelope;
use crate::types::NodeId;

/// First four bytes of every frame.
pub const FRAME_MAGIC: [u8; 4] = *b"RAFT";

/// First four bytes of a [`Hello`].
pub const HELLO_MAGIC: [u8; 4] = *b"RAFH";

/// The protocol version this code speaks, in every frame and hello.
///
/// - 1: the dialling node sends a [`Hello`]; nothing answers it.
/// - 2: the accepting node answers a valid [`Hello`] with its own, which
///   the dialling node waits for. A node of version 1 would take that
///   answer for a frame, so the two refuse each other by version instead.
pub const PROTOCOL_VERSION: u16 = 2;

/// Size of a frame header in bytes.
pub const HEADER_LEN: usize = 4 + 2 + 8 + 4 + 4;

/// Size of an encoded [`Hello`] in bytes.
pub const HELLO_LEN: usize = 4 + 2 + 8 + 8;

/// A maximum frame size that suits most deployments: 16 MiB, well above
/// the default append and snapshot chunk sizes (1 MiB each).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Why bytes could not be encoded or decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The bytes do not start with the expected magic: not this protocol.
    #[error("bad magic: not a Raft frame or hello")]
    BadMagic,
    /// The peer speaks another version of the protocol.
    #[error("unsupported protocol version {got} (this node speaks {supported})")]
    UnsupportedVersion {
        /// Version found.
        got: u16,
        /// Version this code speaks.
        supported: u16,
    },
    /// The peer belongs to another cluster.
    #[error("frame of cluster {got}, expected cluster {expected}")]
    WrongCluster {
        /// This node's cluster id.
        expected: u64,
        /// Cluster id found.
        got: u64,
    },
    /// The frame is longer than the configured maximum (lengths count the
    /// header).
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Length of the frame, header included.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The payload does not match its CRC-32: corrupted in transit.
    #[error("frame payload fails its checksum")]
    Checksum,
    /// The bytes are not a valid encoding.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// The fixed header in front of every frame's payload.
///
/// [`FrameCodec`] builds and checks headers itself; this type is public for
/// tools and tests that need to craft frames by hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Protocol version of the frame.
    pub version: u16,
    /// Cluster the frame belongs to.
    pub cluster_id: u64,
    /// Length of the payload in bytes (header not included).
    pub payload_len: u32,
    /// CRC-32 (IEEE) of the payload.
    pub crc: u32,
}

impl FrameHeader {
    /// The header's [`HEADER_LEN`] bytes, magic first.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let mut w = Writer(&mut out);
        w.put(&FRAME_MAGIC);
        w.put(&self.version.to_be_bytes());
        w.put(&self.cluster_id.to_be_bytes());
        w.put(&self.payload_len.to_be_bytes());
        w.put(&self.crc.to_be_bytes());
        out
    }

    /// Reads a header from the start of `bytes`. Returns `Ok(None)` when
    /// fewer than [`HEADER_LEN`] bytes are there, and
    /// [`CodecError::BadMagic`] as soon as the bytes present contradict the
    /// magic. Does not check version, cluster or length: that is
    /// [`FrameCodec::decode`]'s job.
    pub fn parse(bytes: &[u8]) -> Result<Option<Self>, CodecError> {
        check_magic(bytes, &FRAME_MAGIC)?;
        let Some(header) = bytes.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let mut r = Reader(header);
        r.skip(FRAME_MAGIC.len())?;
        Ok(Some(Self {
            version: u16::from_be_bytes(r.array()?),
            cluster_id: u64::from_be_bytes(r.array()?),
            payload_len: u32::from_be_bytes(r.array()?),
            crc: u32::from_be_bytes(r.array()?),
        }))
    }

    /// Length of the whole frame this header starts, header included.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN.saturating_add(usize::try_from(self.payload_len).unwrap_or(usize::MAX))
    }
}

/// The first message on a connection: who is calling, from which cluster,
/// speaking which version. Fixed layout of [`HELLO_LEN`] bytes (see the
/// [module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Hello {
    /// The caller's cluster.
    pub cluster_id: u64,
    /// The calling node; every batch on the connection comes from it.
    pub node_id: NodeId,
    /// The caller's protocol version.
    pub version: u16,
}

impl Hello {
    /// A hello of this code's [`PROTOCOL_VERSION`].
    pub const fn new(cluster_id: u64, node_id: NodeId) -> Self {
        Self {
            cluster_id,
            node_id,
            version: PROTOCOL_VERSION,
        }
    }

    /// The hello's [`HELLO_LEN`] bytes.
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut out = [0u8; HELLO_LEN];
        let mut w = Writer(&mut out);
        w.put(&HELLO_MAGIC);
        w.put(&self.version.to_be_bytes());
        w.put(&self.cluster_id.to_be_bytes());
        w.put(&self.node_id.0.to_be_bytes());
        out
    }

    /// Reads a hello from exactly [`HELLO_LEN`] bytes: any other length is
    /// [`CodecError::Malformed`], other magic is [`CodecError::BadMagic`].
    /// The version and cluster are returned as found; check them with
    /// [`FrameCodec::check_hello`].
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        check_magic(bytes, &HELLO_MAGIC)?;
        if bytes.len() != HELLO_LEN {
            return Err(CodecError::Malformed(format!(
                "hello of {} bytes, expected {HELLO_LEN}",
                bytes.len()
            )));
        }
        let mut r = Reader(bytes);
        r.skip(HELLO_MAGIC.len())?;
        let version = u16::from_be_bytes(r.array()?);
        let cluster_id = u64::from_be_bytes(r.array()?);
        let node_id = NodeId(u64::from_be_bytes(r.array()?));
        Ok(Self {
            cluster_id,
            node_id,
            version,
        })
    }
}

/// Encodes batches into frames and decodes frames from a byte stream, for
/// one cluster and with a maximum frame size. Cheap to copy; holds no
/// buffer of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameCodec {
    cluster_id: u64,
    max_frame_bytes: usize,
}

impl FrameCodec {
    /// A codec for frames of `cluster_id` of at most `max_frame_bytes`,
    /// header included (see [`DEFAULT_MAX_FRAME_BYTES`]). The payload length
    /// field is 32 bits, so the effective maximum is also capped at
    /// [`HEADER_LEN`] + `u32::MAX`.
    pub const fn new(cluster_id: u64, max_frame_bytes: usize) -> Self {
        Self {
            cluster_id,
            max_frame_bytes,
        }
    }

    /// The cluster this codec accepts and writes.
    pub const fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// The largest frame accepted or written, header included.
    pub const fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// Encodes `batch` as one frame.
    ///
    /// Fails with [`CodecError::TooLarge`] when the frame would exceed the
    /// maximum; encoding stops storing bytes at the maximum, so memory stays
    /// bounded even for a huge batch.
    pub fn encode(&self, batch: &[Envelope]) -> Result<Bytes, CodecError> {
        let mut buf = BytesMut::new();
        self.encode_into(batch, &mut buf)?;
        Ok(buf.freeze())
    }

    /// Appends the frame of `batch` to `buf`, to write several frames with
    /// one system call. Returns the frame's length. On error `buf` is left
    /// as it was.
    pub fn encode_into(&self, batch: &[Envelope], buf: &mut BytesMut) -> Result<usize, CodecError> {
        let start = buf.len();
        let max = self.max_frame_bytes;
        // The header is written once the payload's length and CRC are known.
        buf.extend_from_slice(&[0u8; HEADER_LEN]);
        let flavor = Bounded {
            base: buf.len(),
            buf,
            room: max.saturating_sub(HEADER_LEN).min(u32::MAX as usize),
            overflow: 0,
        };
        let result = postcard::serialize_with_flavor::<[Envelope], _, _>(batch, flavor);
        let payload_len = match result {
            Ok(Ok(len)) => len,
            Ok(Err(total)) => {
                buf.truncate(start);
                return Err(CodecError::TooLarge {
                    len: HEADER_LEN.saturating_add(total),
                    max,
                });
            }
            Err(e) => {
                buf.truncate(start);
                return Err(CodecError::Malformed(format!("cannot encode batch: {e}")));
            }
        };
        let frame_len = HEADER_LEN + payload_len;
        let Some(frame) = buf.get_mut(start..start + frame_len) else {
            // Unreachable: the flavor appended exactly `payload_len` bytes.
            buf.truncate(start);
            return Err(CodecError::Malformed("frame buffer out of step".into()));
        };
        let (header, payload) = frame.split_at_mut(HEADER_LEN);
        let header_bytes = FrameHeader {
            version: PROTOCOL_VERSION,
            cluster_id: self.cluster_id,
            // The flavor caps the payload at u32::MAX bytes.
            payload_len: u32::try_from(payload_len).unwrap_or(u32::MAX),
            crc: crc32fast::hash(payload),
        }
        .encode();
        header.copy_from_slice(&header_bytes);
        Ok(frame_len)
    }

    /// Checks the header at the start of `buf` without consuming anything:
    /// `Ok(None)` while it is incomplete, an error as soon as the bytes
    /// present are wrong (bad magic, version, cluster, or a length over the
    /// maximum).
    pub fn check_header(&self, buf: &[u8]) -> Result<Option<FrameHeader>, CodecError> {
        let Some(header) = FrameHeader::parse(buf)? else {
            return Ok(None);
        };
        if header.version != PROTOCOL_VERSION {
            return Err(CodecError::UnsupportedVersion {
                got: header.version,
                supported: PROTOCOL_VERSION,
            });
        }
        if header.cluster_id != self.cluster_id {
            return Err(CodecError::WrongCluster {
                expected: self.cluster_id,
                got: header.cluster_id,
            });
        }
        let len = header.frame_len();
        if len > self.max_frame_bytes {
            return Err(CodecError::TooLarge {
                len,
                max: self.max_frame_bytes,
            });
        }
        Ok(Some(header))
    }

    /// Decodes the next frame of a byte stream.
    ///
    /// Returns `Ok(None)` while `buf` holds less than a whole frame, having
    /// consumed nothing (once the header is there and valid, it reserves
    /// room in `buf` for the rest of the frame, so the caller's next read
    /// can fill it). Returns `Ok(Some(batch))` after consuming exactly one
    /// frame. The header is checked as soon as its bytes arrive, before any
    /// payload: a frame from another cluster or longer than the maximum is
    /// refused at once.
    ///
    /// On an error in the header nothing is consumed; on a bad checksum or
    /// payload the frame is consumed. Either way the stream should be
    /// abandoned.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Vec<Envelope>>, CodecError> {
        let Some(header) = self.check_header(buf)? else {
            return Ok(None);
        };
        let frame_len = header.frame_len();
        if buf.len() < frame_len {
            buf.reserve(frame_len - buf.len());
            return Ok(None);
        }
        let frame = buf.split_to(frame_len);
        let Some(payload) = frame.get(HEADER_LEN..) else {
            return Err(CodecError::Malformed(
                "frame shorter than its header".into(),
            ));
        };
        if crc32fast::hash(payload) != header.crc {
            return Err(CodecError::Checksum);
        }
        let (batch, rest) = postcard::take_from_bytes::<Vec<Envelope>>(payload)
            .map_err(|e| CodecError::Malformed(format!("bad payload: {e}")))?;
        if !rest.is_empty() {
            return Err(CodecError::Malformed(format!(
                "{} bytes after the batch",
                rest.len()
            )));
        }
        Ok(Some(batch))
    }

    /// Accepts a peer's [`Hello`] only if it speaks [`PROTOCOL_VERSION`] and
    /// belongs to this codec's cluster.
    pub fn check_hello(&self, hello: &Hello) -> Result<(), CodecError> {
        if hello.version != PROTOCOL_VERSION {
            return Err(CodecError::UnsupportedVersion {
                got: hello.version,
                supported: PROTOCOL_VERSION,
            });
        }
        if hello.cluster_id != self.cluster_id {
            return Err(CodecError::WrongCluster {
                expected: self.cluster_id,
                got: hello.cluster_id,
            });
        }
        Ok(())
    }
}

/// Fails with [`CodecError::BadMagic`] when the bytes present (possibly
/// fewer than four) differ from `magic`.
fn check_magic(bytes: &[u8], magic: &[u8; 4]) -> Result<(), CodecError> {
    let n = bytes.len().min(magic.len());
    match (bytes.get(..n), magic.get(..n)) {
        (Some(got), Some(want)) if got == want => Ok(()),
        _ => Err(CodecError::BadMagic),
    }
}

/// A postcard output that appends to a `BytesMut` up to `room` bytes, then
/// only counts: serialization of a batch too large for a frame finishes
/// without allocating past the limit, and reports the size it would have.
struct Bounded<'a> {
    buf: &'a mut BytesMut,
    /// Where the payload starts in `buf`.
    base: usize,
    room: usize,
    overflow: usize,
}

impl postcard::ser_flavors::Flavor for Bounded<'_> {
    /// Payload length, or `Err(total)` with the length it would have had.
    type Output = Result<usize, usize>;

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.try_extend(&[data])
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if self.overflow == 0 && data.len() <= self.room {
            self.buf.extend_from_slice(data);
            self.room -= data.len();
        } else {
            self.overflow = self.overflow.saturating_add(data.len());
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Self::Output> {
        let written = self.buf.len().saturating_sub(self.base);
        Ok(if self.overflow == 0 {
            Ok(written)
        } else {
            Err(written.saturating_add(self.overflow))
        })
    }
}

/// Writes into a fixed array, for headers. Callers size it exactly.
struct Writer<'a>(&'a mut [u8]);

impl Writer<'_> {
    fn put(&mut self, data: &[u8]) {
        let buf = std::mem::take(&mut self.0);
        let n = data.len().min(buf.len());
        let (head, tail) = buf.split_at_mut(n);
        head.copy_from_slice(&data[..n]);
        self.0 = tail;
    }
}

/// Reads fixed-size fields with bounds checks.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn skip(&mut self, n: usize) -> Result<(), CodecError> {
        let rest = self.0.get(n..).ok_or_else(truncated)?;
        self.0 = rest;
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or_else(truncated)?;
        self.0 = rest;
        Ok(*head)
    }
}

fn truncated() -> CodecError {
    CodecError::Malformed("truncated header".into())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;
    use crate::hlc::Hlc;
    use crate::membership::{Membership, SnapshotMeta};
    use crate::message::*;
    use crate::types::{Entry, GroupId, LogId, LogIndex, Payload, Term};

    const CLUSTER: u64 = 0xC1A5_7E12;

    fn codec() -> FrameCodec {
        FrameCodec::new(CLUSTER, 1 << 20)
    }

    fn envelope(msg: Message) -> Envelope {
        Envelope {
            group: GroupId(3),
            from: NodeId(1),
            to: NodeId(2),
            term: Term(9),
            msg,
        }
    }

    fn membership() -> Membership {
        Membership {
            voters: [1, 2, 3].map(NodeId).into(),
            outgoing: [1, 4].map(NodeId).into(),
            learners: [5].map(NodeId).into(),
        }
    }

    /// One envelope of every message kind, with non-default fields.
    fn every_message() -> Vec<Envelope> {
        let log = LogId::new(Term(4), LogIndex(17));
        let vote = VoteRequest {
            last_log: log,
            transfer: true,
        };
        let entries = vec![
            Entry {
                id: LogId::new(Term(4), LogIndex(18)),
                timestamp: Hlc::new(1_700_000_000_000, 3),
                payload: Payload::Blank,
            },
            Entry {
                id: LogId::new(Term(4), LogIndex(19)),
                timestamp: Hlc::new(1_700_000_000_001, 0),
                payload: Payload::Command(Bytes::from_static(b"set x = 1")),
            },
            Entry {
                id: LogId::new(Term(4), LogIndex(20)),
                timestamp: Hlc::new(1_700_000_000_002, 0),
                payload: Payload::Membership(Box::new(membership())),
            },
        ];
        [
            Message::PreVote(vote),
            Message::PreVoteResp(VoteResponse { granted: true }),
            Message::Vote(vote),
            Message::VoteResp(VoteResponse { granted: false }),
            Message::Append(AppendRequest {
                prev: log,
                entries,
                commit: LogIndex(16),
                stream: 2,
            }),
            Message::AppendResp(AppendResponse::Success {
                matched: LogIndex(20),
                stream: 2,
            }),
            Message::AppendResp(AppendResponse::Conflict {
                rejected: LogIndex(17),
                hint: ConflictHint {
                    index: LogIndex(12),
                    term: Some(Term(3)),
                },
                stream: 2,
            }),
            Message::Heartbeat(HeartbeatRequest {
                commit: LogIndex(16),
                round: 77,
            }),
            Message::HeartbeatResp(HeartbeatResponse { round: 77 }),
            Message::Snapshot(Box::new(SnapshotChunk {
                meta: SnapshotMeta {
                    last: log,
                    membership: membership(),
                },
                total: 1 << 20,
                offset: 4096,
                data: Bytes::from(vec![0xAB; 4096]),
                stream: 5,
            })),
            Message::SnapshotResp(SnapshotResponse {
                last: log,
                received: 8192,
                stream: 5,
                installed: false,
            }),
            Message::TimeoutNow,
            Message::ReadIndex(ReadIndexRequest { id: 11 }),
            Message::ReadIndexResp(ReadIndexResponse {
                id: 11,
                index: Some(LogIndex(20)),
            }),
            Message::Quiesce,
            Message::Forward(ForwardRequest {
                id: 12,
                command: Bytes::from_static(b"incr y"),
            }),
            Message::ForwardResp(ForwardResponse {
                id: 12,
                outcome: ForwardOutcome::Applied(Bytes::from_static(b"ok")),
            }),
            Message::ForwardResp(ForwardResponse {
                id: 13,
                outcome: ForwardOutcome::NotLeader(Some(NodeId(3))),
            }),
            Message::ForwardResp(ForwardResponse {
                id: 14,
                outcome: ForwardOutcome::Busy,
            }),
            Message::ForwardResp(ForwardResponse {
                id: 15,
                outcome: ForwardOutcome::Unknown,
            }),
            Message::ForwardResp(ForwardResponse {
                id: 16,
                outcome: ForwardOutcome::Lost,
            }),
        ]
        .into_iter()
        .map(envelope)
        .collect()
    }

    /// Position of a message kind; exhaustive, so a new variant fails to
    /// compile here until [`every_message`] covers it.
    fn kind_index(msg: &Message) -> usize {
        match msg {
            Message::PreVote(_) => 0,
            Message::PreVoteResp(_) => 1,
            Message::Vote(_) => 2,
            Message::VoteResp(_) => 3,
            Message::Append(_) => 4,
            Message::AppendResp(_) => 5,
            Message::Heartbeat(_) => 6,
            Message::HeartbeatResp(_) => 7,
            Message::Snapshot(_) => 8,
            Message::SnapshotResp(_) => 9,
            Message::TimeoutNow => 10,
            Message::ReadIndex(_) => 11,
            Message::ReadIndexResp(_) => 12,
            Message::Quiesce => 13,
            Message::Forward(_) => 14,
            Message::ForwardResp(_) => 15,
        }
    }

    fn decode_all(codec: &FrameCodec, bytes: &[u8]) -> Result<Option<Vec<Envelope>>, CodecError> {
        codec.decode(&mut BytesMut::from(bytes))
    }

    #[test]
    fn every_message_kind_round_trips() {
        let codec = codec();
        let batch = every_message();
        let kinds: BTreeSet<usize> = batch.iter().map(|e| kind_index(&e.msg)).collect();
        assert_eq!(kinds.len(), 16, "every Message variant is covered");

        // Each alone, then all in one batch, order kept.
        for envelope in &batch {
            let frame = codec.encode(std::slice::from_ref(envelope)).unwrap();
            let decoded = decode_all(&codec, &frame).unwrap().unwrap();
            assert_eq!(
                decoded,
                std::slice::from_ref(envelope),
                "{}",
                envelope.msg.kind()
            );
        }
        let frame = codec.encode(&batch).unwrap();
        assert_eq!(decode_all(&codec, &frame).unwrap().unwrap(), batch);
    }

    #[test]
    fn frame_header_has_the_documented_layout() {
        let codec = codec();
        let batch = every_message();
        let frame = codec.encode(&batch).unwrap();
        assert_eq!(&frame[..4], b"RAFT");
        assert_eq!(&frame[4..6], &PROTOCOL_VERSION.to_be_bytes());
        assert_eq!(&frame[6..14], &CLUSTER.to_be_bytes());
        let len = u32::from_be_bytes(frame[14..18].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - HEADER_LEN);
        let crc = u32::from_be_bytes(frame[18..22].try_into().unwrap());
        assert_eq!(crc, crc32fast::hash(&frame[HEADER_LEN..]));
        assert_eq!(
            postcard::from_bytes::<Vec<Envelope>>(&frame[HEADER_LEN..]).unwrap(),
            batch
        );
    }

    #[test]
    fn empty_batch_round_trips() {
        let codec = codec();
        let frame = codec.encode(&[]).unwrap();
        assert_eq!(decode_all(&codec, &frame).unwrap(), Some(vec![]));
    }

    #[test]
    fn stream_of_frames_decodes_one_at_a_time() {
        let codec = codec();
        let batches: Vec<Vec<Envelope>> = every_message().chunks(3).map(<[_]>::to_vec).collect();
        let mut wire = BytesMut::new();
        for batch in &batches {
            codec.encode_into(batch, &mut wire).unwrap();
        }
        // Feed it a few bytes at a time, as a socket would.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for chunk in wire.chunks(7) {
            buf.extend_from_slice(chunk);
            while let Some(batch) = codec.decode(&mut buf).unwrap() {
                got.push(batch);
            }
        }
        assert_eq!(got, batches);
        assert!(buf.is_empty());
    }

    #[test]
    fn every_truncation_is_incomplete_never_a_panic() {
        let codec = codec();
        let frame = codec.encode(&every_message()).unwrap();
        for cut in 0..frame.len() {
            let mut buf = BytesMut::from(&frame[..cut]);
            assert_eq!(codec.decode(&mut buf), Ok(None), "cut at {cut}");
            assert_eq!(buf.len(), cut, "nothing consumed while incomplete");
        }
        // A truncated payload with a header claiming that short length is
        // an error (checksum or malformed), never a panic.
        for cut in 1..frame.len() - HEADER_LEN {
            let payload = &frame[HEADER_LEN..HEADER_LEN + cut];
            let header = FrameHeader {
                version: PROTOCOL_VERSION,
                cluster_id: CLUSTER,
                payload_len: cut as u32,
                crc: crc32fast::hash(payload),
            };
            let mut bytes = header.encode().to_vec();
            bytes.extend_from_slice(payload);
            assert!(
                matches!(decode_all(&codec, &bytes), Err(CodecError::Malformed(_))),
                "payload cut at {cut}"
            );
        }
    }

    #[test]
    fn oversized_length_is_refused_before_the_payload() {
        let codec = FrameCodec::new(CLUSTER, 4096);
        let header = FrameHeader {
            version: PROTOCOL_VERSION,
            cluster_id: CLUSTER,
            payload_len: u32::MAX,
            crc: 0,
        };
        // Only the header has arrived: refused at once, no waiting.
        let mut buf = BytesMut::from(&header.encode()[..]);
        assert_eq!(
            codec.decode(&mut buf),
            Err(CodecError::TooLarge {
                len: HEADER_LEN + u32::MAX as usize,
                max: 4096
            })
        );
        assert!(buf.capacity() < 1 << 20, "no room reserved for the payload");

        // Exactly at the limit is fine.
        let at_limit = FrameHeader {
            payload_len: (4096 - HEADER_LEN) as u32,
            ..header
        };
        let mut buf = BytesMut::from(&at_limit.encode()[..]);
        assert_eq!(codec.decode(&mut buf), Ok(None));
        let one_more = FrameHeader {
            payload_len: (4096 - HEADER_LEN + 1) as u32,
            ..header
        };
        let mut buf = BytesMut::from(&one_more.encode()[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::TooLarge { len: 4097, .. })
        ));
    }

    #[test]
    fn encoding_a_batch_over_the_limit_fails() {
        let codec = FrameCodec::new(CLUSTER, 64 * 1024);
        let big = envelope(Message::Forward(ForwardRequest {
            id: 1,
            command: Bytes::from(vec![7; 100_000]),
        }));
        let mut buf = BytesMut::from(&b"previous frames"[..]);
        match codec.encode_into(std::slice::from_ref(&big), &mut buf) {
            Err(CodecError::TooLarge { len, max }) => {
                assert_eq!(max, 64 * 1024);
                let real = FrameCodec::new(CLUSTER, usize::MAX).encode(&[big]).unwrap();
                assert_eq!(len, real.len(), "the error reports the real size");
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert_eq!(&buf[..], b"previous frames", "buffer left as it was");
        assert!(buf.capacity() < 128 * 1024, "stopped storing at the limit");

        // A frame of exactly the maximum is accepted both ways.
        let small = codec.encode(&every_message()[..2]).unwrap();
        let exact = FrameCodec::new(CLUSTER, small.len());
        assert_eq!(exact.encode(&every_message()[..2]).unwrap(), small);
        assert!(decode_all(&exact, &small).unwrap().is_some());
        assert!(matches!(
            FrameCodec::new(CLUSTER, small.len() - 1).encode(&every_message()[..2]),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn wrong_magic_is_refused_from_the_first_byte() {
        let codec = codec();
        assert_eq!(decode_all(&codec, b"G"), Err(CodecError::BadMagic));
        assert_eq!(decode_all(&codec, b"RAFX"), Err(CodecError::BadMagic));
        assert_eq!(
            decode_all(&codec, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Err(CodecError::BadMagic)
        );
        // A hello is not a frame.
        let hello = Hello::new(CLUSTER, NodeId(1)).encode();
        assert_eq!(decode_all(&codec, &hello), Err(CodecError::BadMagic));
    }

    #[test]
    fn wrong_cluster_is_refused() {
        let frame = FrameCodec::new(CLUSTER + 1, 1 << 20)
            .encode(&every_message())
            .unwrap();
        assert_eq!(
            decode_all(&codec(), &frame[..HEADER_LEN]),
            Err(CodecError::WrongCluster {
                expected: CLUSTER,
                got: CLUSTER + 1
            }),
            "refused from the header alone"
        );
    }

    #[test]
    fn other_version_is_refused() {
        // The version before the two-way handshake, and a newer one.
        for other in [1, PROTOCOL_VERSION + 1] {
            let mut frame = codec().encode(&every_message()).unwrap().to_vec();
            frame[4..6].copy_from_slice(&other.to_be_bytes());
            assert_eq!(
                decode_all(&codec(), &frame),
                Err(CodecError::UnsupportedVersion {
                    got: other,
                    supported: PROTOCOL_VERSION
                })
            );
        }
    }

    #[test]
    fn corrupted_payload_fails_its_checksum() {
        let codec = codec();
        let frame = codec.encode(&every_message()).unwrap();
        for i in [HEADER_LEN, HEADER_LEN + 100, frame.len() - 1] {
            let mut bad = frame.to_vec();
            bad[i] ^= 0x10;
            let mut buf = BytesMut::from(&bad[..]);
            assert_eq!(codec.decode(&mut buf), Err(CodecError::Checksum));
            assert!(buf.is_empty(), "the bad frame is consumed");
        }
        let mut bad = frame.to_vec();
        bad[18] ^= 1; // the CRC itself
        assert_eq!(decode_all(&codec, &bad), Err(CodecError::Checksum));
    }

    #[test]
    fn trailing_bytes_in_a_payload_are_malformed() {
        let mut payload = postcard::to_allocvec(&every_message()).unwrap();
        payload.push(0);
        let header = FrameHeader {
            version: PROTOCOL_VERSION,
            cluster_id: CLUSTER,
            payload_len: payload.len() as u32,
            crc: crc32fast::hash(&payload),
        };
        let mut frame = header.encode().to_vec();
        frame.extend_from_slice(&payload);
        assert!(matches!(
            decode_all(&codec(), &frame),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn a_huge_length_prefix_inside_the_payload_is_malformed() {
        // A batch claiming 2^63 envelopes, with a valid CRC: must not
        // allocate for them.
        let payload = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F];
        let header = FrameHeader {
            version: PROTOCOL_VERSION,
            cluster_id: CLUSTER,
            payload_len: payload.len() as u32,
            crc: crc32fast::hash(&payload),
        };
        let mut frame = header.encode().to_vec();
        frame.extend_from_slice(&payload);
        assert!(matches!(
            decode_all(&codec(), &frame),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn hello_round_trips_with_a_fixed_layout() {
        let hello = Hello::new(CLUSTER, NodeId(42));
        let bytes = hello.encode();
        assert_eq!(bytes.len(), HELLO_LEN);
        assert_eq!(&bytes[..4], b"RAFH");
        assert_eq!(&bytes[4..6], &PROTOCOL_VERSION.to_be_bytes());
        assert_eq!(&bytes[6..14], &CLUSTER.to_be_bytes());
        assert_eq!(&bytes[14..22], &42u64.to_be_bytes());
        assert_eq!(Hello::decode(&bytes), Ok(hello));
        assert_eq!(codec().check_hello(&hello), Ok(()));
    }

    #[test]
    fn hello_is_strict() {
        let bytes = Hello::new(CLUSTER, NodeId(42)).encode();
        for cut in 0..HELLO_LEN {
            assert!(
                matches!(Hello::decode(&bytes[..cut]), Err(CodecError::Malformed(_))),
                "cut at {cut}"
            );
        }
        let mut long = bytes.to_vec();
        long.push(0);
        assert!(matches!(
            Hello::decode(&long),
            Err(CodecError::Malformed(_))
        ));
        let mut bad = bytes;
        bad[0] = b'X';
        assert_eq!(Hello::decode(&bad), Err(CodecError::BadMagic));
        let frame = codec().encode(&[]).unwrap();
        assert_eq!(
            Hello::decode(&frame[..HELLO_LEN]),
            Err(CodecError::BadMagic)
        );
    }

    #[test]
    fn hello_from_another_cluster_or_version_is_refused() {
        let codec = codec();
        let other = Hello::new(CLUSTER + 1, NodeId(1));
        assert_eq!(
            codec.check_hello(&Hello::decode(&other.encode()).unwrap()),
            Err(CodecError::WrongCluster {
                expected: CLUSTER,
                got: CLUSTER + 1
            })
        );
        let future = Hello {
            version: PROTOCOL_VERSION + 1,
            ..Hello::new(CLUSTER, NodeId(1))
        };
        assert_eq!(
            codec.check_hello(&Hello::decode(&future.encode()).unwrap()),
            Err(CodecError::UnsupportedVersion {
                got: PROTOCOL_VERSION + 1,
                supported: PROTOCOL_VERSION
            })
        );
    }

    #[test]
    fn errors_read_well() {
        let e = CodecError::TooLarge { len: 10, max: 5 };
        assert_eq!(
            e.to_string(),
            "frame of 10 bytes exceeds the maximum of 5 bytes"
        );
        let e = CodecError::WrongCluster {
            expected: 1,
            got: 2,
        };
        assert_eq!(e.to_string(), "frame of cluster 2, expected cluster 1");
    }

    fn node() -> impl Strategy<Value = NodeId> {
        (0u64..8).prop_map(NodeId)
    }

    fn log_id() -> impl Strategy<Value = LogId> {
        (any::<u64>(), any::<u64>()).prop_map(|(t, i)| LogId::new(Term(t), LogIndex(i)))
    }

    fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
    }

    fn arb_membership() -> impl Strategy<Value = Membership> {
        let set = || proptest::collection::btree_set(node(), 0..4);
        (set(), set(), set()).prop_map(|(voters, outgoing, learners)| Membership {
            voters,
            outgoing,
            learners,
        })
    }

    fn entry() -> impl Strategy<Value = Entry> {
        let payload = prop_oneof![
            Just(Payload::Blank),
            bytes(64).prop_map(Payload::Command),
            arb_membership().prop_map(|m| Payload::Membership(Box::new(m))),
        ];
        (log_id(), any::<u64>(), any::<u32>(), payload).prop_map(|(id, wall, logical, payload)| {
            Entry {
                id,
                timestamp: Hlc::new(wall, logical),
                payload,
            }
        })
    }

    fn message() -> impl Strategy<Value = Message> {
        let vote = || {
            (log_id(), any::<bool>())
                .prop_map(|(last_log, transfer)| VoteRequest { last_log, transfer })
        };
        let outcome = prop_oneof![
            bytes(32).prop_map(ForwardOutcome::Applied),
            proptest::option::of(node()).prop_map(ForwardOutcome::NotLeader),
            Just(ForwardOutcome::Busy),
            Just(ForwardOutcome::Unknown),
            Just(ForwardOutcome::Lost),
        ];
        let append_resp = prop_oneof![
            (any::<u64>(), any::<u64>()).prop_map(|(m, stream)| AppendResponse::Success {
                matched: LogIndex(m),
                stream
            }),
            (
                any::<u64>(),
                any::<u64>(),
                proptest::option::of(any::<u64>()),
                any::<u64>()
            )
                .prop_map(|(r, i, t, stream)| AppendResponse::Conflict {
                    rejected: LogIndex(r),
                    hint: ConflictHint {
                        index: LogIndex(i),
                        term: t.map(Term),
                    },
                    stream,
                }),
        ];
        prop_oneof![
            vote().prop_map(Message::PreVote),
            any::<bool>().prop_map(|granted| Message::PreVoteResp(VoteResponse { granted })),
            vote().prop_map(Message::Vote),
            any::<bool>().prop_map(|granted| Message::VoteResp(VoteResponse { granted })),
            (
                log_id(),
                proptest::collection::vec(entry(), 0..4),
                any::<u64>(),
                any::<u64>()
            )
                .prop_map(|(prev, entries, c, stream)| Message::Append(
                    AppendRequest {
                        prev,
                        entries,
                        commit: LogIndex(c),
                        stream
                    }
                )),
            append_resp.prop_map(Message::AppendResp),
            (any::<u64>(), any::<u64>()).prop_map(|(c, round)| Message::Heartbeat(
                HeartbeatRequest {
                    commit: LogIndex(c),
                    round
                }
            )),
            any::<u64>().prop_map(|round| Message::HeartbeatResp(HeartbeatResponse { round })),
            (
                log_id(),
                arb_membership(),
                any::<u64>(),
                any::<u64>(),
                bytes(256),
                any::<u64>()
            )
                .prop_map(|(last, membership, total, offset, data, stream)| {
                    Message::Snapshot(Box::new(SnapshotChunk {
                        meta: SnapshotMeta { last, membership },
                        total,
                        offset,
                        data,
                        stream,
                    }))
                }),
            (log_id(), any::<u64>(), any::<u64>(), any::<bool>()).prop_map(
                |(last, received, stream, installed)| Message::SnapshotResp(SnapshotResponse {
                    last,
                    received,
                    stream,
                    installed
                })
            ),
            Just(Message::TimeoutNow),
            any::<u64>().prop_map(|id| Message::ReadIndex(ReadIndexRequest { id })),
            (any::<u64>(), proptest::option::of(any::<u64>())).prop_map(|(id, i)| {
                Message::ReadIndexResp(ReadIndexResponse {
                    id,
                    index: i.map(LogIndex),
                })
            }),
            Just(Message::Quiesce),
            (any::<u64>(), bytes(128))
                .prop_map(|(id, command)| Message::Forward(ForwardRequest { id, command })),
            (any::<u64>(), outcome)
                .prop_map(|(id, outcome)| Message::ForwardResp(ForwardResponse { id, outcome })),
        ]
    }

    fn arb_envelope() -> impl Strategy<Value = Envelope> {
        (any::<u64>(), node(), node(), any::<u64>(), message()).prop_map(
            |(group, from, to, term, msg)| Envelope {
                group: GroupId(group),
                from,
                to,
                term: Term(term),
                msg,
            },
        )
    }

    proptest! {
        #[test]
        fn random_batches_round_trip(
            batch in proptest::collection::vec(arb_envelope(), 0..24),
            split in any::<prop::sample::Index>(),
        ) {
            let codec = codec();
            let frame = codec.encode(&batch).unwrap();
            prop_assert_eq!(decode_all(&codec, &frame).unwrap(), Some(batch.clone()));

            // Split anywhere: the first part is incomplete, the whole decodes.
            let at = split.index(frame.len());
            let mut buf = BytesMut::from(&frame[..at]);
            prop_assert_eq!(codec.decode(&mut buf).unwrap(), None);
            buf.extend_from_slice(&frame[at..]);
            prop_assert_eq!(codec.decode(&mut buf).unwrap(), Some(batch));
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn random_garbage_never_panics(
            garbage in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let codec = codec();
            let mut buf = BytesMut::from(&garbage[..]);
            // Decode until it stops making progress; any result is fine.
            while let Ok(Some(_)) = codec.decode(&mut buf) {}
            let _ = Hello::decode(&garbage);
            let _ = FrameHeader::parse(&garbage);
        }

        #[test]
        fn garbage_behind_a_valid_header_never_panics(
            payload in proptest::collection::vec(any::<u8>(), 0..512),
            good_crc in any::<bool>(),
        ) {
            let header = FrameHeader {
                version: PROTOCOL_VERSION,
                cluster_id: CLUSTER,
                payload_len: payload.len() as u32,
                crc: if good_crc { crc32fast::hash(&payload) } else { 0 },
            };
            let mut frame = header.encode().to_vec();
            frame.extend_from_slice(&payload);
            let _ = decode_all(&codec(), &frame);
        }

        #[test]
        fn flipped_bits_are_detected(
            batch in proptest::collection::vec(arb_envelope(), 1..8),
            at in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let codec = codec();
            let mut frame = codec.encode(&batch).unwrap().to_vec();
            let i = at.index(frame.len());
            frame[i] ^= 1 << bit;
            // Never the original batch, never a panic: a header field or the
            // checksum catches every single-bit flip (a flip in the length
            // may only make the frame look incomplete).
            let result = decode_all(&codec, &frame);
            prop_assert!(!matches!(result, Ok(Some(_))), "{:?}", result);
        }
    }
}
