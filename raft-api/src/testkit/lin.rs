//! Linearizability checker for key-value client histories.
//!
//! Every operation touches exactly one key and each key is an independent
//! register, so a history is linearizable iff each key's sub-history is. Each
//! sub-history is checked with a Wing & Gong / Lowe style depth-first search
//! over call and return events, memoizing the configurations (set of
//! linearized operations, register value) already explored.
//!
//! Timing: events are ordered by time and, at equal times, calls sort before
//! returns. An operation invoked at the instant another completes is therefore
//! concurrent with it; one operation must precede another only if it completes
//! strictly before the other is invoked.
//!
//! Operations with an [`Outcome::Unknown`] outcome have no return event: they
//! may take effect at any point after their invocation, or never, and their
//! result is unconstrained. Two reductions keep such histories tractable
//! without changing the verdict:
//! - values no operation compares against (returned by no completed get,
//!   expected by no compare-and-set) are merged into one hidden value, so
//!   identical unknown writes are interchangeable and only the earliest
//!   pending one is tried;
//! - a configuration is skipped when one with the same linearized completed
//!   operations and register value, but a subset of its applied unknown
//!   operations, was already explored: leaving an unknown operation unapplied
//!   never removes options.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// Key of the key-value store.
pub type Key = Vec<u8>;
/// Value stored under a key.
pub type Value = Vec<u8>;

/// One client operation on the key-value store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    /// Sets the key to `value`.
    Put {
        /// Key written.
        key: Key,
        /// Value written.
        value: Value,
    },
    /// Reads the key.
    Get {
        /// Key read.
        key: Key,
    },
    /// Removes the key.
    Delete {
        /// Key removed.
        key: Key,
    },
    /// Compare-and-set: succeeds iff the current value equals `expected` (None = key absent); on success the value becomes `new`.
    Cas {
        /// Key updated.
        key: Key,
        /// Value required for success; `None` requires the key to be absent.
        expected: Option<Value>,
        /// Value stored on success.
        new: Value,
    },
}

impl KvOp {
    fn key(&self) -> &[u8] {
        match self {
            KvOp::Put { key, .. } | KvOp::Get { key } | KvOp::Delete { key } => key,
            KvOp::Cas { key, .. } => key,
        }
    }
}

/// What the store answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvResult {
    /// Put acknowledged.
    Done,
    /// Get result: current value, None when absent.
    Value(Option<Value>),
    /// Delete result: whether the key existed.
    Deleted(bool),
    /// Cas result: whether it succeeded.
    Cas(bool),
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Completed with this result.
    Ok(KvResult),
    /// Definitely not applied (e.g. rejected by a non-leader).
    Failed,
    /// May or may not have been applied, at any time after invocation (e.g. the server crashed, the client timed out).
    Unknown,
}

/// One operation in a history.
#[derive(Clone, Debug)]
pub struct Operation {
    /// Client that issued the operation (shown in diagnostics only).
    pub client: u64,
    /// The operation itself.
    pub op: KvOp,
    /// Invocation time.
    pub invoke: u64,
    /// Completion time (must be >= invoke; ignored for Unknown outcomes, which are treated as completing at infinity).
    pub complete: u64,
    /// How the operation ended.
    pub outcome: Outcome,
}

/// Why a history is not linearizable.
#[derive(Clone, Debug)]
pub struct Violation {
    /// Key whose sub-history is at fault.
    pub key: Key,
    /// Human-readable explanation including the ops of that key involved (a short listing of that key's sub-history is good).
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key {}: {}", show(&self.key), self.message)
    }
}

impl std::error::Error for Violation {}

/// Default cap on the configurations [`check`] explores per key before giving up.
pub const DEFAULT_MAX_STATES: usize = 2_000_000;

/// Checks the whole history. Per-key decomposition (KV ops touch exactly one key, so the history is linearizable iff each key's sub-history is). Initial state of every key: absent.
///
/// Reports the first failing key in key order. Giving up (see
/// [`check_with_limit`]) is an error too, never a pass.
pub fn check(history: &[Operation]) -> Result<(), Violation> {
    check_with_limit(history, DEFAULT_MAX_STATES)
}

