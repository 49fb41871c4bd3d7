//! Exactly-once client commands: client sessions kept in the replicated
//! state machine.
//!
//! A client that proposes a command and hears nothing back (a timeout, a
//! crashed leader, a leader change) cannot tell whether the command was
//! committed, and retrying it may apply it twice. This module makes retries
//! safe. The client tags each command with a [`Session`] (its client id and a
//! sequence number) and retries with the same pair; the state machine
//! remembers, per client, the last sequence number it applied and the
//! response it gave, and answers a retry with that response instead of
//! applying the command again.
//!
//! - [`encode_command`] puts a small versioned header in front of the
//!   application's command bytes. The driver encodes every command it
//!   proposes this way, with or without a session.
//! - [`SessionMachine`] wraps the application's [`StateMachine`]. It strips
//!   the header, decides what to do with each command, passes the batch on
//!   to the wrapped ("inner") machine and answers every command entry with
//!   an encoded [`SessionReply`].
//! - [`decode_reply`] turns such an answer back into a [`SessionReply`], so
//!   the driver can tell a first application from a deduplicated retry.
//!
//! # Rules
//!
//! For a [`Payload::Command`] entry, with `last` the sequence number the
//! client's session recorded (if it has one):
//!
//! | command | reply | the inner machine sees | session table |
//! |---|---|---|---|
//! | session, no session recorded, or `seq > last` | [`Applied(r)`](SessionReply::Applied) | the command without its header | records `seq`, `r` and the entry's index |
//! | session, `seq == last` | [`Duplicate(r)`](SessionReply::Duplicate), `r` recorded earlier | a [`Payload::Blank`] | refreshes the last-used index |
//! | session, `seq < last` | [`Stale`](SessionReply::Stale) | a [`Payload::Blank`] | refreshes the last-used index |
//! | no session | [`Applied(r)`](SessionReply::Applied), always | the command without its header | unchanged |
//! | no valid header | [`Malformed`](SessionReply::Malformed) | a [`Payload::Blank`] | unchanged |
//!
//! `r` is the inner machine's response to the command. Entries that carry no
//! command ([`Payload::Blank`], [`Payload::Membership`] and payload kinds
//! added later) reach the inner machine unchanged and are answered by an
//! empty response (`Bytes::new()`, not an encoded reply), as the
//! [`StateMachine`] contract asks.
//!
//! Earlier entries of the same batch count like earlier batches: when one
//! batch holds the same `(client, seq)` twice, the second is a `Duplicate`
//! of the first, with the first one's response.
//!
//! # Why rejected commands become blank entries
//!
//! The inner machine must see every log index exactly once, in order:
//! machines such as `storage_mem::KvStateMachine` check that each entry
//! follows the last applied one, and the inner machine's
//! [`last_applied`](StateMachine::last_applied) must reach the end of every
//! batch so that snapshots are taken as of the right entry. Dropping a
//! duplicate would leave a gap in the indexes; passing it on would apply it
//! twice. So a duplicate, stale or malformed command is replaced by a
//! [`Payload::Blank`] entry with the same id and the same HLC timestamp: the
//! inner machine advances exactly as the log does (and logic driven by entry
//! timestamps still sees time pass) without executing anything. The whole
//! batch goes to the inner machine in a single [`apply`](StateMachine::apply)
//! call, and first-time commands reach it as zero-copy slices of the entry's
//! bytes.
//!
//! # Guarantees
//!
//! - **Deterministic.** Every decision depends only on the log and on the
//!   session table, which is part of the replicated state (it is in every
//!   snapshot). Every replica gives every entry the same reply, so a retry
//!   that reaches a new leader after a leader change is answered exactly as
//!   the old leader would have answered it. Nothing depends on wall-clock
//!   time or on which node proposed the entry.
//! - **Exactly once, while the session is kept.** A command carrying a
//!   session changes the inner state at most once, however often it is
//!   retried and committed, and every retry of the client's latest command
//!   gets the response of its first application.
//! - **Across snapshots.** [`snapshot`](StateMachine::snapshot) stores the
//!   session table together with the inner image, and
//!   [`restore`](StateMachine::restore) rebuilds both, so a replica that
//!   installs a snapshot deduplicates like the one that made it.
//!
//! # What clients and operators must do
//!
//! - **Unique client ids** (random 64-bit ids, for example): two clients
//!   sharing an id would see each other's commands as duplicates or stale.
//! - **One command in flight per client id.** A client retries the same
//!   `(client, seq)` until it gets a reply, and only then uses a higher
//!   sequence number. A command whose sequence number is below one already
//!   applied is `Stale` and not applied, and only the latest response is
//!   kept, so a client that pipelines commands under one id would see the
//!   later-committed ones rejected. Concurrent streams need their own ids.
//! - **Enough sessions.** At most `max_sessions` clients are remembered.
//!   When a new client would exceed that, the session with the oldest
//!   last-used log index is evicted (ties, which an honest log never
//!   produces, go to the lowest client id). A client that was evicted and
//!   then retries an old command has it **applied again**, as if it were
//!   new. `max_sessions` must therefore exceed the number of clients active
//!   at once, with margin. `max_sessions == 0` keeps no session at all,
//!   which turns deduplication off.
//! - **The same `max_sessions` on every replica.** It decides evictions and
//!   so is part of the machine's definition, like its code. Restoring an
//!   image with more sessions than `max_sessions` evicts the extra ones by
//!   the same rule.
//!
//! Each kept session holds its latest response, so the table takes about
//! `max_sessions` times the typical response size. A duplicate read returns
//! the value read the first time, not the current one.
//!
//! The wrapper relies on the [`StateMachine`] contract: every committed
//! entry is applied exactly once, in log order, and every `apply` future is
//! driven to completion.
//!
//! # Formats
//!
//! Integers are big-endian.
//!
//! | value | layout |
//! |---|---|
//! | command without session | `0x00` command |
//! | command with session | `0x01` client (`u64`) seq (`u64`) command |
//! | [`SessionReply::Applied`] | `0x00` response |
//! | [`SessionReply::Duplicate`] | `0x01` response |
//! | [`SessionReply::Stale`] | `0x02` |
//! | [`SessionReply::Malformed`] | `0x03` |
//! | snapshot image | `RSES` version (`0x01`) count (`u64`), `count` sessions, inner length (`u64`) inner image |
//! | session in an image | client (`u64`) seq (`u64`) last-used index (`u64`) response length (`u64`) response |
//!
//! Sessions in an image are in strictly increasing client order, and the
//! image ends right after the inner image. Decoding rejects anything else.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use raft_api::{Entry, LogId, LogIndex, Payload, StateMachine, StorageError};

const COMMAND_PLAIN: u8 = 0x00;
const COMMAND_SESSION: u8 = 0x01;
/// Length of the header of a command with a session.
const SESSION_HEADER_LEN: usize = 1 + 8 + 8;

const REPLY_APPLIED: u8 = 0x00;
const REPLY_DUPLICATE: u8 = 0x01;
const REPLY_STALE: u8 = 0x02;
const REPLY_MALFORMED: u8 = 0x03;

/// First bytes of a snapshot image.
const IMAGE_MAGIC: &[u8; 4] = b"RSES";
/// Version of the snapshot image layout, right after the magic.
const IMAGE_VERSION: u8 = 1;
/// Smallest encoding of one session in an image: four `u64` fields.
const IMAGE_SESSION_MIN_LEN: usize = 4 * 8;

