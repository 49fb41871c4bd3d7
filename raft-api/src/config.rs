//! Configuration of a Raft group, with documented defaults and validation.

use serde::{Deserialize, Serialize};

/// Settings of the consensus engine. Times are in milliseconds of the clock
/// the driver passes to the engine.
///
/// Every field has a default (see [`Config::default`]); call
/// [`Config::validate`] after changing any of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Shortest election timeout. A follower that hears nothing from a leader
    /// for a random time in `[election_timeout_min_ms,
    /// election_timeout_max_ms)` starts an election. Default 300.
    pub election_timeout_min_ms: u64,
    /// Longest election timeout (exclusive). Default 600.
    pub election_timeout_max_ms: u64,
    /// How often a leader sends heartbeats. Must be well under the minimum
    /// election timeout. Default 50.
    pub heartbeat_interval_ms: u64,
    /// Most entries in one append message. Default 1024.
    pub max_append_entries: usize,
    /// Most payload bytes in one append message (at least one entry is
    /// always sent). Default 1 MiB.
    pub max_append_bytes: usize,
    /// Most append messages in flight to one follower before the leader waits
    /// for acknowledgements (optimistic pipelining). Default 64.
    pub max_inflight: usize,
    /// Run a pre-vote round before a real election, so a node that was cut
    /// off cannot disrupt a healthy group by raising the term (§9.6).
    /// Default true.
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum within an election timeout
    /// steps down, and followers refuse votes while they hear from a live
    /// leader (leader stickiness). Default true.
    pub check_quorum: bool,
    /// Build a snapshot once this many entries were applied since the last
    /// one, then compact the log up to it (minus `snapshot_trailing`). Each
    /// snapshot comes after up to a quarter fewer, drawn at random, so the
    /// replicas of a group do not all write a snapshot at the same moment.
    /// 0 turns automatic snapshots off (the application may still trigger
    /// them). Default 10000.
    pub snapshot_threshold: u64,
    /// Entries kept in the log behind the snapshot when compacting, so a
    /// follower a little behind still catches up from the log instead of a
    /// whole snapshot. Default 1000.
    pub snapshot_trailing: u64,
    /// Largest data chunk of a snapshot sent in one message. Default 1 MiB.
    pub snapshot_chunk_bytes: usize,
    /// A learner is promoted to voter only when it lags the leader's last
    /// entry by at most this many entries, so a promotion never stalls
    /// commits while the new voter catches up. Default 1000.
    pub max_promote_lag: u64,
    /// Lease reads (with `check_quorum`): a leader serves reads without a
    /// quorum round for `election_timeout_min_ms - lease_clock_drift_ms`
    /// after sending a round a quorum answered. The margin must cover how
    /// far clocks of the nodes can drift apart over that time. Default 100.
    pub lease_clock_drift_ms: u64,
    /// A leader whose group has been idle this long (no proposal, read,
    /// membership change or transfer; every follower holds the whole log,
    /// all of it committed) tells its followers to go quiet: no heartbeats
    /// and no election timers until any message or request arrives. Saves
    /// the heartbeat traffic of idle groups when a node hosts many. 0 keeps
    /// groups always active. Default 0.
    pub quiesce_after_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            heartbeat_interval_ms: 50,
            max_append_entries: 1024,
            max_append_bytes: 1024 * 1024,
            max_inflight: 64,
            pre_vote: true,
            check_quorum: true,
            snapshot_threshold: 10_000,
            snapshot_trailing: 1_000,
            snapshot_chunk_bytes: 1024 * 1024,
            max_promote_lag: 1_000,
            lease_clock_drift_ms: 100,
            quiesce_after_ms: 0,
        }
    }
}

