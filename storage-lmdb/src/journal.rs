//! The journal: an append-only file of the writes staged between two
//! checkpoints (LMDB commits), so that a flush costs one `fdatasync` of one
//! file instead of an LMDB commit (which syncs the data file and then
//! writes its meta page synchronously).
//!
//! # Generations
//!
//! The `meta` database holds the journal's *generation* `g`, recorded when
//! the store is created and committed with every checkpoint that starts a
//! new one (a store written before generations were recorded at creation
//! has none until then, and uses 0). The journal of generation `g` is the
//! file `journal-<g>.log`; it holds the writes staged after the checkpoint
//! that recorded `g`, in order. Opening the store loads LMDB's state and replays that file on
//! top of it; files of other generations are obsolete, and are removed.
//!
//! Each new generation is a random number, not the one after the last:
//! record bodies hold bytes clients chose (commands), and a command may
//! embed a whole, valid-looking record. Replay must not mistake one for
//! the journal's own, and it cannot, for a generation nobody outside the
//! store can guess (see [`next_generation`]).
//!
//! The first write of a generation renames the previous generation's file
//! (obsolete once the checkpoint committed) and writes over it from its
//! start, rather than growing a new file: syncing writes into blocks the
//! file already has costs the file system no metadata update. Records of
//! the older generation left after the new ones are ignored by replay, as
//! are records of any generation but the current one.
//!
//! A journal file is given its full length, in zeros, when a generation
//! first writes to it (up to [`MAX_PREFILL`]), so that from its first
//! record on, a sync flushes data only; the very first journal of a store
//! would otherwise grow with every flush until the first checkpoint. Zeros
//! after the last record end the journal as any torn tail does.
//!
//! # Records
//!
//! Each flush appends one record, then syncs the file:
//!
//! ```text
//! magic "RJN1" | body length: u32 LE | generation: u64 LE | crc32: u32 LE | body
//! ```
//!
//! The CRC32 covers the length, the generation and the body. The body is a
//! sequence of postcard-encoded [`Op`]s: the staging calls, as the store's
//! views applied them.
//!
//! A crash can only tear the last record (every earlier one was synced
//! before the flush that wrote the next one returned). So replay stops at
//! the first record that is not whole and valid, and drops the rest of the
//! file as a torn tail, unless a valid record of the same generation
//! follows somewhere after it: then a record in the middle was damaged, and
//! the journal is refused as [`StorageError::Corrupt`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use raft_api::{Entry, GroupId, HardState, LogId, LogIndex, StorageError};
use serde::{Deserialize, Serialize};

use crate::snapshot_file;

/// First bytes of every record.
const MAGIC: &[u8; 4] = b"RJN1";

/// Bytes before a record's body.
pub(crate) const HEADER_LEN: usize = 20;

/// Largest body of one record; a flush with more staged checkpoints instead.
pub(crate) const MAX_BODY: usize = (u32::MAX / 2) as usize;

/// Most bytes of zeros a journal file is given ahead of its records.
pub(crate) const MAX_PREFILL: u64 = 8 << 20;

/// A staging call, as written to the journal (encoding side).
#[derive(Serialize)]
pub(crate) enum OpRef<'a> {
    /// `save_hard_state`.
    HardState(GroupId, HardState),
    /// `append`.
    Append(GroupId, &'a [Entry]),
    /// `truncate`.
    Truncate(GroupId, LogIndex),
    /// `compact`.
    Compact(GroupId, LogId),
}

/// A staging call read back from the journal; the same encoding as
/// [`OpRef`].
#[derive(Debug, Deserialize, PartialEq)]
pub(crate) enum Op {
    /// `save_hard_state`.
    HardState(GroupId, HardState),
    /// `append`.
    Append(GroupId, Vec<Entry>),
    /// `truncate`.
    Truncate(GroupId, LogIndex),
    /// `compact`.
    Compact(GroupId, LogId),
}

/// Appends the encoding of `op` to `out`.
pub(crate) fn encode_op(op: &OpRef<'_>, out: &mut Vec<u8>) -> Result<(), StorageError> {
    let buf = std::mem::take(out);
    *out = postcard::to_extend(op, buf)
        .map_err(|e| StorageError::Other(format!("storage-lmdb: journal encoding: {e}")))?;
    Ok(())
}

