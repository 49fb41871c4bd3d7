//! An in-memory key-value [`StateMachine`] with put, get, delete and
//! compare-and-set, and the binary encoding of its commands and responses.
//!
//! # Encoding
//!
//! Commands and responses start with a tag byte. Byte strings are written as
//! a `u32` big-endian length followed by the bytes; an optional byte string is
//! a flag byte (`0` absent, `1` present) followed, when present, by the byte
//! string; a boolean is one byte, `0` or `1`. Decoding rejects unknown tags,
//! invalid flags, truncated input and trailing bytes.
//!
//! | value | layout |
//! |---|---|
//! | [`KvCommand::Put`] | `0x01` key value |
//! | [`KvCommand::Get`] | `0x02` key |
//! | [`KvCommand::Delete`] | `0x03` key |
//! | [`KvCommand::Cas`] | `0x04` key expected? new |
//! | [`KvResponse::Done`] | `0x01` |
//! | [`KvResponse::Value`] | `0x02` value? |
//! | [`KvResponse::Deleted`] | `0x03` bool |
//! | [`KvResponse::Cas`] | `0x04` bool |
//! | [`KvResponse::Error`] | `0x05` UTF-8 text |

use std::collections::BTreeMap;
use std::future::{Future, ready};

use bytes::{BufMut, Bytes, BytesMut};
use raft_api::{Entry, LogId, LogIndex, Payload, StateMachine, StorageError, Term};

const TAG_PUT: u8 = 0x01;
const TAG_GET: u8 = 0x02;
const TAG_DELETE: u8 = 0x03;
const TAG_CAS: u8 = 0x04;

const TAG_DONE: u8 = 0x01;
const TAG_VALUE: u8 = 0x02;
const TAG_DELETED: u8 = 0x03;
const TAG_CAS_RESULT: u8 = 0x04;
const TAG_ERROR: u8 = 0x05;

/// First bytes of a snapshot image, including a format version.
const SNAPSHOT_MAGIC: &[u8; 4] = b"KVS1";

/// A command of the key-value state machine, carried in
/// [`Payload::Command`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvCommand {
    /// Sets `key` to `value`; answered by [`KvResponse::Done`].
    Put {
        /// Key to set.
        key: Bytes,
        /// New value.
        value: Bytes,
    },
    /// Reads `key`; answered by [`KvResponse::Value`].
    Get {
        /// Key to read.
        key: Bytes,
    },
    /// Removes `key`; answered by [`KvResponse::Deleted`], telling whether
    /// it existed.
    Delete {
        /// Key to remove.
        key: Bytes,
    },
    /// Sets `key` to `new` if its current value is `expected` (`None`: the
    /// key is absent); answered by [`KvResponse::Cas`], telling whether it
    /// did.
    Cas {
        /// Key to compare and set.
        key: Bytes,
        /// Value the key must currently have, `None` for absent.
        expected: Option<Bytes>,
        /// Value to set when the comparison succeeds.
        new: Bytes,
    },
}

impl KvCommand {
    /// Encodes the command (see the [module documentation](self)).
    ///
    /// # Panics
    ///
    /// If a key or value is longer than `u32::MAX` bytes.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        match self {
            KvCommand::Put { key, value } => {
                buf.put_u8(TAG_PUT);
                put_bytes(&mut buf, key);
                put_bytes(&mut buf, value);
            }
            KvCommand::Get { key } => {
                buf.put_u8(TAG_GET);
                put_bytes(&mut buf, key);
            }
            KvCommand::Delete { key } => {
                buf.put_u8(TAG_DELETE);
                put_bytes(&mut buf, key);
            }
            KvCommand::Cas { key, expected, new } => {
                buf.put_u8(TAG_CAS);
                put_bytes(&mut buf, key);
                put_opt_bytes(&mut buf, expected.as_deref());
                put_bytes(&mut buf, new);
            }
        }
        buf.freeze()
    }

    /// Decodes a command made by [`encode`](Self::encode). Never panics:
    /// malformed input of any kind is a [`KvDecodeError`].
    pub fn decode(input: &[u8]) -> Result<KvCommand, KvDecodeError> {
        let mut r = Reader::new(input);
        let command = match r.u8("tag")? {
            TAG_PUT => KvCommand::Put {
                key: r.bytes("key")?,
                value: r.bytes("value")?,
            },
            TAG_GET => KvCommand::Get {
                key: r.bytes("key")?,
            },
            TAG_DELETE => KvCommand::Delete {
                key: r.bytes("key")?,
            },
            TAG_CAS => KvCommand::Cas {
                key: r.bytes("key")?,
                expected: r.opt_bytes("expected")?,
                new: r.bytes("new value")?,
            },
            tag => return Err(KvDecodeError::UnknownTag(tag)),
        };
        r.finish()?;
        Ok(command)
    }
}

