//! A client of the HTTP API that finds a server able to answer, follows
//! the `leader` hint of errors, and retries safely.
//!
//! Every write carries a client session (`x-client-id`, a random id per
//! [`Client`], and `x-request-seq`, increasing by one per write): a write
//! retried after a timeout or a lost connection is applied at most once,
//! and the retry gets the first answer. Writes of one `Client` are
//! therefore made one at a time (concurrent calls wait their turn); use a
//! `Client` per concurrent stream of writes.
//!
//! ```no_run
//! use raft_kv::client::Client;
//! use raft_node::driver::Consistency;
//!
//! # async fn example() -> Result<(), raft_kv::Error> {
//! let client = Client::new(["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"])?;
//! client.put("greeting", "hello").await?;
//! let value = client.get("greeting", Consistency::Linearizable).await?;
//! assert_eq!(value.as_deref(), Some(&b"hello"[..]));
//! let cas = client.cas("greeting", Some("hello"), Some("bye")).await?;
//! assert!(cas.swapped);
//! # Ok(())
//! # }
//! ```

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use bytes::Bytes;
use raft_node::driver::Consistency;
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::Error;
use crate::http::{
    CLIENT_ID_HEADER, ErrorBody, MembersRequest, REQUEST_SEQ_HEADER, TransferRequest,
};

/// The outcome of a compare-and-set.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct CasOutcome {
    /// Whether the comparison held and the value was set.
    pub swapped: bool,
    /// The key's value after the operation (`None`: absent).
    pub current: Option<String>,
}

/// The name of a consistency in the `consistency` query parameter.
pub fn consistency_name(c: Consistency) -> &'static str {
    match c {
        Consistency::Linearizable => "linearizable",
        Consistency::Lease => "lease",
        Consistency::Stale => "stale",
    }
}

/// Parses `linearizable`, `lease` or `stale`.
pub fn parse_consistency(name: &str) -> Option<Consistency> {
    match name {
        "linearizable" => Some(Consistency::Linearizable),
        "lease" => Some(Consistency::Lease),
        "stale" => Some(Consistency::Stale),
        _ => None,
    }
}

/// A request body.
enum Body {
    None,
    Raw(Bytes),
    Json(Value),
}

/// A client of a `raft-kv` cluster. See the [module documentation](self).
pub struct Client {
    servers: Vec<String>,
    http: reqwest::Client,
    client_id: u64,
    /// The last sequence number used; held for the whole of a write.
    seq: tokio::sync::Mutex<u64>,
    /// The server that answered last (tried first).
    preferred: std::sync::Mutex<Option<String>>,
    retry_for: Duration,
    request_timeout: Duration,
}

/// A random 64-bit id, from the standard library's randomly seeded hasher,
/// the time and the process id.
fn random_id() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    h.finish().max(1)
}

fn build_http(request_timeout: Duration) -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .timeout(request_timeout)
        .connect_timeout(Duration::from_secs(1).min(request_timeout))
        .build()
        .map_err(|e| Error::io("building the HTTP client", std::io::Error::other(e)))
}

/// What one attempt at a request came to.
enum Attempt {
    /// An answer to return (success, or an error that retrying won't fix).
    Done(StatusCode, Bytes),
    /// Try again, at the hinted leader when there is one.
    Retry {
        reason: String,
        leader: Option<String>,
    },
}