/// Like [`check`], but explores at most `max_states` configurations per key;
/// when a key needs more, returns an error whose message says the search gave
/// up. A completed operation whose completion precedes its invocation is
/// reported as a malformed history.
pub fn check_with_limit(history: &[Operation], max_states: usize) -> Result<(), Violation> {
    let mut by_key: BTreeMap<&[u8], Vec<&Operation>> = BTreeMap::new();
    for op in history.iter().filter(|o| o.outcome != Outcome::Failed) {
        by_key.entry(op.op.key()).or_default().push(op);
    }
    for (key, ops) in by_key {
        check_key(ops, max_states).map_err(|message| Violation {
            key: key.to_vec(),
            message,
        })?;
    }
    Ok(())
}

/// Interned id standing for every value nothing compares against.
const HIDDEN: u32 = u32::MAX;

/// Register contents, with values replaced by interned ids.
type State = Option<u32>;

/// An operation in terms of interned value ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Put(u32),
    Get,
    Delete,
    Cas(State, u32),
}

/// A result in terms of interned value ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reply {
    Done,
    Value(State),
    Deleted(bool),
    Cas(bool),
}

/// The sequential register model: new contents and the answer.
fn apply(state: State, step: Step) -> (State, Reply) {
    match step {
        Step::Put(v) => (Some(v), Reply::Done),
        Step::Get => (state, Reply::Value(state)),
        Step::Delete => (None, Reply::Deleted(state.is_some())),
        Step::Cas(expected, new) if state == expected => (Some(new), Reply::Cas(true)),
        Step::Cas(..) => (state, Reply::Cas(false)),
    }
}

/// One operation of a key's sub-history, prepared for the search.
struct Entry<'a> {
    src: &'a Operation,
    step: Step,
    /// Required answer; `None` for an unknown outcome.
    expect: Option<Reply>,
    /// Bit index in its bitset (completed ops and unknown ops have one each).
    slot: usize,
}

fn check_key(mut ops: Vec<&Operation>, max_states: usize) -> Result<(), String> {
    // Gets with unknown outcome neither change the register nor constrain it.
    ops.retain(|o| !(o.outcome == Outcome::Unknown && matches!(o.op, KvOp::Get { .. })));
    ops.sort_by_key(|o| (o.invoke, o.complete));
    let malformed = ops
        .iter()
        .find(|o| o.outcome != Outcome::Unknown && o.complete < o.invoke);
    if let Some(o) = malformed {
        return Err(format!(
            "malformed history, completes before invoked: {}",
            describe(o)
        ));
    }
    let mut ids: HashMap<&[u8], u32> = HashMap::new();
    let mut names: Vec<&[u8]> = Vec::new();
    for o in &ops {
        let observed = match (&o.op, &o.outcome) {
            (_, Outcome::Ok(KvResult::Value(Some(v)))) => Some(v),
            (KvOp::Cas { expected, .. }, _) => expected.as_ref(),
            _ => None,
        };
        if let Some(v) = observed {
            ids.entry(v).or_insert_with(|| {
                names.push(v);
                names.len() as u32 - 1
            });
        }
    }
    let id = |v: &[u8]| ids.get(v).copied().unwrap_or(HIDDEN);
    let mut counts = [0; 2];
    let mut entries = Vec::with_capacity(ops.len());
    for src in ops {
        let step = match &src.op {
            KvOp::Put { value, .. } => Step::Put(id(value)),
            KvOp::Get { .. } => Step::Get,
            KvOp::Delete { .. } => Step::Delete,
            KvOp::Cas { expected, new, .. } => Step::Cas(expected.as_deref().map(id), id(new)),
        };
        let expect = match &src.outcome {
            Outcome::Ok(KvResult::Done) => Some(Reply::Done),
            Outcome::Ok(KvResult::Value(v)) => Some(Reply::Value(v.as_deref().map(id))),
            Outcome::Ok(KvResult::Deleted(b)) => Some(Reply::Deleted(*b)),
            Outcome::Ok(KvResult::Cas(b)) => Some(Reply::Cas(*b)),
            _ => None,
        };
        let slot = counts[usize::from(expect.is_some())];
        counts[usize::from(expect.is_some())] += 1;
        entries.push(Entry {
            src,
            step,
            expect,
            slot,
        });
    }

    // (time, is return, entry): calls sort before returns at equal times.
    let mut timed = Vec::with_capacity(2 * entries.len());
    for (i, e) in entries.iter().enumerate() {
        timed.push((e.src.invoke, false, i));
        if e.expect.is_some() {
            timed.push((e.src.complete, true, i));
        }
    }
    timed.sort_unstable();
    let events: Vec<(usize, bool)> = timed.iter().map(|&(_, ret, i)| (i, ret)).collect();
    let unknown_calls = (0..events.len())
        .filter(|&k| entries[events[k].0].expect.is_none())
        .collect();
    let mut search = Search {
        entries: &entries,
        events,
        unknown_calls,
        done: counts.map(|n| vec![0; n.div_ceil(64)]),
        memo: HashMap::new(),
        states: 0,
        best: (Vec::new(), None),
    };
    match search.run(max_states) {
        Some(true) => Ok(()),
        Some(false) => Err(search.report(|s| match s {
            None => "nothing (absent)".to_string(),
            Some(HIDDEN) => "a value no operation observes".to_string(),
            Some(i) => show(names[i as usize]),
        })),
        None => Err(format!(
            "linearizability search gave up after exploring {} states (limit {max_states}) \
             on {} operations; the history could not be checked",
            search.states,
            entries.len()
        )),
    }
}

