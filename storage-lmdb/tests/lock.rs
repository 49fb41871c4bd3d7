//! One data directory, one store, across processes: a second process may
//! not open a directory a store holds (two Raft nodes would share one vote
//! record), and the lock goes with the holder, whether it closes the store
//! or is killed.
//!
//! The other process is this test binary, re-executed with [`CHILD_DIR`]
//! set so that only [`lock_child`] does anything.

use std::io::{BufRead, BufReader, Lines, Write};
use std::path::Path;
use std::pin::pin;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use raft_api::{Entry, GroupId, Hlc, LogId, LogIndex, LogStore, Payload, StorageError, Term};
use storage_lmdb::{LmdbLogStore, LmdbOptions};

/// Set in the child's environment to the store directory.
const CHILD_DIR: &str = "STORAGE_LMDB_LOCK_CHILD_DIR";
/// Printed by the child once its store is open and flushed.
const OPENED: &str = "lock-child: opened";
/// Printed by the child once it has dropped its store.
const CLOSED: &str = "lock-child: closed";
/// Printed by the child, with the error, when it may not open the store.
const REFUSED: &str = "lock-child: refused: ";
const G: GroupId = GroupId(1);

fn now<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the LMDB flush completes when first polled"),
    }
}

fn options() -> LmdbOptions {
    LmdbOptions::new(11)
}

fn entry(index: u64) -> Entry {
    Entry {
        id: LogId::new(Term(1), LogIndex(index)),
        timestamp: Hlc::default(),
        payload: Payload::Command(Bytes::from(format!("command {index}"))),
    }
}

/// The child: opens the store, appends the next entry and flushes, says
/// so, then keeps the store open until its standard input closes; or says
/// why it may not open the store. Does nothing in a normal test run.
#[test]
fn lock_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let mut out = std::io::stdout().lock();
    let mut store = match LmdbLogStore::open(Path::new(&dir), options()) {
        Ok(store) => store,
        Err(err) => {
            writeln!(out, "\n{REFUSED}{err}").expect("stdout");
            return;
        }
    };
    let next = store.log_state(G).expect("log_state").last.index.0 + 1;
    store.append(G, &[entry(next)]).expect("append");
    now(store.flush()).expect("flush");
    // On a line of its own: the test harness may have written on this one.
    writeln!(out, "\n{OPENED}").expect("stdout");
    out.flush().expect("stdout");
    // Until the parent closes our standard input.
    for line in std::io::stdin().lines() {
        line.expect("stdin");
    }
    drop(store);
    writeln!(out, "\n{CLOSED}").expect("stdout");
    out.flush().expect("stdout");
}

/// Starts a child holding the store in `dir` and waits until it has opened
/// it.
fn spawn_holder(dir: &Path) -> (Child, Lines<BufReader<ChildStdout>>) {
    let (child, mut lines) = spawn_child(dir);
    wait_for(&mut lines, OPENED);
    (child, lines)
}

/// Starts a child on the store in `dir`; its standard output, by lines.
fn spawn_child(dir: &Path) -> (Child, Lines<BufReader<ChildStdout>>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "lock_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child");
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

/// Reads the child's output up to the line starting with `marker`; returns
/// the rest of that line.
fn wait_for(lines: &mut Lines<BufReader<ChildStdout>>, marker: &str) -> String {
    for line in lines.by_ref() {
        if let Some(rest) = line.expect("child stdout").strip_prefix(marker) {
            return rest.to_owned();
        }
    }
    panic!("the child stopped before printing `{marker}` (see its stderr above)");
}

/// Asserts that opening `dir` is refused because `child` holds it.
fn assert_refused(dir: &Path, child: &Child) {
    match LmdbLogStore::open(dir, options()) {
        Err(err @ StorageError::Locked { .. }) => {
            let message = err.to_string();
            let StorageError::Locked { path, holder } = err else {
                unreachable!()
            };
            assert_eq!(path, dir.join("store.lock"));
            assert_eq!(holder, format!("process {}", child.id()));
            assert!(
                message.contains(&dir.display().to_string()),
                "names the directory: {message}"
            );
            assert!(
                message.contains("another node is using this data directory"),
                "{message}"
            );
        }
        other => panic!("expected Locked, got {other:?}"),
    }
}

#[test]
fn a_directory_held_by_another_process_is_refused_until_it_closes_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, mut lines) = spawn_holder(dir.path());
    assert_refused(dir.path(), &child);
    // Refused again: a refusal takes nothing over.
    assert_refused(dir.path(), &child);

    // The child closes its store (and exits): the directory is free, and
    // holds what the child flushed.
    drop(child.stdin.take());
    wait_for(&mut lines, CLOSED);
    let status = child.wait().expect("wait for the child");
    assert!(status.success(), "the child failed: {status}");
    let store = LmdbLogStore::open(dir.path(), options()).expect("open after the child");
    assert_eq!(store.log_state(G).unwrap().last.index, LogIndex(1));
    store.verify().unwrap();

    // And a store of this process keeps a new child out.
    let (mut child, mut lines) = spawn_child(dir.path());
    let refusal = wait_for(&mut lines, REFUSED);
    assert!(
        refusal.contains(&format!("locked by process {}", std::process::id())),
        "{refusal}"
    );
    assert!(child.wait().expect("wait for the child").success());
    drop(store);
    assert_eq!(
        LmdbLogStore::open(dir.path(), options())
            .unwrap()
            .log_state(G)
            .unwrap()
            .last
            .index,
        LogIndex(1),
        "the refused child wrote nothing"
    );
}

#[test]
fn a_killed_holder_leaves_no_lock_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _lines) = spawn_holder(dir.path());
    assert_refused(dir.path(), &child);
    child.kill().expect("kill the child");
    let status = child.wait().expect("wait for the child");
    assert!(!status.success(), "the child was killed: {status}");
    // The lock file stays, but its lock went with the process.
    assert!(dir.path().join("store.lock").exists());
    let store = LmdbLogStore::open(dir.path(), options()).expect("open after the kill");
    assert_eq!(store.log_state(G).unwrap().last.index, LogIndex(1));
}
