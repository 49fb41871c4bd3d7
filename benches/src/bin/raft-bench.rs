//! `raft-bench`: a load generator for the Raft library, and the
//! side-by-side comparison with openraft.
//!
//! ```sh
//! # 256 clients writing 64-byte values for 10 s to 3 in-process nodes over TCP and LMDB
//! raft-bench --transport tcp --storage lmdb --nodes 3 --value-bytes 64 --clients 256 --duration 10s
//! # a running raft-kv cluster over HTTP, 2000 writes per second, JSON out
//! raft-bench --target http://127.0.0.1:8001,http://127.0.0.1:8002 --rate 2000 --json
//! # the openraft baseline and ours, 1, 64, 256 and 1024 clients
//! raft-bench compare
//! # synced writes per second of the disk under $TMPDIR, 1 and 3 writers at once
//! raft-bench disk --writers 1,3
//! ```

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::BenchError;
use benches::baseline::{self, CLIENTS, Pair};
use benches::cluster::{Cluster, ClusterSpec, rss_bytes};
use benches::disk::{self, DiskProbe};
use benches::stats::{Report, table};
use benches::workload::{HttpTarget, Target, Workload, progress_bar, run};
use clap::{Args, Parser, Subcommand};
use raft_node::backends::{StorageKind, TransportKind};

/// mimalloc instead of the system allocator: with tasks on several threads
/// freeing what others allocated, glibc's malloc spent a tenth of the
/// time on its arena locks. Both libraries of the comparison run in this
/// binary, so both get it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load generator for the Raft library (in-process clusters or raft-kv over
/// HTTP), and the comparison with openraft.
#[derive(Parser, Debug)]
#[command(name = "raft-bench", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs openraft's cluster benchmark workload on openraft and on this
    /// library, alternating, for each client count; prints each pair and
    /// the ratio ours / openraft.
    Compare(CompareArgs),
    /// Measures how many synced writes per second the disk under a
    /// directory sustains: each writer overwrites a file of its own and
    /// syncs after every write, as the LMDB journal does; several writers
    /// sync at once, as the nodes of an in-process cluster do.
    Disk(DiskArgs),
}

#[derive(Args, Debug)]
struct DiskArgs {
    /// Writer counts to probe in turn, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 3])]
    writers: Vec<usize>,
    /// Bytes per write.
    #[arg(long, default_value_t = 8192)]
    bytes: usize,
    /// How long each probe writes, like 3s.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    duration: Duration,
    /// Directory to write under (default: the temporary directory, where
    /// the in-process clusters keep their data).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print the reports as a JSON array instead of a table.
    #[arg(long)]
    json: bool,
    /// Print each report as one Markdown table row (no header).
    #[arg(long, conflicts_with = "json")]
    row: bool,
}

#[derive(Args, Debug)]
struct LoadArgs {
    /// Transport of the in-process cluster: mem, tcp or quic.
    #[arg(long, default_value = "mem")]
    transport: TransportKind,
    /// Log store of the in-process cluster: mem or lmdb.
    #[arg(long, default_value = "mem")]
    storage: StorageKind,
    /// Nodes of the in-process cluster.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Raft groups; client i writes to group i mod groups.
    #[arg(long, default_value_t = 1)]
    groups: u64,
    /// Bytes per value written.
    #[arg(long, default_value_t = 64)]
    value_bytes: usize,
    /// Concurrent clients (closed loop), or most writes in flight (with
    /// --rate).
    #[arg(long, default_value_t = 256)]
    clients: usize,
    /// Measured time, like 10s, 500ms or 2m.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured warm-up before it (default: a tenth of the duration,
    /// between 200 ms and 2 s).
    #[arg(long, value_parser = parse_duration)]
    warmup: Option<Duration>,
    /// Writes per second (fixed rate, open loop); closed loop without it.
    #[arg(long)]
    rate: Option<f64>,
    /// A running raft-kv cluster instead of an in-process one: its HTTP
    /// base URLs, comma-separated.
    #[arg(long)]
    target: Option<String>,
    /// Directory for LMDB data (default: a temporary directory, removed
    /// afterwards).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Build a snapshot every this many entries per group (0: never).
    #[arg(long)]
    snapshot_threshold: Option<u64>,
    /// Each node's bound, in bytes, on the log all its groups hold in
    /// memory before the largest are snapshotted early (0: none; default:
    /// the node's, 64 MiB).
    #[arg(long)]
    max_log_bytes: Option<u64>,
    /// Print the process's resident memory this often during the run (in
    /// the notes of the report).
    #[arg(long, value_parser = parse_duration)]
    rss_every: Option<Duration>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Print the report as one Markdown table row (no header), the notes
    /// in a last column: for scripts that build a table of many runs.
    #[arg(long, conflicts_with = "json")]
    row: bool,
}

