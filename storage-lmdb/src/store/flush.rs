//! Flushing: snapshot images to files, then one LMDB transaction for every
//! group's staged writes.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::ops::Bound;

use heed::MdbError;
use raft_api::{GroupId, LogIndex, StorageError};

use super::LmdbLogStore;
use crate::codec::{self, BoundsRecord, SnapshotRecord};
use crate::env::{self, align_up};
use crate::snapshot_file;

/// Everything a flush writes, encoded before the transaction so a retry
/// after growing the map does not encode again.
#[derive(Default)]
struct Batch {
    groups: Vec<GroupBatch>,
    snapshots: Vec<([u8; 8], Vec<u8>)>,
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

impl LmdbLogStore {
    /// Writes everything staged: snapshot images first, then one LMDB
    /// transaction for every group, growing the map and retrying when it is
    /// full.
    pub(super) fn flush_now(&mut self) -> Result<(), StorageError> {
        let dirty: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, view)| view.dirty)
            .map(|(&group, _)| group)
            .collect();
        if dirty.is_empty() {
            return Ok(());
        }
        // Snapshot images first: the records committed below name them.
        let mut written = BTreeMap::new();
        for &group in &dirty {
            let view = &self.groups[&group];
            if let Some(snapshot) = &view.staged_snapshot {
                let generation = view
                    .snapshot
                    .as_ref()
                    .map_or(1, |r| r.generation.wrapping_add(1));
                let name = snapshot_file::file_name(group, generation);
                snapshot_file::write_atomic(&self.snap_dir, &name, &snapshot.data)?;
                let record = SnapshotRecord {
                    meta: snapshot.meta.clone(),
                    generation,
                    len: snapshot.data.len() as u64,
                    crc: crc32fast::hash(&snapshot.data),
                };
                written.insert(group, record);
            }
        }
        let batch = self.batch(&dirty, &written)?;
        loop {
            match self.commit(&batch) {
                Ok(()) => break,
                Err(heed::Error::Mdb(MdbError::MapFull)) => self.grow_map()?,
                Err(e) => return Err(self.lmdb(e)),
            }
        }
        // Durable: the view has nothing staged any more.
        for group in dirty {
            let Some(view) = self.groups.get_mut(&group) else {
                continue;
            };
            let record = written.remove(&group);
            let replaced = record
                .as_ref()
                .and(view.snapshot.as_ref())
                .map(|old| old.generation);
            view.flushed(record);
            if let Some(old) = replaced {
                // Best effort: a file left behind is removed at next open.
                let _ = fs::remove_file(self.snapshot_path(group, old));
            }
        }
        Ok(())
    }

    fn batch(
        &self,
        dirty: &[GroupId],
        written: &BTreeMap<GroupId, SnapshotRecord>,
    ) -> Result<Batch, StorageError> {
        let encoding = |detail: String| StorageError::Other(format!("storage-lmdb: {detail}"));
        let mut batch = Batch::default();
        for &group in dirty {
            let view = &self.groups[&group];
            let key = codec::group_key(group);
            let bounds = BoundsRecord {
                compacted: view.compacted,
                last: view.last,
            };
            let mut entries = Vec::with_capacity(view.tail.len());
            for entry in &view.tail {
                let entry_key = codec::entry_key(group, entry.id.index);
                entries.push((
                    entry_key,
                    codec::encode(&entry_key, entry).map_err(encoding)?,
                ));
            }
            batch.groups.push(GroupBatch {
                key,
                hard_state: codec::encode(&key, &view.hard_state).map_err(encoding)?,
                bounds: codec::encode(&key, &bounds).map_err(encoding)?,
                first: codec::entry_key(group, LogIndex(0)),
                compacted: codec::entry_key(group, view.compacted.index),
                tail_start: codec::entry_key(group, view.tail_start()),
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
        txn.commit()
    }

    /// Doubles the memory map, up to the maximum.
    fn grow_map(&mut self) -> Result<(), StorageError> {
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
