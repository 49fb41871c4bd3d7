//! Flushing, on Tokio's blocking pool when a runtime is current: either one
//! record appended to the journal (see [`crate::journal`]), or a
//! *checkpoint*: snapshot images to files, then one LMDB transaction for
//! every group's staged writes, which also starts a new journal.
//!
//! A flush appends to the journal when the journal is on, no snapshot is
//! staged, the last checkpoint or journal write did not fail, and the
//! journal stays within its limit; otherwise it checkpoints. A checkpoint
//! has three steps:
//!
//! 1. [`LmdbLogStore::prepare`], on the polling thread: gathers what is
//!    staged into a [`Commit`] that owns it (entries and snapshot images
//!    are cloned, which shares their payloads), and a [`Plan`] of which
//!    views it covers. The views keep their staged data: reads need it, and
//!    so does the store if the flush future is dropped.
//! 2. [`Commit::run`], on a blocking thread (inline without a runtime):
//!    encodes, writes snapshot images, commits the transaction (growing the
//!    map when full), removes the images it replaced.
//! 3. [`LmdbLogStore::apply`], back on the store: a committed group's view
//!    has nothing staged any more.
//!
//! A journal write takes the encoded writes pending since the last one; its
//! views stay as they are (their writes are durable, but not in LMDB until
//! the next checkpoint).
//!
//! A flush future dropped during step 2 (or during a journal write) leaves
//! its commit running. The
//! store keeps it as [`InFlight`]: every method that opens a transaction
//! (and dropping the store) waits for it to end, and the next flush waits
//! for it and applies its outcome before preparing its own commit, so two
//! commits never run at once and an older one never lands after a newer
//! one.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::ops::Bound;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use heed::{Env, MdbError, WithoutTls};
use raft_api::{Entry, GroupId, HardState, LogIndex, Snapshot, StorageError};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use super::{Dbs, LmdbLogStore};
use crate::codec::{self, BoundsRecord, SnapshotRecord};
use crate::env::{self, align_up};
use crate::journal::{self, JournalWrite};
use crate::snapshot_file;

#[cfg(test)]
mod tests;

/// Records of the snapshot images a commit wrote, by group.
type Written = BTreeMap<GroupId, SnapshotRecord>;

/// How a commit or journal write ended: `Ok` exactly when its transaction
/// committed, or its record was written and synced.
type Outcome = Result<Done, StorageError>;

/// What a successful commit or journal write did.
enum Done {
    /// A checkpoint committed, writing these snapshot images.
    Committed(Written),
    /// A journal record was synced: the journal's file and its new end.
    Journaled(Arc<File>, u64),
}

/// The disk work of a flush.
enum Work {
    /// A checkpoint.
    Checkpoint(Commit),
    /// A journal write.
    Journal(JournalWrite),
}

/// A flush's disk work, with the store's commit hook (tests only), which
/// runs before either kind touches the disk.
struct Job {
    work: Work,
    #[cfg(test)]
    hook: Option<CommitHook>,
}

impl Job {
    fn run(self) -> Outcome {
        #[cfg(test)]
        if let Some(hook) = &self.hook {
            hook();
        }
        match self.work {
            Work::Checkpoint(commit) => commit.run().map(Done::Committed),
            Work::Journal(write) => {
                let (file, end) = write.run()?;
                Ok(Done::Journaled(file, end))
            }
        }
    }
}

/// Which kind of work is in flight, and what applying its outcome needs.
pub(super) enum Kind {
    /// A checkpoint of these views, starting this journal generation.
    Checkpoint(Plan, Option<u64>),
    /// A journal write.
    Journal,
}

/// Run by every commit and journal write before it touches the disk (tests only: to see
/// which thread commits, to hold a commit back, or to make it panic).
#[cfg(test)]
pub(super) type CommitHook = Arc<dyn Fn() + Send + Sync>;

/// The disk work of a flush. It owns everything it needs, so it can run on
/// another thread, and even outlive a dropped flush future.
struct Commit {
    env: Env<WithoutTls>,
    dbs: Dbs,
    data_path: PathBuf,
    snap_dir: PathBuf,
    max_map_size: usize,
    groups: Vec<GroupCommit>,
    snapshots: Vec<SnapshotCommit>,
    /// The journal generation this checkpoint starts.
    journal: Option<u64>,
}

/// One group's staged state, as its view had it.
struct GroupCommit {
    group: GroupId,
    hard_state: HardState,
    bounds: BoundsRecord,
    /// Stored entries from here on are stale.
    tail_start: LogIndex,
    /// Staged entries, ending at `bounds.last`.
    entries: Vec<Entry>,
}