/// One level of the depth-first search.
struct Frame {
    /// Operations that may be linearized next, with the resulting contents.
    candidates: Vec<(usize, State)>,
    next: usize,
    /// Events before this index are linearized or belong to unknown operations.
    start: usize,
    /// Operation linearized to reach this level, and the contents before it.
    via: Option<(usize, State)>,
}

struct Search<'a> {
    entries: &'a [Entry<'a>],
    /// (entry, is return), in time order.
    events: Vec<(usize, bool)>,
    /// Indices in `events` of the calls of unknown operations.
    unknown_calls: Vec<usize>,
    /// Linearized operations: unknown ones in `done[0]`, completed ones in `done[1]`.
    done: [Vec<u64>; 2],
    /// (`done[1]`, contents) -> minimal `done[0]` sets explored with them.
    memo: HashMap<Vec<u64>, Vec<Vec<u64>>>,
    states: usize,
    /// Path and final contents of the configuration with most completed ops linearized.
    best: (Vec<usize>, State),
}

fn subset(a: &[u64], b: &[u64]) -> bool {
    a.iter().zip(b).all(|(x, y)| x & !y == 0)
}

impl Search<'_> {
    /// Bitset, word and mask of operation `i`.
    fn bit(&self, i: usize) -> (usize, usize, u64) {
        let e = &self.entries[i];
        (
            usize::from(e.expect.is_some()),
            e.slot / 64,
            1 << (e.slot % 64),
        )
    }

    fn is_done(&self, i: usize) -> bool {
        let (set, word, mask) = self.bit(i);
        self.done[set][word] & mask != 0
    }

    fn toggle(&mut self, i: usize) {
        let (set, word, mask) = self.bit(i);
        self.done[set][word] ^= mask;
    }

    fn ok_count(&self) -> usize {
        self.done[1].iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Records the current configuration; false if it, or one dominating it, was seen.
    fn admit(&mut self, state: State) -> bool {
        let mut key = self.done[1].clone();
        key.push(state.map_or(u64::MAX, u64::from));
        let seen = self.memo.entry(key).or_default();
        let current = &self.done[0];
        if seen.iter().any(|w| subset(w, current)) {
            return false;
        }
        seen.retain(|w| !subset(current, w));
        seen.push(current.clone());
        self.states += 1;
        true
    }

    /// A search level for contents `state`. Its candidates are the pending
    /// calls before the first pending return whose effect fits: completed
    /// operations giving the recorded answer first, then unknown ones that
    /// change the contents (only the earliest of identical ones).
    fn frame(&self, state: State, start: usize, via: Option<(usize, State)>) -> Frame {
        let (mut candidates, mut first, mut stop) = (Vec::new(), None, self.events.len());
        for (k, &(i, ret)) in self.events.iter().enumerate().skip(start) {
            let e = &self.entries[i];
            if e.expect.is_none() || self.is_done(i) {
                continue;
            }
            first.get_or_insert(k);
            if ret {
                stop = k;
                break;
            }
            let (next, reply) = apply(state, e.step);
            if e.expect == Some(reply) {
                candidates.push((i, next));
            }
        }
        let mut tried = Vec::new();
        for &k in self.unknown_calls.iter().take_while(|&&k| k < stop) {
            let i = self.events[k].0;
            let step = self.entries[i].step;
            let next = apply(state, step).0;
            if next != state && !self.is_done(i) && !tried.contains(&step) {
                tried.push(step);
                candidates.push((i, next));
            }
        }
        let start = first.unwrap_or(stop);
        Frame {
            candidates,
            next: 0,
            start,
            via,
        }
    }

    /// Some(linearizable?), or None when more than `max_states` were needed.
    fn run(&mut self, max_states: usize) -> Option<bool> {
        if self.done[1].is_empty() {
            return Some(true);
        }
        let mut state: State = None;
        self.admit(state);
        let mut stack = vec![self.frame(state, 0, None)];
        let mut best = 0;
        while let Some(top) = stack.last_mut() {
            let Some(&(i, next)) = top.candidates.get(top.next) else {
                if let Some((i, prev)) = stack.pop().and_then(|f| f.via) {
                    self.toggle(i);
                    state = prev;
                }
                continue;
            };
            top.next += 1;
            let start = top.start;
            self.toggle(i);
            let count = self.ok_count();
            if count == self.entries.len() - self.unknown_calls.len() {
                return Some(true);
            }
            if !self.admit(next) {
                self.toggle(i);
                continue;
            }
            if self.states > max_states {
                return None;
            }
            stack.push(self.frame(next, start, Some((i, state))));
            state = next;
            if count > best {
                best = count;
                self.best = (
                    stack.iter().filter_map(|f| f.via.map(|v| v.0)).collect(),
                    state,
                );
            }
        }
        Some(false)
    }

    /// Explains a failure from the configuration with most completed ops linearized.
    fn report(&mut self, value: impl Fn(State) -> String) -> String {
        let path = std::mem::take(&mut self.best.0);
        path.iter().for_each(|&i| self.toggle(i));
        let mut stuck = Vec::new();
        for &(i, ret) in &self.events {
            if self.entries[i].expect.is_some() && !self.is_done(i) {
                if ret {
                    break;
                }
                stuck.push(i);
            }
        }
        let total = self.entries.len() - self.unknown_calls.len();
        let tail = &path[path.len().saturating_sub(8)..];
        let line = |i: &usize| format!("\n  {}", describe(self.entries[*i].src));
        let mut out = format!(
            "not linearizable: at most {} of {total} completed operations fit the register model.\n\
             The furthest linearization ({} ops) ends with:",
            self.ok_count(),
            path.len()
        );
        out.extend(tail.iter().map(line));
        let holds = value(self.best.1);
        out += &format!("\nThe register then holds {holds}; none of these can come next:");
        out.extend(stuck.iter().map(line));
        let involved = tail.iter().chain(&stuck).map(|&i| self.entries[i].src);
        let lo = involved.clone().map(|o| o.invoke).min().unwrap_or(0);
        let hi = involved.map(|o| o.complete).max().unwrap_or(u64::MAX);
        let near: Vec<usize> = (0..self.entries.len())
            .filter(|&i| {
                let (o, ok) = (self.entries[i].src, self.entries[i].expect.is_some());
                o.invoke <= hi && (if ok { o.complete } else { o.invoke }) >= lo
            })
            .collect();
        out += &format!("\nOperations of this key in t={lo}..{hi} ({}):", near.len());
        out.extend(near.iter().take(40).map(line));
        if near.len() > 40 {
            out += &format!("\n  ... {} more", near.len() - 40);
        }
        out
    }
}