/// Decodes the ops of one record's body.
pub(crate) fn decode_ops(mut body: &[u8]) -> Result<Vec<Op>, String> {
    let mut ops = Vec::new();
    while !body.is_empty() {
        let (op, rest) = postcard::take_from_bytes::<Op>(body)
            .map_err(|e| format!("an operation does not decode: {e}"))?;
        ops.push(op);
        body = rest;
    }
    Ok(ops)
}

/// The file name of the journal of `generation`.
pub(crate) fn file_name(generation: u64) -> String {
    format!("journal-{generation:020}.log")
}

/// The generation of a journal file's name, if it is one.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("journal-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A whole record with `body`, ready to append.
pub(crate) fn record(generation: u64, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&crc(len, generation, body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

fn crc(len: u32, generation: u64, body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len.to_le_bytes());
    hasher.update(&generation.to_le_bytes());
    hasher.update(body);
    hasher.finalize()
}

/// The whole, valid record of `generation` at `offset` of `bytes`: its
/// body's range.
fn record_at(bytes: &[u8], offset: usize, generation: u64) -> Option<std::ops::Range<usize>> {
    let header = bytes.get(offset..offset.checked_add(HEADER_LEN)?)?;
    if &header[..4] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let found = u64::from_le_bytes(header[8..16].try_into().ok()?);
    let stored = u32::from_le_bytes(header[16..20].try_into().ok()?);
    let start = offset + HEADER_LEN;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    let body = bytes.get(start..end)?;
    (found == generation && crc(len, generation, body) == stored).then_some(start..end)
}

/// What a journal file holds.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Scan {
    /// Bodies of the valid records, in order, with the offset of each.
    pub(crate) records: Vec<(usize, std::ops::Range<usize>)>,
    /// Length of the valid prefix: where the next record goes.
    pub(crate) valid: usize,
}

/// Reads the records of `generation` in `bytes`; a damaged record with a
/// valid one after it is `Err` (saying where).
pub(crate) fn scan(bytes: &[u8], generation: u64) -> Result<Scan, String> {
    let mut scan = Scan::default();
    let mut offset = 0;
    while offset < bytes.len() {
        match record_at(bytes, offset, generation) {
            Some(body) => {
                scan.records.push((offset, body.clone()));
                offset = body.end;
            }
            None => break,
        }
    }
    scan.valid = offset;
    // Whatever follows is a torn tail, unless a valid record hides in it.
    let rest = bytes.get(offset + 1..).unwrap_or_default();
    for (i, window) in rest.windows(MAGIC.len()).enumerate() {
        let at = offset + 1 + i;
        if window == MAGIC && record_at(bytes, at, generation).is_some() {
            return Err(format!(
                "the record at byte {offset} is damaged, and a valid record follows at byte {at}"
            ));
        }
    }
    Ok(scan)
}

/// The journal file being written: the store's side of it.
#[derive(Debug)]
pub(crate) struct Journal {
    /// The store's directory, where journal files live.
    pub(crate) dir: PathBuf,
    /// The generation LMDB records: the journal being written.
    pub(crate) generation: u64,
    /// The open file of `generation`, once it exists.
    pub(crate) file: Option<Arc<File>>,
    /// Length of its valid records: where the next one goes.
    pub(crate) end: u64,
    /// Whether a file of `generation` exists, or may (a write was tried):
    /// the next checkpoint must then start a new generation.
    pub(crate) touched: bool,
    /// The file of the generation before, which the first write of this
    /// one renames and reuses (see [`JournalWrite::run`]).
    pub(crate) recycle: Option<PathBuf>,
    /// Encoded ops staged since the last journal write.
    pub(crate) pending: Vec<u8>,
    /// Set while the journal is replayed at open: staging calls are not
    /// journaled again.
    pub(crate) replaying: bool,
    /// Whether the next flush must be a checkpoint: a journal write failed
    /// (its ops are in the views only), a checkpoint failed, or a snapshot
    /// is staged (its image is written by a checkpoint).
    pub(crate) checkpoint_needed: bool,
    /// [`LmdbOptions::checkpoint_bytes`](crate::LmdbOptions::checkpoint_bytes);
    /// 0: no journal, every flush is a checkpoint.
    pub(crate) checkpoint_bytes: u64,
    /// Journal length at which the next flush checkpoints instead:
    /// `checkpoint_bytes` with jitter, so that nodes receiving the same
    /// writes do not all checkpoint at once.
    pub(crate) limit: u64,
}

