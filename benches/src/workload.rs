//! Closed-loop and fixed-rate write workloads against a [`Target`].
//!
//! - Closed loop: `clients` tasks, each writing and waiting for the answer
//!   before its next write. Throughput is what the system sustains at that
//!   concurrency; latency is the time of each write.
//! - Fixed rate: writes are due at `rate` per second (see [`Pacer`]),
//!   issued by up to `clients` tasks; latency counts from when a write was
//!   due, so queueing behind a stall is charged.
//!
//! A warm-up runs first and is not measured. Each client writes its own 16
//! keys in turn, so the state machines stay small however long a run is.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};

use crate::BenchError;
use crate::cluster::Cluster;
use crate::pace::Pacer;
use crate::stats::{Latencies, Report};

/// Keys each client cycles through.
pub const KEYS_PER_CLIENT: u64 = 16;

/// Where writes go.
pub enum Target {
    /// An in-process cluster; writes go to each group's leader.
    Cluster(Arc<Cluster>),
    /// A running `raft-kv` cluster: `PUT {url}/kv/{key}` with the value as
    /// body, answered 200 on success.
    Http(HttpTarget),
}

/// A `raft-kv` cluster reached over HTTP.
pub struct HttpTarget {
    urls: Vec<String>,
    client: reqwest::Client,
}

impl HttpTarget {
    /// Targets from a comma-separated list of base URLs
    /// (`http://127.0.0.1:8001,http://127.0.0.1:8002`).
    pub fn parse(list: &str) -> Result<Self, BenchError> {
        let urls: Vec<String> = list
            .split(',')
            .map(|u| u.trim().trim_end_matches('/').to_owned())
            .filter(|u| !u.is_empty())
            .collect();
        if urls.is_empty() {
            return Err(BenchError::Settings("no target URL given".into()));
        }
        for u in &urls {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(BenchError::Settings(format!(
                    "target `{u}` is not an http:// or https:// URL"
                )));
            }
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(4096)
            .build()
            .map_err(|e| BenchError::Http(e.to_string()))?;
        Ok(Self { urls, client })
    }

    /// The base URLs.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    async fn put(&self, client: usize, key: &str, value: Bytes) -> Result<(), String> {
        let url = format!("{}/kv/{key}", self.urls[client % self.urls.len()]);
        let resp = self
            .client
            .put(url)
            .body(value)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("status {}", resp.status()))
        }
    }
}

impl Target {
    /// Writes `value` under the key of `client`'s write number `seq`.
    pub async fn put(&self, client: usize, seq: u64, value: Bytes) -> Result<(), String> {
        let key = format!("c{client}-{}", seq % KEYS_PER_CLIENT);
        match self {
            Target::Cluster(c) => c
                .put(client, Bytes::from(key), value)
                .await
                .map_err(|e| e.to_string()),
            Target::Http(h) => h.put(client, &key, value).await,
        }
    }
}

/// How to load the target.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Concurrent clients (closed loop) or most writes in flight (fixed
    /// rate).
    pub clients: usize,
    /// Measured time.
    pub duration: Duration,
    /// Unmeasured time before it.
    pub warmup: Duration,
    /// Writes per second for a fixed-rate run; closed loop when `None`.
    pub rate: Option<f64>,
    /// Bytes of each value written.
    pub value_bytes: usize,
}

impl Workload {
    /// A closed loop of `clients` writing `value_bytes` for `duration`,
    /// after a warm-up of a tenth of it (at least 200 ms, at most 2 s).
    pub fn closed(clients: usize, value_bytes: usize, duration: Duration) -> Self {
        Self {
            clients,
            duration,
            warmup: (duration / 10).clamp(Duration::from_millis(200), Duration::from_secs(2)),
            rate: None,
            value_bytes,
        }
    }

    fn check(&self) -> Result<(), BenchError> {
        if self.clients == 0 {
            return Err(BenchError::Settings("at least one client is needed".into()));
        }
        if self.duration.is_zero() {
            return Err(BenchError::Settings("the duration must not be zero".into()));
        }
        if let Some(rate) = self.rate
            && Pacer::new(rate).is_none()
        {
            return Err(BenchError::Settings(format!(
                "the rate must be a positive number of writes per second, not {rate}"
            )));
        }
        Ok(())
    }
}

/// What one client measured.
#[derive(Default)]
struct ClientTally {
    lat: Latencies,
    ops: u64,
    errors: u64,
    /// Measured errors by message (at most [`ERROR_KINDS`] kinds).
    kinds: std::collections::BTreeMap<String, u64>,
}

/// Distinct error messages a run keeps count of.
const ERROR_KINDS: usize = 8;

impl ClientTally {
    fn error(&mut self, e: String) {
        self.errors += 1;
        let n = self.kinds.len();
        match self.kinds.get_mut(&e) {
            Some(c) => *c += 1,
            None if n < ERROR_KINDS => {
                self.kinds.insert(e, 1);
            }
            None => {}
        }
    }
}

