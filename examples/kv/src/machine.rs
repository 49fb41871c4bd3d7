//! The replicated state machine: a map from keys to values with put,
//! delete and compare-and-set.
//!
//! Commands and responses are encoded with postcard behind a format byte
//! ([`FORMAT`]). A command that cannot be decoded is answered by
//! [`Response::Error`] on every replica alike and changes nothing; it
//! never panics. raft-node wraps the machine in a
//! [`SessionMachine`](raft_node::session::SessionMachine), which makes
//! commands proposed in a client session exactly-once; reads run against
//! the machine with [`Node::read_with`](raft_node::driver::Node::read_with).
//!
//! ```
//! use bytes::Bytes;
//! use raft_kv::machine::{Command, Response};
//!
//! let put = Command::Put { key: Bytes::from("k"), value: Bytes::from("v") };
//! assert_eq!(Command::decode(&put.encode()).unwrap(), put);
//! assert!(Command::decode(b"\x01garbage").is_err());
//! let answer = Response::Put { index: 7 };
//! assert_eq!(Response::decode(&answer.encode()).unwrap(), answer);
//! ```

use std::collections::BTreeMap;
use std::future::{Future, ready};

use bytes::{BufMut, Bytes, BytesMut};
use raft_api::{Entry, LogId, Payload, StateMachine, StorageError};
use serde::{Deserialize, Serialize};

/// The first byte of every encoded command and response: the format
/// version.
pub const FORMAT: u8 = 1;

/// First bytes of a snapshot image (magic and format version).
const IMAGE_MAGIC: &[u8; 4] = b"RKV1";

/// A write to the key-value map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Sets `key` to `value`; answered by [`Response::Put`].
    Put {
        /// The key.
        key: Bytes,
        /// The new value.
        value: Bytes,
    },
    /// Removes `key`; answered by [`Response::Delete`].
    Delete {
        /// The key.
        key: Bytes,
    },
    /// If the key's value is `expected` (`None`: the key is absent), sets
    /// it to `value` (`None`: removes it); answered by [`Response::Cas`].
    Cas {
        /// The key.
        key: Bytes,
        /// The value the key must have; `None` for absent.
        expected: Option<Bytes>,
        /// The value to set on success; `None` deletes the key.
        value: Option<Bytes>,
    },
}

/// The machine's answer to a [`Command`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The value was stored by the entry at `index`.
    Put {
        /// Log index of the entry that stored it.
        index: u64,
    },
    /// Whether the key existed before the delete.
    Delete {
        /// `true` if a value was removed.
        deleted: bool,
    },
    /// The outcome of a compare-and-set.
    Cas {
        /// Whether the comparison held (and the value was set).
        swapped: bool,
        /// The key's value after the operation.
        current: Option<Bytes>,
    },
    /// The command could not be decoded; nothing changed.
    Error(String),
}

/// Bytes that are not a valid command or response.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed {what}: {detail}")]
pub struct DecodeError {
    /// What was being decoded.
    pub what: &'static str,
    /// What is wrong.
    pub detail: String,
}

fn encode_value<T: Serialize>(value: &T) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_u8(FORMAT);
    // Serializing these plain enums into a vector cannot fail.
    let body = postcard::to_allocvec(value).unwrap_or_default();
    buf.put_slice(&body);
    buf.freeze()
}

fn decode_value<'a, T: Deserialize<'a>>(
    what: &'static str,
    input: &'a [u8],
) -> Result<T, DecodeError> {
    let err = |detail: String| DecodeError { what, detail };
    let (&format, body) = input
        .split_first()
        .ok_or_else(|| err("empty input".into()))?;
    if format != FORMAT {
        return Err(err(format!("unknown format {format}")));
    }
    let (value, rest) = postcard::take_from_bytes(body).map_err(|e| err(e.to_string()))?;
    if !rest.is_empty() {
        return Err(err(format!("{} trailing bytes", rest.len())));
    }
    Ok(value)
}

