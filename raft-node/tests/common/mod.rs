//! A cluster of in-process nodes for the acceptance tests.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::Range;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use raft_api::{
    Config, Entry, GroupId, HardState, LogId, LogIndex, LogState, LogStore, NodeId, Snapshot,
    StorageError,
};
use raft_node::ProposeError;
use raft_node::driver::{Consistency, Node, NodeConfig};
use storage_mem::{KvCommand, KvResponse, KvStateMachine, MemLogStore};
use tokio::sync::Notify;
use transport_mem::MemNetwork;

pub const G: GroupId = GroupId(1);

/// Fast timeouts for tests.
pub fn raft_config() -> Config {
    Config {
        election_timeout_min_ms: 150,
        election_timeout_max_ms: 300,
        heartbeat_interval_ms: 30,
        lease_clock_drift_ms: 50,
        ..Config::default()
    }
}

pub fn node_config(id: u64) -> NodeConfig {
    let mut c = NodeConfig::new(NodeId(id));
    c.raft = raft_config();
    c.propose_timeout = Duration::from_secs(3);
    c.read_timeout = Duration::from_secs(3);
    c
}

/// A `MemLogStore` shared between a running node and the test, so a node
/// can be stopped and started again on the same durable state (or have its
/// unflushed writes dropped, as by power loss).
#[derive(Clone, Default)]
pub struct SharedStore(Arc<Mutex<MemLogStore>>, Arc<FlushGate>);

/// Holds flushes back while closed: a disk that stalls.
#[derive(Default)]
pub struct FlushGate {
    closed: AtomicBool,
    opened: Notify,
}

impl FlushGate {
    async fn wait_open(&self) {
        loop {
            let opened = self.opened.notified();
            if !self.closed.load(Ordering::SeqCst) {
                return;
            }
            opened.await;
        }
    }
}

impl SharedStore {
    fn with<R>(&self, f: impl FnOnce(&mut MemLogStore) -> R) -> R {
        f(&mut self.0.lock().unwrap())
    }

    /// Power loss: unflushed writes are gone.
    pub fn crash(&self) {
        self.with(|s| s.crash());
    }

    /// Flushes from now on wait (with their writes staged) until
    /// [`release_flushes`](Self::release_flushes).
    pub fn hold_flushes(&self) {
        self.1.closed.store(true, Ordering::SeqCst);
    }

    /// Lets held flushes finish.
    pub fn release_flushes(&self) {
        self.1.closed.store(false, Ordering::SeqCst);
        self.1.opened.notify_waiters();
    }

    /// A failing disk: while on, every write and flush fails (see
    /// [`MemLogStore::fail_writes`]).
    pub fn fail_writes(&self, on: bool) {
        self.with(|s| s.fail_writes(on));
    }

    /// Flushes done so far.
    pub fn flushes(&self) -> u64 {
        self.with(|s| s.flushes())
    }

    /// Runs `f` holding the store's lock: the node's loop stands still at
    /// its next write to the store until `f` returns (a blocked thread or a
    /// stopped process).
    pub fn while_locked(&self, f: impl FnOnce()) {
        let _held = self.0.lock().unwrap();
        f();
    }
}

/// Polls a future the in-memory store returns; it is always ready.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the in-memory store never waits"),
    }
}