/// A client's session tag on one command: who sends it, and which of the
/// client's commands it is.
///
/// A client uses increasing sequence numbers, one command at a time, and
/// retries a command with the same `seq` (see the [module
/// documentation](self)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Session {
    /// The client's id, unique among all clients of the group.
    pub client: u64,
    /// The command's sequence number; higher than any the client used
    /// before, except when retrying.
    pub seq: u64,
}

impl Session {
    /// Builds a session tag.
    pub const fn new(client: u64, seq: u64) -> Self {
        Self { client, seq }
    }
}

/// Encodes a command to propose: the header (with `session` if given), then
/// `command`. See the [module documentation](self) for the layout.
pub fn encode_command(session: Option<Session>, command: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(SESSION_HEADER_LEN + command.len());
    match session {
        None => buf.put_u8(COMMAND_PLAIN),
        Some(session) => {
            buf.put_u8(COMMAND_SESSION);
            buf.put_u64(session.client);
            buf.put_u64(session.seq);
        }
    }
    buf.put_slice(command);
    buf.freeze()
}

/// Splits a command made by [`encode_command`] into its session and the
/// application's bytes, which are a zero-copy slice of `command`. Never
/// panics: a missing or unknown format tag and a truncated header are
/// [`SessionDecodeError`]s.
pub fn decode_command(command: &Bytes) -> Result<(Option<Session>, Bytes), SessionDecodeError> {
    let (session, header) = decode_header(command)?;
    Ok((session, command.slice(header..)))
}

/// Like [`decode_command`], taking the command: the application's bytes are
/// the same buffer, advanced past the header, which costs no reference
/// count update.
fn take_command(mut command: Bytes) -> Result<(Option<Session>, Bytes), SessionDecodeError> {
    let (session, header) = decode_header(&command)?;
    command.advance(header);
    Ok((session, command))
}

/// The session of a command made by [`encode_command`] and the length of
/// its header.
fn decode_header(command: &[u8]) -> Result<(Option<Session>, usize), SessionDecodeError> {
    let mut r = Reader::new(command);
    let session = match r.u8("command format tag")? {
        COMMAND_PLAIN => None,
        COMMAND_SESSION => Some(Session {
            client: r.u64("client id")?,
            seq: r.u64("sequence number")?,
        }),
        tag => return Err(SessionDecodeError::UnknownTag(tag)),
    };
    Ok((session, r.consumed()))
}

/// What a [`SessionMachine`] did with a command entry; its response to the
/// entry is this reply, encoded (see [`decode_reply`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SessionReply {
    /// The command was applied now, for the first time; this is the inner
    /// machine's response.
    Applied(Bytes),
    /// The same `(client, seq)` was applied before and was not applied
    /// again; this is the response it got then.
    Duplicate(Bytes),
    /// The client had already used a higher sequence number: the command was
    /// not applied, and its response (if it ever had one) is no longer known.
    Stale,
    /// The command had no valid session header; it was not applied.
    Malformed,
}

/// Encodes a reply, as a [`SessionMachine`] answers command entries. See the
/// [module documentation](self) for the layout.
pub fn encode_reply(reply: &SessionReply) -> Bytes {
    match reply {
        SessionReply::Applied(response) => tagged(REPLY_APPLIED, response),
        SessionReply::Duplicate(response) => tagged(REPLY_DUPLICATE, response),
        SessionReply::Stale => Bytes::from_static(&[REPLY_STALE]),
        SessionReply::Malformed => Bytes::from_static(&[REPLY_MALFORMED]),
    }
}

/// Decodes a [`SessionMachine`]'s response to a command entry. Never
/// panics: an empty input (such as the empty response to an entry that
/// carries no command), an unknown tag and trailing bytes after
/// [`Stale`](SessionReply::Stale) or [`Malformed`](SessionReply::Malformed)
/// are [`SessionDecodeError`]s.
pub fn decode_reply(bytes: &[u8]) -> Result<SessionReply, SessionDecodeError> {
    let mut r = Reader::new(bytes);
    let reply = match r.u8("reply tag")? {
        REPLY_APPLIED => SessionReply::Applied(Bytes::copy_from_slice(r.rest())),
        REPLY_DUPLICATE => SessionReply::Duplicate(Bytes::copy_from_slice(r.rest())),
        REPLY_STALE => {
            r.finish()?;
            SessionReply::Stale
        }
        REPLY_MALFORMED => {
            r.finish()?;
            SessionReply::Malformed
        }
        tag => return Err(SessionDecodeError::UnknownTag(tag)),
    };
    Ok(reply)
}

/// Why bytes could not be decoded as a session command header or a
/// [`SessionReply`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionDecodeError {
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
    /// The format tag is not one this version knows.
    #[error("unknown tag {0:#04x}")]
    UnknownTag(u8),
    /// The input continued after a complete value.
    #[error("{0} trailing bytes after the end")]
    TrailingBytes(usize),
}

fn tagged(tag: u8, body: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(1 + body.len());
    buf.put_u8(tag);
    buf.put_slice(body);
    buf.freeze()
}

/// Reads fields off the front of a byte slice, checking every length
/// against what is left before using it.
struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(input: &'a [u8]) -> Self {
        Self { input, pos: 0 }
    }

    fn rest(&self) -> &'a [u8] {
        self.input.get(self.pos..).unwrap_or_default()
    }

    fn consumed(&self) -> usize {
        self.pos
    }

    fn take(&mut self, needed: usize, field: &'static str) -> Result<&'a [u8], SessionDecodeError> {
        let rest = self.rest();
        match rest.get(..needed) {
            Some(head) => {
                self.pos += needed;
                Ok(head)
            }
            None => Err(SessionDecodeError::Truncated {
                field,
                needed,
                remaining: rest.len(),
            }),
        }
    }

    fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], SessionDecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, SessionDecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, SessionDecodeError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// A `u64` length followed by that many bytes; returns their range.
    fn sized(&mut self, field: &'static str) -> Result<std::ops::Range<usize>, SessionDecodeError> {
        // A length that does not fit in usize cannot fit in the input either.
        let len = usize::try_from(self.u64(field)?).unwrap_or(usize::MAX);
        let start = self.pos;
        self.take(len, field)?;
        Ok(start..self.pos)
    }

    fn finish(self) -> Result<(), SessionDecodeError> {
        match self.rest().len() {
            0 => Ok(()),
            n => Err(SessionDecodeError::TrailingBytes(n)),
        }
    }
}

/// What the session table remembers about one client.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    /// Highest sequence number applied.
    seq: u64,
    /// The inner machine's response to that command.
    response: Bytes,
    /// Index of the last entry that carried this client's session.
    last_used: LogIndex,
}

/// Sessions by client, with an index by last use for eviction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct SessionTable {
    records: BTreeMap<u64, Record>,
    /// `(last_used, client)` of every record; the first one is evicted next.
    by_use: BTreeSet<(LogIndex, u64)>,
}

impl SessionTable {
    fn len(&self) -> usize {
        self.records.len()
    }

    fn get(&self, client: u64) -> Option<&Record> {
        self.records.get(&client)
    }

    /// Moves the client's last use to `index`.
    fn touch(&mut self, client: u64, index: LogIndex) {
        if let Some(record) = self.records.get_mut(&client) {
            self.by_use.remove(&(record.last_used, client));
            record.last_used = index;
            self.by_use.insert((index, client));
        }
    }