impl Command {
    /// Encodes the command: the format byte, then postcard.
    pub fn encode(&self) -> Bytes {
        encode_value(self)
    }

    /// Decodes a command made by [`encode`](Self::encode). Never panics.
    pub fn decode(input: &[u8]) -> Result<Self, DecodeError> {
        decode_value("command", input)
    }

    /// The key the command writes.
    pub fn key(&self) -> &Bytes {
        match self {
            Command::Put { key, .. } | Command::Delete { key } | Command::Cas { key, .. } => key,
        }
    }
}

impl Response {
    /// Encodes the response: the format byte, then postcard.
    pub fn encode(&self) -> Bytes {
        encode_value(self)
    }

    /// Decodes a response made by [`encode`](Self::encode). Never panics.
    pub fn decode(input: &[u8]) -> Result<Self, DecodeError> {
        decode_value("response", input)
    }
}

/// The snapshot image: every pair, in key order.
#[derive(Serialize, Deserialize)]
struct Image {
    pairs: Vec<(Bytes, Bytes)>,
}

/// The key-value map of one partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvMachine {
    map: BTreeMap<Bytes, Bytes>,
    last: LogId,
}

impl KvMachine {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.map.get(key).cloned()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Applies one decoded command as the entry at `index`.
    pub fn execute(&mut self, index: u64, command: Command) -> Response {
        match command {
            Command::Put { key, value } => {
                self.map.insert(key, value);
                Response::Put { index }
            }
            Command::Delete { key } => Response::Delete {
                deleted: self.map.remove(&key).is_some(),
            },
            Command::Cas {
                key,
                expected,
                value,
            } => {
                let current = self.map.get(&key);
                if current != expected.as_ref() {
                    return Response::Cas {
                        swapped: false,
                        current: current.cloned(),
                    };
                }
                match &value {
                    Some(v) => {
                        self.map.insert(key, v.clone());
                    }
                    None => {
                        self.map.remove(&key);
                    }
                }
                Response::Cas {
                    swapped: true,
                    current: value,
                }
            }
        }
    }

    /// Applies one command's bytes: a malformed command is answered by
    /// [`Response::Error`] and changes nothing.
    fn apply_bytes(&mut self, index: u64, bytes: &[u8]) -> Bytes {
        match Command::decode(bytes) {
            Ok(command) => self.execute(index, command).encode(),
            Err(e) => Response::Error(e.to_string()).encode(),
        }
    }
}

impl StateMachine for KvMachine {
    fn apply(&mut self, entries: &[Entry]) -> impl Future<Output = Vec<Bytes>> + Send {
        let responses = entries
            .iter()
            .map(|entry| {
                self.last = entry.id;
                match &entry.payload {
                    Payload::Command(bytes) => self.apply_bytes(entry.id.index.0, bytes),
                    _ => Bytes::new(),
                }
            })
            .collect();
        ready(responses)
    }

    fn last_applied(&self) -> LogId {
        self.last
    }

