//! Our own requirements of the driver: exactly-once sessions, isolation of
//! slow state machines, quiet idle groups, leadership balance and events.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use raft_api::{Entry, GroupId, LogId, LogStore, NodeId, StateMachine, StorageError};
use raft_node::driver::{Consistency, Event, Node, NodeConfig, ProposeResult};
use raft_node::session::Session;
use raft_node::{MembershipChange, ProposeError};
use storage_mem::{KvCommand, KvResponse, KvStateMachine, MemLogStore};
use tokio::sync::{broadcast, watch};
use transport_mem::MemNetwork;

use crate::common::{Cluster, G, node_config, poll_for, put, read_retrying, stale_value};

const WAIT: Duration = Duration::from_secs(10);

fn b(s: &str) -> Bytes {
    Bytes::from(s.to_owned())
}

fn put_cmd(key: &str, value: &str) -> Bytes {
    KvCommand::Put {
        key: b(key),
        value: b(value),
    }
    .encode()
}

/// Hands leadership of `group` to `target` and waits until every node
/// agrees on it (a transfer that is abandoned is asked for again).
async fn transfer_to(c: &Cluster, group: GroupId, target: u64) {
    poll_for(
        &format!("leadership of {group} moves to node {target}"),
        WAIT,
        || async {
            let leader = c.leader(group).await;
            if leader.0 == target {
                return Some(());
            }
            let _ = c.nodes[&leader.0]
                .transfer_leader(group, Some(NodeId(target)))
                .await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        },
    )
    .await;
}

/// Ours: a command proposed in a client session is applied at most once,
/// however often it is retried: on the same leader, on a new leader after
/// a transfer, after snapshots, and on a leader restarted from its snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_make_retries_exactly_once() {
    let ids = [1, 2, 3];
    let mut c = Cluster::start(&ids, &ids).await;
    let first = c.leader(G).await.0;
    put(&c.node(first), G, "cas", "v0").await.unwrap();

    // Compare-and-set v0 -> v1. Were it applied again after "cas" is put
    // back to v0 by another client, "cas" would become v1 again.
    let session = Session::new(0xC11E_u64, 1);
    let cas = KvCommand::Cas {
        key: b("cas"),
        expected: Some(b("v0")),
        new: b("v1"),
    }
    .encode();
    let r1 = c
        .node(first)
        .propose_in_session(G, session, cas.clone())
        .await
        .expect("first application");
    assert_eq!(KvResponse::decode(&r1), Ok(KvResponse::Cas(true)));
    assert_eq!(
        read_retrying(&c.node(first), G, "cas", Consistency::Linearizable).await,
        Some(b("v1"))
    );
    put(&c.node(first), G, "cas", "v0").await.unwrap();

    // What every retry must see: the first response, and "cas" untouched.
    // A retry whose own outcome is unknown (a leadership change under
    // load) is retried again, as a client would.
    let check_retry = async |node: Node<KvStateMachine>, when: &str| {
        let r = poll_for(&format!("a retry {when} gets an answer"), WAIT, || async {
            match node.propose_in_session(G, session, cas.clone()).await {
                Ok(r) => Some(r),
                Err(
                    ProposeError::Timeout
                    | ProposeError::Unknown
                    | ProposeError::NotLeader { .. }
                    | ProposeError::TransferInProgress { .. },
                ) => None,
                Err(e) => panic!("retry {when} failed: {e}"),
            }
        })
        .await;
        assert_eq!(r, r1, "the retry {when} answers the first response");
        assert_eq!(
            read_retrying(&node, G, "cas", Consistency::Linearizable).await,
            Some(b("v0")),
            "the retry {when} was not applied again"
        );
    };
    check_retry(c.node(first), "on the same leader").await;

    let second = ids.into_iter().find(|&id| id != first).unwrap();
    transfer_to(&c, G, second).await;
    check_retry(c.node(second), "on a new leader").await;

    // Snapshots on every node, covering everything so far.
    let upto = c.node(second).metrics().await.unwrap().groups[&G].commit;
    for id in ids {
        let node = c.node(id);
        let store = c.stores[&id].clone();
        poll_for(&format!("node {id} snapshots its state"), WAIT, || async {
            let snap = store.snapshot(G).ok().flatten();
            if snap.is_some_and(|s| s.meta.last.index >= upto) {
                return Some(());
            }
            let _ = node.trigger_snapshot(G).await;
            None
        })
        .await;
    }
    check_retry(c.node(second), "after snapshots").await;

    // A node restarted on its snapshot knows the session too.
    let third = ids
        .into_iter()
        .find(|&id| id != first && id != second)
        .unwrap();
    c.kill(third).await;
    c.restart(third).await;
    let restarted = c.node(third);
    poll_for("the restarted node catches up", WAIT, || async {
        (stale_value(&restarted, G, "cas").await? == Some(b("v0"))).then_some(())
    })
    .await;
    transfer_to(&c, G, third).await;
    check_retry(c.node(third), "on a leader restarted from its snapshot").await;

    // The session goes on: the next command applies; the old one is stale.
    let next = KvCommand::Cas {
        key: b("cas"),
        expected: Some(b("v0")),
        new: b("v2"),
    }
    .encode();
    let r2 = c
        .node(third)
        .propose_in_session(G, Session::new(0xC11E_u64, 2), next)
        .await
        .unwrap();
    assert_eq!(KvResponse::decode(&r2), Ok(KvResponse::Cas(true)));
    assert_eq!(
        c.node(third)
            .propose_in_session(G, session, cas.clone())
            .await,
        Err(ProposeError::Stale)
    );
    assert_eq!(
        read_retrying(&c.node(third), G, "cas", Consistency::Linearizable).await,
        Some(b("v2"))
    );
    c.shutdown().await;
}

