//! The HTTP API: routes, handlers, and the mapping of raft-node errors to
//! statuses.
//!
//! | route | answer |
//! |---|---|
//! | `PUT /kv/{key}` (body: the value) | `{"index": n}` once applied |
//! | `GET /kv/{key}?consistency=linearizable\|lease\|stale` | the value bytes; 404 when absent |
//! | `DELETE /kv/{key}` | `{"deleted": bool}` |
//! | `POST /kv/{key}/cas` `{"expected", "value"}` | `{"swapped": bool, "current": ..}` |
//! | `GET /cluster` | roles, leaders, terms, indexes, members per partition |
//! | `POST /cluster/members` `{"partition", "action", "id", "address", "http_address"}` | `{"partitions": [..]}` |
//! | `POST /cluster/transfer-leader` `{"partition", "to"}` | `{"partitions": [{"partition", "to"}]}` |
//! | `POST /cluster/peers` `{"id", "address", "http_address"}` | teaches this node a peer's addresses |
//! | `GET /metrics` | Prometheus text |
//! | `GET /health` | `{"status": "ok", "node": id}` |
//!
//! Every error is JSON `{"error": "...", "leader": "http address"|null}`:
//! 400 malformed input (key, JSON, query, headers), 404 key absent (GET),
//! 413 value or body over `max_value_bytes`, 503 no leader, not reachable
//! or busy (retry, following `leader` when given), 504 timed out (the
//! outcome of a write is unknown: retry it in the same client session).
//! Writes with `x-client-id` and `x-request-seq` apply at most once
//! however often they are retried. Bodies are read up to their limit and
//! no further.
//!
//! Membership changes and leader transfers are carried out by the
//! partition's leader: a node that does not lead forwards the request to
//! the leader's HTTP address (once; a forwarded request is not forwarded
//! again).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use raft_api::{GroupId, NodeId, Transport};
use raft_node::backends::AnyTransport;
use raft_node::driver::{Consistency, Node};
use raft_node::session::Session;
use raft_node::{
    AdminError, ChangeError, MembershipChange, ProposeError, ReadError, TransferError,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::machine::{Command, KvMachine, Response as KvResponse};
use crate::metrics::{HttpMetrics, role_name};
use crate::partition_of;

/// Longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 4096;
/// Body limit of requests other than PUT and CAS.
const ADMIN_BODY_LIMIT: usize = 64 * 1024;
/// Header naming the client of a session.
pub const CLIENT_ID_HEADER: &str = "x-client-id";
/// Header with the sequence number of a write in its session.
pub const REQUEST_SEQ_HEADER: &str = "x-request-seq";
/// Header marking an administrative request forwarded by another node.
const FORWARDED_HEADER: &str = "x-raft-kv-forwarded";

/// What the handlers share.
pub struct AppState {
    /// The Raft node.
    pub node: Node<KvMachine>,
    /// The transport the node uses (shared, to add peers and read counters).
    pub transport: Arc<AnyTransport>,
    /// Number of partitions.
    pub partitions: u64,
    /// Largest value accepted.
    pub max_value_bytes: usize,
    /// HTTP addresses of the nodes, this one included.
    pub http_peers: RwLock<BTreeMap<NodeId, String>>,
    /// Counters for `/metrics`.
    pub metrics: HttpMetrics,
    /// For forwarding administrative requests to a leader.
    pub forwarder: reqwest::Client,
}

impl AppState {
    /// The HTTP address of `leader`, if known.
    fn http_of(&self, leader: Option<NodeId>) -> Option<String> {
        let peers = self.http_peers.read().unwrap_or_else(|e| e.into_inner());
        leader.and_then(|id| peers.get(&id).cloned())
    }

    fn group_of(&self, key: &[u8]) -> GroupId {
        GroupId(partition_of(key, self.partitions))
    }

    /// An error naming the leader of `group` (the given one, else the
    /// one this node knows).
    fn unavailable(&self, group: GroupId, leader: Option<NodeId>, message: String) -> ApiError {
        let leader = leader.or_else(|| self.node.leader(group));
        let leader = self.http_of(leader.filter(|&l| l != self.node.id()));
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message).with_leader(leader)
    }

    fn propose_error(&self, group: GroupId, e: ProposeError) -> ApiError {
        let message = e.to_string();
        match e {
            // Refused before it was proposed: say so, so a client knows a
            // retry cannot apply it twice.
            ProposeError::NotLeader { leader } => {
                self.unavailable(group, leader, format!("{message}; not applied"))
            }
            ProposeError::Busy | ProposeError::TransferInProgress { .. } => {
                self.unavailable(group, None, format!("{message}; not applied"))
            }
            ProposeError::Timeout | ProposeError::Unknown => {
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, message)
            }
            ProposeError::Stale => ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "{REQUEST_SEQ_HEADER} is lower than one this client already used: {message}"
                ),
            ),
            ProposeError::Malformed => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message),
            _ => self.unavailable(group, None, message),
        }
    }

    fn read_error(&self, group: GroupId, e: ReadError) -> ApiError {
        let message = e.to_string();
        match e {
            ReadError::NotLeader { leader } => self.unavailable(group, leader, message),
            ReadError::Timeout => ApiError::new(StatusCode::GATEWAY_TIMEOUT, message),
            _ => self.unavailable(group, None, message),
        }
    }

    fn admin_error(&self, group: GroupId, e: AdminError) -> ApiError {
        let message = e.to_string();
        let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
        match e {
            AdminError::Change(ChangeError::NotLeader { leader })
            | AdminError::Transfer(TransferError::NotLeader { leader }) => {
                self.unavailable(group, leader, message)
            }
            AdminError::Change(
                ChangeError::AlreadyMember(_)
                | ChangeError::NotMember(_)
                | ChangeError::NotLearner(_)
                | ChangeError::Invalid(_),
            )
            | AdminError::Transfer(TransferError::NotVoter(_) | TransferError::NoTarget)
            | AdminError::UnknownGroup(_) => bad(message),
            _ => self.unavailable(group, None, message),
        }
    }
}

