//! [`LmdbLogStore`]: the [`LogStore`] implementation.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::ops::{Bound, Range};
use std::path::{Path, PathBuf};

use heed::types::Bytes;
use heed::{Database, Env, RoTxn, WithoutTls};
use raft_api::{
    Entry, GroupId, HardState, LogId, LogIndex, LogState, LogStore, Snapshot, StorageError,
};

use crate::codec;
use crate::env;
use crate::group::GroupView;
use crate::journal::{Journal, OpRef};
use crate::lock::DirLock;
use crate::options::LmdbOptions;
use crate::snapshot_file;

mod flush;
mod recovery;
#[cfg(test)]
mod tests;

/// Name of LMDB's data file in the store's directory.
pub(crate) const DATA_FILE: &str = "data.mdb";
/// Directory of snapshot images, inside the store's directory.
pub(crate) const SNAPSHOT_DIR: &str = "snapshots";

/// The store's LMDB databases.
#[derive(Clone, Copy)]
pub(crate) struct Dbs {
    /// The format record and the journal's generation.
    pub(crate) meta: Database<Bytes, Bytes>,
    /// Log entries by (group, index).
    pub(crate) entries: Database<Bytes, Bytes>,
    /// Hard state by group.
    pub(crate) hard_states: Database<Bytes, Bytes>,
    /// Log bounds ([`BoundsRecord`](crate::codec::BoundsRecord)) by group.
    pub(crate) bounds: Database<Bytes, Bytes>,
    /// Snapshot records ([`SnapshotRecord`](crate::codec::SnapshotRecord)) by group.
    pub(crate) snapshots: Database<Bytes, Bytes>,
}

/// A [`LogStore`] for every Raft group of a node, in one LMDB environment.
///
/// # Layout
///
/// The store owns a directory:
///
/// - `store.lock`: locked exclusively (an advisory lock of the operating
///   system) while the store is open, so a second store on the directory,
///   in this process or another, is refused with
///   [`StorageError::Locked`]; it holds the process id of the holder.
/// - `data.mdb`, `lock.mdb`: the LMDB environment, with the databases
///   `meta` (format version and cluster id), `entries` (key: group and index,
///   8 bytes big-endian each; value: the postcard-encoded [`Entry`]),
///   `hard_states`, `bounds` (compaction point and last entry) and
///   `snapshots` (snapshot metadata, and the length and CRC32 of the image),
///   the last three keyed by group (8 bytes big-endian). Every value starts
///   with a CRC32 of its key and body: a bit flip is reported as
///   [`StorageError::Corrupt`] naming the file and the key, never returned
///   as data.
/// - `snapshots/<group>-<generation>.snap`: snapshot images, written
///   atomically (temporary file, fsync, rename, fsync of the directory)
///   before the record that names them is committed.
///
/// # Writes and durability
///
/// Writes are staged in memory, where reads see them, and
/// [`flush`](LogStore::flush) writes everything staged, for every group, in
/// one LMDB write transaction: one commit, so one fsync of the data file for
/// all groups (plus one per snapshot image staged). A crash loses what was
/// staged after the last successful flush and nothing else.
///
/// The memory map starts at [`LmdbOptions::initial_map_size`] and doubles
/// when a flush finds it full, up to [`LmdbOptions::max_map_size`]; past
/// that, or when the disk is full, the flush fails with
/// [`StorageError::Io`].
///
/// # Where the flush runs
///
/// Polled inside a Tokio runtime, a flush does its disk work (snapshot
/// images, the write transaction and its fsyncs, growing the map) on the
/// runtime's blocking pool (`spawn_blocking`), and the thread that polls it
/// is free for other tasks until the commit is done. Polled anywhere else
/// (a plain thread, another executor) it does that work on the polling
/// thread when first polled, and is then ready. Either way:
///
/// - Reads see staged writes during and after a flush: the flush holds the
///   store by `&mut`, and staged writes stay in memory until the commit's
///   outcome is known.
/// - A failed flush changes nothing on disk and leaves the writes staged. A
///   panic during the commit is such a failure, reported as
///   [`StorageError::Other`], not a panic of the caller.
/// - A flush future dropped before it is ready (cancelled) leaves the store
///   consistent. The commit it started may still run to its end in the
///   background, but the store goes on as if the writes were not flushed:
///   they stay staged, and its answers are the same whether that commit
///   lands or not. The next flush first waits for that commit and takes its
///   outcome into account, then commits whatever is still staged, so no
///   write is lost and an older commit never lands after a newer one. Until
///   then, every method that reads LMDB ([`entries`](LogStore::entries) of
///   flushed entries, [`truncate`](LogStore::truncate) below the staged
///   entries, [`verify`](Self::verify), [`map_size`](Self::map_size)) and
///   dropping the store first wait for that one commit to end.
///
/// # Opening
///
/// [`open`](Self::open) takes the directory's lock, then creates a new
/// store (recording the cluster id and format version) or checks an
/// existing one. It refuses another cluster's directory and a newer format
/// with [`StorageError::Incompatible`] (nothing is wrong with the data; the
/// message says what to do), and a damaged directory with
/// [`StorageError::Corrupt`] saying what was found: an empty, truncated or
/// missing data file, group records whose bounds disagree with the stored
/// entries, snapshot files that are missing or of the wrong length. It also
/// removes snapshot files left over by a crash. The `snapshots` directory
/// is created last, once the environment is durable, so a directory that
/// has it but no data file lost its data and is refused.
///
/// One directory belongs to one store: while a store is open, opening the
/// directory again, from this process or another, fails with
/// [`StorageError::Locked`]; dropping the store releases it. Nothing else
/// may write into the directory.
pub struct LmdbLogStore {
    dir: PathBuf,
    data_path: PathBuf,
    snap_dir: PathBuf,
    env: Env<WithoutTls>,
    dbs: Dbs,
    groups: BTreeMap<GroupId, GroupView>,
    max_map_size: usize,
    /// The commit of a flush whose outcome is not applied yet: while the
    /// flush awaits it, or after the flush's future was dropped.
    in_flight: Option<flush::InFlight>,
    /// Writes staged since the last checkpoint, and where they go.
    journal: Journal,
    /// Run by every commit before it touches the disk.
    #[cfg(test)]
    commit_hook: Option<flush::CommitHook>,
    /// Last, so that it is dropped last: the directory stays locked until
    /// the environment is closed.
    _lock: DirLock,
}

