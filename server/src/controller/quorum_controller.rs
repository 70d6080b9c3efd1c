//! `QuorumController`: the active controller's decisions, as KRaft's
//! QuorumController: requests in, record batches out. Sans-I/O: the image
//! is passed in, time is `now_ms`, topic ids come from the caller (random in
//! production, seeded in the simulation); nothing here reads a clock or does
//! I/O.
//!
//! A returned batch is only a proposal: it takes effect if and when it
//! commits, and the answer to the client waits for that. Decisions are
//! validated against the committed image only; two concurrent proposals
//! that conflict (the same topic name twice, two producer-id blocks from
//! the same start) are both proposed, and the image refuses the later one
//! when it applies (deterministically on every node), so the client of that
//! one gets an error once it commits.
//!
//! Rules (KRaft's): a broker's epoch is the offset of its registration
//! record; a registration is fenced until the broker's heartbeat reports a
//! metadata offset at or past that record; a broker without a heartbeat for
//! the session timeout is fenced, leaves every ISR (except as the last
//! member) and loses its leaderships; a fenced broker's partitions with no
//! other active ISR member have no leader until it returns (replication
//! factor 1) and it leads them again when unfenced; controlled shutdown
//! moves leaderships away first, then fences the broker.

use std::collections::BTreeMap;

use thiserror::Error;

use super::heartbeats::{BrokerSessions, SESSION_TIMEOUT_MS_DEFAULT};
use super::image::{MetadataImage, valid_topic_name};
use super::placement::{ClusterLoad, PlacementError, PlannedPartition, plan_explicit};
use super::records::{
    BrokerRegistrationChange, ConfigRecord, ConfigResource, LeaderChange, Listener, MetadataRecord,
    PartitionChange, PartitionRecord, ProducerIds, RegisterBroker, RemoveTopic, TopicRecord,
    UnregisterBroker,
};
use super::types::{
    BrokerEpoch, BrokerId, IncarnationId, LeaderEpoch, MetadataOffset, PRODUCER_ID_BLOCK_SIZE,
    PartitionEpoch, PartitionIndex, TopicId,
};

/// Operating errors, mapped to Kafka error codes at the protocol edge.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ControllerError {
    #[error("this node is not the active controller")]
    NotController,
    #[error("broker {broker_id} is not registered")]
    UnknownBroker { broker_id: BrokerId },
    #[error("broker {broker_id}: stale epoch {given:?}")]
    StaleBrokerEpoch {
        broker_id: BrokerId,
        given: BrokerEpoch,
    },
    #[error("broker {broker_id} is still unfenced")]
    BrokerNotFenced { broker_id: BrokerId },
    #[error("invalid topic name {name:?}")]
    InvalidTopicName { name: String },
    #[error("topic {name:?} already exists")]
    TopicAlreadyExists { name: String },
    #[error("topic {name:?} does not exist")]
    UnknownTopic { name: String },
    #[error("partition count {requested} is not above the current {current}")]
    InvalidPartitionCount { requested: i32, current: usize },
    #[error(transparent)]
    Placement(#[from] PlacementError),
}

/// A broker's registration request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationRequest {
    pub broker_id: BrokerId,
    pub incarnation_id: IncarnationId,
    pub listeners: Vec<Listener>,
    pub shard_count: u32,
    pub rack: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistrationDecision {
    /// A retry of a registration already committed: its epoch.
    AlreadyRegistered(BrokerEpoch),
    /// Propose `records`; once committed the broker's epoch is `broker_epoch`.
    Propose {
        records: Vec<MetadataRecord>,
        broker_epoch: BrokerEpoch,
    },
}

/// A broker's heartbeat (Kafka's BrokerHeartbeat).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeartbeatRequest {
    pub broker_id: BrokerId,
    pub broker_epoch: BrokerEpoch,
    /// The offset of the image this broker has applied.
    pub current_metadata_offset: MetadataOffset,
    pub want_fence: bool,
    pub want_shut_down: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatDecision {
    /// As of the committed image (before `records`).
    pub is_fenced: bool,
    pub is_caught_up: bool,
    /// Controlled shutdown is done: the broker may stop.
    pub should_shut_down: bool,
    /// A state change to propose (unfence, enter controlled shutdown,
    /// fence); empty for a plain heartbeat.
    pub records: Vec<MetadataRecord>,
}

