//! openraft's own cluster benchmark, run the same way for openraft and for
//! this library.
//!
//! The workload, as openraft's `cluster_benchmark` defines it: three nodes
//! in one process; a network of direct function calls to the other node's
//! handle (nothing serialized); an in-memory log that reports every write
//! durable at once; a state machine that does nothing; empty requests;
//! `N` clients, each sending its next write when the previous one is
//! answered; throughput is operations divided by the time until the
//! leader has applied all of them. Both run on a tokio runtime with one
//! thread (`current_thread`), clients and nodes alike, with heartbeats
//! every 50 ms and at most 1024 entries per append (openraft's
//! `max_payload_entries`).
//!
//! - [`ours`][]: [`DirectTransport`](crate::direct::DirectTransport),
//!   `storage_mem::MemLogStore`, [`NoopStateMachine`](crate::direct::NoopStateMachine).
//! - [`peer`][]: openraft with its own `RaftTypeConfig`, log store, state
//!   machine and network of the same kinds.

pub mod ours;
pub mod peer;

use std::time::Duration;

use serde::Serialize;

use crate::BenchError;

/// Heartbeat interval of both libraries, milliseconds.
pub const HEARTBEAT_MS: u64 = 50;
/// Most entries in one append message, both libraries.
pub const MAX_PAYLOAD_ENTRIES: u64 = 1024;
/// Client counts the comparison runs.
pub const CLIENTS: [usize; 4] = [1, 64, 256, 1024];

/// The outcome of one baseline run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BaselineRun {
    /// `ours` or `openraft`.
    pub library: &'static str,
    /// Concurrent clients.
    pub clients: usize,
    /// Operations written (every one answered and applied on the leader).
    pub ops: u64,
    /// Time from the first write until the leader applied the last one.
    pub seconds: f64,
    /// Counters of the run (ours: each node's flushes, batches, messages).
    pub notes: Vec<(String, String)>,
}

impl BaselineRun {
    /// Operations per second.
    pub fn ops_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ops as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// One pair of runs at the same client count.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Pair {
    /// Concurrent clients.
    pub clients: usize,
    /// This library.
    pub ours: BaselineRun,
    /// openraft.
    pub openraft: BaselineRun,
}

impl Pair {
    /// Throughput of ours divided by openraft's.
    pub fn ratio(&self) -> f64 {
        let theirs = self.openraft.ops_per_sec();
        if theirs > 0.0 {
            self.ours.ops_per_sec() / theirs
        } else {
            f64::INFINITY
        }
    }
}

/// Operations per client so that `total` are written in all (at least one
/// per client).
pub fn per_client(total: u64, clients: usize) -> u64 {
    (total / clients.max(1) as u64).max(1)
}

/// A runtime with one thread, as the workload asks for.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, BenchError> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// How long a baseline waits for the leader to apply everything.
pub(crate) const APPLY_TIMEOUT: Duration = Duration::from_secs(600);

/// Runs both libraries for every client count in `clients`, alternating
/// (ours first at each count), and hands each pair to `on_pair` as it is
/// done. `ops(n)` gives the total operations at `n` clients.
pub fn compare(
    clients: &[usize],
    ops: impl Fn(usize) -> u64,
    mut on_pair: impl FnMut(&Pair),
) -> Result<Vec<Pair>, BenchError> {
    let mut pairs = Vec::new();
    for &n in clients {
        let total = ops(n);
        let ours = ours::run(n, total)?;
        let openraft = peer::run(n, total)?;
        let pair = Pair {
            clients: n,
            ours,
            openraft,
        };
        on_pair(&pair);
        pairs.push(pair);
    }
    Ok(pairs)
}

/// The pairs as a Markdown table.
pub fn table(pairs: &[Pair]) -> String {
    use std::fmt::Write as _;
    let mut out = String::from(
        "| clients | ops | ours ops/s | openraft ops/s | ours / openraft |\n|--:|--:|--:|--:|--:|\n",
    );
    for p in pairs {
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.0} | {:.2} |",
            p.clients,
            p.ours.ops,
            p.ours.ops_per_sec(),
            p.openraft.ops_per_sec(),
            p.ratio()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_are_split_among_clients() {
        assert_eq!(per_client(1000, 1), 1000);
        assert_eq!(per_client(1000, 64), 15);
        assert_eq!(per_client(10, 1024), 1);
        assert_eq!(per_client(10, 0), 10);
    }

    #[test]
    fn the_ratio_divides_throughputs() {
        let run = |library, seconds| BaselineRun {
            library,
            clients: 1,
            ops: 1000,
            seconds,
            notes: Vec::new(),
        };
        let p = Pair {
            clients: 1,
            ours: run("ours", 0.5),
            openraft: run("openraft", 1.0),
        };
        assert!((p.ratio() - 2.0).abs() < 1e-9);
        assert!(table(&[p]).contains("| 1 | 1000 | 2000 | 1000 | 2.00 |"));
    }
}
