//! Cases from Kommander: many partitions (groups) per node, paused and
//! suspended nodes, divergent logs, learners, the last voter, and minority
//! partitions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use raft_api::{GroupId, MembershipError, NodeId, Term};
use raft_node::driver::{Consistency, Node};
use raft_node::{AdminError, ChangeError, MembershipChange, ProposeError, Role};
use storage_mem::{KvCommand, KvStateMachine};

use crate::common::{
    Cluster, G, leader_among, poll_for, put, put_retrying, read_retrying, stale_value,
};

const WAIT: Duration = Duration::from_secs(10);

fn put_cmd(key: &str, value: &str) -> Bytes {
    KvCommand::Put {
        key: Bytes::from(key.to_owned()),
        value: Bytes::from(value.to_owned()),
    }
    .encode()
}

fn b(s: &str) -> Option<Bytes> {
    Some(Bytes::from(s.to_owned()))
}

/// The term of `group` on `node`, from its metrics.
async fn term_of(node: &Node<KvStateMachine>, group: GroupId) -> Term {
    node.metrics().await.expect("metrics").groups[&group].term
}

/// Waits until `node`'s log of `group` holds an entry its commit index does
/// not cover (an uncommitted suffix), and returns the last index.
async fn uncommitted_suffix(node: &Node<KvStateMachine>, group: GroupId, above: u64) -> u64 {
    poll_for(
        &format!(
            "node {} appends an uncommitted entry after index {above}",
            node.id()
        ),
        WAIT,
        || async {
            let m = node.metrics().await.ok()?;
            let g = &m.groups[&group];
            (g.last_index.0 > above && g.commit < g.last_index).then_some(g.last_index.0)
        },
    )
    .await
}

/// Kommander: five nodes hosting eight partitions (groups 1..=8); every
/// group elects a leader and takes writes on its leader and through a
/// follower, and linearizable reads on the other nodes see them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kommander_many_partitions_each_elect_a_leader_and_take_writes() {
    let ids = [1, 2, 3, 4, 5];
    let groups: Vec<GroupId> = (1..=8).map(GroupId).collect();
    let c = Cluster::start_groups(&ids, &ids, &groups).await;
    for &g in &groups {
        let leader = c.leader(g).await.0;
        let follower = ids.iter().copied().find(|&id| id != leader).unwrap();
        let (k1, k2) = (format!("leader-{}", g.0), format!("follower-{}", g.0));
        // Leadership balancing may move the leader meanwhile: the write
        // then goes (forwarded) to whichever node leads.
        put_retrying(&c.node(leader), g, &k1, &format!("v{}", g.0)).await;
        put_retrying(&c.node(follower), g, &k2, &format!("w{}", g.0)).await;
        for id in ids.iter().copied().filter(|&id| id != leader) {
            let node = c.node(id);
            assert_eq!(
                read_retrying(&node, g, &k1, Consistency::Linearizable).await,
                b(&format!("v{}", g.0)),
                "linearizable read of {k1} on node {id} in {g}"
            );
            assert_eq!(
                read_retrying(&node, g, &k2, Consistency::Linearizable).await,
                b(&format!("w{}", g.0)),
                "linearizable read of {k2} on node {id} in {g}"
            );
        }
    }
    // Every group has a leader, and the groups are independent: the
    // writes of one are not in another.
    for &g in &groups {
        assert!(c.nodes.values().any(|n| n.is_leader(g)), "{g} has a leader");
        let other = GroupId(g.0 % 8 + 1);
        let key = format!("leader-{}", other.0);
        assert_eq!(
            read_retrying(&c.node(1), g, &key, Consistency::Linearizable).await,
            None,
            "{key} of {other} does not leak into {g}"
        );
    }
    c.shutdown().await;
}