/// A CreateTopics entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateTopicRequest {
    pub name: String,
    pub partition_count: i32,
    pub replication_factor: i32,
    /// Explicit replica lists, one per partition (then the counts above
    /// are ignored, as Kafka).
    pub assignment: Option<Vec<Vec<BrokerId>>>,
    /// Key and value of each topic config; validated by the caller
    /// (`metadata::topic_config`) before it gets here.
    pub configs: Vec<(String, String)>,
}

pub struct QuorumController {
    sessions: BrokerSessions,
    session_timeout_ms: u64,
}

impl Default for QuorumController {
    fn default() -> QuorumController {
        QuorumController::new(SESSION_TIMEOUT_MS_DEFAULT)
    }
}

impl QuorumController {
    pub fn new(session_timeout_ms: u64) -> QuorumController {
        QuorumController {
            sessions: BrokerSessions::new(),
            session_timeout_ms,
        }
    }

    /// This node just became the active controller.
    pub fn become_active(&mut self, image: &MetadataImage, now_ms: u64) {
        self.sessions.reset(image, now_ms);
    }

    /// A broker registers. `next_offset` is where the proposal will land
    /// (`RaftNode::next_offset`): the new broker epoch.
    pub fn register_broker(
        &mut self,
        image: &MetadataImage,
        next_offset: MetadataOffset,
        request: &RegistrationRequest,
        now_ms: u64,
    ) -> RegistrationDecision {
        if let Some(existing) = image.broker(request.broker_id)
            && existing.incarnation_id == request.incarnation_id
        {
            self.sessions
                .touch(request.broker_id, existing.broker_epoch, now_ms);
            return RegistrationDecision::AlreadyRegistered(existing.broker_epoch);
        }
        let broker_epoch = BrokerEpoch::from_offset(next_offset);
        // A previous incarnation loses its leaderships and ISR places in
        // the same batch: the new registration starts fenced.
        let mut records = if image.broker(request.broker_id).is_some() {
            partition_changes_without(image, request.broker_id)
        } else {
            Vec::new()
        };
        records.push(MetadataRecord::RegisterBroker(RegisterBroker {
            broker_id: request.broker_id,
            incarnation_id: request.incarnation_id,
            broker_epoch,
            listeners: request.listeners.clone(),
            shard_count: request.shard_count,
            rack: request.rack.clone(),
        }));
        self.sessions.touch(request.broker_id, broker_epoch, now_ms);
        RegistrationDecision::Propose {
            records,
            broker_epoch,
        }
    }

    /// A broker heartbeats: its session is renewed; it may be unfenced,
    /// enter controlled shutdown, or be fenced at its request.
    pub fn heartbeat(
        &mut self,
        image: &MetadataImage,
        request: &HeartbeatRequest,
        now_ms: u64,
    ) -> Result<HeartbeatDecision, ControllerError> {
        let broker = image
            .broker(request.broker_id)
            .ok_or(ControllerError::UnknownBroker {
                broker_id: request.broker_id,
            })?;
        if broker.broker_epoch != request.broker_epoch {
            return Err(ControllerError::StaleBrokerEpoch {
                broker_id: request.broker_id,
                given: request.broker_epoch,
            });
        }
        self.sessions
            .touch(request.broker_id, request.broker_epoch, now_ms);
        let is_caught_up = request.current_metadata_offset >= MetadataOffset(broker.broker_epoch.0);
        let leads_nothing = leaderships(image, request.broker_id) == 0;
        let mut decision = HeartbeatDecision {
            is_fenced: broker.fenced,
            is_caught_up,
            should_shut_down: broker.in_controlled_shutdown && broker.fenced,
            records: Vec::new(),
        };
        let change = |fenced, in_controlled_shutdown| {
            MetadataRecord::BrokerRegistrationChange(BrokerRegistrationChange {
                broker_id: request.broker_id,
                broker_epoch: request.broker_epoch,
                fenced,
                in_controlled_shutdown,
            })
        };
        if broker.fenced {
            if is_caught_up && !request.want_fence && !request.want_shut_down {
                decision.records.push(change(Some(false), Some(false)));
                decision
                    .records
                    .extend(leaderships_regained(image, request.broker_id));
            }
        } else if request.want_fence {
            decision.records = fence_batch(image, request.broker_id, request.broker_epoch);
        } else if request.want_shut_down || broker.in_controlled_shutdown {
            if !broker.in_controlled_shutdown {
                decision.records.push(change(None, Some(true)));
                decision
                    .records
                    .extend(partition_changes_without(image, request.broker_id));
            } else if leads_nothing {
                decision.records.push(change(Some(true), None));
                decision.should_shut_down = true;
            }
        }
        Ok(decision)
    }

