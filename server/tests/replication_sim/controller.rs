//! The controller's decisions for one partition, modelled directly (the
//! Raft log under them is `controller_sim`'s subject): broker liveness by
//! session timeout, fencing, leader election from the live ISR, restarts
//! as new incarnations, and AlterPartition with leader and partition epoch
//! checks, as KRaft's QuorumController makes them, and partition
//! reassignment as `controller/reassignment.rs` decides it (start: the
//! replicas become the target followed by the replicas being removed, the
//! ISR without dropped members; completion on the tick once every target
//! replica is in the ISR; cancellation back to the original replicas).

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
    /// Replicas a reassignment adds (in `replicas`, not in the original).
    pub adding: Vec<i32>,
    /// Replicas a reassignment removes (in `replicas`, not in the target).
    pub removing: Vec<i32>,
}

impl Image {
    pub fn is_reassigning(&self) -> bool {
        !self.adding.is_empty() || !self.removing.is_empty()
    }

    /// `PartitionState::target_replicas`.
    pub fn target_replicas(&self) -> Vec<i32> {
        without(&self.replicas, &self.removing)
    }

    /// `PartitionState::original_replicas`.
    pub fn original_replicas(&self) -> Vec<i32> {
        without(&self.replicas, &self.adding)
    }
}

/// `list` without the members of `other`, in `list`'s order.
fn without(list: &[i32], other: &[i32]) -> Vec<i32> {
    list.iter()
        .copied()
        .filter(|member| !other.contains(member))
        .collect()
}

/// A deliberately broken controller, to prove the checker can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControllerBug {
    None,
    /// A reassignment completes on the tick as soon as the leader is in
    /// the target, with the whole target as the ISR: new replicas count
    /// as in sync before they caught up.
    CompleteBeforeInSync,
}

/// What a change is compared against: leader, leader epoch, ISR,
/// replicas, adding, removing.
type Before = (Option<i32>, i32, Vec<i32>, Vec<i32>, Vec<i32>, Vec<i32>);

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
    /// Reassignments started (or replaced), cancelled, completed.
    pub reassignments: u64,
    pub cancellations: u64,
    pub completions: u64,
    pub bug: ControllerBug,
}

