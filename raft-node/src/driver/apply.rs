//! The apply side of one group: a task that owns the group's state machine
//! (wrapped in a [`SessionMachine`]) and works through a queue, in order:
//! committed entries, snapshot restores and builds, and reads waiting for
//! an index. It runs off the consensus loop, so a slow state machine slows
//! its own group only.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use raft_api::{
    Entry, Envelope, ForwardOutcome, ForwardResponse, GroupId, LogId, LogIndex, Message, NodeId,
    Snapshot, StateMachine, Term, Transport,
};
use tokio::sync::{mpsc, oneshot};

use super::pending::Handed;
use super::{Cmd, Event, ProposeResult};
use crate::error::ProposeError;
use crate::session::{SessionMachine, SessionReply, decode_reply, encode_reply};

/// Who waits for the outcome of a proposal.
pub(super) enum Reply {
    /// A caller on this node.
    Local(oneshot::Sender<ProposeResult>),
    /// A follower that forwarded the proposal: (node, its request id).
    Remote(NodeId, u64),
}

/// A proposal waiting for its entry to be applied.
pub(super) struct Waiter {
    pub(super) id: LogId,
    pub(super) reply: Reply,
}

/// A read run against the state machine once it has applied `index`.
pub(super) type ReadFn<S> = Box<dyn FnOnce(&S) + Send>;

/// Work for the apply task, in log order.
pub(super) enum ApplyMsg<S> {
    /// Committed entries. The proposals waiting on some of them are in
    /// [`ApplyShared::waiters`].
    Apply(Vec<Entry>),
    /// Replace the state with a snapshot.
    Restore(Snapshot),
    /// Build a snapshot and report it to the consensus loop.
    Build,
    /// Run a read once `index` is applied.
    Read(LogIndex, ReadFn<S>),
    /// Stop, handing the state machine back.
    Stop(oneshot::Sender<S>),
}

/// What the apply task shares with the rest of the node.
pub(super) struct ApplyShared<T> {
    pub(super) node: NodeId,
    pub(super) group: GroupId,
    pub(super) transport: Arc<T>,
    /// Index of the last entry applied (for backpressure and metrics).
    pub(super) applied: Arc<AtomicU64>,
    /// Proposals waiting on the entries handed to this task, by index.
    pub(super) waiters: Arc<Handed<Waiter>>,
    pub(super) events: tokio::sync::broadcast::Sender<Event>,
}

/// Runs the apply side of one group until told to stop.
pub(super) async fn run<S, T>(
    mut machine: SessionMachine<S>,
    mut queue: mpsc::UnboundedReceiver<ApplyMsg<S>>,
    to_core: mpsc::UnboundedSender<Cmd<S>>,
    shared: ApplyShared<T>,
) where
    S: StateMachine,
    T: Transport,
{
    // Reads waiting for their index, in the order they came.
    let mut reads: BTreeMap<LogIndex, Vec<ReadFn<S>>> = BTreeMap::new();
    while let Some(msg) = queue.recv().await {
        match msg {
            ApplyMsg::Apply(entries) => {
                let last = entries.last().map_or(LogIndex(0), |e| e.id.index);
                let replies = machine.apply_replies(entries).await;
                // Taken once applied: while the state machine works, the
                // consensus loop may still answer those that time out.
                let waiters = if replies.is_empty() {
                    Vec::new()
                } else {
                    shared.waiters.lock().take_through(last)
                };
                // Both in index order: each waiter meets its entry.
                let mut waiters = waiters.into_iter().peekable();
                for (id, reply) in replies {
                    // Waiting on an entry before this batch (none should):
                    // its fate is not known here.
                    while let Some(w) = waiters.next_if(|w| w.id.index < id.index) {
                        answer_unknown(&shared, w);
                    }
                    if let Some(w) = waiters.next_if(|w| w.id.index == id.index) {
                        answer(&shared, w, id, reply);
                    }
                }
                for w in waiters {
                    answer_unknown(&shared, w);
                }
            }
            ApplyMsg::Restore(snapshot) => {
                let last = snapshot.meta.last;
                match machine.restore(last, snapshot.data).await {
                    Ok(()) => {
                        let _ = shared.events.send(Event::SnapshotInstalled {
                            group: shared.group,
                            last,
                        });
                    }
                    Err(e) => {
                        // The image came from a leader (or this node's own
                        // storage) and cannot be used: the group cannot go
                        // on safely; stop applying rather than diverge.
                        tracing::error!(group = %shared.group, error = %e, "snapshot restore failed; group stopped");
                        let _ = to_core.send(Cmd::GroupFailed(shared.group, e.to_string()));
                        return;
                    }
                }
            }
            ApplyMsg::Build => {
                let last = machine.last_applied();
                let cmd = match machine.snapshot().await {
                    Ok(data) => Cmd::SnapshotBuilt(shared.group, Ok((last, data))),
                    Err(e) => Cmd::SnapshotBuilt(shared.group, Err(e.to_string())),
                };
                let _ = to_core.send(cmd);
            }
            ApplyMsg::Read(index, f) => reads.entry(index).or_default().push(f),
            ApplyMsg::Stop(back) => {
                let _ = back.send(machine.into_inner());
                return;
            }
        }
        let applied = machine.last_applied().index;
        shared.applied.store(applied.0, Ordering::Release);
        while let Some(entry) = reads.first_entry() {
            if *entry.key() > applied {
                break;
            }
            for f in entry.remove() {
                f(machine.inner());
            }
        }
    }
}

