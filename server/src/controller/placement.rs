//! Replica placement for topic creation and partition addition. Pure: the
//! input is the image (who is active, how many replicas and leaderships each
//! already holds), the output is a plan of replica lists.
//!
//! Rules: only active brokers (registered, unfenced, not in
//! controlled shutdown) receive new replicas; each partition's leader (its
//! first replica, the preferred leader) is the active broker with the fewest
//! leaderships, then the fewest replicas, then the lowest id; its followers
//! are the other brokers with the fewest replicas (then the lowest id). Counts include the partitions
//! planned so far, so one large topic spreads as evenly as many small ones.
//! Explicit assignments are honoured after validation.

use std::collections::BTreeMap;

use thiserror::Error;

use super::image::MetadataImage;
use super::types::BrokerId;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PlacementError {
    #[error("replication factor {requested} is above the {available} live brokers")]
    InvalidReplicationFactor { requested: i32, available: usize },
    #[error("invalid partition count {count}")]
    InvalidPartitionCount { count: i32 },
    #[error("invalid replica assignment: {reason}")]
    InvalidReplicaAssignment { reason: String },
}

/// Where one new partition goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedPartition {
    /// The first replica is the preferred leader.
    pub replicas: Vec<BrokerId>,
    /// The replicas that are active now (all of them for automatic placement).
    pub isr: Vec<BrokerId>,
    /// The first active replica.
    pub leader: BrokerId,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Load {
    replicas: usize,
    leaders: usize,
}

/// The replicas and preferred leaderships each active broker holds.
pub struct ClusterLoad {
    loads: BTreeMap<BrokerId, Load>,
}

impl ClusterLoad {
    pub fn from_image(image: &MetadataImage) -> ClusterLoad {
        let mut loads: BTreeMap<BrokerId, Load> = image
            .active_brokers()
            .map(|broker| (broker.broker_id, Load::default()))
            .collect();
        for topic in image.topics().values() {
            for partition in &topic.partitions {
                for replica in &partition.replicas {
                    if let Some(load) = loads.get_mut(replica) {
                        load.replicas += 1;
                    }
                }
                if let Some(load) = partition.replicas.first().and_then(|id| loads.get_mut(id)) {
                    load.leaders += 1;
                }
            }
        }
        ClusterLoad { loads }
    }

    pub fn active_count(&self) -> usize {
        self.loads.len()
    }

    /// Plans `count` new partitions of `replication_factor` replicas each.
    pub fn place(
        &mut self,
        count: i32,
        replication_factor: i32,
    ) -> Result<Vec<PlannedPartition>, PlacementError> {
        if count <= 0 {
            return Err(PlacementError::InvalidPartitionCount { count });
        }
        let factor = usize::try_from(replication_factor).unwrap_or(0);
        if factor == 0 || factor > self.loads.len() {
            return Err(PlacementError::InvalidReplicationFactor {
                requested: replication_factor,
                available: self.loads.len(),
            });
        }
        let mut planned = Vec::new();
        for _ in 0..count {
            let leader = *self
                .loads
                .iter()
                .min_by_key(|(id, load)| (load.leaders, load.replicas, **id))
                .map(|(id, _)| id)
                .expect("at least one active broker: factor >= 1 was checked");
            let mut followers: Vec<(Load, BrokerId)> = self
                .loads
                .iter()
                .filter(|(id, _)| **id != leader)
                .map(|(id, load)| (*load, *id))
                .collect();
            followers.sort_by_key(|(load, id)| (load.replicas, *id));
            let mut replicas = vec![leader];
            replicas.extend(followers.iter().take(factor - 1).map(|(_, id)| *id));
            for replica in &replicas {
                if let Some(load) = self.loads.get_mut(replica) {
                    load.replicas += 1;
                }
            }
            if let Some(load) = self.loads.get_mut(&leader) {
                load.leaders += 1;
            }
            planned.push(PlannedPartition {
                isr: replicas.clone(),
                replicas,
                leader,
            });
        }
        Ok(planned)
    }
}

