//! Runs the [`Transport`](raft_api::Transport) conformance suite of
//! `raft_api::testkit::transport` against [`QuicTransport`] over loopback,
//! with mutual TLS.

mod common;

use common::QuicHarness;
use raft_api::testkit::transport as suite;

#[tokio::test]
async fn delivery_and_order() {
    suite::delivery_and_order(&mut QuicHarness::default()).await;
}

#[tokio::test]
async fn batch_keeps_order() {
    suite::batch_keeps_order(&mut QuicHarness::default()).await;
}

#[tokio::test]
async fn many_batches() {
    suite::many_batches(&mut QuicHarness::default()).await;
}

#[tokio::test]
async fn large_messages() {
    suite::large_messages(&mut QuicHarness::default()).await;
}

#[tokio::test]
async fn reconnect_after_restart() {
    suite::reconnect_after_restart(&mut QuicHarness::default()).await;
}

#[tokio::test]
async fn remove_and_add_peer() {
    suite::remove_and_add_peer(&mut QuicHarness::default()).await;
}

#[tokio::test]
async fn unknown_peer() {
    suite::unknown_peer(&mut QuicHarness::default()).await;
}

#[tokio::test]
async fn send_never_blocks() {
    suite::send_never_blocks(&mut QuicHarness::default()).await;
}

#[tokio::test]
async fn add_address() {
    suite::add_address_suite(&mut QuicHarness::default()).await;
}

/// The suite on a multi-threaded runtime, where readers, writers and the
/// test run in parallel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_cases_multi_threaded() {
    suite::run_all(QuicHarness::default).await;
    suite::add_address_suite(&mut QuicHarness::default()).await;
}
