//! Helpers shared by the integration tests: a harness for the conformance
//! suite, transports on free ports, and raw sockets.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use raft_api::testkit::transport::{DEADLINE, Recorder, TransportHarness};
use raft_api::{NodeId, Transport};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use transport_tcp::{TcpConfig, TcpTransport};

/// The cluster of every test.
pub const CLUSTER: u64 = 0x5EED_C1A5;

/// Settings for tests: any free port on loopback, quick reconnects, 4 MiB
/// frames.
pub fn config(id: NodeId, listen: SocketAddr) -> TcpConfig {
    TcpConfig {
        max_frame_bytes: 4 * 1024 * 1024,
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(250),
        ..TcpConfig::new(id, CLUSTER, listen)
    }
}

/// Any free port on loopback.
pub fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Makes and starts a transport with `config`; returns it with its inbox.
pub async fn start(config: TcpConfig) -> (TcpTransport, Arc<Recorder>) {
    let transport = TcpTransport::new(config).expect("valid config");
    let inbox = Recorder::new();
    transport.start(inbox.clone()).await.expect("start");
    (transport, inbox)
}

/// The address of a started transport, for `add_peer`.
pub fn address(transport: &TcpTransport) -> String {
    transport.local_addr().expect("started").to_string()
}

/// Runs the conformance suite over loopback; a restarted node listens on
/// the port it had.
#[derive(Default)]
pub struct TcpHarness {
    ports: HashMap<NodeId, SocketAddr>,
}

impl TransportHarness for TcpHarness {
    type Transport = TcpTransport;

    async fn make(&mut self, id: NodeId) -> TcpTransport {
        let listen = self.ports.get(&id).copied().unwrap_or_else(any_port);
        TcpTransport::new(config(id, listen)).expect("valid config")
    }

    fn address(&mut self, id: NodeId, transport: &TcpTransport) -> String {
        let address = transport.local_addr().expect("started");
        self.ports.insert(id, address);
        address.to_string()
    }

    async fn stop(&mut self, _id: NodeId, transport: TcpTransport) {
        transport.shutdown().await;
    }
}

/// Opens a raw connection.
pub async fn raw_connect(address: &str) -> TcpStream {
    TcpStream::connect(address).await.expect("connect")
}

/// Whether the other end closes `stream` (end of file or reset) within the
/// suite's deadline. Data it sends is ignored.
pub async fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    let wait = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(DEADLINE, wait).await.is_ok()
}
