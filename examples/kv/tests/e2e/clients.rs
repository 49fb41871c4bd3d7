//! Clients that run put/get/cas/delete on a few keys against random nodes
//! and record every operation, with its invocation and completion times and
//! outcome, in the history format of the linearizability checker.
//!
//! Outcomes: an answer is `Ok`; an error that proves the operation was not
//! applied (the request never reached a server, a 400/413, or a server
//! error saying "not applied") is `Failed`; anything else (timeouts, 503s,
//! 504s, dropped connections) is `Unknown`: the write may have been applied,
//! now or later.

use std::collections::BTreeMap;
use std::time::Duration;

use raft_api::testkit::lin::{KvOp, KvResult, Operation, Outcome};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;

use super::rng::Rng;

/// Microseconds since the start of the run: the time base of the history.
pub(crate) fn now_us() -> u64 {
    super::since_start().as_micros() as u64
}

/// What a client needs to talk to the cluster.
#[derive(Clone)]
pub(crate) struct Target {
    /// Base URLs of the nodes, such as `http://127.0.0.1:8001`.
    pub(crate) urls: Vec<String>,
    /// `consistency` of the GETs: `linearizable` or `lease`.
    pub(crate) consistency: String,
    /// HTTP client (with its request timeout).
    pub(crate) http: reqwest::Client,
}

impl Target {
    /// A target with a client whose requests time out after `timeout`.
    pub(crate) fn new(urls: Vec<String>, consistency: &str, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .expect("an HTTP client with default settings");
        Target {
            urls,
            consistency: consistency.to_string(),
            http,
        }
    }
}

/// Counts of answers that a correct server never gives to these requests.
#[derive(Clone, Debug, Default)]
pub(crate) struct Anomalies {
    /// Descriptions of the first few.
    pub(crate) examples: Vec<String>,
    /// How many.
    pub(crate) count: u64,
}

impl Anomalies {
    fn note(&mut self, what: String) {
        self.count += 1;
        if self.examples.len() < 5 {
            self.examples.push(what);
        }
    }
}

/// One operation's outcome and, for reads and compare-and-sets, the value
/// seen (`Some(None)`: absent).
pub(crate) struct Executed {
    /// How it ended.
    pub(crate) outcome: Outcome,
    /// The key's value as observed, when the answer tells.
    pub(crate) observed: Option<Option<Vec<u8>>>,
}

#[derive(Deserialize)]
struct CasAnswer {
    swapped: bool,
    current: Option<String>,
}

#[derive(Deserialize)]
struct DeleteAnswer {
    deleted: bool,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: String,
}

/// Server messages that say the operation was definitely not applied.
const NOT_APPLIED: [&str; 3] = ["not applied", "never applied", "not proposed"];

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

/// Sends `op` to `url` once and classifies the answer.
pub(crate) async fn execute(
    target: &Target,
    url: &str,
    op: &KvOp,
    anomalies: &mut Anomalies,
) -> Executed {
    let http = &target.http;
    let request = match op {
        KvOp::Put { key, value } => http
            .put(format!("{url}/kv/{}", text(key)))
            .body(value.clone()),
        KvOp::Get { key } => http.get(format!(
            "{url}/kv/{}?consistency={}",
            text(key),
            target.consistency
        )),
        KvOp::Delete { key } => http.delete(format!("{url}/kv/{}", text(key))),
        KvOp::Cas { key, expected, new } => http
            .post(format!("{url}/kv/{}/cas", text(key)))
            .json(&json!({"expected": expected.as_deref().map(text), "value": text(new)})),
    };
    let unknown = Executed {
        outcome: Outcome::Unknown,
        observed: None,
    };
    let failed = Executed {
        outcome: Outcome::Failed,
        observed: None,
    };
    let response = match request.send().await {
        Ok(r) => r,
        // Never reached a server: not applied.
        Err(e) if e.is_connect() => return failed,
        Err(_) => return unknown,
    };
    let status = response.status().as_u16();
    let Ok(body) = response.bytes().await else {
        return unknown;
    };
    let ok = |result| Executed {
        outcome: Outcome::Ok(result),
        observed: None,
    };
    match (op, status) {
        (KvOp::Put { .. }, 200) => ok(KvResult::Done),
        (KvOp::Get { .. }, 200) => Executed {
            outcome: Outcome::Ok(KvResult::Value(Some(body.to_vec()))),
            observed: Some(Some(body.to_vec())),
        },
        (KvOp::Get { .. }, 404) => Executed {
            outcome: Outcome::Ok(KvResult::Value(None)),
            observed: Some(None),
        },
        (KvOp::Delete { .. }, 200) => match serde_json::from_slice::<DeleteAnswer>(&body) {
            Ok(a) => ok(KvResult::Deleted(a.deleted)),
            Err(e) => {
                anomalies.note(format!("DELETE answer {:?}: {e}", text(&body)));
                unknown
            }
        },
        (KvOp::Cas { .. }, 200) => match serde_json::from_slice::<CasAnswer>(&body) {
            Ok(a) => Executed {
                outcome: Outcome::Ok(KvResult::Cas(a.swapped)),
                observed: Some(a.current.map(String::into_bytes)),
            },
            Err(e) => {
                anomalies.note(format!("CAS answer {:?}: {e}", text(&body)));
                unknown
            }
        },
        (_, 400 | 413) => {
            anomalies.note(format!("{op:?} refused with {status}: {}", text(&body)));
            failed
        }
        _ => {
            let message = serde_json::from_slice::<ErrorAnswer>(&body)
                .map(|e| e.error)
                .unwrap_or_default();
            if status == 500 {
                // Faults explain 503s and 504s, never an internal error.
                anomalies.note(format!("{op:?} failed with 500: {message}"));
            }
            if NOT_APPLIED.iter().any(|m| message.contains(m)) {
                failed
            } else {
                unknown
            }
        }
    }
}

