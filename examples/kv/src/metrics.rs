//! The Prometheus text of `GET /metrics`: the node's Raft metrics, the
//! transport's counters and the HTTP server's own counters.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use raft_node::Role;
use raft_node::backends::AnyTransport;
use raft_node::driver::Metrics;

/// Counters kept by the HTTP server.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    /// Responses by status code.
    responses: Mutex<BTreeMap<u16, u64>>,
    /// Writes by operation and outcome ("ok" or the status code).
    writes: Mutex<BTreeMap<(&'static str, String), u64>>,
    /// Reads by consistency and outcome.
    reads: Mutex<BTreeMap<(&'static str, String), u64>>,
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    *map.entry(key).or_default() += 1;
}

impl HttpMetrics {
    /// Counts a response with `status`.
    pub fn response(&self, status: u16) {
        bump(&self.responses, status);
    }

    /// Counts a write (`put`, `delete`, `cas`) with its outcome.
    pub fn write(&self, op: &'static str, outcome: impl Into<String>) {
        bump(&self.writes, (op, outcome.into()));
    }

    /// Counts a read with its consistency and outcome.
    pub fn read(&self, consistency: &'static str, outcome: impl Into<String>) {
        bump(&self.reads, (consistency, outcome.into()));
    }

    /// Responses counted with `status` so far.
    pub fn responses_with(&self, status: u16) -> u64 {
        let map = self.responses.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&status).copied().unwrap_or(0)
    }
}

/// The name of a role in `/cluster` and `/metrics`; a follower that is a
/// learner of the group is `learner`.
pub fn role_name(role: Role, learner: bool) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Candidate => "candidate",
        Role::PreCandidate => "precandidate",
        Role::Follower if learner => "learner",
        Role::Follower => "follower",
    }
}

fn role_value(role: Role) -> u8 {
    match role {
        Role::Follower => 0,
        Role::PreCandidate => 1,
        Role::Candidate => 2,
        Role::Leader => 3,
    }
}

/// Transport counters as (name, help, value).
fn transport_counters(transport: &AnyTransport) -> Vec<(&'static str, &'static str, u64)> {
    macro_rules! counters {
        ($m:expr, refused: $refused:ident) => {{
            let m = $m;
            vec![
                ("batches_sent", "Batches written to peers.", m.batches_sent),
                (
                    "batches_received",
                    "Batches received from peers.",
                    m.batches_received,
                ),
                (
                    "dropped_batches",
                    "Batches dropped on the sending side.",
                    m.dropped_batches(),
                ),
                (
                    "connections_opened",
                    "Outgoing connections established.",
                    m.connections_opened,
                ),
                (
                    "connect_failures",
                    "Failed connection attempts.",
                    m.connect_failures,
                ),
                (
                    "connections_accepted",
                    "Incoming connections accepted.",
                    m.connections_accepted,
                ),
                (
                    "handshakes_refused",
                    "Incoming connections refused at the handshake.",
                    m.$refused,
                ),
                (
                    "decode_errors",
                    "Incoming connections closed for a bad frame.",
                    m.decode_errors,
                ),
            ]
        }};
    }
    match transport {
        AnyTransport::Tcp(t) => counters!(t.metrics(), refused: handshakes_refused),
        AnyTransport::Quic(t) => counters!(t.metrics(), refused: handshakes_rejected),
        _ => Vec::new(),
    }
}