/// The answer of the key-value state machine to one command.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvResponse {
    /// A [`KvCommand::Put`] was applied.
    Done,
    /// The value read by a [`KvCommand::Get`], `None` if the key is absent.
    Value(Option<Bytes>),
    /// Whether the key removed by a [`KvCommand::Delete`] existed.
    Deleted(bool),
    /// Whether a [`KvCommand::Cas`] matched and set the new value.
    Cas(bool),
    /// The entry was not applied: its command could not be decoded, or it
    /// was out of order (see [`KvStateMachine`]).
    Error(String),
}

impl KvResponse {
    /// Encodes the response (see the [module documentation](self)).
    ///
    /// # Panics
    ///
    /// If a value or error text is longer than `u32::MAX` bytes.
    pub fn encode(&self) -> Bytes {
        // Answers of a fixed size need no allocation: one is returned for
        // every write applied. The others go into a buffer of their size.
        match self {
            KvResponse::Done => Bytes::from_static(&[TAG_DONE]),
            KvResponse::Deleted(existed) => Bytes::from_static(if *existed {
                &[TAG_DELETED, 1]
            } else {
                &[TAG_DELETED, 0]
            }),
            KvResponse::Cas(swapped) => Bytes::from_static(if *swapped {
                &[TAG_CAS_RESULT, 1]
            } else {
                &[TAG_CAS_RESULT, 0]
            }),
            KvResponse::Value(value) => {
                let mut buf = BytesMut::with_capacity(6 + value.as_ref().map_or(0, Bytes::len));
                buf.put_u8(TAG_VALUE);
                put_opt_bytes(&mut buf, value.as_deref());
                buf.freeze()
            }
            KvResponse::Error(text) => {
                let mut buf = BytesMut::with_capacity(5 + text.len());
                buf.put_u8(TAG_ERROR);
                put_bytes(&mut buf, text.as_bytes());
                buf.freeze()
            }
        }
    }

    /// Decodes a response made by [`encode`](Self::encode). Never panics:
    /// malformed input of any kind is a [`KvDecodeError`].
    pub fn decode(input: &[u8]) -> Result<KvResponse, KvDecodeError> {
        let mut r = Reader::new(input);
        let response = match r.u8("tag")? {
            TAG_DONE => KvResponse::Done,
            TAG_VALUE => KvResponse::Value(r.opt_bytes("value")?),
            TAG_DELETED => KvResponse::Deleted(r.bool("deleted flag")?),
            TAG_CAS_RESULT => KvResponse::Cas(r.bool("cas flag")?),
            TAG_ERROR => {
                let text = r.bytes("error text")?;
                let text =
                    String::from_utf8(text.to_vec()).map_err(|_| KvDecodeError::InvalidUtf8)?;
                KvResponse::Error(text)
            }
            tag => return Err(KvDecodeError::UnknownTag(tag)),
        };
        r.finish()?;
        Ok(response)
    }
}

/// Why bytes could not be decoded as a [`KvCommand`], a [`KvResponse`] or a
/// snapshot image.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KvDecodeError {
    /// The input ended before a field was complete.
    #[error("truncated input: {field} needs {needed} bytes, {remaining} left")]
    Truncated {
        /// Field being read.
        field: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes that were left.
        remaining: usize,
    },
    /// The first byte names no known command or response.
    #[error("unknown tag {0:#04x}")]
    UnknownTag(u8),
    /// A presence flag or boolean was neither 0 nor 1.
    #[error("invalid {field} byte {value:#04x}, expected 0 or 1")]
    InvalidFlag {
        /// Field being read.
        field: &'static str,
        /// The byte found.
        value: u8,
    },
    /// The input continued after a complete value.
    #[error("{0} trailing bytes after the end")]
    TrailingBytes(usize),
    /// An error text was not valid UTF-8.
    #[error("error text is not valid UTF-8")]
    InvalidUtf8,
}

fn put_bytes(buf: &mut BytesMut, data: &[u8]) {
    let len = u32::try_from(data.len()).expect("byte string longer than u32::MAX");
    buf.put_u32(len);
    buf.put_slice(data);
}

fn put_opt_bytes(buf: &mut BytesMut, data: Option<&[u8]>) {
    match data {
        None => buf.put_u8(0),
        Some(data) => {
            buf.put_u8(1);
            put_bytes(buf, data);
        }
    }
}