/// A progress bar over the run's time (hidden when `show` is false or the
/// output is not a terminal).
pub fn progress_bar(show: bool, total: Duration, label: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total.as_millis() as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix} [{bar:30}] {elapsed}/{duration} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label.to_owned());
    bar
}

/// Runs `w` against `target` and reports the measured window. `bar`
/// follows the run (warm-up included).
pub async fn run(
    target: Arc<Target>,
    w: &Workload,
    label: &str,
    bar: &ProgressBar,
) -> Result<Report, BenchError> {
    w.check()?;
    let value = Bytes::from(vec![0x5a; w.value_bytes]);
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let measure_from = start + w.warmup;
    let measure_to = measure_from + w.duration;
    let pacer = w.rate.and_then(Pacer::new).map(Arc::new);
    let mut tasks = Vec::with_capacity(w.clients);
    for client in 0..w.clients {
        let (target, value, done, stop, pacer) = (
            target.clone(),
            value.clone(),
            done.clone(),
            stop.clone(),
            pacer.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut tally = ClientTally::default();
            let mut seq = 0u64;
            loop {
                // When this write is due (fixed rate) or starts (closed).
                let due = match &pacer {
                    Some(p) => {
                        let (_, at) = p.take();
                        let due = start + at;
                        if due >= measure_to {
                            break;
                        }
                        tokio::time::sleep_until(due.into()).await;
                        due
                    }
                    None => {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        Instant::now()
                    }
                };
                let result = target.put(client, seq, value.clone()).await;
                seq += 1;
                let end = Instant::now();
                done.fetch_add(1, Ordering::Relaxed);
                let measured = due >= measure_from && end <= measure_to;
                match result {
                    Ok(()) if measured => {
                        tally.ops += 1;
                        tally.lat.record(end - due);
                    }
                    Ok(()) => {}
                    Err(e) => {
                        if measured {
                            tally.error(e);
                        }
                        // Refused (busy, no leader yet): back off a little.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                if pacer.is_none() && end >= measure_to {
                    break;
                }
            }
            tally
        }));
    }
    // Follow the run, then tell closed-loop clients to stop.
    let total = w.warmup + w.duration;
    while Instant::now() < measure_to {
        let elapsed = start.elapsed().min(total);
        bar.set_position(elapsed.as_millis() as u64);
        bar.set_message(format!("{} writes", done.load(Ordering::Relaxed)));
        tokio::time::sleep(Duration::from_millis(100).min(measure_to - Instant::now())).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut lat = Latencies::new();
    let (mut ops, mut errors) = (0, 0);
    let mut kinds: std::collections::BTreeMap<String, u64> = Default::default();
    for t in tasks {
        let tally = t
            .await
            .map_err(|e| BenchError::Settings(format!("a client failed: {e}")))?;
        lat.merge(&tally.lat);
        ops += tally.ops;
        errors += tally.errors;
        for (k, v) in tally.kinds {
            *kinds.entry(k).or_default() += v;
        }
    }
    bar.finish_and_clear();
    let mut report = Report::new(label, ops, errors, w.duration, &lat);
    if !kinds.is_empty() {
        let list: Vec<String> = kinds.iter().map(|(k, v)| format!("{v}x {k}")).collect();
        report.notes.push(("errors".into(), list.join(", ")));
    }
    Ok(report)
}

/// What a [`burst`] measured.
#[derive(Debug)]
pub struct Burst {
    /// From the first write to the last answer.
    pub elapsed: Duration,
    /// Every successful write's latency.
    pub latencies: Latencies,
    /// Writes that failed (and were retried).
    pub errors: u64,
}

