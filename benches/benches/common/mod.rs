//! Set-up shared by the criterion benches.

use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode};

/// A benchmark group with the suite's sampling: ten flat samples, 3 s of
/// measurement, or `quick_measurement` in the quick (CI smoke) mode.
pub(crate) fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
    quick: bool,
    quick_measurement: Duration,
) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sampling_mode(SamplingMode::Flat).sample_size(10);
    if quick {
        g.warm_up_time(Duration::from_millis(100))
            .measurement_time(quick_measurement);
    } else {
        g.warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3));
    }
    g
}

/// The runtime in-process clusters run on: two workers, as many as cores.
#[allow(dead_code)] // not every bench runs clusters
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}