/// Reads fields off the front of a byte slice, checking every length
/// against what is left before using it.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(input: &'a [u8]) -> Self {
        Self { rest: input }
    }

    fn take(&mut self, needed: usize, field: &'static str) -> Result<&'a [u8], KvDecodeError> {
        if needed > self.rest.len() {
            return Err(KvDecodeError::Truncated {
                field,
                needed,
                remaining: self.rest.len(),
            });
        }
        let (head, tail) = self.rest.split_at(needed);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], KvDecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, KvDecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, KvDecodeError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, KvDecodeError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    fn bool(&mut self, field: &'static str) -> Result<bool, KvDecodeError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(KvDecodeError::InvalidFlag { field, value }),
        }
    }

    fn bytes(&mut self, field: &'static str) -> Result<Bytes, KvDecodeError> {
        // A length that does not fit in usize cannot fit in the input either.
        let len = usize::try_from(self.u32(field)?).unwrap_or(usize::MAX);
        Ok(Bytes::copy_from_slice(self.take(len, field)?))
    }

    fn opt_bytes(&mut self, field: &'static str) -> Result<Option<Bytes>, KvDecodeError> {
        if self.bool(field)? {
            Ok(Some(self.bytes(field)?))
        } else {
            Ok(None)
        }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn finish(self) -> Result<(), KvDecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(KvDecodeError::TrailingBytes(self.rest.len()))
        }
    }
}

/// An in-memory key-value [`StateMachine`] over a `BTreeMap<Bytes, Bytes>`.
///
/// Each [`Payload::Command`] entry holds an encoded [`KvCommand`] and is
/// answered by an encoded [`KvResponse`]; [`Payload::Blank`] entries (and any
/// other payload kind) are answered by an empty response. A command that
/// cannot be decoded is answered by [`KvResponse::Error`] and changes nothing
/// but [`last_applied`](StateMachine::last_applied): it is committed, so every
/// replica answers it the same way.
///
/// # Out-of-order entries
///
/// [`apply`](StateMachine::apply) expects each entry's index to be
/// `last_applied().index + 1`. It never panics when that does not hold:
///
/// - an entry at or below `last_applied` was already applied; it is skipped
///   (the state is not touched) and answered by a [`KvResponse::Error`];
/// - an entry past `last_applied + 1` would leave a gap; it is not applied
///   and is answered by a [`KvResponse::Error`].
///
/// Either way `last_applied` does not move for that entry, and every entry
/// still gets exactly one response.
///
/// # Snapshots
///
/// An image is `KVS1`, the last applied term and index (`u64` big-endian
/// each), the number of pairs (`u64` big-endian), then each pair as two
/// length-prefixed byte strings in strictly increasing key order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStateMachine {
    map: BTreeMap<Bytes, Bytes>,
    last_applied: LogId,
}

impl KvStateMachine {
    /// An empty machine that has applied nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.map.get(key).cloned()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no key is set.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// A deterministic 64-bit FNV-1a hash of the key/value pairs, in key
    /// order, with every key and value prefixed by its length. Replicas with
    /// equal contents have equal hashes on every platform and in every run;
    /// `last_applied` is not included.
    pub fn state_hash(&self) -> u64 {
        const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        fn feed(hash: &mut u64, data: &[u8]) {
            for &b in data {
                *hash ^= u64::from(b);
                *hash = hash.wrapping_mul(PRIME);
            }
        }
        let mut hash = OFFSET_BASIS;
        for (key, value) in &self.map {
            feed(&mut hash, &(key.len() as u64).to_be_bytes());
            feed(&mut hash, key);
            feed(&mut hash, &(value.len() as u64).to_be_bytes());
            feed(&mut hash, value);
        }
        hash
    }

    fn execute(&mut self, command: KvCommand) -> KvResponse {
        match command {
            KvCommand::Put { key, value } => {
                self.map.insert(key, value);
                KvResponse::Done
            }
            KvCommand::Get { key } => KvResponse::Value(self.map.get(&key).cloned()),
            KvCommand::Delete { key } => KvResponse::Deleted(self.map.remove(&key).is_some()),
            KvCommand::Cas { key, expected, new } => {
                if self.map.get(&key) == expected.as_ref() {
                    self.map.insert(key, new);
                    KvResponse::Cas(true)
                } else {
                    KvResponse::Cas(false)
                }
            }
        }
    }