impl Client {
    /// A client of the servers at `servers` (`host:port` of their HTTP
    /// APIs), retrying for up to 15 s, each request timing out after 10 s.
    pub fn new<I, S>(servers: I) -> Result<Client, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let servers: Vec<String> = servers
            .into_iter()
            .map(Into::into)
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        if servers.is_empty() {
            return Err(Error::Config {
                field: "servers",
                problem: "no server given; list host:port of the HTTP APIs".into(),
            });
        }
        for s in &servers {
            if Url::parse(&format!("http://{s}/")).is_err() {
                return Err(Error::Config {
                    field: "servers",
                    problem: format!("`{s}` is not host:port"),
                });
            }
        }
        let request_timeout = Duration::from_secs(10);
        Ok(Client {
            servers,
            http: build_http(request_timeout)?,
            client_id: random_id(),
            seq: tokio::sync::Mutex::new(0),
            preferred: std::sync::Mutex::new(None),
            retry_for: Duration::from_secs(15),
            request_timeout,
        })
    }

    /// Parses a comma-separated list of servers.
    pub fn from_list(list: &str) -> Result<Client, Error> {
        Client::new(list.split(','))
    }

    /// Sets how long a call keeps retrying before it gives up.
    pub fn with_retry_for(mut self, retry_for: Duration) -> Self {
        self.retry_for = retry_for;
        self
    }

    /// Sets how long one HTTP request may take.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Result<Self, Error> {
        self.request_timeout = timeout;
        self.http = build_http(timeout)?;
        Ok(self)
    }

    /// This client's session id (`x-client-id`).
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// The servers, as given.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    /// Sets `key` to `value`; returns the log index of the write.
    pub async fn put(&self, key: &str, value: impl Into<Bytes>) -> Result<u64, Error> {
        let answer = self
            .write(Method::PUT, &["kv", key], Body::Raw(value.into()))
            .await?;
        Ok(answer["index"].as_u64().unwrap_or(0))
    }

    /// Removes `key`; returns whether it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, Error> {
        let answer = self.write(Method::DELETE, &["kv", key], Body::None).await?;
        Ok(answer["deleted"].as_bool().unwrap_or(false))
    }

    /// If `key` holds `expected` (`None`: absent), sets it to `value`
    /// (`None`: deletes it).
    pub async fn cas(
        &self,
        key: &str,
        expected: Option<&str>,
        value: Option<&str>,
    ) -> Result<CasOutcome, Error> {
        let body = Body::Json(json!({ "expected": expected, "value": value }));
        let answer = self.write(Method::POST, &["kv", key, "cas"], body).await?;
        serde_json::from_value(answer).map_err(|e| Error::Protocol {
            server: "cluster".into(),
            detail: format!("bad CAS answer: {e}"),
        })
    }

    /// The value of `key` (`None`: absent), read with `consistency`.
    pub async fn get(&self, key: &str, consistency: Consistency) -> Result<Option<Bytes>, Error> {
        let query = [("consistency", consistency_name(consistency))];
        let (status, body) = self
            .request(Method::GET, &["kv", key], &query, Body::None, None)
            .await?;
        match status {
            StatusCode::OK => Ok(Some(body)),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(server_error(status, &body)),
        }
    }

    /// The `/cluster` view of each server, in order (an error for a server
    /// that cannot be reached).
    pub async fn status(&self) -> Vec<(String, Result<Value, Error>)> {
        let mut out = Vec::new();
        for server in &self.servers {
            let answer = self
                .once(server, Method::GET, &["cluster"], &[], &Body::None, None)
                .await;
            let result = match answer {
                Ok((status, body)) if status.is_success() => {
                    serde_json::from_slice(&body).map_err(|e| Error::Protocol {
                        server: server.clone(),
                        detail: e.to_string(),
                    })
                }
                Ok((status, body)) => Err(server_error(status, &body)),
                Err(e) => Err(Error::Unavailable(format!("{server}: {e}"))),
            };
            out.push((server.clone(), result));
        }
        out
    }

    /// The `/cluster` view of the first server that answers.
    pub async fn cluster(&self) -> Result<Value, Error> {
        self.json_call(Method::GET, &["cluster"], Body::None).await
    }

    /// Adds a learner, promotes or removes a member (`POST
    /// /cluster/members`).
    pub async fn members(&self, request: &MembersRequest) -> Result<Value, Error> {
        let body = serde_json::to_value(request).unwrap_or(Value::Null);
        self.json_call(Method::POST, &["cluster", "members"], Body::Json(body))
            .await
    }

    /// Hands leadership over (`POST /cluster/transfer-leader`).
    pub async fn transfer_leader(&self, request: &TransferRequest) -> Result<Value, Error> {
        let body = serde_json::to_value(request).unwrap_or(Value::Null);
        self.json_call(
            Method::POST,
            &["cluster", "transfer-leader"],
            Body::Json(body),
        )
        .await
    }

    async fn json_call(&self, method: Method, path: &[&str], body: Body) -> Result<Value, Error> {
        let (status, body) = self.request(method, path, &[], body, None).await?;
        if !status.is_success() {
            return Err(server_error(status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| Error::Protocol {
            server: "cluster".into(),
            detail: e.to_string(),
        })
    }

    /// A write in this client's session: the next sequence number, kept
    /// across retries.
    async fn write(&self, method: Method, path: &[&str], body: Body) -> Result<Value, Error> {
        let mut seq = self.seq.lock().await;
        *seq += 1;
        let session = (self.client_id, *seq);
        let (status, body) = self.request(method, path, &[], body, Some(session)).await?;
        if !status.is_success() {
            return Err(server_error(status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| Error::Protocol {
            server: "cluster".into(),
            detail: e.to_string(),
        })
    }

    /// Sends a request until a server gives an answer that retrying won't
    /// change, or the retry time runs out.
    async fn request(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, &str)],
        body: Body,
        session: Option<(u64, u64)>,
    ) -> Result<(StatusCode, Bytes), Error> {
        let deadline = Instant::now() + self.retry_for;
        let preferred = self
            .preferred
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut next = 0usize;
        let mut target = preferred.unwrap_or_else(|| self.servers[0].clone());
        let mut failures_in_a_row = 0u32;
        loop {
            let attempt = match self
                .once(&target, method.clone(), path, query, &body, session)
                .await
            {
                Err(e) => Attempt::Retry {
                    reason: format!("{target}: {e}"),
                    leader: None,
                },
                Ok((status, bytes)) => classify(&target, status, bytes),
            };
            match attempt {
                Attempt::Done(status, bytes) => {
                    *self.preferred.lock().unwrap_or_else(|e| e.into_inner()) = Some(target);
                    return Ok((status, bytes));
                }
                Attempt::Retry { reason, leader } => {
                    tracing::debug!(%reason, ?leader, "retrying");
                    if Instant::now() >= deadline {
                        return Err(Error::Unavailable(reason));
                    }
                    match leader.filter(|l| *l != target) {
                        Some(leader) => target = leader,
                        None => {
                            failures_in_a_row += 1;
                            // Go round the servers; wait a little after each
                            // full round.
                            let n = self.servers.len();
                            let from = self
                                .servers
                                .iter()
                                .position(|s| *s == target)
                                .unwrap_or(next);
                            next = (from + 1) % n;
                            target = self.servers[next].clone();
                            if (failures_in_a_row as usize).is_multiple_of(self.servers.len()) {
                                let pause = Duration::from_millis(
                                    (50u64
                                        << (failures_in_a_row / self.servers.len() as u32).min(4))
                                    .min(500),
                                );
                                tokio::time::sleep(
                                    pause.min(deadline.saturating_duration_since(Instant::now())),
                                )
                                .await;
                            }
                        }
                    }
                }
            }
        }
    }

    /// One HTTP request to `server`.
    async fn once(
        &self,
        server: &str,
        method: Method,
        path: &[&str],
        query: &[(&str, &str)],
        body: &Body,
        session: Option<(u64, u64)>,
    ) -> Result<(StatusCode, Bytes), reqwest::Error> {
        let mut url = match Url::parse(&format!("http://{server}/")) {
            Ok(url) => url,
            // A hint that is not an address: fall back to the first server.
            Err(_) => Url::parse(&format!("http://{}/", self.servers[0]))
                .unwrap_or_else(|_| Url::parse("http://127.0.0.1/").expect("a valid URL")),
        };
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.clear().extend(path);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut request = self.http.request(method, url);
        if let Some((client, seq)) = session {
            request = request
                .header(CLIENT_ID_HEADER, client.to_string())
                .header(REQUEST_SEQ_HEADER, seq.to_string());
        }
        request = match body {
            Body::None => request,
            Body::Raw(bytes) => request.body(bytes.clone()),
            Body::Json(value) => request.json(value),
        };
        let response = request.send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        Ok((status, bytes))
    }
}

/// Whether an answer is final, or worth retrying (and where).
fn classify(server: &str, status: StatusCode, body: Bytes) -> Attempt {
    match status {
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => {
            let parsed: Option<ErrorBody> = serde_json::from_slice(&body).ok();
            let (reason, leader) = match parsed {
                Some(e) => (e.error, e.leader),
                None => (String::from_utf8_lossy(&body).into_owned(), None),
            };
            Attempt::Retry {
                reason: format!("{server}: {} {reason}", status.as_u16()),
                leader,
            }
        }
        _ => Attempt::Done(status, body),
    }
}

/// The error of a final non-success answer.
fn server_error(status: StatusCode, body: &[u8]) -> Error {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let (message, leader) = match parsed {
        Some(e) => (e.error, e.leader),
        None => (String::from_utf8_lossy(body).into_owned(), None),
    };
    Error::Server {
        status: status.as_u16(),
        message,
        leader,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_checked() {
        assert!(Client::from_list("").is_err());
        assert!(Client::from_list(" , ").is_err());
        assert!(Client::from_list("bad host:1").is_err());
        let c = Client::from_list("127.0.0.1:8001, 127.0.0.1:8002").unwrap();
        assert_eq!(c.servers(), ["127.0.0.1:8001", "127.0.0.1:8002"]);
        let d = Client::from_list("127.0.0.1:8001").unwrap();
        assert_ne!(c.client_id(), d.client_id());
    }

    #[test]
    fn consistency_names_round_trip() {
        for c in [
            Consistency::Linearizable,
            Consistency::Lease,
            Consistency::Stale,
        ] {
            assert_eq!(parse_consistency(consistency_name(c)), Some(c));
        }
        assert_eq!(parse_consistency("strict"), None);
    }

    #[test]
    fn unavailable_answers_are_retried_at_the_hinted_leader() {
        let body = Bytes::from(r#"{"error":"no leader","leader":"127.0.0.1:9"}"#);
        match classify("a:1", StatusCode::SERVICE_UNAVAILABLE, body) {
            Attempt::Retry { leader, .. } => assert_eq!(leader.as_deref(), Some("127.0.0.1:9")),
            Attempt::Done(..) => panic!("a 503 is retried"),
        }
        assert!(matches!(
            classify("a:1", StatusCode::GATEWAY_TIMEOUT, Bytes::from("?")),
            Attempt::Retry { leader: None, .. }
        ));
        assert!(matches!(
            classify("a:1", StatusCode::BAD_REQUEST, Bytes::new()),
            Attempt::Done(StatusCode::BAD_REQUEST, _)
        ));
        let e = server_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            br#"{"error":"big","leader":null}"#,
        );
        assert!(
            matches!(e, Error::Server { status: 413, ref message, leader: None } if message == "big")
        );
    }
}
