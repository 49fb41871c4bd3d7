//! Settings of [`LmdbLogStore::open`](crate::LmdbLogStore::open).

use raft_api::StorageError;

use crate::env::{MAP_ALIGN, align_up};

/// Default [`LmdbOptions::initial_map_size`]: 64 MiB.
pub const DEFAULT_INITIAL_MAP_SIZE: usize = 64 << 20;

/// Default [`LmdbOptions::max_map_size`]: 16 GiB on 64-bit targets, 1 GiB
/// on smaller ones.
pub const DEFAULT_MAX_MAP_SIZE: usize = if usize::BITS >= 64 {
    (16u64 << 30) as usize
} else {
    1 << 30
};

/// Default [`LmdbOptions::checkpoint_bytes`]: 2 MiB.
pub const DEFAULT_CHECKPOINT_BYTES: u64 = 2 << 20;

/// Settings of a [`LmdbLogStore`](crate::LmdbLogStore).
///
/// ```
/// use storage_lmdb::LmdbOptions;
///
/// let options = LmdbOptions {
///     max_map_size: 1 << 30,
///     ..LmdbOptions::new(42)
/// };
/// assert_eq!(options.cluster_id, 42);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LmdbOptions {
    /// The cluster this node belongs to. Written into a new directory;
    /// opening a directory written for another cluster is refused, so a
    /// node pointed at the wrong data cannot mix two clusters' logs.
    pub cluster_id: u64,
    /// Size of the memory map when opening, in bytes (rounded up to a
    /// multiple of 1 MiB). Only address space: the file grows as data is
    /// written. Never less than what the data file already holds.
    pub initial_map_size: usize,
    /// Largest size the map may grow to, in bytes (rounded down to a
    /// multiple of 1 MiB). A flush that needs more fails with
    /// [`StorageError::Io`] of kind
    /// [`StorageFull`](std::io::ErrorKind::StorageFull).
    pub max_map_size: usize,
    /// Whether [`open`](crate::LmdbLogStore::open) reads every entry and
    /// every snapshot file to check its checksum
    /// ([`verify`](crate::LmdbLogStore::verify)) before returning. Off by
    /// default: open always checks the structure (format record, each
    /// group's bounds against its first and last entries, that snapshot
    /// files exist with their recorded length) and every read checks the
    /// checksums of what it reads, but a full scan costs time proportional
    /// to the data.
    pub verify_on_open: bool,
    /// How large the journal grows before a flush checkpoints, in bytes
    /// (give or take a quarter, chosen at random at each checkpoint, so
    /// that replicas receiving the same writes do not all checkpoint at
    /// once).
    ///
    /// A flush appends what was staged to the journal, a file next to the
    /// environment, and syncs that one file; a *checkpoint* commits
    /// everything journaled into LMDB (one transaction, whose commit syncs
    /// the data file and then writes LMDB's meta page synchronously) and
    /// starts a new journal. Writes staged since a checkpoint are kept in
    /// memory until the next one, and opening the store replays the
    /// journal, so this bounds both. A flush with a staged snapshot always
    /// checkpoints. 0 turns the journal off: every flush is a checkpoint.
    pub checkpoint_bytes: u64,
}

impl LmdbOptions {
    /// Default settings for a node of cluster `cluster_id`.
    pub const fn new(cluster_id: u64) -> Self {
        Self {
            cluster_id,
            initial_map_size: DEFAULT_INITIAL_MAP_SIZE,
            max_map_size: DEFAULT_MAX_MAP_SIZE,
            verify_on_open: false,
            checkpoint_bytes: DEFAULT_CHECKPOINT_BYTES,
        }
    }

    /// The initial and maximum map sizes, aligned, or why they are wrong.
    pub(crate) fn map_sizes(&self) -> Result<(usize, usize), StorageError> {
        let initial = align_up(self.initial_map_size.max(1));
        let max = self.max_map_size / MAP_ALIGN * MAP_ALIGN;
        if max < initial {
            return Err(StorageError::Other(format!(
                "LmdbOptions: max_map_size ({} bytes) must be at least initial_map_size \
                 ({} bytes) and 1 MiB",
                self.max_map_size, self.initial_map_size
            )));
        }
        Ok((initial, max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_sizes_are_aligned_and_ordered() {
        let mut options = LmdbOptions::new(1);
        assert_eq!(
            options.map_sizes().unwrap(),
            (DEFAULT_INITIAL_MAP_SIZE, DEFAULT_MAX_MAP_SIZE)
        );
        options.initial_map_size = 1;
        options.max_map_size = (3 << 20) + 5;
        assert_eq!(options.map_sizes().unwrap(), (1 << 20, 3 << 20));
        options.initial_map_size = 4 << 20;
        let err = options.map_sizes().unwrap_err().to_string();
        assert!(err.contains("max_map_size"), "{err}");
        options.max_map_size = 1000;
        options.initial_map_size = 0;
        assert!(options.map_sizes().is_err());
    }
}
