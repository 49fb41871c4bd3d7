//! `DnsDiscovery` against a real DNS server on loopback: a hickory-server
//! `ServerFuture` serving an in-memory zone `raft.test.` over UDP, whose
//! record sets the tests swap at run time.

#![cfg(feature = "dns")]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use discovery::{DnsConfig, DnsDiscovery, DnsKind};
use hickory_server::ServerFuture;
use hickory_server::authority::{AuthorityObject, Catalog, ZoneType};
use hickory_server::proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordSet, RecordType, RrKey};
use hickory_server::store::in_memory::InMemoryAuthority;
use raft_api::{Discovery, DiscoveryError, NodeId, Peer, PeerChange};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

const ZONE: &str = "raft.test.";
const REFRESH: Duration = Duration::from_millis(100);
/// How long a test waits for something that should happen within a few
/// refreshes; generous so that a loaded machine does not fail the test.
const DEADLINE: Duration = Duration::from_secs(20);

fn name(text: &str) -> Name {
    Name::from_ascii(text).unwrap()
}

fn a(ip: &str) -> RData {
    RData::A(A(ip.parse::<Ipv4Addr>().unwrap()))
}

fn aaaa(ip: &str) -> RData {
    RData::AAAA(AAAA(ip.parse::<Ipv6Addr>().unwrap()))
}

fn srv(priority: u16, port: u16, target: &str) -> RData {
    RData::SRV(SRV::new(priority, 0, port, name(target)))
}

fn peer(id: Option<u64>, address: &str) -> Peer {
    Peer {
        id: id.map(NodeId),
        address: address.to_owned(),
    }
}

/// An authoritative server for `raft.test.` on 127.0.0.1, UDP only.
struct TestDns {
    addr: SocketAddr,
    zone: Arc<InMemoryAuthority>,
    server: ServerFuture<Catalog>,
}

impl TestDns {
    async fn start() -> Self {
        let origin = name(ZONE);
        let mut zone = InMemoryAuthority::empty(origin.clone(), ZoneType::Primary, false);
        let soa = SOA::new(
            name("ns.raft.test."),
            name("admin.raft.test."),
            1,
            3600,
            600,
            86400,
            0,
        );
        assert!(zone.upsert_mut(Record::from_rdata(origin.clone(), 3600, RData::SOA(soa)), 1));
        let zone = Arc::new(zone);
        let mut catalog = Catalog::new();
        let authority: Arc<dyn AuthorityObject> = zone.clone();
        catalog.upsert(LowerName::new(&origin), vec![authority]);
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let mut server = ServerFuture::new(catalog);
        server.register_socket(socket);
        Self { addr, zone, server }
    }

    /// Replaces the records of `owner` and `kind` by `data` in one step (an
    /// empty `data` removes them), so a query sees the old or the new set.
    async fn set(&self, owner: &str, kind: RecordType, data: Vec<RData>) {
        let owner = name(owner);
        let key = RrKey::new(LowerName::new(&owner), kind);
        let mut records = self.zone.records_mut().await;
        if data.is_empty() {
            records.remove(&key);
            return;
        }
        let mut set = RecordSet::with_ttl(owner, kind, 1);
        for rdata in data {
            assert!(set.add_rdata(rdata));
        }
        records.insert(key, Arc::new(set));
    }

    fn config(&self, record_name: &str, kind: DnsKind) -> DnsConfig {
        DnsConfig::new(record_name, kind)
            .with_refresh(REFRESH)
            .with_timeout(Duration::from_millis(250))
            .with_name_servers(vec![self.addr])
    }

    async fn stop(mut self) {
        self.server.shutdown_gracefully().await.unwrap();
    }
}

/// Starts a watch whose changes arrive on the returned channel.
fn watch(discovery: &DnsDiscovery) -> mpsc::UnboundedReceiver<PeerChange> {
    let (tx, rx) = mpsc::unbounded_channel();
    discovery.watch(Box::new(move |change| {
        let _ = tx.send(change);
    }));
    rx
}

/// Receives `n` changes, failing after [`DEADLINE`].
async fn next_changes(rx: &mut mpsc::UnboundedReceiver<PeerChange>, n: usize) -> Vec<PeerChange> {
    let mut changes = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while changes.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(change)) => changes.push(change),
            Ok(None) => panic!("watch stopped; got {changes:?}"),
            Err(_) => panic!("expected {n} changes within {DEADLINE:?}; got {changes:?}"),
        }
    }
    changes
}