impl Journal {
    pub(crate) fn new(dir: &Path, generation: u64, checkpoint_bytes: u64) -> Self {
        Self {
            dir: dir.to_path_buf(),
            generation,
            file: None,
            end: 0,
            touched: false,
            recycle: None,
            pending: Vec::new(),
            replaying: false,
            checkpoint_needed: false,
            checkpoint_bytes,
            limit: jittered(checkpoint_bytes),
        }
    }

    /// Whether staging calls are journaled at all.
    pub(crate) fn enabled(&self) -> bool {
        self.checkpoint_bytes > 0
    }

    /// Path of the journal of `generation`.
    pub(crate) fn path(&self, generation: u64) -> PathBuf {
        self.dir.join(file_name(generation))
    }

    /// Journals a staging call (nothing when the journal is off or being
    /// replayed).
    pub(crate) fn record_op(&mut self, op: &OpRef<'_>) -> Result<(), StorageError> {
        if self.enabled() && !self.replaying {
            encode_op(op, &mut self.pending)?;
        }
        Ok(())
    }

    /// Whether the next flush can append a record instead of checkpointing.
    pub(crate) fn can_append(&self) -> bool {
        let after = self
            .end
            .saturating_add((HEADER_LEN + self.pending.len()) as u64);
        self.enabled()
            && !self.checkpoint_needed
            && self.pending.len() <= MAX_BODY
            && after <= self.limit
    }

    /// Length a journal file is given ahead of its records: the largest
    /// `limit` any generation may draw (see [`jittered`]), up to
    /// [`MAX_PREFILL`].
    pub(crate) fn prefill(&self) -> u64 {
        self.checkpoint_bytes
            .saturating_add(self.checkpoint_bytes / 4)
            .min(MAX_PREFILL)
    }

    /// Takes what is pending as a write to run.
    pub(crate) fn take_write(&mut self) -> JournalWrite {
        self.touched = true;
        JournalWrite {
            prefill: self.prefill(),
            dir: self.dir.clone(),
            path: self.path(self.generation),
            recycle: if self.file.is_none() {
                self.recycle.take()
            } else {
                None
            },
            file: self.file.clone(),
            offset: self.end,
            record: record(self.generation, &std::mem::take(&mut self.pending)),
        }
    }

    /// A checkpoint committed; `started` is the generation it started, if
    /// any.
    pub(crate) fn checkpointed(&mut self, started: Option<u64>) {
        if let Some(generation) = started {
            // The ended generation's file is obsolete: the first write of
            // the new one reuses it. One left over from before is removed
            // (best effort: a file left behind is removed at next open).
            let ended = self.path(self.generation);
            let unused = if self.enabled() {
                self.recycle.replace(ended)
            } else {
                Some(ended)
            };
            if let Some(unused) = unused {
                let _ = fs::remove_file(unused);
            }
            self.generation = generation;
            self.file = None;
            self.end = 0;
            self.touched = false;
        }
        self.checkpoint_needed = false;
        self.limit = jittered(self.checkpoint_bytes);
    }
}

/// A random number no client can predict: the standard library's hasher
/// keys come from the operating system's randomness.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// `bytes` times a random factor between 3/4 and 5/4.
fn jittered(bytes: u64) -> u64 {
    let quarter = bytes / 4;
    let spread = quarter.saturating_mul(2).max(1);
    bytes - quarter + random_u64() % spread
}

/// The generation to start after `current`: random (and never `current`).
///
/// A journal file is written over by later generations, so records of
/// older ones stay after the valid ones, and a crash can tear the last
/// record; replay reads on past neither if a valid record of the current
/// generation follows (a damaged record in the middle). Such a record can
/// hide in a command's bytes inside an older or torn record. With
/// generations counted up, a client could write commands embedding records
/// of the next few, and a reopened store would refuse its own journal as
/// corrupt; a random generation leaves it one chance in 2^64.
pub(crate) fn next_generation(current: u64) -> u64 {
    loop {
        let next = random_u64();
        if next != current {
            return next;
        }
    }
}

