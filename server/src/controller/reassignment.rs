//! Partition reassignment (KIP-455, as KRaft's controller does it), the
//! decisions only (sans-I/O): moving a partition to another replica set
//! while it serves.
//!
//! Starting one: the partition's replicas become the target followed by
//! the replicas being removed (so both old and new replicas hold the data
//! meanwhile); `adding` (target minus the original replicas) and
//! `removing` (original minus target) are recorded beside them
//! (`records::PartitionReassignment`). The brokers open the new replicas
//! from the metadata view; the leader pushes to them like to any follower
//! (catching up from its disk), and its ISR task adds each to the ISR once
//! caught up, through AlterPartition as always.
//!
//! Completing it: once every target replica is in the ISR, the active
//! controller (its periodic tick, [`completions`]) writes the target as
//! the replicas, the ISR without the removed replicas, and a new leader
//! from the target if the leader was being removed. The removed replicas'
//! brokers delete them from the next view. No acknowledged write is lost:
//! an acknowledged write is on every ISR member, the completion only
//! removes members from the ISR, and a new leader comes from it.
//!
//! A new request for a partition being reassigned replaces the target
//! (from the original replicas); a cancellation (target `None`) goes back
//! to the original replicas. Every change is guarded by the partition
//! epoch it was decided on.

use thiserror::Error;

use super::image::{MetadataImage, PartitionState};
use super::records::{LeaderChange, MetadataRecord, PartitionChange, PartitionReassignment};
use super::types::{BrokerId, PartitionIndex, TopicId};

/// Why a reassignment request for one partition is refused (Kafka's
/// per-partition error codes).
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ReassignmentError {
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("invalid replica assignment: {0}")]
    InvalidReplicaAssignment(String),
    #[error("no reassignment in progress")]
    NoReassignmentInProgress,
}

/// The records that start, replace or cancel (`target` `None`) the
/// reassignment of partition `index` of `topic_id`; empty when nothing is
/// to change (the target is already the replica list).
pub fn alter(
    image: &MetadataImage,
    topic_id: TopicId,
    index: PartitionIndex,
    target: Option<&[BrokerId]>,
) -> Result<Vec<MetadataRecord>, ReassignmentError> {
    let partition = image
        .partition(topic_id, index)
        .ok_or(ReassignmentError::UnknownTopicOrPartition)?;
    let original = partition.original_replicas();
    let target = match target {
        Some(target) => {
            check_target(image, target)?;
            target.to_vec()
        }
        None if partition.is_reassigning() => original.clone(),
        None => return Err(ReassignmentError::NoReassignmentInProgress),
    };
    if !partition.is_reassigning() && partition.replicas == target {
        return Ok(Vec::new());
    }
    let adding: Vec<BrokerId> = without(&target, &original);
    let removing: Vec<BrokerId> = without(&original, &target);
    let mut replicas = target.clone();
    replicas.extend(removing.iter().copied());
    let isr: Vec<BrokerId> = partition
        .isr
        .iter()
        .copied()
        .filter(|member| replicas.contains(member))
        .collect();
    let mut next = PartitionState {
        replicas,
        isr,
        adding,
        removing,
        ..partition.clone()
    };
    // The leader was a replica being added by the reassignment this one
    // replaces: another ISR member leads.
    if let Some(leader) = next.leader
        && !next.isr.contains(&leader)
    {
        next.leader = next
            .replicas
            .iter()
            .copied()
            .find(|replica| next.isr.contains(replica) && is_active(image, *replica));
    }
    // With nothing to add and every target replica in sync (a smaller
    // replication factor, a cancellation, a new order), it completes now.
    let next = if next.adding.is_empty() {
        completed(image, &next).unwrap_or(next)
    } else {
        next
    };
    // Never an ISR emptied (say a cancellation of a leaderless partition
    // whose only ISR member was being added): the ISR holds every
    // acknowledged write, and a replica dropped from the list deletes its
    // copy.
    if (partition.leader.is_some() && next.leader.is_none())
        || (!partition.isr.is_empty() && next.isr.is_empty())
    {
        return Err(ReassignmentError::InvalidReplicaAssignment(
            "no in-sync replica would be left".into(),
        ));
    }
    Ok(change(topic_id, index, partition, next))
}

/// The completions due: every partition being reassigned whose target
/// replicas are all in the ISR, and that has (or gets) a leader from the
/// target.
pub fn completions(image: &MetadataImage) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for topic in image.topics().values() {
        for (index, partition) in topic.partitions.iter().enumerate() {
            if !partition.is_reassigning() {
                continue;
            }
            if let Some(next) = completed(image, partition) {
                let index = PartitionIndex(i32::try_from(index).expect("partition count fits i32"));
                records.extend(change(topic.topic_id, index, partition, next));
            }
        }
    }
    records
}