    fn apply_one(&mut self, entry: &Entry) -> Bytes {
        let index = entry.id.index;
        let expected = self.last_applied.index.next();
        if index < expected {
            return KvResponse::Error(format!(
                "entry {} skipped: already applied up to {}",
                entry.id, self.last_applied
            ))
            .encode();
        }
        if index > expected {
            return KvResponse::Error(format!(
                "entry {} not applied: expected index {expected}",
                entry.id
            ))
            .encode();
        }
        self.last_applied = entry.id;
        match &entry.payload {
            Payload::Command(data) => match KvCommand::decode(data) {
                Ok(command) => self.execute(command).encode(),
                Err(e) => KvResponse::Error(format!("malformed command: {e}")).encode(),
            },
            // Blank entries, and payload kinds this machine does not know,
            // carry no command.
            _ => Bytes::new(),
        }
    }

    fn encode_image(&self) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_slice(SNAPSHOT_MAGIC);
        buf.put_u64(self.last_applied.term.0);
        buf.put_u64(self.last_applied.index.0);
        buf.put_u64(self.map.len() as u64);
        for (key, value) in &self.map {
            put_bytes(&mut buf, key);
            put_bytes(&mut buf, value);
        }
        buf.freeze()
    }

    fn decode_image(image: &[u8]) -> Result<(LogId, BTreeMap<Bytes, Bytes>), String> {
        let mut r = Reader::new(image);
        let magic = r.array::<4>("magic").map_err(|e| e.to_string())?;
        if &magic != SNAPSHOT_MAGIC {
            return Err(format!("unknown snapshot format {magic:02x?}"));
        }
        let fields = |r: &mut Reader<'_>| -> Result<(LogId, u64), KvDecodeError> {
            let term = Term(r.u64("term")?);
            let index = LogIndex(r.u64("index")?);
            Ok((LogId::new(term, index), r.u64("pair count")?))
        };
        let (last, count) = fields(&mut r).map_err(|e| e.to_string())?;
        let mut map = BTreeMap::new();
        let mut previous: Option<Bytes> = None;
        for n in 0..count {
            // Every pair takes at least 8 bytes, so a huge count fails here
            // rather than looping.
            if r.is_empty() {
                return Err(format!("image ends after {n} of {count} pairs"));
            }
            let key = r.bytes("key").map_err(|e| e.to_string())?;
            let value = r.bytes("value").map_err(|e| e.to_string())?;
            if previous.as_ref().is_some_and(|p| *p >= key) {
                return Err(format!("keys out of order at pair {n}"));
            }
            previous = Some(key.clone());
            map.insert(key, value);
        }
        r.finish().map_err(|e| e.to_string())?;
        Ok((last, map))
    }
}

impl StateMachine for KvStateMachine {
    /// Applies `entries` in order and answers each one; see the type's
    /// documentation for what happens to out-of-order entries.
    fn apply(&mut self, entries: &[Entry]) -> impl Future<Output = Vec<Bytes>> + Send {
        let responses = entries.iter().map(|e| self.apply_one(e)).collect();
        ready(responses)
    }

    fn last_applied(&self) -> LogId {
        self.last_applied
    }

    fn snapshot(&self) -> impl Future<Output = Result<Bytes, StorageError>> + Send {
        ready(Ok(self.encode_image()))
    }

    /// Replaces the state with `image`. A malformed image, or one whose last
    /// applied entry is not `last`, is a [`StorageError::Corrupt`] error and
    /// leaves the state unchanged.
    fn restore(
        &mut self,
        last: LogId,
        image: Bytes,
    ) -> impl Future<Output = Result<(), StorageError>> + Send {
        let corrupt = |detail: String| StorageError::Corrupt {
            path: "<memory>".into(),
            detail,
        };
        let result = match Self::decode_image(&image) {
            Ok((image_last, _)) if image_last != last => Err(corrupt(format!(
                "snapshot image is as of {image_last}, expected {last}"
            ))),
            Ok((_, map)) => {
                self.map = map;
                self.last_applied = last;
                Ok(())
            }
            Err(detail) => Err(corrupt(detail)),
        };
        ready(result)
    }
}

#[cfg(test)]
mod tests {
    use raft_api::Hlc;

    use super::*;
    use crate::test_util::block_on;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    fn cmd_entry(index: u64, command: &KvCommand) -> Entry {
        raw_entry(index, Payload::Command(command.encode()))
    }

    fn raw_entry(index: u64, payload: Payload) -> Entry {
        Entry {
            id: LogId::new(Term(1), LogIndex(index)),
            timestamp: Hlc::new(index, 0),
            payload,
        }
    }

    fn put(key: &'static str, value: &'static str) -> KvCommand {
        KvCommand::Put {
            key: b(key),
            value: b(value),
        }
    }

