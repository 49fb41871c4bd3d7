//! The nemesis: a seeded schedule of faults, one at a time, with a few
//! seconds of calm between them.
//!
//! - kill: `SIGKILL` a node (the leader more often than not), restart it
//!   a few seconds later with the same data directory;
//! - pause: `SIGSTOP` the leader for several election timeouts, then
//!   `SIGCONT` (it must step down, with no split brain);
//! - isolate: cut the leader off from every other node (clients still
//!   reach it over HTTP, so a stale read would show);
//! - split: cut the nodes into a minority and a majority (3|2, 2|1);
//! - one-way: cut the link the leader dials to one follower (over TCP, the
//!   leader's messages to it; see [`super::proxy`] for QUIC).
//!
//! The first fault always isolates the leader: that is where a stale read
//! (a read served without confirming leadership) shows soonest.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use raft_kv::local_cluster::{LocalCluster, NodeState};
use tokio::time::Instant;

use super::proxy::FaultNet;
use super::rng::Rng;
use super::say;

/// Faults injected, by kind.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FaultCounts {
    /// `SIGKILL` and restart.
    pub(crate) kills: u64,
    /// `SIGSTOP` and `SIGCONT`.
    pub(crate) pauses: u64,
    /// Network cuts of any shape.
    pub(crate) partitions: u64,
}

impl FaultCounts {
    /// All faults.
    pub(crate) fn total(&self) -> u64 {
        self.kills + self.pauses + self.partitions
    }
}

impl fmt::Display for FaultCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} faults ({} kills, {} pauses, {} partitions)",
            self.total(),
            self.kills,
            self.pauses,
            self.partitions
        )
    }
}

/// One fault.
#[derive(Clone, Debug)]
enum Fault {
    Kill(u64),
    Pause(u64),
    Isolate(u64),
    Split(BTreeSet<u64>),
    OneWay(u64, u64),
}

/// Injects faults; see the [module documentation](self).
pub(crate) struct Nemesis {
    rng: Rng,
    /// Longest election timeout of the nodes, in milliseconds.
    election_max_ms: u64,
    /// Faults injected so far.
    pub(crate) counts: FaultCounts,
}

fn show(nodes: &BTreeSet<u64>) -> String {
    let names: Vec<String> = nodes.iter().map(u64::to_string).collect();
    format!("{{{}}}", names.join(","))
}

impl Nemesis {
    /// A nemesis drawing its choices from `rng`, for nodes whose election
    /// timeouts are at most `election_max_ms`.
    pub(crate) fn new(rng: Rng, election_max_ms: u64) -> Self {
        Nemesis {
            rng,
            election_max_ms,
            counts: FaultCounts::default(),
        }
    }

    /// Injects faults until `until`, one at a time; returns with every
    /// fault repaired.
    pub(crate) async fn run(
        &mut self,
        cluster: &mut LocalCluster,
        net: &FaultNet,
        until: Instant,
    ) -> anyhow::Result<()> {
        let mut first = true;
        loop {
            let calm = Duration::from_millis(self.rng.between(1000, 2500));
            tokio::time::sleep(calm).await;
            if Instant::now() >= until {
                return Ok(());
            }
            let leader = cluster.leader(0).await.map(|(id, _)| id);
            let fault = match leader {
                // First the case where a stale read shows soonest: an old
                // leader cut off while clients still read from it.
                Some(leader) if first => Fault::Isolate(leader),
                _ => self.choose(&cluster.ids(), leader),
            };
            first = false;
            let hold = self.inject(&fault, cluster, net, leader)?;
            tokio::time::sleep(hold).await;
            self.repair(&fault, cluster, net).await?;
        }
    }

