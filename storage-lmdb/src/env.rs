//! The LMDB environment: opening it, growing its map, and turning heed's
//! errors into [`StorageError`]s. The crate's only `unsafe` code is here.

use std::fs;
use std::io;
use std::path::Path;

use heed::{Env, EnvOpenOptions, MdbError, WithoutTls};
use raft_api::StorageError;

/// Map sizes are kept multiples of this, which is a multiple of every page
/// size LMDB may use (4 KiB to 64 KiB), as resizing requires.
pub(crate) const MAP_ALIGN: usize = 1 << 20;

/// Named databases in the environment.
pub(crate) const MAX_DBS: u32 = 8;

/// Rounds `size` up to a multiple of [`MAP_ALIGN`] (saturating).
pub(crate) fn align_up(size: usize) -> usize {
    size.div_ceil(MAP_ALIGN).saturating_mul(MAP_ALIGN)
}

/// Opens (creating if needed) the environment in `dir`, whose data file is
/// `data_path`. The caller must hold the directory's lock
/// ([`DirLock`](crate::lock::DirLock)): see the SAFETY comment.
pub(crate) fn open(
    dir: &Path,
    data_path: &Path,
    map_size: usize,
) -> Result<Env<WithoutTls>, StorageError> {
    let mut options = EnvOpenOptions::new().read_txn_without_tls();
    options.map_size(map_size).max_dbs(MAX_DBS);
    #[allow(unsafe_code)]
    // SAFETY: LMDB maps `data.mdb` into memory, and heed marks opening it
    // `unsafe` because the map must not be changed behind LMDB's back. It
    // is not: the caller holds the directory's exclusive lock
    // (`crate::lock`), so no other store, in this process or another, has
    // the environment open; heed also refuses a second `Env` for the same
    // path while one is open (`EnvAlreadyOpened`), the store keeps this
    // `Env` private (never handing out it, a transaction or a borrowed
    // value), and no unsafe flag (`NO_LOCK`, `NO_SYNC`, `WRITE_MAP`, ...) is
    // set, so LMDB's own lock file coordinates any other program reading
    // the environment (`mdb_stat`, a backup tool). Users are
    // told that the directory belongs to the store alone (crate docs: one
    // environment per directory, nothing else writes it), and `open` checks
    // below that `data.mdb` is not shorter than LMDB believes, so a file
    // truncated while closed is refused before any page past its end is
    // touched.
    let env = unsafe { options.open(dir) }.map_err(|e| lmdb_error(data_path, e))?;
    check_not_truncated(&env, data_path)?;
    Ok(env)
}

/// Grows the map of `env` to `new_size` (a multiple of [`MAP_ALIGN`]).
///
/// No other transaction of the process may be active in `env`: see the
/// SAFETY comment.
pub(crate) fn resize(
    env: &Env<WithoutTls>,
    data_path: &Path,
    new_size: usize,
) -> Result<(), StorageError> {
    debug_assert!(new_size.is_multiple_of(MAP_ALIGN));
    #[allow(unsafe_code)]
    // SAFETY: LMDB allows changing the map size of an open environment
    // while this process has no transaction active in it. The only caller
    // is a flush's commit (`store/flush.rs`), after it dropped (so aborted)
    // its write transaction. The commit runs while its flush holds the store
    // by `&mut` (so no `&self` read with its short-lived read transaction is
    // running), or, once that flush's future is dropped, while every method
    // that opens a transaction or reads the environment's info, the next
    // flush and the store's `Drop` wait for it to end
    // (`LmdbLogStore::wait_for_commit`, `settle`), so one commit at most
    // runs at a time. No other `Env` on this path exists in the process
    // (heed refuses it) and the store never lends its `Env` or a
    // transaction out.
    unsafe { env.resize(new_size) }.map_err(|e| lmdb_error(data_path, e))
}

/// Refuses a `data.mdb` shorter than the pages LMDB's meta page says are in
/// use: reading those pages through the map would crash the process
/// (SIGBUS) instead of reporting an error.
fn check_not_truncated(env: &Env<WithoutTls>, data_path: &Path) -> Result<(), StorageError> {
    let info = env.info();
    let page_size = u64::from(env.stat().page_size);
    let needed = (info.last_page_number as u64)
        .saturating_add(1)
        .saturating_mul(page_size);
    let actual = fs::metadata(data_path)
        .map_err(|source| StorageError::Io {
            path: data_path.to_path_buf(),
            source,
        })?
        .len();
    if actual < needed {
        return Err(StorageError::Corrupt {
            path: data_path.to_path_buf(),
            detail: format!(
                "the file holds {actual} bytes but its pages end at byte {needed}: it was truncated"
            ),
        });
    }
    Ok(())
}

/// Turns a heed error about the environment in `data_path` into a
/// [`StorageError`]: operating system errors (disk full, permissions) are
/// [`StorageError::Io`], damaged files [`StorageError::Corrupt`], and an
/// environment of another LMDB data version [`StorageError::Incompatible`].
pub(crate) fn lmdb_error(data_path: &Path, error: heed::Error) -> StorageError {
    let io = |source: io::Error| StorageError::Io {
        path: data_path.to_path_buf(),
        source,
    };
    let corrupt = |detail: String| StorageError::Corrupt {
        path: data_path.to_path_buf(),
        detail,
    };
    match error {
        heed::Error::Io(source) => io(source),
        heed::Error::Mdb(
            e @ (MdbError::Corrupted
            | MdbError::PageNotFound
            | MdbError::Invalid
            | MdbError::Incompatible),
        ) => corrupt(format!("LMDB: {e}")),
        heed::Error::Mdb(e @ MdbError::VersionMismatch) => StorageError::Incompatible {
            path: data_path.to_path_buf(),
            reason: format!(
                "LMDB: {e}: the environment was written by a version of LMDB whose data format \
                 this build does not read"
            ),
            fix: "run this node with the build that wrote the directory; wiping the directory \
                  instead loses this node's log and vote record, and the node must then rejoin \
                  its cluster as a new member"
                .into(),
        },
        heed::Error::Mdb(MdbError::MapFull) => io(io::Error::new(
            io::ErrorKind::StorageFull,
            "the LMDB map is full (raise LmdbOptions::max_map_size)",
        )),
        heed::Error::Mdb(MdbError::Panic) => io(io::Error::other(
            "LMDB stopped after a fatal error (an earlier write failed); reopen the store",
        )),
        heed::Error::Mdb(e) => io(io::Error::other(format!("LMDB: {e}"))),
        heed::Error::Encoding(e) | heed::Error::Decoding(e) => corrupt(format!("LMDB: {e}")),
        // The directory's lock (`crate::lock`) normally refuses a second
        // store first; this is the same refusal from heed.
        heed::Error::EnvAlreadyOpened => StorageError::Locked {
            path: data_path.with_file_name(crate::lock::LOCK_FILE),
            holder: "another store in this process".into(),
        },
    }
}