impl fmt::Debug for LmdbLogStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LmdbLogStore")
            .field("dir", &self.dir)
            .field("groups", &self.groups.len())
            .field("unflushed", &self.has_unflushed())
            .field("commit_in_flight", &self.in_flight.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for LmdbLogStore {
    /// Waits for a commit left running by a dropped flush, so the
    /// environment is closed, and no write is under way, when the
    /// directory's lock is released.
    fn drop(&mut self) {
        self.wait_for_commit();
    }
}

impl LmdbLogStore {
    /// Opens the store in `dir`, creating the directory and an empty store
    /// if needed.
    ///
    /// Fails with [`StorageError::Locked`] when another store (in this
    /// process or another) has the directory open, with
    /// [`StorageError::Incompatible`] when the directory belongs to another
    /// cluster or was written by a newer format version, with
    /// [`StorageError::Corrupt`] when it is damaged (see the type's
    /// documentation), with [`StorageError::Io`] when the operating system
    /// refuses (permissions, disk, no file locking), and with
    /// [`StorageError::Other`] when `options` are inconsistent.
    pub fn open(dir: &Path, options: LmdbOptions) -> Result<Self, StorageError> {
        let (initial_map_size, max_map_size) = options.map_sizes()?;
        let dir = dir.to_path_buf();
        let data_path = dir.join(DATA_FILE);
        let snap_dir = dir.join(SNAPSHOT_DIR);
        fs::create_dir_all(&dir).map_err(|source| StorageError::Io {
            path: dir.clone(),
            source,
        })?;
        // Before anything is read: what is checked must not change under
        // another store's writes.
        let lock = DirLock::acquire(&dir)?;
        recovery::refuse_lost_data_file(&data_path, &snap_dir)?;
        recovery::refuse_empty_data_file(&data_path)?;
        let env = env::open(&dir, &data_path, initial_map_size)?;
        let dbs = recovery::open_databases(&env, &dir, &data_path, options.cluster_id)?;
        // A new store's data file must be durable in the directory before
        // the snapshot directory that marks the store as created (see
        // `refuse_lost_data_file`), and both must survive a power loss.
        snapshot_file::sync_dir(&dir)?;
        recovery::create_snapshot_dir(&snap_dir)?;
        snapshot_file::sync_dir(&dir)?;
        let dir_for_journal = dir.clone();
        let mut store = Self {
            dir,
            data_path,
            snap_dir,
            env,
            dbs,
            groups: BTreeMap::new(),
            max_map_size,
            in_flight: None,
            journal: Journal::new(&dir_for_journal, 0, options.checkpoint_bytes),
            #[cfg(test)]
            commit_hook: None,
            _lock: lock,
        };
        store.groups = store.load()?;
        store.journal.generation = store.journal_generation()?;
        store.replay_journal()?;
        store.remove_stray_snapshot_files();
        if options.verify_on_open {
            store.verify()?;
        }
        Ok(store)
    }

    /// The directory the store lives in.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Whether any write is staged but not yet flushed (and so would be lost
    /// by a crash). After a dropped flush, its writes count as staged until
    /// the next flush.
    pub fn has_unflushed(&self) -> bool {
        let journal = &self.journal;
        self.in_flight.is_some()
            || !journal.pending.is_empty()
            || ((!journal.enabled() || journal.checkpoint_needed)
                && self.groups.values().any(|g| g.dirty))
    }

    /// Current size of the memory map in bytes (it grows on demand).
    pub fn map_size(&self) -> usize {
        self.wait_for_commit();
        self.env.info().map_size
    }

    /// Checks every flushed byte: every record's and entry's checksum, that
    /// each group's entries are contiguous from its compaction point to its
    /// last entry, and every snapshot image's length and checksum. Staged
    /// writes are not looked at. Takes time proportional to the data;
    /// [`LmdbOptions::verify_on_open`] runs it at open.
    pub fn verify(&self) -> Result<(), StorageError> {
        let txn = self.read_txn()?;
        let records = self.load_records(&txn)?;
        self.check_structure(&txn, &records)?;
        for (&group, record) in &records {
            let bounds = record.bounds;
            let mut expected = bounds.compacted.index.next();
            let from = codec::entry_key(group, expected);
            let to = codec::entry_key(group, bounds.last.index);
            if bounds.last.index > bounds.compacted.index {
                let range = (Bound::Included(&from[..]), Bound::Included(&to[..]));
                for item in self
                    .dbs
                    .entries
                    .range(&txn, &range)
                    .map_err(|e| self.lmdb(e))?
                {
                    let (key, value) = item.map_err(|e| self.lmdb(e))?;
                    let index = codec::parse_entry_key(key).map_or(LogIndex(0), |(_, i)| i);
                    if index != expected {
                        return Err(self.missing_entry(group, expected, bounds.last.index));
                    }
                    codec::decode_entry(key, value)
                        .map_err(|detail| self.entry_corrupt(group, index, detail))?;
                    expected = expected.next();
                }
                if expected <= bounds.last.index {
                    return Err(self.missing_entry(group, expected, bounds.last.index));
                }
            }
            if let Some(snapshot) = &record.snapshot {
                let path = self.snapshot_path(group, snapshot.generation);
                snapshot_file::read_verified(&path, snapshot.len, snapshot.crc)?;
            }
        }
        Ok(())
    }

    // -- Reading -----------------------------------------------------------

    pub(crate) fn read_txn(&self) -> Result<RoTxn<'_, WithoutTls>, StorageError> {
        self.wait_for_commit();
        self.env.read_txn().map_err(|e| self.lmdb(e))
    }

    /// Blocks until a commit left running by a dropped flush has ended: it
    /// may grow the map, which no other transaction may overlap. Only a
    /// dropped flush leaves one (a running flush holds the store by `&mut`).
    fn wait_for_commit(&self) {
        if let Some(in_flight) = &self.in_flight {
            in_flight.wait();
        }
    }

    /// Appends the stored entries of `range` to `out` while their total size
    /// stays within `max_bytes` (at least one entry in `out`). Returns
    /// whether it stopped because of `max_bytes`.
    fn read_stored(
        &self,
        group: GroupId,
        range: Range<LogIndex>,
        max_bytes: usize,
        out: &mut Vec<Entry>,
        total: &mut usize,
    ) -> Result<bool, StorageError> {
        let txn = self.read_txn()?;
        let from = codec::entry_key(group, range.start);
        let to = codec::entry_key(group, range.end.prev());
        let bounds = (Bound::Included(&from[..]), Bound::Included(&to[..]));
        let mut expected = range.start;
        for item in self
            .dbs
            .entries
            .range(&txn, &bounds)
            .map_err(|e| self.lmdb(e))?
        {
            let (key, value) = item.map_err(|e| self.lmdb(e))?;
            let index = codec::parse_entry_key(key).map_or(LogIndex(0), |(_, i)| i);
            if index != expected {
                return Err(self.missing_entry(group, expected, range.end.prev()));
            }
            let entry = codec::decode_entry(key, value)
                .map_err(|detail| self.entry_corrupt(group, index, detail))?;
            let size = entry.size();
            if !out.is_empty() && total.saturating_add(size) > max_bytes {
                return Ok(true);
            }
            *total = total.saturating_add(size);
            out.push(entry);
            expected = expected.next();
        }
        if expected < range.end {
            return Err(self.missing_entry(group, expected, range.end.prev()));
        }
        Ok(false)
    }

    /// The stored entry at `index`, which the view says is there.
    fn read_stored_entry(&self, group: GroupId, index: LogIndex) -> Result<Entry, StorageError> {
        let mut out = Vec::with_capacity(1);
        self.read_stored(group, index..index.next(), 0, &mut out, &mut 0)?;
        out.pop()
            .ok_or_else(|| self.missing_entry(group, index, index))
    }

    fn view(&self, group: GroupId) -> Option<&GroupView> {
        self.groups.get(&group)
    }

    fn state_of(&self, group: GroupId) -> LogState {
        self.view(group)
            .map(GroupView::log_state)
            .unwrap_or_default()
    }

    /// Checks that `entries` continue the group's log (consecutive indexes
    /// right after the last one; else [`StorageError::NotContiguous`]) and
    /// records them in the journal. Whether there was anything to append.
    fn journal_append(&mut self, group: GroupId, entries: &[Entry]) -> Result<bool, StorageError> {
        if entries.is_empty() {
            return Ok(false);
        }
        let mut last = self.state_of(group).last.index;
        for entry in entries {
            if entry.id.index != last.next() || entry.id.index == LogIndex(u64::MAX) {
                return Err(StorageError::NotContiguous {
                    group,
                    last,
                    got: entry.id.index,
                });
            }
            last = entry.id.index;
        }
        self.journal.record_op(&OpRef::Append(group, entries))?;
        Ok(true)
    }

    // -- Errors and paths --------------------------------------------------

    pub(crate) fn lmdb(&self, error: heed::Error) -> StorageError {
        env::lmdb_error(&self.data_path, error)
    }

    pub(crate) fn corrupt(&self, detail: String) -> StorageError {
        StorageError::Corrupt {
            path: self.data_path.clone(),
            detail,
        }
    }

    fn entry_corrupt(&self, group: GroupId, index: LogIndex, detail: String) -> StorageError {
        self.corrupt(format!("database `entries`, key {group}/{index}: {detail}"))
    }

    pub(crate) fn missing_entry(
        &self,
        group: GroupId,
        index: LogIndex,
        upto: LogIndex,
    ) -> StorageError {
        self.corrupt(format!(
            "database `entries`, key {group}/{index}: missing, although the log holds it \
             (up to {upto})"
        ))
    }

    pub(crate) fn snapshot_path(&self, group: GroupId, generation: u64) -> PathBuf {
        self.snap_dir
            .join(snapshot_file::file_name(group, generation))
    }
}

