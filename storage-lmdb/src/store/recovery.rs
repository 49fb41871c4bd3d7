//! Opening: refusing damaged or foreign directories, loading the durable
//! state and checking it.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::ops::Bound;
use std::path::Path;

use heed::types::Bytes;
use heed::{Database, Env, RoTxn, WithoutTls};
use raft_api::{GroupId, HardState, LogIndex, LogStore, StorageError};

use super::{Dbs, LmdbLogStore};
use crate::codec::{self, BoundsRecord, SnapshotRecord};
use crate::env;
use crate::group::GroupView;
use crate::journal;
use crate::snapshot_file::{self, ParsedName};

/// The flushed records of one group.
pub(super) struct GroupRecords {
    pub(super) hard_state: HardState,
    pub(super) bounds: BoundsRecord,
    pub(super) snapshot: Option<SnapshotRecord>,
}

impl LmdbLogStore {
    /// Reads every group's records and checks the structure of what is
    /// stored (see [`check_structure`](Self::check_structure)); returns the
    /// views of a store with nothing staged.
    pub(super) fn load(&self) -> Result<BTreeMap<GroupId, GroupView>, StorageError> {
        let txn = self.read_txn()?;
        let records = self.load_records(&txn)?;
        self.check_structure(&txn, &records)?;
        Ok(records
            .into_iter()
            .map(|(group, r)| {
                let view = GroupView {
                    hard_state: r.hard_state,
                    compacted: r.bounds.compacted,
                    last: r.bounds.last,
                    snapshot: r.snapshot,
                    ..GroupView::default()
                };
                (group, view)
            })
            .collect())
    }

    /// The journal generation LMDB records (0 when none is recorded).
    pub(super) fn journal_generation(&self) -> Result<u64, StorageError> {
        let txn = self.read_txn()?;
        match self
            .dbs
            .meta
            .get(&txn, codec::JOURNAL_KEY)
            .map_err(|e| self.lmdb(e))?
        {
            None => Ok(0),
            Some(value) => codec::decode_generation(value).map_err(|detail| {
                self.corrupt(format!("database `meta`, key `journal`: {detail}"))
            }),
        }
    }

    /// Replays the journal of the current generation, if there is one, on
    /// top of the loaded views, and removes journal files of other
    /// generations. The replayed writes are durable (in the journal) but
    /// not yet in LMDB: the next checkpoint commits them.
    pub(super) fn replay_journal(&mut self) -> Result<(), StorageError> {
        let generation = self.journal.generation;
        journal::remove_others(&self.dir, generation);
        let Some(journal::Opened { file, bytes, scan }) = journal::open(&self.dir, generation)?
        else {
            return Ok(());
        };
        let path = self.journal.path(generation);
        let corrupt = |offset: usize, detail: String| StorageError::Corrupt {
            path: path.clone(),
            detail: format!("the record at byte {offset}: {detail}"),
        };
        self.journal.replaying = true;
        let replayed = (|| {
            for (offset, body) in &scan.records {
                let ops = journal::decode_ops(&bytes[body.clone()])
                    .map_err(|detail| corrupt(*offset, detail))?;
                for op in ops {
                    self.replay(op)
                        .map_err(|e| corrupt(*offset, format!("it does not apply: {e}")))?;
                }
            }
            Ok(())
        })();
        self.journal.replaying = false;
        replayed?;
        self.journal.file = Some(file);
        self.journal.end = scan.valid as u64;
        self.journal.touched = true;
        Ok(())
    }

    /// Stages one replayed write, as the staging call that journaled it did.
    fn replay(&mut self, op: journal::Op) -> Result<(), StorageError> {
        match op {
            journal::Op::HardState(group, state) => self.save_hard_state(group, state),
            journal::Op::Append(group, entries) => self.append(group, &entries),
            journal::Op::Truncate(group, from) => self.truncate(group, from),
            journal::Op::Compact(group, upto) => self.compact(group, upto),
        }
    }