/// An error answer: a status and the JSON `{"error", "leader"}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong.
    pub message: String,
    /// The leader's HTTP address, when known and useful.
    pub leader: Option<String>,
}

impl ApiError {
    /// An error with no leader hint.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            leader: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn with_leader(mut self, leader: Option<String>) -> Self {
        self.leader = leader;
        self
    }
}

/// The JSON body of every error.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
    /// The leader's HTTP address, when known.
    pub leader: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
            leader: self.leader,
        };
        (self.status, axum::Json(body)).into_response()
    }
}

/// Rejections of axum's extractors: 413 stays 413 (body over the limit),
/// anything else is malformed input (400).
macro_rules! from_rejection {
    ($($ty:ty),*) => {$(
        impl From<$ty> for ApiError {
            fn from(r: $ty) -> Self {
                let status = if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    StatusCode::PAYLOAD_TOO_LARGE
                } else {
                    StatusCode::BAD_REQUEST
                };
                ApiError::new(status, r.body_text())
            }
        }
    )*};
}
from_rejection!(BytesRejection, PathRejection, QueryRejection);

type ApiResult<T> = Result<T, ApiError>;

/// The routes, with body limits set from `max_value_bytes`.
pub fn router(state: Arc<AppState>) -> Router {
    let max = state.max_value_bytes;
    // A CAS body holds two values as JSON strings; escapes may make them
    // longer than the values, which are checked against the limit after
    // parsing.
    let cas_limit = max.saturating_mul(2).saturating_add(ADMIN_BODY_LIMIT);
    Router::new()
        .route(
            "/kv/{key}",
            put(put_kv)
                .get(get_kv)
                .delete(delete_kv)
                .layer(DefaultBodyLimit::max(max)),
        )
        .route(
            "/kv/{key}/cas",
            post(cas_kv).layer(DefaultBodyLimit::max(cas_limit)),
        )
        .route("/cluster", get(cluster))
        .route("/cluster/members", post(members))
        .route("/cluster/transfer-leader", post(transfer_leader))
        .route("/cluster/peers", post(add_peer))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(ADMIN_BODY_LIMIT))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_responses,
        ))
        .with_state(state)
}

