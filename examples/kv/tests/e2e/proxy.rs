//! The fault proxy: the network between the nodes, with cuts.
//!
//! Every ordered pair of nodes (i, j) gets a proxy of its own: node i's
//! `--peers` entry for j points at it, and it forwards to j's real raft
//! address, so every connection node i dials to node j passes through it.
//! Cutting both (i, j) and (j, i) separates the two nodes whatever
//! connections they use. Cutting only (i, j) closes the connections i
//! dials to j: with the TCP transport (one connection per direction) that
//! stops exactly the messages from i to j; the QUIC transport shares one
//! connection per pair for both directions, so there it separates the pair
//! when i dialled it, and changes nothing when j did.
//!
//! - TCP: accept, dial the target, copy both ways. While the link is cut,
//!   new connections are closed at once and existing ones are closed.
//! - UDP (QUIC): one socket per pair; datagrams from the dialer go to the
//!   target, datagrams from the target go back to the last dialer address
//!   seen. While the link is cut every datagram is dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Which protocol the proxies forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// TCP streams (the TCP transport).
    Tcp,
    /// UDP datagrams (the QUIC transport).
    Udp,
}

struct Link {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// A proxy per ordered pair of nodes, each of which can be cut.
pub(crate) struct FaultNet {
    links: BTreeMap<(u64, u64), Link>,
}

impl FaultNet {
    /// Starts a proxy for every ordered pair of distinct nodes of
    /// `targets` (node id -> real raft address), each on its own loopback
    /// port; all links are up.
    pub(crate) async fn start(
        protocol: Protocol,
        targets: &BTreeMap<u64, SocketAddr>,
    ) -> io::Result<Self> {
        let mut links = BTreeMap::new();
        for &from in targets.keys() {
            for (&to, &target) in targets {
                if from == to {
                    continue;
                }
                let (cut, watch) = watch::channel(false);
                let (addr, task) = match protocol {
                    Protocol::Tcp => {
                        let listener = TcpListener::bind("127.0.0.1:0").await?;
                        let addr = listener.local_addr()?;
                        (addr, tokio::spawn(tcp_link(listener, target, watch)))
                    }
                    Protocol::Udp => {
                        let socket = UdpSocket::bind("127.0.0.1:0").await?;
                        let addr = socket.local_addr()?;
                        (addr, tokio::spawn(udp_link(socket, target, watch)))
                    }
                };
                links.insert((from, to), Link { addr, cut, task });
            }
        }
        Ok(FaultNet { links })
    }

    /// The address node `from` must use for node `to`.
    ///
    /// # Panics
    ///
    /// If there is no such link.
    pub(crate) fn addr(&self, from: u64, to: u64) -> SocketAddr {
        self.links[&(from, to)].addr
    }

    /// The pairs (from, to) of every link.
    pub(crate) fn pairs(&self) -> Vec<(u64, u64)> {
        self.links.keys().copied().collect()
    }

    fn set(&self, from: u64, to: u64, cut: bool) {
        if let Some(link) = self.links.get(&(from, to)) {
            link.cut.send_replace(cut);
        }
    }

    /// Closes the connections `from` dials to `to` (see the
    /// [module documentation](self) for what that stops).
    pub(crate) fn cut_one_way(&self, from: u64, to: u64) {
        self.set(from, to, true);
    }

    /// Separates every node of `side` from every node not in it.
    pub(crate) fn split(&self, side: &BTreeSet<u64>) {
        for &(from, to) in self.links.keys() {
            if side.contains(&from) != side.contains(&to) {
                self.set(from, to, true);
            }
        }
    }

    /// Restores every link.
    pub(crate) fn heal(&self) {
        for link in self.links.values() {
            link.cut.send_replace(false);
        }
    }
}

impl Drop for FaultNet {
    fn drop(&mut self) {
        for link in self.links.values() {
            // Closes the existing connections too.
            link.cut.send_replace(true);
            link.task.abort();
        }
    }
}

async fn tcp_link(listener: TcpListener, target: SocketAddr, cut: watch::Receiver<bool>) {
    loop {
        let inbound = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors, say: try again shortly.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        if *cut.borrow() {
            drop(inbound);
            continue;
        }
        tokio::spawn(tcp_connection(inbound, target, cut.clone()));
    }
}

async fn tcp_connection(
    mut inbound: TcpStream,
    target: SocketAddr,
    mut cut: watch::Receiver<bool>,
) {
    let outbound = tokio::select! {
        r = TcpStream::connect(target) => r,
        _ = cut.wait_for(|c| *c) => return,
    };
    let Ok(mut outbound) = outbound else {
        // The target is down: the dialer sees its connection closed.
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = cut.wait_for(|c| *c) => {}
    }
}

async fn udp_link(socket: UdpSocket, target: SocketAddr, cut: watch::Receiver<bool>) {
    let mut dialer: Option<SocketAddr> = None;
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            // An ICMP error reported on the socket, say: keep going.
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            continue;
        };
        if *cut.borrow() {
            continue;
        }
        let to = if from == target {
            match dialer {
                Some(d) => d,
                None => continue,
            }
        } else {
            dialer = Some(from);
            target
        };
        let _ = socket.send_to(&buf[..n], to).await;
    }
}