    /// Decodes (checksums included) every hard state, bounds and snapshot
    /// record. Every group must have a hard state and bounds (a flush
    /// writes both), and sane bounds.
    pub(super) fn load_records(
        &self,
        txn: &RoTxn<'_, WithoutTls>,
    ) -> Result<BTreeMap<GroupId, GroupRecords>, StorageError> {
        let hard_states: BTreeMap<GroupId, HardState> =
            self.read_group_db(txn, self.dbs.hard_states, "hard_states")?;
        let bounds: BTreeMap<GroupId, BoundsRecord> =
            self.read_group_db(txn, self.dbs.bounds, "bounds")?;
        let mut snapshots: BTreeMap<GroupId, SnapshotRecord> =
            self.read_group_db(txn, self.dbs.snapshots, "snapshots")?;
        let mut records = BTreeMap::new();
        for (&group, &hard_state) in &hard_states {
            let Some(&bounds) = bounds.get(&group) else {
                return Err(self.corrupt(format!(
                    "database `hard_states` has group {group}, database `bounds` does not"
                )));
            };
            let BoundsRecord { compacted, last } = bounds;
            if last.index < compacted.index
                || (last.index == compacted.index && last != compacted)
                || last.index == LogIndex(u64::MAX)
            {
                return Err(self.corrupt(format!(
                    "database `bounds`, key {group}: impossible bounds (compacted {compacted}, \
                     last {last})"
                )));
            }
            records.insert(
                group,
                GroupRecords {
                    hard_state,
                    bounds,
                    snapshot: snapshots.remove(&group),
                },
            );
        }
        let orphan = bounds
            .keys()
            .find(|g| !hard_states.contains_key(g))
            .map(|g| (g, "bounds"))
            .or_else(|| snapshots.keys().next().map(|g| (g, "snapshots")));
        if let Some((group, db)) = orphan {
            return Err(self.corrupt(format!(
                "database `{db}` has group {group}, database `hard_states` does not"
            )));
        }
        Ok(records)
    }

    /// Decodes every record of a database keyed by group.
    fn read_group_db<T: serde::de::DeserializeOwned>(
        &self,
        txn: &RoTxn<'_, WithoutTls>,
        db: heed::Database<Bytes, Bytes>,
        name: &str,
    ) -> Result<BTreeMap<GroupId, T>, StorageError> {
        let mut out = BTreeMap::new();
        for item in db.iter(txn).map_err(|e| self.lmdb(e))? {
            let (key, value) = item.map_err(|e| self.lmdb(e))?;
            let group = codec::parse_group_key(key).ok_or_else(|| {
                self.corrupt(format!(
                    "database `{name}` has a key of {} bytes, not 8",
                    key.len()
                ))
            })?;
            let record = codec::decode(key, value).map_err(|detail| {
                self.corrupt(format!("database `{name}`, key {group}: {detail}"))
            })?;
            out.insert(group, record);
        }
        Ok(out)
    }