#[derive(Args, Debug)]
struct CompareArgs {
    /// Client counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = CLIENTS)]
    clients: Vec<usize>,
    /// Operations per run (at every client count but 1).
    #[arg(long, default_value_t = 200_000)]
    ops: u64,
    /// Operations of the runs with one client (slower, so fewer).
    #[arg(long, default_value_t = 20_000)]
    ops_single: u64,
    /// Runs of each library at each client count; the best of them is
    /// reported for each.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Print the pairs as JSON.
    #[arg(long)]
    json: bool,
    /// Print each run's counters (flushes, batches, messages per node).
    #[arg(long)]
    verbose: bool,
    /// Run one library alone (for profiling): ours or openraft.
    #[arg(long, value_parser = ["ours", "openraft"], conflicts_with = "repeat")]
    only: Option<String>,
}

/// Parses `10s`, `250ms`, `2m`, `1h` or a plain number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 10s, 500ms or 2m"))?;
    let secs = match unit {
        "ms" => n / 1e3,
        "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit `{unit}` in `{s}`; use ms, s, m or h")),
    };
    if !(secs.is_finite() && secs >= 0.0) {
        return Err(format!("`{s}` is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Compare(args)) => compare(&args),
        Some(Command::Disk(args)) => disk_probe(&args),
        None => load(&cli.load),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raft-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load(args: &LoadArgs) -> Result<(), BenchError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut workload = Workload::closed(args.clients, args.value_bytes, args.duration);
        if let Some(w) = args.warmup {
            workload.warmup = w;
        }
        workload.rate = args.rate;
        let mode = match args.rate {
            Some(r) => format!("{r:.0}/s"),
            None => "closed".to_owned(),
        };
        let show = !args.json && !args.row && std::io::stderr().is_terminal();
        let (target, cluster, label) = match &args.target {
            Some(list) => {
                let http = HttpTarget::parse(list)?;
                let label = format!(
                    "http x{} {}B {}c {mode}",
                    http.urls().len(),
                    args.value_bytes,
                    args.clients
                );
                (Arc::new(Target::Http(http)), None, label)
            }
            None => {
                let mut spec = ClusterSpec::new(args.transport, args.storage, args.nodes);
                spec.groups = args.groups;
                spec.data_dir = args.data_dir.clone();
                if let Some(t) = args.snapshot_threshold {
                    spec.raft.snapshot_threshold = t;
                }
                spec.max_log_bytes = args.max_log_bytes;
                let label = format!(
                    "{} {}B {}c {mode}",
                    spec.label(),
                    args.value_bytes,
                    args.clients
                );
                let cluster = Arc::new(Cluster::start(&spec).await?);
                (
                    Arc::new(Target::Cluster(cluster.clone())),
                    Some(cluster),
                    label,
                )
            }
        };
        let before = match &cluster {
            Some(c) => c.node_metrics().await,
            None => Vec::new(),
        };
        let rss_start = rss_bytes();
        let samples: Arc<std::sync::Mutex<Vec<(u64, u64)>>> = Arc::default();
        let rss_log = args.rss_every.map(|every| {
            let samples = samples.clone();
            tokio::spawn(async move {
                let start = Instant::now();
                loop {
                    tokio::time::sleep(every).await;
                    if let Ok(mut s) = samples.lock() {
                        s.push((start.elapsed().as_secs(), rss_bytes()));
                    }
                }
            })
        });
        let bar = progress_bar(show, workload.warmup + workload.duration, &label);
        let mut report = run(target, &workload, &label, &bar).await;
        if let Ok(r) = &mut report {
            if let Some(c) = &cluster {
                let after = c.node_metrics().await;
                let fsyncs: u64 = after.iter().map(|m| m.fsyncs).sum::<u64>()
                    - before.iter().map(|m| m.fsyncs).sum::<u64>();
                let secs = workload.warmup + workload.duration;
                r.notes.push((
                    "fsyncs/s (all nodes)".into(),
                    format!("{:.0}", fsyncs as f64 / secs.as_secs_f64()),
                ));
                if let Some(first) = after.first() {
                    r.notes.push((
                        "entries per flush (node 1)".into(),
                        format!("{:.1}", first.mean_write_batch()),
                    ));
                }
            }
            r.notes.push((
                "rss MiB start/end".into(),
                format!("{}/{}", rss_start >> 20, rss_bytes() >> 20),
            ));
        }
        if let Some(task) = rss_log {
            task.abort();
        }
        if let (Ok(r), Ok(samples)) = (&mut report, samples.lock())
            && !samples.is_empty()
        {
            let line: Vec<String> = samples
                .iter()
                .map(|(s, b)| format!("{s}s:{}", b >> 20))
                .collect();
            r.notes.push(("rss MiB over time".into(), line.join(" ")));
        }
        if let Some(c) = &cluster {
            c.shutdown().await;
        }
        let report = report?;
        print_report(&report, args.json, args.row);
        Ok(())
    })
}

fn print_report(r: &Report, json: bool, row: bool) {
    if json {
        println!("{}", r.to_json());
        return;
    }
    if row {
        let table = table(std::slice::from_ref(r));
        let line = table.lines().last().unwrap_or_default();
        let notes: Vec<String> = r.notes.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        println!("{line} {} |", notes.join("; "));
        return;
    }
    print!("{}", table(std::slice::from_ref(r)));
    for (k, v) in &r.notes {
        println!("  {k}: {v}");
    }
}

