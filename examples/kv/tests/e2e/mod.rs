//! The harness of the end-to-end tests: separate `raft-kv serve`
//! processes ([`raft_kv::local_cluster`]), a fault proxy between every pair
//! of nodes ([`proxy`]), a seeded nemesis ([`nemesis`]), recording clients
//! ([`clients`]) and the run that ties them together and checks the history
//! for linearizability ([`scenario`]).
//!
//! Progress lines go straight to stderr (not through the test harness's
//! capture), each with the time since the start of the run and the wall
//! clock (UTC, as in the nodes' logs), so a CI log shows every fault as it
//! happens.

pub(crate) mod clients;
pub(crate) mod nemesis;
pub(crate) mod proxy;
pub(crate) mod rng;
pub(crate) mod scenario;

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

static START: OnceLock<Instant> = OnceLock::new();

/// Time since the harness started.
pub(crate) fn since_start() -> Duration {
    START.get_or_init(Instant::now).elapsed()
}

/// `[+elapsed HH:MM:SS.mmm]`: time since the start and UTC wall clock.
pub(crate) fn stamp() -> String {
    let elapsed = since_start();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let day = now.as_secs() % 86_400;
    format!(
        "[+{:7.3}s {:02}:{:02}:{:02}.{:03}Z]",
        elapsed.as_secs_f64(),
        day / 3600,
        day / 60 % 60,
        day % 60,
        now.subsec_millis()
    )
}

/// Writes one line to stderr, bypassing the test harness's output capture.
pub(crate) fn emit(line: &str) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{} {line}", stamp());
}

/// `say!("...", args)`: a timestamped progress line on stderr.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::e2e::emit(&format!($($arg)*))
    };
}
pub(crate) use say;
