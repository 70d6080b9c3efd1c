//! The controller's decisions for one partition, modelled directly (the
//! Raft log under them is `controller_sim`'s subject): broker liveness by
//! session timeout, fencing, leader election from the live ISR, restarts
//! as new incarnations, and AlterPartition with leader and partition epoch
//! checks, as KRaft's QuorumController makes them.

use std::collections::{BTreeMap, BTreeSet};

/// The committed partition state, as brokers learn it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// Bumps on every change; brokers apply only newer images.
    pub version: u64,
    pub leader: Option<i32>,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

pub struct Controller {
    pub image: Image,
    pub fenced: BTreeSet<i32>,
    last_heard_ms: BTreeMap<i32, i64>,
    pub session_timeout_ms: i64,
    /// Leader per leader epoch, ever elected.
    pub leaders: BTreeMap<i32, i32>,
    /// One line per decision, for traces.
    pub decisions: Vec<String>,
    pub accepted: u64,
    pub refused: u64,
}

impl Controller {
    pub fn new(replicas: &[i32], session_timeout_ms: i64, now_ms: i64) -> Controller {
        let leader = replicas[0];
        let mut leaders = BTreeMap::new();
        leaders.insert(0, leader);
        Controller {
            image: Image {
                version: 1,
                leader: Some(leader),
                leader_epoch: 0,
                partition_epoch: 0,
                replicas: replicas.to_vec(),
                isr: replicas.to_vec(),
            },
            fenced: BTreeSet::new(),
            last_heard_ms: replicas.iter().map(|&broker| (broker, now_ms)).collect(),
            session_timeout_ms,
            leaders,
            decisions: Vec::new(),
            accepted: 0,
            refused: 0,
        }
    }

    /// Publish a new image; the partition epoch moves when the leader or
    /// the ISR changed (`before`).
    fn changed(&mut self, now_ms: i64, why: &str, before: (Option<i32>, i32, Vec<i32>)) {
        self.image.version += 1;
        if before
            != (
                self.image.leader,
                self.image.leader_epoch,
                self.image.isr.clone(),
            )
        {
            self.image.partition_epoch += 1;
        }
        self.decisions.push(format!(
            "{now_ms}: controller {why}: leader {:?} epoch {} partition epoch {} isr {:?} fenced {:?}",
            self.image.leader,
            self.image.leader_epoch,
            self.image.partition_epoch,
            self.image.isr,
            self.fenced
        ));
    }

    fn before(&self) -> (Option<i32>, i32, Vec<i32>) {
        (
            self.image.leader,
            self.image.leader_epoch,
            self.image.isr.clone(),
        )
    }

    /// Elect a leader from the unfenced ISR members other than `except`
    /// (a new leader epoch even when there is none: Kafka's leader -1).
    fn elect(&mut self, except: Option<i32>) {
        let candidate = self
            .image
            .isr
            .iter()
            .copied()
            .find(|&member| Some(member) != except && !self.fenced.contains(&member));
        self.image.leader = candidate;
        self.image.leader_epoch += 1;
        if let Some(leader) = candidate {
            let previous = self.leaders.insert(self.image.leader_epoch, leader);
            assert!(previous.is_none(), "two leaders for one epoch");
        }
    }

    fn remove_from_isr(&mut self, broker: i32) -> bool {
        if self.image.isr.len() > 1 && self.image.isr.contains(&broker) {
            self.image.isr.retain(|&member| member != broker);
            true
        } else {
            false
        }
    }

    /// Fence brokers whose session expired.
    pub fn tick(&mut self, now_ms: i64) {
        let expired: Vec<i32> = self
            .last_heard_ms
            .iter()
            .filter(|&(broker, &heard)| {
                !self.fenced.contains(broker) && now_ms - heard > self.session_timeout_ms
            })
            .map(|(&broker, _)| broker)
            .collect();
        for broker in expired {
            let before = self.before();
            self.fenced.insert(broker);
            self.remove_from_isr(broker);
            if self.image.leader == Some(broker) {
                self.elect(Some(broker));
            }
            self.changed(now_ms, &format!("fences {broker}"), before);
        }
    }

    /// A heartbeat from a registered broker.
    pub fn heartbeat(&mut self, now_ms: i64, broker: i32) {
        self.last_heard_ms.insert(broker, now_ms);
        let before = self.before();
        if self.fenced.remove(&broker) {
            let leaderless = self.image.leader.is_none() && self.image.isr.contains(&broker);
            if leaderless {
                self.elect(None);
            }
            self.changed(now_ms, &format!("unfences {broker}"), before);
        }
    }

    /// A restarted broker registers as a new incarnation: it leaves the
    /// ISR (unless it is its last member) and its leadership.
    pub fn register(&mut self, now_ms: i64, broker: i32) {
        self.last_heard_ms.insert(broker, now_ms);
        let before = self.before();
        self.fenced.remove(&broker);
        self.remove_from_isr(broker);
        let was_leader = self.image.leader == Some(broker);
        let leaderless = self.image.leader.is_none() && self.image.isr.contains(&broker);
        if was_leader || leaderless {
            self.elect(None);
        }
        self.changed(now_ms, &format!("registers {broker}"), before);
    }

    /// AlterPartition: only from the current leader, at the current leader
    /// and partition epochs, and never with a fenced broker in the ISR.
    pub fn alter_partition(
        &mut self,
        now_ms: i64,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: &[i32],
    ) -> Result<(i32, Vec<i32>), String> {
        let refusal = if self.image.leader != Some(leader) {
            Some("not the leader".to_string())
        } else if leader_epoch != self.image.leader_epoch {
            Some(format!("fenced leader epoch {leader_epoch}"))
        } else if partition_epoch != self.image.partition_epoch {
            Some(format!("stale partition epoch {partition_epoch}"))
        } else if let Some(fenced) = isr.iter().find(|member| self.fenced.contains(member)) {
            Some(format!("broker {fenced} is fenced"))
        } else if !isr.contains(&leader)
            || isr
                .iter()
                .any(|member| !self.image.replicas.contains(member))
        {
            Some("invalid ISR".to_string())
        } else {
            None
        };
        if let Some(refusal) = refusal {
            self.refused += 1;
            self.decisions.push(format!(
                "{now_ms}: controller refuses AlterPartition {isr:?} from {leader} (epoch {leader_epoch}, partition epoch {partition_epoch}): {refusal}"
            ));
            return Err(refusal);
        }
        self.accepted += 1;
        let before = self.before();
        self.image.isr = isr.to_vec();
        self.changed(now_ms, &format!("alters the ISR for {leader}"), before);
        Ok((self.image.partition_epoch, self.image.isr.clone()))
    }
}
