//! A durable Raft [`LogStore`](raft_api::LogStore) on LMDB (through heed):
//! the hard state, log and latest snapshot of every Raft group of a node, in
//! one LMDB environment, with one commit per flush for all groups.
//!
//! - [`LmdbLogStore`]: the store. Writes are staged in memory (reads see
//!   them) and one [`flush`](raft_api::LogStore::flush) commits them all in
//!   one LMDB transaction, on Tokio's blocking pool when polled inside a
//!   Tokio runtime, so the fsyncs never hold up the runtime's threads.
//!   Every stored value carries a CRC32: a bit flip is
//!   reported as [`StorageError::Corrupt`](raft_api::StorageError::Corrupt),
//!   never returned as data. Snapshot images are files next to the
//!   environment, written atomically.
//! - [`LmdbOptions`]: the cluster id recorded in (and checked against) the
//!   directory, the map sizes, and whether to verify everything at open.
//!
//! One node, one directory, one store: the directory belongs to the store
//! (nothing else may write into it), which locks it while open, so a second
//! store on it, in this process or another, is refused
//! ([`StorageError::Locked`](raft_api::StorageError::Locked)). A store also
//! refuses a directory of another cluster or of a newer format version
//! ([`StorageError::Incompatible`](raft_api::StorageError::Incompatible),
//! saying what to do) and a damaged one
//! ([`StorageError::Corrupt`](raft_api::StorageError::Corrupt), saying
//! what it found).
//!
//! ```
//! use std::pin::pin;
//! use std::task::{Context, Poll, Waker};
//!
//! use raft_api::{Entry, GroupId, HardState, Hlc, LogId, LogIndex, LogStore, Payload, Term};
//! use storage_lmdb::{LmdbLogStore, LmdbOptions};
//!
//! // A driver awaits `flush` on its Tokio runtime, which commits on its
//! // blocking pool. Outside a runtime the flush commits on the polling
//! // thread when first polled, and is then ready: polling it once is enough.
//! fn now<F: Future>(future: F) -> F::Output {
//!     match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
//!         Poll::Ready(output) => output,
//!         Poll::Pending => unreachable!("outside a runtime the flush completes when first polled"),
//!     }
//! }
//!
//! let entry = |index| Entry {
//!     id: LogId::new(Term(1), LogIndex(index)),
//!     timestamp: Hlc::default(),
//!     payload: Payload::Blank,
//! };
//! let dir = tempfile::tempdir()?;
//! let group = GroupId(1);
//!
//! let mut store = LmdbLogStore::open(dir.path(), LmdbOptions::new(7))?;
//! // Writes are staged, and reads see them at once...
//! store.save_hard_state(group, HardState { term: Term(1), ..HardState::default() })?;
//! store.append(group, &[entry(1), entry(2)])?;
//! assert_eq!(store.log_state(group)?.last.index, LogIndex(2));
//! // ...and one flush makes every group's writes durable.
//! now(store.flush())?;
//! // Staged, never flushed: lost when the process stops.
//! store.append(group, &[entry(3)])?;
//! drop(store);
//!
//! let store = LmdbLogStore::open(dir.path(), LmdbOptions::new(7))?;
//! assert_eq!(store.log_state(group)?.last.index, LogIndex(2));
//! assert_eq!(store.hard_state(group)?.term, Term(1));
//! // While it is open, no other store may use the directory...
//! let refused = LmdbLogStore::open(dir.path(), LmdbOptions::new(7)).unwrap_err();
//! assert!(refused.to_string().contains("another node is using this data directory"));
//! drop(store);
//!
//! // ...and another cluster's node may not use it at all.
//! let refused = LmdbLogStore::open(dir.path(), LmdbOptions::new(8)).unwrap_err();
//! assert!(refused.to_string().contains("belongs to cluster 7"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod codec;
mod env;
mod group;
mod journal;
mod lock;
mod options;
mod snapshot_file;
mod store;

pub use options::{
    DEFAULT_CHECKPOINT_BYTES, DEFAULT_INITIAL_MAP_SIZE, DEFAULT_MAX_MAP_SIZE, LmdbOptions,
};
pub use store::LmdbLogStore;