impl Controller {
    /// `brokers` are all registered; the partition lives on `replicas`.
    pub fn new(
        brokers: &[i32],
        replicas: &[i32],
        session_timeout_ms: i64,
        now_ms: i64,
        bug: ControllerBug,
    ) -> Controller {
        let leader = replicas[0];
        assert!(replicas.iter().all(|replica| brokers.contains(replica)));
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
                adding: Vec::new(),
                removing: Vec::new(),
            },
            fenced: BTreeSet::new(),
            last_heard_ms: brokers.iter().map(|&broker| (broker, now_ms)).collect(),
            session_timeout_ms,
            leaders,
            decisions: Vec::new(),
            accepted: 0,
            refused: 0,
            reassignments: 0,
            cancellations: 0,
            completions: 0,
            bug,
        }
    }

    /// Publish a new image; the partition epoch moves when the leader,
    /// the ISR, the replicas or the reassignment lists changed (`before`:
    /// a PartitionChange record).
    fn changed(&mut self, now_ms: i64, why: &str, before: Before) {
        self.image.version += 1;
        if before != self.before() {
            self.image.partition_epoch += 1;
        }
        self.decisions.push(format!(
            "{now_ms}: controller {why}: leader {:?} epoch {} partition epoch {} replicas {:?} isr {:?} adding {:?} removing {:?} fenced {:?}",
            self.image.leader,
            self.image.leader_epoch,
            self.image.partition_epoch,
            self.image.replicas,
            self.image.isr,
            self.image.adding,
            self.image.removing,
            self.fenced
        ));
    }

    fn before(&self) -> Before {
        (
            self.image.leader,
            self.image.leader_epoch,
            self.image.isr.clone(),
            self.image.replicas.clone(),
            self.image.adding.clone(),
            self.image.removing.clone(),
        )
    }

    /// Elect a leader from the unfenced ISR members other than `except`,
    /// the first in replica order as production's `elect` (a new leader
    /// epoch even when there is none: Kafka's leader -1).
    fn elect(&mut self, except: Option<i32>) {
        let candidate = self.image.replicas.iter().copied().find(|&member| {
            self.image.isr.contains(&member)
                && Some(member) != except
                && !self.fenced.contains(&member)
        });
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
        let mut fenced_some = false;
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
            fenced_some = true;
        }
        // Not in the same round as a fencing (production's tick).
        if !fenced_some && self.image.is_reassigning() {
            let before = self.before();
            if let Some(next) = self.completed(&self.image.clone()) {
                self.install(next);
                self.completions += 1;
                self.changed(now_ms, "completes the reassignment", before);
            }
        }
    }

    fn is_active(&self, broker: i32) -> bool {
        !self.fenced.contains(&broker)
    }

    /// `reassignment::completed`: `image` with its reassignment completed,
    /// if every target replica is in the ISR and a leader from the target
    /// can lead (the current one, or the first active target replica).
    fn completed(&self, image: &Image) -> Option<Image> {
        let target = image.target_replicas();
        let in_sync = target.iter().all(|replica| image.isr.contains(replica));
        let bug = self.bug == ControllerBug::CompleteBeforeInSync
            && image.leader.is_some_and(|leader| target.contains(&leader));
        if !in_sync && !bug {
            return None;
        }
        let leader = match image.leader {
            Some(leader) if target.contains(&leader) => leader,
            Some(_) => *target.iter().find(|replica| self.is_active(**replica))?,
            None => return None,
        };
        let isr = if bug {
            target.clone()
        } else {
            image
                .isr
                .iter()
                .copied()
                .filter(|member| target.contains(member))
                .collect()
        };
        Some(Image {
            isr,
            replicas: target,
            leader: Some(leader),
            adding: Vec::new(),
            removing: Vec::new(),
            ..image.clone()
        })
    }

    /// Make `next` (decided on the current image) the image; a new leader
    /// gets a new leader epoch (only then: decision 0015).
    fn install(&mut self, next: Image) {
        let leader_changed = next.leader != self.image.leader;
        self.image.replicas = next.replicas;
        self.image.isr = next.isr;
        self.image.adding = next.adding;
        self.image.removing = next.removing;
        if leader_changed {
            self.image.leader = next.leader;
            self.image.leader_epoch += 1;
            if let Some(leader) = next.leader {
                let previous = self.leaders.insert(self.image.leader_epoch, leader);
                assert!(previous.is_none(), "two leaders for one epoch");
            }
        }
    }

    /// AlterPartitionReassignments for the partition (`reassignment::alter`):
    /// start or replace a reassignment to `target`, or cancel it (`None`).
    pub fn reassign(&mut self, now_ms: i64, target: Option<&[i32]>) -> Result<(), String> {
        let image = self.image.clone();
        let original = image.original_replicas();
        let what = match target {
            Some(target) => format!("reassignment to {target:?}"),
            None => "cancellation".to_string(),
        };
        let target = match target {
            Some(target) => {
                let mut sorted = target.to_vec();
                sorted.sort_unstable();
                sorted.dedup();
                assert!(!target.is_empty() && sorted.len() == target.len());
                assert!(
                    target
                        .iter()
                        .all(|broker| self.last_heard_ms.contains_key(broker))
                );
                target.to_vec()
            }
            None if image.is_reassigning() => original.clone(),
            None => return Err("no reassignment in progress".to_string()),
        };
        if !image.is_reassigning() && image.replicas == target {
            return Ok(());
        }
        let adding = without(&target, &original);
        let removing = without(&original, &target);
        let mut replicas = target.clone();
        replicas.extend(removing.iter().copied());
        let isr: Vec<i32> = image
            .isr
            .iter()
            .copied()
            .filter(|member| replicas.contains(member))
            .collect();
        let mut next = Image {
            replicas,
            isr,
            adding,
            removing,
            ..image.clone()
        };
        if let Some(leader) = next.leader
            && !next.isr.contains(&leader)
        {
            next.leader = next
                .replicas
                .iter()
                .copied()
                .find(|replica| next.isr.contains(replica) && self.is_active(*replica));
        }
        let next = if next.adding.is_empty() {
            self.completed(&next).unwrap_or(next)
        } else {
            next
        };
        if (image.leader.is_some() && next.leader.is_none())
            || (!image.isr.is_empty() && next.isr.is_empty())
        {
            let refusal = "no in-sync replica would be left".to_string();
            self.decisions.push(format!(
                "{now_ms}: controller refuses the {what}: {refusal}"
            ));
            return Err(refusal);
        }
        let before = self.before();
        let cancels = target == original;
        self.install(next);
        if cancels {
            self.cancellations += 1;
        } else {
            self.reassignments += 1;
        }
        if !self.image.is_reassigning() {
            self.completions += 1;
        }
        self.changed(now_ms, &format!("starts the {what}"), before);
        Ok(())
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
        let same_members = |left: &[i32], right: &[i32]| {
            let mut left = left.to_vec();
            let mut right = right.to_vec();
            left.sort_unstable();
            right.sort_unstable();
            left == right
        };
        let refusal = if self.image.leader != Some(leader) {
            Some("not the leader".to_string())
        } else if leader_epoch != self.image.leader_epoch {
            Some(format!("fenced leader epoch {leader_epoch}"))
        } else if partition_epoch <= self.image.partition_epoch
            && same_members(isr, &self.image.isr)
        {
            // Production's `AlterPartitionDecision::Current`: a retry whose
            // first attempt committed (its answer lost), or the ISR already
            // in place, is answered with the current state.
            self.decisions.push(format!(
                "{now_ms}: controller answers AlterPartition {isr:?} from {leader} (partition epoch {partition_epoch}) with the current state at partition epoch {}",
                self.image.partition_epoch
            ));
            return Ok((self.image.partition_epoch, self.image.isr.clone()));
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
