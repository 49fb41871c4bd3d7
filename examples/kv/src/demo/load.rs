//! The demo's traffic: concurrent writers that measure each write's
//! latency, a probe that times how long writes stall after the leader dies,
//! and the reads that verify every acknowledged write.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;

/// How long the demo keeps retrying one write or one read.
const RETRY_FOR: Duration = Duration::from_secs(60);
/// Pause between two attempts of one operation.
const BACKOFF: Duration = Duration::from_millis(25);

/// The HTTP addresses of the nodes that are up, by node id: requests go to
/// a random one of them.
#[derive(Debug, Default)]
pub(super) struct LiveNodes {
    urls: Mutex<BTreeMap<u64, String>>,
}

impl LiveNodes {
    /// Nodes `id -> base URL`.
    pub(super) fn new(urls: BTreeMap<u64, String>) -> Self {
        LiveNodes {
            urls: Mutex::new(urls),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, String>> {
        self.urls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes node `id` out of rotation.
    pub(super) fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Puts node `id` (back) into rotation.
    pub(super) fn insert(&self, id: u64, url: String) {
        self.lock().insert(id, url);
    }

    /// A node's base URL, chosen with `pick`.
    pub(super) fn pick_url(&self, pick: &mut Pick) -> Option<String> {
        let urls = self.lock();
        let n = urls.len() as u64;
        (n > 0).then(|| urls.values().nth(pick.below(n) as usize).cloned())?
    }
}

/// A tiny xorshift generator for spreading requests over the nodes.
#[derive(Debug)]
pub(super) struct Pick(u64);

impl Pick {
    /// A generator for stream `seed`.
    pub(super) fn new(seed: u64) -> Self {
        Pick(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A write the cluster acknowledged.
#[derive(Clone, Debug)]
pub(super) struct Acked {
    /// Key written.
    pub(super) key: String,
    /// Value written.
    pub(super) value: String,
    /// From the first attempt to the acknowledgement.
    pub(super) latency: Duration,
}

/// What the writers did.
#[derive(Debug, Default)]
pub(super) struct Writes {
    /// Acknowledged writes.
    pub(super) acked: Vec<Acked>,
    /// Keys whose write was never acknowledged.
    pub(super) unacked: Vec<String>,
    /// From the first write to the last acknowledgement.
    pub(super) elapsed: Duration,
}

/// The key of the demo's `i`th write.
pub(super) fn key_of(i: u64) -> String {
    format!("demo-key-{i:06}")
}

/// Sends one PUT; `Ok` once the cluster acknowledged it.
async fn put_once(http: &reqwest::Client, url: &str, key: &str, value: &str) -> Result<(), String> {
    let response = http
        .put(format!("{url}/kv/{key}"))
        .body(value.to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(response.status().to_string())
    }
}

/// Sends one linearizable GET: `Some(value)` or `None` when absent.
async fn get_once(http: &reqwest::Client, url: &str, key: &str) -> Result<Option<String>, String> {
    let response = http
        .get(format!("{url}/kv/{key}?consistency=linearizable"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    match response.status().as_u16() {
        200 => {
            let body = response.bytes().await.map_err(|e| e.to_string())?;
            Ok(Some(String::from_utf8_lossy(&body).into_owned()))
        }
        404 => Ok(None),
        _ => Err(response.status().to_string()),
    }
}

/// Writes `value` to `key` through random live nodes until acknowledged
/// (a PUT of the same value is safe to repeat) or [`RETRY_FOR`] passes.
async fn put_until_acked(
    http: &reqwest::Client,
    nodes: &LiveNodes,
    pick: &mut Pick,
    key: &str,
    value: &str,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < RETRY_FOR {
        if let Some(url) = nodes.pick_url(pick)
            && put_once(http, &url, key, value).await.is_ok()
        {
            return Some(start.elapsed());
        }
        tokio::time::sleep(BACKOFF).await;
    }
    None
}

/// Writes keys `0..keys` with `writers` concurrent writers, counting
/// acknowledgements in `acked` and on `progress`.
pub(super) async fn write_keys(
    http: reqwest::Client,
    nodes: Arc<LiveNodes>,
    keys: u64,
    writers: u64,
    acked: Arc<AtomicU64>,
    progress: ProgressBar,
) -> Writes {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers.max(1) {
        let (http, nodes, next, acked, progress) = (
            http.clone(),
            nodes.clone(),
            next.clone(),
            acked.clone(),
            progress.clone(),
        );
        tasks.spawn(async move {
            let mut pick = Pick::new(w + 1);
            let mut out = Writes::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= keys {
                    return out;
                }
                let (key, value) = (key_of(i), format!("value-{i}"));
                match put_until_acked(&http, &nodes, &mut pick, &key, &value).await {
                    Some(latency) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                        progress.inc(1);
                        out.acked.push(Acked {
                            key,
                            value,
                            latency,
                        });
                    }
                    None => out.unacked.push(key),
                }
            }
        });
    }
    let mut all = Writes::default();
    while let Some(done) = tasks.join_next().await {
        if let Ok(w) = done {
            all.acked.extend(w.acked);
            all.unacked.extend(w.unacked);
        }
    }
    all.elapsed = start.elapsed();
    all.acked.sort_by(|a, b| a.key.cmp(&b.key));
    all
}

/// A probe key in `partition` (of `partitions`), the first after number
/// `*n`, which moves past it.
fn probe_key(partition: u64, partitions: u64, n: &mut u64) -> String {
    loop {
        let key = format!("demo-failover-probe-{n}");
        *n += 1;
        if crate::partition_of(key.as_bytes(), partitions) == partition {
            return key;
        }
    }
}

/// Every 20 ms, starts a write of a fresh probe key in each of `affected`
/// (partitions out of `partitions`) not yet written, without waiting for
/// the earlier ones: a request stuck on the dead leader must not hide that
/// the cluster accepts writes again. Returns how long after `since` the
/// last of those partitions acknowledged a write, and the acknowledged
/// writes.
pub(super) async fn probe_writes(
    http: reqwest::Client,
    nodes: Arc<LiveNodes>,
    since: Instant,
    partitions: u64,
    affected: Vec<u64>,
) -> Option<(Duration, Vec<Acked>)> {
    let mut pick = Pick::new(0xFA11);
    let mut pending: std::collections::BTreeSet<u64> = affected.into_iter().collect();
    let mut acked = Vec::new();
    let mut attempts = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut n = 0;
    while !pending.is_empty() {
        if since.elapsed() > RETRY_FOR {
            return None;
        }
        tokio::select! {
            _ = tick.tick() => {
                for &p in &pending {
                    let Some(url) = nodes.pick_url(&mut pick) else { continue };
                    let key = probe_key(p, partitions, &mut n);
                    let value = format!("probe-{n}");
                    let http = http.clone();
                    attempts.spawn(async move {
                        let start = Instant::now();
                        put_once(&http, &url, &key, &value).await.ok()?;
                        Some((p, Acked { key, value, latency: start.elapsed() }))
                    });
                }
            }
            Some(Ok(Some((p, write)))) = attempts.join_next() => {
                if pending.remove(&p) {
                    acked.push(write);
                }
            }
        }
    }
    Some((since.elapsed(), acked))
}

/// What the verification reads found.
#[derive(Debug, Default)]
pub(super) struct Verified {
    /// Keys read back with the value written.
    pub(super) ok: u64,
    /// Acknowledged writes missing or with another value: `(key, found)`.
    pub(super) lost: Vec<(String, Option<String>)>,
    /// Keys no read could be answered for.
    pub(super) unread: Vec<String>,
}

/// Reads every acknowledged write back with linearizable reads through
/// random live nodes (`readers` at a time).
pub(super) async fn verify(
    http: reqwest::Client,
    nodes: Arc<LiveNodes>,
    writes: Arc<Vec<Acked>>,
    readers: u64,
    progress: ProgressBar,
) -> Verified {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for r in 0..readers.max(1) {
        let (http, nodes, writes, next, progress) = (
            http.clone(),
            nodes.clone(),
            writes.clone(),
            next.clone(),
            progress.clone(),
        );
        tasks.spawn(async move {
            let mut pick = Pick::new(1000 + r);
            let mut out = Verified::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(write) = writes.get(i) else {
                    return out;
                };
                let start = Instant::now();
                let mut found = None;
                while start.elapsed() < RETRY_FOR {
                    if let Some(url) = nodes.pick_url(&mut pick)
                        && let Ok(value) = get_once(&http, &url, &write.key).await
                    {
                        found = Some(value);
                        break;
                    }
                    tokio::time::sleep(BACKOFF).await;
                }
                match found {
                    Some(Some(v)) if v == write.value => out.ok += 1,
                    Some(other) => out.lost.push((write.key.clone(), other)),
                    None => out.unread.push(write.key.clone()),
                }
                progress.inc(1);
            }
        });
    }
    let mut all = Verified::default();
    while let Some(done) = tasks.join_next().await {
        if let Ok(v) = done {
            all.ok += v.ok;
            all.lost.extend(v.lost);
            all.unread.extend(v.unread);
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_spread_over_the_live_nodes() {
        let nodes = LiveNodes::new((1..=3).map(|i| (i, format!("http://n{i}"))).collect());
        let mut pick = Pick::new(7);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..100 {
            seen.insert(nodes.pick_url(&mut pick).unwrap());
        }
        assert_eq!(seen.len(), 3);
        nodes.remove(2);
        for _ in 0..100 {
            assert_ne!(nodes.pick_url(&mut pick).unwrap(), "http://n2");
        }
        nodes.remove(1);
        nodes.remove(3);
        assert_eq!(nodes.pick_url(&mut pick), None);
        nodes.insert(2, "http://n2".into());
        assert_eq!(nodes.pick_url(&mut pick).as_deref(), Some("http://n2"));
    }

    #[test]
    fn probe_keys_land_in_the_partition_asked_for() {
        let mut n = 0;
        for p in [2, 0, 1, 2] {
            let key = probe_key(p, 3, &mut n);
            assert_eq!(crate::partition_of(key.as_bytes(), 3), p, "{key}");
        }
        let (a, b) = (probe_key(0, 1, &mut n), probe_key(0, 1, &mut n));
        assert_ne!(a, b, "every probe key is fresh");
    }

    #[test]
    fn keys_sort_in_write_order() {
        assert_eq!(key_of(42), "demo-key-000042");
        assert!(key_of(9) < key_of(10));
    }
}
