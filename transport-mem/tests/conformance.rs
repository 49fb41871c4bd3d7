//! Runs the [`Transport`](raft_api::Transport) conformance suite of
//! `raft_api::testkit::transport` against [`MemTransport`].

use raft_api::NodeId;
use raft_api::testkit::transport::{self as suite, TransportHarness};
use transport_mem::{MemNetwork, MemTransport};

/// One network per case; a restarted node is a new transport of the same
/// network. Addresses mean nothing in-process.
#[derive(Default)]
struct MemHarness {
    network: MemNetwork,
}

impl TransportHarness for MemHarness {
    type Transport = MemTransport;

    async fn make(&mut self, id: NodeId) -> MemTransport {
        self.network.transport(id)
    }

    fn address(&mut self, id: NodeId, _transport: &MemTransport) -> String {
        format!("mem:{id}")
    }
}

#[tokio::test]
async fn delivery_and_order() {
    suite::delivery_and_order(&mut MemHarness::default()).await;
}

#[tokio::test]
async fn batch_keeps_order() {
    suite::batch_keeps_order(&mut MemHarness::default()).await;
}

#[tokio::test]
async fn many_batches() {
    suite::many_batches(&mut MemHarness::default()).await;
}

#[tokio::test]
async fn large_messages() {
    suite::large_messages(&mut MemHarness::default()).await;
}

#[tokio::test]
async fn reconnect_after_restart() {
    suite::reconnect_after_restart(&mut MemHarness::default()).await;
}

#[tokio::test]
async fn remove_and_add_peer() {
    suite::remove_and_add_peer(&mut MemHarness::default()).await;
}

#[tokio::test]
async fn unknown_peer() {
    suite::unknown_peer(&mut MemHarness::default()).await;
}

#[tokio::test]
async fn send_never_blocks() {
    suite::send_never_blocks(&mut MemHarness::default()).await;
}

/// The same cases with delays on every link: batches travel through the
/// per-link delivery tasks instead of being handed over inside `send`.
#[tokio::test]
async fn all_cases_with_delays() {
    suite::run_all(|| {
        let harness = MemHarness::default();
        harness.network.set_delay(
            std::time::Duration::ZERO,
            std::time::Duration::from_millis(2),
        );
        harness
    })
    .await;
}
