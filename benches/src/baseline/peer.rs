//! The baseline workload on openraft (the release on crates.io), with the
//! pieces its own cluster benchmark uses: a `RaftTypeConfig` with empty
//! requests and responses, a `BTreeMap` log that reports every append
//! durable at once, a state machine that keeps nothing but what openraft
//! needs (last applied entry and membership), and a network that calls the
//! target node's `Raft` handle directly.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    Entry, EntryPayload, LogId, LogState, OptionalSend, RaftLogReader, RaftNetwork,
    RaftNetworkFactory, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StoredMembership, Vote,
};

use super::{APPLY_TIMEOUT, BaselineRun, HEARTBEAT_MS, MAX_PAYLOAD_ENTRIES, per_client, runtime};
use crate::BenchError;

/// An empty request.
#[derive(Clone, Debug, Default)]
pub struct Request;

/// An empty response.
#[derive(Clone, Debug, Default)]
pub struct Response;

openraft::declare_raft_types!(
    /// The baseline's types: empty requests and responses, `u64` node ids,
    /// nodes with no address.
    pub Types:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = (),
);

type Raft = openraft::Raft<Types>;
type Nid = u64;

/// The in-memory log of one node.
#[derive(Default)]
struct LogInner {
    vote: Option<Vote<Nid>>,
    committed: Option<LogId<Nid>>,
    entries: BTreeMap<u64, Entry<Types>>,
    purged: Option<LogId<Nid>>,
}

/// A cloneable handle to the in-memory log (openraft reads it from its
/// replication tasks).
#[derive(Clone, Default)]
pub struct LogStore(Arc<Mutex<LogInner>>);

impl LogStore {
    fn inner(&self) -> std::sync::MutexGuard<'_, LogInner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl RaftLogReader<Types> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<Types>>, StorageError<Nid>> {
        Ok(self
            .inner()
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<Types> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<Types>, StorageError<Nid>> {
        let inner = self.inner();
        let last = inner
            .entries
            .last_key_value()
            .map(|(_, e)| e.log_id)
            .or(inner.purged);
        Ok(LogState {
            last_purged_log_id: inner.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<Nid>) -> Result<(), StorageError<Nid>> {
        self.inner().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<Nid>>, StorageError<Nid>> {
        Ok(self.inner().vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<Nid>>,
    ) -> Result<(), StorageError<Nid>> {
        self.inner().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<Nid>>, StorageError<Nid>> {
        Ok(self.inner().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<Types>,
    ) -> Result<(), StorageError<Nid>>
    where
        I: IntoIterator<Item = Entry<Types>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        {
            let mut inner = self.inner();
            for e in entries {
                inner.entries.insert(e.log_id.index, e);
            }
        }
        // In memory: durable at once.
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<Nid>) -> Result<(), StorageError<Nid>> {
        let mut inner = self.inner();
        let _ = inner.entries.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<Nid>) -> Result<(), StorageError<Nid>> {
        let mut inner = self.inner();
        inner.purged = Some(log_id);
        let keep = inner.entries.split_off(&(log_id.index + 1));
        inner.entries = keep;
        Ok(())
    }
}

/// What the do-nothing state machine keeps: what openraft needs to know.
#[derive(Default)]
struct SmInner {
    last_applied: Option<LogId<Nid>>,
    membership: StoredMembership<Nid, ()>,
    snapshot: Option<(SnapshotMeta<Nid, ()>, Vec<u8>)>,
    snapshots_built: u64,
}

/// A state machine that does nothing with the requests.
#[derive(Clone, Default)]
pub struct StateMachine(Arc<Mutex<SmInner>>);

impl StateMachine {
    fn inner(&self) -> std::sync::MutexGuard<'_, SmInner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl RaftSnapshotBuilder<Types> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<Types>, StorageError<Nid>> {
        let mut inner = self.inner();
        inner.snapshots_built += 1;
        let id = match inner.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, inner.snapshots_built),
            None => format!("--{}", inner.snapshots_built),
        };
        let meta = SnapshotMeta {
            last_log_id: inner.last_applied,
            last_membership: inner.membership.clone(),
            snapshot_id: id,
        };
        inner.snapshot = Some((meta.clone(), Vec::new()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(Vec::new())),
        })
    }
}

impl RaftStateMachine<Types> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<Nid>>, StoredMembership<Nid, ()>), StorageError<Nid>> {
        let inner = self.inner();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<Nid>>
    where
        I: IntoIterator<Item = Entry<Types>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.inner();
        let mut out = Vec::new();
        for e in entries {
            inner.last_applied = Some(e.log_id);
            if let EntryPayload::Membership(m) = e.payload {
                inner.membership = StoredMembership::new(Some(e.log_id), m);
            }
            out.push(Response);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<Nid>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<Nid, ()>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<Nid>> {
        let mut inner = self.inner();
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.snapshot = Some((meta.clone(), snapshot.into_inner()));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<Types>>, StorageError<Nid>> {
        Ok(self.inner().snapshot.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(data.clone())),
        }))
    }
}