    /// Checks, without reading everything, that the stored entries agree
    /// with the records: each group's first stored entry follows its
    /// compaction point and its last one is the recorded last entry (decoded
    /// and checked), no entries belong to unknown groups, and every snapshot
    /// file exists with its recorded length.
    pub(super) fn check_structure(
        &self,
        txn: &RoTxn<'_, WithoutTls>,
        records: &BTreeMap<GroupId, GroupRecords>,
    ) -> Result<(), StorageError> {
        let entries = self.dbs.entries;
        let lmdb = |e| self.lmdb(e);
        for (&group, record) in records {
            let BoundsRecord { compacted, last } = record.bounds;
            let lo = codec::entry_key(group, LogIndex(0));
            let hi = codec::entry_key(group, LogIndex(u64::MAX));
            let range = (Bound::Included(&lo[..]), Bound::Included(&hi[..]));
            let first = entries
                .range(txn, &range)
                .map_err(lmdb)?
                .next()
                .transpose()
                .map_err(lmdb)?
                .map(|(key, _)| key);
            let stored_last = entries
                .rev_range(txn, &range)
                .map_err(lmdb)?
                .next()
                .transpose()
                .map_err(lmdb)?;
            let index_of = |key: &[u8]| codec::parse_entry_key(key).map(|(_, i)| i);
            match (first, stored_last) {
                (None, _) if last == compacted => {}
                (None, _) | (_, None) => {
                    return Err(self.corrupt(format!(
                        "database `entries`: group {group} should hold entries {}..={} but \
                         holds none",
                        compacted.index.next(),
                        last.index
                    )));
                }
                (Some(first), Some((last_key, last_value))) => {
                    if last == compacted {
                        return Err(self.corrupt(format!(
                            "database `entries`: group {group} holds entries although its log \
                             is empty after {compacted}"
                        )));
                    }
                    if index_of(first) != Some(compacted.index.next()) {
                        return Err(self.corrupt(format!(
                            "database `entries`: the first entry of group {group} should be {} \
                             (after the compaction point), found {:?}",
                            compacted.index.next(),
                            index_of(first)
                        )));
                    }
                    if index_of(last_key) != Some(last.index) {
                        return Err(self.corrupt(format!(
                            "database `entries`: the last entry of group {group} should be {}, \
                             found {:?}",
                            last.index,
                            index_of(last_key)
                        )));
                    }
                    let entry = codec::decode_entry(last_key, last_value).map_err(|detail| {
                        self.corrupt(format!(
                            "database `entries`, key {group}/{}: {detail}",
                            last.index
                        ))
                    })?;
                    if entry.id != last {
                        return Err(self.corrupt(format!(
                            "database `entries`, key {group}/{}: holds {}, the bounds say {last}",
                            last.index, entry.id
                        )));
                    }
                }
            }
            if let Some(snapshot) = &record.snapshot {
                let path = self.snapshot_path(group, snapshot.generation);
                snapshot_file::check_present(&path, snapshot.len)?;
            }
        }
        // Entries of groups without records: jump from group to group.
        let mut from = codec::entry_key(GroupId(0), LogIndex(0));
        loop {
            let range = (Bound::Included(&from[..]), Bound::Unbounded);
            let next = entries
                .range(txn, &range)
                .map_err(lmdb)?
                .next()
                .transpose()
                .map_err(lmdb)?;
            let Some((key, _)) = next else {
                break;
            };
            let Some((group, _)) = codec::parse_entry_key(key) else {
                return Err(self.corrupt(format!(
                    "database `entries` has a key of {} bytes, not 16",
                    key.len()
                )));
            };
            if !records.contains_key(&group) {
                return Err(self.corrupt(format!(
                    "database `entries` holds entries of group {group}, which has no bounds"
                )));
            }
            let Some(next_group) = group.0.checked_add(1) else {
                break;
            };
            from = codec::entry_key(GroupId(next_group), LogIndex(0));
        }
        Ok(())
    }

    /// Removes snapshot files no record names: temporary files and images
    /// of a flush that did not commit, or replaced images a crash kept from
    /// being removed. Best effort: a file that stays is harmless.
    pub(super) fn remove_stray_snapshot_files(&self) {
        let Ok(dir) = fs::read_dir(&self.snap_dir) else {
            return;
        };
        for item in dir.flatten() {
            let name = item.file_name();
            let Some(parsed) = name.to_str().and_then(snapshot_file::parse_name) else {
                continue;
            };
            let keep = match parsed {
                ParsedName::Temporary => false,
                ParsedName::Snapshot { group, generation } => self
                    .view(group)
                    .and_then(|view| view.snapshot.as_ref())
                    .is_some_and(|record| record.generation == generation),
            };
            if !keep {
                let _ = fs::remove_file(item.path());
            }
        }
    }
}