    fn choose(&mut self, ids: &[u64], leader: Option<u64>) -> Fault {
        let any = *self.rng.pick(ids);
        // The leader when there is one, else anyone.
        let target = leader.unwrap_or(any);
        match self.rng.below(100) {
            0..25 => Fault::Kill(if self.rng.chance(70) { target } else { any }),
            25..45 => Fault::Pause(target),
            45..70 => Fault::Isolate(target),
            70..90 => {
                let minority = (ids.len() - 1) / 2;
                let mut side: BTreeSet<u64> = self
                    .rng
                    .shuffled(ids)
                    .into_iter()
                    .take(minority.max(1))
                    .collect();
                if self.rng.chance(50) && !side.contains(&target) {
                    // Put the leader in the minority.
                    let first = *side.iter().next().expect("a side is never empty");
                    side.remove(&first);
                    side.insert(target);
                }
                Fault::Split(side)
            }
            _ => {
                let others: Vec<u64> = ids.iter().copied().filter(|&i| i != target).collect();
                Fault::OneWay(target, *self.rng.pick(&others))
            }
        }
    }

    /// Starts `fault`; returns how long to hold it.
    fn inject(
        &mut self,
        fault: &Fault,
        cluster: &mut LocalCluster,
        net: &FaultNet,
        leader: Option<u64>,
    ) -> anyhow::Result<Duration> {
        let role = |id: u64| {
            if leader == Some(id) { " (leader)" } else { "" }
        };
        let ms = match fault {
            Fault::Kill(id) => {
                self.counts.kills += 1;
                say!("nemesis: kill -9 node {id}{}", role(*id));
                cluster.kill(*id)?;
                self.rng.between(1000, 3000)
            }
            Fault::Pause(id) => {
                self.counts.pauses += 1;
                let ms = self
                    .rng
                    .between(3 * self.election_max_ms, 6 * self.election_max_ms);
                say!(
                    "nemesis: pause node {id}{} (SIGSTOP) for {ms} ms",
                    role(*id)
                );
                cluster.pause(*id)?;
                ms
            }
            Fault::Isolate(id) => {
                self.counts.partitions += 1;
                say!(
                    "nemesis: isolate node {id}{} from every other node",
                    role(*id)
                );
                net.split(&BTreeSet::from([*id]));
                self.rng.between(1500, 4000)
            }
            Fault::Split(side) => {
                self.counts.partitions += 1;
                let rest: BTreeSet<u64> = cluster
                    .ids()
                    .into_iter()
                    .filter(|i| !side.contains(i))
                    .collect();
                let with_leader = leader.is_some_and(|l| side.contains(&l));
                say!(
                    "nemesis: partition {} | {}{}",
                    show(side),
                    show(&rest),
                    if with_leader {
                        " (leader in the minority)"
                    } else {
                        ""
                    }
                );
                net.split(side);
                self.rng.between(1500, 4000)
            }
            Fault::OneWay(from, to) => {
                self.counts.partitions += 1;
                say!(
                    "nemesis: cut the link node {from}{} dials to node {to} (one way)",
                    role(*from)
                );
                net.cut_one_way(*from, *to);
                self.rng.between(1500, 3500)
            }
        };
        Ok(Duration::from_millis(ms))
    }

    async fn repair(
        &mut self,
        fault: &Fault,
        cluster: &mut LocalCluster,
        net: &FaultNet,
    ) -> anyhow::Result<()> {
        match fault {
            Fault::Kill(id) => {
                cluster.start(*id).await?;
                say!("nemesis: node {id} restarted");
            }
            Fault::Pause(id) => {
                cluster.resume(*id)?;
                say!("nemesis: node {id} resumed (SIGCONT)");
            }
            Fault::Isolate(_) | Fault::Split(_) | Fault::OneWay(..) => {
                net.heal();
                say!("nemesis: network healed");
            }
        }
        Ok(())
    }

    /// Ends every fault: heals the network, resumes paused nodes and
    /// restarts stopped ones.
    pub(crate) async fn heal_all(cluster: &mut LocalCluster, net: &FaultNet) -> anyhow::Result<()> {
        net.heal();
        for id in cluster.ids() {
            match cluster.state(id) {
                NodeState::Paused => cluster.resume(id)?,
                NodeState::Stopped => cluster.start(id).await?,
                NodeState::Running => {}
            }
        }
        Ok(())
    }
}