    /// Periodic work on the active controller: fence the brokers whose
    /// session ran out, one batch per broker.
    pub fn tick(&mut self, image: &MetadataImage, now_ms: u64) -> Vec<Vec<MetadataRecord>> {
        self.sessions
            .expired(image, now_ms, self.session_timeout_ms)
            .into_iter()
            .filter_map(|broker_id| {
                let broker = image.broker(broker_id)?;
                Some(fence_batch(image, broker_id, broker.broker_epoch))
            })
            .collect()
    }

    /// UnregisterBroker (an operator removes a broker for good): only a
    /// fenced broker, which already leads nothing.
    pub fn unregister_broker(
        &self,
        image: &MetadataImage,
        broker_id: BrokerId,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let broker = image
            .broker(broker_id)
            .ok_or(ControllerError::UnknownBroker { broker_id })?;
        if !broker.fenced {
            return Err(ControllerError::BrokerNotFenced { broker_id });
        }
        Ok(vec![MetadataRecord::UnregisterBroker(UnregisterBroker {
            broker_id,
            broker_epoch: broker.broker_epoch,
        })])
    }

    /// CreateTopics, one topic: a Topic record, its Partition records and
    /// its Config records, as one batch.
    pub fn create_topic(
        &self,
        image: &MetadataImage,
        request: &CreateTopicRequest,
        topic_id: TopicId,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        if !valid_topic_name(&request.name) {
            return Err(ControllerError::InvalidTopicName {
                name: request.name.clone(),
            });
        }
        if image.topic_by_name(&request.name).is_some() {
            return Err(ControllerError::TopicAlreadyExists {
                name: request.name.clone(),
            });
        }
        let plan = match &request.assignment {
            Some(assignment) => plan_explicit(image, assignment)?,
            None => ClusterLoad::from_image(image)
                .place(request.partition_count, request.replication_factor)?,
        };
        let mut records = vec![MetadataRecord::Topic(TopicRecord {
            name: request.name.clone(),
            topic_id,
        })];
        records.extend(partition_records(topic_id, 0, plan));
        for (key, value) in &request.configs {
            records.push(MetadataRecord::Config(ConfigRecord {
                resource: ConfigResource::Topic(request.name.clone()),
                key: key.clone(),
                value: Some(value.clone()),
            }));
        }
        Ok(records)
    }

    /// DeleteTopics, one topic.
    pub fn delete_topic(
        &self,
        image: &MetadataImage,
        name: &str,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let topic = image
            .topic_by_name(name)
            .ok_or_else(|| ControllerError::UnknownTopic { name: name.into() })?;
        Ok(vec![MetadataRecord::RemoveTopic(RemoveTopic {
            topic_id: topic.topic_id,
        })])
    }

    /// CreatePartitions: grow `name` to `total_count` partitions, with the
    /// replication factor of its partition 0.
    pub fn create_partitions(
        &self,
        image: &MetadataImage,
        name: &str,
        total_count: i32,
        assignment: Option<&[Vec<BrokerId>]>,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let topic = image
            .topic_by_name(name)
            .ok_or_else(|| ControllerError::UnknownTopic { name: name.into() })?;
        let current = topic.partitions.len();
        let added = usize::try_from(total_count)
            .ok()
            .and_then(|total| total.checked_sub(current))
            .filter(|added| *added > 0)
            .ok_or(ControllerError::InvalidPartitionCount {
                requested: total_count,
                current,
            })?;
        let plan = match assignment {
            Some(assignment) => {
                if assignment.len() != added {
                    return Err(PlacementError::InvalidReplicaAssignment {
                        reason: format!("{} lists for {added} new partitions", assignment.len()),
                    }
                    .into());
                }
                plan_explicit(image, assignment)?
            }
            None => {
                let factor = topic.partitions.first().map_or(1, |p| p.replicas.len());
                ClusterLoad::from_image(image).place(
                    i32::try_from(added).expect("bounded by total_count"),
                    i32::try_from(factor).expect("replica lists are short"),
                )?
            }
        };
        Ok(partition_records(topic.topic_id, current, plan).collect())
    }