/// Writes exactly `total` values of `value_bytes` with `clients`
/// closed-loop clients sharing the work (a failed write is retried), and
/// times the whole: what a criterion iteration of the backend matrix runs.
pub async fn burst(
    target: Arc<Target>,
    clients: usize,
    total: u64,
    value_bytes: usize,
) -> Result<Burst, BenchError> {
    if clients == 0 {
        return Err(BenchError::Settings("at least one client is needed".into()));
    }
    let value = Bytes::from(vec![0x5a; value_bytes]);
    let left = Arc::new(AtomicU64::new(total));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for client in 0..clients {
        let (target, value, left) = (target.clone(), value.clone(), left.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = ClientTally::default();
            let mut seq = 0u64;
            // Take one write at a time from what is left.
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                loop {
                    let t = Instant::now();
                    let result = target.put(client, seq, value.clone()).await;
                    seq += 1;
                    match result {
                        Ok(()) => {
                            tally.ops += 1;
                            tally.lat.record(t.elapsed());
                            break;
                        }
                        Err(_) => {
                            tally.errors += 1;
                            if tally.errors > 100_000 {
                                return tally;
                            }
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                }
            }
            tally
        }));
    }
    let mut latencies = Latencies::new();
    let (mut ops, mut errors) = (0, 0);
    for t in tasks {
        let tally = t
            .await
            .map_err(|e| BenchError::Settings(format!("a client failed: {e}")))?;
        latencies.merge(&tally.lat);
        ops += tally.ops;
        errors += tally.errors;
    }
    let elapsed = start.elapsed();
    if ops != total {
        return Err(BenchError::Incomplete {
            done: ops,
            wanted: total,
        });
    }
    Ok(Burst {
        elapsed,
        latencies,
        errors,
    })
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::cluster::ClusterSpec;

    #[test]
    fn bad_settings_are_refused() {
        let mut w = Workload::closed(0, 16, Duration::from_secs(1));
        assert!(w.check().is_err());
        w.clients = 1;
        assert!(w.check().is_ok());
        w.rate = Some(0.0);
        assert!(w.check().is_err());
        w.rate = Some(10.0);
        w.duration = Duration::ZERO;
        assert!(w.check().is_err());
        assert!(HttpTarget::parse("").is_err());
        assert!(HttpTarget::parse("127.0.0.1:8001").is_err());
        let t = HttpTarget::parse("http://a:1/, http://b:2").unwrap();
        assert_eq!(t.urls(), ["http://a:1", "http://b:2"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_closed_loop_against_a_mem_cluster_counts_writes() {
        let spec = ClusterSpec::new("mem".parse().unwrap(), "mem".parse().unwrap(), 3);
        let c = Arc::new(Cluster::start(&spec).await.unwrap());
        let target = Arc::new(Target::Cluster(c.clone()));
        let mut w = Workload::closed(4, 16, Duration::from_millis(300));
        w.warmup = Duration::from_millis(50);
        let r = run(target, &w, "mem", &ProgressBar::hidden())
            .await
            .unwrap();
        assert!(r.ops > 0 && r.errors == 0, "{r:?}");
        assert!(
            r.p50_ms > 0.0 && r.p50_ms <= r.p99_ms && r.p99_ms <= r.max_ms,
            "{r:?}"
        );
        c.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_writes_exactly_what_was_asked() {
        let spec = ClusterSpec::new("mem".parse().unwrap(), "mem".parse().unwrap(), 3);
        let c = Arc::new(Cluster::start(&spec).await.unwrap());
        let target = Arc::new(Target::Cluster(c.clone()));
        let b = burst(target.clone(), 7, 100, 16).await.unwrap();
        assert_eq!(b.latencies.count(), 100);
        assert!(b.elapsed > Duration::ZERO);
        assert!(burst(target, 0, 10, 16).await.is_err());
        c.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fixed_rate_run_issues_about_rate_times_duration() {
        let spec = ClusterSpec::new("mem".parse().unwrap(), "mem".parse().unwrap(), 1);
        let c = Arc::new(Cluster::start(&spec).await.unwrap());
        let target = Arc::new(Target::Cluster(c.clone()));
        let w = Workload {
            clients: 8,
            duration: Duration::from_millis(500),
            warmup: Duration::from_millis(100),
            rate: Some(200.0),
            value_bytes: 8,
        };
        let r = run(target, &w, "rate", &ProgressBar::hidden())
            .await
            .unwrap();
        // 100 writes are due in the measured half second; one may end past
        // the window's end and not count.
        assert!((95..=100).contains(&r.ops), "{r:?}");
        c.shutdown().await;
    }

    /// A tiny HTTP server: answers `status` to every request and counts
    /// the PUTs to /kv/.
    async fn http_stub(status: u16) -> (String, Arc<AtomicU64>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let puts = Arc::new(AtomicU64::new(0));
        let count = puts.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        // Read one request: headers, then the body.
                        let Ok(n) = sock.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).to_string();
                        let Some(end) = text.find("\r\n\r\n") else {
                            continue;
                        };
                        let len: usize = text[..end]
                            .lines()
                            .find_map(|l| {
                                let l = l.to_ascii_lowercase();
                                l.strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if buf.len() < end + 4 + len {
                            continue;
                        }
                        if text.starts_with("PUT /kv/") {
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        buf.drain(..end + 4 + len);
                        let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                        if sock.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (format!("http://{addr}"), puts)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn http_writes_are_puts_and_failures_are_counted() {
        let (ok_url, ok_puts) = http_stub(200).await;
        let target = Arc::new(Target::Http(HttpTarget::parse(&ok_url).unwrap()));
        let mut w = Workload::closed(2, 32, Duration::from_millis(200));
        w.warmup = Duration::from_millis(20);
        let r = run(target, &w, "http", &ProgressBar::hidden())
            .await
            .unwrap();
        assert!(r.ops > 0 && r.errors == 0, "{r:?}");
        assert!(ok_puts.load(Ordering::Relaxed) >= r.ops);

        let (bad_url, _) = http_stub(503).await;
        let target = Arc::new(Target::Http(HttpTarget::parse(&bad_url).unwrap()));
        let r = run(target, &w, "http-503", &ProgressBar::hidden())
            .await
            .unwrap();
        assert_eq!(r.ops, 0);
        assert!(r.errors > 0, "{r:?}");
    }
}