/// Kommander: a follower paused (SIGSTOP-like) for about two seconds while
/// writes continue comes back, catches up, and does not disturb the group:
/// the leader stays the same node and the term does not rise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kommander_paused_follower_rejoins_without_livelock() {
    let c = Cluster::start(&[1, 2, 3], &[1, 2, 3]).await;
    let leader_id = c.leader(G).await.0;
    let leader = c.node(leader_id);
    let paused = [1, 2, 3].into_iter().find(|&id| id != leader_id).unwrap();
    put(&leader, G, "counter", "0").await.expect("first write");
    let term_before = term_of(&leader, G).await;

    c.net.pause(NodeId(paused));
    let started = tokio::time::Instant::now();
    let mut last = 0;
    while started.elapsed() < Duration::from_secs(2) {
        last += 1;
        put(&leader, G, "counter", &last.to_string())
            .await
            .expect("the majority keeps committing while a follower is paused");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    c.net.resume(NodeId(paused));

    let follower = c.node(paused);
    let want = b(&last.to_string());
    poll_for(
        "the resumed follower applies the last write",
        WAIT,
        || async { (stale_value(&follower, G, "counter").await? == want).then_some(()) },
    )
    .await;

    // Same leader, same term, on every node, for a while.
    for _ in 0..10 {
        assert_eq!(
            c.leader(G).await.0,
            leader_id,
            "the leader stays the same node"
        );
        for (id, node) in &c.nodes {
            assert_eq!(
                term_of(node, G).await,
                term_before,
                "the term of node {id} did not rise (the paused follower must not disrupt)"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.shutdown().await;
}

/// Kommander: a suspended (paused) leader causes no split brain: the others
/// elect a new leader and commit; once resumed the old leader steps down;
/// and no two nodes are ever leaders of the same term (sampled throughout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kommander_suspended_leader_causes_no_split_brain() {
    let ids = [1, 2, 3, 4, 5];
    let c = Cluster::start(&ids, &ids).await;

    // Sample every node's role and term until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let nodes: Vec<Node<KvStateMachine>> = c.nodes.values().cloned().collect();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut leaders: BTreeMap<Term, BTreeSet<NodeId>> = BTreeMap::new();
            let mut samples = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for n in &nodes {
                    if let Ok(m) = n.metrics().await
                        && let Some(g) = m.groups.get(&G)
                        && g.role == Role::Leader
                    {
                        leaders.entry(g.term).or_default().insert(n.id());
                    }
                }
                samples += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (leaders, samples)
        })
    };

    let old = c.leader(G).await.0;
    put(&c.node(old), G, "before", "1")
        .await
        .expect("write before");
    c.net.pause(NodeId(old));
    let others: Vec<u64> = ids.iter().copied().filter(|&id| id != old).collect();
    let new = leader_among(&c, &others, G).await;
    assert_ne!(new, old);
    put_retrying(&c.node(new), G, "after", "2").await;
    c.net.resume(NodeId(old));

    let old_node = c.node(old);
    poll_for(
        "the resumed old leader steps down and follows",
        WAIT,
        || async {
            let follows = !old_node.is_leader(G) && old_node.leader(G).is_some_and(|l| l.0 != old);
            (follows && stale_value(&old_node, G, "after").await? == b("2")).then_some(())
        },
    )
    .await;
    // The whole group agrees again.
    c.leader(G).await;

    stop.store(true, Ordering::Relaxed);
    let (leaders, samples) = sampler.await.expect("sampler");
    assert!(samples > 10, "the sampler ran ({samples} rounds)");
    for (term, nodes) in &leaders {
        assert!(nodes.len() <= 1, "two leaders in term {term}: {nodes:?}");
    }
    assert!(
        leaders.len() >= 2,
        "leaders of two terms were seen: {leaders:?}"
    );
    c.shutdown().await;
}