/// The group whose state machine is slow in the test below.
const SLOW: GroupId = GroupId(2);
const FAST: GroupId = GroupId(1);

/// A shared gate: open or closed, awaited by the slow state machines.
#[derive(Clone)]
struct Gate(Arc<watch::Sender<bool>>);

impl Gate {
    fn new_open() -> Self {
        Self(Arc::new(watch::Sender::new(true)))
    }

    fn set_open(&self, open: bool) {
        self.0.send_replace(open);
    }

    async fn wait_open(&self) {
        let mut rx = self.0.subscribe();
        let ok = rx.wait_for(|open| *open).await.is_ok();
        assert!(ok, "the gate outlives the state machines");
    }
}

/// A key-value state machine whose `apply` for group 2 first waits for the
/// gate to be open (group 1 never waits).
struct Gated {
    group: GroupId,
    inner: KvStateMachine,
    gate: Gate,
}

impl Gated {
    fn new(group: GroupId, gate: Gate) -> Self {
        Self {
            group,
            inner: KvStateMachine::new(),
            gate,
        }
    }

    fn get(&self, key: &str) -> Option<Bytes> {
        self.inner.get(key.as_bytes())
    }
}

impl StateMachine for Gated {
    fn apply(&mut self, entries: &[Entry]) -> impl Future<Output = Vec<Bytes>> + Send {
        let gate = (self.group == SLOW).then(|| self.gate.clone());
        async move {
            if let Some(gate) = gate {
                gate.wait_open().await;
            }
            self.inner.apply(entries).await
        }
    }

    fn last_applied(&self) -> LogId {
        self.inner.last_applied()
    }

    fn snapshot(&self) -> impl Future<Output = Result<Bytes, StorageError>> + Send {
        self.inner.snapshot()
    }

    fn restore(
        &mut self,
        last: LogId,
        image: Bytes,
    ) -> impl Future<Output = Result<(), StorageError>> + Send {
        self.inner.restore(last, image)
    }
}

