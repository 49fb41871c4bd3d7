//! Runs the [`Transport`](raft_api::Transport) conformance suite of
//! `raft_api::testkit::transport` against [`TcpTransport`] over TLS on
//! loopback, with mutual TLS and with server-only TLS.

mod common;

use common::TlsHarness;
use raft_api::testkit::transport as suite;

#[tokio::test]
async fn delivery_and_order() {
    suite::delivery_and_order(&mut TlsHarness::default()).await;
}

#[tokio::test]
async fn batch_keeps_order() {
    suite::batch_keeps_order(&mut TlsHarness::default()).await;
}

#[tokio::test]
async fn many_batches() {
    suite::many_batches(&mut TlsHarness::default()).await;
}

#[tokio::test]
async fn large_messages() {
    suite::large_messages(&mut TlsHarness::default()).await;
}

#[tokio::test]
async fn reconnect_after_restart() {
    suite::reconnect_after_restart(&mut TlsHarness::default()).await;
}

#[tokio::test]
async fn remove_and_add_peer() {
    suite::remove_and_add_peer(&mut TlsHarness::default()).await;
}

#[tokio::test]
async fn unknown_peer() {
    suite::unknown_peer(&mut TlsHarness::default()).await;
}

#[tokio::test]
async fn send_never_blocks() {
    suite::send_never_blocks(&mut TlsHarness::default()).await;
}

/// The suite on a multi-threaded runtime, where readers, writers and the
/// test run in parallel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_cases_multi_threaded() {
    suite::run_all(TlsHarness::default).await;
}

/// The whole suite with server-only TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_cases_without_client_certificates() {
    suite::run_all(|| TlsHarness::new(false)).await;
}

/// Peers known only by address over mutual TLS: the dialling node accepts
/// any node's certificate of the CA, takes the id from it and checks the
/// answering hello names the same node.
#[tokio::test]
async fn add_address() {
    suite::add_address_suite(&mut TlsHarness::default()).await;
}

/// Peers known only by address over server-only TLS.
#[tokio::test]
async fn add_address_without_client_certificates() {
    suite::add_address_suite(&mut TlsHarness::new(false)).await;
}
