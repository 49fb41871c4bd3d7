//! The client: finding a server that answers, following leader hints,
//! retrying writes in one session.

#![allow(missing_docs)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::any;
use common::{Plan, Spec, free_tcp};
use raft_kv::Error;
use raft_kv::client::Client;
use raft_node::driver::Consistency;
use serde_json::json;

/// Serves `app` on a free loopback port; returns its address.
async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_finds_a_server_past_a_dead_address_and_follows_hints() {
    let dir = tempfile::tempdir().unwrap();
    let plan = Plan::new(Spec::new(3, "tcp", "mem"));
    let servers = plan.start_all(dir.path()).await;
    let real = servers[0].http_addr().to_string();
    // A server that always answers 503 naming the real one as leader.
    let hint = real.clone();
    let redirecting = serve(Router::new().fallback(any(move || {
        let hint = hint.clone();
        async move {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({ "error": "not the leader", "leader": hint })),
            )
        }
    })))
    .await;
    let dead = free_tcp().to_string();

    // Dead first, then a server that only ever hints: every call ends at
    // the real server.
    let client = Client::new([dead.clone(), redirecting.clone()]).unwrap();
    assert!(client.put("a", "1").await.unwrap() > 0);
    assert_eq!(
        client
            .get("a", Consistency::Linearizable)
            .await
            .unwrap()
            .as_deref(),
        Some(&b"1"[..])
    );
    let cas = client.cas("a", Some("1"), Some("2")).await.unwrap();
    assert!(cas.swapped);
    assert_eq!(cas.current.as_deref(), Some("2"));
    let cas = client.cas("a", None, Some("3")).await.unwrap();
    assert!(!cas.swapped);
    assert!(client.delete("a").await.unwrap());
    assert!(!client.delete("a").await.unwrap());
    assert_eq!(client.get("a", Consistency::Stale).await.unwrap(), None);

    // Every server of the list, the dead one included, in any order.
    let mut list: Vec<String> = servers.iter().map(|s| s.http_addr().to_string()).collect();
    list.insert(1, dead.clone());
    let client = Client::new(list.clone()).unwrap();
    for i in 0..5 {
        client.put(&format!("k{i}"), format!("v{i}")).await.unwrap();
    }
    let statuses = client.status().await;
    assert_eq!(statuses.len(), 4);
    assert!(
        statuses[1].1.is_err(),
        "the dead address is reported unreachable"
    );
    assert_eq!(statuses.iter().filter(|(_, r)| r.is_ok()).count(), 3);
    let view = client.cluster().await.unwrap();
    assert_eq!(view["partitions"][0]["voters"], json!([1, 2, 3]));

    // A final error (400) is returned at once, not retried.
    let err = client.put(&"k".repeat(5000), "v").await.unwrap_err();
    assert!(matches!(err, Error::Server { status: 400, .. }), "{err}");
    for s in servers {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_retried_with_the_same_session_and_the_next_write_moves_on() {
    // A server that times out (504) on the first attempt of each write and
    // records the session headers of every attempt.
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let log = seen.clone();
    let flaky = serve(Router::new().fallback(any(move |headers: HeaderMap| {
        let log = log.clone();
        async move {
            let header = |name: &str| {
                headers
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default()
            };
            let mut log = log.lock().unwrap();
            log.push((header("x-client-id"), header("x-request-seq")));
            if log.len() % 2 == 1 {
                (
                    StatusCode::GATEWAY_TIMEOUT,
                    axum::Json(json!({ "error": "timed out", "leader": null })),
                )
            } else {
                (StatusCode::OK, axum::Json(json!({ "index": log.len() })))
            }
        }
    })))
    .await;
    let client = Client::new([flaky]).unwrap();
    assert_eq!(client.put("k", "v").await.unwrap(), 2);
    assert_eq!(client.put("k", "w").await.unwrap(), 4);
    let seen = seen.lock().unwrap().clone();
    let id = client.client_id().to_string();
    assert_eq!(
        seen,
        vec![
            (id.clone(), "1".into()),
            (id.clone(), "1".into()),
            (id.clone(), "2".into()),
            (id, "2".into()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_server_reachable_the_client_gives_up_in_time() {
    let client = Client::new([free_tcp().to_string(), free_tcp().to_string()])
        .unwrap()
        .with_retry_for(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let err = client.put("k", "v").await.unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let err = client.get("k", Consistency::Stale).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err}");
}