impl LogStore for LmdbLogStore {
    fn groups(&self) -> Result<Vec<GroupId>, StorageError> {
        Ok(self.groups.keys().copied().collect())
    }

    fn hard_state(&self, group: GroupId) -> Result<HardState, StorageError> {
        Ok(self.view(group).map(|v| v.hard_state).unwrap_or_default())
    }

    fn log_state(&self, group: GroupId) -> Result<LogState, StorageError> {
        Ok(self.state_of(group))
    }

    /// Entries in `range`, bounded by `max_bytes` (but at least one), staged
    /// or stored. An empty range returns no entries without any further
    /// check. A stored entry that is missing or fails its checksum is
    /// [`StorageError::Corrupt`].
    fn entries(
        &self,
        group: GroupId,
        range: Range<LogIndex>,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let state = self.state_of(group);
        if range.start <= state.compacted.index {
            return Err(StorageError::Compacted {
                group,
                compacted: state.compacted.index,
                asked: range.start,
            });
        }
        if range.end > state.last.index.next() {
            return Err(StorageError::Unavailable {
                group,
                last: state.last.index,
                asked: range.end.prev(),
            });
        }
        let Some(view) = self.view(group) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut total = 0usize;
        let tail_start = view.tail_start();
        if range.start < tail_start {
            let stored = range.start..range.end.min(tail_start);
            if self.read_stored(group, stored, max_bytes, &mut out, &mut total)? {
                return Ok(out);
            }
        }
        let mut index = range.start.max(tail_start);
        while index < range.end {
            let Some(entry) = view.tail_entry(index) else {
                break;
            };
            let size = entry.size();
            if !out.is_empty() && total.saturating_add(size) > max_bytes {
                break;
            }
            total = total.saturating_add(size);
            out.push(entry.clone());
            index = index.next();
        }
        Ok(out)
    }