    /// Sets the client's record. A new client is only added when `max` is
    /// not 0, after evicting the least recently used clients (reported to
    /// `evicted`) until there is room. Returns whether the record is kept.
    fn record(
        &mut self,
        client: u64,
        record: Record,
        max: usize,
        mut evicted: impl FnMut(u64),
    ) -> bool {
        if let Some(old) = self.records.get_mut(&client) {
            self.by_use.remove(&(old.last_used, client));
            self.by_use.insert((record.last_used, client));
            *old = record;
            return true;
        }
        if max == 0 {
            return false;
        }
        while self.len() >= max {
            match self.evict_oldest() {
                Some(gone) => evicted(gone),
                None => break,
            }
        }
        self.by_use.insert((record.last_used, client));
        self.records.insert(client, record);
        true
    }

    /// Removes the client with the oldest last use (the lowest client id
    /// among equals).
    fn evict_oldest(&mut self) -> Option<u64> {
        let (_, client) = self.by_use.pop_first()?;
        self.records.remove(&client);
        Some(client)
    }

    /// Evicts clients until at most `max` remain.
    fn shrink_to(&mut self, max: usize) {
        while self.len() > max && self.evict_oldest().is_some() {}
    }

    fn encode(&self, buf: &mut BytesMut) {
        buf.put_u64(self.records.len() as u64);
        for (&client, record) in &self.records {
            buf.put_u64(client);
            buf.put_u64(record.seq);
            buf.put_u64(record.last_used.0);
            buf.put_u64(record.response.len() as u64);
            buf.put_slice(&record.response);
        }
    }
}

/// What [`SessionMachine::apply`] decided for one entry of a batch.
enum Decision {
    /// Not a command: passed on unchanged, answered by an empty response.
    PassThrough,
    /// Passed on without its header; answered by the inner response.
    Applied,
    /// Applied before this batch; answered by this earlier response.
    Duplicate(Bytes),
    /// Applied earlier in this batch, at this position.
    DuplicateInBatch(usize),
    /// Older than the client's latest command.
    Stale,
    /// No valid header.
    Malformed,
}

/// A [`StateMachine`] that wraps another one (the *inner* machine) and
/// applies commands carrying a [`Session`] exactly once, answering retries
/// with the original response.
///
/// Every command entry must have been made by [`encode_command`]; every
/// response to a command entry is an encoded [`SessionReply`] (see
/// [`decode_reply`]), and entries carrying no command are answered by an
/// empty response. See the [module documentation](self) for the rules, the
/// guarantees, and what clients must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionMachine<S> {
    inner: S,
    sessions: SessionTable,
    max_sessions: usize,
}

impl<S> SessionMachine<S> {
    /// Wraps `inner`, remembering at most `max_sessions` clients (0 turns
    /// deduplication off). Every replica of the group must use the same
    /// `max_sessions`.
    pub fn new(inner: S, max_sessions: usize) -> Self {
        Self {
            inner,
            sessions: SessionTable::default(),
            max_sessions,
        }
    }

    /// The wrapped machine.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The wrapped machine, mutably. Changing its state outside of
    /// [`apply`](StateMachine::apply) and [`restore`](StateMachine::restore)
    /// is not replicated and may make replicas diverge.
    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner machine, dropping the session table.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The most clients whose sessions are kept.
    pub fn max_sessions(&self) -> usize {
        self.max_sessions
    }

    /// Number of clients whose sessions are kept.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The highest sequence number applied for `client`, if its session is
    /// kept.
    pub fn last_seq(&self, client: u64) -> Option<u64> {
        self.sessions.get(client).map(|record| record.seq)
    }

    /// Decides every entry of a batch, updating the session table (with
    /// empty responses where the inner machine has yet to answer), and
    /// builds the entries for the inner machine. Also returns, per client
    /// whose recorded response is still pending, the batch position whose
    /// inner response it is.
    fn plan(&mut self, entries: Vec<Entry>) -> (Vec<Decision>, Vec<Entry>, BTreeMap<u64, usize>) {
        let mut decisions = Vec::with_capacity(entries.len());
        let mut inner_entries = Vec::with_capacity(entries.len());
        let mut pending: BTreeMap<u64, usize> = BTreeMap::new();
        for (position, entry) in entries.into_iter().enumerate() {
            let Entry {
                id,
                timestamp,
                payload,
            } = entry;
            let index = id.index;
            let blank = || Entry {
                id,
                timestamp,
                payload: Payload::Blank,
            };
            let with_command = |command: Bytes| Entry {
                id,
                timestamp,
                payload: Payload::Command(command),
            };
            let data = match payload {
                Payload::Command(data) => data,
                payload => {
                    decisions.push(Decision::PassThrough);
                    inner_entries.push(Entry {
                        id,
                        timestamp,
                        payload,
                    });
                    continue;
                }
            };
            let (decision, inner_entry) = match take_command(data) {
                Err(_) => (Decision::Malformed, blank()),
                Ok((None, command)) => (Decision::Applied, with_command(command)),
                Ok((Some(session), command)) => {
                    let Session { client, seq } = session;
                    match self.sessions.get(client) {
                        Some(record) if seq == record.seq => {
                            let decision = match pending.get(&client) {
                                Some(&first) => Decision::DuplicateInBatch(first),
                                None => Decision::Duplicate(record.response.clone()),
                            };
                            self.sessions.touch(client, index);
                            (decision, blank())
                        }
                        Some(record) if seq < record.seq => {
                            self.sessions.touch(client, index);
                            (Decision::Stale, blank())
                        }
                        _ => {
                            let record = Record {
                                seq,
                                response: Bytes::new(),
                                last_used: index,
                            };
                            let kept =
                                self.sessions
                                    .record(client, record, self.max_sessions, |gone| {
                                        pending.remove(&gone);
                                    });
                            if kept {
                                pending.insert(client, position);
                            }
                            (Decision::Applied, with_command(command))
                        }
                    }
                }
            };
            decisions.push(decision);
            inner_entries.push(inner_entry);
        }
        (decisions, inner_entries, pending)
    }
}

impl<S: StateMachine> SessionMachine<S> {
    /// Applies `entries` as [`apply`](StateMachine::apply) does, and
    /// returns each entry's reply before encoding: `None` for an entry that
    /// carries no command. The driver answers its own callers from these,
    /// without encoding and decoding each reply.
    pub(crate) async fn apply_replies(
        &mut self,
        entries: Vec<Entry>,
    ) -> Vec<(LogId, Option<SessionReply>)> {
        let (decisions, inner_entries, pending) = self.plan(entries);
        let inner_responses = self.inner.apply(&inner_entries).await;
        let inner_response =
            |position: usize| inner_responses.get(position).cloned().unwrap_or_default();
        for (client, position) in pending {
            if let Some(record) = self.sessions.records.get_mut(&client) {
                record.response = inner_response(position);
            }
        }
        decisions
            .into_iter()
            .zip(&inner_entries)
            .enumerate()
            .map(|(position, (decision, entry))| {
                let reply = match decision {
                    Decision::PassThrough => None,
                    Decision::Applied => Some(SessionReply::Applied(inner_response(position))),
                    Decision::Duplicate(response) => Some(SessionReply::Duplicate(response)),
                    Decision::DuplicateInBatch(first) => {
                        Some(SessionReply::Duplicate(inner_response(first)))
                    }
                    Decision::Stale => Some(SessionReply::Stale),
                    Decision::Malformed => Some(SessionReply::Malformed),
                };
                (entry.id, reply)
            })
            .collect()
    }
}