/// Every node's `Raft` handle, by id: the network calls them directly.
#[derive(Clone, Default)]
pub struct Router(Arc<Mutex<BTreeMap<Nid, Raft>>>);

impl Router {
    fn get(&self, id: Nid) -> Option<Raft> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }
}

/// The connection to one node: a call on its handle.
pub struct Connection {
    target: Nid,
    router: Router,
}

impl Connection {
    // The error type is openraft's, as its network trait asks for.
    #[allow(clippy::result_large_err)]
    fn raft<E: std::error::Error>(&self) -> Result<Raft, RPCError<Nid, (), E>> {
        self.router.get(self.target).ok_or_else(|| {
            RPCError::Unreachable(Unreachable::new(&std::io::Error::other(format!(
                "node {} is not in the router",
                self.target
            ))))
        })
    }
}

impl RaftNetworkFactory<Types> for Router {
    type Network = Connection;

    async fn new_client(&mut self, target: Nid, _node: &()) -> Self::Network {
        Connection {
            target,
            router: self.clone(),
        }
    }
}

impl RaftNetwork<Types> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<Types>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<Nid>, RPCError<Nid, (), RaftError<Nid>>> {
        self.raft()?
            .append_entries(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<Types>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<Nid>, RPCError<Nid, (), RaftError<Nid, InstallSnapshotError>>>
    {
        self.raft()?
            .install_snapshot(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<Nid>,
        _option: RPCOption,
    ) -> Result<VoteResponse<Nid>, RPCError<Nid, (), RaftError<Nid>>> {
        self.raft()?
            .vote(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// openraft's settings in its own cluster benchmark: heartbeat 50 ms (its
/// default), at most 1024 entries per append, election timeouts 200 to
/// 2000 ms, purge batches of 1024.
pub fn config() -> Result<openraft::Config, BenchError> {
    openraft::Config {
        heartbeat_interval: HEARTBEAT_MS,
        election_timeout_min: 200,
        election_timeout_max: 2000,
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        purge_batch_size: 1024,
        ..Default::default()
    }
    .validate()
    .map_err(|e| BenchError::Openraft(e.to_string()))
}

/// Runs the workload with `clients` clients writing `total` operations in
/// all (rounded down to a multiple of `clients`).
pub fn run(clients: usize, total: u64) -> Result<BaselineRun, BenchError> {
    runtime()?.block_on(run_async(clients, total))
}

fn or_err(e: impl std::fmt::Display) -> BenchError {
    BenchError::Openraft(e.to_string())
}

async fn run_async(clients: usize, total: u64) -> Result<BaselineRun, BenchError> {
    let config = Arc::new(config()?);
    let router = Router::default();
    let members: BTreeSet<Nid> = (0..3).collect();
    for &id in &members {
        let raft = Raft::new(
            id,
            config.clone(),
            router.clone(),
            LogStore::default(),
            StateMachine::default(),
        )
        .await
        .map_err(or_err)?;
        router
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, raft);
    }
    let leader = router.get(0).ok_or_else(|| or_err("node 0 missing"))?;
    leader.initialize(members.clone()).await.map_err(or_err)?;
    // Log index 1 holds the initial membership; every node applies it.
    for &id in &members {
        let raft = router.get(id).ok_or_else(|| or_err("node missing"))?;
        raft.wait(Some(Duration::from_secs(20)))
            .applied_index_at_least(Some(1), "initial membership")
            .await
            .map_err(or_err)?;
    }
    let base = leader
        .metrics()
        .borrow()
        .last_applied
        .map_or(0, |l| l.index);
    let each = per_client(total, clients);
    let ops = each * clients as u64;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let leader = leader.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..each {
                leader.client_write(Request).await.map_err(or_err)?;
            }
            Ok::<u64, BenchError>(each)
        }));
    }
    leader
        .wait(Some(APPLY_TIMEOUT))
        .applied_index_at_least(Some(base + ops), "every write applied")
        .await
        .map_err(or_err)?;
    let seconds = start.elapsed().as_secs_f64();
    let mut done = 0;
    for t in tasks {
        done += t.await.map_err(or_err)??;
    }
    for &id in &members {
        if let Some(raft) = router.get(id) {
            let _ = raft.shutdown().await;
        }
    }
    router.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    if done != ops {
        return Err(BenchError::Incomplete { done, wanted: ops });
    }
    Ok(BaselineRun {
        library: "openraft",
        clients,
        ops,
        seconds,
        notes: Vec::new(),
    })
}