fn disk_probe(args: &DiskArgs) -> Result<(), BenchError> {
    let dir = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let mut reports = Vec::new();
    for &writers in &args.writers {
        let p = DiskProbe {
            bytes: args.bytes,
            duration: args.duration,
            ..DiskProbe::new(writers)
        };
        reports.push(disk::probe(&dir, &p)?);
    }
    if args.json {
        let json = serde_json::to_string_pretty(&reports)
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
        println!("{json}");
    } else if args.row {
        for r in &reports {
            print_report(r, false, true);
        }
    } else {
        print!("{}", table(&reports).replace("| writes/s |", "| syncs/s |"));
    }
    Ok(())
}

fn compare(args: &CompareArgs) -> Result<(), BenchError> {
    if args.clients.contains(&0) || args.repeat == 0 {
        return Err(BenchError::Settings(
            "client counts and --repeat must be at least 1".into(),
        ));
    }
    let ops = |n: usize| if n == 1 { args.ops_single } else { args.ops };
    if let Some(lib) = &args.only {
        for &n in &args.clients {
            let run = if lib == "ours" {
                baseline::ours::run(n, ops(n))?
            } else {
                baseline::peer::run(n, ops(n))?
            };
            println!(
                "{} clients {:>5}: {:>10.0} ops/s ({} ops in {:.3} s)",
                run.library,
                n,
                run.ops_per_sec(),
                run.ops,
                run.seconds
            );
            for (k, v) in &run.notes {
                println!("  {k}: {v}");
            }
        }
        return Ok(());
    }
    if !args.json {
        println!(
            "openraft's cluster benchmark workload: 3 nodes in one process, direct calls, \
             in-memory log, no-op state machine, empty requests, 1-thread runtime"
        );
    }
    let mut best: Vec<Pair> = Vec::new();
    for round in 0..args.repeat {
        let pairs = baseline::compare(&args.clients, ops, |p| {
            if !args.json {
                println!(
                    "round {} clients {:>5}: ours {:>10.0} ops/s  openraft {:>10.0} ops/s  ratio {:.2}",
                    round + 1,
                    p.clients,
                    p.ours.ops_per_sec(),
                    p.openraft.ops_per_sec(),
                    p.ratio()
                );
                if args.verbose {
                    for (k, v) in &p.ours.notes {
                        println!("  ours {k}: {v}");
                    }
                }
            }
        })?;
        for p in pairs {
            match best.iter_mut().find(|b| b.clients == p.clients) {
                Some(b) => {
                    if p.ours.ops_per_sec() > b.ours.ops_per_sec() {
                        b.ours = p.ours;
                    }
                    if p.openraft.ops_per_sec() > b.openraft.ops_per_sec() {
                        b.openraft = p.openraft;
                    }
                }
                None => best.push(p),
            }
        }
    }
    if args.json {
        let v: Vec<serde_json::Value> = best
            .iter()
            .map(|p| {
                serde_json::json!({
                    "clients": p.clients,
                    "ops": p.ours.ops,
                    "ours_ops_per_sec": p.ours.ops_per_sec(),
                    "openraft_ops_per_sec": p.openraft.ops_per_sec(),
                    "ratio": p.ratio(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print!("{}", baseline::table(&best));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn the_command_line_parses() {
        let cli = Cli::try_parse_from([
            "raft-bench",
            "--transport",
            "tcp",
            "--storage",
            "lmdb",
            "--clients",
            "1",
            "--duration",
            "2s",
            "--json",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.load.transport, TransportKind::Tcp);
        assert_eq!(cli.load.clients, 1);
        assert!(cli.load.json);
        assert_eq!(cli.load.max_log_bytes, None, "the node's own bound");
        let cli = Cli::try_parse_from(["raft-bench", "--groups", "64", "--max-log-bytes", "0"]);
        assert_eq!(cli.unwrap().load.max_log_bytes, Some(0));
        let cli = Cli::try_parse_from(["raft-bench", "compare", "--clients", "1,64"]).unwrap();
        let Some(Command::Compare(c)) = cli.command else {
            panic!("compare")
        };
        assert_eq!(c.clients, [1, 64]);
        let cli = Cli::try_parse_from(["raft-bench", "disk", "--writers", "3", "--row"]).unwrap();
        let Some(Command::Disk(d)) = cli.command else {
            panic!("disk")
        };
        assert_eq!(
            (d.writers.as_slice(), d.bytes, d.row),
            (&[3][..], 8192, true)
        );
        let cli = Cli::try_parse_from(["raft-bench", "disk"]).unwrap();
        let Some(Command::Disk(d)) = cli.command else {
            panic!("disk")
        };
        assert_eq!(d.writers, [1, 3]);
        assert!(Cli::try_parse_from(["raft-bench", "--transport", "pigeon"]).is_err());
    }
}