/// Ours: a slow state machine slows its own group only. While group 2's
/// state machine is held, its proposals and reads wait, and group 1 still
/// commits, applies and serves reads; once released, group 2 completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_state_machine_does_not_delay_other_groups() {
    let net = MemNetwork::new();
    let gate = Gate::new_open();
    let voters: Vec<NodeId> = [1, 2, 3].map(NodeId).to_vec();
    let groups = [(FAST, voters.clone()), (SLOW, voters.clone())];
    let mut nodes: BTreeMap<u64, Node<Gated>> = BTreeMap::new();
    for id in 1..=3 {
        let mut config = node_config(id);
        // Group 2's calls wait on the gate as long as the test holds it;
        // they must not time out meanwhile.
        config.propose_timeout = Duration::from_secs(60);
        config.read_timeout = Duration::from_secs(60);
        // Leaderships stay where elections put them (not the point here).
        config.balance_leaders = false;
        let gate = gate.clone();
        let node = Node::start(
            config,
            net.transport(NodeId(id)),
            MemLogStore::new(),
            move |group| Gated::new(group, gate.clone()),
            &groups,
        )
        .await
        .expect("node starts");
        nodes.insert(id, node);
    }
    let leader_of = async |group: GroupId| -> Node<Gated> {
        poll_for(&format!("a leader of {group}"), WAIT, || async {
            nodes.values().find(|n| n.is_leader(group)).cloned()
        })
        .await
    };
    let propose_until_ok = async |group: GroupId, key: &str, value: &str| {
        poll_for(&format!("put {key} in {group}"), WAIT, || async {
            leader_of(group)
                .await
                .propose(group, put_cmd(key, value))
                .await
                .ok()
        })
        .await
    };
    propose_until_ok(FAST, "warm", "1").await;
    propose_until_ok(SLOW, "warm", "2").await;

    gate.set_open(false);
    let slow_leader = leader_of(SLOW).await;
    let slow_before = slow_leader.metrics().await.unwrap().groups[&SLOW].last_index;
    let slow_follower = nodes
        .values()
        .find(|n| n.id() != slow_leader.id())
        .unwrap()
        .clone();
    let mut blocked: Vec<tokio::task::JoinHandle<ProposeResult>> = Vec::new();
    for i in 0..3 {
        let n = if i == 0 {
            slow_follower.clone()
        } else {
            slow_leader.clone()
        };
        blocked.push(tokio::spawn(async move {
            n.propose(SLOW, put_cmd(&format!("slow{i}"), "done")).await
        }));
    }
    // Group 2 commits the proposals (consensus goes on) but cannot apply.
    poll_for("group 2 commits the held proposals", WAIT, || async {
        let m = slow_leader.metrics().await.ok()?;
        let g = &m.groups[&SLOW];
        (g.commit.0 >= slow_before.0 + 3 && g.applied < g.commit).then_some(())
    })
    .await;
    // A linearizable read started now must see those proposals, so it
    // waits for the state machine too.
    let blocked_read = tokio::spawn({
        let n = slow_leader.clone();
        async move {
            n.read_with(SLOW, Consistency::Linearizable, |sm: &Gated| {
                sm.get("slow2")
            })
            .await
        }
    });

    // Group 1 takes writes and serves reads on every node meanwhile.
    for i in 0..20 {
        let r = propose_until_ok(FAST, "fast", &i.to_string()).await;
        assert_eq!(KvResponse::decode(&r), Ok(KvResponse::Done));
    }
    for n in nodes.values() {
        let v = poll_for("a linearizable read of group 1", WAIT, || async {
            n.read_with(FAST, Consistency::Linearizable, |sm: &Gated| sm.get("fast"))
                .await
                .ok()
        })
        .await;
        assert_eq!(v, Some(b("19")), "group 1 read on node {}", n.id());
    }
    for (i, h) in blocked.iter().enumerate() {
        assert!(
            !h.is_finished(),
            "group 2 proposal {i} completed while its state machine was held"
        );
    }
    if blocked_read.is_finished() {
        let r = blocked_read.await.unwrap();
        panic!("group 2 read completed while its state machine was held: {r:?}");
    }
    for n in nodes.values() {
        let m = n.metrics().await.unwrap();
        assert!(
            m.groups[&SLOW].applied < m.groups[&SLOW].commit,
            "node {} applied group 2 entries through a closed gate",
            n.id()
        );
    }

    gate.set_open(true);
    for (i, h) in blocked.into_iter().enumerate() {
        let r = tokio::time::timeout(WAIT, h)
            .await
            .unwrap_or_else(|_| panic!("group 2 proposal {i} completes once released"))
            .unwrap();
        let r = r.unwrap_or_else(|e| panic!("group 2 proposal {i} failed: {e}"));
        assert_eq!(KvResponse::decode(&r), Ok(KvResponse::Done));
    }
    let read = tokio::time::timeout(WAIT, blocked_read)
        .await
        .expect("group 2 read completes once released")
        .unwrap();
    assert_eq!(read, Ok(Some(b("done"))), "the held group 2 read");
    for n in nodes.values() {
        let v = poll_for("a linearizable read of group 2", WAIT, || async {
            n.read_with(SLOW, Consistency::Linearizable, |sm: &Gated| {
                sm.get("slow2")
            })
            .await
            .ok()
        })
        .await;
        assert_eq!(v, Some(b("done")), "group 2 read on node {}", n.id());
    }
    for n in nodes.values() {
        n.shutdown().await;
    }
}

