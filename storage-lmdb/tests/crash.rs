//! Crash safety: a child process appends and flushes in a loop and reports
//! each flushed index; the parent kills it (SIGKILL on Unix) at an arbitrary
//! point, reopens the directory and checks that every reported entry is
//! there and the log is intact (SCENARIOS.md cases 3, 6 and 12).
//!
//! The child is this test binary, re-executed with [`CHILD_DIR`] set so that
//! only [`crash_child`] does anything.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::pin::pin;
use std::process::{Command, Stdio};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use raft_api::{
    Entry, GroupId, HardState, Hlc, LogId, LogIndex, LogStore, Membership, NodeId, Payload,
    Snapshot, SnapshotMeta, Term,
};
use storage_lmdb::{LmdbLogStore, LmdbOptions};

/// Set in the child's environment to the store directory.
const CHILD_DIR: &str = "STORAGE_LMDB_CRASH_CHILD_DIR";
/// Every group gets the same log; group 3 is also compacted as it goes.
const GROUPS: [GroupId; 3] = [GroupId(1), GroupId(2), GroupId(3)];
const COMPACTED: GroupId = GroupId(3);
/// Child runs, each killed after this many reported flushes (plus some).
/// Kills per run (each reopens and checks everything reported flushed).
const ROUNDS: usize = 50;
const FLUSHES_PER_ROUND: usize = 40;

fn now<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the LMDB flush completes when first polled"),
    }
}

fn options() -> LmdbOptions {
    LmdbOptions {
        // Small, so the child also grows the map while being killed.
        initial_map_size: 1 << 20,
        ..LmdbOptions::new(99)
    }
}

/// The payload of the entry at `index`: its size varies from 1 byte to
/// about 12 KiB and every byte depends on the index.
fn payload(index: u64) -> Bytes {
    let len = 1 + (index * 7919 % 12_000) as usize;
    Bytes::from(
        (0..len)
            .map(|i| (index as usize + i) as u8)
            .collect::<Vec<_>>(),
    )
}

fn entry(index: u64) -> Entry {
    Entry {
        id: LogId::new(Term(1 + index / 100), LogIndex(index)),
        timestamp: Hlc::new(index, 0),
        payload: Payload::Command(payload(index)),
    }
}

fn snapshot(index: u64) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            last: entry(index).id,
            membership: Membership::new([1, 2, 3].map(NodeId)),
        },
        data: payload(index),
    }
}

/// The child: appends batches to every group and flushes, forever, printing
/// `flushed <index>` after each successful flush. Does nothing in a normal
/// test run.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let mut store = LmdbLogStore::open(Path::new(&dir), options()).expect("child: open");
    let mut out = std::io::stdout().lock();
    let mut round = 0u64;
    loop {
        round += 1;
        let last = store.log_state(GroupId(1)).expect("log_state").last.index.0;
        let count = 1 + round % 13;
        let batch: Vec<Entry> = (last + 1..=last + count).map(entry).collect();
        let new_last = last + count;
        for group in GROUPS {
            store.append(group, &batch).expect("append");
            store
                .save_hard_state(
                    group,
                    HardState {
                        term: entry(new_last).id.term,
                        vote: Some(NodeId(1)),
                        commit: LogIndex(new_last),
                    },
                )
                .expect("save_hard_state");
        }
        if round.is_multiple_of(5) {
            let upto = new_last - count;
            store
                .save_snapshot(COMPACTED, &snapshot(upto))
                .expect("save_snapshot");
            store.compact(COMPACTED, entry(upto).id).expect("compact");
        }
        now(store.flush()).expect("flush");
        writeln!(out, "flushed {new_last}").expect("stdout");
        out.flush().expect("stdout");
    }
}

#[test]
fn a_killed_writer_loses_no_flushed_entry() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acknowledged = 0u64;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the child");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut reported = 0;
        // Each round stops at a different point of the child's loop.
        let target = 5 + (round * 7) % FLUSHES_PER_ROUND;
        let mut record = |line: &str| {
            if let Some(index) = line.strip_prefix("flushed ") {
                let index: u64 = index.trim().parse().expect("flushed index");
                assert!(index > acknowledged, "indexes only grow");
                acknowledged = index;
                true
            } else {
                false
            }
        };
        for line in lines.by_ref() {
            if record(&line.expect("child stdout")) {
                reported += 1;
                if reported == target {
                    break;
                }
            }
        }
        assert_eq!(
            reported, target,
            "the child stopped early (see its stderr above)"
        );
        child.kill().expect("kill the child");
        // Flushes reported before the kill landed count too.
        for line in lines {
            let Ok(line) = line else { break };
            record(&line);
        }
        let status = child.wait().expect("wait for the child");
        assert!(!status.success(), "the child was killed: {status}");

        let store = LmdbLogStore::open(dir.path(), options()).expect("reopen after the kill");
        store.verify().expect("the store verifies after the kill");
        check(&store, acknowledged);
    }
}

/// Every acknowledged entry is there, every log is contiguous and holds the
/// right bytes, and the hard states were flushed with their entries.
fn check(store: &LmdbLogStore, acknowledged: u64) {
    let last = store.log_state(GroupId(1)).unwrap().last.index.0;
    assert!(
        last >= acknowledged,
        "acknowledged up to {acknowledged}, found up to {last}"
    );
    for group in GROUPS {
        let state = store.log_state(group).unwrap();
        assert_eq!(
            state.last.index.0, last,
            "{group}: all groups flush together"
        );
        let entries = store
            .entries(
                group,
                state.compacted.index.next()..state.last.index.next(),
                usize::MAX,
            )
            .unwrap();
        let expected: Vec<Entry> = (state.compacted.index.0 + 1..=last).map(entry).collect();
        assert_eq!(entries.len(), expected.len(), "{group}: contiguous");
        assert!(
            entries == expected,
            "{group}: entries hold what was written"
        );
        let hard_state = store.hard_state(group).unwrap();
        assert_eq!(hard_state.commit, LogIndex(last), "{group}: hard state");
    }
    let compacted = store.log_state(COMPACTED).unwrap().compacted;
    if compacted.index.0 > 0 {
        assert_eq!(compacted, entry(compacted.index.0).id);
        assert_eq!(
            store.snapshot(COMPACTED).unwrap(),
            Some(snapshot(compacted.index.0))
        );
    }
}
