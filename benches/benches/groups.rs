//! One group against 64 groups on 3 nodes: aggregate writes per second with
//! 256 closed-loop proposers spread over the groups (proposer i writes to
//! group i mod groups, on that group's leader), 64-byte values, over
//! mem+mem and tcp+lmdb.

#![allow(missing_docs)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use benches::cluster::{Cluster, ClusterSpec};
use benches::workload::{Target, burst};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn groups(c: &mut Criterion) {
    let quick = benches::quick_mode();
    let rt = common::runtime();
    let mut g = common::group(c, "groups", quick, Duration::from_millis(400));
    let backends: &[(&str, &str)] = if quick {
        &[("mem", "mem")]
    } else {
        &[("mem", "mem"), ("tcp", "lmdb")]
    };
    const PROPOSERS: usize = 256;
    for &(t, s) in backends {
        for groups in [1u64, 64] {
            let mut spec = ClusterSpec::new(
                t.parse().expect("transport"),
                s.parse().expect("storage"),
                3,
            );
            spec.groups = groups;
            let cluster = Arc::new(rt.block_on(Cluster::start(&spec)).expect("cluster starts"));
            let target = Arc::new(Target::Cluster(cluster.clone()));
            g.throughput(Throughput::Elements(PROPOSERS as u64));
            g.bench_function(
                BenchmarkId::new(format!("{t}+{s}/3n/64B/256p"), format!("{groups}g")),
                |b| {
                    b.iter_custom(|iters| {
                        rt.block_on(burst(
                            target.clone(),
                            PROPOSERS,
                            iters * PROPOSERS as u64,
                            64,
                        ))
                        .expect("every write lands")
                        .elapsed
                    })
                },
            );
            rt.block_on(cluster.shutdown());
        }
    }
    g.finish();
}

criterion_group!(benches, groups);
criterion_main!(benches);
