//! Free loopback ports for local clusters: test clusters, benchmarks and
//! demos, whose nodes bind the addresses they are given.
//!
//! Binding port 0 and closing the socket gives a port from the kernel's
//! ephemeral range, which outgoing connections draw from as well: one of
//! them can take the port before the node binds it (or between a node's
//! kill and its restart). The ports here lie below that range instead
//! (Linux's `ip_local_port_range`; 32768 where it cannot be read), start
//! at a random offset (so processes running at once rarely meet), and are
//! never handed out twice by one process.
//!
//! ```
//! use transport_util::ports::{Protocol, free_loopback_port};
//!
//! let addr = free_loopback_port(Protocol::Both).unwrap();
//! assert!(addr.ip().is_loopback());
//! std::net::TcpListener::bind(addr).unwrap();
//! std::net::UdpSocket::bind(addr).unwrap();
//! ```

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};

/// What a port from [`free_loopback_port`] must be free for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// A TCP listener.
    Tcp,
    /// A UDP socket (QUIC).
    Udp,
    /// Both, for a node that may listen with either transport.
    Both,
}

/// Lowest port handed out.
const LOWEST_PORT: u16 = 10_000;

/// A loopback address whose port is free for `protocol`, below the
/// kernel's ephemeral range (see the module documentation). An error
/// (`AddrNotAvailable`) only when every port there is taken.
pub fn free_loopback_port(protocol: Protocol) -> io::Result<SocketAddr> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let floor = ephemeral_floor();
    let span = u64::from(floor - LOWEST_PORT);
    if NEXT.load(Ordering::Relaxed) == 0 {
        let random = RandomState::new().build_hasher().finish();
        let _ = NEXT.compare_exchange(0, 1 + random % span, Ordering::Relaxed, Ordering::Relaxed);
    }
    let ports = (0..span).map(|_| {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % span;
        LOWEST_PORT + offset as u16
    });
    first_free(protocol, ports).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            format!("no free loopback port in {LOWEST_PORT}..{floor}"),
        )
    })
}

/// First port of the kernel's ephemeral range (read once per process).
fn ephemeral_floor() -> u16 {
    static FLOOR: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    *FLOOR.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
            .filter(|&floor| floor > LOWEST_PORT + 1_000)
            .unwrap_or(32_768)
    })
}

/// The first of `ports` free on loopback for `protocol`.
fn first_free(protocol: Protocol, ports: impl IntoIterator<Item = u16>) -> Option<SocketAddr> {
    ports
        .into_iter()
        .map(|port| SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .find(|&addr| {
            let tcp = || TcpListener::bind(addr).is_ok();
            let udp = || UdpSocket::bind(addr).is_ok();
            match protocol {
                Protocol::Tcp => tcp(),
                Protocol::Udp => udp(),
                Protocol::Both => tcp() && udp(),
            }
        })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn ports_are_distinct_free_and_below_the_ephemeral_range() {
        let mut seen = BTreeSet::new();
        for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Both].repeat(20) {
            let addr = free_loopback_port(protocol).unwrap();
            assert!(addr.ip().is_loopback());
            assert!(
                (LOWEST_PORT..ephemeral_floor()).contains(&addr.port()),
                "{addr}"
            );
            assert!(seen.insert(addr.port()), "{addr} handed out twice");
            if protocol != Protocol::Udp {
                drop(TcpListener::bind(addr).unwrap());
            }
            if protocol != Protocol::Tcp {
                drop(UdpSocket::bind(addr).unwrap());
            }
        }
    }

    #[test]
    fn a_taken_port_is_skipped() {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (t, u) = (
            tcp.local_addr().unwrap().port(),
            udp.local_addr().unwrap().port(),
        );
        let other = free_loopback_port(Protocol::Both).unwrap().port();
        assert_eq!(first_free(Protocol::Tcp, [t, other]).unwrap().port(), other);
        assert_eq!(first_free(Protocol::Udp, [u, other]).unwrap().port(), other);
        assert_eq!(
            first_free(Protocol::Both, [t, u, other]).unwrap().port(),
            other
        );
        assert_eq!(first_free(Protocol::Tcp, [t]), None);
    }
}
