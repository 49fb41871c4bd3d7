//! Benchmarks of the Raft library: the pieces shared by the criterion
//! benches (`benches/*.rs`), the `raft-bench` load generator and the
//! openraft baseline.
//!
//! - [`engine_cluster`]: three (or more) [`raft_node::Engine`]s wired
//!   together synchronously, no runtime, no I/O: what the consensus core
//!   alone costs per proposal.
//! - [`cluster`]: whole in-process clusters of [`raft_node::driver::Node`]s
//!   built from backend names (`mem|tcp|quic` x `mem|lmdb`), with any
//!   number of nodes and groups.
//! - [`workload`]: closed-loop (N clients, each waiting for its previous
//!   write) or fixed-rate workloads against a [`workload::Target`]: an
//!   in-process cluster or a running `raft-kv` cluster over HTTP.
//! - [`stats`]: latency histograms and the report (table and JSON).
//! - [`pace`]: the schedule of a fixed-rate workload.
//! - [`direct`]: a transport that hands batches straight to the other
//!   node's inbox, and a state machine that does nothing.
//! - [`baseline`]: openraft's own cluster benchmark workload, implemented
//!   for openraft and for this library alike, run side by side.
//! - [`disk`]: how many synced writes per second the disk under a
//!   directory sustains, for one writer or several at once: the ceiling of
//!   the runs that sync their logs.
//!
//! ```
//! use benches::stats::Latencies;
//! use std::time::Duration;
//!
//! let mut lat = Latencies::new();
//! for ms in 1..=100 {
//!     lat.record(Duration::from_millis(ms));
//! }
//! assert_eq!(lat.count(), 100);
//! assert!(lat.quantile(0.5) >= Duration::from_millis(49));
//! ```

pub mod baseline;
pub mod cluster;
pub mod direct;
pub mod disk;
pub mod engine_cluster;
mod error;
pub mod pace;
pub mod stats;
pub mod workload;

pub use error::BenchError;

/// Whether the quick (CI smoke) mode was asked for: `RAFT_BENCH_QUICK` set
/// to anything but `0` or empty, or `--quick` among the arguments (what
/// `cargo bench -p benches -- --quick` passes to every bench binary).
pub fn quick_mode() -> bool {
    let env = std::env::var("RAFT_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    env || std::env::args().any(|a| a == "--quick")
}