/// Asserts that nothing arrives during `period`.
async fn assert_quiet(rx: &mut mpsc::UnboundedReceiver<PeerChange>, period: Duration) {
    if let Ok(change) = timeout(period, rx.recv()).await {
        panic!("expected no change, got {change:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_records_give_every_address_on_the_default_port() {
    let dns = TestDns::start().await;
    dns.set(
        "peers.raft.test.",
        RecordType::A,
        vec![a("10.0.0.2"), a("10.0.0.1")],
    )
    .await;
    dns.set("peers.raft.test.", RecordType::AAAA, vec![aaaa("fd00::1")])
        .await;
    dns.set("v6only.raft.test.", RecordType::AAAA, vec![aaaa("fd00::9")])
        .await;

    let discovery = DnsDiscovery::new(dns.config(
        "peers.raft.test.",
        DnsKind::AddressRecords { default_port: 7000 },
    ))
    .unwrap();
    assert_eq!(
        discovery.peers().await.unwrap(),
        [
            peer(None, "10.0.0.1:7000"),
            peer(None, "10.0.0.2:7000"),
            peer(None, "[fd00::1]:7000"),
        ]
    );

    let v6only = DnsDiscovery::new(dns.config(
        "v6only.raft.test.",
        DnsKind::AddressRecords { default_port: 1 },
    ))
    .unwrap();
    assert_eq!(v6only.peers().await.unwrap(), [peer(None, "[fd00::9]:1")]);
    dns.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_without_records_is_an_error() {
    let dns = TestDns::start().await;
    let discovery = DnsDiscovery::new(dns.config(
        "missing.raft.test.",
        DnsKind::AddressRecords { default_port: 7000 },
    ))
    .unwrap();
    let error = discovery.peers().await.unwrap_err();
    assert!(
        matches!(
            &error,
            DiscoveryError::Resolve { name, detail }
                if name == "missing.raft.test." && detail == "no A or AAAA records"
        ),
        "{error}"
    );

    let srv = DnsDiscovery::new(dns.config("_raft._tcp.raft.test.", DnsKind::Srv)).unwrap();
    let error = srv.peers().await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "cannot resolve `_raft._tcp.raft.test.`: no SRV record with an address"
    );
    dns.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_records_give_targets_ports_and_ids() {
    let dns = TestDns::start().await;
    dns.set(
        "_raft._tcp.raft.test.",
        RecordType::SRV,
        vec![
            srv(0, 7001, "n1.raft.test."),
            srv(0, 7002, "n2.raft.test."),
            srv(0, 7003, "other.raft.test."),
            // A second record for node 1, of lower preference: skipped.
            srv(10, 7009, "n1.raft.test."),
            // A target without addresses: skipped.
            srv(0, 7004, "n4.raft.test."),
        ],
    )
    .await;
    // Node 1 has both families: its one peer takes the IPv4 address.
    dns.set("n1.raft.test.", RecordType::A, vec![a("10.0.0.1")])
        .await;
    dns.set("n1.raft.test.", RecordType::AAAA, vec![aaaa("fd00::1")])
        .await;
    dns.set("n2.raft.test.", RecordType::AAAA, vec![aaaa("fd00::2")])
        .await;
    // No `n<id>` label: one peer per address, ids unknown.
    dns.set(
        "other.raft.test.",
        RecordType::A,
        vec![a("10.0.0.3"), a("10.0.0.4")],
    )
    .await;

    let discovery = DnsDiscovery::new(dns.config("_raft._tcp.raft.test.", DnsKind::Srv)).unwrap();
    assert_eq!(
        discovery.peers().await.unwrap(),
        [
            peer(Some(1), "10.0.0.1:7001"),
            peer(Some(2), "[fd00::2]:7002"),
            peer(None, "10.0.0.3:7003"),
            peer(None, "10.0.0.4:7003"),
        ]
    );
    dns.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reports_added_and_removed_addresses() {
    let dns = TestDns::start().await;
    dns.set(
        "peers.raft.test.",
        RecordType::A,
        vec![a("10.0.0.1"), a("10.0.0.2")],
    )
    .await;
    let discovery = DnsDiscovery::new(dns.config(
        "peers.raft.test.",
        DnsKind::AddressRecords { default_port: 7000 },
    ))
    .unwrap();
    discovery.peers().await.unwrap();
    let mut changes = watch(&discovery);
    // The peers just returned are the baseline: nothing to report.
    assert_quiet(&mut changes, 5 * REFRESH).await;

    dns.set(
        "peers.raft.test.",
        RecordType::A,
        vec![a("10.0.0.2"), a("10.0.0.3")],
    )
    .await;
    assert_eq!(
        next_changes(&mut changes, 2).await,
        [
            PeerChange::Down(peer(None, "10.0.0.1:7000")),
            PeerChange::Up(peer(None, "10.0.0.3:7000")),
        ]
    );

    dns.set("peers.raft.test.", RecordType::AAAA, vec![aaaa("fd00::4")])
        .await;
    assert_eq!(
        next_changes(&mut changes, 1).await,
        [PeerChange::Up(peer(None, "[fd00::4]:7000"))]
    );
    assert_quiet(&mut changes, 5 * REFRESH).await;
    dns.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reports_srv_changes_by_id() {
    let dns = TestDns::start().await;
    let name = "_raft._tcp.raft.test.";
    dns.set(
        name,
        RecordType::SRV,
        vec![srv(0, 7000, "n1.raft.test."), srv(0, 7000, "n2.raft.test.")],
    )
    .await;
    dns.set("n1.raft.test.", RecordType::A, vec![a("10.0.0.1")])
        .await;
    dns.set("n2.raft.test.", RecordType::A, vec![a("10.0.0.2")])
        .await;
    let discovery = DnsDiscovery::new(dns.config(name, DnsKind::Srv)).unwrap();

    // Without an earlier `peers()`, every peer is first reported up.
    let mut changes = watch(&discovery);
    assert_eq!(
        next_changes(&mut changes, 2).await,
        [
            PeerChange::Up(peer(Some(1), "10.0.0.1:7000")),
            PeerChange::Up(peer(Some(2), "10.0.0.2:7000")),
        ]
    );

    // Node 1 moves: one Up with its new address, no Down.
    dns.set("n1.raft.test.", RecordType::A, vec![a("10.0.0.11")])
        .await;
    assert_eq!(
        next_changes(&mut changes, 1).await,
        [PeerChange::Up(peer(Some(1), "10.0.0.11:7000"))]
    );

    // Node 2 leaves and node 3 joins, on another port.
    dns.set("n3.raft.test.", RecordType::A, vec![a("10.0.0.3")])
        .await;
    dns.set(
        name,
        RecordType::SRV,
        vec![srv(0, 7000, "n1.raft.test."), srv(0, 7003, "n3.raft.test.")],
    )
    .await;
    assert_eq!(
        next_changes(&mut changes, 2).await,
        [
            PeerChange::Down(peer(Some(2), "10.0.0.2:7000")),
            PeerChange::Up(peer(Some(3), "10.0.0.3:7003")),
        ]
    );
    assert_quiet(&mut changes, 5 * REFRESH).await;
    dns.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_name_removes_no_one() {
    let dns = TestDns::start().await;
    dns.set(
        "peers.raft.test.",
        RecordType::A,
        vec![a("10.0.0.1"), a("10.0.0.2")],
    )
    .await;
    let discovery = DnsDiscovery::new(dns.config(
        "peers.raft.test.",
        DnsKind::AddressRecords { default_port: 7000 },
    ))
    .unwrap();
    discovery.peers().await.unwrap();
    let mut changes = watch(&discovery);

    // No records at all is treated as a failure: the peers are kept.
    dns.set("peers.raft.test.", RecordType::A, Vec::new()).await;
    assert!(discovery.peers().await.is_err());
    assert_quiet(&mut changes, 10 * REFRESH).await;

    // When records come back, changes are relative to the peers kept.
    dns.set(
        "peers.raft.test.",
        RecordType::A,
        vec![a("10.0.0.2"), a("10.0.0.5")],
    )
    .await;
    assert_eq!(
        next_changes(&mut changes, 2).await,
        [
            PeerChange::Down(peer(None, "10.0.0.1:7000")),
            PeerChange::Up(peer(None, "10.0.0.5:7000")),
        ]
    );
    dns.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_an_error_and_watch_reports_nothing() {
    let dns = TestDns::start().await;
    dns.set("peers.raft.test.", RecordType::A, vec![a("10.0.0.1")])
        .await;
    let config = dns.config(
        "peers.raft.test.",
        DnsKind::AddressRecords { default_port: 7000 },
    );
    let discovery = DnsDiscovery::new(config.clone()).unwrap();
    assert_eq!(
        discovery.peers().await.unwrap(),
        [peer(None, "10.0.0.1:7000")]
    );
    let mut changes = watch(&discovery);
    dns.stop().await;

    // The server is gone: look-ups fail, and the watch keeps its peers.
    let error = discovery.peers().await.unwrap_err();
    assert!(
        matches!(&error, DiscoveryError::Resolve { name, .. } if name == "peers.raft.test."),
        "{error}"
    );
    assert_quiet(&mut changes, Duration::from_secs(2)).await;

    // A discovery that never reached the server reports nothing either.
    let never = DnsDiscovery::new(config).unwrap();
    let mut never_changes = watch(&never);
    assert!(never.peers().await.is_err());
    assert_quiet(&mut never_changes, Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_discovery_stops_its_watch_tasks() {
    let dns = TestDns::start().await;
    dns.set("peers.raft.test.", RecordType::A, vec![a("10.0.0.1")])
        .await;
    let discovery = DnsDiscovery::new(dns.config(
        "peers.raft.test.",
        DnsKind::AddressRecords { default_port: 7000 },
    ))
    .unwrap();
    let mut first = watch(&discovery);
    let mut second = watch(&discovery);
    assert_eq!(next_changes(&mut first, 1).await.len(), 1);
    assert_eq!(next_changes(&mut second, 1).await.len(), 1);

    drop(discovery);
    // Each task drops its callback, and with it the channel's sender.
    for rx in [&mut first, &mut second] {
        match timeout(DEADLINE, rx.recv()).await {
            Ok(None) => {}
            other => panic!("watch task still running: {other:?}"),
        }
    }
    dns.stop().await;
}
