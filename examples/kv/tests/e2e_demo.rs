//! End-to-end: `raft-kv demo` runs to its summary with no lost write and
//! exits 0; interrupted, it kills its nodes and removes its files.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_raft-kv");

/// The value column of the summary row `name`.
fn row<'a>(output: &'a str, name: &str) -> Option<&'a str> {
    let line = output.lines().find(|l| l.starts_with(name))?;
    Some(line[name.len()..].trim())
}

/// Runs the demo with `args`; returns its stdout after checking it
/// succeeded with no lost write.
fn demo_succeeds(args: &[&str]) -> String {
    let output = Command::new(BINARY)
        .arg("demo")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running raft-kv demo");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "demo {args:?} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert_eq!(row(&stdout, "lost writes"), Some("0"), "{stdout}");
    assert_eq!(row(&stdout, "unconfirmed writes"), None, "{stdout}");
    stdout
}

/// The directory the demo said it works in.
fn files_dir(stdout: &str) -> String {
    let line = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("files in "))
        .unwrap_or_else(|| panic!("no `files in` line:\n{stdout}"));
    line.to_string()
}

#[test]
fn demo_with_defaults_loses_no_write_and_cleans_up() {
    let stdout = demo_succeeds(&["--keys", "60"]);
    // The default cluster: 3 nodes over TCP with LMDB.
    assert_eq!(
        row(&stdout, "cluster"),
        Some("3 nodes, tcp, lmdb, 1 partition"),
        "{stdout}"
    );
    // 60 keys and at least one failover probe, all read back.
    let verified: u64 = row(&stdout, "verified writes")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no verified writes row:\n{stdout}"));
    assert!(verified > 60, "{stdout}");
    assert!(stdout.contains("with SIGKILL"), "{stdout}");
    assert!(stdout.contains("took over"), "{stdout}");
    assert!(stdout.contains("caught up"), "{stdout}");
    let dir = files_dir(&stdout);
    assert!(!Path::new(&dir).exists(), "{dir} left behind");
}

#[test]
fn demo_over_quic_in_memory_with_partitions() {
    let stdout = demo_succeeds(&[
        "--keys",
        "40",
        "--transport",
        "quic",
        "--storage",
        "mem",
        "--partitions",
        "2",
    ]);
    assert_eq!(
        row(&stdout, "cluster"),
        Some("3 nodes, quic, mem, 2 partitions"),
        "{stdout}"
    );
    assert!(stdout.contains("development CA"), "{stdout}");
}

#[test]
fn interrupted_demo_kills_its_nodes_and_removes_its_files() {
    let mut child = Command::new(BINARY)
        .args(["demo", "--keys", "100000000"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting raft-kv demo");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut seen = String::new();
    let mut pids = Vec::new();
    for line in stdout.lines() {
        let line = line.expect("reading the demo's output");
        seen.push_str(&line);
        seen.push('\n');
        if let Some(rest) = line.trim().strip_prefix("node ")
            && let Some(pid) = rest.split("pid ").nth(1)
        {
            pids.push(pid.split(',').next().unwrap_or("").to_string());
        }
        if line.starts_with("Writing ") {
            break;
        }
    }
    assert_eq!(pids.len(), 3, "{seen}");
    let dir = files_dir(&seen);
    assert!(Path::new(&dir).exists(), "{dir}");
    std::thread::sleep(Duration::from_millis(300));
    let demo = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(demo, rustix::process::Signal::INT).expect("SIGINT");
    let status = child.wait().expect("waiting for the demo");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("reading stderr");
    assert!(!status.success(), "interrupted demo exited 0");
    assert!(stderr.contains("interrupted by Ctrl-C"), "{stderr}");
    assert!(!Path::new(&dir).exists(), "{dir} left behind");
    let deadline = Instant::now() + Duration::from_secs(5);
    for pid in &pids {
        let proc = format!("/proc/{pid}");
        while Path::new(&proc).exists() {
            assert!(Instant::now() < deadline, "node process {pid} still runs");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