/// A staged snapshot, with the file generation it gets.
struct SnapshotCommit {
    group: GroupId,
    generation: u64,
    snapshot: Snapshot,
    /// The generation of the image it replaces, removed once committed.
    replaces: Option<u64>,
}

/// Which views a commit covers: each group with its view's
/// [`writes`](crate::group::GroupView::writes) when the commit was prepared.
pub(super) struct Plan {
    groups: Vec<(GroupId, u64)>,
}

/// A commit on the blocking pool whose outcome the store has not applied
/// yet: while a flush awaits it, or after that flush's future was dropped.
pub(super) struct InFlight {
    kind: Kind,
    slot: Arc<Slot>,
    handle: JoinHandle<()>,
}

impl InFlight {
    /// Blocks until the commit has ended.
    pub(super) fn wait(&self) {
        self.slot.wait();
    }
}

/// Where a commit on another thread leaves its outcome.
#[derive(Default)]
struct Slot {
    outcome: Mutex<Option<Outcome>>,
    ended: Condvar,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, Option<Outcome>> {
        self.outcome.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn report(&self, outcome: Outcome) {
        *self.lock() = Some(outcome);
        self.ended.notify_all();
    }

    /// Blocks until the outcome is reported.
    fn wait(&self) {
        drop(
            self.ended
                .wait_while(self.lock(), |outcome| outcome.is_none())
                .unwrap_or_else(PoisonError::into_inner),
        );
    }

    /// Blocks until the outcome is reported, and takes it.
    fn take(&self) -> Outcome {
        let mut outcome = self.lock();
        loop {
            if let Some(outcome) = outcome.take() {
                return outcome;
            }
            outcome = self
                .ended
                .wait(outcome)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Reports a commit's outcome to its slot. Dropped without reporting (the
/// commit panicked, or never ran because its runtime shut down first), it
/// reports a failure, so nothing waits forever.
struct Reporter(Option<Arc<Slot>>);

impl Reporter {
    fn report(mut self, outcome: Outcome) {
        if let Some(slot) = self.0.take() {
            slot.report(outcome);
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            slot.report(Err(stopped(
                "stopped (it panicked, or its runtime shut down before it ran)",
            )));
        }
    }
}

/// The error of a commit that stopped before committing.
fn stopped(how: impl fmt::Display) -> StorageError {
    StorageError::Other(format!(
        "storage-lmdb: the flush's commit {how}; nothing was committed and the writes are \
         still staged"
    ))
}

/// The error of a commit that panicked on the polling thread.
fn panicked(payload: &(dyn Any + Send)) -> StorageError {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a non-string payload");
    stopped(format_args!("panicked with message {message:?}"))
}

impl LmdbLogStore {
    /// Writes everything staged; see the module's documentation.
    pub(super) async fn flush_staged(&mut self) -> Result<(), StorageError> {
        // A commit left running by a dropped flush. Its error was for that
        // flush's caller: whatever it did not commit is still staged (or,
        // for a journal write, is committed by a checkpoint), and is
        // written below.
        let _ = self.settle().await;
        let (work, kind) = if self.journal.can_append() {
            if self.journal.pending.is_empty() {
                return Ok(());
            }
            (Work::Journal(self.journal.take_write()), Kind::Journal)
        } else {
            let Some((commit, plan)) = self.prepare() else {
                return Ok(());
            };
            // The checkpoint covers every write journaled or pending.
            self.journal.pending.clear();
            let started = commit.journal;
            (Work::Checkpoint(commit), Kind::Checkpoint(plan, started))
        };
        let job = Job {
            work,
            #[cfg(test)]
            hook: self.commit_hook.clone(),
        };
        match Handle::try_current() {
            Ok(runtime) => {
                let slot = Arc::new(Slot::default());
                let reporter = Reporter(Some(Arc::clone(&slot)));
                // `run` consumes the work, so its `Env` is gone before the
                // outcome is reported: a store dropped after waiting for the
                // report has closed the environment when it unlocks the
                // directory.
                let handle = runtime.spawn_blocking(move || reporter.report(job.run()));
                self.in_flight = Some(InFlight { kind, slot, handle });
                self.settle().await
            }
            Err(_) => {
                let outcome = panic::catch_unwind(AssertUnwindSafe(|| job.run()))
                    .unwrap_or_else(|payload| Err(panicked(&*payload)));
                self.apply(kind, outcome)
            }
        }
    }

    /// Waits for the commit in flight, if any, and applies its outcome,
    /// which it returns.
    async fn settle(&mut self) -> Result<(), StorageError> {
        let Some(in_flight) = self.in_flight.as_mut() else {
            return Ok(());
        };
        let joined = (&mut in_flight.handle).await;
        // Nothing below awaits: the outcome is applied in this poll, so a
        // dropped future cannot leave it half applied.
        let Some(in_flight) = self.in_flight.take() else {
            return Ok(());
        };
        let outcome = match (joined, in_flight.slot.take()) {
            (Err(join_error), Err(_)) => Err(stopped(format_args!("failed: {join_error}"))),
            (_, outcome) => outcome,
        };
        self.apply(in_flight.kind, outcome)
    }

    /// The commit of everything staged, and the views it covers; `None`
    /// when nothing is staged.
    fn prepare(&self) -> Option<(Commit, Plan)> {
        let mut groups = Vec::new();
        let mut snapshots = Vec::new();
        let mut plan = Plan { groups: Vec::new() };
        for (&group, view) in self.groups.iter().filter(|(_, view)| view.dirty) {
            plan.groups.push((group, view.writes));
            groups.push(GroupCommit {
                group,
                hard_state: view.hard_state,
                bounds: BoundsRecord {
                    compacted: view.compacted,
                    last: view.last,
                },
                tail_start: view.tail_start(),
                entries: view.tail.iter().cloned().collect(),
            });
            if let Some(snapshot) = &view.staged_snapshot {
                let replaces = view.snapshot.as_ref().map(|r| r.generation);
                snapshots.push(SnapshotCommit {
                    group,
                    generation: replaces.map_or(1, |g| g.wrapping_add(1)),
                    snapshot: snapshot.clone(),
                    replaces,
                });
            }
        }
        if plan.groups.is_empty() {
            return None;
        }
        let journal = self
            .journal
            .touched
            .then(|| journal::next_generation(self.journal.generation));
        let commit = Commit {
            journal,
            env: self.env.clone(),
            dbs: self.dbs,
            data_path: self.data_path.clone(),
            snap_dir: self.snap_dir.clone(),
            max_map_size: self.max_map_size,
            groups,
            snapshots,
        };
        Some((commit, plan))
    }

    /// Applies the outcome of a checkpoint or journal write.
    fn apply(&mut self, kind: Kind, outcome: Outcome) -> Result<(), StorageError> {
        match (kind, outcome) {
            (Kind::Checkpoint(plan, started), Ok(Done::Committed(written))) => {
                self.checkpointed(plan, written);
                self.journal.checkpointed(started);
                Ok(())
            }
            (Kind::Journal, Ok(Done::Journaled(file, end))) => {
                self.journal.file = Some(file);
                self.journal.end = end;
                Ok(())
            }
            (_, Ok(_)) => Err(StorageError::Other(
                "storage-lmdb: a flush's outcome does not match its work".into(),
            )),
            (_, Err(e)) => {
                // The writes taken by the failed work are in the views: a
                // checkpoint writes them.
                self.journal.checkpoint_needed = true;
                Err(e)
            }
        }
    }

    /// Applies a committed checkpoint of `plan`: a committed group whose
    /// view was not staged to since has nothing staged any more.
    fn checkpointed(&mut self, plan: Plan, mut written: Written) {
        for (group, writes) in plan.groups {
            let Some(view) = self.groups.get_mut(&group) else {
                continue;
            };
            let record = written.remove(&group);
            if view.writes == writes {
                view.flushed(record);
            } else if record.is_some() {
                // Staged to while the commit ran (its flush was dropped):
                // the view's writes stay staged, and the next checkpoint
                // writes them again; the snapshot record follows the disk,
                // so that checkpoint gives its image a new generation.
                view.snapshot = record;
            }
        }
    }
}

impl Commit {
    /// Writes snapshot images, then one transaction for every group,
    /// growing the map and retrying when it is full, then removes the
    /// images the new ones replace.
    fn run(self) -> Result<Written, StorageError> {
        // Snapshot images first: the records committed below name them.
        let mut written = Written::new();
        for staged in &self.snapshots {
            let data = &staged.snapshot.data;
            let name = snapshot_file::file_name(staged.group, staged.generation);
            snapshot_file::write_atomic(&self.snap_dir, &name, data)?;
            let record = SnapshotRecord {
                meta: staged.snapshot.meta.clone(),
                generation: staged.generation,
                len: data.len() as u64,
                crc: crc32fast::hash(data),
            };
            written.insert(staged.group, record);
        }
        let batch = self.batch(&written)?;
        loop {
            match self.commit(&batch) {
                Ok(()) => break,
                Err(heed::Error::Mdb(MdbError::MapFull)) => self.grow_map()?,
                Err(e) => return Err(env::lmdb_error(&self.data_path, e)),
            }
        }
        for staged in &self.snapshots {
            if let Some(old) = staged.replaces {
                // Best effort: a file left behind is removed at next open.
                let name = snapshot_file::file_name(staged.group, old);
                let _ = fs::remove_file(self.snap_dir.join(name));
            }
        }
        Ok(written)
    }

    /// Encodes everything before the transaction, so a retry after growing
    /// the map does not encode again.
    fn batch(&self, written: &Written) -> Result<Batch, StorageError> {
        let encoding = |detail: String| StorageError::Other(format!("storage-lmdb: {detail}"));
        let mut batch = Batch::default();
        for staged in &self.groups {
            let group = staged.group;
            let key = codec::group_key(group);
            let mut entries = Vec::with_capacity(staged.entries.len());
            for entry in &staged.entries {
                let entry_key = codec::entry_key(group, entry.id.index);
                entries.push((
                    entry_key,
                    codec::encode(&entry_key, entry).map_err(encoding)?,
                ));
            }
            batch.groups.push(GroupBatch {
                key,
                hard_state: codec::encode(&key, &staged.hard_state).map_err(encoding)?,
                bounds: codec::encode(&key, &staged.bounds).map_err(encoding)?,
                first: codec::entry_key(group, LogIndex(0)),
                compacted: codec::entry_key(group, staged.bounds.compacted.index),
                tail_start: codec::entry_key(group, staged.tail_start),
                end: codec::entry_key(group, LogIndex(u64::MAX)),
                entries,
            });
        }
        for (&group, record) in written {
            let key = codec::group_key(group);
            batch
                .snapshots
                .push((key, codec::encode(&key, record).map_err(encoding)?));
        }
        batch.journal = self.journal.map(codec::encode_generation);
        Ok(batch)
    }

    /// Writes `batch` in one transaction and commits it (one fsync).
    fn commit(&self, batch: &Batch) -> heed::Result<()> {
        let dbs = &self.dbs;
        let mut txn = self.env.write_txn()?;
        for group in &batch.groups {
            dbs.hard_states
                .put(&mut txn, &group.key, &group.hard_state)?;
            dbs.bounds.put(&mut txn, &group.key, &group.bounds)?;
            let compacted = (
                Bound::Included(&group.first[..]),
                Bound::Included(&group.compacted[..]),
            );
            dbs.entries.delete_range(&mut txn, &compacted)?;
            let stale = (
                Bound::Included(&group.tail_start[..]),
                Bound::Included(&group.end[..]),
            );
            dbs.entries.delete_range(&mut txn, &stale)?;
            for (key, value) in &group.entries {
                dbs.entries.put(&mut txn, key, value)?;
            }
        }
        for (key, value) in &batch.snapshots {
            dbs.snapshots.put(&mut txn, key, value)?;
        }
        if let Some(generation) = &batch.journal {
            dbs.meta.put(&mut txn, codec::JOURNAL_KEY, generation)?;
        }
        txn.commit()
    }

    /// Doubles the memory map, up to the maximum.
    fn grow_map(&self) -> Result<(), StorageError> {
        let current = self.env.info().map_size;
        let target = align_up(current.saturating_mul(2)).min(self.max_map_size);
        if target <= current {
            return Err(StorageError::Io {
                path: self.data_path.clone(),
                source: io::Error::new(
                    io::ErrorKind::StorageFull,
                    format!(
                        "the LMDB map is full at {current} bytes, its maximum \
                         (raise LmdbOptions::max_map_size)"
                    ),
                ),
            });
        }
        env::resize(&self.env, &self.data_path, target)
    }
}

/// Everything a commit writes, encoded.
#[derive(Default)]
struct Batch {
    groups: Vec<GroupBatch>,
    snapshots: Vec<([u8; 8], Vec<u8>)>,
    /// The journal generation record, when the commit starts one.
    journal: Option<Vec<u8>>,
}

struct GroupBatch {
    key: [u8; 8],
    hard_state: Vec<u8>,
    bounds: Vec<u8>,
    /// Stored entries in `first..=compacted` are compacted away.
    first: [u8; 16],
    compacted: [u8; 16],
    /// Stored entries in `tail_start..=end` are stale.
    tail_start: [u8; 16],
    end: [u8; 16],
    /// Staged entries.
    entries: Vec<([u8; 16], Vec<u8>)>,
}
