//! Random sequences of writes, flushes and crashes against [`MemLogStore`],
//! checked after every step against a plain model that keeps a full durable
//! copy next to the view (clone on flush, clone back on crash).

use std::collections::BTreeMap;
use std::ops::Range;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use proptest::prelude::*;
use raft_api::{
    Entry, GroupId, HardState, Hlc, LogId, LogIndex, LogState, LogStore, Membership, NodeId,
    Payload, Snapshot, SnapshotMeta, StorageError, Term,
};
use storage_mem::MemLogStore;

/// Groups the operations touch; reads also look at one more, never written.
const GROUPS: u64 = 3;

fn block_on<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("in-memory futures are always ready"),
    }
}

/// A result compared by its `Debug` text (`StorageError` has no `PartialEq`).
fn show<T: std::fmt::Debug>(result: &Result<T, StorageError>) -> String {
    format!("{result:?}")
}

fn injected() -> StorageError {
    StorageError::Other("injected write failure".into())
}

/// One group as the model sees it: entries after `compacted`, in order.
#[derive(Clone, Debug, Default, PartialEq)]
struct ModelGroup {
    hard_state: HardState,
    compacted: LogId,
    entries: Vec<Entry>,
    snapshot: Option<Snapshot>,
}

impl ModelGroup {
    fn last(&self) -> LogId {
        self.entries.last().map_or(self.compacted, |e| e.id)
    }
}

/// The old two-copy semantics, written plainly.
#[derive(Debug, Default)]
struct Model {
    view: BTreeMap<GroupId, ModelGroup>,
    durable: BTreeMap<GroupId, ModelGroup>,
    staged: bool,
    fail: bool,
    flushes: u64,
}

impl Model {
    fn state(&self, group: GroupId) -> LogState {
        self.view
            .get(&group)
            .map(|g| LogState {
                compacted: g.compacted,
                last: g.last(),
            })
            .unwrap_or_default()
    }

    fn writable(&self) -> Result<(), StorageError> {
        if self.fail { Err(injected()) } else { Ok(()) }
    }

    /// The group to write, created if need be; the write counts as staged.
    fn stage(&mut self, group: GroupId) -> &mut ModelGroup {
        self.staged = true;
        self.view.entry(group).or_default()
    }

    fn save_hard_state(&mut self, group: GroupId, state: HardState) -> Result<(), StorageError> {
        self.writable()?;
        self.stage(group).hard_state = state;
        Ok(())
    }

    fn append(&mut self, group: GroupId, entries: &[Entry]) -> Result<(), StorageError> {
        self.writable()?;
        if entries.is_empty() {
            return Ok(());
        }
        let mut last = self.state(group).last.index;
        for entry in entries {
            if entry.id.index != LogIndex(last.0 + 1) {
                return Err(StorageError::NotContiguous {
                    group,
                    last,
                    got: entry.id.index,
                });
            }
            last = entry.id.index;
        }
        self.stage(group).entries.extend_from_slice(entries);
        Ok(())
    }

    fn truncate(&mut self, group: GroupId, from: LogIndex) -> Result<(), StorageError> {
        self.writable()?;
        let state = self.state(group);
        if from <= state.compacted.index {
            return Err(StorageError::Compacted {
                group,
                compacted: state.compacted.index,
                asked: from,
            });
        }
        if from > state.last.index {
            return Ok(());
        }
        self.stage(group).entries.retain(|e| e.id.index < from);
        Ok(())
    }

    fn compact(&mut self, group: GroupId, upto: LogId) -> Result<(), StorageError> {
        self.writable()?;
        if upto.index <= self.state(group).compacted.index {
            return Ok(());
        }
        let log = self.stage(group);
        log.entries.retain(|e| e.id.index > upto.index);
        log.compacted = upto;
        Ok(())
    }