async fn count_responses(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    state.metrics.response(response.status().as_u16());
    response
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// The key from the path, checked.
fn key_of(path: Result<Path<String>, PathRejection>) -> ApiResult<Bytes> {
    let Path(key) = path?;
    if key.is_empty() {
        return Err(ApiError::bad_request("the key is empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(ApiError::bad_request(format!(
            "the key is {} bytes long; at most {MAX_KEY_BYTES} are allowed",
            key.len()
        )));
    }
    Ok(Bytes::from(key))
}

/// The client session of a write, from `x-client-id` and `x-request-seq`.
fn session_of(headers: &HeaderMap) -> ApiResult<Option<Session>> {
    let number = |name: &str| -> ApiResult<Option<u64>> {
        let Some(value) = headers.get(name) else {
            return Ok(None);
        };
        value
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(format!("{name} must be an unsigned 64-bit integer"))
            })
    };
    match (number(CLIENT_ID_HEADER)?, number(REQUEST_SEQ_HEADER)?) {
        (None, None) => Ok(None),
        (Some(client), Some(seq)) => Ok(Some(Session::new(client, seq))),
        _ => Err(ApiError::bad_request(format!(
            "{CLIENT_ID_HEADER} and {REQUEST_SEQ_HEADER} must be given together"
        ))),
    }
}

fn check_value(state: &AppState, what: &str, len: usize) -> ApiResult<()> {
    if len > state.max_value_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the {what} is {len} bytes; at most {} are allowed",
                state.max_value_bytes
            ),
        ));
    }
    Ok(())
}

/// Proposes a write and returns the machine's response.
async fn write(
    state: &AppState,
    op: &'static str,
    session: Option<Session>,
    command: Command,
) -> ApiResult<KvResponse> {
    let group = state.group_of(command.key());
    let bytes = command.encode();
    let result = match session {
        Some(session) => state.node.propose_in_session(group, session, bytes).await,
        None => state.node.propose(group, bytes).await,
    };
    let outcome = result
        .map_err(|e| state.propose_error(group, e))
        .and_then(|reply| match KvResponse::decode(&reply) {
            Ok(KvResponse::Error(e)) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e)),
            Ok(response) => Ok(response),
            Err(e) => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                e.to_string(),
            )),
        });
    match &outcome {
        Ok(_) => state.metrics.write(op, "ok"),
        Err(e) => state.metrics.write(op, e.status.as_u16().to_string()),
    }
    outcome
}

fn unexpected(response: KvResponse) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("unexpected state machine response {response:?}"),
    )
}