/// Starts a cluster of nodes `ids` hosting `groups`, every node with the
/// config `tweak` makes of the usual test config.
async fn cluster_with(ids: &[u64], groups: &[GroupId], tweak: impl Fn(&mut NodeConfig)) -> Cluster {
    let mut c = Cluster::start_groups(&[], ids, groups).await;
    for &id in ids {
        let mut config = node_config(id);
        tweak(&mut config);
        c.spawn(id, config, ids, groups).await;
    }
    c
}

/// Ours: an idle group goes quiet: once its leader has had nothing to do
/// for `quiesce_after_ms`, no node sends anything; a proposal wakes the
/// group, it commits, and messages flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_groups_send_no_heartbeats_and_wake_on_demand() {
    let ids = [1, 2, 3];
    let c = cluster_with(&ids, &[G], |config| {
        config.raft.quiesce_after_ms = 200;
    })
    .await;
    let leader = c.leader(G).await;
    put(&c.nodes[&leader.0], G, "a", "1").await.unwrap();

    // Nothing pending: every node holds, has committed and has applied
    // the leader's whole log.
    let last = c.nodes[&leader.0].metrics().await.unwrap().groups[&G].last_index;
    for (id, node) in &c.nodes {
        poll_for(&format!("node {id} is up to date"), WAIT, || async {
            let m = node.metrics().await.ok()?;
            let g = &m.groups[&G];
            (g.last_index == last && g.commit == last && g.applied == last).then_some(())
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Silence: a whole second in which no node sends anything.
    let pairs: Vec<(NodeId, NodeId)> = ids
        .iter()
        .flat_map(|&a| ids.iter().map(move |&b| (NodeId(a), NodeId(b))))
        .filter(|(a, b)| a != b)
        .collect();
    let sent = |net: &MemNetwork| -> Vec<((NodeId, NodeId), u64)> {
        pairs
            .iter()
            .map(|&(a, b)| ((a, b), net.sent_between(a, b)))
            .filter(|(_, n)| *n > 0)
            .collect()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        c.net.reset_counters();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let noisy = sent(&c.net);
        if noisy.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the idle group never went quiet: batches sent in the last second: {noisy:?}"
        );
    }
    assert_eq!(
        c.leader(G).await,
        leader,
        "the quiet group keeps its leader"
    );
    for (id, node) in &c.nodes {
        let m = node.metrics().await.unwrap();
        assert!(
            m.groups[&G].quiet,
            "node {id}'s metrics report the quiet group as quiet"
        );
    }

    // A proposal wakes the group; it commits and messages flow again.
    c.net.reset_counters();
    put(&c.nodes[&leader.0], G, "b", "2")
        .await
        .expect("a proposal to a quiet group commits");
    for &id in &ids {
        if id != leader.0 {
            assert!(
                c.net.sent_between(leader, NodeId(id)) > 0,
                "the woken leader sends to node {id}"
            );
            assert_eq!(
                read_retrying(&c.node(id), G, "b", Consistency::Linearizable).await,
                Some(b("2"))
            );
        }
    }
    c.shutdown().await;
}

/// Ours: a node that leads more than its share of groups hands some over,
/// until each of three nodes leads two of six groups; then leaderships stay
/// put over several balance intervals (no flapping).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_groups_leaders_are_balanced() {
    let ids = [1, 2, 3];
    let groups: Vec<GroupId> = (1..=6).map(GroupId).collect();
    let interval = Duration::from_millis(300);
    let c = cluster_with(&ids, &groups, |config| {
        config.balance_leaders = true;
        config.balance_interval = interval;
    })
    .await;

    // Group -> leader, when every group has exactly one node that leads it
    // and every node knows that leader.
    let leaders = || -> Option<BTreeMap<GroupId, u64>> {
        let mut map = BTreeMap::new();
        for &g in &groups {
            let leading: Vec<u64> = c
                .nodes
                .iter()
                .filter(|(_, n)| n.is_leader(g))
                .map(|(id, _)| *id)
                .collect();
            let &[l] = leading.as_slice() else {
                return None;
            };
            if c.nodes.values().any(|n| n.leader(g) != Some(NodeId(l))) {
                return None;
            }
            map.insert(g, l);
        }
        Some(map)
    };
    let balanced = |map: &BTreeMap<GroupId, u64>| {
        ids.iter()
            .all(|id| map.values().filter(|l| *l == id).count() == 2)
    };
    let mut settled = None;
    poll_for("each node leads exactly two groups", WAIT, || {
        let now = leaders().filter(balanced);
        // The same balanced map twice in a row (not a transfer's midpoint).
        let result = match (&settled, &now) {
            (Some(a), Some(b)) if a == b => Some(()),
            _ => None,
        };
        settled = now;
        async move { result }
    })
    .await;
    let settled = settled.unwrap();

    // No flapping: the same leaders for five balance intervals.
    for _ in 0..30 {
        tokio::time::sleep(interval / 6).await;
        let now = leaders();
        assert_eq!(
            now.as_ref(),
            Some(&settled),
            "leaderships moved after they were balanced"
        );
    }
    c.shutdown().await;
}

