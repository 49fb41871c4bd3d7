//! Latency histograms and run reports.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Longest latency tracked exactly (longer ones count as this): 60 s.
const MAX_NANOS: u64 = 60_000_000_000;

/// A latency histogram with 3 significant digits, from 1 µs to 60 s.
#[derive(Clone, Debug)]
pub struct Latencies {
    hist: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            hist: Histogram::new_with_bounds(1_000, MAX_NANOS, 3).expect("valid bounds"),
        }
    }

    /// Records one latency (clamped to the tracked range).
    pub fn record(&mut self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.hist.saturating_record(nanos.clamp(1_000, MAX_NANOS));
    }

    /// Adds every latency of `other`.
    pub fn merge(&mut self, other: &Latencies) {
        // Both have the same bounds, so adding cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    /// Latencies recorded.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The latency at quantile `q` (0.0 to 1.0); zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.hist.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.hist.value_at_quantile(q))
    }

    /// Mean latency; zero when empty.
    pub fn mean(&self) -> Duration {
        if self.hist.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.hist.mean() as u64)
    }

    /// Longest latency; zero when empty.
    pub fn max(&self) -> Duration {
        if self.hist.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.hist.max())
    }
}

/// The outcome of one load run: throughput and latency percentiles.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// What was run (backends, sizes, clients).
    pub label: String,
    /// Writes that succeeded in the measured window.
    pub ops: u64,
    /// Writes that failed (and were not counted in `ops`).
    pub errors: u64,
    /// Length of the measured window, seconds.
    pub seconds: f64,
    /// `ops / seconds`.
    pub ops_per_sec: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// 99.9th percentile latency, milliseconds.
    pub p999_ms: f64,
    /// Longest latency, milliseconds.
    pub max_ms: f64,
    /// Mean latency, milliseconds.
    pub mean_ms: f64,
    /// Extra facts of the run (fsyncs per second, memory, ...), by name.
    pub notes: Vec<(String, String)>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl Report {
    /// A report of `ops` successful writes with these latencies over
    /// `elapsed`.
    pub fn new(
        label: impl Into<String>,
        ops: u64,
        errors: u64,
        elapsed: Duration,
        lat: &Latencies,
    ) -> Self {
        let seconds = elapsed.as_secs_f64();
        Self {
            label: label.into(),
            ops,
            errors,
            seconds,
            ops_per_sec: if seconds > 0.0 {
                ops as f64 / seconds
            } else {
                0.0
            },
            p50_ms: ms(lat.quantile(0.5)),
            p99_ms: ms(lat.quantile(0.99)),
            p999_ms: ms(lat.quantile(0.999)),
            max_ms: ms(lat.max()),
            mean_ms: ms(lat.mean()),
            notes: Vec::new(),
        }
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

/// Formats reports as a Markdown table (one row each).
pub fn table(reports: &[Report]) -> String {
    let mut out = String::from(
        "| run | ops | errors | writes/s | p50 ms | p99 ms | p99.9 ms | max ms |\n\
         |---|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for r in reports {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} |",
            r.label, r.ops, r.errors, r.ops_per_sec, r.p50_ms, r.p99_ms, r.p999_ms, r.max_ms
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_spread() {
        let mut lat = Latencies::new();
        for us in 1..=10_000u64 {
            lat.record(Duration::from_micros(us));
        }
        let near = |got: Duration, want_us: f64| {
            let got = got.as_secs_f64() * 1e6;
            assert!(
                (got - want_us).abs() <= want_us * 0.002 + 1.0,
                "got {got} µs, want {want_us}"
            );
        };
        near(lat.quantile(0.5), 5_000.0);
        near(lat.quantile(0.99), 9_900.0);
        near(lat.quantile(0.999), 9_990.0);
        near(lat.max(), 10_000.0);
        near(lat.mean(), 5_000.5);
        assert_eq!(lat.count(), 10_000);
    }

    #[test]
    fn a_rare_slow_write_shows_in_the_tail_only() {
        let mut lat = Latencies::new();
        for _ in 0..999 {
            lat.record(Duration::from_millis(1));
        }
        lat.record(Duration::from_millis(500));
        assert!(lat.quantile(0.99) < Duration::from_millis(2));
        assert!(lat.quantile(0.9999) > Duration::from_millis(499));
        assert!(lat.max() > Duration::from_millis(499));
    }

    #[test]
    fn merging_adds_counts_and_extremes_are_clamped() {
        let mut a = Latencies::new();
        let mut b = Latencies::new();
        a.record(Duration::from_nanos(1)); // below the range: counted as 1 µs
        b.record(Duration::from_secs(3600)); // above: counted as 60 s
        a.merge(&b);
        assert_eq!(a.count(), 2);
        assert!(a.quantile(0.0) <= Duration::from_micros(1));
        assert!(a.max() >= Duration::from_secs(59));
    }

    #[test]
    fn an_empty_histogram_reports_zeros() {
        let lat = Latencies::new();
        assert_eq!(lat.quantile(0.99), Duration::ZERO);
        let r = Report::new("empty", 0, 0, Duration::ZERO, &lat);
        assert_eq!(r.ops_per_sec, 0.0);
        assert_eq!(r.p99_ms, 0.0);
    }

    #[test]
    fn report_rows_and_json() {
        let mut lat = Latencies::new();
        lat.record(Duration::from_millis(2));
        let r = Report::new("tcp+lmdb", 500, 3, Duration::from_millis(250), &lat);
        assert!((r.ops_per_sec - 2000.0).abs() < 1e-6);
        let t = table(std::slice::from_ref(&r));
        assert!(t.contains("| tcp+lmdb | 500 | 3 | 2000 |"), "{t}");
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["ops"], 500);
        assert_eq!(v["label"], "tcp+lmdb");
    }
}
