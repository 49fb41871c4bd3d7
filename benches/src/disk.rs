//! What the disk under a directory sustains in synced writes: the ceiling
//! of every benchmark that syncs its log.
//!
//! Each writer thread overwrites a file of its own, given its full length
//! up front (so the blocks exist and a sync flushes data only), one write
//! of `bytes` at a time, each followed by `fdatasync`: the pattern of the
//! LMDB store's journal, where a flush is one record and one sync. With
//! several writers the threads sync at the same time, as the nodes of an
//! in-process cluster whose data directories share one disk do.
//!
//! ```no_run
//! use benches::disk::{DiskProbe, probe};
//!
//! let report = probe(&std::env::temp_dir(), &DiskProbe::new(3)).unwrap();
//! println!("{:.0} syncs/s, p99 {:.2} ms", report.ops_per_sec, report.p99_ms);
//! ```

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use crate::BenchError;
use crate::stats::{Latencies, Report};

/// Settings of one probe.
#[derive(Clone, Debug)]
pub struct DiskProbe {
    /// Threads writing and syncing at once, each to its own file.
    pub writers: usize,
    /// Bytes per write (one write per sync).
    pub bytes: usize,
    /// How long the writers run.
    pub duration: Duration,
    /// Length of each writer's file; writes wrap around to its start.
    pub file_bytes: u64,
}

impl DiskProbe {
    /// `writers` threads of 8 KiB writes for 3 s over files of 8 MiB (the
    /// journal's size of a record of about a hundred small entries, and
    /// its length up front).
    pub fn new(writers: usize) -> Self {
        Self {
            writers,
            bytes: 8 << 10,
            duration: Duration::from_secs(3),
            file_bytes: 8 << 20,
        }
    }

    fn check(&self) -> Result<(), BenchError> {
        if self.writers == 0 {
            return Err(BenchError::Settings("at least one writer is needed".into()));
        }
        if self.bytes == 0 || self.bytes as u64 > self.file_bytes {
            return Err(BenchError::Settings(format!(
                "the write size must be between 1 byte and the file's length ({} bytes), not {}",
                self.file_bytes, self.bytes
            )));
        }
        if self.duration.is_zero() {
            return Err(BenchError::Settings("the duration must not be zero".into()));
        }
        Ok(())
    }

    /// The report's label, like `fdatasync 3 writers 8192B`.
    pub fn label(&self) -> String {
        let s = if self.writers == 1 { "" } else { "s" };
        format!("fdatasync {} writer{s} {}B", self.writers, self.bytes)
    }
}

/// Runs `p` in a temporary directory under `dir` (removed afterwards) and
/// reports syncs as operations: syncs per second over all writers, and
/// the latency of each write with its sync.
pub fn probe(dir: &Path, p: &DiskProbe) -> Result<Report, BenchError> {
    p.check()?;
    let scratch = tempfile::tempdir_in(dir)?;
    let files = (0..p.writers)
        .map(|i| prepared_file(&scratch.path().join(format!("probe-{i}")), p.file_bytes))
        .collect::<Result<Vec<_>, _>>()?;
    let start = Barrier::new(p.writers);
    let (lat, elapsed) = std::thread::scope(|s| {
        let threads: Vec<_> = files
            .into_iter()
            .map(|file| s.spawn(|| write_and_sync(file, p, &start)))
            .collect();
        let mut all = Latencies::new();
        let mut longest = Duration::ZERO;
        for t in threads {
            let (lat, elapsed) = t
                .join()
                .map_err(|_| std::io::Error::other("a probe writer panicked".to_owned()))??;
            all.merge(&lat);
            longest = longest.max(elapsed);
        }
        Ok::<_, BenchError>((all, longest))
    })?;
    let mut report = Report::new(p.label(), lat.count(), 0, elapsed, &lat);
    report.notes.push((
        "syncs/s per writer".into(),
        format!("{:.0}", report.ops_per_sec / p.writers as f64),
    ));
    Ok(report)
}