    fn save_hard_state(&mut self, group: GroupId, state: HardState) -> Result<(), StorageError> {
        self.journal.record_op(&OpRef::HardState(group, state))?;
        let view = self.groups.entry(group).or_default();
        view.hard_state = state;
        view.staged();
        Ok(())
    }

    /// Stages `entries`, which must have consecutive indexes starting right
    /// after the last one (else [`StorageError::NotContiguous`], and nothing
    /// is staged). An empty slice changes nothing.
    fn append(&mut self, group: GroupId, entries: &[Entry]) -> Result<(), StorageError> {
        if self.journal_append(group, entries)? {
            self.groups
                .entry(group)
                .or_default()
                .append(entries.iter().cloned());
        }
        Ok(())
    }

    /// Like `append`, keeping the entries given instead of copies.
    fn append_owned(&mut self, group: GroupId, entries: Vec<Entry>) -> Result<(), StorageError> {
        if self.journal_append(group, &entries)? {
            self.groups.entry(group).or_default().append(entries);
        }
        Ok(())
    }

    /// Stages removal of entries at `from` and after. `from` at or below the
    /// compacted index is a [`StorageError::Compacted`] error; `from` past
    /// the last index changes nothing.
    fn truncate(&mut self, group: GroupId, from: LogIndex) -> Result<(), StorageError> {
        let state = self.state_of(group);
        if from <= state.compacted.index {
            return Err(StorageError::Compacted {
                group,
                compacted: state.compacted.index,
                asked: from,
            });
        }
        if from > state.last.index {
            return Ok(());
        }
        let Some(view) = self.view(group) else {
            return Ok(());
        };
        let prev = from.prev();
        let new_last = if prev == state.compacted.index {
            state.compacted
        } else if let Some(entry) = view.tail_entry(prev) {
            entry.id
        } else {
            self.read_stored_entry(group, prev)?.id
        };
        self.journal.record_op(&OpRef::Truncate(group, from))?;
        if let Some(view) = self.groups.get_mut(&group) {
            view.truncate(from, new_last);
        }
        Ok(())
    }