impl<S: StateMachine> StateMachine for SessionMachine<S> {
    /// Applies `entries` as the [module documentation](self) describes:
    /// decides each command, passes the whole batch to the inner machine in
    /// one call (headers stripped, rejected commands replaced by blank
    /// entries at the same index), and answers each entry. A response
    /// missing from the inner machine's answer counts as empty.
    async fn apply(&mut self, entries: &[Entry]) -> Vec<Bytes> {
        self.apply_replies(entries.to_vec())
            .await
            .into_iter()
            .map(|(_, reply)| reply.map_or_else(Bytes::new, |reply| encode_reply(&reply)))
            .collect()
    }

    /// The inner machine's last applied entry.
    fn last_applied(&self) -> LogId {
        self.inner.last_applied()
    }

    /// An image holding the session table and the inner machine's image;
    /// see the [module documentation](self) for the layout.
    fn snapshot(&self) -> impl Future<Output = Result<Bytes, StorageError>> + Send {
        let mut buf = BytesMut::new();
        buf.put_slice(IMAGE_MAGIC);
        buf.put_u8(IMAGE_VERSION);
        self.sessions.encode(&mut buf);
        let inner = self.inner.snapshot();
        async move {
            let image = inner.await?;
            buf.put_u64(image.len() as u64);
            buf.put_slice(&image);
            Ok(buf.freeze())
        }
    }

    /// Replaces the session table and the inner state with those of `image`.
    ///
    /// The image is decoded strictly: a truncated or malformed one, or one
    /// with a session used after `last`, is a [`StorageError::Corrupt`] and
    /// changes nothing. The inner image then goes to the inner machine's
    /// `restore`, whose error is returned as is; the session table is only
    /// replaced once that succeeded (so the state is unchanged on error if
    /// the inner machine leaves its own unchanged). Sessions beyond
    /// [`max_sessions`](Self::max_sessions) are evicted by the usual rule.
    async fn restore(&mut self, last: LogId, image: Bytes) -> Result<(), StorageError> {
        let (mut sessions, inner_image) =
            decode_image(&image, last).map_err(|detail| StorageError::Corrupt {
                path: "<session snapshot image>".into(),
                detail,
            })?;
        sessions.shrink_to(self.max_sessions);
        self.inner.restore(last, inner_image).await?;
        self.sessions = sessions;
        Ok(())
    }
}

/// Decodes a snapshot image into the session table and the inner image (a
/// zero-copy slice of `image`).
fn decode_image(image: &Bytes, last: LogId) -> Result<(SessionTable, Bytes), String> {
    let mut r = Reader::new(image);
    let magic = r.array::<4>("magic").map_err(|e| e.to_string())?;
    if &magic != IMAGE_MAGIC {
        return Err(format!("not a session snapshot image: magic {magic:02x?}"));
    }
    let version = r.u8("version").map_err(|e| e.to_string())?;
    if version != IMAGE_VERSION {
        return Err(format!("unknown session snapshot version {version}"));
    }
    let count = r.u64("session count").map_err(|e| e.to_string())?;
    // Every session takes at least IMAGE_SESSION_MIN_LEN bytes, so a huge
    // count fails here rather than looping.
    let room = r.rest().len() / IMAGE_SESSION_MIN_LEN;
    if !usize::try_from(count).is_ok_and(|count| count <= room) {
        return Err(format!(
            "image announces {count} sessions but has room for {room} at most"
        ));
    }
    let mut table = SessionTable::default();
    let mut previous: Option<u64> = None;
    let read_session = |r: &mut Reader<'_>| -> Result<_, SessionDecodeError> {
        let client = r.u64("client id")?;
        let seq = r.u64("sequence number")?;
        let last_used = LogIndex(r.u64("last-used index")?);
        let response = r.sized("response")?;
        Ok((client, seq, last_used, response))
    };
    for n in 0..count {
        let (client, seq, last_used, response) = read_session(&mut r).map_err(|e| e.to_string())?;
        if previous.is_some_and(|p| p >= client) {
            return Err(format!("sessions out of client order at session {n}"));
        }
        previous = Some(client);
        if last_used > last.index {
            return Err(format!(
                "client {client} was last used at {last_used}, after the image's last entry {last}"
            ));
        }
        let record = Record {
            seq,
            response: image.slice(response),
            last_used,
        };
        table.by_use.insert((last_used, client));
        table.records.insert(client, record);
    }
    let inner = r.sized("inner image").map_err(|e| e.to_string())?;
    r.finish().map_err(|e| e.to_string())?;
    Ok((table, image.slice(inner)))
}

#[cfg(test)]
mod tests {
    use std::future::ready;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use raft_api::{Hlc, Membership, NodeId, Term};
    use storage_mem::{KvCommand, KvResponse, KvStateMachine};

    use super::*;

