//! The consensus engine alone: proposals per second through a 3-node group
//! of `raft_node::Engine`s driven in one thread (no runtime, no I/O; the
//! log staged in `MemLogStore`), with 1, 64 and 1024 proposals per turn.
//!
//! `cargo bench -p benches --bench engine` (add `-- --quick`, or set
//! `RAFT_BENCH_QUICK=1`, for a smoke run).

#![allow(missing_docs)]

mod common;

use std::time::Duration;

use benches::engine_cluster::EngineCluster;
use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn engine(c: &mut Criterion) {
    let quick = benches::quick_mode();
    let mut g = common::group(c, "engine", quick, Duration::from_millis(300));
    let value = Bytes::from_static(&[7u8; 16]);
    for batch in [1usize, 64, 1024] {
        let mut cluster = EngineCluster::new(3).expect("a leader");
        let (sent, applied) = (cluster.messages(), cluster.applied()[0]);
        cluster.propose_batch(batch, &value).expect("proposes");
        println!(
            "engine: {:.2} messages per proposal at {batch} per turn",
            (cluster.messages() - sent) as f64 / (cluster.applied()[0] - applied) as f64
        );
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_with_input(
            BenchmarkId::new("3 nodes, 16 B, proposals per turn", batch),
            &batch,
            |b, &batch| {
                b.iter(|| {
                    let applied = cluster.propose_batch(batch, &value).expect("proposes");
                    assert_eq!(applied, batch as u64);
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