    /// Stages removal of entries up to and including `upto.index` and makes
    /// `upto` the compaction point, term included (taken from the argument,
    /// not checked against a stored entry). When the log ends before
    /// `upto.index` every entry goes and the next append must start at
    /// `upto.index + 1`. An index at or before the current compaction point
    /// changes nothing.
    fn compact(&mut self, group: GroupId, upto: LogId) -> Result<(), StorageError> {
        if upto.index <= self.state_of(group).compacted.index {
            return Ok(());
        }
        if upto.index == LogIndex(u64::MAX) {
            return Err(StorageError::Other(format!(
                "{group}: cannot compact up to the largest possible index"
            )));
        }
        self.journal.record_op(&OpRef::Compact(group, upto))?;
        self.groups.entry(group).or_default().compact(upto);
        Ok(())
    }

    /// Stages `snapshot` as the group's snapshot, replacing any previous
    /// one. The image is written to its file at the next flush.
    fn save_snapshot(&mut self, group: GroupId, snapshot: &Snapshot) -> Result<(), StorageError> {
        // The image is written by a checkpoint, not journaled.
        self.journal.checkpoint_needed = true;
        let view = self.groups.entry(group).or_default();
        view.staged_snapshot = Some(snapshot.clone());
        view.staged();
        Ok(())
    }

    /// The group's snapshot: the staged one, or the flushed one read from
    /// its file and checked against its recorded length and CRC32
    /// ([`StorageError::Corrupt`] naming the file if it does not match).
    fn snapshot(&self, group: GroupId) -> Result<Option<Snapshot>, StorageError> {
        let Some(view) = self.view(group) else {
            return Ok(None);
        };
        if let Some(staged) = &view.staged_snapshot {
            return Ok(Some(staged.clone()));
        }
        let Some(record) = &view.snapshot else {
            return Ok(None);
        };
        let path = self.snapshot_path(group, record.generation);
        let data = snapshot_file::read_verified(&path, record.len, record.crc)?;
        Ok(Some(Snapshot {
            meta: record.meta.clone(),
            data,
        }))
    }

    /// Writes everything staged, for all groups, in one LMDB transaction,
    /// on Tokio's blocking pool when a runtime is current (see the type's
    /// documentation).
    async fn flush(&mut self) -> Result<(), StorageError> {
        self.flush_staged().await
    }
}
