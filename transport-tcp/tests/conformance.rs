//! Runs the [`Transport`](raft_api::Transport) conformance suite of
//! `raft_api::testkit::transport` against [`TcpTransport`] over loopback.

mod common;

use common::TcpHarness;
use raft_api::testkit::transport as suite;

#[tokio::test]
async fn delivery_and_order() {
    suite::delivery_and_order(&mut TcpHarness::default()).await;
}

#[tokio::test]
async fn batch_keeps_order() {
    suite::batch_keeps_order(&mut TcpHarness::default()).await;
}

#[tokio::test]
async fn many_batches() {
    suite::many_batches(&mut TcpHarness::default()).await;
}

#[tokio::test]
async fn large_messages() {
    suite::large_messages(&mut TcpHarness::default()).await;
}

#[tokio::test]
async fn reconnect_after_restart() {
    suite::reconnect_after_restart(&mut TcpHarness::default()).await;
}

#[tokio::test]
async fn remove_and_add_peer() {
    suite::remove_and_add_peer(&mut TcpHarness::default()).await;
}

#[tokio::test]
async fn unknown_peer() {
    suite::unknown_peer(&mut TcpHarness::default()).await;
}

#[tokio::test]
async fn send_never_blocks() {
    suite::send_never_blocks(&mut TcpHarness::default()).await;
}

/// The suite on a multi-threaded runtime, where readers, writers and the
/// test run in parallel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_cases_multi_threaded() {
    suite::run_all(TcpHarness::default).await;
}

/// Peers known only by address: learned from the answering hello; this
/// node's own address and a node of another cluster are never learned;
/// `remove_address` stops delivery.
#[tokio::test]
async fn add_address() {
    suite::add_address_suite(&mut TcpHarness::default()).await;
}
