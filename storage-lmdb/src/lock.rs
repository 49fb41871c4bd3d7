//! The data directory's lock: at most one store per directory, across
//! processes.
//!
//! LMDB itself lets several processes share an environment, so without this
//! lock two nodes pointed at one directory would both run, with one durable
//! identity between them: one vote record for two voters. The store takes
//! an exclusive advisory lock ([`File::try_lock`]) on `<dir>/store.lock`
//! before it reads anything, and holds it until it is dropped. The
//! operating system releases the lock when the file is closed, including
//! when the process dies, so a crashed node never leaves a stale lock
//! behind; the file itself stays (removing it could let two openers lock
//! two different files).
//!
//! The holder writes its process id into the file, so a refused opener can
//! say who holds it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process;

use raft_api::StorageError;

/// Name of the lock file in the store's directory.
pub(crate) const LOCK_FILE: &str = "store.lock";

/// The exclusive lock on a store directory, released when dropped.
#[derive(Debug)]
pub(crate) struct DirLock {
    /// Open, and locked, for as long as the store lives.
    _file: File,
}

impl DirLock {
    /// Takes the lock of `dir` (which must exist), or fails with
    /// [`StorageError::Locked`] if another store, in this process or
    /// another, holds it.
    pub(crate) fn acquire(dir: &Path) -> Result<Self, StorageError> {
        let path = dir.join(LOCK_FILE);
        // Not truncated on open: the content is the holder's process id.
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path);
        let mut file = match opened {
            Ok(file) => file,
            Err(source) => return Err(StorageError::Io { path, source }),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = holder(&mut file);
                return Err(StorageError::Locked { path, holder });
            }
            Err(TryLockError::Error(source)) => return Err(StorageError::Io { path, source }),
        }
        // Who holds it, for the message of a refused opener. Best effort:
        // the lock, not this content, is what keeps a second store out.
        let _ = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", process::id()));
        Ok(Self { _file: file })
    }
}

/// Describes the holder of the lock on `file` from the process id it
/// wrote (which may be missing if it has only just taken the lock).
fn holder(file: &mut File) -> String {
    let mut content = String::new();
    let pid = file
        .read_to_string(&mut content)
        .ok()
        .and_then(|_| content.trim().parse::<u32>().ok());
    match pid {
        Some(pid) if pid == process::id() => "another store in this process".into(),
        Some(pid) => format!("process {pid}"),
        None => "another store (in this or another process)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DirLock::acquire(dir.path()).unwrap();
        let content = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(content, format!("{}\n", process::id()));
        match DirLock::acquire(dir.path()) {
            Err(StorageError::Locked { path, holder }) => {
                assert_eq!(path, dir.path().join(LOCK_FILE));
                assert_eq!(holder, "another store in this process");
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(lock);
        let _again = DirLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn the_holder_is_named_from_the_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        let holder_of = |content: &str| {
            std::fs::write(&path, content).unwrap();
            let mut file = File::open(&path).unwrap();
            holder(&mut file)
        };
        assert_eq!(holder_of("4242\n"), "process 4242");
        assert_eq!(
            holder_of(&process::id().to_string()),
            "another store in this process"
        );
        assert!(holder_of("").contains("another store"));
        assert!(holder_of("not a pid").contains("another store"));
    }

    #[test]
    fn a_missing_directory_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        assert!(matches!(
            DirLock::acquire(&missing),
            Err(StorageError::Io { path, .. }) if path == missing.join(LOCK_FILE)
        ));
    }
}
