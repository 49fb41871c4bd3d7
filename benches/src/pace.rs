//! The schedule of a fixed-rate (open-loop) workload.
//!
//! Operation `i` is due at `i / rate` seconds after the start, whether or
//! not earlier operations have finished. Latency is measured from the due
//! time, not from when a client got round to sending it, so a stalled
//! system is charged for the operations it delayed (no coordinated
//! omission).

use std::time::Duration;

/// Hands out tickets for a fixed-rate workload.
#[derive(Debug)]
pub struct Pacer {
    interval_nanos: f64,
    next: std::sync::atomic::AtomicU64,
}

impl Pacer {
    /// A schedule of `rate` operations per second; `None` when the rate is
    /// not a positive finite number.
    pub fn new(rate: f64) -> Option<Self> {
        (rate.is_finite() && rate > 0.0).then(|| Self {
            interval_nanos: 1e9 / rate,
            next: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// When operation `i` is due, after the start.
    pub fn due(&self, i: u64) -> Duration {
        Duration::from_nanos((i as f64 * self.interval_nanos) as u64)
    }

    /// Takes the next ticket: its number and when it is due. Safe to call
    /// from many clients at once; every ticket is handed out once.
    pub fn take(&self) -> (u64, Duration) {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (i, self.due(i))
    }

    /// Operations due in the first `window` (those with `due < window`).
    pub fn due_within(&self, window: Duration) -> u64 {
        (window.as_nanos() as f64 / self.interval_nanos).ceil() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_evenly_spaced() {
        let p = Pacer::new(1000.0).unwrap();
        assert_eq!(p.take(), (0, Duration::ZERO));
        assert_eq!(p.take(), (1, Duration::from_millis(1)));
        assert_eq!(p.take(), (2, Duration::from_millis(2)));
        assert_eq!(p.due(1500), Duration::from_millis(1500));
    }

    #[test]
    fn a_second_holds_rate_operations() {
        let p = Pacer::new(250.0).unwrap();
        assert_eq!(p.due_within(Duration::from_secs(1)), 250);
        assert_eq!(p.due_within(Duration::from_secs(4)), 1000);
        let p = Pacer::new(3.0).unwrap();
        // 0, 333 ms, 667 ms are due within 1 s; 1 s itself is not.
        assert_eq!(p.due_within(Duration::from_secs(1)), 3);
    }

    #[test]
    fn tickets_taken_concurrently_are_unique() {
        let p = std::sync::Arc::new(Pacer::new(1e6).unwrap());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let p = p.clone();
                std::thread::spawn(move || (0..1000).map(|_| p.take().0).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<u64> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..4000).collect::<Vec<_>>());
    }

    #[test]
    fn a_rate_that_is_not_positive_is_refused() {
        assert!(Pacer::new(0.0).is_none());
        assert!(Pacer::new(-5.0).is_none());
        assert!(Pacer::new(f64::NAN).is_none());
        assert!(Pacer::new(f64::INFINITY).is_none());
    }
}