    /// AlterConfigs / IncrementalAlterConfigs: set (`Some`) or delete
    /// (`None`) keys of one resource.
    pub fn alter_configs(
        &self,
        image: &MetadataImage,
        resource: &ConfigResource,
        changes: &[(String, Option<String>)],
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        match resource {
            ConfigResource::Topic(name) if image.topic_by_name(name).is_none() => {
                return Err(ControllerError::UnknownTopic { name: name.clone() });
            }
            ConfigResource::Broker(Some(broker_id)) if image.broker(*broker_id).is_none() => {
                return Err(ControllerError::UnknownBroker {
                    broker_id: *broker_id,
                });
            }
            _ => {}
        }
        Ok(changes
            .iter()
            .map(|(key, value)| {
                MetadataRecord::Config(ConfigRecord {
                    resource: resource.clone(),
                    key: key.clone(),
                    value: value.clone(),
                })
            })
            .collect())
    }

    /// AllocateProducerIds: the next block for `broker_id`. Once committed
    /// the broker owns `[next_block_start - PRODUCER_ID_BLOCK_SIZE,
    /// next_block_start)`.
    pub fn allocate_producer_ids(
        &self,
        image: &MetadataImage,
        broker_id: BrokerId,
        broker_epoch: BrokerEpoch,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let broker = image
            .broker(broker_id)
            .ok_or(ControllerError::UnknownBroker { broker_id })?;
        if broker.broker_epoch != broker_epoch {
            return Err(ControllerError::StaleBrokerEpoch {
                broker_id,
                given: broker_epoch,
            });
        }
        Ok(vec![MetadataRecord::ProducerIds(ProducerIds {
            broker_id,
            broker_epoch,
            next_block_start: image.producer_ids().next_block_start + PRODUCER_ID_BLOCK_SIZE,
        })])
    }
}

fn partition_records(
    topic_id: TopicId,
    first_index: usize,
    plan: Vec<PlannedPartition>,
) -> impl Iterator<Item = MetadataRecord> {
    plan.into_iter().enumerate().map(move |(offset, planned)| {
        MetadataRecord::Partition(PartitionRecord {
            topic_id,
            partition: PartitionIndex(
                i32::try_from(first_index + offset).expect("partition count fits i32"),
            ),
            replicas: planned.replicas,
            isr: planned.isr,
            leader: Some(planned.leader),
            leader_epoch: LeaderEpoch(0),
            partition_epoch: PartitionEpoch(0),
        })
    })
}

fn leaderships(image: &MetadataImage, broker_id: BrokerId) -> usize {
    image
        .topics()
        .values()
        .flat_map(|topic| &topic.partitions)
        .filter(|partition| partition.leader == Some(broker_id))
        .count()
}

/// Fence `broker_id`: the registration change and its partitions' changes.
fn fence_batch(
    image: &MetadataImage,
    broker_id: BrokerId,
    broker_epoch: BrokerEpoch,
) -> Vec<MetadataRecord> {
    let mut records = vec![MetadataRecord::BrokerRegistrationChange(
        BrokerRegistrationChange {
            broker_id,
            broker_epoch,
            fenced: Some(true),
            in_controlled_shutdown: None,
        },
    )];
    records.extend(partition_changes_without(image, broker_id));
    records
}

