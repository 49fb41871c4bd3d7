//! The crate's error type.

use std::path::PathBuf;

/// What can go wrong in `raft-kv`: configuration, starting a node, the
/// client, certificates.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting cannot work; `field` names it as in the flags (`--field`)
    /// and the TOML file (`field`).
    #[error("invalid configuration: `{field}`: {problem}")]
    Config {
        /// The setting, with `_` as in the TOML file.
        field: &'static str,
        /// What is wrong, and how to fix it.
        problem: String,
    },
    /// A backend (transport, storage, discovery) could not be built.
    #[error(transparent)]
    Backend(#[from] raft_node::backends::BackendError),
    /// The Raft node could not start.
    #[error("the node could not start: {0}")]
    Start(#[from] raft_node::driver::StartError),
    /// A file or socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Certificates could not be generated.
    #[error("certificate generation failed: {0}")]
    Certificate(String),
    /// A server answered with an error (HTTP status and its message).
    #[error("server error {status}: {message}")]
    Server {
        /// HTTP status code.
        status: u16,
        /// The server's message.
        message: String,
        /// The leader's HTTP address, when the server named one.
        leader: Option<String>,
    },
    /// No server could be reached or none could serve the request in time;
    /// the last failure is given.
    #[error("no server could serve the request: {0}")]
    Unavailable(String),
    /// A server's answer could not be understood.
    #[error("unexpected answer from {server}: {detail}")]
    Protocol {
        /// The server.
        server: String,
        /// What was wrong.
        detail: String,
    },
}

impl Error {
    /// An I/O error with what was being done, such as the file's path.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// An I/O error about a file.
    pub(crate) fn file(what: &str, path: &std::path::Path, source: std::io::Error) -> Self {
        Error::io(format!("{what} {}", PathBuf::from(path).display()), source)
    }
}