/// Renders every metric in the Prometheus text format (version 0.0.4).
pub fn render(
    node_id: u64,
    metrics: &Metrics,
    transport: &AnyTransport,
    http: &HttpMetrics,
) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {value}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
    };
    family(
        "raftkv_node_id",
        "gauge",
        "This node's id.",
        vec![(String::new(), node_id.to_string())],
    );
    let groups = &metrics.groups;
    let per_group = |f: &dyn Fn(&raft_node::driver::GroupMetrics) -> String| {
        groups
            .iter()
            .map(|(g, m)| (format!("partition=\"{}\"", g.0), f(m)))
            .collect::<Vec<_>>()
    };
    family(
        "raftkv_partition_role",
        "gauge",
        "Role per partition: 0 follower, 1 pre-candidate, 2 candidate, 3 leader.",
        per_group(&|m| role_value(m.role).to_string()),
    );
    family(
        "raftkv_partition_is_leader",
        "gauge",
        "1 when this node leads the partition.",
        per_group(&|m| u8::from(m.role == Role::Leader).to_string()),
    );
    family(
        "raftkv_partition_term",
        "gauge",
        "Current term per partition.",
        per_group(&|m| m.term.0.to_string()),
    );
    family(
        "raftkv_partition_commit_index",
        "gauge",
        "Highest committed index per partition.",
        per_group(&|m| m.commit.0.to_string()),
    );
    family(
        "raftkv_partition_applied_index",
        "gauge",
        "Highest applied index per partition.",
        per_group(&|m| m.applied.0.to_string()),
    );
    family(
        "raftkv_partition_last_index",
        "gauge",
        "Last log index per partition.",
        per_group(&|m| m.last_index.0.to_string()),
    );
    family(
        "raftkv_partition_voters",
        "gauge",
        "Voters per partition.",
        per_group(&|m| m.membership.voters.len().to_string()),
    );
    let n = &metrics.node;
    for (name, help, value) in [
        (
            "raftkv_proposals_total",
            "Proposals accepted as leader.",
            n.proposals,
        ),
        ("raftkv_fsyncs_total", "Log store flushes.", n.fsyncs),
        (
            "raftkv_write_batches_total",
            "Loop turns that wrote.",
            n.write_batches,
        ),
        (
            "raftkv_entries_written_total",
            "Log entries written.",
            n.entries_written,
        ),
        (
            "raftkv_raft_batches_sent_total",
            "Message batches sent.",
            n.batches_sent,
        ),
        (
            "raftkv_raft_messages_sent_total",
            "Messages sent.",
            n.messages_sent,
        ),
        (
            "raftkv_inbound_dropped_total",
            "Inbound batches dropped (inbox full).",
            n.inbound_dropped,
        ),
        (
            "raftkv_early_snapshots_total",
            "Snapshots asked for early to keep the log within max_log_bytes.",
            n.early_snapshots,
        ),
    ] {
        family(
            name,
            "counter",
            help,
            vec![(String::new(), value.to_string())],
        );
    }
    family(
        "raftkv_log_bytes",
        "gauge",
        "Log held in memory by all groups, in bytes.",
        vec![(String::new(), n.log_bytes.to_string())],
    );
    for (name, help, value) in transport_counters(transport) {
        family(
            &format!("raftkv_transport_{name}_total"),
            "counter",
            help,
            vec![(String::new(), value.to_string())],
        );
    }
    let lock = |m: &Mutex<BTreeMap<(&'static str, String), u64>>| {
        m.lock().unwrap_or_else(|e| e.into_inner()).clone()
    };
    family(
        "raftkv_writes_total",
        "counter",
        "Writes by operation and outcome.",
        lock(&http.writes)
            .into_iter()
            .map(|((op, outcome), v)| (format!("op=\"{op}\",outcome=\"{outcome}\""), v.to_string()))
            .collect(),
    );
    family(
        "raftkv_reads_total",
        "counter",
        "Reads by consistency and outcome.",
        lock(&http.reads)
            .into_iter()
            .map(|((c, outcome), v)| {
                (
                    format!("consistency=\"{c}\",outcome=\"{outcome}\""),
                    v.to_string(),
                )
            })
            .collect(),
    );
    let responses = http
        .responses
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    family(
        "raftkv_http_requests_total",
        "counter",
        "HTTP responses by status code.",
        responses
            .into_iter()
            .map(|(status, v)| (format!("status=\"{status}\""), v.to_string()))
            .collect(),
    );
    out
}
