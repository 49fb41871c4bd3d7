//! Every proposal is answered within its timeout (give or take a tick),
//! whatever holds it up: a state machine that does not return, or a leader
//! that never answers a forwarded proposal. The node's loop answers these;
//! a caller has no timer of its own.

#![allow(missing_docs)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Cluster, G, node_config, poll_for};
use raft_api::{Entry, LogId, NodeId, Payload, StateMachine, StorageError};
use raft_node::ProposeError;
use raft_node::driver::Node;
use storage_mem::MemLogStore;
use tokio::sync::Notify;
use transport_mem::MemNetwork;

const TIMEOUT: Duration = Duration::from_millis(400);
/// How late past its timeout an answer may come on a loaded test machine.
const SLACK: Duration = Duration::from_secs(3);

/// A state machine that records the commands it applies and stops, inside
/// `apply`, at a command `hang` until the gate opens.
#[derive(Clone, Default)]
struct Gated {
    open: Arc<AtomicBool>,
    opened: Arc<Notify>,
    applied: Arc<Mutex<Vec<Bytes>>>,
    last: LogId,
}

impl Gated {
    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
        self.opened.notify_waiters();
    }

    fn applied(&self) -> Vec<Bytes> {
        self.applied.lock().unwrap().clone()
    }
}

impl StateMachine for Gated {
    async fn apply(&mut self, entries: &[Entry]) -> Vec<Bytes> {
        for e in entries {
            if let Payload::Command(c) = &e.payload {
                while c.as_ref() == b"hang" && !self.open.load(Ordering::SeqCst) {
                    let opened = self.opened.notified();
                    if self.open.load(Ordering::SeqCst) {
                        break;
                    }
                    opened.await;
                }
                self.applied.lock().unwrap().push(c.clone());
            }
            self.last = e.id;
        }
        entries
            .iter()
            .map(|e| Bytes::from(e.id.index.0.to_string()))
            .collect()
    }

    fn last_applied(&self) -> LogId {
        self.last
    }

    async fn snapshot(&self) -> Result<Bytes, StorageError> {
        Ok(Bytes::new())
    }

    async fn restore(&mut self, last: LogId, _image: Bytes) -> Result<(), StorageError> {
        self.last = last;
        Ok(())
    }
}

/// Proposes `command` and returns the outcome and how long it took; fails
/// the test if no answer comes long after the timeout.
async fn timed<S: StateMachine>(
    node: &Node<S>,
    command: &'static str,
) -> (Result<Bytes, ProposeError>, Duration) {
    let start = Instant::now();
    let proposal = node.propose(G, Bytes::from_static(command.as_bytes()));
    let result = tokio::time::timeout(TIMEOUT + SLACK, proposal)
        .await
        .unwrap_or_else(|_| panic!("{command}: no answer within {:?}", TIMEOUT + SLACK));
    (result, start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_state_machine_does_not_hold_proposals_past_their_timeout() {
    let machine = Gated::default();
    let mut config = node_config(1);
    config.propose_timeout = TIMEOUT;
    let node = Node::start(
        config,
        MemNetwork::new().transport(NodeId(1)),
        MemLogStore::new(),
        {
            let machine = machine.clone();
            move |_| machine.clone()
        },
        &[(G, vec![NodeId(1)])],
    )
    .await
    .expect("node starts");
    poll_for("node 1 leads", SLACK, || async {
        node.is_leader(G).then_some(())
    })
    .await;
    let (first, _) = timed(&node, "first").await;
    assert!(first.is_ok(), "a proposal before the hang: {first:?}");

    // The state machine stops inside `apply`: the proposal that stopped it,
    // and one after it, time out all the same.
    for command in ["hang", "behind"] {
        let (result, took) = timed(&node, command).await;
        assert_eq!(result, Err(ProposeError::Timeout), "{command}");
        assert!(
            took >= TIMEOUT && took < TIMEOUT + SLACK,
            "{command}: answered after {took:?} with a timeout of {TIMEOUT:?}"
        );
    }
    assert_eq!(machine.applied(), [Bytes::from_static(b"first")]);

    // Once it goes on, both are applied (their outcome was unknown, not
    // refused) and new proposals get their answers again.
    machine.open();
    let (after, _) = timed(&node, "after").await;
    assert!(after.is_ok(), "a proposal after the hang: {after:?}");
    assert_eq!(
        machine.applied(),
        ["first", "hang", "behind", "after"].map(|c| Bytes::from_static(c.as_bytes()))
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_proposal_the_leader_never_answers_times_out() {
    let mut c = Cluster::start_groups(&[], &[1, 2, 3], &[G]).await;
    for id in 1..=3 {
        let mut config = node_config(id);
        config.propose_timeout = TIMEOUT;
        c.spawn(id, config, &[1, 2, 3], &[G]).await;
    }
    let leader = c.leader(G).await;
    let follower = (1..=3)
        .find(|&id| NodeId(id) != leader)
        .expect("a follower");
    let node = c.node(follower);
    poll_for("the follower knows the leader", SLACK, || async {
        (node.leader(G) == Some(leader)).then_some(())
    })
    .await;

    // The leader still reaches the follower (so it stays leader, known to
    // the follower), but nothing the follower sends reaches the leader.
    c.net.cut(NodeId(follower), leader);
    let (result, took) = timed(&node, "lost").await;
    assert_eq!(result, Err(ProposeError::Timeout));
    assert!(
        took >= TIMEOUT && took < TIMEOUT + SLACK,
        "answered after {took:?} with a timeout of {TIMEOUT:?}"
    );

    c.net.heal();
    poll_for("a forwarded proposal succeeds again", 3 * SLACK, || async {
        timed(&node, "later").await.0.ok()
    })
    .await;
    c.shutdown().await;
}