/// Kommander: an isolated leader's uncommitted entry (a divergent suffix)
/// is overwritten by the majority's log once the partition heals: no node
/// ever applies it, and every node ends up with the majority's writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kommander_divergent_suffix_is_overwritten() {
    let ids = [1, 2, 3];
    let c = Cluster::start(&ids, &ids).await;
    let old = c.leader(G).await.0;
    let old_node = c.node(old);
    put(&old_node, G, "base", "0").await.expect("base write");
    let before = old_node.metrics().await.unwrap().groups[&G].last_index.0;

    c.net.isolate(NodeId(old));
    let doomed = tokio::spawn({
        let n = old_node.clone();
        async move { n.propose(G, put_cmd("isolated", "x")).await }
    });
    uncommitted_suffix(&old_node, G, before).await;

    let others: Vec<u64> = ids.iter().copied().filter(|&id| id != old).collect();
    let new = leader_among(&c, &others, G).await;
    put_retrying(&c.node(new), G, "majority", "1").await;
    put_retrying(&c.node(new), G, "majority2", "2").await;
    c.net.heal();

    let result = doomed.await.expect("proposal task");
    assert!(
        matches!(
            result,
            Err(ProposeError::Lost | ProposeError::Timeout | ProposeError::Unknown)
        ),
        "the isolated leader's proposal must not succeed, got {result:?}"
    );

    for (id, node) in &c.nodes {
        poll_for(
            &format!("node {id} holds the majority's writes and not the isolated one"),
            WAIT,
            || async {
                let isolated = stale_value(node, G, "isolated").await?;
                assert_eq!(isolated, None, "node {id} applied the overwritten entry");
                let done = stale_value(node, G, "majority").await? == b("1")
                    && stale_value(node, G, "majority2").await? == b("2");
                done.then_some(())
            },
        )
        .await;
    }
    // Once all logs agree, the entry is gone for good.
    let leader = c.leader(G).await;
    let last = c.nodes[&leader.0].metrics().await.unwrap().groups[&G].last_index;
    for (id, node) in &c.nodes {
        poll_for(
            &format!("node {id} applies the whole log"),
            WAIT,
            || async {
                let m = node.metrics().await.ok()?;
                (m.groups[&G].applied >= last).then_some(())
            },
        )
        .await;
        assert_eq!(stale_value(node, G, "isolated").await.unwrap(), None);
    }
    c.shutdown().await;
}

/// Kommander: a learner never counts toward a quorum. Voters {1, 2} and a
/// learner; with the other voter cut off, the leader's proposal reaches the
/// learner but does not commit (it times out); after healing it commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kommander_learner_never_counts_toward_quorum() {
    let mut c = Cluster::start(&[1, 2], &[1, 2]).await;
    let leader_id = leader_among(&c, &[1, 2], G).await;
    // Node 3 hosts the group without voters: it waits to be added.
    c.spawn(3, crate::common::node_config(3), &[], &[G]).await;
    let voter = if leader_id == 1 { 2 } else { 1 };
    let leader = c.node(leader_id);
    poll_for("the learner is added", WAIT, || async {
        leader
            .change_membership(G, MembershipChange::AddLearner(NodeId(3)))
            .await
            .ok()
    })
    .await;
    put(&leader, G, "warm", "up")
        .await
        .expect("write with both voters");
    let learner = c.node(3);
    poll_for("the learner applies the log", WAIT, || async {
        (stale_value(&learner, G, "warm").await? == b("up")).then_some(())
    })
    .await;
    let before = leader.metrics().await.unwrap().groups[&G].last_index.0;

    c.net.isolate(NodeId(voter));
    let pending = tokio::spawn({
        let n = leader.clone();
        async move { n.propose(G, put_cmd("needs", "quorum")).await }
    });
    let index = uncommitted_suffix(&leader, G, before).await;
    poll_for("the learner receives the entry", WAIT, || async {
        let m = learner.metrics().await.ok()?;
        (m.groups[&G].last_index.0 >= index).then_some(())
    })
    .await;

    let result = pending.await.expect("proposal task");
    assert!(
        matches!(result, Err(ProposeError::Timeout | ProposeError::Unknown)),
        "with one voter of two cut off the proposal must not commit, got {result:?}"
    );
    for (id, node) in &c.nodes {
        let m = node.metrics().await.unwrap();
        assert!(
            m.groups[&G].commit.0 < index,
            "node {id} committed index {index} without a quorum of voters: {:?}",
            m.groups[&G]
        );
        assert_eq!(stale_value(node, G, "needs").await.unwrap(), None);
    }

    c.net.heal();
    for (id, node) in &c.nodes {
        poll_for(
            &format!("node {id} applies the entry once the voters reconnect"),
            WAIT,
            || async { (stale_value(node, G, "needs").await? == b("quorum")).then_some(()) },
        )
        .await;
    }
    c.shutdown().await;
}