/// One journal write: appends a record at `offset` and syncs the file,
/// creating the file (and syncing the directory) first if needed.
#[derive(Debug)]
pub(crate) struct JournalWrite {
    dir: PathBuf,
    path: PathBuf,
    /// An obsolete journal file to rename to `path` instead of creating it.
    recycle: Option<PathBuf>,
    file: Option<Arc<File>>,
    /// Length, in zeros, given to the file when it is opened here.
    prefill: u64,
    offset: u64,
    record: Vec<u8>,
}

impl JournalWrite {
    /// Runs the write: the file and the new end of its valid records.
    pub(crate) fn run(self) -> Result<(Arc<File>, u64), StorageError> {
        let io = |source: io::Error| StorageError::Io {
            path: self.path.clone(),
            source,
        };
        let file = match self.file {
            Some(file) => file,
            None => {
                // An obsolete journal, renamed, is written over from its
                // start: its blocks are allocated already, so a sync
                // flushes data only, without the file system's metadata
                // (about half the time of a sync that grows the file, with
                // three nodes on one disk). What is left of its records
                // after the new ones is of an older generation, which
                // replay ignores (`scan`).
                let recycled = self
                    .recycle
                    .as_ref()
                    .is_some_and(|old| fs::rename(old, &self.path).is_ok());
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(!recycled)
                    .open(&self.path)
                    .map_err(io)?;
                // Its whole length up front: the sync below is then the
                // last one of this generation that changes the file's size.
                let len = file.metadata().map_err(io)?.len();
                write_zeros(&file, len, self.prefill).map_err(io)?;
                // The file (created or renamed) must survive a power loss
                // as much as its records.
                snapshot_file::sync_dir(&self.dir)?;
                Arc::new(file)
            }
        };
        let mut handle = &*file;
        handle.seek(SeekFrom::Start(self.offset)).map_err(io)?;
        handle.write_all(&self.record).map_err(io)?;
        file.sync_data().map_err(io)?;
        Ok((file, self.offset + self.record.len() as u64))
    }
}

/// Writes zeros over `from..to` of `file` (nothing if the range is empty).
fn write_zeros(file: &File, from: u64, to: u64) -> io::Result<()> {
    const CHUNK: u64 = 64 << 10;
    let zeros = [0u8; CHUNK as usize];
    let mut handle = file;
    handle.seek(SeekFrom::Start(from))?;
    let mut at = from;
    while at < to {
        let n = (to - at).min(CHUNK);
        handle.write_all(&zeros[..n as usize])?;
        at += n;
    }
    Ok(())
}

/// A journal file opened for replay.
pub(crate) struct Opened {
    /// The file, to append to after the replay.
    pub(crate) file: Arc<File>,
    /// Its contents.
    pub(crate) bytes: Vec<u8>,
    /// Its valid records.
    pub(crate) scan: Scan,
}

/// Opens the journal of `generation` in `dir` if it exists, reads its valid
/// records and cuts off a torn tail (durably), by writing zeros over it:
/// the file keeps its length, and its blocks.
pub(crate) fn open(dir: &Path, generation: u64) -> Result<Option<Opened>, StorageError> {
    let path = dir.join(file_name(generation));
    let io = |source: io::Error| StorageError::Io {
        path: path.clone(),
        source,
    };
    let file = match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let bytes = fs::read(&path).map_err(io)?;
    let scan = scan(&bytes, generation).map_err(|detail| StorageError::Corrupt {
        path: path.clone(),
        detail,
    })?;
    let tail = &bytes[scan.valid..];
    if let Some(last) = tail.iter().rposition(|&b| b != 0) {
        let end = (scan.valid + last + 1) as u64;
        write_zeros(&file, scan.valid as u64, end).map_err(io)?;
        file.sync_data().map_err(io)?;
    }
    Ok(Some(Opened {
        file: Arc::new(file),
        bytes,
        scan,
    }))
}