/// Takes `broker_id` out of every ISR (except as the last member, as Kafka
/// keeps it) and out of every leadership: the next active ISR member in
/// replica order leads, or nobody.
fn partition_changes_without(image: &MetadataImage, broker_id: BrokerId) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for topic in image.topics().values() {
        for (index, partition) in topic.partitions.iter().enumerate() {
            let in_isr = partition.isr.contains(&broker_id);
            if !in_isr && partition.leader != Some(broker_id) {
                continue;
            }
            let remaining: Vec<BrokerId> = partition
                .isr
                .iter()
                .copied()
                .filter(|member| *member != broker_id)
                .collect();
            let isr = if remaining.is_empty() {
                partition.isr.clone()
            } else {
                remaining
            };
            let is_candidate = |member: &BrokerId| {
                *member != broker_id && image.broker(*member).is_some_and(|b| b.is_active())
            };
            let leader = if partition.leader.is_some_and(|leader| leader != broker_id) {
                LeaderChange::Unchanged
            } else {
                partition
                    .replicas
                    .iter()
                    .find(|replica| isr.contains(replica) && is_candidate(replica))
                    .map_or(LeaderChange::NoLeader, |leader| LeaderChange::To(*leader))
            };
            let isr_change = (isr != partition.isr).then_some(isr);
            let leader_unchanged = leader == LeaderChange::Unchanged
                || (leader == LeaderChange::NoLeader && partition.leader.is_none());
            if isr_change.is_none() && leader_unchanged {
                continue;
            }
            records.push(MetadataRecord::PartitionChange(PartitionChange {
                topic_id: topic.topic_id,
                partition: PartitionIndex(i32::try_from(index).expect("partition count fits i32")),
                isr: isr_change,
                leader: if leader_unchanged {
                    LeaderChange::Unchanged
                } else {
                    leader
                },
                replicas: None,
            }));
        }
    }
    records
}

/// Partitions without a leader whose ISR holds `broker_id` (now being
/// unfenced): it leads them again.
fn leaderships_regained(image: &MetadataImage, broker_id: BrokerId) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for topic in image.topics().values() {
        for (index, partition) in topic.partitions.iter().enumerate() {
            if partition.leader.is_none() && partition.isr.contains(&broker_id) {
                records.push(MetadataRecord::PartitionChange(PartitionChange {
                    topic_id: topic.topic_id,
                    partition: PartitionIndex(
                        i32::try_from(index).expect("partition count fits i32"),
                    ),
                    isr: None,
                    leader: LeaderChange::To(broker_id),
                    replicas: None,
                }));
            }
        }
    }
    records
}

