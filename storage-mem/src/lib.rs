//! In-memory storage backends for the Raft engine, for tests, demos,
//! benchmarks and the deterministic simulator.
//!
//! - [`MemLogStore`]: a [`LogStore`](raft_api::LogStore) for every group of
//!   a node (hard state, log and latest snapshot) that keeps staged and
//!   durable writes apart, so a simulated crash ([`MemLogStore::crash`])
//!   loses exactly what was not flushed. It can also fail writes on purpose
//!   ([`MemLogStore::fail_writes`]).
//! - [`KvStateMachine`]: a key-value [`StateMachine`](raft_api::StateMachine)
//!   with put, get, delete and compare-and-set ([`KvCommand`],
//!   [`KvResponse`]), snapshots, and a deterministic
//!   [`state_hash`](KvStateMachine::state_hash) for comparing replicas.
//!
//! Every future these types return is ready at once.
//!
//! ```
//! use std::pin::pin;
//! use std::task::{Context, Poll, Waker};
//!
//! use raft_api::{Entry, GroupId, HardState, Hlc, LogId, LogIndex, LogStore, Payload, Term};
//! use storage_mem::MemLogStore;
//!
//! // The store's futures are always ready; poll once.
//! fn now<F: Future>(future: F) -> F::Output {
//!     match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
//!         Poll::Ready(output) => output,
//!         Poll::Pending => unreachable!("in-memory futures are always ready"),
//!     }
//! }
//!
//! let entry = |index| Entry {
//!     id: LogId::new(Term(1), LogIndex(index)),
//!     timestamp: Hlc::default(),
//!     payload: Payload::Blank,
//! };
//! let group = GroupId(1);
//! let mut store = MemLogStore::new();
//!
//! // Writes are staged, and reads see them at once.
//! store.save_hard_state(group, HardState { term: Term(1), ..HardState::default() })?;
//! store.append(group, &[entry(1), entry(2)])?;
//! assert_eq!(store.log_state(group)?.last.index, LogIndex(2));
//!
//! // A flush makes them durable.
//! now(store.flush())?;
//! assert!(!store.has_unflushed());
//!
//! // A crash loses what was staged after the last flush, and nothing else.
//! store.append(group, &[entry(3)])?;
//! store.crash();
//! assert_eq!(store.log_state(group)?.last.index, LogIndex(2));
//! assert_eq!(store.hard_state(group)?.term, Term(1));
//! # Ok::<(), raft_api::StorageError>(())
//! ```

pub mod kv;
pub mod log_store;

pub use kv::{KvCommand, KvDecodeError, KvResponse, KvStateMachine};
pub use log_store::MemLogStore;

#[cfg(test)]
mod test_util {
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    /// Polls a future that must be ready at once and returns its output.
    pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
        match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(output) => output,
            Poll::Pending => panic!("in-memory futures are always ready"),
        }
    }
}