/// Removes journal files of generations other than `keep` (best effort:
/// a file left behind is removed at the next open).
pub(crate) fn remove_others(dir: &Path, keep: u64) {
    let Ok(listing) = fs::read_dir(dir) else {
        return;
    };
    for item in listing.flatten() {
        let name = item.file_name();
        if let Some(generation) = name.to_str().and_then(parse_file_name)
            && generation != keep
        {
            let _ = fs::remove_file(item.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use raft_api::{Hlc, Payload, Term};

    use super::*;

    fn entry(index: u64) -> Entry {
        Entry {
            id: LogId::new(Term(2), LogIndex(index)),
            timestamp: Hlc::new(index, 1),
            payload: Payload::Command(Bytes::from(vec![index as u8; 5])),
        }
    }

    fn body(ops: &[OpRef<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for op in ops {
            encode_op(op, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn ops_round_trip() {
        let entries = [entry(4), entry(5)];
        let hard = HardState {
            term: Term(3),
            ..HardState::default()
        };
        let bytes = body(&[
            OpRef::HardState(GroupId(1), hard),
            OpRef::Append(GroupId(2), &entries),
            OpRef::Truncate(GroupId(2), LogIndex(5)),
            OpRef::Compact(GroupId(1), LogId::new(Term(1), LogIndex(9))),
        ]);
        assert_eq!(
            decode_ops(&bytes).unwrap(),
            vec![
                Op::HardState(GroupId(1), hard),
                Op::Append(GroupId(2), entries.to_vec()),
                Op::Truncate(GroupId(2), LogIndex(5)),
                Op::Compact(GroupId(1), LogId::new(Term(1), LogIndex(9))),
            ]
        );
        assert!(decode_ops(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn file_names_round_trip_and_others_are_ignored() {
        assert_eq!(parse_file_name(&file_name(0)), Some(0));
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_file_name("journal-1.log"), None);
        assert_eq!(parse_file_name("data.mdb"), None);
        assert_eq!(parse_file_name("journal-0000000000000000000x.log"), None);
    }

    fn three_records(generation: u64) -> (Vec<u8>, Vec<usize>) {
        let mut file = Vec::new();
        let mut starts = Vec::new();
        for i in 0..3u64 {
            starts.push(file.len());
            let entries = [entry(i + 1)];
            file.extend(record(
                generation,
                &body(&[OpRef::Append(GroupId(1), &entries)]),
            ));
        }
        (file, starts)
    }

    #[test]
    fn scan_reads_every_whole_record() {
        let (file, starts) = three_records(7);
        let scan = scan(&file, 7).unwrap();
        assert_eq!(scan.valid, file.len());
        let offsets: Vec<usize> = scan.records.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, starts);
        // Another generation's records are not this journal's.
        assert_eq!(super::scan(&file, 8).unwrap().valid, 0);
    }

    #[test]
    fn a_torn_last_record_is_cut_off() {
        let (file, starts) = three_records(1);
        for cut in starts[2] + 1..file.len() {
            let scan = scan(&file[..cut], 1).unwrap();
            assert_eq!(
                (scan.valid, scan.records.len()),
                (starts[2], 2),
                "cut at {cut}"
            );
        }
        // Zeros where the last record should be (its pages never written).
        let mut zeroed = file.clone();
        zeroed[starts[2]..].fill(0);
        assert_eq!(scan(&zeroed, 1).unwrap().valid, starts[2]);
        // A bit flip in the last record.
        let mut flipped = file.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(scan(&flipped, 1).unwrap().records.len(), 2);
    }

    #[test]
    fn a_damaged_record_before_a_valid_one_is_corruption() {
        let (file, starts) = three_records(1);
        for at in [starts[0], starts[0] + 10, starts[1] + HEADER_LEN + 2] {
            let mut damaged = file.clone();
            damaged[at] ^= 0x40;
            let err = scan(&damaged, 1).unwrap_err();
            assert!(err.contains("valid record follows"), "{err}");
        }
    }

    #[test]
    fn generations_are_not_counted_up() {
        let drawn: std::collections::BTreeSet<u64> = (0..100).map(|_| next_generation(7)).collect();
        assert_eq!(drawn.len(), 100);
        assert!(!drawn.contains(&7) && !drawn.contains(&8));
    }

    #[test]
    fn jitter_stays_within_a_quarter() {
        for _ in 0..100 {
            let limit = jittered(1000);
            assert!((750..1250).contains(&limit), "{limit}");
        }
        assert_eq!(jittered(0), 0);
    }
}
