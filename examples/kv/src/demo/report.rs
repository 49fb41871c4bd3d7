//! The numbers the demo reports and its closing summary table.

use std::fmt;
use std::time::Duration;

/// The `q` quantile (0..=1) of `sorted` (ascending), nearest rank.
pub(super) fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `12.3 ms`, `840 ms`, `2.41 s`.
pub(super) fn millis(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 100.0 {
        format!("{ms:.1} ms")
    } else if ms < 10_000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

/// Everything the summary shows.
#[derive(Clone, Debug, Default)]
pub(super) struct Summary {
    /// `3 nodes, tcp, lmdb, 1 partition`.
    pub(super) cluster: String,
    /// Writes acknowledged (the bulk keys, without the failover probe).
    pub(super) writes: u64,
    /// Concurrent writers.
    pub(super) writers: u64,
    /// Wall time of the write phase, failover included.
    pub(super) write_time: Duration,
    /// Writes acknowledged before the leader was killed, and how long they
    /// took.
    pub(super) before_kill: (u64, Duration),
    /// Every write's latency, ascending.
    pub(super) latencies: Vec<Duration>,
    /// The killed leader.
    pub(super) killed: u64,
    /// Until every partition the killed node led had a new leader.
    pub(super) new_leader_after: Duration,
    /// Until a write started after the kill was acknowledged.
    pub(super) writes_resumed_after: Duration,
    /// Until the restarted node applied what the leader had.
    pub(super) catch_up: Duration,
    /// The applied index it reached (summed over the partitions).
    pub(super) caught_up_to: u64,
    /// Number of partitions.
    pub(super) partitions: u64,
    /// Acknowledged writes read back intact.
    pub(super) verified: u64,
    /// Acknowledged writes missing or changed.
    pub(super) lost: u64,
    /// Writes never acknowledged, and acknowledged writes that could not
    /// be read back.
    pub(super) unconfirmed: u64,
}

/// `count` per `time`, in events per second.
pub(super) fn rate(count: u64, time: Duration) -> f64 {
    let secs = time.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: Vec<(&str, String)> = vec![
            ("cluster", self.cluster.clone()),
            (
                "writes",
                format!(
                    "{} keys by {} concurrent clients",
                    self.writes, self.writers
                ),
            ),
            (
                "writes/s",
                format!(
                    "{:.0} before the kill, {:.0} overall (failover included)",
                    rate(self.before_kill.0, self.before_kill.1),
                    rate(self.writes, self.write_time)
                ),
            ),
            ("latency p50", millis(quantile(&self.latencies, 0.50))),
            ("latency p99", millis(quantile(&self.latencies, 0.99))),
            (
                "latency max",
                millis(self.latencies.last().copied().unwrap_or_default()),
            ),
            (
                "failover time",
                format!(
                    "{} to a new leader, {} until writes succeed again",
                    millis(self.new_leader_after),
                    millis(self.writes_resumed_after)
                ),
            ),
            (
                "catch-up",
                if self.partitions == 1 {
                    format!(
                        "{} for node {} to reach applied index {}",
                        millis(self.catch_up),
                        self.killed,
                        self.caught_up_to
                    )
                } else {
                    format!(
                        "{} for node {} to reach the leaders' applied indexes ({} entries over {} partitions)",
                        millis(self.catch_up),
                        self.killed,
                        self.caught_up_to,
                        self.partitions
                    )
                },
            ),
            ("verified writes", self.verified.to_string()),
            ("lost writes", self.lost.to_string()),
        ];
        let mut rows = rows;
        if self.unconfirmed > 0 {
            rows.push(("unconfirmed writes", self.unconfirmed.to_string()));
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let rule = "-".repeat(64);
        writeln!(f, "Summary")?;
        writeln!(f, "{rule}")?;
        for (name, value) in rows {
            writeln!(f, "{name:<width$}   {value}")?;
        }
        write!(f, "{rule}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// The value column of the row `name`.
    fn row<'a>(text: &'a str, name: &str) -> Option<&'a str> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        Some(line[name.len()..].trim())
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(quantile(&sorted, 0.5), ms(50));
        assert_eq!(quantile(&sorted, 0.99), ms(99));
        assert_eq!(quantile(&sorted, 1.0), ms(100));
        assert_eq!(quantile(&sorted, 0.0), ms(1));
        assert_eq!(quantile(&[ms(7)], 0.99), ms(7));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(millis(Duration::from_micros(4_150)), "4.2 ms");
        assert_eq!(millis(ms(640)), "640 ms");
        assert_eq!(millis(ms(12_345)), "12.35 s");
    }

    #[test]
    fn the_table_shows_every_number() {
        let summary = Summary {
            cluster: "3 nodes, tcp, lmdb, 1 partition".into(),
            writes: 1000,
            writers: 8,
            write_time: Duration::from_secs(2),
            before_kill: (500, Duration::from_millis(500)),
            latencies: (1..=100).map(ms).collect(),
            killed: 2,
            new_leader_after: ms(640),
            writes_resumed_after: ms(700),
            catch_up: ms(210),
            caught_up_to: 1003,
            partitions: 1,
            verified: 1001,
            lost: 0,
            unconfirmed: 0,
        };
        let text = summary.to_string();
        assert_eq!(
            row(&text, "writes/s"),
            Some("1000 before the kill, 500 overall (failover included)")
        );
        assert_eq!(row(&text, "latency p50"), Some("50.0 ms"));
        assert_eq!(row(&text, "latency p99"), Some("99.0 ms"));
        assert_eq!(row(&text, "latency max"), Some("100 ms"));
        assert_eq!(
            row(&text, "failover time"),
            Some("640 ms to a new leader, 700 ms until writes succeed again")
        );
        assert_eq!(
            row(&text, "catch-up"),
            Some("210 ms for node 2 to reach applied index 1003")
        );
        assert_eq!(row(&text, "lost writes"), Some("0"));
        assert_eq!(row(&text, "unconfirmed"), None);
        let worse = Summary {
            lost: 3,
            unconfirmed: 1,
            partitions: 4,
            ..summary
        };
        let text = worse.to_string();
        assert_eq!(row(&text, "lost writes"), Some("3"));
        assert_eq!(row(&text, "unconfirmed writes"), Some("1"));
        assert_eq!(
            row(&text, "catch-up"),
            Some(
                "210 ms for node 2 to reach the leaders' applied indexes (1003 entries over 4 partitions)"
            )
        );
    }
}