/// Bytes as a quoted string when printable, hex otherwise.
fn show(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.chars().any(char::is_control) => format!("{s:?}"),
        _ => format!(
            "0x{}",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
    }
}

fn show_opt(value: &Option<Value>) -> String {
    value.as_deref().map_or("absent".to_string(), show)
}

/// One-line description of an operation.
fn describe(o: &Operation) -> String {
    let call = match &o.op {
        KvOp::Put { value, .. } => format!("put({})", show(value)),
        KvOp::Get { .. } => "get()".to_string(),
        KvOp::Delete { .. } => "delete()".to_string(),
        KvOp::Cas { expected, new, .. } => format!("cas({} -> {})", show_opt(expected), show(new)),
    };
    let (end, result) = match &o.outcome {
        Outcome::Ok(KvResult::Done) => (o.complete, "ok".to_string()),
        Outcome::Ok(KvResult::Value(v)) => (o.complete, show_opt(v)),
        Outcome::Ok(KvResult::Deleted(b)) => (o.complete, format!("existed={b}")),
        Outcome::Ok(KvResult::Cas(b)) => (o.complete, format!("swapped={b}")),
        Outcome::Failed => (o.complete, "failed".to_string()),
        Outcome::Unknown => (u64::MAX, "unknown".to_string()),
    };
    let end = if end == u64::MAX {
        "?".to_string()
    } else {
        end.to_string()
    };
    format!(
        "client {} {call} @ {}..{end} -> {result}",
        o.client, o.invoke
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    /// Parses `op key args invoke complete [?|!]` items separated by `;`:
    /// `put k v`, `get k v`, `del k existed`, `cas k expected new swapped`.
    /// `-` is an absent value; `?` marks an unknown outcome, `!` a failed one.
    fn h(spec: &str) -> Vec<Operation> {
        let parse = |(n, item): (usize, &str)| {
            let w: Vec<&str> = item.split_whitespace().collect();
            let val = |s: &str| (s != "-").then(|| b(s));
            let (key, value, at) = (b(w[1]), b(w[2]), if w[0] == "cas" { 5 } else { 3 });
            let (op, result) = match w[0] {
                "put" => (KvOp::Put { key, value }, KvResult::Done),
                "get" => (KvOp::Get { key }, KvResult::Value(val(w[2]))),
                "del" => (KvOp::Delete { key }, KvResult::Deleted(w[2] == "true")),
                _ => {
                    let (expected, new) = (val(w[2]), b(w[3]));
                    (
                        KvOp::Cas { key, expected, new },
                        KvResult::Cas(w[4] == "true"),
                    )
                }
            };
            let outcome = match w.get(at + 2) {
                Some(&"?") => Outcome::Unknown,
                Some(&"!") => Outcome::Failed,
                _ => Outcome::Ok(result),
            };
            let (invoke, complete) = (w[at].parse().unwrap(), w[at + 1].parse().unwrap());
            operation(n as u64, op, invoke, complete, outcome)
        };
        spec.split(';').enumerate().map(parse).collect()
    }

    fn operation(client: u64, op: KvOp, invoke: u64, complete: u64, outcome: Outcome) -> Operation {
        Operation {
            client,
            op,
            invoke,
            complete,
            outcome,
        }
    }

    fn ok(spec: &str) {
        if let Err(e) = check(&h(spec)) {
            panic!("{spec}\n{e}");
        }
    }

    /// Asserts a genuine violation (not a give-up) on the key of the first operation.
    fn bad(spec: &str) -> Violation {
        let history = h(spec);
        let err = check(&history).expect_err(spec);
        assert_eq!(err.key, history[0].op.key(), "{err}");
        assert!(err.message.contains("not linearizable"), "{err}");
        err
    }

    #[test]
    fn sequential_put_then_get() {
        ok("put k a 0 1; get k a 2 3");
        bad("put k a 0 1; get k b 2 3");
        bad("put k a 0 1; put k b 2 3; get k a 4 5");
        assert!(check(&[]).is_ok());
    }

    #[test]
    fn concurrent_put_and_get_may_see_either_value() {
        ok("put k old 0 1; put k new 10 20; get k old 12 18");
        ok("put k old 0 1; put k new 10 20; get k new 12 18");
        ok("put k new 10 20; get k - 5 25");
        ok("put k new 10 20; get k new 5 25");
        // The get must then be ordered after the put.
        bad("put k old 0 1; put k new 10 20; get k new 12 18; get k old 30 31");
    }

    #[test]
    fn equal_timestamps_are_concurrent() {
        ok("put k a 0 10; get k - 10 20");
        bad("put k a 0 10; get k - 11 20");
    }

    #[test]
    fn stale_read_is_a_violation() {
        bad("put k a 0 1; put k b 2 3; get k a 4 5");
        bad("put k a 0 1; get k a 2 3; put k b 4 10; get k b 5 6; get k a 7 8");
    }

    #[test]
    fn lost_write_is_a_violation() {
        bad("put k a 0 1; get k - 5 6");
        bad("put k a 0 1; put k b 2 3; del k true 3 4; get k - 5 6; get k b 7 8");
    }

    #[test]
    fn read_of_failed_write_is_a_violation() {
        bad("put k a 0 1 !; get k a 5 6");
        ok("put k a 0 1 !; get k - 5 6");
    }

    #[test]
    fn unknown_outcomes_are_optional() {
        ok("put k a 0 0 ?; get k a 50 60");
        bad("put k a 0 0 ?; get k a 50 60; get k - 70 80");
        ok("put k a 0 0 ?; get k - 50 60");
        ok("put k a 0 0 ?; put k b 10 20; get k b 30 40");
        // It may land late, but only once, and not before its invocation.
        ok("put k a 0 0 ?; get k - 50 60; get k a 70 80");
        bad("put k a 0 0 ?; get k a 10 11; put k b 12 13; get k a 14 15");
        bad("put k a 10 10 ?; get k a 0 5");
        // Needs the unknown write late, after an earlier order used it early.
        ok(
            "put k a 0 10; put k b 0 10; put k a 0 0 ?; get k a 11 12; put k c 13 14; get k a 15 16",
        );
        // Unknown reads and deletes are unconstrained.
        ok("get k zzz 1 2 ?; del k true 1 2 ?; put k a 3 4 ?; get k a 5 6; del k false 7 8 ?");
        ok("put k a 0 1; del k true 2 2 ?; get k - 5 6");
    }

    #[test]
    fn cas_semantics() {
        ok(
            "cas k - a true 0 1; cas k - b false 2 3; cas k a c true 4 5; cas k a d false 6 7; get k c 8 9",
        );
        // Success reported although the expected value cannot be there.
        bad("put k x 0 1; cas k y z true 2 3");
        bad("cas k y z true 0 1");
        // Failure reported although it must have matched.
        bad("put k x 0 1; cas k x z false 2 3");
        bad("cas k - z false 0 1");
        // A failed cas changes nothing.
        bad("put k x 0 1; cas k - z false 2 3; get k z 4 5");
        // Racing a put, a cas may go either way.
        ok("put k x 0 10; cas k - z true 0 10; get k x 11 12");
        ok("put k x 0 10; cas k x z true 0 10; get k z 11 12");
        bad("put k x 0 10; cas k x z true 0 10; get k x 11 12");
        // An unknown cas takes effect only when it matches.
        ok("put k x 0 1; cas k x z true 2 2 ?; get k z 5 6");
        bad("put k x 0 1; cas k y z true 2 2 ?; get k z 5 6");
    }

    #[test]
    fn delete_results() {
        ok("del k false 0 1; put k a 2 3; del k true 4 5; get k - 6 7; del k false 8 9");
        bad("del k true 0 1");
        bad("put k a 0 1; del k false 2 3");
        bad("put k a 0 1; del k true 2 3; get k a 4 5");
        ok("put k a 0 10; del k true 0 10; del k false 0 10");
        bad("put k a 0 10; del k true 0 10; del k true 0 10");
    }

    #[test]
    fn violation_is_reported_with_its_key() {
        let spec = "put a 1 0 1; put b 1 0 1; get a 1 2 3; get b 2 2 3; put c 1 0 1; get c 1 4 5";
        let err = check(&h(spec)).expect_err(spec);
        assert_eq!(err.key, b"b");
        let text = err.to_string();
        assert!(text.starts_with("key \"b\": not linearizable"), "{text}");
        assert!(text.contains("client 3 get() @ 2..3 -> \"2\""), "{text}");
        assert!(!text.contains("client 2"), "{text}");
        ok("put a 1 0 1; put b 1 0 1; get a 1 2 3; get b 1 2 3");
    }

    #[test]
    fn malformed_input_is_rejected() {
        let err = check(&h("put k a 5 4")).unwrap_err();
        assert!(err.message.contains("malformed"), "{err}");
        ok("put k a 5 4 ?");
    }

    struct XorShift(u64);

    impl XorShift {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    fn model(store: &mut BTreeMap<Key, Value>, op: &KvOp) -> KvResult {
        match op {
            KvOp::Put { key, value } => {
                store.insert(key.clone(), value.clone());
                KvResult::Done
            }
            KvOp::Get { key } => KvResult::Value(store.get(key).cloned()),
            KvOp::Delete { key } => KvResult::Deleted(store.remove(key).is_some()),
            KvOp::Cas { key, expected, new } if store.get(key) == expected.as_ref() => {
                store.insert(key.clone(), new.clone());
                KvResult::Cas(true)
            }
            KvOp::Cas { .. } => KvResult::Cas(false),
        }
    }

    /// A sequential run of the model, op `n` taking effect at time 100n + 200,
    /// with each interval widened around that time to overlap its neighbours.
    fn random_history(seed: u64, len: u64, keys: u64, unknown_pct: u64) -> Vec<Operation> {
        let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut store = BTreeMap::new();
        let mut history = Vec::new();
        for n in 0..len {
            let key = vec![b'k', b'0' + rng.below(keys) as u8];
            let new = format!("v{n}").into_bytes();
            let op = match rng.below(10) {
                0..=2 => KvOp::Put { key, value: new },
                3..=6 => KvOp::Get { key },
                7 => KvOp::Delete { key },
                _ => {
                    let expected = match rng.below(3) {
                        0 => store.get(&key).cloned(),
                        1 => None,
                        _ => Some(format!("v{}", rng.below(n + 1)).into_bytes()),
                    };
                    KvOp::Cas { key, expected, new }
                }
            };
            let t = 100 * n + 200;
            let (invoke, complete) = (t - rng.below(180), t + rng.below(180));
            let roll = rng.below(100);
            let outcome = if roll < unknown_pct {
                if rng.below(2) == 0 {
                    model(&mut store, &op);
                }
                Outcome::Unknown
            } else if roll < unknown_pct + 5 {
                Outcome::Failed
            } else {
                Outcome::Ok(model(&mut store, &op))
            };
            history.push(operation(n % 5, op, invoke, complete, outcome));
        }
        history
    }

    /// Makes the latest completed get return a value never written; returns its key.
    fn corrupt(history: &mut [Operation]) -> Key {
        let o = (history.iter_mut().rev())
            .find(|o| matches!(o.outcome, Outcome::Ok(KvResult::Value(_))))
            .expect("history has a completed get");
        o.outcome = Outcome::Ok(KvResult::Value(Some(b("never-written"))));
        o.op.key().to_vec()
    }

    #[test]
    fn random_histories_pass_and_corruption_is_caught() {
        for seed in 1..=40 {
            let mut history = random_history(seed, 200, 3, 10);
            if let Err(e) = check(&history) {
                panic!("seed {seed}: {e}");
            }
            let key = corrupt(&mut history);
            let err = check(&history).expect_err("corrupted history must fail");
            assert_eq!(err.key, key, "seed {seed}: {err}");
            assert!(
                err.message.contains("not linearizable"),
                "seed {seed}: {err}"
            );
            assert!(err.message.contains("never-written"), "seed {seed}: {err}");
        }
    }

    #[test]
    fn long_single_key_histories_with_many_unknowns() {
        for seed in 1..=5 {
            let mut history = random_history(seed, 400, 1, 15);
            let unknown = history.iter().filter(|o| o.outcome == Outcome::Unknown);
            assert!(unknown.count() >= 40, "seed {seed}");
            if let Err(e) = check_with_limit(&history, 300_000) {
                panic!("seed {seed}: {e}");
            }
            corrupt(&mut history);
            let err = check_with_limit(&history, 300_000).expect_err("corrupted history must fail");
            assert!(
                err.message.contains("not linearizable"),
                "seed {seed}: {err}"
            );
        }
    }

    #[test]
    fn search_gives_up_at_the_state_cap() {
        let history = random_history(7, 60, 1, 10);
        assert!(check(&history).is_ok());
        let err = check_with_limit(&history, 10).expect_err("a tiny cap must give up");
        assert!(err.message.contains("gave up"), "{err}");
        assert!(!err.message.contains("not linearizable"), "{err}");
    }
}