/// Configs of a topic as a map (for callers answering DescribeConfigs).
pub fn topic_configs(image: &MetadataImage, name: &str) -> BTreeMap<String, String> {
    image
        .configs(&ConfigResource::Topic(name.into()))
        .cloned()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use uuid::Uuid;

    /// Applies `records` as the next entry (the test's own Raft log).
    fn commit(image: &mut MetadataImage, records: &[MetadataRecord]) -> MetadataOffset {
        let offset = MetadataOffset(image.offset().0 + 1);
        image.apply_batch(offset, records).unwrap();
        offset
    }

    fn registration(broker: i32, incarnation: u8) -> RegistrationRequest {
        RegistrationRequest {
            broker_id: BrokerId(broker),
            incarnation_id: IncarnationId(Uuid::from_bytes([incarnation; 16])),
            listeners: vec![],
            shard_count: 1,
            rack: None,
        }
    }

    fn heartbeat(broker: i32, epoch: BrokerEpoch, offset: MetadataOffset) -> HeartbeatRequest {
        HeartbeatRequest {
            broker_id: BrokerId(broker),
            broker_epoch: epoch,
            current_metadata_offset: offset,
            want_fence: false,
            want_shut_down: false,
        }
    }

    /// Registers and unfences `brokers`; returns their epochs.
    fn cluster(
        controller: &mut QuorumController,
        image: &mut MetadataImage,
        brokers: &[i32],
    ) -> BTreeMap<i32, BrokerEpoch> {
        let mut epochs = BTreeMap::new();
        for broker in brokers {
            let next = MetadataOffset(image.offset().0 + 1);
            let RegistrationDecision::Propose {
                records,
                broker_epoch,
            } = controller.register_broker(image, next, &registration(*broker, 1), 0)
            else {
                panic!("a new broker registers");
            };
            commit(image, &records);
            assert!(image.broker(BrokerId(*broker)).unwrap().fenced);
            epochs.insert(*broker, broker_epoch);
        }
        for broker in brokers {
            let decision = controller
                .heartbeat(
                    image,
                    &heartbeat(*broker, epochs[broker], image.offset()),
                    0,
                )
                .unwrap();
            assert!(decision.is_fenced && decision.is_caught_up);
            commit(image, &decision.records);
            assert!(!image.broker(BrokerId(*broker)).unwrap().fenced);
        }
        epochs
    }

    fn create(
        controller: &QuorumController,
        image: &mut MetadataImage,
        name: &str,
        count: i32,
        factor: i32,
    ) -> TopicId {
        let topic_id = TopicId(Uuid::from_bytes([name.len() as u8; 16]));
        let request = CreateTopicRequest {
            name: name.into(),
            partition_count: count,
            replication_factor: factor,
            assignment: None,
            configs: vec![("retention.ms".into(), "1000".into())],
        };
        let records = controller.create_topic(image, &request, topic_id).unwrap();
        commit(image, &records);
        topic_id
    }

    #[test]
    fn a_broker_is_unfenced_only_once_caught_up_with_its_registration() {
        let mut controller = QuorumController::default();
        let mut image = MetadataImage::new();
        commit(&mut image, &[MetadataRecord::NoOp]);
        let next = MetadataOffset(2);
        let RegistrationDecision::Propose {
            records,
            broker_epoch,
        } = controller.register_broker(&image, next, &registration(1, 1), 0)
        else {
            panic!()
        };
        assert_eq!(broker_epoch, BrokerEpoch(2));
        commit(&mut image, &records);
        let behind = controller
            .heartbeat(&image, &heartbeat(1, broker_epoch, MetadataOffset(1)), 10)
            .unwrap();
        assert!(!behind.is_caught_up && behind.records.is_empty());
        let caught_up = controller
            .heartbeat(&image, &heartbeat(1, broker_epoch, MetadataOffset(2)), 20)
            .unwrap();
        assert_eq!(caught_up.records.len(), 1);
        // A retry of the same incarnation is not a new registration.
        assert_eq!(
            controller.register_broker(&image, MetadataOffset(9), &registration(1, 1), 30),
            RegistrationDecision::AlreadyRegistered(broker_epoch)
        );
        assert!(matches!(
            controller.heartbeat(&image, &heartbeat(1, BrokerEpoch(99), image.offset()), 40),
            Err(ControllerError::StaleBrokerEpoch { .. })
        ));
    }

    #[test]
    fn a_silent_broker_is_fenced_and_its_rf1_partitions_go_offline_then_return() {
        let mut controller = QuorumController::new(9000);
        let mut image = MetadataImage::new();
        let epochs = cluster(&mut controller, &mut image, &[1, 2]);
        let topic = create(&controller, &mut image, "t", 4, 1);
        let led_by_1: Vec<usize> = image
            .topic(topic)
            .unwrap()
            .partitions
            .iter()
            .enumerate()
            .filter(|(_, p)| p.leader == Some(BrokerId(1)))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(led_by_1.len(), 2);
        // Broker 2 keeps heartbeating; broker 1 goes silent.
        for now in [3000, 6000, 9000] {
            controller
                .heartbeat(&image, &heartbeat(2, epochs[&2], image.offset()), now)
                .unwrap();
            assert!(controller.tick(&image, now).is_empty());
        }
        controller
            .heartbeat(&image, &heartbeat(2, epochs[&2], image.offset()), 9001)
            .unwrap();
        let batches = controller.tick(&image, 9001);
        assert_eq!(batches.len(), 1);
        commit(&mut image, &batches[0]);
        assert!(image.broker(BrokerId(1)).unwrap().fenced);
        for index in &led_by_1 {
            let partition = &image.topic(topic).unwrap().partitions[*index];
            assert_eq!(partition.leader, None);
            assert_eq!(
                partition.isr,
                vec![BrokerId(1)],
                "the last ISR member stays"
            );
            assert_eq!(partition.leader_epoch, LeaderEpoch(1));
        }
        // It comes back (same epoch, caught up): unfenced and leads again.
        let decision = controller
            .heartbeat(&image, &heartbeat(1, epochs[&1], image.offset()), 9500)
            .unwrap();
        commit(&mut image, &decision.records);
        for index in &led_by_1 {
            let partition = &image.topic(topic).unwrap().partitions[*index];
            assert_eq!(partition.leader, Some(BrokerId(1)));
            assert_eq!(partition.leader_epoch, LeaderEpoch(2));
        }
    }

    #[test]
    fn controlled_shutdown_moves_leaderships_then_fences() {
        let mut controller = QuorumController::default();
        let mut image = MetadataImage::new();
        let epochs = cluster(&mut controller, &mut image, &[1, 2, 3]);
        let topic = create(&controller, &mut image, "replicated", 6, 3);
        let mut request = heartbeat(1, epochs[&1], image.offset());
        request.want_shut_down = true;
        let decision = controller.heartbeat(&image, &request, 100).unwrap();
        assert!(!decision.should_shut_down);
        commit(&mut image, &decision.records);
        assert!(image.broker(BrokerId(1)).unwrap().in_controlled_shutdown);
        for partition in &image.topic(topic).unwrap().partitions {
            assert_ne!(partition.leader, Some(BrokerId(1)));
            assert!(!partition.isr.contains(&BrokerId(1)));
        }
        let decision = controller.heartbeat(&image, &request, 200).unwrap();
        assert!(decision.should_shut_down);
        commit(&mut image, &decision.records);
        assert!(image.broker(BrokerId(1)).unwrap().fenced);
    }

    #[test]
    fn topics_partitions_configs_and_producer_ids() {
        let mut controller = QuorumController::default();
        let mut image = MetadataImage::new();
        let epochs = cluster(&mut controller, &mut image, &[1, 2, 3]);
        create(&controller, &mut image, "orders", 3, 2);
        assert_eq!(
            topic_configs(&image, "orders")
                .get("retention.ms")
                .map(String::as_str),
            Some("1000")
        );
        let duplicate = CreateTopicRequest {
            name: "orders".into(),
            partition_count: 1,
            replication_factor: 1,
            assignment: None,
            configs: vec![],
        };
        assert!(matches!(
            controller.create_topic(&image, &duplicate, TopicId::default()),
            Err(ControllerError::TopicAlreadyExists { .. })
        ));
        let too_wide = CreateTopicRequest {
            name: "wide".into(),
            replication_factor: 4,
            ..duplicate
        };
        assert!(matches!(
            controller.create_topic(&image, &too_wide, TopicId::default()),
            Err(ControllerError::Placement(
                PlacementError::InvalidReplicationFactor { .. }
            ))
        ));
        let records = controller
            .create_partitions(&image, "orders", 5, None)
            .unwrap();
        commit(&mut image, &records);
        let topic = image.topic_by_name("orders").unwrap();
        assert_eq!(topic.partitions.len(), 5);
        assert!(topic.partitions.iter().all(|p| p.replicas.len() == 2));
        assert!(
            controller
                .create_partitions(&image, "orders", 5, None)
                .is_err()
        );
        let records = controller
            .alter_configs(
                &image,
                &ConfigResource::Topic("orders".into()),
                &[("retention.ms".into(), None)],
            )
            .unwrap();
        commit(&mut image, &records);
        assert!(topic_configs(&image, "orders").is_empty());
        let first = controller
            .allocate_producer_ids(&image, BrokerId(1), epochs[&1])
            .unwrap();
        commit(&mut image, &first);
        let second = controller
            .allocate_producer_ids(&image, BrokerId(2), epochs[&2])
            .unwrap();
        commit(&mut image, &second);
        assert_eq!(
            image.producer_ids().next_block_start,
            2 * PRODUCER_ID_BLOCK_SIZE
        );
        let records = controller.delete_topic(&image, "orders").unwrap();
        commit(&mut image, &records);
        assert!(image.topic_by_name("orders").is_none());
        assert!(matches!(
            controller.unregister_broker(&image, BrokerId(3)),
            Err(ControllerError::BrokerNotFenced { .. })
        ));
        let mut request = heartbeat(3, epochs[&3], image.offset());
        request.want_fence = true;
        let decision = controller.heartbeat(&image, &request, 0).unwrap();
        commit(&mut image, &decision.records);
        let records = controller.unregister_broker(&image, BrokerId(3)).unwrap();
        commit(&mut image, &records);
        assert!(image.broker(BrokerId(3)).is_none());
    }

    #[test]
    fn a_new_incarnation_starts_fenced_without_its_old_leaderships() {
        let mut controller = QuorumController::default();
        let mut image = MetadataImage::new();
        cluster(&mut controller, &mut image, &[1, 2]);
        let topic = create(&controller, &mut image, "t", 2, 2);
        let next = MetadataOffset(image.offset().0 + 1);
        let RegistrationDecision::Propose { records, .. } =
            controller.register_broker(&image, next, &registration(1, 2), 0)
        else {
            panic!()
        };
        commit(&mut image, &records);
        for partition in &image.topic(topic).unwrap().partitions {
            assert_eq!(partition.leader, Some(BrokerId(2)));
            assert_eq!(partition.isr, vec![BrokerId(2)]);
        }
    }
}