/// Validates an explicit assignment (one replica list per new partition):
/// lists non-empty, of one length, without duplicates, naming registered
/// brokers, each with at least one active broker (its first active replica
/// leads; inactive replicas start outside the ISR).
pub fn plan_explicit(
    image: &MetadataImage,
    assignment: &[Vec<BrokerId>],
) -> Result<Vec<PlannedPartition>, PlacementError> {
    let invalid = |reason: String| PlacementError::InvalidReplicaAssignment { reason };
    let Some(first) = assignment.first() else {
        return Err(invalid("no partitions".into()));
    };
    let mut planned = Vec::new();
    for (index, replicas) in assignment.iter().enumerate() {
        if replicas.is_empty() {
            return Err(invalid(format!("partition {index} has no replicas")));
        }
        if replicas.len() != first.len() {
            return Err(invalid(format!(
                "partition {index} has {} replicas, partition 0 has {}",
                replicas.len(),
                first.len()
            )));
        }
        let mut sorted = replicas.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != replicas.len() {
            return Err(invalid(format!("partition {index} repeats a broker")));
        }
        let mut isr = Vec::new();
        for replica in replicas {
            let Some(broker) = image.broker(*replica) else {
                return Err(invalid(format!("broker {replica} is not registered")));
            };
            if broker.is_active() {
                isr.push(*replica);
            }
        }
        let Some(leader) = isr.first().copied() else {
            return Err(invalid(format!(
                "every broker of partition {index} is fenced or shutting down"
            )));
        };
        planned.push(PlannedPartition {
            replicas: replicas.clone(),
            isr,
            leader,
        });
    }
    Ok(planned)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::controller::records::{BrokerRegistrationChange, MetadataRecord, RegisterBroker};
    use crate::controller::types::{BrokerEpoch, IncarnationId, MetadataOffset};

    fn image_with(active: &[i32], fenced: &[i32]) -> MetadataImage {
        let mut image = MetadataImage::new();
        let mut offset = 0;
        for broker in active.iter().chain(fenced) {
            offset += 1;
            let record = MetadataRecord::RegisterBroker(RegisterBroker {
                broker_id: BrokerId(*broker),
                incarnation_id: IncarnationId::default(),
                broker_epoch: BrokerEpoch(offset),
                listeners: vec![],
                shard_count: 1,
                rack: None,
                directory_id: None,
                directory_replaced: false,
            });
            let mut batch = vec![record];
            if active.contains(broker) {
                batch.push(MetadataRecord::BrokerRegistrationChange(
                    BrokerRegistrationChange {
                        broker_id: BrokerId(*broker),
                        broker_epoch: BrokerEpoch(offset),
                        fenced: Some(false),
                        in_controlled_shutdown: None,
                    },
                ));
            }
            image.apply_batch(MetadataOffset(offset), &batch).unwrap();
        }
        image
    }

    fn counts(plan: &[PlannedPartition]) -> (BTreeMap<BrokerId, usize>, BTreeMap<BrokerId, usize>) {
        let mut replicas = BTreeMap::new();
        let mut leaders = BTreeMap::new();
        for partition in plan {
            assert_eq!(partition.leader, partition.replicas[0]);
            for replica in &partition.replicas {
                *replicas.entry(*replica).or_insert(0) += 1;
            }
            *leaders.entry(partition.leader).or_insert(0) += 1;
        }
        (replicas, leaders)
    }

    #[test]
    fn twelve_partitions_spread_evenly_over_three_brokers() {
        let image = image_with(&[1, 2, 3], &[]);
        for factor in 1..=3 {
            let plan = ClusterLoad::from_image(&image).place(12, factor).unwrap();
            let (replicas, leaders) = counts(&plan);
            assert!(
                replicas.values().all(|count| *count == 4 * factor as usize),
                "{replicas:?}"
            );
            assert!(leaders.values().all(|count| *count == 4), "{leaders:?}");
            for partition in &plan {
                let mut distinct = partition.replicas.clone();
                distinct.dedup();
                assert_eq!(distinct.len(), factor as usize);
            }
        }
    }

    #[test]
    fn many_small_topics_balance_like_one_large_one() {
        let mut load = ClusterLoad::from_image(&image_with(&[1, 2, 3, 4], &[]));
        let mut plan = Vec::new();
        for _ in 0..10 {
            plan.extend(load.place(2, 2).unwrap());
        }
        let (replicas, leaders) = counts(&plan);
        assert!(replicas.values().all(|count| *count == 10), "{replicas:?}");
        assert!(leaders.values().all(|count| *count == 5), "{leaders:?}");
    }

    #[test]
    fn fenced_brokers_get_nothing_and_count_against_the_replication_factor() {
        let image = image_with(&[1, 2], &[3]);
        let plan = ClusterLoad::from_image(&image).place(6, 2).unwrap();
        assert!(plan.iter().all(|p| !p.replicas.contains(&BrokerId(3))));
        assert_eq!(
            ClusterLoad::from_image(&image).place(1, 3),
            Err(PlacementError::InvalidReplicationFactor {
                requested: 3,
                available: 2
            })
        );
        assert!(ClusterLoad::from_image(&image).place(1, 0).is_err());
        assert!(ClusterLoad::from_image(&image).place(0, 1).is_err());
    }

    #[test]
    fn explicit_assignments_are_honoured_and_validated() {
        let image = image_with(&[1, 2], &[3]);
        let plan = plan_explicit(
            &image,
            &[
                vec![BrokerId(3), BrokerId(1)],
                vec![BrokerId(2), BrokerId(1)],
            ],
        )
        .unwrap();
        assert_eq!(plan[0].replicas, vec![BrokerId(3), BrokerId(1)]);
        assert_eq!(
            plan[0].isr,
            vec![BrokerId(1)],
            "fenced replicas start outside the ISR"
        );
        assert_eq!(plan[0].leader, BrokerId(1));
        assert_eq!(plan[1].leader, BrokerId(2));
        for bad in [
            vec![],
            vec![vec![]],
            vec![vec![BrokerId(1), BrokerId(1)]],
            vec![vec![BrokerId(9)]],
            vec![vec![BrokerId(3)]],
            vec![vec![BrokerId(1)], vec![BrokerId(1), BrokerId(2)]],
        ] {
            assert!(plan_explicit(&image, &bad).is_err(), "{bad:?}");
        }
    }
}
