//! `raft-kv`: a replicated key-value server built on `raft-node`.
//!
//! One `raft-kv serve` process is one node. It hosts `partitions` Raft
//! groups (group `p` holds the keys with [`partition_of`]`(key, n) == p`),
//! each replicating a [`machine::KvMachine`], and serves them over an HTTP
//! API ([`http`]). Any node answers any request: raft-node forwards writes
//! and linearizable reads made on a follower to the leader.
//!
//! - [`config`]: the settings of `serve`, from flags and a TOML file.
//! - [`machine`]: the replicated state machine and its command encoding.
//! - [`server`]: starts a node and its HTTP listener ([`server::Server`]).
//! - [`http`]: the HTTP routes, handlers and the mapping of errors to
//!   statuses; [`metrics`]: the Prometheus text of `/metrics`.
//! - [`client`]: a client that finds the leader, follows hints and retries
//!   writes safely (client sessions).
//! - [`certs`]: a development CA and per-node certificates for mutual TLS.
//! - [`cli`]: the command line; [`commands`]: what each subcommand does.
//! - [`demo`] and [`local_cluster`]: `raft-kv demo`, and the cluster of
//!   `raft-kv serve` processes it and the end-to-end tests run.
//!
//! ```
//! // Keys map to partitions by a stable hash, the same in every process.
//! let p = raft_kv::partition_of(b"user:42", 4);
//! assert!(p < 4);
//! assert_eq!(p, raft_kv::partition_of(b"user:42", 4));
//! assert_eq!(raft_kv::partition_of(b"anything", 1), 0);
//! ```

pub mod certs;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod demo;
mod error;
pub mod http;
pub mod local_cluster;
pub mod machine;
pub mod metrics;
pub mod server;

pub use error::Error;

/// The partition (Raft group) holding `key` among `partitions` groups: the
/// CRC-32 of the key bytes modulo `partitions` (0 when `partitions` is 0).
/// Stable across processes, versions and platforms.
pub fn partition_of(key: &[u8], partitions: u64) -> u64 {
    if partitions == 0 {
        return 0;
    }
    u64::from(crc32fast::hash(key)) % partitions
}

#[cfg(test)]
mod tests {
    use super::partition_of;

    #[test]
    fn partition_of_is_the_crc32_of_the_key_modulo_n() {
        // CRC-32 (IEEE) of "123456789" is 0xCBF43926.
        assert_eq!(partition_of(b"123456789", u64::MAX), 0xCBF4_3926);
        assert_eq!(partition_of(b"123456789", 7), 0xCBF4_3926 % 7);
        assert_eq!(partition_of(b"", 3), 0);
        assert_eq!(partition_of(b"k", 0), 0);
        let spread: std::collections::BTreeSet<u64> = (0..100)
            .map(|i| partition_of(format!("key-{i}").as_bytes(), 4))
            .collect();
        assert_eq!(spread.len(), 4, "100 keys reach every one of 4 partitions");
    }
}