/// Refuses an empty `data.mdb`: LMDB would silently start a new environment
/// over it, and a node must not come back with an empty log it did not
/// have.
pub(super) fn refuse_empty_data_file(data_path: &Path) -> Result<(), StorageError> {
    match fs::metadata(data_path) {
        Ok(meta) if meta.len() == 0 => Err(StorageError::Corrupt {
            path: data_path.to_path_buf(),
            detail: "the data file is empty: it was truncated, or creating the store was \
                     interrupted (if this node never ran, remove the directory)"
                .into(),
        }),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StorageError::Io {
            path: data_path.to_path_buf(),
            source,
        }),
    }
}

/// Refuses a directory whose data file is gone while its snapshot
/// directory remains. [`open`](LmdbLogStore::open) creates the snapshot
/// directory only once the environment is durable, so its presence means a
/// store existed here: starting afresh would silently give the node an
/// empty log and no vote record (it could vote twice in a term), and then
/// remove the snapshot images as strays.
pub(super) fn refuse_lost_data_file(data_path: &Path, snap_dir: &Path) -> Result<(), StorageError> {
    let exists = |path: &Path| {
        fs::symlink_metadata(path).map_or_else(
            |e| match e.kind() {
                io::ErrorKind::NotFound => Ok(false),
                _ => Err(StorageError::Io {
                    path: path.to_path_buf(),
                    source: e,
                }),
            },
            |_| Ok(true),
        )
    };
    if exists(data_path)? || !exists(snap_dir)? {
        return Ok(());
    }
    let images = fs::read_dir(snap_dir)
        .map_err(|source| StorageError::Io {
            path: snap_dir.to_path_buf(),
            source,
        })?
        .flatten()
        .filter(|item| {
            item.file_name()
                .to_str()
                .and_then(snapshot_file::parse_name)
                .is_some_and(|name| matches!(name, ParsedName::Snapshot { .. }))
        })
        .count();
    Err(StorageError::Corrupt {
        path: data_path.to_path_buf(),
        detail: format!(
            "the data file is missing, but a store was created in this directory ({} exists, \
             with {images} snapshot image(s)): its log and vote record are lost; restore the \
             data file, or remove the whole directory to start this node afresh as a new, \
             empty node",
            snap_dir.display()
        ),
    })
}

/// Creates the snapshot directory if it is missing.
pub(super) fn create_snapshot_dir(snap_dir: &Path) -> Result<(), StorageError> {
    match fs::create_dir(snap_dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && snap_dir.is_dir() => Ok(()),
        Err(source) => Err(StorageError::Io {
            path: snap_dir.to_path_buf(),
            source,
        }),
    }
}