/// Tallies of a history.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Tally {
    /// Operations.
    pub(crate) ops: u64,
    /// Answered.
    pub(crate) ok: u64,
    /// Definitely not applied.
    pub(crate) failed: u64,
    /// Outcome unknown.
    pub(crate) unknown: u64,
}

impl Tally {
    /// Counts the outcomes of `history`.
    pub(crate) fn of(history: &[Operation]) -> Self {
        let mut t = Tally::default();
        for o in history {
            t.ops += 1;
            match o.outcome {
                Outcome::Ok(_) => t.ok += 1,
                Outcome::Failed => t.failed += 1,
                Outcome::Unknown => t.unknown += 1,
            }
        }
        t
    }
}

/// One recording client.
pub(crate) struct Client {
    /// Client id (distinct per client; also makes its values unique).
    pub(crate) id: u64,
    /// Where it sends requests.
    pub(crate) target: Target,
    /// Keys it works on.
    pub(crate) keys: Vec<String>,
    /// Its random choices.
    pub(crate) rng: Rng,
    /// Operations recorded so far.
    pub(crate) history: Vec<Operation>,
    /// Unexpected answers seen.
    pub(crate) anomalies: Anomalies,
    /// Last value it saw per key (`None`: absent).
    seen: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    seq: u64,
}

impl Client {
    /// A client with an empty history.
    pub(crate) fn new(id: u64, target: Target, keys: Vec<String>, rng: Rng) -> Self {
        Client {
            id,
            target,
            keys,
            rng,
            history: Vec::new(),
            anomalies: Anomalies::default(),
            seen: BTreeMap::new(),
            seq: 0,
        }
    }

    /// A value no other write of the run uses.
    fn unique_value(&mut self) -> Vec<u8> {
        self.seq += 1;
        format!("c{}-{}", self.id, self.seq).into_bytes()
    }

    /// A random operation on a random key.
    fn next_op(&mut self) -> KvOp {
        let key = self.rng.pick(&self.keys).clone().into_bytes();
        match self.rng.below(100) {
            0..45 => KvOp::Get { key },
            45..75 => KvOp::Put {
                value: self.unique_value(),
                key,
            },
            75..95 => {
                let expected = self.seen.get(&key).cloned().flatten();
                KvOp::Cas {
                    expected,
                    new: self.unique_value(),
                    key,
                }
            }
            _ => KvOp::Delete { key },
        }
    }

    /// Runs `op` on `url` and records it.
    pub(crate) async fn record(&mut self, url: &str, op: KvOp) -> Outcome {
        let invoke = now_us();
        let done = execute(&self.target, url, &op, &mut self.anomalies).await;
        let complete = now_us();
        let key = match &op {
            KvOp::Put { key, .. }
            | KvOp::Get { key }
            | KvOp::Delete { key }
            | KvOp::Cas { key, .. } => key.clone(),
        };
        if let Some(value) = done.observed {
            self.seen.insert(key, value);
        } else if let (KvOp::Put { value, .. }, Outcome::Ok(_)) = (&op, &done.outcome) {
            self.seen.insert(key, Some(value.clone()));
        }
        self.history.push(Operation {
            client: self.id,
            op,
            invoke,
            complete,
            outcome: done.outcome.clone(),
        });
        done.outcome
    }

    /// Runs random operations against random nodes until `stop` turns
    /// true. An operation in flight is finished (each is bounded by the
    /// request timeout), so the history holds every operation sent.
    pub(crate) async fn run(mut self, stop: watch::Receiver<bool>) -> Self {
        while !*stop.borrow() {
            let url = self.rng.pick(&self.target.urls).clone();
            let op = self.next_op();
            let outcome = self.record(&url, op).await;
            if !matches!(outcome, Outcome::Ok(_)) {
                // Do not hammer a node that is down or partitioned.
                let pause = self.rng.between(5, 30);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }
        self
    }

    /// Puts a unique value on `key` through random nodes until one is
    /// acknowledged or `timeout` passes; records every attempt. Returns
    /// whether one was acknowledged.
    pub(crate) async fn put_until_acknowledged(&mut self, key: &str, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            let url = self.rng.pick(&self.target.urls).clone();
            let op = KvOp::Put {
                key: key.as_bytes().to_vec(),
                value: self.unique_value(),
            };
            if matches!(self.record(&url, op).await, Outcome::Ok(_)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}