async fn put_kv(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<axum::Json<Value>> {
    let key = key_of(path)?;
    let session = session_of(&headers)?;
    let value = body?;
    check_value(&state, "value", value.len())?;
    match write(&state, "put", session, Command::Put { key, value }).await? {
        KvResponse::Put { index } => Ok(axum::Json(json!({ "index": index }))),
        other => Err(unexpected(other)),
    }
}

async fn delete_kv(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<axum::Json<Value>> {
    let key = key_of(path)?;
    let session = session_of(&headers)?;
    match write(&state, "delete", session, Command::Delete { key }).await? {
        KvResponse::Delete { deleted } => Ok(axum::Json(json!({ "deleted": deleted }))),
        other => Err(unexpected(other)),
    }
}

/// The body of `POST /kv/{key}/cas`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CasRequest {
    /// The value the key must have; `null` (or missing): absent.
    #[serde(default)]
    expected: Option<String>,
    /// The value to set; `null` (or missing): delete.
    #[serde(default)]
    value: Option<String>,
}

fn parse_json<T: serde::de::DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> ApiResult<T> {
    let body = body?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

async fn cas_kv(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<axum::Json<Value>> {
    let key = key_of(path)?;
    let session = session_of(&headers)?;
    let request: CasRequest = parse_json(body)?;
    for (what, value) in [
        ("expected value", &request.expected),
        ("value", &request.value),
    ] {
        check_value(&state, what, value.as_ref().map_or(0, String::len))?;
    }
    let command = Command::Cas {
        key,
        expected: request.expected.map(Bytes::from),
        value: request.value.map(Bytes::from),
    };
    match write(&state, "cas", session, command).await? {
        KvResponse::Cas { swapped, current } => {
            let current = current.map(|v| String::from_utf8_lossy(&v).into_owned());
            Ok(axum::Json(
                json!({ "swapped": swapped, "current": current }),
            ))
        }
        other => Err(unexpected(other)),
    }
}

/// The query of `GET /kv/{key}`.
#[derive(Debug, Deserialize)]
struct ReadQuery {
    consistency: Option<String>,
}

fn consistency_of(name: Option<&str>) -> ApiResult<(Consistency, &'static str)> {
    match name.unwrap_or("linearizable") {
        "linearizable" => Ok((Consistency::Linearizable, "linearizable")),
        "lease" => Ok((Consistency::Lease, "lease")),
        "stale" => Ok((Consistency::Stale, "stale")),
        other => Err(ApiError::bad_request(format!(
            "unknown consistency `{other}`; expected linearizable, lease or stale"
        ))),
    }
}

async fn get_kv(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ReadQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let key = key_of(path)?;
    let Query(query) = query?;
    let (consistency, name) = consistency_of(query.consistency.as_deref())?;
    // A deliberately broken build for the end-to-end tests to catch: every
    // read served from the local state machine, without ReadIndex.
    #[cfg(feature = "__broken_local_reads")]
    let consistency = {
        let _asked = consistency;
        Consistency::Stale
    };
    let group = state.group_of(&key);
    let result = state
        .node
        .read_with(group, consistency, move |sm: &KvMachine| sm.get(&key))
        .await
        .map_err(|e| state.read_error(group, e));
    match &result {
        Ok(_) => state.metrics.read(name, "ok"),
        Err(e) => state.metrics.read(name, e.status.as_u16().to_string()),
    }
    match result? {
        Some(value) => Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            )],
            value,
        )
            .into_response()),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "key not found")),
    }
}

async fn health(State(state): State<Arc<AppState>>) -> axum::Json<Value> {
    axum::Json(json!({ "status": "ok", "node": state.node.id().0 }))
}

async fn cluster(State(state): State<Arc<AppState>>) -> ApiResult<axum::Json<Value>> {
    let metrics = state
        .node
        .metrics()
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let me = state.node.id();
    let partitions: Vec<Value> = metrics
        .groups
        .iter()
        .map(|(group, m)| {
            let learner = m.membership.learners.contains(&me);
            json!({
                "partition": group.0,
                "role": role_name(m.role, learner),
                "leader": m.leader.map(|l| l.0),
                "leader_http": state.http_of(m.leader),
                "term": m.term.0,
                "commit": m.commit.0,
                "applied": m.applied.0,
                "voters": m.membership.voters.iter().map(|v| v.0).collect::<Vec<_>>(),
                "learners": m.membership.learners.iter().map(|v| v.0).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(axum::Json(json!({
        "node": me.0,
        "http": state.http_of(Some(me)),
        "partitions": partitions,
    })))
}

async fn metrics(State(state): State<Arc<AppState>>) -> ApiResult<Response> {
    let metrics = state
        .node
        .metrics()
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let text = crate::metrics::render(
        state.node.id().0,
        &metrics,
        &state.transport,
        &state.metrics,
    );
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        text,
    )
        .into_response())
}

/// The body of `POST /cluster/members`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MembersRequest {
    /// The partition; `null` for every partition.
    #[serde(default)]
    pub partition: Option<u64>,
    /// `add_learner`, `promote` or `remove`.
    pub action: String,
    /// The node.
    pub id: u64,
    /// Its Raft address (required for `add_learner`).
    #[serde(default)]
    pub address: Option<String>,
    /// Its HTTP address (optional, for leader hints).
    #[serde(default)]
    pub http_address: Option<String>,
}

/// The body of `POST /cluster/transfer-leader`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// The partition; `null` for every partition.
    #[serde(default)]
    pub partition: Option<u64>,
    /// The node to hand leadership to; `null` for the most caught-up voter.
    #[serde(default)]
    pub to: Option<u64>,
}

/// The body of `POST /cluster/peers`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PeerRequest {
    /// The node.
    pub id: u64,
    /// Its Raft address.
    pub address: String,
    /// Its HTTP address.
    #[serde(default)]
    pub http_address: Option<String>,
}