impl LogStore for SharedStore {
    fn groups(&self) -> Result<Vec<GroupId>, StorageError> {
        self.with(|s| s.groups())
    }
    fn hard_state(&self, group: GroupId) -> Result<HardState, StorageError> {
        self.with(|s| s.hard_state(group))
    }
    fn log_state(&self, group: GroupId) -> Result<LogState, StorageError> {
        self.with(|s| s.log_state(group))
    }
    fn entries(
        &self,
        group: GroupId,
        range: Range<LogIndex>,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        self.with(|s| s.entries(group, range, max_bytes))
    }
    fn save_hard_state(&mut self, group: GroupId, state: HardState) -> Result<(), StorageError> {
        self.with(|s| s.save_hard_state(group, state))
    }
    fn append(&mut self, group: GroupId, entries: &[Entry]) -> Result<(), StorageError> {
        self.with(|s| s.append(group, entries))
    }
    fn append_owned(&mut self, group: GroupId, entries: Vec<Entry>) -> Result<(), StorageError> {
        self.with(|s| s.append_owned(group, entries))
    }
    fn truncate(&mut self, group: GroupId, from: LogIndex) -> Result<(), StorageError> {
        self.with(|s| s.truncate(group, from))
    }
    fn compact(&mut self, group: GroupId, upto: LogId) -> Result<(), StorageError> {
        self.with(|s| s.compact(group, upto))
    }
    fn save_snapshot(&mut self, group: GroupId, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.with(|s| s.save_snapshot(group, snapshot))
    }
    fn snapshot(&self, group: GroupId) -> Result<Option<Snapshot>, StorageError> {
        self.with(|s| s.snapshot(group))
    }
    fn flush(&mut self) -> impl Future<Output = Result<(), StorageError>> + Send {
        let (store, gate) = (self.0.clone(), self.1.clone());
        async move {
            gate.wait_open().await;
            let mut store = store.lock().unwrap();
            ready(store.flush())
        }
    }
}

pub struct Cluster {
    pub net: MemNetwork,
    pub nodes: BTreeMap<u64, Node<KvStateMachine>>,
    pub stores: BTreeMap<u64, SharedStore>,
    /// Groups and voters each node was started with.
    pub started_with: BTreeMap<u64, (Vec<u64>, Vec<GroupId>)>,
}

impl Cluster {
    /// Starts nodes `ids`, every one hosting group G with `voters`.
    pub async fn start(ids: &[u64], voters: &[u64]) -> Self {
        Self::start_groups(ids, voters, &[G]).await
    }

    /// No nodes yet: [`spawn`](Self::spawn) adds them.
    pub fn empty() -> Self {
        Self {
            net: MemNetwork::new(),
            nodes: BTreeMap::new(),
            stores: BTreeMap::new(),
            started_with: BTreeMap::new(),
        }
    }

    pub async fn start_groups(ids: &[u64], voters: &[u64], groups: &[GroupId]) -> Self {
        let mut c = Self::empty();
        for &id in ids {
            c.spawn(id, node_config(id), voters, groups).await;
        }
        c
    }

    /// Starts node `id` (on its existing store, if it ran before).
    pub async fn spawn(&mut self, id: u64, config: NodeConfig, voters: &[u64], groups: &[GroupId]) {
        self.started_with
            .insert(id, (voters.to_vec(), groups.to_vec()));
        let store = self.stores.entry(id).or_default().clone();
        let voters: Vec<NodeId> = voters.iter().copied().map(NodeId).collect();
        let groups: Vec<(GroupId, Vec<NodeId>)> =
            groups.iter().map(|g| (*g, voters.clone())).collect();
        let node = Node::start(
            config,
            self.net.transport(NodeId(id)),
            store,
            |_| KvStateMachine::new(),
            &groups,
        )
        .await
        .expect("node starts");
        self.nodes.insert(id, node);
    }

    pub fn node(&self, id: u64) -> Node<KvStateMachine> {
        self.nodes[&id].clone()
    }

    /// Stops node `id` abruptly: it stops and loses what it had not made
    /// durable (the in-process equivalent of kill -9).
    pub async fn kill(&mut self, id: u64) {
        let node = self.nodes.remove(&id).expect("running node");
        self.net.isolate(NodeId(id));
        node.shutdown().await;
        self.stores[&id].crash();
    }

    /// Starts node `id` again on its durable state.
    pub async fn restart(&mut self, id: u64) {
        let (voters, groups) = self.started_with[&id].clone();
        self.net.heal();
        self.spawn(id, node_config(id), &voters, &groups).await;
    }