    /// Polls a future that must be ready at once and returns its output.
    fn block_on<F: Future>(future: F) -> F::Output {
        match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(output) => output,
            Poll::Pending => panic!("in-memory futures are always ready"),
        }
    }

    /// A small deterministic generator (xorshift64*).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn bytes(&mut self, max_len: u64) -> Vec<u8> {
            let len = self.below(max_len + 1);
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    fn entry(index: u64, payload: Payload) -> Entry {
        Entry {
            id: LogId::new(Term(2), LogIndex(index)),
            timestamp: Hlc::new(1_000 + index, 7),
            payload,
        }
    }

    /// A command payload for `command`, tagged with `(client, seq)` if given.
    fn kv(session: Option<(u64, u64)>, command: &KvCommand) -> Payload {
        let session = session.map(|(client, seq)| Session::new(client, seq));
        Payload::Command(encode_command(session, &command.encode()))
    }

    fn put(key: &'static str, value: &'static str) -> KvCommand {
        KvCommand::Put {
            key: b(key),
            value: b(value),
        }
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

    fn applied(response: KvResponse) -> SessionReply {
        SessionReply::Applied(response.encode())
    }

    fn duplicate(response: KvResponse) -> SessionReply {
        SessionReply::Duplicate(response.encode())
    }

    /// Applies `payloads` as one batch following `last_applied` and returns
    /// the raw responses.
    fn run_raw<S: StateMachine>(sm: &mut SessionMachine<S>, payloads: Vec<Payload>) -> Vec<Bytes> {
        let start = sm.last_applied().index.0 + 1;
        let entries: Vec<Entry> = (start..).zip(payloads).map(|(i, p)| entry(i, p)).collect();
        let responses = block_on(sm.apply(&entries));
        assert_eq!(responses.len(), entries.len());
        responses
    }

    /// Like [`run_raw`], for command payloads only: decodes the replies.
    fn run<S: StateMachine>(
        sm: &mut SessionMachine<S>,
        payloads: Vec<Payload>,
    ) -> Vec<SessionReply> {
        run_raw(sm, payloads)
            .iter()
            .map(|r| decode_reply(r).unwrap())
            .collect()
    }

    fn kv_machine(max_sessions: usize) -> SessionMachine<KvStateMachine> {
        SessionMachine::new(KvStateMachine::new(), max_sessions)
    }

    /// An inner machine that records every entry it is given and answers a
    /// command `c` with `ok:c`.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    struct Recorder {
        seen: Vec<Entry>,
        last: LogId,
        restored: Option<(LogId, Bytes)>,
    }

    impl StateMachine for Recorder {
        fn apply(&mut self, entries: &[Entry]) -> impl Future<Output = Vec<Bytes>> + Send {
            self.seen.extend_from_slice(entries);
            if let Some(e) = entries.last() {
                self.last = e.id;
            }
            let responses = entries
                .iter()
                .map(|e| match &e.payload {
                    Payload::Command(c) => Bytes::from([b"ok:".as_slice(), c].concat()),
                    _ => Bytes::new(),
                })
                .collect();
            ready(responses)
        }

        fn last_applied(&self) -> LogId {
            self.last
        }

        fn snapshot(&self) -> impl Future<Output = Result<Bytes, StorageError>> + Send {
            ready(Ok(Bytes::from_static(b"recorder")))
        }

        fn restore(
            &mut self,
            last: LogId,
            image: Bytes,
        ) -> impl Future<Output = Result<(), StorageError>> + Send {
            self.last = last;
            self.restored = Some((last, image));
            ready(Ok(()))
        }
    }

    fn raw(session: Option<(u64, u64)>, command: &'static str) -> Payload {
        let session = session.map(|(client, seq)| Session::new(client, seq));
        Payload::Command(encode_command(session, command.as_bytes()))
    }

    fn ok(command: &'static str) -> Bytes {
        Bytes::from(format!("ok:{command}"))
    }

    #[test]
    fn command_header_round_trips_without_copying() {
        let session = Session::new(0x0102_0304_0506_0708, u64::MAX);
        let encoded = encode_command(Some(session), b"body");
        assert_eq!(encoded.len(), SESSION_HEADER_LEN + 4);
        assert_eq!(
            encoded[..9],
            [COMMAND_SESSION, 1, 2, 3, 4, 5, 6, 7, 8],
            "tag then big-endian client id"
        );
        let (got, body) = decode_command(&encoded).unwrap();
        assert_eq!(got, Some(session));
        assert_eq!(body, b("body"));
        assert_eq!(body.as_ptr(), encoded[SESSION_HEADER_LEN..].as_ptr());

        let plain = encode_command(None, b"xyz");
        assert_eq!(plain[..], [COMMAND_PLAIN, b'x', b'y', b'z']);
        assert_eq!(decode_command(&plain).unwrap(), (None, b("xyz")));
        // Empty commands are fine too.
        assert_eq!(
            decode_command(&encode_command(Some(session), b"")).unwrap(),
            (Some(session), Bytes::new())
        );
        assert_eq!(
            decode_command(&encode_command(None, b"")).unwrap(),
            (None, Bytes::new())
        );
    }

    #[test]
    fn malformed_command_headers_are_errors() {
        assert!(matches!(
            decode_command(&Bytes::new()),
            Err(SessionDecodeError::Truncated { needed: 1, .. })
        ));
        assert_eq!(
            decode_command(&Bytes::from_static(&[7, 1, 2])),
            Err(SessionDecodeError::UnknownTag(7))
        );
        let full = encode_command(Some(Session::new(1, 2)), b"");
        for len in 1..full.len() {
            assert!(
                matches!(
                    decode_command(&full.slice(..len)),
                    Err(SessionDecodeError::Truncated { .. })
                ),
                "cut at {len}"
            );
        }
        assert_eq!(
            SessionDecodeError::UnknownTag(0xab).to_string(),
            "unknown tag 0xab"
        );
    }

    #[test]
    fn replies_round_trip_and_reject_garbage() {
        let replies = [
            SessionReply::Applied(b("r")),
            SessionReply::Applied(Bytes::new()),
            SessionReply::Duplicate(b("earlier")),
            SessionReply::Duplicate(Bytes::new()),
            SessionReply::Stale,
            SessionReply::Malformed,
        ];
        for reply in replies {
            assert_eq!(decode_reply(&encode_reply(&reply)).unwrap(), reply);
        }
        assert_eq!(
            encode_reply(&SessionReply::Applied(b("ab")))[..],
            [0, b'a', b'b']
        );
        assert!(matches!(
            decode_reply(&[]),
            Err(SessionDecodeError::Truncated { .. })
        ));
        assert_eq!(decode_reply(&[9]), Err(SessionDecodeError::UnknownTag(9)));
        assert_eq!(
            decode_reply(&[REPLY_STALE, 0]),
            Err(SessionDecodeError::TrailingBytes(1))
        );
        assert_eq!(
            decode_reply(&[REPLY_MALFORMED, 1, 2]),
            Err(SessionDecodeError::TrailingBytes(2))
        );
    }

    #[test]
    fn first_application_duplicate_stale_and_malformed() {
        let mut sm = kv_machine(16);
        // Client 1 creates the key; client 2 deletes it; client 1 retries:
        // applying the retry would recreate the key.
        let replies = run(
            &mut sm,
            vec![
                kv(Some((1, 1)), &cas("k", None, "v1")),
                kv(Some((2, 1)), &delete("k")),
            ],
        );
        assert_eq!(
            replies,
            [
                applied(KvResponse::Cas(true)),
                applied(KvResponse::Deleted(true))
            ]
        );
        let replies = run(&mut sm, vec![kv(Some((1, 1)), &cas("k", None, "v1"))]);
        assert_eq!(replies, [duplicate(KvResponse::Cas(true))]);
        assert_eq!(sm.inner().get(b"k"), None, "the retry was not applied");
        assert_eq!(sm.last_seq(1), Some(1));

        // The client moves on; a late retry of its first command is stale.
        let replies = run(
            &mut sm,
            vec![
                kv(Some((1, 2)), &put("k", "v2")),
                kv(Some((1, 1)), &cas("k", None, "v1")),
                kv(Some((1, 2)), &put("k", "v3")),
            ],
        );
        assert_eq!(
            replies,
            [
                applied(KvResponse::Done),
                SessionReply::Stale,
                duplicate(KvResponse::Done),
            ]
        );
        assert_eq!(sm.inner().get(b"k"), Some(b("v2")));
        assert_eq!(sm.last_seq(1), Some(2));

        // Commands without a valid header are not applied.
        let malformed = vec![
            Payload::Command(Bytes::new()),
            Payload::Command(Bytes::from_static(&[0x42, 1, 2, 3])),
            Payload::Command(encode_command(Some(Session::new(3, 1)), b"").slice(..10)),
            // A bare KvCommand, without any header: its first byte is 0x01
            // (Put), read as a session header that is too short.
            Payload::Command(put("k", "bare").encode().slice(..5)),
        ];
        let replies = run(&mut sm, malformed);
        assert_eq!(replies, vec![SessionReply::Malformed; 4]);
        assert_eq!(sm.inner().get(b"k"), Some(b("v2")));
        assert_eq!(sm.last_seq(3), None);
        // The inner machine saw every index.
        assert_eq!(sm.last_applied().index, LogIndex(10));
        assert_eq!(sm.last_applied(), sm.inner().last_applied());
    }

    #[test]
    fn a_higher_sequence_number_replaces_the_recorded_response() {
        let mut sm = kv_machine(4);
        run(&mut sm, vec![kv(Some((5, 10)), &put("a", "1"))]);
        // Sequence numbers may skip.
        let replies = run(&mut sm, vec![kv(Some((5, 20)), &cas("a", Some("1"), "2"))]);
        assert_eq!(replies, [applied(KvResponse::Cas(true))]);
        let replies = run(
            &mut sm,
            vec![
                kv(Some((5, 20)), &cas("a", Some("1"), "2")),
                kv(Some((5, 10)), &put("a", "1")),
            ],
        );
        assert_eq!(
            replies,
            [duplicate(KvResponse::Cas(true)), SessionReply::Stale]
        );
        assert_eq!(sm.inner().get(b"a"), Some(b("2")));
    }

    #[test]
    fn replies_before_encoding_are_what_apply_encodes() {
        let batch = |start: u64| -> Vec<Entry> {
            let payloads = vec![
                Payload::Blank,
                raw(None, "plain"),
                raw(Some((1, 1)), "a"),
                raw(Some((1, 1)), "a"),
                raw(Some((2, 5)), "b"),
                raw(Some((2, 4)), "old"),
                Payload::Command(Bytes::from_static(&[0xee, 1, 2])),
                Payload::Membership(Box::new(Membership::new([1, 2].map(NodeId)))),
            ];
            (start..).zip(payloads).map(|(i, p)| entry(i, p)).collect()
        };
        let mut encoded = SessionMachine::new(Recorder::default(), 8);
        let mut direct = SessionMachine::new(Recorder::default(), 8);
        // The second round retries every command of the first.
        for start in [1, 9] {
            let entries = batch(start);
            let want = block_on(encoded.apply(&entries));
            let got = block_on(direct.apply_replies(entries.clone()));
            assert_eq!(got.len(), want.len());
            let ids: Vec<LogId> = got.iter().map(|(id, _)| *id).collect();
            let want_ids: Vec<LogId> = entries.iter().map(|e| e.id).collect();
            assert_eq!(ids, want_ids, "each reply comes with its entry's id");
            let got: Vec<_> = got.into_iter().map(|(_, reply)| reply).collect();
            for (got, want) in got.iter().zip(&want) {
                match got {
                    None => assert!(want.is_empty()),
                    Some(reply) => assert_eq!(encode_reply(reply), want),
                }
            }
            assert_eq!(got[0], None, "a blank entry carries no command");
            assert_eq!(got[7], None, "nor does a membership entry");
            assert_eq!(got[6], Some(SessionReply::Malformed));
            assert_eq!(got[5], Some(SessionReply::Stale));
            assert_eq!(got[3], Some(SessionReply::Duplicate(ok("a"))));
        }
        assert_eq!(
            direct.inner(),
            encoded.inner(),
            "the inner machines saw the same"
        );
    }

    #[test]
    fn duplicates_within_one_batch() {
        let mut sm = kv_machine(8);
        let replies = run(
            &mut sm,
            vec![
                kv(Some((1, 1)), &cas("k", None, "first")),
                kv(Some((2, 1)), &delete("k")),
                kv(Some((1, 1)), &cas("k", None, "first")),
                kv(Some((1, 2)), &cas("k", None, "second")),
                kv(Some((1, 2)), &cas("k", None, "second")),
                kv(Some((1, 1)), &cas("k", None, "first")),
                kv(Some((2, 1)), &delete("k")),
            ],
        );
        assert_eq!(
            replies,
            [
                applied(KvResponse::Cas(true)),
                applied(KvResponse::Deleted(true)),
                duplicate(KvResponse::Cas(true)),
                applied(KvResponse::Cas(true)),
                duplicate(KvResponse::Cas(true)),
                SessionReply::Stale,
                duplicate(KvResponse::Deleted(true)),
            ]
        );
        assert_eq!(sm.inner().get(b"k"), Some(b("second")));
        // The responses recorded in the batch answer later retries.
        let replies = run(
            &mut sm,
            vec![
                kv(Some((1, 2)), &cas("k", None, "second")),
                kv(Some((2, 1)), &delete("k")),
            ],
        );
        assert_eq!(
            replies,
            [
                duplicate(KvResponse::Cas(true)),
                duplicate(KvResponse::Deleted(true))
            ]
        );
        assert_eq!(sm.inner().get(b"k"), Some(b("second")));
    }

    #[test]
    fn the_inner_machine_sees_every_index_once_with_headers_stripped() {
        let mut sm = SessionMachine::new(Recorder::default(), 8);
        let membership = Payload::Membership(Box::new(Membership::new([NodeId(1), NodeId(2)])));
        let payloads = vec![
            raw(Some((1, 1)), "a"),
            Payload::Blank,
            raw(Some((1, 1)), "a"),
            raw(None, "b"),
            Payload::Command(Bytes::from_static(&[0xff])),
            membership.clone(),
            raw(Some((1, 0)), "old"),
            raw(Some((2, 1)), "c"),
        ];
        let entries: Vec<Entry> = (1..).zip(payloads).map(|(i, p)| entry(i, p)).collect();
        let responses = block_on(sm.apply(&entries));
        let replies: Vec<Option<SessionReply>> =
            responses.iter().map(|r| decode_reply(r).ok()).collect();
        assert_eq!(
            replies,
            [
                Some(SessionReply::Applied(ok("a"))),
                None,
                Some(SessionReply::Duplicate(ok("a"))),
                Some(SessionReply::Applied(ok("b"))),
                Some(SessionReply::Malformed),
                None,
                Some(SessionReply::Stale),
                Some(SessionReply::Applied(ok("c"))),
            ]
        );
        // Non-command entries are answered by an empty response.
        assert!(responses[1].is_empty() && responses[5].is_empty());

        let seen = &sm.inner().seen;
        let expected_payloads = [
            Payload::Command(b("a")),
            Payload::Blank,
            Payload::Blank,
            Payload::Command(b("b")),
            Payload::Blank,
            membership,
            Payload::Blank,
            Payload::Command(b("c")),
        ];
        assert_eq!(seen.len(), entries.len());
        for ((seen, original), payload) in seen.iter().zip(&entries).zip(expected_payloads) {
            assert_eq!(seen.id, original.id, "same index and term");
            assert_eq!(seen.timestamp, original.timestamp, "same HLC timestamp");
            assert_eq!(seen.payload, payload, "at {}", seen.id);
        }
        // First-time commands are slices of the entry's bytes.
        let (Payload::Command(original), Payload::Command(stripped)) =
            (&entries[0].payload, &seen[0].payload)
        else {
            unreachable!()
        };
        assert_eq!(stripped.as_ptr(), original[SESSION_HEADER_LEN..].as_ptr());

        // Later batches continue at the next index, in one call each.
        run(
            &mut sm,
            vec![raw(Some((2, 1)), "c"), raw(Some((2, 2)), "d")],
        );
        let indexes: Vec<u64> = sm.inner().seen.iter().map(|e| e.id.index.0).collect();
        assert_eq!(indexes, (1..=10).collect::<Vec<_>>());
        assert_eq!(sm.last_applied(), LogId::new(Term(2), LogIndex(10)));
    }

    #[test]
    fn commands_without_a_session_are_always_applied() {
        let mut sm = kv_machine(8);
        let command = kv(None, &cas("k", None, "v"));
        let replies = run(&mut sm, vec![command.clone(), command.clone()]);
        assert_eq!(
            replies,
            [
                applied(KvResponse::Cas(true)),
                applied(KvResponse::Cas(false))
            ]
        );
        run(&mut sm, vec![kv(None, &delete("k"))]);
        assert_eq!(
            run(&mut sm, vec![command]),
            [applied(KvResponse::Cas(true))]
        );
        assert_eq!(sm.session_count(), 0);
    }

    #[test]
    fn non_command_payloads_pass_through() {
        let mut sm = kv_machine(8);
        let membership = Payload::Membership(Box::new(Membership::new([NodeId(3)])));
        let responses = run_raw(&mut sm, vec![Payload::Blank, membership, Payload::Blank]);
        assert_eq!(responses, [Bytes::new(), Bytes::new(), Bytes::new()]);
        assert_eq!(sm.last_applied().index, LogIndex(3));
        assert_eq!(sm.session_count(), 0);
        // And the inner machine still accepts the next index.
        let replies = run(&mut sm, vec![kv(Some((1, 1)), &put("a", "1"))]);
        assert_eq!(replies, [applied(KvResponse::Done)]);
    }

    #[test]
    fn responses_survive_snapshot_and_restore() {
        let mut sm = kv_machine(8);
        run(
            &mut sm,
            vec![
                kv(Some((1, 1)), &cas("k", None, "v1")),
                kv(Some((2, 7)), &put("x", "1")),
                kv(Some((2, 8)), &delete("x")),
                kv(None, &put("y", "2")),
            ],
        );
        let last = sm.last_applied();
        let image = block_on(sm.snapshot()).unwrap();
        assert!(image.starts_with(b"RSES\x01"));

        // A fresh replica, with different state, installs the snapshot.
        let mut other = kv_machine(8);
        run(&mut other, vec![kv(Some((9, 1)), &put("junk", "j"))]);
        block_on(other.restore(last, image.clone())).unwrap();
        assert_eq!(other, sm);
        assert_eq!(other.last_seq(9), None);
        assert_eq!(other.inner().get(b"junk"), None);

        // Both replicas answer the same retries the same way.
        for machine in [&mut sm, &mut other] {
            run(machine, vec![kv(Some((3, 1)), &delete("k"))]);
            let replies = run(
                machine,
                vec![
                    kv(Some((1, 1)), &cas("k", None, "v1")),
                    kv(Some((2, 8)), &delete("x")),
                    kv(Some((2, 7)), &put("x", "1")),
                ],
            );
            assert_eq!(
                replies,
                [
                    duplicate(KvResponse::Cas(true)),
                    duplicate(KvResponse::Deleted(true)),
                    SessionReply::Stale,
                ]
            );
            assert_eq!(machine.inner().get(b"k"), None);
            assert_eq!(machine.inner().get(b"x"), None);
        }
        assert_eq!(other, sm);

        // An empty machine round-trips too.
        let empty = kv_machine(8);
        let image = block_on(empty.snapshot()).unwrap();
        block_on(other.restore(LogId::default(), image)).unwrap();
        assert_eq!(other, empty);
    }

    /// Builds an image by hand, following the documented layout.
    fn image_bytes(sessions: &[(u64, u64, u64, &[u8])], inner: &[u8]) -> Vec<u8> {
        let mut out = b"RSES\x01".to_vec();
        out.extend_from_slice(&(sessions.len() as u64).to_be_bytes());
        for &(client, seq, last_used, response) in sessions {
            for n in [client, seq, last_used, response.len() as u64] {
                out.extend_from_slice(&n.to_be_bytes());
            }
            out.extend_from_slice(response);
        }
        out.extend_from_slice(&(inner.len() as u64).to_be_bytes());
        out.extend_from_slice(inner);
        out
    }

    #[test]
    fn the_image_layout_is_as_documented() {
        let mut sm = SessionMachine::new(Recorder::default(), 8);
        run(
            &mut sm,
            vec![raw(Some((7, 3)), "a"), raw(Some((2, 1)), "bc")],
        );
        let image = block_on(sm.snapshot()).unwrap();
        let expected = image_bytes(&[(2, 1, 2, b"ok:bc"), (7, 3, 1, b"ok:a")], b"recorder");
        assert_eq!(image[..], expected[..]);

        let mut other = SessionMachine::new(Recorder::default(), 8);
        block_on(other.restore(sm.last_applied(), image)).unwrap();
        assert_eq!(
            other.inner().restored,
            Some((sm.last_applied(), b("recorder")))
        );
        assert_eq!(other.sessions, sm.sessions);
    }

    #[test]
    fn corrupt_images_are_rejected_and_change_nothing() {
        let mut sm = kv_machine(8);
        run(
            &mut sm,
            vec![
                kv(Some((1, 1)), &put("a", "1")),
                kv(Some((2, 1)), &put("b", "2")),
            ],
        );
        let last = sm.last_applied();
        let image = block_on(sm.snapshot()).unwrap();

        let mut target = kv_machine(8);
        run(&mut target, vec![kv(Some((5, 5)), &put("keep", "me"))]);
        let before = target.clone();

        let mut bad: Vec<Vec<u8>> = Vec::new();
        // Every truncation.
        bad.extend((0..image.len()).map(|n| image[..n].to_vec()));
        // Trailing bytes.
        bad.push([&image[..], &[0]].concat());
        // Wrong magic and unknown version.
        bad.push([b"XSES", &image[4..]].concat());
        bad.push([b"RSES\x02", &image[5..]].concat());
        // A session count larger than what follows.
        let mut big_count = image.to_vec();
        big_count[5..13].copy_from_slice(&u64::MAX.to_be_bytes());
        bad.push(big_count);
        let mut one_more = image.to_vec();
        one_more[5..13].copy_from_slice(&3u64.to_be_bytes());
        bad.push(one_more);
        // A response length far beyond the input.
        let mut big_response = image.to_vec();
        big_response[13 + 24..13 + 32].copy_from_slice(&u64::MAX.to_be_bytes());
        bad.push(big_response);
        let inner = block_on(sm.inner().snapshot()).unwrap();
        let response = KvResponse::Done.encode();
        // Clients out of order, or repeated.
        bad.push(image_bytes(
            &[(2, 1, 2, &response), (1, 1, 1, &response)],
            &inner,
        ));
        bad.push(image_bytes(
            &[(1, 1, 1, &response), (1, 2, 2, &response)],
            &inner,
        ));
        // A session used after the image's last entry.
        bad.push(image_bytes(&[(1, 1, 3, &response)], &inner));
        // A corrupt inner image.
        bad.push(image_bytes(
            &[(1, 1, 1, &response)],
            &inner[..inner.len() - 1],
        ));
        bad.push(image_bytes(&[(1, 1, 1, &response)], b"KVS9"));
        // The hand-built image itself is fine.
        assert_eq!(
            image_bytes(&[(1, 1, 1, &response), (2, 1, 2, &response)], &inner),
            image[..]
        );

        for bad_image in bad {
            let err = block_on(target.restore(last, Bytes::from(bad_image))).unwrap_err();
            assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
            assert_eq!(target, before);
        }
        // A valid image announced at the wrong entry: the inner machine
        // refuses it.
        let wrong = LogId::new(Term(9), LogIndex(9));
        assert!(block_on(target.restore(wrong, image.clone())).is_err());
        assert_eq!(target, before);
        // The target still works, and the valid image is accepted.
        block_on(target.restore(last, image)).unwrap();
        assert_eq!(target, sm);
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = Rng(0x5e55_1075);
        let mut sm = kv_machine(4);
        for i in 0..5_000u64 {
            let mut data = rng.bytes(40);
            // Bias toward valid tags so decoding gets past the first byte.
            if let Some(first) = data.first_mut() {
                *first %= 3;
            }
            let _ = decode_reply(&data);
            let data = Bytes::from(data);
            let _ = decode_command(&data);
            let _ = decode_image(&data, LogId::new(Term(1), LogIndex(i)));
            let responses = run_raw(&mut sm, vec![Payload::Command(data)]);
            assert!(decode_reply(&responses[0]).is_ok());
        }
        assert_eq!(sm.last_applied().index, LogIndex(5_000));

        // Images with one byte changed: rejected or accepted, never a panic,
        // and a rejected one changes nothing.
        let last = sm.last_applied();
        let image = block_on(sm.snapshot()).unwrap().to_vec();
        let mut target = kv_machine(4);
        for _ in 0..5_000 {
            let mut data = image.clone();
            let pos = rng.below(data.len() as u64) as usize;
            data[pos] = rng.next() as u8;
            let before = target.clone();
            if block_on(target.restore(last, Bytes::from(data))).is_err() {
                assert_eq!(target, before);
            }
        }
    }

    #[test]
    fn eviction_removes_the_least_recently_used_client() {
        let mut sm = kv_machine(2);
        let replies = run(
            &mut sm,
            vec![
                kv(Some((1, 1)), &put("a", "1")),
                kv(Some((2, 1)), &cas("n", None, "x")),
                // Client 1's retry refreshes its session: client 2 is now
                // the least recently used.
                kv(Some((1, 1)), &put("a", "1")),
                kv(Some((3, 1)), &delete("n")),
            ],
        );
        assert_eq!(
            replies,
            [
                applied(KvResponse::Done),
                applied(KvResponse::Cas(true)),
                duplicate(KvResponse::Done),
                applied(KvResponse::Deleted(true)),
            ]
        );
        assert_eq!(sm.session_count(), 2);
        assert_eq!(
            (sm.last_seq(1), sm.last_seq(2), sm.last_seq(3)),
            (Some(1), None, Some(1))
        );
        // Client 2 was forgotten: its retry is applied again (the documented
        // hazard of too small a table), evicting client 1.
        let replies = run(&mut sm, vec![kv(Some((2, 1)), &cas("n", None, "x"))]);
        assert_eq!(replies, [applied(KvResponse::Cas(true))]);
        assert_eq!(
            (sm.last_seq(1), sm.last_seq(2), sm.last_seq(3)),
            (None, Some(1), Some(1))
        );
        // A stale command refreshes its client too.
        run(&mut sm, vec![kv(Some((3, 0)), &put("z", "z"))]);
        run(&mut sm, vec![kv(Some((4, 1)), &put("w", "w"))]);
        assert_eq!(
            (sm.last_seq(2), sm.last_seq(3), sm.last_seq(4)),
            (None, Some(1), Some(1))
        );
        assert_eq!(sm.inner().get(b"z"), None);
    }

    #[test]
    fn eviction_ties_go_to_the_lowest_client_id() {
        let mut table = SessionTable::default();
        let record = |seq| Record {
            seq,
            response: Bytes::new(),
            last_used: LogIndex(5),
        };
        assert!(table.record(9, record(1), 2, |_| panic!("room left")));
        assert!(table.record(4, record(1), 2, |_| panic!("room left")));
        let mut evicted = Vec::new();
        assert!(table.record(7, record(1), 2, |c| evicted.push(c)));
        assert_eq!(evicted, [4]);
        assert!(table.record(3, record(1), 2, |c| evicted.push(c)));
        assert_eq!(evicted, [4, 7]);
        assert_eq!(table.records.keys().copied().collect::<Vec<_>>(), [3, 9]);

        // The same holds for an image that has more sessions than allowed.
        let inner = block_on(KvStateMachine::new().snapshot()).unwrap();
        let image = image_bytes(
            &[
                (1, 1, 0, b""),
                (2, 1, 0, b""),
                (3, 1, 0, b""),
                (4, 1, 0, b""),
            ],
            &inner,
        );
        let mut sm = kv_machine(2);
        block_on(sm.restore(LogId::default(), Bytes::from(image))).unwrap();
        assert_eq!(
            [1, 2, 3, 4].map(|c| sm.last_seq(c)),
            [None, None, Some(1), Some(1)]
        );
    }

    #[test]
    fn every_replica_decides_alike_whatever_the_batching() {
        // A workload with retries, stale commands, many clients and a small
        // table, applied in different batch splits.
        let mut rng = Rng(7);
        let mut next_seq = [1u64; 10];
        let mut payloads = Vec::new();
        for _ in 0..600 {
            let client = rng.below(10) as usize;
            let seq = match rng.below(4) {
                0 if next_seq[client] > 1 => next_seq[client] - 1, // retry
                1 if next_seq[client] > 2 => next_seq[client] - 2, // stale
                _ => {
                    next_seq[client] += 1;
                    next_seq[client] - 1
                }
            };
            let key = ["a", "b", "c"][rng.below(3) as usize];
            let command = match rng.below(3) {
                0 => cas(key, None, "v"),
                1 => delete(key),
                _ => put(key, "w"),
            };
            let session = (rng.below(8) != 0).then_some((client as u64, seq));
            payloads.push(kv(session, &command));
        }
        let entries: Vec<Entry> = (1..).zip(payloads).map(|(i, p)| entry(i, p)).collect();

        let mut results = Vec::new();
        for split in [entries.len(), 1, 7, 0] {
            let mut sm = kv_machine(4);
            let mut responses = Vec::new();
            let mut rest = &entries[..];
            while !rest.is_empty() {
                let n = if split == 0 {
                    1 + rng.below(20) as usize
                } else {
                    split
                }
                .min(rest.len());
                responses.extend(block_on(sm.apply(&rest[..n])));
                rest = &rest[n..];
            }
            results.push((sm, responses));
        }
        let (first, first_responses) = &results[0];
        let kinds = |r: &[Bytes]| {
            let mut counts = [0usize; 4];
            for reply in r.iter().map(|r| decode_reply(r).unwrap()) {
                counts[match reply {
                    SessionReply::Applied(_) => 0,
                    SessionReply::Duplicate(_) => 1,
                    SessionReply::Stale => 2,
                    SessionReply::Malformed => 3,
                }] += 1;
            }
            counts
        };
        let counts = kinds(first_responses);
        assert!(
            counts[0] > 0 && counts[1] > 0 && counts[2] > 0,
            "the workload should exercise every case: {counts:?}"
        );
        assert_eq!(first.session_count(), 4);
        for (sm, responses) in &results[1..] {
            assert_eq!(sm, first);
            assert_eq!(responses, first_responses);
        }
    }

    #[test]
    fn zero_sessions_turns_deduplication_off() {
        let mut sm = kv_machine(0);
        let command = kv(Some((1, 1)), &cas("k", None, "v"));
        let replies = run(&mut sm, vec![command.clone(), command]);
        assert_eq!(
            replies,
            [
                applied(KvResponse::Cas(true)),
                applied(KvResponse::Cas(false))
            ]
        );
        assert_eq!(sm.session_count(), 0);
        assert_eq!(sm.max_sessions(), 0);
    }

    #[test]
    fn accessors_reach_the_inner_machine() {
        let mut sm = kv_machine(3);
        run(&mut sm, vec![kv(Some((1, 1)), &put("a", "1"))]);
        assert_eq!(sm.inner().len(), 1);
        assert_eq!(sm.inner_mut().get(b"a"), Some(b("1")));
        let inner = sm.into_inner();
        assert_eq!(inner.get(b"a"), Some(b("1")));
    }
}
