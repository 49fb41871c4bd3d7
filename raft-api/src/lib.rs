//! Plain types, one-way messages, small traits and configuration for a Raft
//! consensus library.
//!
//! This crate is what the engine (`raft-node`) and every backend (storage,
//! transport, discovery) agree on. It holds no I/O and no runtime:
//!
//! - [`types`]: identifiers ([`NodeId`], [`GroupId`], [`Term`], [`LogIndex`],
//!   [`LogId`]), log [`Entry`]s and the durable [`HardState`];
//! - [`message`]: the one-way messages peers exchange, each wrapped in an
//!   [`Envelope`] that names its Raft group, so many groups share a node;
//! - [`storage`]: the [`LogStore`] and [`StateMachine`] traits, shaped for an
//!   async driver that stages writes of many groups and makes them durable
//!   with one [`LogStore::flush`] (group commit);
//! - [`transport`] and [`discovery`]: how batches of envelopes move between
//!   nodes and how nodes find each other;
//! - [`config`]: [`Config`] with documented defaults and [`Config::validate`];
//! - [`membership`]: voters, learners and joint configurations
//!   ([`Membership`]), and snapshot metadata;
//! - [`hlc`]: a hybrid logical clock ([`Hlc`], [`HlcClock`]) whose timestamps
//!   are carried by log entries.
//!
//! ```
//! use raft_api::{Config, LogId, LogIndex, Term};
//!
//! let config = Config::default();
//! config.validate().expect("defaults are valid");
//!
//! let a = LogId::new(Term(2), LogIndex(7));
//! let b = LogId::new(Term(3), LogIndex(1));
//! // Raft compares logs by last term first, then by index (§5.4.1).
//! assert!(b > a);
//! ```

pub mod codec;
pub mod config;
pub mod discovery;
pub mod error;
pub mod hlc;
pub mod membership;
pub mod message;
pub mod storage;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod transport;
pub mod types;

pub use config::{Config, ConfigError};
pub use discovery::{Discovery, Peer, PeerChange};
pub use error::{DiscoveryError, StorageError, TransportError};
pub use hlc::{Hlc, HlcClock};
pub use membership::{Membership, MembershipError, Snapshot, SnapshotMeta};
pub use message::{
    AppendRequest, AppendResponse, ConflictHint, Envelope, ForwardOutcome, ForwardRequest,
    ForwardResponse, HeartbeatRequest, HeartbeatResponse, Message, ReadIndexRequest,
    ReadIndexResponse, SnapshotChunk, SnapshotResponse, VoteRequest, VoteResponse,
};
pub use storage::{LogState, LogStore, StateMachine};
pub use transport::{Inbox, Transport};
pub use types::{Entry, GroupId, HardState, LogId, LogIndex, NodeId, Payload, Term};
