//! What the store writes into LMDB: keys, checksummed values, the records of
//! each group and the format record.
//!
//! Every value is `crc32(key ‖ body)` (4 bytes, big-endian) followed by the
//! body. Covering the key as well means a value found under the wrong key
//! (a misdirected write, a bit flip in a key) fails the check too.

use raft_api::{Entry, GroupId, LogId, LogIndex, SnapshotMeta};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Version of the on-disk layout this build writes and reads. Version 2
/// added the journal (`crate::journal`); a version 1 directory is read as
/// a version 2 one without a journal, and its format record is rewritten at
/// open, so that a build that knows nothing of journals refuses it.
pub(crate) const FORMAT_VERSION: u32 = 2;

/// The oldest version this build reads.
const OLDEST_FORMAT_VERSION: u32 = 1;

/// Key of the journal's generation in the `meta` database.
pub(crate) const JOURNAL_KEY: &[u8] = b"journal";

/// First bytes of the format record.
const FORMAT_MAGIC: &[u8; 8] = b"raftlmdb";

/// Key of the format record in the `meta` database.
pub(crate) const FORMAT_KEY: &[u8] = b"format";

/// Length of a checksum.
const CRC_LEN: usize = 4;

/// Key of a log entry: group then index, both big-endian, so LMDB's
/// byte-wise key order is (group, index) order and one group's entries are
/// contiguous.
pub(crate) fn entry_key(group: GroupId, index: LogIndex) -> [u8; 16] {
    let mut key = [0; 16];
    key[..8].copy_from_slice(&group.0.to_be_bytes());
    key[8..].copy_from_slice(&index.0.to_be_bytes());
    key
}

/// Parses an entry key; `None` when it has the wrong length.
pub(crate) fn parse_entry_key(key: &[u8]) -> Option<(GroupId, LogIndex)> {
    let group: [u8; 8] = key.get(..8)?.try_into().ok()?;
    let index: [u8; 8] = key.get(8..)?.try_into().ok()?;
    Some((
        GroupId(u64::from_be_bytes(group)),
        LogIndex(u64::from_be_bytes(index)),
    ))
}

/// Key of a per-group record (hard state, bounds, snapshot).
pub(crate) fn group_key(group: GroupId) -> [u8; 8] {
    group.0.to_be_bytes()
}

/// Parses a per-group key; `None` when it has the wrong length.
pub(crate) fn parse_group_key(key: &[u8]) -> Option<GroupId> {
    Some(GroupId(u64::from_be_bytes(key.try_into().ok()?)))
}

/// Prefixes `body` with the checksum of `key ‖ body`.
pub(crate) fn seal(key: &[u8], body: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(CRC_LEN + body.len());
    value.extend_from_slice(&checksum(key, body).to_be_bytes());
    value.extend_from_slice(body);
    value
}

/// Checks a value written by [`seal`] under `key` and returns its body, or
/// what is wrong with it.
pub(crate) fn unseal<'v>(key: &[u8], value: &'v [u8]) -> Result<&'v [u8], String> {
    let (Some(stored), Some(body)) = (value.get(..CRC_LEN), value.get(CRC_LEN..)) else {
        return Err(format!(
            "value of {} bytes is too short for its checksum",
            value.len()
        ));
    };
    let stored = u32::from_be_bytes([stored[0], stored[1], stored[2], stored[3]]);
    let computed = checksum(key, body);
    if stored != computed {
        return Err(format!(
            "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
        ));
    }
    Ok(body)
}

fn checksum(key: &[u8], body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(key);
    hasher.update(body);
    hasher.finalize()
}

/// Encodes a record with postcard and seals it under `key`.
pub(crate) fn encode<T: Serialize>(key: &[u8], record: &T) -> Result<Vec<u8>, String> {
    let body = postcard::to_allocvec(record).map_err(|e| format!("cannot encode: {e}"))?;
    Ok(seal(key, &body))
}

/// Unseals and decodes a record written by [`encode`].
pub(crate) fn decode<T: DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T, String> {
    let body = unseal(key, value)?;
    postcard::from_bytes(body).map_err(|e| format!("cannot decode: {e}"))
}

/// Decodes the entry stored under `key`, checking it is the entry of that
/// index.
pub(crate) fn decode_entry(key: &[u8], value: &[u8]) -> Result<Entry, String> {
    let entry: Entry = decode(key, value)?;
    match parse_entry_key(key) {
        Some((_, index)) if index == entry.id.index => Ok(entry),
        _ => Err(format!("holds the entry of index {}", entry.id.index)),
    }
}

/// Where a group's log starts and ends, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BoundsRecord {
    /// The last compacted entry (`LogId::default()` if none).
    pub(crate) compacted: LogId,
    /// The last stored entry (`compacted` when the log is empty).
    pub(crate) last: LogId,
}

/// The durable description of a group's snapshot; the image is a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotRecord {
    /// Metadata of the snapshot.
    pub(crate) meta: SnapshotMeta,
    /// Numbers the group's successive snapshot files; names the file.
    pub(crate) generation: u64,
    /// Length of the image in bytes.
    pub(crate) len: u64,
    /// CRC32 of the image.
    pub(crate) crc: u32,
}