/// `partition` with its reassignment completed, if it can be: every
/// target replica in the ISR, a leader in the target (the current one, or
/// the first active target replica).
fn completed(image: &MetadataImage, partition: &PartitionState) -> Option<PartitionState> {
    let target = partition.target_replicas();
    if !target.iter().all(|replica| partition.isr.contains(replica)) {
        return None;
    }
    let leader = match partition.leader {
        Some(leader) if target.contains(&leader) => leader,
        Some(_) => *target.iter().find(|replica| is_active(image, **replica))?,
        None => return None,
    };
    Some(PartitionState {
        isr: partition
            .isr
            .iter()
            .copied()
            .filter(|member| target.contains(member))
            .collect(),
        replicas: target,
        leader: Some(leader),
        adding: Vec::new(),
        removing: Vec::new(),
        ..partition.clone()
    })
}

/// The records taking `current` to `next` (replicas, ISR, leader and the
/// reassignment lists), guarded by the partition epoch they were decided
/// on.
fn change(
    topic_id: TopicId,
    index: PartitionIndex,
    current: &PartitionState,
    next: PartitionState,
) -> Vec<MetadataRecord> {
    let leader = if next.leader == current.leader {
        LeaderChange::Unchanged
    } else {
        next.leader.map_or(LeaderChange::NoLeader, LeaderChange::To)
    };
    let mut records = vec![MetadataRecord::PartitionChange(PartitionChange {
        topic_id,
        partition: index,
        isr: (next.isr != current.isr).then(|| next.isr.clone()),
        leader,
        replicas: (next.replicas != current.replicas).then(|| next.replicas.clone()),
        expected_partition_epoch: Some(current.partition_epoch),
    })];
    if next.adding != current.adding || next.removing != current.removing {
        records.push(MetadataRecord::PartitionReassignment(
            PartitionReassignment {
                topic_id,
                partition: index,
                adding: next.adding,
                removing: next.removing,
            },
        ));
    }
    records
}

/// Kafka's checks of a target: not empty, no broker twice, every broker
/// registered.
fn check_target(image: &MetadataImage, target: &[BrokerId]) -> Result<(), ReassignmentError> {
    let invalid = |reason: String| Err(ReassignmentError::InvalidReplicaAssignment(reason));
    if target.is_empty() {
        return invalid("the replica list is empty".into());
    }
    let mut sorted = target.to_vec();
    sorted.sort();
    sorted.dedup();
    if sorted.len() != target.len() {
        return invalid("a broker is listed twice".into());
    }
    if let Some(unknown) = target
        .iter()
        .find(|broker| image.broker(**broker).is_none())
    {
        return invalid(format!("broker {} is not registered", unknown.0));
    }
    Ok(())
}

fn is_active(image: &MetadataImage, broker: BrokerId) -> bool {
    image.broker(broker).is_some_and(|b| b.is_active())
}

/// `list` without the members of `other`, in `list`'s order.
fn without(list: &[BrokerId], other: &[BrokerId]) -> Vec<BrokerId> {
    list.iter()
        .copied()
        .filter(|member| !other.contains(member))
        .collect()
}

/// One ongoing reassignment (ListPartitionReassignments).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ongoing {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<BrokerId>,
    pub adding: Vec<BrokerId>,
    pub removing: Vec<BrokerId>,
}