/// A file of `len` bytes of zeros, synced, so that later writes into it
/// change no metadata.
fn prepared_file(path: &Path, len: u64) -> Result<File, BenchError> {
    let mut file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    let zeros = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    file.sync_all()?;
    Ok(file)
}

/// One writer: writes and syncs until the probe's time is up; its
/// latencies and how long it ran.
fn write_and_sync(
    mut file: File,
    p: &DiskProbe,
    start: &Barrier,
) -> Result<(Latencies, Duration), BenchError> {
    let data = vec![0xA5u8; p.bytes];
    let mut lat = Latencies::new();
    let mut offset = 0u64;
    start.wait();
    let began = Instant::now();
    while began.elapsed() < p.duration {
        let t = Instant::now();
        file.seek(SeekFrom::Start(offset))?;
        file.write_all(&data)?;
        file.sync_data()?;
        lat.record(t.elapsed());
        offset = next_offset(offset, p.bytes as u64, p.file_bytes);
    }
    Ok((lat, began.elapsed()))
}

/// Where the write after one of `bytes` at `offset` goes: right after it,
/// or back at the start when it would run past `file_bytes`.
fn next_offset(offset: u64, bytes: u64, file_bytes: u64) -> u64 {
    let next = offset + bytes;
    if next + bytes > file_bytes { 0 } else { next }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short(writers: usize) -> DiskProbe {
        DiskProbe {
            duration: Duration::from_millis(150),
            file_bytes: 64 << 10,
            bytes: 4 << 10,
            ..DiskProbe::new(writers)
        }
    }

    #[test]
    fn every_sync_is_counted_and_timed() {
        let dir = tempfile::tempdir().unwrap();
        let report = probe(dir.path(), &short(2)).unwrap();
        assert!(report.ops > 0, "no sync in 150 ms: {report:?}");
        assert_eq!(report.errors, 0);
        assert!(report.seconds >= 0.15, "ran {} s", report.seconds);
        assert!(report.p50_ms > 0.0 && report.p50_ms <= report.max_ms);
        let per_writer: f64 = report.notes[0].1.parse().unwrap();
        assert!((per_writer * 2.0 - report.ops_per_sec).abs() <= 1.0);
        assert_eq!(report.label, "fdatasync 2 writers 4096B");
        // The scratch directory is gone; only the caller's remains.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn writes_stay_inside_the_file_and_wrap_to_its_start() {
        assert_eq!(next_offset(0, 4096, 16384), 4096);
        assert_eq!(next_offset(8192, 4096, 16384), 12288);
        assert_eq!(next_offset(12288, 4096, 16384), 0);
        // A length that is not a multiple of the write: the last whole
        // write that fits, then the start.
        assert_eq!(next_offset(4096, 4096, 10000), 0);
        assert_eq!(next_offset(0, 4096, 4096), 0);
        // And a probe over a file of one write's length runs.
        let dir = tempfile::tempdir().unwrap();
        let p = DiskProbe {
            file_bytes: 4 << 10,
            ..short(1)
        };
        let report = probe(dir.path(), &p).unwrap();
        assert!(report.ops >= 1, "{report:?}");
        assert_eq!(report.label, "fdatasync 1 writer 4096B");
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for p in [
            short(0),
            DiskProbe {
                bytes: 0,
                ..short(1)
            },
            DiskProbe {
                bytes: 128 << 10,
                ..short(1)
            },
            DiskProbe {
                duration: Duration::ZERO,
                ..short(1)
            },
        ] {
            let err = probe(dir.path(), &p).unwrap_err();
            assert!(matches!(err, BenchError::Settings(_)), "{p:?}: {err}");
        }
    }

    #[test]
    fn a_missing_directory_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = probe(&dir.path().join("absent"), &short(1)).unwrap_err();
        assert!(matches!(err, BenchError::Io(_)), "{err}");
    }
}