/// Waits for the first event on `rx` that `want` accepts.
async fn expect_event(
    rx: &mut broadcast::Receiver<Event>,
    what: &str,
    want: impl Fn(&Event) -> bool,
) -> Event {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(e)) if want(&e) => return e,
            Ok(Ok(e)) => seen.push(e),
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(broadcast::error::RecvError::Closed)) => {
                panic!("events ended before {what}; seen: {seen:?}")
            }
            Err(_) => panic!("no event {what} within {WAIT:?}; seen: {seen:?}"),
        }
    }
}

/// Ours: events tell who leads a group and when its membership changes:
/// subscribers see GroupCreated and LeaderChanged for a new group, then
/// MembershipChanged once a learner is added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_report_leader_and_membership_changes() {
    let ids = [1, 2, 3];
    // The nodes start without groups, so nothing happens before every
    // subscriber listens.
    let mut c = Cluster::start_groups(&ids, &ids, &[]).await;
    let mut rxs: BTreeMap<u64, broadcast::Receiver<Event>> =
        ids.iter().map(|&id| (id, c.node(id).subscribe())).collect();
    let voters: Vec<NodeId> = ids.iter().copied().map(NodeId).collect();
    for &id in &ids {
        c.node(id).create_group(G, voters.clone()).await.unwrap();
    }
    let leader = c.leader(G).await;
    for (id, rx) in rxs.iter_mut() {
        expect_event(rx, &format!("GroupCreated on node {id}"), |e| {
            *e == Event::GroupCreated(G)
        })
        .await;
        expect_event(rx, &format!("LeaderChanged to {leader} on node {id}"), |e| {
            matches!(e, Event::LeaderChanged { group, leader: Some(l), .. } if *group == G && *l == leader)
        })
        .await;
    }

    // A fourth node joins as a learner.
    c.spawn(4, node_config(4), &[], &[G]).await;
    let mut rx4 = c.node(4).subscribe();
    let leader_node = c.node(leader.0);
    poll_for("the learner is added", WAIT, || async {
        leader_node
            .change_membership(G, MembershipChange::AddLearner(NodeId(4)))
            .await
            .ok()
    })
    .await;
    for (id, rx) in rxs.iter_mut() {
        expect_event(
            rx,
            &format!("MembershipChanged with learner 4 on node {id}"),
            |e| {
                matches!(e, Event::MembershipChanged { group, membership }
                if *group == G && membership.is_learner(NodeId(4)) && membership.voters.len() == 3)
            },
        )
        .await;
    }
    // The learner learns both as well, in whichever order.
    let (mut knows_leader, mut knows_membership) = (false, false);
    while !(knows_leader && knows_membership) {
        let e = expect_event(&mut rx4, "LeaderChanged and MembershipChanged on the learner", |e| {
            matches!(e, Event::LeaderChanged { group, leader: Some(l), .. } if *group == G && *l == leader)
                || matches!(e, Event::MembershipChanged { group, membership }
                    if *group == G && membership.is_learner(NodeId(4)))
        })
        .await;
        match e {
            Event::LeaderChanged { .. } => knows_leader = true,
            _ => knows_membership = true,
        }
    }
    c.shutdown().await;
}