    fn snapshot(&self) -> impl Future<Output = Result<Bytes, StorageError>> + Send {
        let image = Image {
            pairs: self
                .map
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        let result = postcard::to_allocvec(&image)
            .map(|body| {
                let mut buf = BytesMut::with_capacity(IMAGE_MAGIC.len() + body.len());
                buf.put_slice(IMAGE_MAGIC);
                buf.put_slice(&body);
                buf.freeze()
            })
            .map_err(|e| StorageError::Other(format!("kv snapshot: {e}")));
        ready(result)
    }

    fn restore(
        &mut self,
        last: LogId,
        image: Bytes,
    ) -> impl Future<Output = Result<(), StorageError>> + Send {
        let result = decode_image(&image).map(|map| {
            self.map = map;
            self.last = last;
        });
        ready(result)
    }
}

fn decode_image(image: &[u8]) -> Result<BTreeMap<Bytes, Bytes>, StorageError> {
    let corrupt = |detail: String| StorageError::Other(format!("kv snapshot image: {detail}"));
    let body = image
        .strip_prefix(IMAGE_MAGIC.as_slice())
        .ok_or_else(|| corrupt("missing RKV1 header".into()))?;
    let (image, rest): (Image, _) =
        postcard::take_from_bytes(body).map_err(|e| corrupt(e.to_string()))?;
    if !rest.is_empty() {
        return Err(corrupt(format!("{} trailing bytes", rest.len())));
    }
    let mut map = BTreeMap::new();
    for (key, value) in image.pairs {
        if map.insert(key, value).is_some() {
            return Err(corrupt("a key appears twice".into()));
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_api::{Hlc, LogIndex, Term};
    use raft_node::session::{Session, SessionMachine, SessionReply, decode_reply, encode_command};

    fn entry(index: u64, payload: Payload) -> Entry {
        Entry {
            id: LogId {
                term: Term(1),
                index: LogIndex(index),
            },
            timestamp: Hlc::default(),
            payload,
        }
    }

    fn cmd(index: u64, command: &Command) -> Entry {
        entry(index, Payload::Command(command.encode()))
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    async fn run(m: &mut KvMachine, entries: &[Entry]) -> Vec<Response> {
        m.apply(entries)
            .await
            .iter()
            .map(|r| Response::decode(r).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn put_get_delete() {
        let mut m = KvMachine::new();
        let got = run(
            &mut m,
            &[
                cmd(
                    1,
                    &Command::Put {
                        key: b("a"),
                        value: b("1"),
                    },
                ),
                cmd(
                    2,
                    &Command::Put {
                        key: b("a"),
                        value: b("2"),
                    },
                ),
                cmd(3, &Command::Delete { key: b("b") }),
            ],
        )
        .await;
        assert_eq!(
            got,
            vec![
                Response::Put { index: 1 },
                Response::Put { index: 2 },
                Response::Delete { deleted: false }
            ]
        );
        assert_eq!(m.get(b"a"), Some(b("2")));
        let got = run(&mut m, &[cmd(4, &Command::Delete { key: b("a") })]).await;
        assert_eq!(got, vec![Response::Delete { deleted: true }]);
        assert_eq!(m.get(b"a"), None);
        assert!(m.is_empty());
        assert_eq!(m.last_applied().index, LogIndex(4));
    }

    #[tokio::test]
    async fn cas_compares_with_absent_and_present_values() {
        let mut m = KvMachine::new();
        let cas = |expected: Option<&str>, value: Option<&str>| Command::Cas {
            key: b("k"),
            expected: expected.map(b),
            value: value.map(b),
        };
        let got = run(
            &mut m,
            &[
                // Absent expected on an absent key: created.
                cmd(1, &cas(None, Some("x"))),
                // Absent expected on a present key: refused, current shown.
                cmd(2, &cas(None, Some("y"))),
                // Wrong expected value.
                cmd(3, &cas(Some("z"), Some("y"))),
                // Right expected value.
                cmd(4, &cas(Some("x"), Some("y"))),
                // Delete on success.
                cmd(5, &cas(Some("y"), None)),
                // Present expected on an absent key.
                cmd(6, &cas(Some("y"), Some("w"))),
            ],
        )
        .await;
        let r = |swapped, current: Option<&str>| Response::Cas {
            swapped,
            current: current.map(b),
        };
        assert_eq!(
            got,
            vec![
                r(true, Some("x")),
                r(false, Some("x")),
                r(false, Some("x")),
                r(true, Some("y")),
                r(true, None),
                r(false, None),
            ]
        );
        assert_eq!(m.get(b"k"), None);
    }

    #[tokio::test]
    async fn malformed_commands_get_an_error_and_change_nothing() {
        let mut m = KvMachine::new();
        let put = Command::Put {
            key: b("k"),
            value: b("v"),
        }
        .encode();
        let mut trailing = put.to_vec();
        trailing.push(0);
        let inputs: Vec<Bytes> = vec![
            Bytes::new(),
            Bytes::from_static(&[FORMAT]),
            Bytes::from_static(&[9, 0, 1]),
            Bytes::from_static(&[FORMAT, 200, 1, 2]),
            put.slice(..put.len() - 1),
            Bytes::from(trailing),
        ];
        let entries: Vec<Entry> = inputs
            .into_iter()
            .enumerate()
            .map(|(i, bytes)| entry(i as u64 + 1, Payload::Command(bytes)))
            .collect();
        for (i, response) in run(&mut m, &entries).await.into_iter().enumerate() {
            assert!(
                matches!(response, Response::Error(_)),
                "input {i}: {response:?}"
            );
        }
        assert!(m.is_empty());
        assert_eq!(m.last_applied().index, LogIndex(6));
        // Entries without a command are answered by an empty response.
        let answers = m.apply(&[entry(7, Payload::Blank)]).await;
        assert_eq!(answers, vec![Bytes::new()]);
        assert!(Response::decode(b"").is_err());
    }

    #[tokio::test]
    async fn snapshot_and_restore_round_trip() {
        let mut m = KvMachine::new();
        let mut entries = Vec::new();
        for i in 1..=50u64 {
            entries.push(cmd(
                i,
                &Command::Put {
                    key: Bytes::from(format!("key-{i}")),
                    value: Bytes::from(vec![i as u8; i as usize]),
                },
            ));
        }
        m.apply(&entries).await;
        let image = m.snapshot().await.unwrap();
        let mut other = KvMachine::new();
        other
            .apply(&[cmd(
                1,
                &Command::Put {
                    key: b("stale"),
                    value: b("x"),
                },
            )])
            .await;
        other
            .restore(m.last_applied(), image.clone())
            .await
            .unwrap();
        assert_eq!(other, m);
        assert_eq!(other.len(), 50);
        // Damaged images are refused and leave the state as it was.
        for bad in [
            Bytes::new(),
            Bytes::from_static(b"XXXX"),
            image.slice(..image.len() - 1),
            Bytes::from([image.as_ref(), &[0]].concat()),
        ] {
            assert!(other.restore(LogId::default(), bad).await.is_err());
            assert_eq!(other, m);
        }
    }

    #[tokio::test]
    async fn a_retried_session_command_applies_once_with_the_first_answer() {
        let mut m = SessionMachine::new(KvMachine::new(), 100);
        let cas = Command::Cas {
            key: b("k"),
            expected: None,
            value: Some(b("first")),
        };
        let session = Session::new(7, 1);
        let e1 = entry(
            1,
            Payload::Command(encode_command(Some(session), &cas.encode())),
        );
        let e2 = entry(
            2,
            Payload::Command(encode_command(Some(session), &cas.encode())),
        );
        let replies = m.apply(&[e1]).await;
        let first = decode_reply(&replies[0]).unwrap();
        let SessionReply::Applied(first) = first else {
            panic!("{first:?}")
        };
        assert_eq!(
            Response::decode(&first).unwrap(),
            Response::Cas {
                swapped: true,
                current: Some(b("first"))
            }
        );
        // The same CAS again would fail if applied; the retry gets the
        // first answer instead.
        let replies = m.apply(&[e2]).await;
        assert_eq!(
            decode_reply(&replies[0]).unwrap(),
            SessionReply::Duplicate(first)
        );
        // A new sequence number is a new command.
        let e3 = entry(
            3,
            Payload::Command(encode_command(Some(Session::new(7, 2)), &cas.encode())),
        );
        let replies = m.apply(&[e3]).await;
        let SessionReply::Applied(third) = decode_reply(&replies[0]).unwrap() else {
            panic!("applied")
        };
        assert_eq!(
            Response::decode(&third).unwrap(),
            Response::Cas {
                swapped: false,
                current: Some(b("first"))
            }
        );
        assert_eq!(m.inner().get(b"k"), Some(b("first")));
    }
}
