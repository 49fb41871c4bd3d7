//! Bringing the killed node back: a restart with its data directory
//! (LMDB), or, when its log was in memory, a rejoin as a new member.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::ProgressBar;
use serde_json::{Value, json};

use super::load::{LiveNodes, Pick};
use super::report::millis;
use super::{STEP_TIMEOUT, bar};
use crate::local_cluster::{LocalCluster, leader_of};

/// Restarts `victim` with its data directory and waits until it applied
/// what the leaders have; returns that applied index (summed over the
/// partitions) and the time since the restart.
pub(super) async fn restart(
    cluster: &mut LocalCluster,
    nodes: &LiveNodes,
    victim: u64,
    partitions: u64,
) -> anyhow::Result<(u64, Duration)> {
    println!("Restarting node {victim} with its data directory");
    let restarted = Instant::now();
    cluster.start(victim).await?;
    nodes.insert(victim, cluster.url(victim));
    println!(
        "  node {victim} is listening again {} after it was started (pid {})",
        millis(restarted.elapsed()),
        cluster.pid(victim).unwrap_or_default()
    );
    let progress = bar(0, "  {bar:40} applied index {pos}/{len}  {msg}");
    let caught_up = caught_up(cluster, victim, partitions, &progress, restarted).await;
    progress.finish_and_clear();
    let caught_up = caught_up?;
    let catch_up = restarted.elapsed();
    report_caught_up(victim, partitions, caught_up, catch_up);
    Ok((caught_up, catch_up))
}

/// Rejoins `victim`, whose log was in memory, as a new member: removes it
/// from every partition, restarts it empty and waiting to be added, adds it
/// as a learner, waits until it caught up, and promotes it to voter.
/// Returns its applied index (summed over the partitions) and the time from
/// the restart until it caught up.
pub(super) async fn as_new_member(
    cluster: &mut LocalCluster,
    nodes: &LiveNodes,
    victim: u64,
    partitions: u64,
) -> anyhow::Result<(u64, Duration)> {
    println!("Bringing node {victim} back");
    println!(
        "  its log was in memory (--storage mem), so it restarts empty; an empty node must not \
         vote as if it remembered, so it rejoins as a new member"
    );
    let admin = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .context("building the HTTP client")?;
    let all = json!(null);
    let started = Instant::now();
    change(
        &admin,
        nodes,
        json!({"partition": all, "action": "remove", "id": victim}),
    )
    .await?;
    println!(
        "  removed node {victim} from the voters of every partition ({})",
        millis(started.elapsed())
    );

    let others: Vec<String> = (cluster.ids().into_iter())
        .filter(|&id| id != victim)
        .map(|id| id.to_string())
        .collect();
    cluster.set_node_args(victim, vec![format!("--voters={}", others.join(","))]);
    let restarted = Instant::now();
    cluster.start(victim).await?;
    println!(
        "  restarted node {victim} empty (pid {}), waiting to be added",
        cluster.pid(victim).unwrap_or_default()
    );
    let address = cluster.raft_addr(victim).to_string();
    let http_address = cluster.http_addr(victim).to_string();
    change(
        &admin,
        nodes,
        json!({"partition": all, "action": "add_learner", "id": victim,
               "address": address, "http_address": http_address}),
    )
    .await?;
    println!("  added node {victim} as a learner; it receives the log from the leaders");
    let progress = bar(0, "  {bar:40} applied index {pos}/{len}  {msg}");
    let caught_up = caught_up(cluster, victim, partitions, &progress, restarted).await;
    progress.finish_and_clear();
    let caught_up = caught_up?;
    let catch_up = restarted.elapsed();
    report_caught_up(victim, partitions, caught_up, catch_up);
    change(
        &admin,
        nodes,
        json!({"partition": all, "action": "promote", "id": victim}),
    )
    .await?;
    nodes.insert(victim, cluster.url(victim));
    println!("  promoted node {victim} to voter again");
    Ok((caught_up, catch_up))
}

fn report_caught_up(victim: u64, partitions: u64, applied: u64, after: Duration) {
    if partitions == 1 {
        println!(
            "  node {victim} caught up to applied index {applied} {} after it was restarted",
            millis(after)
        );
    } else {
        println!(
            "  node {victim} caught up with the leaders of all {partitions} partitions {} after it was restarted",
            millis(after)
        );
    }
}

/// Sends a membership change (to any live node, which passes it to the
/// leaders) until it is accepted, for up to [`STEP_TIMEOUT`].
async fn change(http: &reqwest::Client, nodes: &LiveNodes, body: Value) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut pick = Pick::new(0xC0FFEE);
    let mut last = String::from("no node to ask");
    while start.elapsed() < STEP_TIMEOUT {
        if let Some(url) = nodes.pick_url(&mut pick) {
            match http
                .post(format!("{url}/cluster/members"))
                .json(&body)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => {
                    let status = r.status();
                    last = format!("{status}: {}", r.text().await.unwrap_or_default());
                }
                Err(e) => last = e.to_string(),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("membership change {body} not accepted within {STEP_TIMEOUT:?}: {last}")
}

/// Waits until `victim` has applied, in every partition, what that
/// partition's leader has applied; shows it on `progress`. Returns the
/// applied index summed over the partitions.
async fn caught_up(
    cluster: &LocalCluster,
    victim: u64,
    partitions: u64,
    progress: &ProgressBar,
    since: Instant,
) -> anyhow::Result<u64> {
    let n = cluster.ids().len();
    loop {
        let statuses = cluster.statuses().await;
        let mut mine = 0;
        let mut target = 0;
        let mut complete = statuses.contains_key(&victim);
        for p in 0..partitions {
            let applied = |id: u64| {
                statuses
                    .get(&id)?
                    .partitions
                    .iter()
                    .find(|s| s.partition == p)
                    .map(|s| s.applied)
            };
            match leader_of(&statuses, p, n).and_then(|(l, _)| applied(l)) {
                Some(leader_applied) => target += leader_applied,
                None => complete = false,
            }
            mine += applied(victim).unwrap_or(0);
        }
        progress.set_length(target.max(1));
        progress.set_position(mine.min(target));
        if complete && mine >= target {
            return Ok(mine);
        }
        if since.elapsed() > STEP_TIMEOUT {
            bail!(
                "node {victim} did not catch up within {STEP_TIMEOUT:?} (applied {mine} of {target})"
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