/// Opens the store's databases. In a new environment, creates them and
/// writes the format record into the `meta` database; in an existing one,
/// checks the format version and cluster id: another cluster's directory or
/// a newer format is [`StorageError::Incompatible`], naming `dir`.
pub(super) fn open_databases(
    env: &Env<WithoutTls>,
    dir: &Path,
    data_path: &Path,
    cluster_id: u64,
) -> Result<Dbs, StorageError> {
    const META: &str = "meta";
    const OTHERS: [&str; 4] = ["entries", "hard_states", "bounds", "snapshots"];
    let lmdb = |e| env::lmdb_error(data_path, e);
    let corrupt = |detail: String| StorageError::Corrupt {
        path: data_path.to_path_buf(),
        detail,
    };
    let mut txn = env.write_txn().map_err(lmdb)?;
    let meta = env
        .open_database::<Bytes, Bytes>(&txn, Some(META))
        .map_err(lmdb)?;
    let (meta, [entries, hard_states, bounds, snapshots]) = match meta {
        None => {
            // A new environment: it must be empty.
            let main = env
                .open_database::<Bytes, Bytes>(&txn, None)
                .map_err(lmdb)?;
            if let Some(main) = main
                && !main.is_empty(&txn).map_err(lmdb)?
            {
                return Err(corrupt(
                    "the directory holds an LMDB environment without storage-lmdb's format \
                     record: another program's data, or damaged"
                        .into(),
                ));
            }
            let meta = env
                .create_database::<Bytes, Bytes>(&mut txn, Some(META))
                .map_err(lmdb)?;
            let mut others = Vec::with_capacity(OTHERS.len());
            for name in OTHERS {
                others.push(env.create_database(&mut txn, Some(name)).map_err(lmdb)?);
            }
            meta.put(
                &mut txn,
                codec::FORMAT_KEY,
                &codec::encode_format(cluster_id),
            )
            .map_err(lmdb)?;
            let others: [Database<Bytes, Bytes>; 4] = others
                .try_into()
                .map_err(|_| corrupt("cannot create the databases".into()))?;
            (meta, others)
        }
        Some(meta) => {
            let record = meta
                .get(&txn, codec::FORMAT_KEY)
                .map_err(lmdb)?
                .ok_or_else(|| corrupt("the format record is missing".into()))?;
            match codec::decode_format(record).map_err(corrupt)? {
                codec::Format::Newer { version, sealed } => {
                    let reason = format!(
                        "it was written in format version {version} by a newer storage-lmdb, \
                         and this build reads version {} only",
                        codec::FORMAT_VERSION
                    );
                    // The checksum prefix is part of the layout every
                    // version keeps (see `codec::encode_format`): a record
                    // that fails it is damaged, whatever version it names.
                    if !sealed {
                        return Err(corrupt(format!(
                            "the format record fails its checksum ({reason}, if its version \
                             field is intact)"
                        )));
                    }
                    return Err(StorageError::Incompatible {
                        path: dir.to_path_buf(),
                        reason,
                        fix: format!(
                            "run this node with a binary that reads format version {version} \
                             (the newer version that wrote it); wiping the directory instead \
                             loses this node's log and vote record, and the node must then \
                             rejoin its cluster as a new member"
                        ),
                    });
                }
                codec::Format::Current {
                    cluster_id: stored, ..
                } if stored != cluster_id => {
                    return Err(StorageError::Incompatible {
                        path: dir.to_path_buf(),
                        reason: format!(
                            "the directory belongs to cluster {stored}, but this node is \
                             configured for cluster {cluster_id}, and two clusters' data must \
                             not mix"
                        ),
                        fix: format!(
                            "point the node at its own data directory (or correct its cluster \
                             id); wipe this directory only if the node is meant to leave \
                             cluster {stored} for good"
                        ),
                    });
                }
                codec::Format::Current { version, .. } => {
                    if version < codec::FORMAT_VERSION {
                        // An older layout this build reads: from now on
                        // the directory may hold a journal, which a build
                        // of that version would ignore, so it must refuse
                        // the directory as newer.
                        meta.put(
                            &mut txn,
                            codec::FORMAT_KEY,
                            &codec::encode_format(cluster_id),
                        )
                        .map_err(lmdb)?;
                    }
                }
            }
            let mut others = Vec::with_capacity(OTHERS.len());
            for name in OTHERS {
                let db = env
                    .open_database(&txn, Some(name))
                    .map_err(lmdb)?
                    .ok_or_else(|| corrupt(format!("database `{name}` is missing")))?;
                others.push(db);
            }
            let others: [Database<Bytes, Bytes>; 4] = others
                .try_into()
                .map_err(|_| corrupt("cannot open the databases".into()))?;
            (meta, others)
        }
    };
    // A store that never recorded a journal generation gets a random one,
    // as every later generation is (see `journal::next_generation`), unless
    // a journal of generation 0 (the one assumed then) is there to replay.
    if meta.get(&txn, codec::JOURNAL_KEY).map_err(lmdb)?.is_none()
        && !dir.join(journal::file_name(0)).exists()
    {
        let first = journal::next_generation(0);
        meta.put(
            &mut txn,
            codec::JOURNAL_KEY,
            &codec::encode_generation(first),
        )
        .map_err(lmdb)?;
    }
    // Database handles opened in a transaction live on only if it commits.
    txn.commit().map_err(lmdb)?;
    Ok(Dbs {
        meta,
        entries,
        hard_states,
        bounds,
        snapshots,
    })
}
