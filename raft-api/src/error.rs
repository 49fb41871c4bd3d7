//! Errors of the backend traits.

use std::path::PathBuf;

use crate::types::{GroupId, LogIndex, NodeId};

/// A failed storage operation. The engine treats any of these on a leader as
/// fatal for that group: it never turns a read error into a malformed
/// message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The operating system reported an error (disk full, permission, ...).
    #[error("storage I/O error at {path}: {source}")]
    Io {
        /// File or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Stored data failed a consistency check.
    #[error("corrupt storage at {path}: {detail}")]
    Corrupt {
        /// File or directory involved.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// The stored data is intact but not this node's to use: the directory
    /// belongs to another cluster, or was written by a newer version of the
    /// backend. Nothing was changed; `fix` tells the operator what to do.
    #[error("storage at {path} cannot be used by this node: {reason}; {fix}")]
    Incompatible {
        /// File or directory involved.
        path: PathBuf,
        /// What was found, against what this node expected.
        reason: String,
        /// What the operator can do about it.
        fix: String,
    },
    /// Another store holds the lock of this data directory: a node running
    /// in another process, or another store in this one. Two nodes must
    /// never share one durable state (one vote record for two voters), so
    /// the second is refused and nothing was changed.
    #[error(
        "storage at {path} is locked by {holder}: another node is using this data directory; \
         stop that node first, or give this node its own data directory"
    )]
    Locked {
        /// The locked file or directory.
        path: PathBuf,
        /// Who holds the lock, as far as is known (for example a process id).
        holder: String,
    },
    /// An append did not continue the log: entries must follow the last index.
    #[error("{group}: append at {got} does not follow the last index {last}")]
    NotContiguous {
        /// Group whose log was written.
        group: GroupId,
        /// Last index in the log.
        last: LogIndex,
        /// Index of the first appended entry.
        got: LogIndex,
    },
    /// A read asked for entries that were compacted away.
    #[error("{group}: entries up to {compacted} were compacted; asked for {asked}")]
    Compacted {
        /// Group whose log was read.
        group: GroupId,
        /// Highest compacted index.
        compacted: LogIndex,
        /// First index asked for.
        asked: LogIndex,
    },
    /// A read asked for entries past the end of the log.
    #[error("{group}: asked for {asked}, past the last index {last}")]
    Unavailable {
        /// Group whose log was read.
        group: GroupId,
        /// Last index in the log.
        last: LogIndex,
        /// Highest index asked for.
        asked: LogIndex,
    },
    /// Any other backend failure.
    #[error("storage error: {0}")]
    Other(String),
}

/// A failed transport operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// No address is known for the node.
    #[error("no address known for {0}")]
    UnknownPeer(NodeId),
    /// The transport was shut down.
    #[error("transport is closed")]
    Closed,
    /// The operating system reported an error.
    #[error("transport I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The transport cannot do what was asked (for example learn a peer's
    /// id from its address alone).
    #[error("not supported by this transport: {0}")]
    Unsupported(&'static str),
    /// Any other backend failure.
    #[error("transport error: {0}")]
    Other(String),
}

/// A failed discovery operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// A peer entry could not be parsed.
    #[error("invalid peer entry `{entry}`: {detail}")]
    InvalidPeer {
        /// The entry as given.
        entry: String,
        /// What is wrong and how to write it.
        detail: String,
    },
    /// A name could not be resolved.
    #[error("cannot resolve `{name}`: {detail}")]
    Resolve {
        /// The name looked up.
        name: String,
        /// Why the look-up failed.
        detail: String,
    },
}
