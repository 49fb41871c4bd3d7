//! The backend matrix: whole in-process clusters of `raft_node` nodes,
//! writes through each group's leader, closed loop.
//!
//! Axes: transport {mem (in-process), tcp, quic} x storage {mem, lmdb} x
//! nodes {1, 3, 5} x value {16 B, 256 B, 4 KiB} x proposers {1, 64, 1024}.
//! The full product (162 clusters) would take hours, so the default run
//! covers every value of every axis along three slices:
//!
//! 1. backends x proposers: all six transport x storage pairs, 3 nodes,
//!    256 B, at 1, 64 and 1024 proposers (18 runs);
//! 2. nodes: 1 and 5 nodes (3 is in slice 1) for mem+mem, tcp+lmdb and
//!    quic+mem, 256 B, 64 proposers (6 runs);
//! 3. value size: 16 B and 4 KiB (256 B is in slice 1) for mem+mem,
//!    tcp+mem, quic+mem and tcp+lmdb, 3 nodes, 64 proposers (8 runs).
//!
//! Each run reports throughput (criterion's elements/s: writes/s) and
//! prints the write latency percentiles it saw (p50/p99/p99.9). The quick
//! mode (`-- --quick` or `RAFT_BENCH_QUICK=1`) runs five clusters that
//! still touch every value of every axis once, with short measurements.

#![allow(missing_docs)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use benches::cluster::{Cluster, ClusterSpec};
use benches::stats::Latencies;
use benches::workload::{Target, burst};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use raft_node::backends::{StorageKind, TransportKind};

/// One cell of the matrix.
#[derive(Clone, Copy)]
struct Cell {
    transport: &'static str,
    storage: &'static str,
    nodes: usize,
    value: usize,
    proposers: usize,
}

fn cells(quick: bool) -> Vec<Cell> {
    let cell = |transport, storage, nodes, value, proposers| Cell {
        transport,
        storage,
        nodes,
        value,
        proposers,
    };
    if quick {
        return vec![
            cell("mem", "mem", 3, 256, 64),
            cell("tcp", "lmdb", 3, 256, 1),
            cell("quic", "mem", 3, 16, 1024),
            cell("mem", "lmdb", 1, 4096, 64),
            cell("tcp", "mem", 5, 256, 64),
        ];
    }
    let mut out = Vec::new();
    for t in ["mem", "tcp", "quic"] {
        for s in ["mem", "lmdb"] {
            for p in [1, 64, 1024] {
                out.push(cell(t, s, 3, 256, p));
            }
        }
    }
    for (t, s) in [("mem", "mem"), ("tcp", "lmdb"), ("quic", "mem")] {
        for n in [1, 5] {
            out.push(cell(t, s, n, 256, 64));
        }
    }
    for (t, s) in [
        ("mem", "mem"),
        ("tcp", "mem"),
        ("quic", "mem"),
        ("tcp", "lmdb"),
    ] {
        for v in [16, 4096] {
            out.push(cell(t, s, 3, v, 64));
        }
    }
    out
}

fn matrix(c: &mut Criterion) {
    let quick = benches::quick_mode();
    let rt = common::runtime();
    let mut g = common::group(c, "matrix", quick, Duration::from_millis(400));
    for cell in cells(quick) {
        let transport: TransportKind = cell.transport.parse().expect("transport");
        let storage: StorageKind = cell.storage.parse().expect("storage");
        let spec = ClusterSpec::new(transport, storage, cell.nodes);
        let cluster = Arc::new(rt.block_on(Cluster::start(&spec)).expect("cluster starts"));
        let target = Arc::new(Target::Cluster(cluster.clone()));
        // One iteration: every proposer writes once (a few times when
        // there are few), so samples are long enough to time.
        let per_iter = cell.proposers.max(16) as u64;
        let seen = Mutex::new(Latencies::new());
        let name = format!(
            "{}+{}/{}n/{}B",
            cell.transport, cell.storage, cell.nodes, cell.value
        );
        g.throughput(Throughput::Elements(per_iter));
        g.bench_with_input(
            BenchmarkId::new(name.clone(), format!("{}p", cell.proposers)),
            &cell,
            |b, cell| {
                b.iter_custom(|iters| {
                    let total = iters * per_iter;
                    let run = rt
                        .block_on(burst(target.clone(), cell.proposers, total, cell.value))
                        .expect("every write lands");
                    if let Ok(mut s) = seen.lock() {
                        s.merge(&run.latencies);
                    }
                    run.elapsed
                })
            },
        );
        let lat = seen.into_inner().unwrap_or_default();
        println!(
            "matrix/{name}/{}p latency: p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms ({} writes)",
            cell.proposers,
            lat.quantile(0.5).as_secs_f64() * 1e3,
            lat.quantile(0.99).as_secs_f64() * 1e3,
            lat.quantile(0.999).as_secs_f64() * 1e3,
            lat.count()
        );
        rt.block_on(cluster.shutdown());
    }
    g.finish();
}

criterion_group!(benches, matrix);
criterion_main!(benches);
