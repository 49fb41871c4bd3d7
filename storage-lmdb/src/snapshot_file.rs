//! Snapshot images as files in `<dir>/snapshots/`.
//!
//! A file is named after its group and generation
//! (`<group:016x>-<generation:016x>.snap`) and written atomically: a
//! temporary file, fsync, rename, fsync of the directory. Only then does a
//! flush commit the LMDB record that names it, with its length and CRC32;
//! the previous file is removed after that commit. Files no record names
//! (left by a crash between the two steps) are removed at open.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use raft_api::{GroupId, StorageError};

/// Suffix of snapshot files.
const SUFFIX: &str = ".snap";
/// Suffix of snapshot files being written.
const TMP_SUFFIX: &str = ".snap.tmp";

/// Name of the file holding generation `generation` of `group`'s snapshot.
pub(crate) fn file_name(group: GroupId, generation: u64) -> String {
    format!("{:016x}-{generation:016x}{SUFFIX}", group.0)
}

/// Whether `name` is a file this module writes: a snapshot (with its group
/// and generation) or a temporary file.
pub(crate) fn parse_name(name: &str) -> Option<ParsedName> {
    if let Some(stem) = name.strip_suffix(TMP_SUFFIX) {
        return parse_stem(stem).map(|_| ParsedName::Temporary);
    }
    let (group, generation) = parse_stem(name.strip_suffix(SUFFIX)?)?;
    Some(ParsedName::Snapshot { group, generation })
}

/// A file name of this module, parsed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ParsedName {
    /// A complete snapshot file.
    Snapshot {
        /// Its group.
        group: GroupId,
        /// Its generation.
        generation: u64,
    },
    /// A file being written when the process stopped.
    Temporary,
}

fn parse_stem(stem: &str) -> Option<(GroupId, u64)> {
    let (group, generation) = stem.split_once('-')?;
    if group.len() != 16 || generation.len() != 16 {
        return None;
    }
    Some((
        GroupId(u64::from_str_radix(group, 16).ok()?),
        u64::from_str_radix(generation, 16).ok()?,
    ))
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `data` to `dir/name` atomically and durably.
pub(crate) fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> Result<PathBuf, StorageError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
    file.write_all(data).map_err(io_error(&tmp))?;
    file.sync_all().map_err(io_error(&tmp))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(io_error(&path))?;
    sync_dir(dir)?;
    Ok(path)
}

/// Makes the directory entries of `dir` durable (created, renamed or
/// removed files). A no-op where directories cannot be opened as files.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Reads a snapshot image and checks it against its record.
pub(crate) fn read_verified(path: &Path, len: u64, crc: u32) -> Result<Bytes, StorageError> {
    let data = match fs::read(path) {
        Ok(data) => data,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(missing(path));
        }
        Err(e) => return Err(io_error(path)(e)),
    };
    check_len(path, data.len() as u64, len)?;
    let computed = crc32fast::hash(&data);
    if computed != crc {
        return Err(StorageError::Corrupt {
            path: path.to_path_buf(),
            detail: format!(
                "snapshot image checksum mismatch (recorded {crc:#010x}, computed {computed:#010x})"
            ),
        });
    }
    Ok(Bytes::from(data))
}

/// Checks that a snapshot file exists with the recorded length, without
/// reading it.
pub(crate) fn check_present(path: &Path, len: u64) -> Result<(), StorageError> {
    match fs::metadata(path) {
        Ok(meta) => check_len(path, meta.len(), len),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(missing(path)),
        Err(e) => Err(io_error(path)(e)),
    }
}

fn check_len(path: &Path, actual: u64, recorded: u64) -> Result<(), StorageError> {
    if actual == recorded {
        return Ok(());
    }
    Err(StorageError::Corrupt {
        path: path.to_path_buf(),
        detail: format!(
            "snapshot file holds {actual} bytes but {recorded} were written{}",
            if actual < recorded {
                " (truncated)"
            } else {
                ""
            }
        ),
    })
}

fn missing(path: &Path) -> StorageError {
    StorageError::Corrupt {
        path: path.to_path_buf(),
        detail: "the snapshot file the log store refers to is missing".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let name = file_name(GroupId(0xab), 7);
        assert_eq!(name, "00000000000000ab-0000000000000007.snap");
        assert_eq!(
            parse_name(&name),
            Some(ParsedName::Snapshot {
                group: GroupId(0xab),
                generation: 7
            })
        );
        assert_eq!(
            parse_name(&format!("{name}.tmp")),
            Some(ParsedName::Temporary)
        );
        assert_eq!(parse_name("notes.txt"), None);
        assert_eq!(parse_name("ab-7.snap"), None);
        assert_eq!(parse_name("zzzzzzzzzzzzzzzz-0000000000000007.snap"), None);
    }

    #[test]
    fn written_files_are_verified_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_atomic(dir.path(), "x.snap", b"image").unwrap();
        let crc = crc32fast::hash(b"image");
        assert_eq!(read_verified(&path, 5, crc).unwrap(), &b"image"[..]);
        check_present(&path, 5).unwrap();
        assert!(matches!(
            read_verified(&path, 6, crc),
            Err(StorageError::Corrupt { detail, .. }) if detail.contains("truncated")
        ));
        assert!(matches!(
            read_verified(&path, 5, crc ^ 1),
            Err(StorageError::Corrupt { detail, .. }) if detail.contains("checksum")
        ));
        fs::remove_file(&path).unwrap();
        assert!(matches!(
            read_verified(&path, 5, crc),
            Err(StorageError::Corrupt { detail, .. }) if detail.contains("missing")
        ));
        assert!(matches!(
            check_present(&path, 5),
            Err(StorageError::Corrupt { .. })
        ));
        assert!(!dir.path().join("x.snap.tmp").exists());
    }
}