/// Answers the proposal of the entry applied at `applied`'s index, whose
/// reply is `reply` (`None`: the entry carried no command).
fn answer<T: Transport>(
    shared: &ApplyShared<T>,
    w: Waiter,
    applied: LogId,
    reply: Option<SessionReply>,
) {
    let ours = w.id == applied;
    match w.reply {
        Reply::Local(tx) => {
            // Answered from the reply itself: encoding it for the caller
            // to decode would cost an allocation and a copy per entry.
            let result = match reply {
                _ if !ours => Err(ProposeError::Lost),
                Some(reply) => reply_to_result(reply),
                None => Err(ProposeError::Malformed),
            };
            let _ = tx.send(result);
        }
        Reply::Remote(to, id) => {
            let outcome = if ours {
                ForwardOutcome::Applied(reply.map_or_else(Bytes::new, |r| encode_reply(&r)))
            } else {
                ForwardOutcome::Lost
            };
            send_outcome(shared, to, id, outcome);
        }
    }
}

/// Answers a proposal whose outcome is not known here.
fn answer_unknown<T: Transport>(shared: &ApplyShared<T>, w: Waiter) {
    match w.reply {
        Reply::Local(tx) => {
            let _ = tx.send(Err(ProposeError::Unknown));
        }
        Reply::Remote(to, id) => send_outcome(shared, to, id, ForwardOutcome::Unknown),
    }
}

/// Sends a forwarded proposal's outcome to the follower that forwarded it.
fn send_outcome<T: Transport>(
    shared: &ApplyShared<T>,
    to: NodeId,
    id: u64,
    outcome: ForwardOutcome,
) {
    let env = Envelope {
        group: shared.group,
        from: shared.node,
        to,
        term: Term(0),
        msg: Message::ForwardResp(ForwardResponse { id, outcome }),
    };
    let _ = shared.transport.send(to, vec![env]);
}

/// What a caller gets for the reply to its applied command.
fn reply_to_result(reply: SessionReply) -> ProposeResult {
    match reply {
        SessionReply::Applied(r) | SessionReply::Duplicate(r) => Ok(r),
        SessionReply::Stale => Err(ProposeError::Stale),
        SessionReply::Malformed => Err(ProposeError::Malformed),
    }
}

/// What a caller gets for an outcome (local or forwarded).
pub(super) fn outcome_to_result(outcome: ForwardOutcome) -> ProposeResult {
    match outcome {
        ForwardOutcome::Applied(reply) => match decode_reply(&reply) {
            Ok(reply) => reply_to_result(reply),
            Err(_) => Err(ProposeError::Malformed),
        },
        ForwardOutcome::NotLeader(leader) => Err(ProposeError::NotLeader { leader }),
        ForwardOutcome::Busy => Err(ProposeError::Busy),
        ForwardOutcome::Lost => Err(ProposeError::Lost),
        _ => Err(ProposeError::Unknown),
    }
}