fn partitions_of(state: &AppState, partition: Option<u64>) -> ApiResult<Vec<GroupId>> {
    match partition {
        None => Ok((0..state.partitions).map(GroupId).collect()),
        Some(p) if p < state.partitions => Ok(vec![GroupId(p)]),
        Some(p) => Err(ApiError::bad_request(format!(
            "partition {p} does not exist; there are {}",
            state.partitions
        ))),
    }
}

fn check_address(field: &str, address: &str) -> ApiResult<()> {
    let ok = address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{field} `{address}` is not host:port"
        )))
    }
}

/// Runs `local` for `group` on this node when it leads the group (or the
/// request was already forwarded here); otherwise forwards `body` (with
/// the partition set) to the leader's HTTP address.
async fn on_leader<F, Fut>(
    state: &AppState,
    group: GroupId,
    forwarded: bool,
    path: &str,
    mut body: Value,
    local: F,
) -> ApiResult<Value>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ApiResult<Value>>,
{
    let leader = state.node.leader(group).filter(|&l| l != state.node.id());
    let address = match (
        state.node.is_leader(group) || forwarded,
        state.http_of(leader),
    ) {
        (false, Some(address)) => address,
        _ => return local().await,
    };
    body["partition"] = json!(group.0);
    let url = format!("http://{address}{path}");
    let answer = state
        .forwarder
        .post(&url)
        .header(FORWARDED_HEADER, "1")
        .json(&body)
        .send()
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the leader of partition {} at {address} is not reachable: {e}",
                    group.0
                ),
            )
            .with_leader(Some(address.clone()))
        })?;
    let status = answer.status();
    let value: Value = answer.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(value);
    }
    let message = value["error"]
        .as_str()
        .unwrap_or("the leader refused the request")
        .to_owned();
    let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    Err(ApiError::new(status, message).with_leader(value["leader"].as_str().map(str::to_owned)))
}

fn learn_peer(state: &AppState, id: NodeId, address: &str, http_address: Option<&str>) {
    if id != state.node.id() {
        state.transport.add_peer(id, address.to_owned());
    }
    if let Some(http) = http_address {
        let mut peers = state.http_peers.write().unwrap_or_else(|e| e.into_inner());
        peers.insert(id, http.to_owned());
    }
}

async fn add_peer(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<axum::Json<Value>> {
    let request: PeerRequest = parse_json(body)?;
    if request.id == 0 {
        return Err(ApiError::bad_request("node ids start at 1"));
    }
    check_address("address", &request.address)?;
    if let Some(http) = &request.http_address {
        check_address("http_address", http)?;
    }
    learn_peer(
        &state,
        NodeId(request.id),
        &request.address,
        request.http_address.as_deref(),
    );
    Ok(axum::Json(json!({ "id": request.id })))
}

async fn members(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<axum::Json<Value>> {
    let forwarded = headers.contains_key(FORWARDED_HEADER);
    let request: MembersRequest = parse_json(body)?;
    if request.id == 0 {
        return Err(ApiError::bad_request("node ids start at 1"));
    }
    let id = NodeId(request.id);
    let groups = partitions_of(&state, request.partition)?;
    let change = match request.action.as_str() {
        "add_learner" => {
            let Some(address) = &request.address else {
                return Err(ApiError::bad_request(
                    "add_learner needs the node's Raft `address`",
                ));
            };
            check_address("address", address)?;
            if let Some(http) = &request.http_address {
                check_address("http_address", http)?;
            }
            learn_peer(&state, id, address, request.http_address.as_deref());
            if !forwarded {
                tell_peers(&state, &request).await;
            }
            MembershipChange::AddLearner(id)
        }
        "promote" => MembershipChange::Promote(id),
        "remove" => MembershipChange::Remove(id),
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown action `{other}`; expected add_learner, promote or remove"
            )));
        }
    };
    let mut done = Vec::new();
    for group in groups {
        let body = serde_json::to_value(&request).unwrap_or(Value::Null);
        let change = change.clone();
        let state_ref = &state;
        on_leader(
            &state,
            group,
            forwarded,
            "/cluster/members",
            body,
            || async move {
                state_ref
                    .node
                    .change_membership(group, change)
                    .await
                    .map_err(|e| state_ref.admin_error(group, e))?;
                Ok(Value::Null)
            },
        )
        .await?;
        done.push(group.0);
    }
    Ok(axum::Json(json!({ "partitions": done })))
}