/// Kommander: the only voter asked to remove itself refuses: a group
/// without voters could never decide anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kommander_leaving_as_last_voter_is_refused() {
    let c = Cluster::start(&[1], &[1]).await;
    let node = c.node(1);
    assert_eq!(c.leader(G).await, NodeId(1));
    put(&node, G, "a", "1").await.expect("write");
    let result = poll_for("an answer other than NotReady", WAIT, || async {
        match node
            .change_membership(G, MembershipChange::Remove(NodeId(1)))
            .await
        {
            Err(AdminError::Change(ChangeError::NotReady)) => None,
            other => Some(other),
        }
    })
    .await;
    assert_eq!(
        result,
        Err(AdminError::Change(ChangeError::Invalid(
            MembershipError::NoVoters
        )))
    );
    // Nothing changed: still the leader, still taking writes.
    assert!(node.is_leader(G));
    let m = node.metrics().await.unwrap();
    assert_eq!(m.groups[&G].membership.voters, BTreeSet::from([NodeId(1)]));
    put(&node, G, "b", "2")
        .await
        .expect("write after the refusal");
    c.shutdown().await;
}

/// Kommander: the minority side of a partition never commits. Five nodes
/// split {old leader, one follower} | {three others}: the old leader's
/// proposal never succeeds, the majority elects a leader and commits, and
/// after healing the minority's proposal is applied nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kommander_minority_side_never_commits() {
    let ids = [1, 2, 3, 4, 5];
    let c = Cluster::start(&ids, &ids).await;
    let old = c.leader(G).await.0;
    let old_node = c.node(old);
    put(&old_node, G, "base", "0").await.expect("base write");
    let before = old_node.metrics().await.unwrap().groups[&G].last_index.0;
    let buddy = ids.iter().copied().find(|&id| id != old).unwrap();
    let majority: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|&id| id != old && id != buddy)
        .collect();
    let minority = [NodeId(old), NodeId(buddy)];
    let majority_ids: Vec<NodeId> = majority.iter().copied().map(NodeId).collect();
    c.net.partition(&[&minority[..], &majority_ids[..]]);

    let doomed = tokio::spawn({
        let n = old_node.clone();
        async move { n.propose(G, put_cmd("minority", "x")).await }
    });
    uncommitted_suffix(&old_node, G, before).await;

    let new = leader_among(&c, &majority, G).await;
    put_retrying(&c.node(new), G, "majority", "1").await;

    let result = doomed.await.expect("proposal task");
    assert!(
        matches!(
            result,
            Err(ProposeError::Lost | ProposeError::Timeout | ProposeError::Unknown)
        ),
        "the minority's proposal must not succeed, got {result:?}"
    );
    for &id in &[old, buddy] {
        assert_eq!(
            stale_value(&c.node(id), G, "majority").await.unwrap(),
            None,
            "node {id} of the minority cannot see the majority's write yet"
        );
    }
    c.net.heal();

    let leader = c.leader(G).await;
    put_retrying(&c.node(leader.0), G, "healed", "2").await;
    for (id, node) in &c.nodes {
        poll_for(
            &format!("node {id} holds the majority's writes and not the minority's"),
            WAIT,
            || async {
                assert_eq!(
                    stale_value(node, G, "minority").await?,
                    None,
                    "node {id} applied the minority's entry"
                );
                let done = stale_value(node, G, "majority").await? == b("1")
                    && stale_value(node, G, "healed").await? == b("2");
                done.then_some(())
            },
        )
        .await;
    }
    c.shutdown().await;
}