    fn get(key: &'static str) -> KvCommand {
        KvCommand::Get { key: b(key) }
    }

    fn delete(key: &'static str) -> KvCommand {
        KvCommand::Delete { key: b(key) }
    }

    fn cas(key: &'static str, expected: Option<&'static str>, new: &'static str) -> KvCommand {
        KvCommand::Cas {
            key: b(key),
            expected: expected.map(b),
            new: b(new),
        }
    }

    /// Applies `commands` as entries following `last_applied` and decodes the
    /// responses.
    fn run(sm: &mut KvStateMachine, commands: &[KvCommand]) -> Vec<KvResponse> {
        let start = sm.last_applied().index.0 + 1;
        let entries: Vec<_> = commands
            .iter()
            .zip(start..)
            .map(|(c, i)| cmd_entry(i, c))
            .collect();
        decode_all(&block_on(sm.apply(&entries)))
    }

    fn decode_all(responses: &[Bytes]) -> Vec<KvResponse> {
        responses
            .iter()
            .map(|r| KvResponse::decode(r).unwrap())
            .collect()
    }

    fn all_commands() -> Vec<KvCommand> {
        vec![
            put("k", "v"),
            put("", ""),
            get("key"),
            get(""),
            delete("gone"),
            cas("c", None, "first"),
            cas("c", Some("first"), "second"),
            cas("", Some(""), ""),
        ]
    }

    fn all_responses() -> Vec<KvResponse> {
        vec![
            KvResponse::Done,
            KvResponse::Value(None),
            KvResponse::Value(Some(b("value"))),
            KvResponse::Value(Some(Bytes::new())),
            KvResponse::Deleted(true),
            KvResponse::Deleted(false),
            KvResponse::Cas(true),
            KvResponse::Cas(false),
            KvResponse::Error(String::new()),
            KvResponse::Error("bad thing: ünïcode".into()),
        ]
    }

    /// A small deterministic generator (splitmix64).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn bytes(&mut self, max_len: u64) -> Vec<u8> {
            let len = self.next() % (max_len + 1);
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    #[test]
    fn put_get_delete() {
        let mut sm = KvStateMachine::new();
        assert!(sm.is_empty());
        let got = run(
            &mut sm,
            &[
                get("a"),
                put("a", "1"),
                get("a"),
                put("a", "2"),
                get("a"),
                delete("a"),
                delete("a"),
                get("a"),
            ],
        );
        assert_eq!(
            got,
            [
                KvResponse::Value(None),
                KvResponse::Done,
                KvResponse::Value(Some(b("1"))),
                KvResponse::Done,
                KvResponse::Value(Some(b("2"))),
                KvResponse::Deleted(true),
                KvResponse::Deleted(false),
                KvResponse::Value(None),
            ]
        );
        assert!(sm.is_empty());
        assert_eq!(sm.last_applied(), LogId::new(Term(1), LogIndex(8)));
    }

    #[test]
    fn helpers_read_state() {
        let mut sm = KvStateMachine::new();
        run(&mut sm, &[put("x", "1"), put("y", "2"), put("x", "3")]);
        assert_eq!(sm.len(), 2);
        assert!(!sm.is_empty());
        assert_eq!(sm.get(b"x"), Some(b("3")));
        assert_eq!(sm.get(b"y"), Some(b("2")));
        assert_eq!(sm.get(b"z"), None);
    }

    #[test]
    fn cas_on_absent_key() {
        let mut sm = KvStateMachine::new();
        let got = run(
            &mut sm,
            &[
                cas("k", Some("x"), "no"),
                cas("k", None, "yes"),
                cas("k", None, "again"),
            ],
        );
        assert_eq!(
            got,
            [
                KvResponse::Cas(false),
                KvResponse::Cas(true),
                KvResponse::Cas(false)
            ]
        );
        assert_eq!(sm.get(b"k"), Some(b("yes")));
    }

    #[test]
    fn cas_on_present_key() {
        let mut sm = KvStateMachine::new();
        let got = run(
            &mut sm,
            &[
                put("k", "old"),
                cas("k", Some("wrong"), "no"),
                cas("k", Some("old"), "new"),
                cas("k", Some("old"), "newer"),
            ],
        );
        assert_eq!(
            got,
            [
                KvResponse::Done,
                KvResponse::Cas(false),
                KvResponse::Cas(true),
                KvResponse::Cas(false)
            ]
        );
        assert_eq!(sm.get(b"k"), Some(b("new")));
    }

