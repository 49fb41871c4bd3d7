//! storage-lmdb (being written).