/// Teaches every other known node the new peer's addresses (best effort:
/// a node that misses it learns nothing until told again).
async fn tell_peers(state: &AppState, request: &MembersRequest) {
    let Some(address) = &request.address else {
        return;
    };
    let targets: Vec<(NodeId, String)> = {
        let peers = state.http_peers.read().unwrap_or_else(|e| e.into_inner());
        peers
            .iter()
            .filter(|(id, _)| **id != state.node.id() && id.0 != request.id)
            .map(|(id, a)| (*id, a.clone()))
            .collect()
    };
    let body = PeerRequest {
        id: request.id,
        address: address.clone(),
        http_address: request.http_address.clone(),
    };
    for (peer, http) in targets {
        let url = format!("http://{http}/cluster/peers");
        if let Err(e) = state.forwarder.post(&url).json(&body).send().await {
            tracing::warn!(peer = peer.0, error = %e, "could not tell a node about a new peer");
        }
    }
}

async fn transfer_leader(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<axum::Json<Value>> {
    let forwarded = headers.contains_key(FORWARDED_HEADER);
    let request: TransferRequest = parse_json(body)?;
    let groups = partitions_of(&state, request.partition)?;
    let to = request.to.map(NodeId);
    let mut done = Vec::new();
    for group in groups {
        let body = serde_json::to_value(&request).unwrap_or(Value::Null);
        let state_ref = &state;
        let answer = on_leader(
            &state,
            group,
            forwarded,
            "/cluster/transfer-leader",
            body,
            || async move {
                let to = state_ref
                    .node
                    .transfer_leader(group, to)
                    .await
                    .map_err(|e| state_ref.admin_error(group, e))?;
                Ok(json!({ "partitions": [{ "partition": group.0, "to": to.0 }] }))
            },
        )
        .await?;
        let to = answer["partitions"][0]["to"].clone();
        done.push(json!({ "partition": group.0, "to": to }));
    }
    Ok(axum::Json(json!({ "partitions": done })))
}

/// The address of this node's HTTP listener as other nodes should use it:
/// the listen address, or when that is a wildcard address, `advertised`.
pub fn advertised_http(listen: SocketAddr, advertised: Option<&String>) -> String {
    match advertised {
        Some(a) if listen.ip().is_unspecified() => a.clone(),
        _ => listen.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_come_from_both_headers_or_none() {
        let mut h = HeaderMap::new();
        assert_eq!(session_of(&h).unwrap(), None);
        h.insert(CLIENT_ID_HEADER, HeaderValue::from_static("7"));
        assert_eq!(session_of(&h).unwrap_err().status, StatusCode::BAD_REQUEST);
        h.insert(REQUEST_SEQ_HEADER, HeaderValue::from_static(" 3 "));
        assert_eq!(session_of(&h).unwrap(), Some(Session::new(7, 3)));
        h.insert(REQUEST_SEQ_HEADER, HeaderValue::from_static("-1"));
        let err = session_of(&h).unwrap_err();
        assert!(err.message.contains(REQUEST_SEQ_HEADER), "{err:?}");
    }

    #[test]
    fn consistency_names() {
        assert_eq!(consistency_of(None).unwrap().0, Consistency::Linearizable);
        assert_eq!(consistency_of(Some("lease")).unwrap().0, Consistency::Lease);
        assert_eq!(consistency_of(Some("stale")).unwrap().0, Consistency::Stale);
        assert_eq!(
            consistency_of(Some("strong")).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn advertised_address_replaces_a_wildcard_listen_address() {
        let any: SocketAddr = "0.0.0.0:8001".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:8001".parse().unwrap();
        let public = "10.1.2.3:8001".to_owned();
        assert_eq!(advertised_http(any, Some(&public)), public);
        assert_eq!(advertised_http(local, Some(&public)), "127.0.0.1:8001");
        assert_eq!(advertised_http(any, None), "0.0.0.0:8001");
    }
}