/// The ongoing reassignments, by topic name and partition.
pub fn ongoing(image: &MetadataImage) -> Vec<Ongoing> {
    let mut list = Vec::new();
    for topic in image.topics().values() {
        for (index, partition) in topic.partitions.iter().enumerate() {
            if partition.is_reassigning() {
                list.push(Ongoing {
                    topic: topic.name.clone(),
                    partition: i32::try_from(index).expect("partition count fits i32"),
                    replicas: partition.replicas.clone(),
                    adding: partition.adding.clone(),
                    removing: partition.removing.clone(),
                });
            }
        }
    }
    list.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    list
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use uuid::Uuid;

    use super::*;
    use crate::controller::records::{
        BrokerRegistrationChange, PartitionRecord, RegisterBroker, TopicRecord,
    };
    use crate::controller::types::{
        BrokerEpoch, IncarnationId, LeaderEpoch, MetadataOffset, PartitionEpoch,
    };

    const TOPIC: TopicId = TopicId(Uuid::from_bytes([7; 16]));
    const P0: PartitionIndex = PartitionIndex(0);

    fn ids(list: &[i32]) -> Vec<BrokerId> {
        list.iter().copied().map(BrokerId).collect()
    }

    struct Cluster {
        image: MetadataImage,
        next: i64,
    }

    impl Cluster {
        /// Brokers 1..=4 active; "t" partition 0 on `replicas`, all in
        /// sync, led by the first.
        fn new(replicas: &[i32]) -> Cluster {
            let mut cluster = Cluster {
                image: MetadataImage::new(),
                next: 1,
            };
            for broker in 1..=4 {
                let epoch = cluster.next;
                cluster.commit(vec![MetadataRecord::RegisterBroker(RegisterBroker {
                    broker_id: BrokerId(broker),
                    incarnation_id: IncarnationId(Uuid::from_bytes([broker as u8; 16])),
                    broker_epoch: BrokerEpoch(epoch),
                    listeners: vec![],
                    shard_count: 1,
                    rack: None,
                    directory_id: None,
                    directory_replaced: false,
                })]);
                cluster.commit(vec![MetadataRecord::BrokerRegistrationChange(
                    BrokerRegistrationChange {
                        broker_id: BrokerId(broker),
                        broker_epoch: BrokerEpoch(epoch),
                        fenced: Some(false),
                        in_controlled_shutdown: None,
                    },
                )]);
            }
            cluster.commit(vec![
                MetadataRecord::Topic(TopicRecord {
                    name: "t".into(),
                    topic_id: TOPIC,
                }),
                MetadataRecord::Partition(PartitionRecord {
                    topic_id: TOPIC,
                    partition: P0,
                    replicas: ids(replicas),
                    isr: ids(replicas),
                    leader: Some(BrokerId(replicas[0])),
                    leader_epoch: LeaderEpoch(0),
                    partition_epoch: PartitionEpoch(0),
                }),
            ]);
            cluster
        }

        fn commit(&mut self, records: Vec<MetadataRecord>) {
            self.image
                .apply_batch(MetadataOffset(self.next), &records)
                .unwrap();
            self.next += 1;
        }

        fn state(&self) -> PartitionState {
            self.image.partition(TOPIC, P0).unwrap().clone()
        }

        fn reassign(&mut self, target: Option<&[i32]>) -> Result<(), ReassignmentError> {
            let target = target.map(ids);
            let records = alter(&self.image, TOPIC, P0, target.as_deref())?;
            self.commit(records);
            Ok(())
        }

        /// The leader's AlterPartition, as the ISR task sends it.
        fn set_isr(&mut self, isr: &[i32]) {
            let current = self.state();
            self.commit(vec![MetadataRecord::PartitionChange(PartitionChange {
                topic_id: TOPIC,
                partition: P0,
                isr: Some(ids(isr)),
                leader: LeaderChange::Unchanged,
                replicas: None,
                expected_partition_epoch: Some(current.partition_epoch),
            })]);
        }

        fn tick(&mut self) {
            let records = completions(&self.image);
            if !records.is_empty() {
                self.commit(records);
            }
        }
    }

    #[test]
    fn a_move_adds_first_and_removes_once_the_new_replicas_are_in_sync() {
        let mut cluster = Cluster::new(&[1, 2, 3]);
        cluster.reassign(Some(&[4, 2, 3])).unwrap();
        let state = cluster.state();
        assert_eq!(state.replicas, ids(&[4, 2, 3, 1]));
        assert_eq!(
            (state.adding.clone(), state.removing.clone()),
            (ids(&[4]), ids(&[1]))
        );
        assert_eq!(state.leader, Some(BrokerId(1)));
        assert_eq!(state.leader_epoch, LeaderEpoch(0), "no new leader yet");
        // Not in sync yet: nothing completes.
        cluster.tick();
        assert!(cluster.state().is_reassigning());
        assert_eq!(ongoing(&cluster.image).len(), 1);
        // 4 caught up: the leader adds it; the controller completes, and
        // since the leader (1) is removed, 4 (the first target replica in
        // sync) leads under a new epoch.
        cluster.set_isr(&[1, 2, 3, 4]);
        cluster.tick();
        let state = cluster.state();
        assert_eq!(state.replicas, ids(&[4, 2, 3]));
        assert_eq!(state.isr, ids(&[2, 3, 4]));
        assert_eq!(state.leader, Some(BrokerId(4)));
        assert_eq!(state.leader_epoch, LeaderEpoch(1));
        assert!(!state.is_reassigning());
        assert!(ongoing(&cluster.image).is_empty());
    }

    #[test]
    fn a_higher_replication_factor_keeps_the_leader_and_its_epoch() {
        let mut cluster = Cluster::new(&[1]);
        cluster.reassign(Some(&[1, 2, 3])).unwrap();
        cluster.set_isr(&[1, 2]);
        cluster.tick();
        assert!(cluster.state().is_reassigning(), "3 is not in sync yet");
        cluster.set_isr(&[1, 2, 3]);
        cluster.tick();
        let state = cluster.state();
        assert_eq!(
            (state.replicas.clone(), state.isr.clone()),
            (ids(&[1, 2, 3]), ids(&[1, 2, 3]))
        );
        assert_eq!(
            (state.leader, state.leader_epoch),
            (Some(BrokerId(1)), LeaderEpoch(0))
        );
    }

    #[test]
    fn a_lower_replication_factor_or_a_new_order_completes_at_once() {
        let mut cluster = Cluster::new(&[1, 2, 3]);
        cluster.reassign(Some(&[3, 1])).unwrap();
        let state = cluster.state();
        assert_eq!(
            (state.replicas.clone(), state.isr.clone()),
            (ids(&[3, 1]), ids(&[1, 3]))
        );
        assert!(!state.is_reassigning());
        assert_eq!(state.leader, Some(BrokerId(1)));
        // The same list again: nothing to do.
        assert_eq!(
            alter(&cluster.image, TOPIC, P0, Some(&ids(&[3, 1]))),
            Ok(vec![])
        );
    }

    #[test]
    fn a_removal_waits_for_an_out_of_sync_target_replica() {
        let mut cluster = Cluster::new(&[1, 2, 3]);
        cluster.set_isr(&[1, 3]);
        cluster.reassign(Some(&[1, 2])).unwrap();
        let state = cluster.state();
        assert_eq!(
            (state.adding.clone(), state.removing.clone()),
            (vec![], ids(&[3]))
        );
        cluster.tick();
        assert!(cluster.state().is_reassigning());
        cluster.set_isr(&[1, 3, 2]);
        cluster.tick();
        let state = cluster.state();
        assert_eq!(
            (state.replicas.clone(), state.isr.clone()),
            (ids(&[1, 2]), ids(&[1, 2]))
        );
    }

    #[test]
    fn a_cancellation_goes_back_to_the_original_replicas() {
        let mut cluster = Cluster::new(&[1, 2]);
        cluster.reassign(Some(&[3, 4])).unwrap();
        cluster.set_isr(&[1, 2, 3]);
        cluster.reassign(None).unwrap();
        let state = cluster.state();
        assert_eq!(
            (state.replicas.clone(), state.isr.clone()),
            (ids(&[1, 2]), ids(&[1, 2]))
        );
        assert!(!state.is_reassigning());
        assert_eq!(
            cluster.reassign(None),
            Err(ReassignmentError::NoReassignmentInProgress)
        );
    }

    #[test]
    fn a_new_target_replaces_the_ongoing_one_from_the_original_replicas() {
        let mut cluster = Cluster::new(&[1, 2]);
        cluster.reassign(Some(&[1, 3])).unwrap();
        cluster.reassign(Some(&[1, 4])).unwrap();
        let state = cluster.state();
        assert_eq!(state.replicas, ids(&[1, 4, 2]));
        assert_eq!(
            (state.adding.clone(), state.removing.clone()),
            (ids(&[4]), ids(&[2]))
        );
    }

    #[test]
    fn invalid_targets_are_refused() {
        let cluster = Cluster::new(&[1, 2]);
        let refused = |target: &[i32]| alter(&cluster.image, TOPIC, P0, Some(&ids(target)));
        for target in [&[][..], &[1, 1], &[1, 9]] {
            assert!(matches!(
                refused(target),
                Err(ReassignmentError::InvalidReplicaAssignment(_))
            ));
        }
        assert_eq!(
            alter(&cluster.image, TOPIC, PartitionIndex(5), Some(&ids(&[1]))),
            Err(ReassignmentError::UnknownTopicOrPartition)
        );
    }

    #[test]
    fn a_stale_decision_is_refused_by_the_partition_epoch() {
        let mut cluster = Cluster::new(&[1, 2]);
        let stale = alter(&cluster.image, TOPIC, P0, Some(&ids(&[1, 3]))).unwrap();
        cluster.set_isr(&[1]);
        let offset = MetadataOffset(cluster.next);
        assert!(cluster.image.apply_batch(offset, &stale).is_err());
        assert!(!cluster.state().is_reassigning());
    }

    #[test]
    fn the_reassignment_survives_a_snapshot() {
        let mut cluster = Cluster::new(&[1, 2]);
        cluster.reassign(Some(&[3, 2])).unwrap();
        let decoded = MetadataImage::decode_snapshot(&cluster.image.encode_snapshot()).unwrap();
        assert_eq!(decoded, cluster.image);
        assert_eq!(decoded.partition(TOPIC, P0).unwrap().adding, ids(&[3]));
    }
}