/// A configuration value that cannot work, naming the field and the fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid config: `{field}` {problem}; {fix}")]
pub struct ConfigError {
    /// The offending field.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

impl ConfigError {
    fn new(field: &'static str, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            field,
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

impl Config {
    /// Checks that the settings can work together.
    ///
    /// ```
    /// let mut config = raft_api::Config::default();
    /// config.election_timeout_max_ms = config.election_timeout_min_ms;
    /// let err = config.validate().unwrap_err();
    /// assert_eq!(err.field, "election_timeout_max_ms");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.election_timeout_min_ms == 0 {
            return Err(ConfigError::new(
                "election_timeout_min_ms",
                "is 0",
                "set it to several heartbeat intervals, for example 300",
            ));
        }
        if self.election_timeout_max_ms <= self.election_timeout_min_ms {
            return Err(ConfigError::new(
                "election_timeout_max_ms",
                format!(
                    "({}) is not greater than election_timeout_min_ms ({})",
                    self.election_timeout_max_ms, self.election_timeout_min_ms
                ),
                format!(
                    "set it above the minimum, for example {} (twice the minimum), so \
                     randomized timeouts break ties",
                    self.election_timeout_min_ms * 2
                ),
            ));
        }
        if self.heartbeat_interval_ms == 0 {
            return Err(ConfigError::new(
                "heartbeat_interval_ms",
                "is 0",
                "set it to a fraction of election_timeout_min_ms, for example 50",
            ));
        }
        if self.heartbeat_interval_ms * 2 > self.election_timeout_min_ms {
            return Err(ConfigError::new(
                "heartbeat_interval_ms",
                format!(
                    "({}) is more than half of election_timeout_min_ms ({}), so followers \
                     would start elections under a healthy leader",
                    self.heartbeat_interval_ms, self.election_timeout_min_ms
                ),
                format!(
                    "lower it to at most {} or raise election_timeout_min_ms",
                    self.election_timeout_min_ms / 2
                ),
            ));
        }
        if self.max_append_entries == 0 {
            return Err(ConfigError::new(
                "max_append_entries",
                "is 0, so no entry could ever be replicated",
                "set it to at least 1 (default 1024)",
            ));
        }
        if self.max_append_bytes == 0 {
            return Err(ConfigError::new(
                "max_append_bytes",
                "is 0",
                "set it to at least 1 (default 1048576); one entry is always sent even if larger",
            ));
        }
        if self.max_inflight == 0 {
            return Err(ConfigError::new(
                "max_inflight",
                "is 0, so a leader could never send an append",
                "set it to at least 1 (default 64)",
            ));
        }
        if self.snapshot_chunk_bytes == 0 {
            return Err(ConfigError::new(
                "snapshot_chunk_bytes",
                "is 0, so no snapshot could ever be sent",
                "set it to at least 1 (default 1048576)",
            ));
        }
        if self.lease_clock_drift_ms >= self.election_timeout_min_ms {
            return Err(ConfigError::new(
                "lease_clock_drift_ms",
                format!(
                    "({}) is not below election_timeout_min_ms ({}), so a lease would never \
                     last",
                    self.lease_clock_drift_ms, self.election_timeout_min_ms
                ),
                format!(
                    "set it to the clock drift the nodes can have over one election timeout, \
                     for example {}",
                    self.election_timeout_min_ms / 3
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
    }

    fn field_of(change: impl FnOnce(&mut Config)) -> &'static str {
        let mut c = Config::default();
        change(&mut c);
        c.validate().expect_err("config should be rejected").field
    }

    #[test]
    fn each_bad_value_names_its_field() {
        assert_eq!(
            field_of(|c| c.election_timeout_min_ms = 0),
            "election_timeout_min_ms"
        );
        assert_eq!(
            field_of(|c| c.election_timeout_max_ms = 100),
            "election_timeout_max_ms"
        );
        assert_eq!(
            field_of(|c| c.heartbeat_interval_ms = 0),
            "heartbeat_interval_ms"
        );
        assert_eq!(
            field_of(|c| c.heartbeat_interval_ms = 200),
            "heartbeat_interval_ms"
        );
        assert_eq!(field_of(|c| c.max_append_entries = 0), "max_append_entries");
        assert_eq!(field_of(|c| c.max_append_bytes = 0), "max_append_bytes");
        assert_eq!(field_of(|c| c.max_inflight = 0), "max_inflight");
        assert_eq!(
            field_of(|c| c.snapshot_chunk_bytes = 0),
            "snapshot_chunk_bytes"
        );
        assert_eq!(
            field_of(|c| c.lease_clock_drift_ms = 300),
            "lease_clock_drift_ms"
        );
    }

    #[test]
    fn error_message_names_field_and_fix() {
        let c = Config {
            election_timeout_max_ms: 300,
            ..Config::default()
        };
        let msg = c.validate().unwrap_err().to_string();
        assert!(msg.contains("election_timeout_max_ms"), "{msg}");
        assert!(msg.contains("for example 600"), "{msg}");
    }
}