/// The format record: a checksum (of the key and the rest, as every
/// value), magic, version, then (version 1) the cluster id. The checksum,
/// magic and version are the fixed layout every version keeps, so a newer
/// version is recognised as such, and told apart from a damaged record,
/// before anything else is read.
pub(crate) fn encode_format(cluster_id: u64) -> Vec<u8> {
    let mut body = Vec::with_capacity(20);
    body.extend_from_slice(FORMAT_MAGIC);
    body.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    body.extend_from_slice(&cluster_id.to_be_bytes());
    seal(FORMAT_KEY, &body)
}

/// The journal generation record.
pub(crate) fn encode_generation(generation: u64) -> Vec<u8> {
    seal(JOURNAL_KEY, &generation.to_be_bytes())
}

/// Reads a journal generation record.
pub(crate) fn decode_generation(value: &[u8]) -> Result<u64, String> {
    let body = unseal(JOURNAL_KEY, value)?;
    let bytes: [u8; 8] = body
        .try_into()
        .map_err(|_| format!("journal generation of {} bytes", body.len()))?;
    Ok(u64::from_be_bytes(bytes))
}

/// What a format record says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// Written by this version or an older one this build reads.
    Current {
        /// Cluster the directory belongs to.
        cluster_id: u64,
        /// The version the record names.
        version: u32,
    },
    /// Written by a newer version of this crate.
    Newer {
        /// The version the record names.
        version: u32,
        /// Whether the record passes its checksum (if not, it is damaged
        /// and the version may be a bit flip).
        sealed: bool,
    },
}

/// Reads a format record; `Err` says what is wrong with it.
pub(crate) fn decode_format(value: &[u8]) -> Result<Format, String> {
    let body = value.get(CRC_LEN..).unwrap_or_default();
    if body.get(..8) != Some(FORMAT_MAGIC) {
        return Err("the format record is not storage-lmdb's".into());
    }
    let version = body
        .get(8..12)
        .and_then(|v| v.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or("the format record is too short")?;
    if version > FORMAT_VERSION {
        let sealed = unseal(FORMAT_KEY, value).is_ok();
        return Ok(Format::Newer { version, sealed });
    }
    if version < OLDEST_FORMAT_VERSION {
        return Err(format!("unknown format version {version}"));
    }
    let body = unseal(FORMAT_KEY, value).map_err(|e| format!("format record: {e}"))?;
    let cluster: [u8; 8] = body
        .get(12..)
        .and_then(|c| c.try_into().ok())
        .ok_or("the format record has the wrong length")?;
    Ok(Format::Current {
        cluster_id: u64::from_be_bytes(cluster),
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_keys_sort_by_group_then_index() {
        let a = entry_key(GroupId(1), LogIndex(300));
        let b = entry_key(GroupId(2), LogIndex(1));
        let c = entry_key(GroupId(2), LogIndex(256));
        assert!(a < b && b < c);
        assert_eq!(parse_entry_key(&c), Some((GroupId(2), LogIndex(256))));
        assert_eq!(parse_entry_key(&c[..15]), None);
        assert_eq!(parse_group_key(&group_key(GroupId(9))), Some(GroupId(9)));
        assert_eq!(parse_group_key(b"short"), None);
    }

    #[test]
    fn seal_detects_flips_in_value_and_key() {
        let value = seal(b"key", b"body");
        assert_eq!(unseal(b"key", &value), Ok(&b"body"[..]));
        let mut flipped = value.clone();
        flipped[5] ^= 0x10;
        assert!(unseal(b"key", &flipped).unwrap_err().contains("checksum"));
        assert!(unseal(b"kez", &value).is_err());
        assert!(unseal(b"key", &value[..3]).is_err());
    }

    #[test]
    fn journal_generation_round_trips_and_is_checked() {
        let record = encode_generation(77);
        assert_eq!(decode_generation(&record), Ok(77));
        let mut flipped = record.clone();
        flipped[6] ^= 1;
        assert!(decode_generation(&flipped).is_err());
        assert!(decode_generation(&seal(JOURNAL_KEY, b"short")).is_err());
    }

    #[test]
    fn format_record_round_trips_and_recognises_newer_versions() {
        let record = encode_format(42);
        assert_eq!(
            decode_format(&record),
            Ok(Format::Current {
                cluster_id: 42,
                version: FORMAT_VERSION
            })
        );
        let with_version = |version: u8| {
            let mut body = encode_format(42)[4..].to_vec();
            body[11] = version;
            seal(FORMAT_KEY, &body)
        };
        // Version 1 (before the journal) is still read.
        assert_eq!(
            decode_format(&with_version(1)),
            Ok(Format::Current {
                cluster_id: 42,
                version: 1
            })
        );
        assert!(decode_format(&with_version(0)).is_err());
        assert_eq!(
            decode_format(&with_version(3)),
            Ok(Format::Newer {
                version: 3,
                sealed: true
            })
        );
        // A flipped version bit: it looks newer, but fails its checksum.
        let mut flipped = record.clone();
        flipped[4 + 11] ^= 0x04;
        assert_eq!(
            decode_format(&flipped),
            Ok(Format::Newer {
                version: 6,
                sealed: false
            })
        );
        let mut flipped = record.clone();
        flipped[4 + 13] ^= 1;
        assert!(decode_format(&flipped).is_err());
        assert!(decode_format(b"garbage").is_err());
        assert!(decode_format(&[]).is_err());
    }
}