    #[test]
    fn blank_entries_get_empty_responses() {
        let mut sm = KvStateMachine::new();
        let entries = [
            raw_entry(1, Payload::Blank),
            cmd_entry(2, &put("a", "b")),
            raw_entry(3, Payload::Blank),
        ];
        let got = block_on(sm.apply(&entries));
        assert_eq!(got.len(), 3);
        assert!(got[0].is_empty());
        assert_eq!(KvResponse::decode(&got[1]).unwrap(), KvResponse::Done);
        assert!(got[2].is_empty());
        assert_eq!(sm.last_applied().index, LogIndex(3));
    }

    #[test]
    fn malformed_command_is_answered_with_an_error() {
        let mut sm = KvStateMachine::new();
        let entries = [
            raw_entry(1, Payload::Command(Bytes::from_static(&[0xff, 1, 2]))),
            raw_entry(2, Payload::Command(Bytes::new())),
            cmd_entry(3, &put("a", "b")),
        ];
        let got = decode_all(&block_on(sm.apply(&entries)));
        assert!(matches!(&got[0], KvResponse::Error(t) if t.contains("unknown tag")));
        assert!(matches!(&got[1], KvResponse::Error(t) if t.contains("truncated")));
        assert_eq!(got[2], KvResponse::Done);
        // Malformed entries still count as applied.
        assert_eq!(sm.last_applied().index, LogIndex(3));
        assert_eq!(sm.len(), 1);
    }

    #[test]
    fn duplicate_entries_are_skipped() {
        let mut sm = KvStateMachine::new();
        run(&mut sm, &[put("a", "1"), put("b", "1")]);
        let before = sm.clone();
        let entries = [
            cmd_entry(1, &put("a", "dup")),
            cmd_entry(2, &delete("b")),
            raw_entry(2, Payload::Blank),
        ];
        let got = decode_all(&block_on(sm.apply(&entries)));
        assert_eq!(got.len(), 3);
        assert!(
            got.iter()
                .all(|r| matches!(r, KvResponse::Error(t) if t.contains("already applied")))
        );
        assert_eq!(sm, before);
        // A batch that overlaps what was applied: only the new part applies.
        let entries = [cmd_entry(2, &put("b", "dup")), cmd_entry(3, &put("c", "3"))];
        let got = decode_all(&block_on(sm.apply(&entries)));
        assert!(matches!(got[0], KvResponse::Error(_)));
        assert_eq!(got[1], KvResponse::Done);
        assert_eq!(sm.get(b"b"), Some(b("1")));
        assert_eq!(sm.get(b"c"), Some(b("3")));
        assert_eq!(sm.last_applied().index, LogIndex(3));
    }

    #[test]
    fn entries_after_a_gap_are_not_applied() {
        let mut sm = KvStateMachine::new();
        run(&mut sm, &[put("a", "1")]);
        let entries = [
            cmd_entry(3, &put("gap", "x")),
            cmd_entry(2, &put("b", "2")),
            cmd_entry(5, &put("gap", "y")),
            raw_entry(3, Payload::Blank),
        ];
        let got = block_on(sm.apply(&entries));
        assert_eq!(got.len(), 4);
        assert!(matches!(
            KvResponse::decode(&got[0]).unwrap(),
            KvResponse::Error(t) if t.contains("expected index i2")
        ));
        assert_eq!(KvResponse::decode(&got[1]).unwrap(), KvResponse::Done);
        assert!(matches!(
            KvResponse::decode(&got[2]).unwrap(),
            KvResponse::Error(t) if t.contains("expected index i3")
        ));
        assert!(got[3].is_empty());
        assert_eq!(sm.get(b"gap"), None);
        assert_eq!(sm.last_applied().index, LogIndex(3));
    }

    #[test]
    fn empty_batch_changes_nothing() {
        let mut sm = KvStateMachine::new();
        assert!(block_on(sm.apply(&[])).is_empty());
        assert_eq!(sm.last_applied(), LogId::default());
    }

