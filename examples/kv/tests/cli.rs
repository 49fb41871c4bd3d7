//! The `raft-kv` binary: three `serve` processes, the client commands
//! against them, `certs`, configuration errors and SIGTERM.

#![allow(missing_docs)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::free_tcp;

const BIN: &str = env!("CARGO_BIN_EXE_raft-kv");

/// A `raft-kv serve` process, killed when dropped.
struct Node {
    child: Child,
    ready: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(args: &[String]) -> Node {
    let mut child = Command::new(BIN)
        .arg("serve")
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("raft-kv starts");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    Node {
        child,
        ready: line.trim_end().to_owned(),
    }
}

fn client(servers: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("RAFT_KV_SERVERS", servers)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn three_serve_processes_answer_the_client_commands_and_stop_on_sigterm() {
    let raft: Vec<_> = (0..3).map(|_| free_tcp()).collect();
    let http: Vec<_> = (0..3).map(|_| free_tcp()).collect();
    let list = |addrs: &[std::net::SocketAddr]| {
        addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}@{a}", i + 1))
            .collect::<Vec<_>>()
            .join(",")
    };
    let dir = tempfile::tempdir().unwrap();
    // Node 1 reads part of its settings from a file; flags override it.
    let file = dir.path().join("node-1.toml");
    std::fs::write(
        &file,
        format!(
            "id = 1\nstorage = \"lmdb\"\npeers = \"{}\"\nheartbeat_ms = 30\n",
            list(&raft)
        ),
    )
    .unwrap();
    let mut nodes = Vec::new();
    for i in 0..3 {
        let mut args: Vec<String> = vec![
            format!("--id={}", i + 1),
            format!("--raft-listen={}", raft[i]),
            format!("--http-listen={}", http[i]),
            format!("--peers={}", list(&raft)),
            format!("--http-peers={}", list(&http)),
            "--storage=mem".into(),
            "--election-timeout-min-ms=150".into(),
            "--election-timeout-max-ms=300".into(),
            "--heartbeat-ms=30".into(),
        ];
        if i == 0 {
            args.push(format!("--config={}", file.display()));
        }
        nodes.push(serve(&args));
    }
    for (i, node) in nodes.iter().enumerate() {
        assert_eq!(
            node.ready,
            format!(
                "raft-kv node {} ready http={} raft={}",
                i + 1,
                http[i],
                raft[i]
            )
        );
    }
    let servers = http
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",");

    let put = client(&servers, &["put", "greeting", "hello"]);
    assert!(put.status.success(), "{put:?}");
    let get = client(&servers, &["get", "greeting"]);
    assert!(get.status.success(), "{get:?}");
    assert_eq!(stdout(&get), "hello\n");
    let get = client(
        &servers,
        &[
            "get",
            "greeting",
            "--consistency",
            "stale",
            "--servers",
            &http[2].to_string(),
        ],
    );
    // A stale read on one follower may lag; it is served either way.
    assert!(
        get.status.code() == Some(0) || get.status.code() == Some(1),
        "{get:?}"
    );
    let absent = client(&servers, &["get", "nothing"]);
    assert_eq!(absent.status.code(), Some(1));
    assert_eq!(stdout(&absent), "");

    let cas = client(
        &servers,
        &["cas", "greeting", "--expected", "hello", "--value", "bye"],
    );
    assert!(cas.status.success(), "{cas:?}");
    assert_eq!(stdout(&cas).trim(), r#"{"current":"bye","swapped":true}"#);
    let cas = client(&servers, &["cas", "greeting", "--absent", "--value", "x"]);
    assert_eq!(cas.status.code(), Some(1));
    let delete = client(&servers, &["delete", "greeting"]);
    assert_eq!(stdout(&delete).trim(), "deleted");

    let status = client(&servers, &["status"]);
    assert!(status.status.success(), "{status:?}");
    let text = stdout(&status);
    let leaders = text
        .lines()
        .filter(|l| l.split_whitespace().nth(3) == Some("leader"))
        .count();
    assert_eq!(leaders, 1, "one node leads:\n{text}");
    assert_eq!(
        text.lines().count(),
        4,
        "a header and one line per node:\n{text}"
    );
    let members = client(&servers, &["members"]);
    assert!(stdout(&members).contains("voters 1,2,3"), "{members:?}");

    let bad = client(&servers, &["get", "k", "--consistency", "eventual"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown consistency"));

    // SIGTERM: each node shuts down gracefully and exits 0.
    for mut node in nodes {
        let pid = node.child.id().to_string();
        let kill = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(kill.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = node.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "node {pid} did not stop");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    }
    let gone = client(&servers, &["status"]);
    assert_eq!(gone.status.code(), Some(1));
}

#[test]
fn invalid_configuration_exits_non_zero_naming_the_field() {
    let cases: &[(&[&str], &str)] = &[
        (&["serve", "--peers", "1@127.0.0.1:1"], "`id`"),
        (
            &[
                "serve",
                "--id",
                "1",
                "--peers",
                "1@127.0.0.1:1",
                "--partitions",
                "0",
            ],
            "`partitions`",
        ),
        (
            &[
                "serve",
                "--id",
                "1",
                "--peers",
                "1@127.0.0.1:1",
                "--transport",
                "smoke",
            ],
            "`transport`",
        ),
        (
            &[
                "serve",
                "--id",
                "1",
                "--peers",
                "1@127.0.0.1:1",
                "--transport",
                "quic",
            ],
            "`tls_ca`",
        ),
        (&["serve", "--id", "1"], "`peers`"),
        (&["serve", "--id", "one"], "--id"),
    ];
    for (args, field) in cases {
        let out = Command::new(BIN).args(*args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(field), "{args:?}: {err}");
        assert_eq!(stdout(&out), "", "{args:?}: no ready line");
    }
}

#[test]
fn certs_writes_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tls");
    let run = Command::new(BIN)
        .args([
            "certs",
            "--out",
            out.to_str().unwrap(),
            "--nodes",
            "1,2,3",
            "--hosts",
            "localhost,127.0.0.1",
        ])
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
    for id in 1..=3 {
        assert!(out.join(format!("node-{id}.pem")).is_file());
        assert!(out.join(format!("node-{id}-key.pem")).is_file());
    }
    assert!(out.join("ca.pem").is_file() && out.join("ca-key.pem").is_file());
}
