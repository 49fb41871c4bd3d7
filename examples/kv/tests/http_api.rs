//! The HTTP API over real loopback listeners: every endpoint, the error
//! statuses and their JSON, sessions, forwarding, restarts.

#![allow(missing_docs)]

mod common;

use std::time::Duration;

use common::{Plan, Spec, json_error, leader_index, url, wait_for_leaders};
use raft_api::{GroupId, NodeId};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn put(c: &reqwest::Client, base: &str, key: &str, value: &str) -> Value {
    let r = c
        .put(format!("{base}/kv/{key}"))
        .body(value.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

async fn get(c: &reqwest::Client, base: &str, key: &str, consistency: &str) -> Option<String> {
    let r = c
        .get(format!("{base}/kv/{key}?consistency={consistency}"))
        .send()
        .await
        .unwrap();
    match r.status() {
        StatusCode::OK => {
            assert_eq!(r.headers()["content-type"], "application/octet-stream");
            Some(r.text().await.unwrap())
        }
        StatusCode::NOT_FOUND => {
            let body = json_error(r).await;
            assert_eq!(body["error"], "key not found");
            None
        }
        other => panic!("GET {key}: {other}: {}", r.text().await.unwrap()),
    }
}

async fn cas(c: &reqwest::Client, base: &str, key: &str, body: Value) -> (StatusCode, Value) {
    let r = c
        .post(format!("{base}/kv/{key}/cas"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_serves_every_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let plan = Plan::new(Spec::new(1, "tcp", "mem"));
    let servers = plan.start_all(dir.path()).await;
    let s = &servers[0];
    let base = url(s, "");
    let c = http();

    // health
    let health: Value = c
        .get(url(s, "/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health, json!({ "status": "ok", "node": 1 }));

    // put / get under every consistency / absent
    let first = put(&c, &base, "k", "v1").await;
    let second = put(&c, &base, "k", "v2").await;
    assert!(second["index"].as_u64().unwrap() > first["index"].as_u64().unwrap());
    for consistency in ["linearizable", "lease", "stale"] {
        assert_eq!(
            get(&c, &base, "k", consistency).await.as_deref(),
            Some("v2")
        );
    }
    let r = c.get(format!("{base}/kv/k")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "v2", "linearizable by default");
    assert_eq!(get(&c, &base, "absent", "linearizable").await, None);

    // keys with reserved characters travel percent-encoded
    put(&c, &base, "a%2Fb%20c", "slash").await;
    assert_eq!(
        get(&c, &base, "a%2Fb%20c", "stale").await.as_deref(),
        Some("slash")
    );
    assert_eq!(get(&c, &base, "a", "stale").await, None);

    // binary values come back byte for byte
    let bytes: Vec<u8> = (0..=255u8).collect();
    let r = c
        .put(format!("{base}/kv/bin"))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c.get(format!("{base}/kv/bin")).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().to_vec(), bytes);

    // delete
    let r: Value = c
        .delete(format!("{base}/kv/k"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r, json!({ "deleted": true }));
    let r: Value = c
        .delete(format!("{base}/kv/k"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r, json!({ "deleted": false }));
    assert_eq!(get(&c, &base, "k", "linearizable").await, None);

    // compare-and-set
    let (st, r) = cas(&c, &base, "c", json!({ "expected": null, "value": "one" })).await;
    assert_eq!(
        (st, r),
        (StatusCode::OK, json!({ "swapped": true, "current": "one" }))
    );
    let (_, r) = cas(&c, &base, "c", json!({ "expected": null, "value": "two" })).await;
    assert_eq!(r, json!({ "swapped": false, "current": "one" }));
    let (_, r) = cas(
        &c,
        &base,
        "c",
        json!({ "expected": "nope", "value": "two" }),
    )
    .await;
    assert_eq!(r, json!({ "swapped": false, "current": "one" }));
    let (_, r) = cas(&c, &base, "c", json!({ "expected": "one", "value": "two" })).await;
    assert_eq!(r, json!({ "swapped": true, "current": "two" }));
    let (_, r) = cas(&c, &base, "c", json!({ "expected": "two", "value": null })).await;
    assert_eq!(r, json!({ "swapped": true, "current": null }));
    assert_eq!(get(&c, &base, "c", "linearizable").await, None);

    // cluster
    let cluster: Value = c
        .get(url(s, "/cluster"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cluster["node"], 1);
    let p = &cluster["partitions"][0];
    assert_eq!(p["partition"], 0);
    assert_eq!(p["role"], "leader");
    assert_eq!(p["leader"], 1);
    assert_eq!(p["leader_http"], s.http_addr().to_string());
    assert_eq!(p["voters"], json!([1]));
    assert_eq!(p["learners"], json!([]));
    assert!(p["term"].as_u64().unwrap() >= 1);
    assert!(p["commit"].as_u64().unwrap() >= 8);
    assert!(p["applied"].as_u64().unwrap() >= 8);

    // transfer-leader: a lone voter has nobody to hand over to
    let r = c
        .post(url(s, "/cluster/transfer-leader"))
        .json(&json!({ "partition": null, "to": null }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(
        json_error(r).await["error"]
            .as_str()
            .unwrap()
            .contains("no other voter")
    );

    // members: promoting a node that is not a learner is refused
    let r = c
        .post(url(s, "/cluster/members"))
        .json(&json!({ "partition": 0, "action": "promote", "id": 9 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    json_error(r).await;

    // metrics
    let r = c.get(url(s, "/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    for needle in [
        "raftkv_partition_is_leader{partition=\"0\"} 1",
        "raftkv_partition_term{partition=\"0\"}",
        "raftkv_partition_commit_index{partition=\"0\"}",
        "raftkv_partition_applied_index{partition=\"0\"}",
        "raftkv_proposals_total",
        "raftkv_transport_batches_sent_total",
        "raftkv_early_snapshots_total 0",
        "raftkv_log_bytes ",
        "raftkv_writes_total{op=\"put\",outcome=\"ok\"}",
        "raftkv_writes_total{op=\"cas\",outcome=\"ok\"} 5",
        "raftkv_reads_total{consistency=\"stale\",outcome=\"ok\"}",
        "raftkv_http_requests_total{status=\"200\"}",
        "raftkv_http_requests_total{status=\"404\"}",
        "raftkv_http_requests_total{status=\"400\"}",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in\n{text}");
    }
    for s in servers {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = Spec::new(1, "tcp", "mem");
    spec.max_value_bytes = 1024;
    let plan = Plan::new(spec);
    let servers = plan.start_all(dir.path()).await;
    let s = &servers[0];
    let base = url(s, "");
    let c = http();
    let long_key = "k".repeat(5000);
    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode)> = vec![
        (
            "garbage CAS JSON",
            c.post(format!("{base}/kv/x/cas")).body("{not json"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "CAS JSON of the wrong shape",
            c.post(format!("{base}/kv/x/cas"))
                .body(r#"{"expected": 5}"#),
            StatusCode::BAD_REQUEST,
        ),
        (
            "CAS JSON with an unknown field",
            c.post(format!("{base}/kv/x/cas"))
                .body(r#"{"expect": "a", "value": "b"}"#),
            StatusCode::BAD_REQUEST,
        ),
        (
            "bad consistency",
            c.get(format!("{base}/kv/x?consistency=eventual")),
            StatusCode::BAD_REQUEST,
        ),
        (
            "bad query string",
            c.get(format!("{base}/kv/x?consistency=%ZZ")),
            StatusCode::BAD_REQUEST,
        ),
        (
            "client id that is not a number",
            c.put(format!("{base}/kv/x"))
                .header("x-client-id", "abc")
                .header("x-request-seq", "1")
                .body("v"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "sequence without client id",
            c.delete(format!("{base}/kv/x"))
                .header("x-request-seq", "1"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "key too long",
            c.put(format!("{base}/kv/{long_key}")).body("v"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "key that is not UTF-8",
            c.put(format!("{base}/kv/%FF%FE")).body("v"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "value over the limit",
            c.put(format!("{base}/kv/x")).body(vec![b'v'; 1025]),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "CAS value over the limit",
            c.post(format!("{base}/kv/x/cas"))
                .json(&json!({ "expected": null, "value": "v".repeat(1025) })),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "members: garbage",
            c.post(format!("{base}/cluster/members")).body("]]"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "members: unknown action",
            c.post(format!("{base}/cluster/members"))
                .json(&json!({ "action": "adopt", "id": 2 })),
            StatusCode::BAD_REQUEST,
        ),
        (
            "members: add_learner without address",
            c.post(format!("{base}/cluster/members"))
                .json(&json!({ "action": "add_learner", "id": 2 })),
            StatusCode::BAD_REQUEST,
        ),
        (
            "members: partition out of range",
            c.post(format!("{base}/cluster/members"))
                .json(&json!({ "partition": 3, "action": "remove", "id": 1 })),
            StatusCode::BAD_REQUEST,
        ),
        (
            "transfer: to a node that is not a voter",
            c.post(format!("{base}/cluster/transfer-leader"))
                .json(&json!({ "to": 7 })),
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown endpoint",
            c.get(format!("{base}/nothing/here")),
            StatusCode::NOT_FOUND,
        ),
        (
            "key with a slash",
            c.get(format!("{base}/kv/a/b")),
            StatusCode::NOT_FOUND,
        ),
        (
            "wrong method",
            c.patch(format!("{base}/kv/x")),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ];
    for (what, request, status) in cases {
        let r = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(r.status(), status, "{what}");
        let body = json_error(r).await;
        assert!(body["leader"].is_null(), "{what}: {body}");
        // The node still serves a good request.
        let value = format!("after {what}");
        put(&c, &base, "good", &value).await;
        assert_eq!(
            get(&c, &base, "good", "linearizable").await,
            Some(value),
            "{what}"
        );
    }
    // A body announced far over the limit is refused from its headers,
    // before it is read; a chunked one once the limit is passed.
    let addr = s.http_addr();
    let huge = format!("PUT /kv/x HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 1073741824");
    let (status, body) = common::raw_request(addr, &huge, &[b'v'; 64 * 1024]).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    // A CAS body over its own limit, sent over a raw connection: a client
    // library still writing a body the server refused can see the
    // connection reset before it reads the answer.
    let cas = format!("POST /kv/x/cas HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 1048576");
    let (status, body) = common::raw_request(addr, &cas, &[b' '; 256 * 1024]).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    let chunked = format!("PUT /kv/x HTTP/1.1\r\nhost: {addr}\r\ntransfer-encoding: chunked");
    let mut chunks = Vec::new();
    for _ in 0..64 {
        chunks.extend_from_slice(b"400\r\n");
        chunks.extend_from_slice(&[b'v'; 1024]);
        chunks.extend_from_slice(b"\r\n");
    }
    let (status, body) = common::raw_request(addr, &chunked, &chunks).await;
    assert_eq!(status, 413, "{body}");
    put(&c, &base, "good", "after raw requests").await;

    // Nothing was written by the refused requests.
    assert_eq!(get(&c, &base, "x", "linearizable").await, None);
    assert_eq!(s.http_metrics().responses_with(413), 5);
    for s in servers {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_session_write_applies_once_and_gets_the_first_answer() {
    let dir = tempfile::tempdir().unwrap();
    let plan = Plan::new(Spec::new(1, "tcp", "mem"));
    let servers = plan.start_all(dir.path()).await;
    let base = url(&servers[0], "");
    let c = http();
    let session_cas = |seq: u64, body: Value| {
        c.post(format!("{base}/kv/s/cas"))
            .header("x-client-id", "77")
            .header("x-request-seq", seq.to_string())
            .json(&body)
    };
    let create = json!({ "expected": null, "value": "mine" });
    let first: Value = session_cas(1, create.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first, json!({ "swapped": true, "current": "mine" }));
    // Applying the CAS again would fail (the key exists); the retry gets
    // the first answer.
    let retry: Value = session_cas(1, create.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(retry, first);
    // A new sequence number is a new command.
    let next: Value = session_cas(2, create.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(next, json!({ "swapped": false, "current": "mine" }));
    // An older sequence number than the last one is refused.
    let r = session_cas(1, create).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(
        json_error(r).await["error"]
            .as_str()
            .unwrap()
            .contains("x-request-seq")
    );

    // A retried PUT answers with the index of its first application and
    // does not overwrite a later value.
    let session_put = |seq: u64, value: &'static str| {
        c.put(format!("{base}/kv/p"))
            .header("x-client-id", "78")
            .header("x-request-seq", seq.to_string())
            .body(value)
    };
    let a: Value = session_put(1, "one")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    put(&c, &base, "p", "other").await;
    let b: Value = session_put(1, "one")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(
        get(&c, &base, "p", "linearizable").await.as_deref(),
        Some("other")
    );
    for s in servers {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_lmdb_forward_change_members_transfer_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = Spec::new(4, "tcp", "lmdb");
    spec.request_timeout_ms = 1500;
    spec.voters = Some("1,2,3".into());
    let plan = Plan::new(spec);
    // Nodes 1-3 are the initial voters; node 4 joins later.
    let mut servers = Vec::new();
    for id in 1..=3 {
        servers.push(plan.start(id, dir.path()).await);
    }
    let leaders = wait_for_leaders(&servers, 1).await;
    let c = http();
    let l = leader_index(&servers);
    let f = (l + 1) % 3;
    let follower = url(&servers[f], "");

    // Writes on a follower are forwarded; reads are served by every node.
    for i in 0..10 {
        put(&c, &follower, &format!("key-{i}"), &format!("value-{i}")).await;
    }
    let (_, r) = cas(
        &c,
        &follower,
        "key-0",
        json!({ "expected": "value-0", "value": "new" }),
    )
    .await;
    assert_eq!(r["swapped"], true);
    for s in &servers {
        let base = url(s, "");
        assert_eq!(
            get(&c, &base, "key-0", "linearizable").await.as_deref(),
            Some("new")
        );
        assert_eq!(
            get(&c, &base, "key-9", "lease").await.as_deref(),
            Some("value-9")
        );
    }

    // /cluster on a follower names the leader and its HTTP address.
    let view: Value = c
        .get(url(&servers[f], "/cluster"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let p = &view["partitions"][0];
    assert_eq!(p["role"], "follower");
    assert_eq!(p["leader"], leaders[0].0);
    assert_eq!(p["leader_http"], servers[l].http_addr().to_string());
    assert_eq!(p["voters"], json!([1, 2, 3]));

    // Membership through a follower: the request is carried out by the
    // leader. Node 4 starts empty (not an initial voter) and is added as a
    // learner, then promoted.
    servers.push(plan.start(4, dir.path()).await);
    let add = json!({
        "partition": null,
        "action": "add_learner",
        "id": 4,
        "address": plan.raft[3].to_string(),
        "http_address": plan.http[3].to_string(),
    });
    let r = c
        .post(url(&servers[f], "/cluster/members"))
        .json(&add)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let view: Value = c
            .get(url(&servers[3], "/cluster"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if view["partitions"][0]["role"] == "learner"
            && get(&c, &url(&servers[3], ""), "key-9", "stale")
                .await
                .is_some()
        {
            assert_eq!(view["partitions"][0]["learners"], json!([4]));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node 4 never caught up: {view}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let promote = json!({ "action": "promote", "id": 4 });
    let r = c
        .post(url(&servers[f], "/cluster/members"))
        .json(&promote)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({ "partitions": [0] })
    );
    let view: Value = c
        .get(url(&servers[l], "/cluster"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["partitions"][0]["voters"], json!([1, 2, 3, 4]));
    let r = c
        .post(url(&servers[f], "/cluster/members"))
        .json(&json!({ "action": "remove", "id": 4 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    servers.pop().unwrap().shutdown().await;

    // Leader transfer, asked of a follower, to that follower.
    let target = f as u64 + 1;
    let r = c
        .post(url(&servers[f], "/cluster/transfer-leader"))
        .json(&json!({ "partition": 0, "to": target }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({ "partitions": [{ "partition": 0, "to": target }] })
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !servers[f].node().is_leader(GroupId(0)) {
        assert!(
            std::time::Instant::now() < deadline,
            "transfer did not happen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A follower restarted on its data directory catches up with what it
    // missed.
    let r_id = (f + 1) % 3;
    servers.remove(r_id).shutdown().await;
    put(&c, &follower, "while-down", "yes").await;
    servers.insert(r_id, plan.start(r_id as u64 + 1, dir.path()).await);
    // Until it hears from the leader it answers 503 (no leader known).
    wait_for_leaders(&servers, 1).await;
    let restarted = url(&servers[r_id], "");
    assert_eq!(
        get(&c, &restarted, "while-down", "linearizable")
            .await
            .as_deref(),
        Some("yes")
    );
    assert_eq!(
        get(&c, &restarted, "key-0", "linearizable")
            .await
            .as_deref(),
        Some("new")
    );

    // With two of three nodes gone there is no quorum: writes fail with
    // 503 (no leader) or 504 (outcome unknown), as JSON.
    let survivor = servers.remove(f);
    for s in servers {
        s.shutdown().await;
    }
    let r = c
        .put(url(&survivor, "/kv/lonely"))
        .body("v")
        .send()
        .await
        .unwrap();
    let status = r.status();
    assert!(
        status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::GATEWAY_TIMEOUT,
        "{status}"
    );
    json_error(r).await;
    let r = c.get(url(&survivor, "/kv/key-0")).send().await.unwrap();
    let status = r.status();
    assert!(
        status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::GATEWAY_TIMEOUT,
        "{status}"
    );
    json_error(r).await;
    // A stale read is still served locally.
    assert_eq!(
        get(&c, &url(&survivor, ""), "key-0", "stale")
            .await
            .as_deref(),
        Some("new")
    );
    survivor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_on_lmdb_resumes_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let plan = Plan::new(Spec::new(1, "tcp", "lmdb"));
    let servers = plan.start_all(dir.path()).await;
    let c = http();
    put(&c, &url(&servers[0], ""), "durable", "kept").await;
    for s in servers {
        s.shutdown().await;
    }
    let servers = plan.start_all(dir.path()).await;
    let base = url(&servers[0], "");
    assert_eq!(
        get(&c, &base, "durable", "linearizable").await.as_deref(),
        Some("kept")
    );
    for s in servers {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_spread_over_partitions_each_with_a_leader() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = Spec::new(3, "tcp", "mem");
    spec.partitions = 3;
    let plan = Plan::new(spec);
    let servers = plan.start_all(dir.path()).await;
    let c = http();
    let base = url(&servers[0], "");
    let mut used = std::collections::BTreeSet::new();
    for i in 0..30 {
        let key = format!("key-{i}");
        used.insert(raft_kv::partition_of(key.as_bytes(), 3));
        put(&c, &base, &key, &i.to_string()).await;
    }
    assert_eq!(used.len(), 3);
    for s in &servers {
        for i in 0..30 {
            let got = get(&c, &url(s, ""), &format!("key-{i}"), "linearizable").await;
            assert_eq!(got, Some(i.to_string()));
        }
    }
    let view: Value = c
        .get(url(&servers[1], "/cluster"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let parts = view["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    for (p, part) in parts.iter().enumerate() {
        assert_eq!(part["partition"], p as u64);
        let leader = NodeId(part["leader"].as_u64().unwrap());
        assert_eq!(
            part["leader_http"],
            plan.http[leader.0 as usize - 1].to_string()
        );
    }
    let text = c
        .get(url(&servers[2], "/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for p in 0..3 {
        assert!(
            text.contains(&format!("raftkv_partition_term{{partition=\"{p}\"}}")),
            "{text}"
        );
    }
    for s in servers {
        s.shutdown().await;
    }
}
