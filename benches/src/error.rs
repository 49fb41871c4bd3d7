//! The crate's error type.

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A backend name or its settings were refused.
    #[error(transparent)]
    Backend(#[from] raft_node::backends::BackendError),
    /// A node did not start.
    #[error(transparent)]
    Start(#[from] raft_node::driver::StartError),
    /// No leader was elected in time.
    #[error("group {group}: no leader after {secs} s")]
    NoLeader {
        /// The group.
        group: u64,
        /// How long we waited.
        secs: u64,
    },
    /// The settings of a run cannot work (for example zero clients).
    #[error("invalid settings: {0}")]
    Settings(String),
    /// A file or directory could not be prepared.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Certificates for QUIC could not be made.
    #[error("certificates: {0}")]
    Certificates(String),
    /// An HTTP target answered something other than success, or not at all.
    #[error("HTTP target: {0}")]
    Http(String),
    /// The peer baseline (openraft) failed.
    #[error("openraft: {0}")]
    Openraft(String),
    /// A run did not complete every operation it was asked for.
    #[error("incomplete run: {done} of {wanted} operations")]
    Incomplete {
        /// Operations completed.
        done: u64,
        /// Operations asked for.
        wanted: u64,
    },
}