    /// Waits until every running node agrees on one leader of `group`.
    pub async fn leader(&self, group: GroupId) -> NodeId {
        for _ in 0..1000 {
            let leaders: Vec<Option<NodeId>> =
                self.nodes.values().map(|n| n.leader(group)).collect();
            if let Some(Some(l)) = leaders.first()
                && leaders.iter().all(|x| *x == Some(*l))
                && self.nodes.get(&l.0).is_some_and(|n| n.is_leader(group))
            {
                return *l;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no agreed leader of {group} within 10 s");
    }

    pub async fn shutdown(self) {
        for n in self.nodes.values() {
            n.shutdown().await;
        }
    }
}

pub async fn put(
    node: &Node<KvStateMachine>,
    group: GroupId,
    key: &str,
    value: &str,
) -> Result<(), ProposeError> {
    let cmd = KvCommand::Put {
        key: Bytes::from(key.to_owned()),
        value: Bytes::from(value.to_owned()),
    };
    let r = node.propose(group, cmd.encode()).await?;
    assert_eq!(KvResponse::decode(&r).ok(), Some(KvResponse::Done));
    Ok(())
}

pub async fn get(
    node: &Node<KvStateMachine>,
    group: GroupId,
    key: &str,
    c: Consistency,
) -> Option<Bytes> {
    let key = key.as_bytes().to_vec();
    node.read_with(group, c, move |kv: &KvStateMachine| kv.get(&key))
        .await
        .expect("read")
}

/// Polls `check` until it holds, for at most 10 s; panics naming `what`.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("not within 10 s: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ----- Helpers of the Kommander and "ours" cases (tests/acceptance/). -----

/// Polls `check` every 20 ms until it yields a value, for at most `limit`;
/// panics naming `what` when it never does.
pub async fn poll_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("not within {limit:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until nodes `ids` agree on one leader of `group` that is one of
/// them and knows it leads (the other nodes of the cluster are ignored).
pub async fn leader_among(c: &Cluster, ids: &[u64], group: GroupId) -> u64 {
    poll_for(
        &format!("nodes {ids:?} agree on a leader of {group} among them"),
        Duration::from_secs(10),
        || async {
            let first = c.nodes[&ids[0]].leader(group)?;
            let agreed = ids
                .iter()
                .all(|id| c.nodes[id].leader(group) == Some(first));
            (agreed && ids.contains(&first.0) && c.nodes[&first.0].is_leader(group))
                .then_some(first.0)
        },
    )
    .await
}

/// Puts `key = value` through `node`, retrying failed attempts (leader
/// changes, transfers, elections) for up to 10 s. Puts are idempotent, so a
/// retry of an attempt whose outcome was unknown is harmless.
pub async fn put_retrying(node: &Node<KvStateMachine>, group: GroupId, key: &str, value: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match put(node, group, key, value).await {
            Ok(()) => return,
            Err(e) if tokio::time::Instant::now() >= deadline => panic!(
                "put {key}={value} on {group} through node {} kept failing for 10 s; last: {e}",
                node.id()
            ),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Reads `key` on `node` with consistency `c`, retrying failed reads (not
/// their results) for up to 10 s.
pub async fn read_retrying(
    node: &Node<KvStateMachine>,
    group: GroupId,
    key: &str,
    c: Consistency,
) -> Option<Bytes> {
    poll_for(
        &format!("a {c:?} read of {key} on {group} at node {}", node.id()),
        Duration::from_secs(10),
        || async {
            let k = key.as_bytes().to_vec();
            node.read_with(group, c, move |kv: &KvStateMachine| kv.get(&k))
                .await
                .ok()
        },
    )
    .await
}

/// What `node`'s state machine of `group` holds for `key` now (a stale
/// read), or `None` when the read could not be made.
pub async fn stale_value(
    node: &Node<KvStateMachine>,
    group: GroupId,
    key: &str,
) -> Option<Option<Bytes>> {
    let k = key.as_bytes().to_vec();
    node.read_with(group, Consistency::Stale, move |kv: &KvStateMachine| {
        kv.get(&k)
    })
    .await
    .ok()
}