    fn save_snapshot(&mut self, group: GroupId, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.writable()?;
        self.stage(group).snapshot = Some(snapshot.clone());
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StorageError> {
        self.writable()?;
        self.durable = self.view.clone();
        self.staged = false;
        self.flushes += 1;
        Ok(())
    }

    fn crash(&mut self) {
        self.view = self.durable.clone();
        self.staged = false;
    }

    fn entries(
        &self,
        group: GroupId,
        range: Range<LogIndex>,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        if range.start >= range.end {
            return Ok(Vec::new());
        }
        let state = self.state(group);
        if range.start <= state.compacted.index {
            return Err(StorageError::Compacted {
                group,
                compacted: state.compacted.index,
                asked: range.start,
            });
        }
        if range.end.0 > state.last.index.0 + 1 {
            return Err(StorageError::Unavailable {
                group,
                last: state.last.index,
                asked: LogIndex(range.end.0 - 1),
            });
        }
        let mut out = Vec::new();
        let mut total = 0usize;
        for entry in self.view[&group]
            .entries
            .iter()
            .filter(|e| range.contains(&e.id.index))
        {
            if !out.is_empty() && total.saturating_add(entry.size()) > max_bytes {
                break;
            }
            total = total.saturating_add(entry.size());
            out.push(entry.clone());
        }
        Ok(out)
    }
}

/// An operation, with positions relative to the log it meets (picked
/// modulo a range around the stored entries), so most writes are valid.
#[derive(Clone, Debug)]
enum Op {
    HardState {
        group: u64,
        term: u64,
        vote: Option<u64>,
        commit: u64,
    },
    Append {
        group: u64,
        /// Where the batch starts relative to `last + 1`: mostly 0.
        skew: i8,
        term: u64,
        /// Payload size of each entry (0 is a blank entry).
        sizes: Vec<u8>,
        /// Put a gap before this entry of the batch, if it has one.
        gap_at: Option<usize>,
    },
    Truncate {
        group: u64,
        pick: u16,
    },
    Compact {
        group: u64,
        pick: u16,
        /// Use this term instead of the stored entry's.
        term: Option<u64>,
    },
    Snapshot {
        group: u64,
        term: u64,
        index: u64,
        image: u8,
    },
    Flush,
    Crash,
    FailWrites(bool),
    Read {
        group: u64,
        start: u16,
        len: u16,
        max_bytes: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let group = 0..GROUPS;
    prop_oneof![
        2 => (group.clone(), 0..5u64, proptest::option::of(0..4u64), 0..20u64).prop_map(
            |(group, term, vote, commit)| Op::HardState { group, term, vote, commit }
        ),
        8 => (
            group.clone(),
            prop_oneof![8 => Just(0i8), 1 => Just(-1i8), 1 => Just(1i8)],
            1..5u64,
            proptest::collection::vec(0..40u8, 0..6),
            proptest::option::weighted(0.05, 0..6usize),
        )
            .prop_map(|(group, skew, term, sizes, gap_at)| Op::Append {
                group,
                skew,
                term,
                sizes,
                gap_at
            }),
        3 => (group.clone(), any::<u16>()).prop_map(|(group, pick)| Op::Truncate { group, pick }),
        3 => (group.clone(), any::<u16>(), proptest::option::weighted(0.3, 1..6u64))
            .prop_map(|(group, pick, term)| Op::Compact { group, pick, term }),
        1 => (group.clone(), 0..5u64, 0..30u64, any::<u8>()).prop_map(
            |(group, term, index, image)| Op::Snapshot { group, term, index, image }
        ),
        3 => Just(Op::Flush),
        2 => Just(Op::Crash),
        1 => prop_oneof![3 => Just(false), 1 => Just(true)].prop_map(Op::FailWrites),
        2 => (0..=GROUPS, any::<u16>(), 0..8u16, 0..150usize).prop_map(
            |(group, start, len, max_bytes)| Op::Read { group, start, len, max_bytes }
        ),
    ]
}

fn entry(term: u64, index: u64, size: u8) -> Entry {
    Entry {
        id: LogId::new(Term(term), LogIndex(index)),
        timestamp: Hlc::new(index, 0),
        payload: if size == 0 {
            Payload::Blank
        } else {
            Payload::Command(Bytes::from(vec![size; usize::from(size)]))
        },
    }
}

/// `lo + pick` wrapped into `lo..=hi`.
fn pick_in(pick: u16, lo: u64, hi: u64) -> u64 {
    lo + u64::from(pick) % (hi - lo + 1)
}

/// Every read of the store agrees with the model.
fn check_reads(store: &MemLogStore, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        store.groups().unwrap(),
        model.view.keys().copied().collect::<Vec<_>>()
    );
    prop_assert_eq!(store.has_unflushed(), model.staged);
    prop_assert_eq!(store.flushes(), model.flushes);
    for g in 0..=GROUPS {
        let group = GroupId(g);
        let state = model.state(group);
        prop_assert_eq!(store.log_state(group).unwrap(), state);
        prop_assert_eq!(
            store.hard_state(group).unwrap(),
            model
                .view
                .get(&group)
                .map(|g| g.hard_state)
                .unwrap_or_default()
        );
        prop_assert_eq!(
            store.snapshot(group).unwrap(),
            model.view.get(&group).and_then(|g| g.snapshot.clone())
        );
        let (c, l) = (state.compacted.index.0, state.last.index.0);
        // Everything, then ranges one past either end (errors).
        for (start, end) in [(c + 1, l + 1), (c, l + 1), (c + 1, l + 2)] {
            let range = LogIndex(start)..LogIndex(end);
            prop_assert_eq!(
                show(&store.entries(group, range.clone(), usize::MAX)),
                show(&model.entries(group, range.clone(), usize::MAX)),
                "entries {:?} of {:?}",
                range,
                group
            );
        }
    }
    Ok(())
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut store = MemLogStore::new();
    let mut model = Model::default();
    for op in ops {
        let (got, want) = match op {
            &Op::HardState {
                group,
                term,
                vote,
                commit,
            } => {
                let state = HardState {
                    term: Term(term),
                    vote: vote.map(NodeId),
                    commit: LogIndex(commit),
                };
                let group = GroupId(group);
                (
                    show(&store.save_hard_state(group, state)),
                    show(&model.save_hard_state(group, state)),
                )
            }
            Op::Append {
                group,
                skew,
                term,
                sizes,
                gap_at,
            } => {
                let group = GroupId(*group);
                let first = model.state(group).last.index.0 + 1;
                let mut index = first.saturating_add_signed(i64::from(*skew));
                let mut batch = Vec::new();
                for (i, &size) in sizes.iter().enumerate() {
                    if *gap_at == Some(i) {
                        index += 1;
                    }
                    batch.push(entry(*term, index, size));
                    index += 1;
                }
                (
                    show(&store.append(group, &batch)),
                    show(&model.append(group, &batch)),
                )
            }
            &Op::Truncate { group, pick } => {
                let group = GroupId(group);
                let state = model.state(group);
                let from = LogIndex(pick_in(
                    pick,
                    state.compacted.index.0.saturating_sub(1),
                    state.last.index.0 + 2,
                ));
                (
                    show(&store.truncate(group, from)),
                    show(&model.truncate(group, from)),
                )
            }
            &Op::Compact { group, pick, term } => {
                let group = GroupId(group);
                let state = model.state(group);
                let index = pick_in(
                    pick,
                    state.compacted.index.0.saturating_sub(1),
                    state.last.index.0 + 4,
                );
                let stored = model.view.get(&group).and_then(|g| {
                    g.entries
                        .iter()
                        .find(|e| e.id.index.0 == index)
                        .map(|e| e.id.term)
                });
                let term = term.map(Term).or(stored).unwrap_or(state.last.term);
                let upto = LogId::new(term, LogIndex(index));
                (
                    show(&store.compact(group, upto)),
                    show(&model.compact(group, upto)),
                )
            }
            &Op::Snapshot {
                group,
                term,
                index,
                image,
            } => {
                let snapshot = Snapshot {
                    meta: SnapshotMeta {
                        last: LogId::new(Term(term), LogIndex(index)),
                        membership: Membership::new([1, 2, 3].map(NodeId)),
                    },
                    data: Bytes::from(vec![image; 3]),
                };
                let group = GroupId(group);
                (
                    show(&store.save_snapshot(group, &snapshot)),
                    show(&model.save_snapshot(group, &snapshot)),
                )
            }
            Op::Flush => (show(&block_on(store.flush())), show(&model.flush())),
            Op::Crash => {
                store.crash();
                model.crash();
                (String::new(), String::new())
            }
            &Op::FailWrites(on) => {
                store.fail_writes(on);
                model.fail = on;
                (String::new(), String::new())
            }
            &Op::Read {
                group,
                start,
                len,
                max_bytes,
            } => {
                let group = GroupId(group);
                let state = model.state(group);
                let start = pick_in(
                    start,
                    state.compacted.index.0.saturating_sub(1),
                    state.last.index.0 + 2,
                );
                let range = LogIndex(start)..LogIndex(start + u64::from(len));
                (
                    show(&store.entries(group, range.clone(), max_bytes)),
                    show(&model.entries(group, range, max_bytes)),
                )
            }
        };
        prop_assert_eq!(got, want, "result of {:?}", op);
        check_reads(&store, &model)?;
    }
    // Whatever is left staged, a flush then a crash keep everything.
    store.fail_writes(false);
    model.fail = false;
    block_on(store.flush()).unwrap();
    model.flush().unwrap();
    store.crash();
    model.crash();
    check_reads(&store, &model)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn store_matches_the_two_copy_model(ops in proptest::collection::vec(op(), 1..120)) {
        run(&ops)?;
    }
}