    #[test]
    fn apply_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let mut sm = KvStateMachine::new();
        let fut = sm.apply(&[]);
        assert_send(&fut);
        block_on(fut);
        let fut = sm.snapshot();
        assert_send(&fut);
        let image = block_on(fut).unwrap();
        let fut = sm.restore(LogId::default(), image);
        assert_send(&fut);
        block_on(fut).unwrap();
    }

    #[test]
    fn commands_round_trip() {
        for command in all_commands() {
            let encoded = command.encode();
            assert_eq!(KvCommand::decode(&encoded).unwrap(), command);
        }
    }

    #[test]
    fn responses_round_trip() {
        for response in all_responses() {
            let encoded = response.encode();
            assert_eq!(KvResponse::decode(&encoded).unwrap(), response);
        }
    }

    #[test]
    fn encoding_is_as_documented() {
        assert_eq!(
            &put("ab", "c").encode()[..],
            [1, 0, 0, 0, 2, b'a', b'b', 0, 0, 0, 1, b'c']
        );
        assert_eq!(
            &cas("k", None, "").encode()[..],
            [4, 0, 0, 0, 1, b'k', 0, 0, 0, 0, 0]
        );
        assert_eq!(&KvResponse::Done.encode()[..], [1]);
        assert_eq!(&KvResponse::Cas(true).encode()[..], [4, 1]);
        assert_eq!(&KvResponse::Value(None).encode()[..], [2, 0]);
    }

    #[test]
    fn every_truncated_prefix_is_an_error() {
        for command in all_commands() {
            let encoded = command.encode();
            for len in 0..encoded.len() {
                let err = KvCommand::decode(&encoded[..len]).unwrap_err();
                assert!(
                    matches!(err, KvDecodeError::Truncated { .. }),
                    "{command:?} cut at {len}: {err}"
                );
            }
        }
        for response in all_responses() {
            let encoded = response.encode();
            for len in 0..encoded.len() {
                let err = KvResponse::decode(&encoded[..len]).unwrap_err();
                assert!(
                    matches!(err, KvDecodeError::Truncated { .. }),
                    "{response:?} cut at {len}: {err}"
                );
            }
        }
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        for command in all_commands() {
            let mut encoded = command.encode().to_vec();
            encoded.push(0);
            assert_eq!(
                KvCommand::decode(&encoded).unwrap_err(),
                KvDecodeError::TrailingBytes(1)
            );
        }
        for response in all_responses() {
            let mut encoded = response.encode().to_vec();
            encoded.extend_from_slice(b"xyz");
            assert_eq!(
                KvResponse::decode(&encoded).unwrap_err(),
                KvDecodeError::TrailingBytes(3)
            );
        }
    }

    #[test]
    fn specific_malformations() {
        assert_eq!(
            KvCommand::decode(&[9]).unwrap_err(),
            KvDecodeError::UnknownTag(9)
        );
        assert_eq!(
            KvResponse::decode(&[0]).unwrap_err(),
            KvDecodeError::UnknownTag(0)
        );
        assert_eq!(
            KvResponse::decode(&[TAG_DELETED, 2]).unwrap_err(),
            KvDecodeError::InvalidFlag {
                field: "deleted flag",
                value: 2
            }
        );
        assert!(matches!(
            KvCommand::decode(&[TAG_CAS, 0, 0, 0, 0, 7]).unwrap_err(),
            KvDecodeError::InvalidFlag { value: 7, .. }
        ));
        assert_eq!(
            KvResponse::decode(&[TAG_ERROR, 0, 0, 0, 2, 0xc3, 0x28]).unwrap_err(),
            KvDecodeError::InvalidUtf8
        );
        // A length far beyond the input is reported, not allocated.
        assert_eq!(
            KvCommand::decode(&[TAG_GET, 0xff, 0xff, 0xff, 0xff, 1]).unwrap_err(),
            KvDecodeError::Truncated {
                field: "key",
                needed: u32::MAX as usize,
                remaining: 1
            }
        );
        // Error messages are readable.
        assert_eq!(
            KvDecodeError::UnknownTag(0xab).to_string(),
            "unknown tag 0xab"
        );
    }

    #[test]
    fn random_garbage_never_panics() {
        let mut rng = Rng(0x5eed);
        let mut sm = KvStateMachine::new();
        let mut decoded = 0;
        for i in 0..20_000u64 {
            let mut data = rng.bytes(24);
            // Bias toward valid tags and small lengths so decoding gets deep.
            if let Some(first) = data.first_mut() {
                *first %= 6;
            }
            if i.is_multiple_of(2) && data.len() > 4 {
                data[1..4].fill(0);
                data[4] %= 8;
            }
            decoded += usize::from(KvCommand::decode(&data).is_ok());
            let _ = KvResponse::decode(&data);
            let _ = KvStateMachine::decode_image(&data);
            // Garbage committed as a command is answered, never a panic.
            let entry = raw_entry(i + 1, Payload::Command(Bytes::from(data)));
            let got = block_on(sm.apply(&[entry]));
            assert!(KvResponse::decode(&got[0]).is_ok());
        }
        assert!(decoded > 0, "the generator should hit some valid commands");
        assert_eq!(sm.last_applied().index, LogIndex(20_000));
    }

    #[test]
    fn mutated_encodings_never_panic() {
        let mut rng = Rng(42);
        let valid: Vec<Vec<u8>> = all_commands()
            .iter()
            .map(|c| c.encode().to_vec())
            .chain(all_responses().iter().map(|r| r.encode().to_vec()))
            .collect();
        for _ in 0..20_000 {
            let mut data = valid[(rng.next() % valid.len() as u64) as usize].clone();
            let pos = (rng.next() % data.len() as u64) as usize;
            data[pos] = rng.next() as u8;
            let _ = KvCommand::decode(&data);
            let _ = KvResponse::decode(&data);
        }
    }

    #[test]
    fn snapshot_restore_round_trip() {
        let mut sm = KvStateMachine::new();
        run(
            &mut sm,
            &[
                put("a", "1"),
                put("b", ""),
                put("", "empty key"),
                delete("a"),
                put("c", "3"),
            ],
        );
        let last = sm.last_applied();
        let image = block_on(sm.snapshot()).unwrap();

        let mut other = KvStateMachine::new();
        run(&mut other, &[put("stale", "x")]);
        block_on(other.restore(last, image.clone())).unwrap();
        assert_eq!(other, sm);
        assert_eq!(other.last_applied(), last);
        assert_eq!(other.state_hash(), sm.state_hash());
        assert_eq!(other.get(b"stale"), None);
        // And the restored machine carries on from there.
        assert_eq!(
            run(&mut other, &[get("c")]),
            [KvResponse::Value(Some(b("3")))]
        );
        assert_eq!(other.last_applied().index, LogIndex(6));

        // An empty machine round-trips too.
        let empty = KvStateMachine::new();
        let image = block_on(empty.snapshot()).unwrap();
        block_on(other.restore(LogId::default(), image)).unwrap();
        assert_eq!(other, empty);
    }

    #[test]
    fn corrupt_images_are_rejected_and_change_nothing() {
        let mut sm = KvStateMachine::new();
        run(&mut sm, &[put("a", "1"), put("b", "2")]);
        let last = sm.last_applied();
        let image = block_on(sm.snapshot()).unwrap();

        let mut target = KvStateMachine::new();
        run(&mut target, &[put("keep", "me")]);
        let before = target.clone();

        let mut bad: Vec<Vec<u8>> = Vec::new();
        // Every truncation.
        bad.extend((0..image.len()).map(|n| image[..n].to_vec()));
        // Trailing bytes.
        bad.push([&image[..], &[0]].concat());
        // Wrong magic.
        bad.push([b"XXXX", &image[4..]].concat());
        // A pair count larger than what follows.
        let mut big_count = image.to_vec();
        big_count[20..28].copy_from_slice(&u64::MAX.to_be_bytes());
        bad.push(big_count);
        // Keys out of order: swap the two pairs.
        let pairs = &image[28..];
        let (first, second) = pairs.split_at(pairs.len() / 2);
        bad.push([&image[..28], second, first].concat());

        for image in bad {
            let err = block_on(target.restore(last, Bytes::from(image))).unwrap_err();
            assert!(
                matches!(&err, StorageError::Corrupt { path, .. } if path.as_os_str() == "<memory>"),
                "{err}"
            );
            assert_eq!(target, before);
        }

        // A valid image that does not match the announced last entry.
        let err = block_on(target.restore(LogId::new(Term(9), LogIndex(9)), image)).unwrap_err();
        assert!(matches!(err, StorageError::Corrupt { detail, .. } if detail.contains("t1-i2")));
        assert_eq!(target, before);
    }

    #[test]
    fn state_hash_depends_on_contents_only() {
        let mut a = KvStateMachine::new();
        let mut b_sm = KvStateMachine::new();
        assert_eq!(a.state_hash(), b_sm.state_hash());
        run(&mut a, &[put("x", "1"), put("y", "2")]);
        run(
            &mut b_sm,
            &[put("y", "2"), put("z", "0"), put("x", "1"), delete("z")],
        );
        assert_eq!(a.state_hash(), b_sm.state_hash());
        run(&mut b_sm, &[put("x", "2")]);
        assert_ne!(a.state_hash(), b_sm.state_hash());
        // Length prefixes keep key/value boundaries apart.
        let mut c = KvStateMachine::new();
        let mut d = KvStateMachine::new();
        run(&mut c, &[put("ab", "c")]);
        run(&mut d, &[put("a", "bc")]);
        assert_ne!(c.state_hash(), d.state_hash());
        // The value is stable across runs and platforms.
        assert_eq!(KvStateMachine::new().state_hash(), 0xcbf2_9ce4_8422_2325);
    }
}
