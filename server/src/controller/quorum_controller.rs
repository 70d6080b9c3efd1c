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
//!
//! Directories (KIP-858's directory id): a broker registers with its data
//! directory's id. One that comes back with another id than the one on
//! record runs on a replaced or wiped disk, so it loses every ISR place,
//! the last member's too: a partition it was the last ISR member of is
//! left with an empty ISR and no leader, and only an unclean election
//! gives it one (which takes replicas on replaced disks last). The only
//! replica of a partition keeps its place (nothing else holds the data).
//!
//! Elections: a lost leadership goes to the first active ISR member in
//! replica order. With the topic's `unclean.leader.election.enable` and no
//! active ISR member, the first active replica leads with ISR = [it]
//! (unclean: it may lack acknowledged records). AlterPartition lets a
//! leader change its ISR, guarded by its leader and partition epochs; the
//! periodic preferred-leader rebalance moves leaderships back to
//! `replicas[0]`. Invariants (checked by the image): the leader is an
//! active ISR member, and only active brokers join an ISR. The ISR
//! empties only when its last member comes back on a replaced disk.

use std::collections::BTreeMap;

use thiserror::Error;

use super::heartbeats::{BrokerSessions, SESSION_TIMEOUT_MS_DEFAULT};
use super::image::{MetadataImage, PartitionState, valid_topic_name};
use super::placement::{ClusterLoad, PlacementError, PlannedPartition, plan_explicit};
use super::records::{
    BrokerRegistrationChange, ConfigRecord, ConfigResource, LeaderChange, Listener, MetadataRecord,
    PartitionChange, PartitionRecord, ProducerIds, RegisterBroker, RemoveTopic, TopicRecord,
    UnregisterBroker,
};
use super::types::{
    BrokerEpoch, BrokerId, DirectoryId, IncarnationId, LeaderEpoch, MetadataOffset,
    PRODUCER_ID_BLOCK_SIZE, PartitionEpoch, PartitionIndex, TopicId,
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
    #[error("topic id {topic_id} does not exist")]
    UnknownTopicId { topic_id: TopicId },
    #[error("topic {topic_id} has no partition {partition:?}")]
    UnknownPartition {
        topic_id: TopicId,
        partition: PartitionIndex,
    },
    /// AlterPartition from a broker that does not lead the partition
    /// (Kafka's NOT_LEADER_OR_FOLLOWER).
    #[error("broker {broker_id} does not lead the partition (leader: {leader:?})")]
    NotLeaderOrFollower {
        broker_id: BrokerId,
        leader: Option<BrokerId>,
    },
    /// The request's leader epoch is not the partition's (Kafka's
    /// FENCED_LEADER_EPOCH).
    #[error("leader epoch {given:?} is not the current {current:?}")]
    FencedLeaderEpoch {
        given: LeaderEpoch,
        current: LeaderEpoch,
    },
    /// The request's partition epoch is not the partition's (Kafka's
    /// INVALID_UPDATE_VERSION): the leader has not seen the last change.
    #[error("partition epoch {given:?} is not the current {current:?}")]
    InvalidUpdateVersion {
        given: PartitionEpoch,
        current: PartitionEpoch,
    },
    /// A malformed ISR (Kafka's INVALID_REQUEST).
    #[error("invalid ISR: {reason}")]
    InvalidIsr { reason: &'static str },
    /// The new ISR adds a broker that is not registered, fenced or in
    /// controlled shutdown (Kafka's INELIGIBLE_REPLICA).
    #[error("broker {broker_id} may not join the ISR (not an active broker)")]
    IneligibleReplica { broker_id: BrokerId },
}

/// A broker's registration request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationRequest {
    pub broker_id: BrokerId,
    pub incarnation_id: IncarnationId,
    pub listeners: Vec<Listener>,
    pub shard_count: u32,
    pub rack: Option<String>,
    /// Its data directory's id; `None` from a broker of a version without
    /// directory ids.
    pub directory_id: Option<DirectoryId>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistrationDecision {
    /// A retry of a registration already committed: its epoch.
    AlreadyRegistered(BrokerEpoch),
    /// Propose `records`; once committed the broker's epoch is `broker_epoch`.
    Propose {
        records: Vec<MetadataRecord>,
        broker_epoch: BrokerEpoch,
        /// The broker came back with another directory id than the one on
        /// record (for the caller's warning).
        directory_replaced: Option<DirectoryReplaced>,
    },
}

/// A registration with another directory id than the previous
/// incarnation's: the broker's disk was replaced or wiped, and what the
/// proposed registration does about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectoryReplaced {
    pub broker_id: BrokerId,
    pub previous: DirectoryId,
    pub current: DirectoryId,
    /// Partitions (topic, index) it was the last ISR member of, left with
    /// an empty ISR, and their new leader: `None` until an unclean
    /// election, `Some` when the topic's unclean.leader.election.enable
    /// gave them one at once.
    pub isr_emptied: Vec<(String, PartitionIndex, Option<BrokerId>)>,
    /// Partitions it is the only replica of: it keeps its ISR place and
    /// leads them again with whatever its disk holds.
    pub sole_replica: Vec<(String, PartitionIndex)>,
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

/// AlterPartition (KIP-497 / KIP-841): the leader of a partition asks to
/// set its ISR. `leader_epoch` and `partition_epoch` are the state the
/// leader last saw; the change applies only to exactly that state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlterPartitionRequest {
    pub broker_id: BrokerId,
    pub broker_epoch: BrokerEpoch,
    pub topic_id: TopicId,
    pub partition: PartitionIndex,
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: PartitionEpoch,
    /// The whole new ISR; it must hold the leader.
    pub new_isr: Vec<BrokerId>,
}

/// The partition's state once an AlterPartition is committed (or found
/// already in place, for a retry). `Ok` promises the state is in the
/// committed log at or before `offset`; it is visible on a node once that
/// node's image reaches `offset` (`ControllerHandle::wait_applied`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlterPartitionReply {
    pub isr: Vec<BrokerId>,
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: PartitionEpoch,
    pub offset: MetadataOffset,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AlterPartitionDecision {
    /// The ISR is already the requested one (a retry): nothing to propose.
    Current(AlterPartitionReply),
    /// Propose `records`; once committed the state is `reply` (the caller
    /// fills in `reply.offset` with the committed offset). The change is
    /// guarded by the partition epoch, so a concurrent change that commits
    /// first makes the image refuse this one.
    Propose {
        records: Vec<MetadataRecord>,
        reply: AlterPartitionReply,
    },
}

/// Kafka's leader.imbalance.check.interval.seconds (300 s), in ms.
pub const LEADER_IMBALANCE_CHECK_INTERVAL_MS_DEFAULT: u64 = 300_000;

/// The topic config that allows unclean leader election.
pub const UNCLEAN_LEADER_ELECTION_ENABLE: &str = "unclean.leader.election.enable";

pub struct QuorumController {
    sessions: BrokerSessions,
    session_timeout_ms: u64,
    /// 0: no preferred-leader rebalance.
    leader_imbalance_check_interval_ms: u64,
    next_leader_imbalance_check_ms: u64,
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
            leader_imbalance_check_interval_ms: LEADER_IMBALANCE_CHECK_INTERVAL_MS_DEFAULT,
            next_leader_imbalance_check_ms: LEADER_IMBALANCE_CHECK_INTERVAL_MS_DEFAULT,
        }
    }

    /// How often `tick` moves leaderships back to preferred replicas
    /// (Kafka's auto.leader.rebalance.enable with
    /// leader.imbalance.check.interval.seconds); 0 disables it.
    pub fn with_leader_imbalance_check_interval_ms(mut self, interval_ms: u64) -> QuorumController {
        self.leader_imbalance_check_interval_ms = interval_ms;
        self.next_leader_imbalance_check_ms = interval_ms;
        self
    }

    /// This node just became the active controller.
    pub fn become_active(&mut self, image: &MetadataImage, now_ms: u64) {
        self.sessions.reset(image, now_ms);
        self.next_leader_imbalance_check_ms =
            now_ms.saturating_add(self.leader_imbalance_check_interval_ms);
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
        let previous = image.broker(request.broker_id);
        // Another disk than the one the ISRs vouched for. Unknown (no id
        // on record, or none sent: a broker of an older version) is not a
        // replacement: that is an upgrade, or a downgrade.
        let replaced = previous
            .and_then(|previous| previous.directory_id)
            .zip(request.directory_id)
            .filter(|(previous, current)| previous != current);
        // A previous incarnation loses its leaderships and ISR places in
        // the same batch: the new registration starts fenced.
        let mut records = if previous.is_some() {
            partition_changes_without(image, request.broker_id, replaced.is_some())
        } else {
            Vec::new()
        };
        let directory_replaced = replaced.map(|(previous, current)| {
            directory_replaced_report(image, request.broker_id, previous, current, &records)
        });
        // The flag stays with the directory across restarts: a broker back
        // on a new disk that restarts before it synced anything still
        // holds nothing of the partitions it left without an ISR.
        let still_replaced = previous.is_some_and(|previous| {
            previous.directory_replaced
                && previous.directory_id.is_some()
                && previous.directory_id == request.directory_id
        });
        records.push(MetadataRecord::RegisterBroker(RegisterBroker {
            broker_id: request.broker_id,
            incarnation_id: request.incarnation_id,
            broker_epoch,
            listeners: request.listeners.clone(),
            shard_count: request.shard_count,
            rack: request.rack.clone(),
            directory_id: request.directory_id,
            directory_replaced: replaced.is_some() || still_replaced,
        }));
        self.sessions.touch(request.broker_id, broker_epoch, now_ms);
        RegistrationDecision::Propose {
            records,
            broker_epoch,
            directory_replaced,
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
                    .extend(partition_changes_without(image, request.broker_id, false));
            } else if leads_nothing {
                decision.records.push(change(Some(true), None));
                decision.should_shut_down = true;
            }
        }
        Ok(decision)
    }

    /// Periodic work on the active controller: fence the brokers whose
    /// session ran out, one batch per broker; else complete the partition
    /// reassignments whose new replicas are in sync; else, when the leader
    /// imbalance check is due, one batch of preferred-leader elections.
    pub fn tick(&mut self, image: &MetadataImage, now_ms: u64) -> Vec<Vec<MetadataRecord>> {
        let mut batches: Vec<Vec<MetadataRecord>> = self
            .sessions
            .expired(image, now_ms, self.session_timeout_ms)
            .into_iter()
            .filter_map(|broker_id| {
                let broker = image.broker(broker_id)?;
                Some(fence_batch(image, broker_id, broker.broker_epoch))
            })
            .collect();
        // Not in the same round as a fencing: both decided on the same
        // image could conflict, and the image would refuse the later one.
        if batches.is_empty() {
            let completions = super::reassignment::completions(image);
            if !completions.is_empty() {
                batches.push(completions);
            }
        }
        if batches.is_empty()
            && self.leader_imbalance_check_interval_ms > 0
            && now_ms >= self.next_leader_imbalance_check_ms
        {
            self.next_leader_imbalance_check_ms =
                now_ms.saturating_add(self.leader_imbalance_check_interval_ms);
            let elections = preferred_leader_elections(image);
            if !elections.is_empty() {
                batches.push(elections);
            }
        }
        batches
    }

    /// AlterPartition: the partition's leader sets its ISR (KIP-497,
    /// KIP-841). Refusals, in the order checked: unknown or stale broker,
    /// unknown partition, not the leader, another leader epoch, another
    /// partition epoch (an ISR already in place is answered as success),
    /// a malformed ISR, an ISR adding an inactive broker.
    pub fn alter_partition(
        &self,
        image: &MetadataImage,
        request: &AlterPartitionRequest,
    ) -> Result<AlterPartitionDecision, ControllerError> {
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
        image
            .topic(request.topic_id)
            .ok_or(ControllerError::UnknownTopicId {
                topic_id: request.topic_id,
            })?;
        let partition = image.partition(request.topic_id, request.partition).ok_or(
            ControllerError::UnknownPartition {
                topic_id: request.topic_id,
                partition: request.partition,
            },
        )?;
        if partition.leader != Some(request.broker_id) {
            return Err(ControllerError::NotLeaderOrFollower {
                broker_id: request.broker_id,
                leader: partition.leader,
            });
        }
        if partition.leader_epoch != request.leader_epoch {
            return Err(ControllerError::FencedLeaderEpoch {
                given: request.leader_epoch,
                current: partition.leader_epoch,
            });
        }
        let same_members = |left: &[BrokerId], right: &[BrokerId]| {
            let mut left = left.to_vec();
            let mut right = right.to_vec();
            left.sort();
            right.sort();
            left == right
        };
        // A retry whose first attempt committed (its answer lost), or a
        // request for the ISR already in place: the current state.
        if request.partition_epoch <= partition.partition_epoch
            && same_members(&request.new_isr, &partition.isr)
        {
            return Ok(AlterPartitionDecision::Current(AlterPartitionReply {
                isr: partition.isr.clone(),
                leader_epoch: partition.leader_epoch,
                partition_epoch: partition.partition_epoch,
                offset: image.offset(),
            }));
        }
        if partition.partition_epoch != request.partition_epoch {
            return Err(ControllerError::InvalidUpdateVersion {
                given: request.partition_epoch,
                current: partition.partition_epoch,
            });
        }
        let mut distinct = request.new_isr.clone();
        distinct.sort();
        distinct.dedup();
        if distinct.len() != request.new_isr.len() {
            return Err(ControllerError::InvalidIsr {
                reason: "duplicate ISR member",
            });
        }
        if !request.new_isr.contains(&request.broker_id) {
            return Err(ControllerError::InvalidIsr {
                reason: "the ISR must hold the leader",
            });
        }
        if !request
            .new_isr
            .iter()
            .all(|member| partition.replicas.contains(member))
        {
            return Err(ControllerError::InvalidIsr {
                reason: "an ISR member is not a replica",
            });
        }
        if let Some(ineligible) = request.new_isr.iter().find(|member| {
            !partition.isr.contains(member)
                && !image.broker(**member).is_some_and(|b| b.is_active())
        }) {
            return Err(ControllerError::IneligibleReplica {
                broker_id: *ineligible,
            });
        }
        Ok(AlterPartitionDecision::Propose {
            records: vec![MetadataRecord::PartitionChange(PartitionChange {
                topic_id: request.topic_id,
                partition: request.partition,
                isr: Some(request.new_isr.clone()),
                leader: LeaderChange::Unchanged,
                replicas: None,
                expected_partition_epoch: Some(partition.partition_epoch),
            })],
            reply: AlterPartitionReply {
                isr: request.new_isr.clone(),
                leader_epoch: partition.leader_epoch,
                partition_epoch: partition.partition_epoch.next(),
                offset: MetadataOffset(0),
            },
        })
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
        // Kafka's metric names replace '.' by '_': such names collide. The
        // broker checks its view first; two creations through two brokers
        // at once are decided here, on the committed image, as Kafka's
        // controller does.
        let collision_key = request.name.replace('.', "_");
        if image
            .topics()
            .values()
            .any(|topic| topic.name.replace('.', "_") == collision_key)
        {
            return Err(ControllerError::InvalidTopicName {
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

    /// DeleteTopics, one topic; with `expected_id` only while `name` still
    /// names the topic of that id (a deletion by id: a topic created again
    /// under the name has another id and is not touched).
    pub fn delete_topic(
        &self,
        image: &MetadataImage,
        name: &str,
        expected_id: Option<TopicId>,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let topic = image
            .topic_by_name(name)
            .filter(|topic| expected_id.is_none_or(|id| topic.topic_id == id))
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
        let mut records: Vec<MetadataRecord> = changes
            .iter()
            .map(|(key, value)| {
                MetadataRecord::Config(ConfigRecord {
                    resource: resource.clone(),
                    key: key.clone(),
                    value: value.clone(),
                })
            })
            .collect();
        // Turning unclean election on (a topic's own value, or the
        // cluster-wide default for the topics without one, set or deleted)
        // elects leaders for their leaderless partitions at once, in the
        // same batch.
        let touches_unclean = matches!(
            resource,
            ConfigResource::Topic(_) | ConfigResource::Broker(None)
        ) && changes
            .iter()
            .any(|(key, _)| key == UNCLEAN_LEADER_ELECTION_ENABLE);
        let mut after = None;
        if touches_unclean {
            let mut changed = image.clone();
            for record in &records {
                // Config records of an existing resource apply; were one
                // refused, the batch would be too, and nothing elected.
                if changed.apply(image.offset(), record).is_err() {
                    break;
                }
            }
            after = Some(changed);
        }
        let turned_on: Vec<&super::image::TopicImage> = match &after {
            Some(after) => image
                .topics()
                .values()
                .filter(|topic| {
                    !unclean_election_enabled(image, &topic.name)
                        && unclean_election_enabled(after, &topic.name)
                })
                .collect(),
            None => Vec::new(),
        };
        let replaced = on_replaced_disk(image);
        let registered = |id: BrokerId| image.broker(id).is_some();
        for topic in turned_on {
            for (index, partition) in topic.partitions.iter().enumerate() {
                if partition.leader.is_some() {
                    continue;
                }
                let active = |id: BrokerId| image.broker(id).is_some_and(|b| b.is_active());
                if let Some((leader, isr)) =
                    elect(partition, active, &replaced, registered, Unclean::ByConfig)
                {
                    records.push(guarded_change(
                        topic.topic_id,
                        index,
                        partition,
                        isr,
                        LeaderChange::To(leader),
                    ));
                }
            }
        }
        Ok(records)
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
    records.extend(partition_changes_without(image, broker_id, false));
    records
}

/// Takes `broker_id` out of every ISR (except as the last member, as Kafka
/// keeps it) and out of every leadership: the next active ISR member in
/// replica order leads, else (unclean election on) the first active
/// replica, else nobody.
///
/// With `directory_lost` (it registers on a replaced disk) it leaves the
/// ISR as its last member too, so the ISR empties, unless it is the
/// partition's only replica: nothing else holds that partition's data,
/// and without it the partition could never come back.
fn partition_changes_without(
    image: &MetadataImage,
    broker_id: BrokerId,
    directory_lost: bool,
) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    let active = |member: BrokerId| {
        member != broker_id && image.broker(member).is_some_and(|b| b.is_active())
    };
    let replaced = on_replaced_disk(image);
    let registered = |id: BrokerId| image.broker(id).is_some();
    for topic in image.topics().values() {
        let unclean = unclean_election_enabled(image, &topic.name);
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
            let sole_replica = partition.replicas == [broker_id];
            let mut isr = if !remaining.is_empty() || (directory_lost && !sole_replica) {
                remaining
            } else {
                partition.isr.clone()
            };
            let leader = if partition.leader.is_some_and(|leader| leader != broker_id) {
                LeaderChange::Unchanged
            } else {
                let reduced = PartitionState {
                    isr: isr.clone(),
                    ..partition.clone()
                };
                match elect(
                    &reduced,
                    active,
                    &replaced,
                    registered,
                    Unclean::by_config(unclean),
                ) {
                    Some((leader, unclean_isr)) => {
                        if let Some(unclean_isr) = unclean_isr {
                            isr = unclean_isr;
                        }
                        LeaderChange::To(leader)
                    }
                    None => LeaderChange::NoLeader,
                }
            };
            let isr_change = (isr != partition.isr).then_some(isr);
            let leader_unchanged = leader == LeaderChange::Unchanged
                || (leader == LeaderChange::NoLeader && partition.leader.is_none());
            if isr_change.is_none() && leader_unchanged {
                continue;
            }
            records.push(guarded_change(
                topic.topic_id,
                index,
                partition,
                isr_change,
                if leader_unchanged {
                    LeaderChange::Unchanged
                } else {
                    leader
                },
            ));
        }
    }
    records
}

/// Leaderless partitions once `broker_id` is unfenced: elected as after a
/// lost leadership, now that `broker_id` is active (it leads again the
/// partitions whose ISR holds it, the replication factor 1 case).
fn leaderships_regained(image: &MetadataImage, broker_id: BrokerId) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    let active = |member: BrokerId| {
        member == broker_id || image.broker(member).is_some_and(|b| b.is_active())
    };
    let replaced = on_replaced_disk(image);
    let registered = |id: BrokerId| image.broker(id).is_some();
    for topic in image.topics().values() {
        let unclean = unclean_election_enabled(image, &topic.name);
        for (index, partition) in topic.partitions.iter().enumerate() {
            if partition.leader.is_some() {
                continue;
            }
            if let Some((leader, isr)) = elect(
                partition,
                active,
                &replaced,
                registered,
                Unclean::by_config(unclean),
            ) {
                records.push(guarded_change(
                    topic.topic_id,
                    index,
                    partition,
                    isr,
                    LeaderChange::To(leader),
                ));
            }
        }
    }
    records
}

/// Whether an election may take a replica outside the ISR, and who asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unclean {
    Never,
    /// The topic's unclean.leader.election.enable.
    ByConfig,
    /// ElectLeaders UNCLEAN.
    ByOperator,
}

impl Unclean {
    fn by_config(enabled: bool) -> Unclean {
        if enabled {
            Unclean::ByConfig
        } else {
            Unclean::Never
        }
    }
}

/// A partition's next leader: the first active ISR member in replica
/// order; else, unclean, the first active replica, which becomes the
/// whole ISR (`Some` new ISR); else none.
///
/// An empty ISR means its last member came back on a replaced disk
/// (`partition_changes_without`): then the unclean election takes
/// replicas on replaced disks (`replaced`) last, since they hold nothing
/// of the partition, while the others may hold what the ISR had; and the
/// topic's config alone never elects one while another replica is still
/// registered (`registered`), fenced or not: the first broker back after
/// a cluster-wide outage would lead with nothing, and the others truncate
/// to it when they return. The operator may (ElectLeaders UNCLEAN).
fn elect(
    partition: &PartitionState,
    active: impl Fn(BrokerId) -> bool,
    replaced: impl Fn(BrokerId) -> bool,
    registered: impl Fn(BrokerId) -> bool,
    unclean: Unclean,
) -> Option<(BrokerId, Option<Vec<BrokerId>>)> {
    if let Some(leader) = partition
        .replicas
        .iter()
        .find(|replica| partition.isr.contains(replica) && active(**replica))
    {
        return Some((*leader, None));
    }
    if unclean == Unclean::Never {
        return None;
    }
    let candidates: Vec<BrokerId> = partition
        .replicas
        .iter()
        .copied()
        .filter(|replica| active(*replica))
        .collect();
    let leader = if partition.isr.is_empty() {
        match candidates.iter().find(|replica| !replaced(**replica)) {
            Some(leader) => *leader,
            None => {
                let others_registered = partition
                    .replicas
                    .iter()
                    .any(|replica| !replaced(*replica) && registered(*replica));
                if others_registered && unclean == Unclean::ByConfig {
                    return None;
                }
                *candidates.first()?
            }
        }
    } else {
        *candidates.first()?
    };
    Some((leader, Some(vec![leader])))
}

/// Whether a broker's current directory replaced the one on record
/// before it (`BrokerRegistration::directory_replaced`).
fn on_replaced_disk(image: &MetadataImage) -> impl Fn(BrokerId) -> bool + '_ {
    |broker_id| {
        image
            .broker(broker_id)
            .is_some_and(|broker| broker.directory_replaced)
    }
}

/// What the registration records of a broker back on a replaced disk do
/// to its partitions, for the controller's warning.
fn directory_replaced_report(
    image: &MetadataImage,
    broker_id: BrokerId,
    previous: DirectoryId,
    current: DirectoryId,
    records: &[MetadataRecord],
) -> DirectoryReplaced {
    let name = |topic_id: TopicId| {
        image
            .topic(topic_id)
            .map_or_else(|| topic_id.to_string(), |topic| topic.name.clone())
    };
    let isr_emptied = records
        .iter()
        .filter_map(|record| match record {
            MetadataRecord::PartitionChange(change)
                if change.isr.as_ref().is_some_and(Vec::is_empty) =>
            {
                let leader = match change.leader {
                    LeaderChange::To(leader) => Some(leader),
                    LeaderChange::Unchanged | LeaderChange::NoLeader => None,
                };
                Some((name(change.topic_id), change.partition, leader))
            }
            // An unclean election at once replaces the emptied ISR by its
            // new leader.
            MetadataRecord::PartitionChange(PartitionChange {
                topic_id,
                partition,
                isr: Some(isr),
                leader: LeaderChange::To(leader),
                ..
            }) if isr == &[*leader]
                && image
                    .partition(*topic_id, *partition)
                    .is_some_and(|state| state.isr == [broker_id]) =>
            {
                Some((name(*topic_id), *partition, Some(*leader)))
            }
            _ => None,
        })
        .collect();
    let sole_replica = image
        .topics()
        .values()
        .flat_map(|topic| {
            topic
                .partitions
                .iter()
                .enumerate()
                .filter(|(_, partition)| partition.replicas == [broker_id])
                .map(|(index, _)| (topic.name.clone(), partition_index(index)))
        })
        .collect();
    DirectoryReplaced {
        broker_id,
        previous,
        current,
        isr_emptied,
        sole_replica,
    }
}

/// Preferred-leader election (Kafka's auto leader rebalance): every
/// partition whose first replica is active, in the ISR and not the leader
/// is led by it again.
fn preferred_leader_elections(image: &MetadataImage) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for topic in image.topics().values() {
        for (index, partition) in topic.partitions.iter().enumerate() {
            records.extend(preferred_leader_election(
                image,
                topic.topic_id,
                index,
                partition,
            ));
        }
    }
    records
}

/// The preferred-leader election of one partition, if its first replica
/// is active, in the ISR and not the leader.
fn preferred_leader_election(
    image: &MetadataImage,
    topic_id: TopicId,
    index: usize,
    partition: &PartitionState,
) -> Option<MetadataRecord> {
    let preferred = partition.replicas.first().copied()?;
    (partition.leader != Some(preferred)
        && partition.isr.contains(&preferred)
        && image.broker(preferred).is_some_and(|b| b.is_active()))
    .then(|| {
        guarded_change(
            topic_id,
            index,
            partition,
            None,
            LeaderChange::To(preferred),
        )
    })
}

/// ElectLeaders (PREFERRED): the preferred-leader elections of the named
/// partitions that need one and can have it; unknown partitions and the
/// others are skipped (the broker answers their errors from its view).
pub fn elect_preferred_leaders(
    image: &MetadataImage,
    partitions: &[(String, i32)],
) -> Vec<MetadataRecord> {
    named_partitions(image, partitions)
        .filter_map(|(topic_id, index, partition)| {
            preferred_leader_election(image, topic_id, index, partition)
        })
        .collect()
}

/// The known partitions among `partitions` (each once, in request order):
/// topic id, index and state.
fn named_partitions<'a>(
    image: &'a MetadataImage,
    partitions: &'a [(String, i32)],
) -> impl Iterator<Item = (TopicId, usize, &'a PartitionState)> + 'a {
    let mut seen = std::collections::BTreeSet::new();
    partitions.iter().filter_map(move |(name, index)| {
        if !seen.insert((name, *index)) {
            return None;
        }
        let topic = image.topic_by_name(name)?;
        let index = usize::try_from(*index).ok()?;
        Some((topic.topic_id, index, topic.partitions.get(index)?))
    })
}

/// ElectLeaders (UNCLEAN): each named partition without a leader gets
/// one: an active ISR member if any, else the first active replica, which
/// becomes the whole ISR, whatever the topic's unclean.leader.election.enable
/// (the operator asked for it). Partitions with a leader, unknown ones and
/// those with no active replica are skipped (the broker answers them).
pub fn elect_unclean_leaders(
    image: &MetadataImage,
    partitions: &[(String, i32)],
) -> Vec<MetadataRecord> {
    let active = |member: BrokerId| image.broker(member).is_some_and(|b| b.is_active());
    let replaced = on_replaced_disk(image);
    let registered = |id: BrokerId| image.broker(id).is_some();
    named_partitions(image, partitions)
        .filter(|(_, _, partition)| partition.leader.is_none())
        .filter_map(|(topic_id, index, partition)| {
            let (leader, isr) = elect(
                partition,
                active,
                &replaced,
                registered,
                Unclean::ByOperator,
            )?;
            Some(guarded_change(
                topic_id,
                index,
                partition,
                isr,
                LeaderChange::To(leader),
            ))
        })
        .collect()
}

/// A PartitionChange decided on `partition` as the committed image holds
/// it: guarded by its partition epoch, so that if another change to the
/// partition commits first the image refuses this one (and a stale
/// decision can never, say, put back an ISR member that was just removed).
fn guarded_change(
    topic_id: TopicId,
    index: usize,
    partition: &PartitionState,
    isr: Option<Vec<BrokerId>>,
    leader: LeaderChange,
) -> MetadataRecord {
    MetadataRecord::PartitionChange(PartitionChange {
        topic_id,
        partition: partition_index(index),
        isr,
        leader,
        replicas: None,
        expected_partition_epoch: Some(partition.partition_epoch),
    })
}

fn partition_index(index: usize) -> PartitionIndex {
    PartitionIndex(i32::try_from(index).expect("partition count fits i32"))
}

/// Kafka's boolean configs accept any case.
fn is_true(value: &str) -> bool {
    value.eq_ignore_ascii_case("true")
}

/// The topic's `unclean.leader.election.enable`: its own value, else the
/// cluster-wide default (a dynamic broker config on BROKER ""), else false.
pub fn unclean_election_enabled(image: &MetadataImage, topic_name: &str) -> bool {
    let value = |resource: ConfigResource| {
        image
            .configs(&resource)
            .and_then(|configs| configs.get(UNCLEAN_LEADER_ELECTION_ENABLE))
            .cloned()
    };
    value(ConfigResource::Topic(topic_name.into()))
        .or_else(|| value(ConfigResource::Broker(None)))
        .is_some_and(|value| is_true(&value))
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
    use crate::controller::image::ApplyError;
    use uuid::Uuid;

    /// Applies `records` as the next entry (the test's own Raft log).
    fn commit(image: &mut MetadataImage, records: &[MetadataRecord]) -> MetadataOffset {
        let offset = MetadataOffset(image.offset().0 + 1);
        image.apply_batch(offset, records).unwrap();
        offset
    }

    /// A broker's registration from its first disk.
    fn registration(broker: i32, incarnation: u8) -> RegistrationRequest {
        registration_on(broker, incarnation, Some(disk(broker, 1)))
    }

    fn registration_on(
        broker: i32,
        incarnation: u8,
        directory_id: Option<DirectoryId>,
    ) -> RegistrationRequest {
        RegistrationRequest {
            broker_id: BrokerId(broker),
            incarnation_id: IncarnationId(Uuid::from_bytes([incarnation; 16])),
            listeners: vec![],
            shard_count: 1,
            rack: None,
            directory_id,
        }
    }

    /// The id of `broker`'s `generation`th disk.
    fn disk(broker: i32, generation: u8) -> DirectoryId {
        DirectoryId(Uuid::from_u128(
            broker as u128 * 1000 + u128::from(generation),
        ))
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
                ..
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
            ..
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
        // A name that collides with another once '.' is '_' (two brokers
        // creating "or.ders" and "or_ders" at once are decided here).
        create(&controller, &mut image, "or.ders", 1, 1);
        let colliding = CreateTopicRequest {
            name: "or_ders".into(),
            ..duplicate.clone()
        };
        assert!(matches!(
            controller.create_topic(&image, &colliding, TopicId::default()),
            Err(ControllerError::InvalidTopicName { .. })
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
        // By id: only while the name is still that topic's.
        let orders = image.topic_by_name("orders").unwrap().topic_id;
        assert!(matches!(
            controller.delete_topic(&image, "orders", Some(TopicId(Uuid::from_u128(99)))),
            Err(ControllerError::UnknownTopic { .. })
        ));
        assert!(image.topic_by_name("orders").is_some());
        let records = controller
            .delete_topic(&image, "orders", Some(orders))
            .unwrap();
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

    /// Three brokers, one RF 3 partition led by broker 1 with ISR [1, 2, 3]
    /// (explicit assignment [1, 2, 3]).
    fn replicated() -> (
        QuorumController,
        MetadataImage,
        BTreeMap<i32, BrokerEpoch>,
        TopicId,
    ) {
        replicated_on(QuorumController::default())
    }

    /// [`replicated`] with `controller`.
    fn replicated_on(
        mut controller: QuorumController,
    ) -> (
        QuorumController,
        MetadataImage,
        BTreeMap<i32, BrokerEpoch>,
        TopicId,
    ) {
        let mut image = MetadataImage::new();
        let epochs = cluster(&mut controller, &mut image, &[1, 2, 3]);
        let topic_id = TopicId(Uuid::from_bytes([42; 16]));
        let request = CreateTopicRequest {
            name: "r".into(),
            partition_count: 1,
            replication_factor: 3,
            assignment: Some(vec![vec![BrokerId(1), BrokerId(2), BrokerId(3)]]),
            configs: vec![],
        };
        let records = controller.create_topic(&image, &request, topic_id).unwrap();
        commit(&mut image, &records);
        (controller, image, epochs, topic_id)
    }

    fn state(image: &MetadataImage, topic_id: TopicId) -> PartitionState {
        image
            .partition(topic_id, PartitionIndex(0))
            .unwrap()
            .clone()
    }

    fn alter(
        image: &MetadataImage,
        epochs: &BTreeMap<i32, BrokerEpoch>,
        topic_id: TopicId,
        broker: i32,
        isr: &[i32],
    ) -> AlterPartitionRequest {
        let current = state(image, topic_id);
        AlterPartitionRequest {
            broker_id: BrokerId(broker),
            broker_epoch: epochs[&broker],
            topic_id,
            partition: PartitionIndex(0),
            leader_epoch: current.leader_epoch,
            partition_epoch: current.partition_epoch,
            new_isr: isr.iter().copied().map(BrokerId).collect(),
        }
    }

    fn ids(list: &[i32]) -> Vec<BrokerId> {
        list.iter().copied().map(BrokerId).collect()
    }

    #[test]
    fn alter_partition_shrinks_and_expands_the_isr_without_a_leader_epoch_bump() {
        let (controller, mut image, epochs, topic) = replicated();
        assert_eq!(state(&image, topic).leader, Some(BrokerId(1)));
        let request = alter(&image, &epochs, topic, 1, &[1, 3]);
        let AlterPartitionDecision::Propose { records, reply } =
            controller.alter_partition(&image, &request).unwrap()
        else {
            panic!("a change is proposed")
        };
        let offset = commit(&mut image, &records);
        let after = state(&image, topic);
        assert_eq!(after.isr, ids(&[1, 3]));
        assert_eq!(after.leader_epoch, LeaderEpoch(0), "no leader epoch bump");
        assert_eq!(after.partition_epoch, PartitionEpoch(1));
        assert_eq!(
            (reply.isr, reply.leader_epoch, reply.partition_epoch),
            (after.isr.clone(), after.leader_epoch, after.partition_epoch)
        );
        // The same request again (its answer was lost): the current state.
        let Ok(AlterPartitionDecision::Current(current)) =
            controller.alter_partition(&image, &request)
        else {
            panic!("a retry is answered with the current state")
        };
        assert_eq!(current.partition_epoch, PartitionEpoch(1));
        assert_eq!(current.offset, offset);
        // Expand back.
        let expand = alter(&image, &epochs, topic, 1, &[1, 3, 2]);
        let Ok(AlterPartitionDecision::Propose { records, .. }) =
            controller.alter_partition(&image, &expand)
        else {
            panic!()
        };
        commit(&mut image, &records);
        assert_eq!(state(&image, topic).isr, ids(&[1, 3, 2]));
        assert_eq!(state(&image, topic).partition_epoch, PartitionEpoch(2));
    }

    #[test]
    fn alter_partition_refusals() {
        let (mut controller, mut image, epochs, topic) = replicated();
        let good = alter(&image, &epochs, topic, 1, &[1, 2]);
        let refused = |request: &AlterPartitionRequest, image: &MetadataImage| {
            controller.alter_partition(image, request).unwrap_err()
        };
        let stale = AlterPartitionRequest {
            broker_epoch: BrokerEpoch(999),
            ..good.clone()
        };
        assert!(matches!(
            refused(&stale, &image),
            ControllerError::StaleBrokerEpoch { .. }
        ));
        let unknown_topic = AlterPartitionRequest {
            topic_id: TopicId(Uuid::from_bytes([9; 16])),
            ..good.clone()
        };
        assert!(matches!(
            refused(&unknown_topic, &image),
            ControllerError::UnknownTopicId { .. }
        ));
        let unknown_partition = AlterPartitionRequest {
            partition: PartitionIndex(5),
            ..good.clone()
        };
        assert!(matches!(
            refused(&unknown_partition, &image),
            ControllerError::UnknownPartition { .. }
        ));
        let follower = alter(&image, &epochs, topic, 2, &[1, 2]);
        assert_eq!(
            refused(&follower, &image),
            ControllerError::NotLeaderOrFollower {
                broker_id: BrokerId(2),
                leader: Some(BrokerId(1))
            }
        );
        let old_leader_epoch = AlterPartitionRequest {
            leader_epoch: LeaderEpoch(7),
            ..good.clone()
        };
        assert!(matches!(
            refused(&old_leader_epoch, &image),
            ControllerError::FencedLeaderEpoch { .. }
        ));
        let future_partition_epoch = AlterPartitionRequest {
            partition_epoch: PartitionEpoch(3),
            ..good.clone()
        };
        assert!(matches!(
            refused(&future_partition_epoch, &image),
            ControllerError::InvalidUpdateVersion { .. }
        ));
        for (isr, reason) in [
            (vec![1, 1, 2], "duplicate ISR member"),
            (vec![2, 3], "the ISR must hold the leader"),
            (vec![1, 4], "an ISR member is not a replica"),
            (vec![], "the ISR must hold the leader"),
        ] {
            let request = AlterPartitionRequest {
                new_isr: ids(&isr),
                ..good.clone()
            };
            assert_eq!(
                refused(&request, &image),
                ControllerError::InvalidIsr { reason },
                "{isr:?}"
            );
        }
        // Shrink to [1, 2]; then broker 3 is fenced: it may not come back.
        let Ok(AlterPartitionDecision::Propose { records, .. }) =
            controller.alter_partition(&image, &good)
        else {
            panic!()
        };
        commit(&mut image, &records);
        // The first request's epochs are now stale (another ISR).
        let stale_epoch = AlterPartitionRequest {
            new_isr: ids(&[1]),
            ..good.clone()
        };
        assert!(matches!(
            refused(&stale_epoch, &image),
            ControllerError::InvalidUpdateVersion { .. }
        ));
        let mut fence = heartbeat(3, epochs[&3], image.offset());
        fence.want_fence = true;
        let decision = controller.heartbeat(&image, &fence, 0).unwrap();
        commit(&mut image, &decision.records);
        let rejoin = alter(&image, &epochs, topic, 1, &[1, 2, 3]);
        assert_eq!(
            controller.alter_partition(&image, &rejoin).unwrap_err(),
            ControllerError::IneligibleReplica {
                broker_id: BrokerId(3)
            }
        );
        // Controlled shutdown makes a broker ineligible too.
        let shrink = alter(&image, &epochs, topic, 1, &[1]);
        let Ok(AlterPartitionDecision::Propose { records, .. }) =
            controller.alter_partition(&image, &shrink)
        else {
            panic!()
        };
        commit(&mut image, &records);
        let mut leave = heartbeat(2, epochs[&2], image.offset());
        leave.want_shut_down = true;
        let decision = controller.heartbeat(&image, &leave, 0).unwrap();
        commit(&mut image, &decision.records);
        let rejoin = alter(&image, &epochs, topic, 1, &[1, 2]);
        assert_eq!(
            controller.alter_partition(&image, &rejoin).unwrap_err(),
            ControllerError::IneligibleReplica {
                broker_id: BrokerId(2)
            }
        );
    }

    #[test]
    fn a_stale_alter_partition_is_refused_when_it_commits_after_another_change() {
        let (controller, mut image, epochs, topic) = replicated();
        let first = alter(&image, &epochs, topic, 1, &[1, 2]);
        let second = alter(&image, &epochs, topic, 1, &[1, 3]);
        let Ok(AlterPartitionDecision::Propose { records: a, .. }) =
            controller.alter_partition(&image, &first)
        else {
            panic!()
        };
        let Ok(AlterPartitionDecision::Propose { records: b, .. }) =
            controller.alter_partition(&image, &second)
        else {
            panic!()
        };
        commit(&mut image, &a);
        let offset = MetadataOffset(image.offset().0 + 1);
        assert!(matches!(
            image.apply_batch(offset, &b),
            Err(ApplyError::PartitionEpochMismatch { .. })
        ));
        assert_eq!(state(&image, topic).isr, ids(&[1, 2]));
    }

    fn set_unclean(controller: &QuorumController, image: &mut MetadataImage, value: &str) {
        let records = controller
            .alter_configs(
                image,
                &ConfigResource::Topic("r".into()),
                &[(UNCLEAN_LEADER_ELECTION_ENABLE.into(), Some(value.into()))],
            )
            .unwrap();
        commit(image, &records);
    }

    fn fence(controller: &mut QuorumController, image: &mut MetadataImage, broker: i32) {
        let epoch = image.broker(BrokerId(broker)).unwrap().broker_epoch;
        let mut request = heartbeat(broker, epoch, image.offset());
        request.want_fence = true;
        let decision = controller.heartbeat(image, &request, 0).unwrap();
        commit(image, &decision.records);
    }

    fn unfence(controller: &mut QuorumController, image: &mut MetadataImage, broker: i32) {
        let epoch = image.broker(BrokerId(broker)).unwrap().broker_epoch;
        let decision = controller
            .heartbeat(image, &heartbeat(broker, epoch, image.offset()), 0)
            .unwrap();
        commit(image, &decision.records);
    }

    /// The ISR shrinks to the leader alone, then the leader is fenced.
    fn leader_alone_then_fenced(
        controller: &mut QuorumController,
        image: &mut MetadataImage,
        epochs: &BTreeMap<i32, BrokerEpoch>,
        topic: TopicId,
    ) {
        let request = alter(image, epochs, topic, 1, &[1]);
        let Ok(AlterPartitionDecision::Propose { records, .. }) =
            controller.alter_partition(image, &request)
        else {
            panic!()
        };
        commit(image, &records);
        fence(controller, image, 1);
    }

    /// Registers `request` (a new incarnation) and commits it; what the
    /// controller found about its directory.
    fn register_again(
        controller: &mut QuorumController,
        image: &mut MetadataImage,
        request: &RegistrationRequest,
    ) -> Option<DirectoryReplaced> {
        let next = MetadataOffset(image.offset().0 + 1);
        let RegistrationDecision::Propose {
            records,
            directory_replaced,
            ..
        } = controller.register_broker(image, next, request, 0)
        else {
            panic!("a new incarnation registers")
        };
        commit(image, &records);
        directory_replaced
    }

    /// Broker 1, the last ISR member and fenced, comes back on the disk
    /// it had: it keeps its place and leads again (Kafka before KIP-966).
    #[test]
    fn the_last_isr_member_back_on_its_own_disk_keeps_its_place() {
        let (mut controller, mut image, epochs, topic) = replicated();
        leader_alone_then_fenced(&mut controller, &mut image, &epochs, topic);
        let replaced = register_again(&mut controller, &mut image, &registration(1, 2));
        assert_eq!(replaced, None);
        assert!(!image.broker(BrokerId(1)).unwrap().directory_replaced);
        assert_eq!(state(&image, topic).isr, ids(&[1]));
        unfence(&mut controller, &mut image, 1);
        let after = state(&image, topic);
        assert_eq!((after.leader, after.isr), (Some(BrokerId(1)), ids(&[1])));
    }

    /// Broker 1, the last ISR member, comes back on another disk: it
    /// leaves the ISR, which empties; no clean path elects anybody, it
    /// included, once it is active again; an unclean election takes
    /// another replica although broker 1 comes first in replica order,
    /// and broker 1 rejoins only through the new leader's AlterPartition.
    #[test]
    fn the_last_isr_member_back_on_a_replaced_disk_leaves_the_isr() {
        let (mut controller, mut image, epochs, topic) = replicated_on(
            QuorumController::default().with_leader_imbalance_check_interval_ms(1000),
        );
        controller.become_active(&image, 0);
        leader_alone_then_fenced(&mut controller, &mut image, &epochs, topic);

        let replaced = register_again(
            &mut controller,
            &mut image,
            &registration_on(1, 2, Some(disk(1, 2))),
        );
        assert_eq!(
            replaced,
            Some(DirectoryReplaced {
                broker_id: BrokerId(1),
                previous: disk(1, 1),
                current: disk(1, 2),
                isr_emptied: vec![("r".into(), PartitionIndex(0), None)],
                sole_replica: vec![],
            })
        );
        let broker = image.broker(BrokerId(1)).unwrap();
        assert_eq!(broker.directory_id, Some(disk(1, 2)));
        assert!(broker.directory_replaced);
        let after = state(&image, topic);
        assert_eq!((after.leader, after.isr), (None, vec![]));

        // Active again: not elected by its unfencing, nor by the
        // preferred-leader rebalance. A restart on the same new disk keeps
        // it marked.
        unfence(&mut controller, &mut image, 1);
        assert_eq!(state(&image, topic).leader, None);
        assert_eq!(
            register_again(
                &mut controller,
                &mut image,
                &registration_on(1, 3, Some(disk(1, 2)))
            ),
            None
        );
        assert!(image.broker(BrokerId(1)).unwrap().directory_replaced);
        unfence(&mut controller, &mut image, 1);
        for batch in controller.tick(&image, 5000) {
            commit(&mut image, &batch);
        }
        assert_eq!(state(&image, topic).leader, None);
        assert_eq!(state(&image, topic).isr, vec![]);

        // The operator asks for an unclean election: broker 2, which may
        // hold what the ISR had, not broker 1, which holds nothing.
        let records = elect_unclean_leaders(&image, &[("r".to_string(), 0)]);
        commit(&mut image, &records);
        let after = state(&image, topic);
        assert_eq!((after.leader, after.isr), (Some(BrokerId(2)), ids(&[2])));
        // Synced, broker 1 is added back by the leader.
        let epochs = image
            .brokers()
            .values()
            .map(|broker| (broker.broker_id.0, broker.broker_epoch))
            .collect();
        let rejoin = alter(&image, &epochs, topic, 2, &[2, 1]);
        let Ok(AlterPartitionDecision::Propose { records, .. }) =
            controller.alter_partition(&image, &rejoin)
        else {
            panic!()
        };
        commit(&mut image, &records);
        assert_eq!(state(&image, topic).isr, ids(&[2, 1]));
    }

    /// With unclean.leader.election.enable, the partition whose last ISR
    /// member (and leader, restarted before its session ran out) came
    /// back on a replaced disk gets another active replica as its leader
    /// in the registration's own batch.
    #[test]
    fn with_unclean_election_a_replaced_last_member_hands_over_at_once() {
        let (mut controller, mut image, epochs, topic) = replicated();
        let request = alter(&image, &epochs, topic, 1, &[1]);
        let Ok(AlterPartitionDecision::Propose { records, .. }) =
            controller.alter_partition(&image, &request)
        else {
            panic!()
        };
        commit(&mut image, &records);
        set_unclean(&controller, &mut image, "true");
        assert_eq!(state(&image, topic).leader, Some(BrokerId(1)));
        let replaced = register_again(
            &mut controller,
            &mut image,
            &registration_on(1, 2, Some(disk(1, 2))),
        )
        .unwrap();
        assert_eq!(
            replaced.isr_emptied,
            vec![("r".into(), PartitionIndex(0), Some(BrokerId(2)))]
        );
        let after = state(&image, topic);
        assert_eq!((after.leader, after.isr), (Some(BrokerId(2)), ids(&[2])));
    }

    /// After a cluster-wide outage the broker back first on a replaced disk
    /// is the only active replica: the topic's unclean election setting
    /// does not make it leader (it holds nothing, and the others, fenced
    /// but registered, may hold everything); the operator's ElectLeaders
    /// UNCLEAN does.
    #[test]
    fn unclean_by_config_never_elects_a_replaced_disk_while_others_may_return() {
        let (mut controller, mut image, epochs, topic) = replicated();
        leader_alone_then_fenced(&mut controller, &mut image, &epochs, topic);
        fence(&mut controller, &mut image, 2);
        fence(&mut controller, &mut image, 3);
        set_unclean(&controller, &mut image, "true");
        register_again(
            &mut controller,
            &mut image,
            &registration_on(1, 2, Some(disk(1, 2))),
        )
        .unwrap();
        unfence(&mut controller, &mut image, 1);
        let after = state(&image, topic);
        assert_eq!((after.leader, after.isr), (None, vec![]));
        for batch in controller.tick(&image, 5000) {
            commit(&mut image, &batch);
        }
        assert_eq!(state(&image, topic).leader, None);

        let records = elect_unclean_leaders(&image, &[("r".to_string(), 0)]);
        commit(&mut image, &records);
        let after = state(&image, topic);
        assert_eq!((after.leader, after.isr), (Some(BrokerId(1)), ids(&[1])));
    }

    /// The only replica of a partition back on a replaced disk keeps its
    /// place and leads again: nothing else holds the partition's data.
    #[test]
    fn the_only_replica_back_on_a_replaced_disk_leads_again() {
        let mut controller = QuorumController::default();
        let mut image = MetadataImage::new();
        cluster(&mut controller, &mut image, &[1, 2]);
        let topic = TopicId(Uuid::from_bytes([7; 16]));
        let request = CreateTopicRequest {
            name: "single".into(),
            partition_count: 1,
            replication_factor: 1,
            assignment: Some(vec![ids(&[1])]),
            configs: vec![],
        };
        let records = controller.create_topic(&image, &request, topic).unwrap();
        commit(&mut image, &records);
        fence(&mut controller, &mut image, 1);
        let replaced = register_again(
            &mut controller,
            &mut image,
            &registration_on(1, 2, Some(disk(1, 2))),
        )
        .unwrap();
        assert_eq!(replaced.isr_emptied, vec![]);
        assert_eq!(
            replaced.sole_replica,
            vec![("single".to_string(), PartitionIndex(0))]
        );
        assert_eq!(state(&image, topic).isr, ids(&[1]));
        unfence(&mut controller, &mut image, 1);
        let after = state(&image, topic);
        assert_eq!((after.leader, after.isr), (Some(BrokerId(1)), ids(&[1])));
    }

    /// Brokers of a version without directory ids (their records carry
    /// none): a registration is never taken for a replaced disk, neither
    /// theirs nor the first one with an id after the upgrade, nor one
    /// without an id after a downgrade.
    #[test]
    fn without_a_directory_id_on_record_nothing_is_compared() {
        let mut controller = QuorumController::default();
        let mut image = MetadataImage::new();
        for broker in [1, 2, 3] {
            register_again(
                &mut controller,
                &mut image,
                &registration_on(broker, 1, None),
            );
            unfence(&mut controller, &mut image, broker);
        }
        let topic = TopicId(Uuid::from_bytes([42; 16]));
        let request = CreateTopicRequest {
            name: "r".into(),
            partition_count: 1,
            replication_factor: 3,
            assignment: Some(vec![ids(&[1, 2, 3])]),
            configs: vec![],
        };
        let records = controller.create_topic(&image, &request, topic).unwrap();
        commit(&mut image, &records);
        let epochs = image
            .brokers()
            .values()
            .map(|broker| (broker.broker_id.0, broker.broker_epoch))
            .collect();
        leader_alone_then_fenced(&mut controller, &mut image, &epochs, topic);
        assert_eq!(image.broker(BrokerId(1)).unwrap().directory_id, None);
        // Upgraded: the first id is recorded, nothing compared.
        let upgraded = registration_on(1, 2, Some(disk(1, 1)));
        assert_eq!(register_again(&mut controller, &mut image, &upgraded), None);
        assert_eq!(state(&image, topic).isr, ids(&[1]));
        // Downgraded: no id, the one on record is dropped.
        let downgraded = registration_on(1, 3, None);
        assert_eq!(
            register_again(&mut controller, &mut image, &downgraded),
            None
        );
        assert_eq!(image.broker(BrokerId(1)).unwrap().directory_id, None);
        assert_eq!(
            register_again(
                &mut controller,
                &mut image,
                &registration_on(1, 4, Some(disk(1, 2)))
            ),
            None
        );
        assert_eq!(state(&image, topic).isr, ids(&[1]));
        unfence(&mut controller, &mut image, 1);
        assert_eq!(state(&image, topic).leader, Some(BrokerId(1)));
    }

    #[test]
    fn without_unclean_election_a_partition_waits_for_its_isr() {
        let (mut controller, mut image, epochs, topic) = replicated();
        leader_alone_then_fenced(&mut controller, &mut image, &epochs, topic);
        let after = state(&image, topic);
        assert_eq!((after.leader, after.isr.clone()), (None, ids(&[1])));
        // Broker 2 is active but out of sync: not elected. Broker 1 returns.
        unfence(&mut controller, &mut image, 1);
        let after = state(&image, topic);
        assert_eq!((after.leader, after.isr), (Some(BrokerId(1)), ids(&[1])));
        assert_eq!(after.leader_epoch, LeaderEpoch(2));
    }

    #[test]
    fn an_unclean_election_asked_for_elects_an_out_of_sync_replica_of_a_leaderless_partition() {
        let (mut controller, mut image, epochs, topic) = replicated();
        leader_alone_then_fenced(&mut controller, &mut image, &epochs, topic);
        // The topic does not allow unclean election; the operator asks.
        let asked = [
            ("r".to_string(), 0),
            ("r".to_string(), 0),
            ("gone".to_string(), 0),
        ];
        let records = elect_unclean_leaders(&image, &asked);
        assert_eq!(records.len(), 1, "{records:?}");
        commit(&mut image, &records);
        let after = state(&image, topic);
        assert_eq!(
            (after.leader, after.isr.clone()),
            (Some(BrokerId(2)), ids(&[2]))
        );
        // Led now: nothing more to do.
        assert!(elect_unclean_leaders(&image, &asked).is_empty());
    }

    #[test]
    fn unclean_election_elects_the_first_active_replica_on_leader_loss() {
        let (mut controller, mut image, epochs, topic) = replicated();
        set_unclean(&controller, &mut image, "true");
        leader_alone_then_fenced(&mut controller, &mut image, &epochs, topic);
        let after = state(&image, topic);
        assert_eq!((after.leader, after.isr), (Some(BrokerId(2)), ids(&[2])));
        assert_eq!(after.leader_epoch, LeaderEpoch(1));
    }

    #[test]
    fn turning_unclean_election_on_elects_a_leaderless_partition() {
        let (mut controller, mut image, epochs, topic) = replicated();
        leader_alone_then_fenced(&mut controller, &mut image, &epochs, topic);
        assert_eq!(state(&image, topic).leader, None);
        set_unclean(&controller, &mut image, "true");
        let after = state(&image, topic);
        assert_eq!((after.leader, after.isr), (Some(BrokerId(2)), ids(&[2])));
    }

    #[test]
    fn the_cluster_wide_default_turns_unclean_election_on_where_the_topic_says_nothing() {
        let (mut controller, mut image, epochs, topic) = replicated();
        leader_alone_then_fenced(&mut controller, &mut image, &epochs, topic);
        let set_default = |image: &mut MetadataImage, value: &str| {
            let records = controller
                .alter_configs(
                    image,
                    &ConfigResource::Broker(None),
                    &[(UNCLEAN_LEADER_ELECTION_ENABLE.into(), Some(value.into()))],
                )
                .unwrap();
            commit(image, &records);
        };
        // The topic's own "false" wins over the default.
        set_unclean(&controller, &mut image, "false");
        set_default(&mut image, "true");
        assert!(!unclean_election_enabled(&image, "r"));
        assert_eq!(state(&image, topic).leader, None);
        // Without its own value the default applies, at once (the deletion
        // turns it on).
        let records = controller
            .alter_configs(
                &image,
                &ConfigResource::Topic("r".into()),
                &[(UNCLEAN_LEADER_ELECTION_ENABLE.into(), None)],
            )
            .unwrap();
        commit(&mut image, &records);
        assert!(unclean_election_enabled(&image, "r"));
        let after = state(&image, topic);
        assert_eq!((after.leader, after.isr), (Some(BrokerId(2)), ids(&[2])));
    }

    #[test]
    fn unclean_election_on_unfence_of_an_out_of_sync_replica() {
        let (mut controller, mut image, epochs, topic) = replicated();
        // ISR [1]; brokers 2 and 3 fenced; then 1 fenced: leaderless.
        let request = alter(&image, &epochs, topic, 1, &[1]);
        let Ok(AlterPartitionDecision::Propose { records, .. }) =
            controller.alter_partition(&image, &request)
        else {
            panic!()
        };
        commit(&mut image, &records);
        fence(&mut controller, &mut image, 2);
        fence(&mut controller, &mut image, 3);
        fence(&mut controller, &mut image, 1);
        assert_eq!(state(&image, topic).leader, None);
        set_unclean(&controller, &mut image, "true");
        assert_eq!(state(&image, topic).leader, None, "nobody is active");
        unfence(&mut controller, &mut image, 3);
        let after = state(&image, topic);
        assert_eq!((after.leader, after.isr), (Some(BrokerId(3)), ids(&[3])));
    }

    #[test]
    fn the_preferred_leader_is_restored_by_the_periodic_rebalance() {
        let mut controller =
            QuorumController::default().with_leader_imbalance_check_interval_ms(1000);
        let mut image = MetadataImage::new();
        let epochs = cluster(&mut controller, &mut image, &[1, 2, 3]);
        controller.become_active(&image, 0);
        let topic = create(&controller, &mut image, "balanced", 3, 2);
        let preferred: Vec<Option<BrokerId>> = image
            .topic(topic)
            .unwrap()
            .partitions
            .iter()
            .map(|p| p.leader)
            .collect();
        assert!(
            image
                .topic(topic)
                .unwrap()
                .partitions
                .iter()
                .all(|p| p.leader == p.replicas.first().copied())
        );
        // Broker 1 restarts (fence, unfence): its leaderships moved away.
        fence(&mut controller, &mut image, 1);
        unfence(&mut controller, &mut image, 1);
        let moved = image
            .topic(topic)
            .unwrap()
            .partitions
            .iter()
            .filter(|p| p.leader != p.replicas.first().copied())
            .count();
        assert!(moved > 0, "broker 1 led a partition");
        // Its ISR places come back through AlterPartition by each leader.
        for index in 0..3 {
            let partition = image
                .partition(topic, PartitionIndex(index))
                .unwrap()
                .clone();
            if partition.isr.len() == partition.replicas.len() {
                continue;
            }
            let leader = partition.leader.unwrap().0;
            let request = AlterPartitionRequest {
                broker_id: BrokerId(leader),
                broker_epoch: epochs[&leader],
                topic_id: topic,
                partition: PartitionIndex(index),
                leader_epoch: partition.leader_epoch,
                partition_epoch: partition.partition_epoch,
                new_isr: partition.replicas.clone(),
            };
            let Ok(AlterPartitionDecision::Propose { records, .. }) =
                controller.alter_partition(&image, &request)
            else {
                panic!()
            };
            commit(&mut image, &records);
        }
        // Keep every session alive; the rebalance is not due before 1000.
        for broker in [1, 2, 3] {
            controller
                .heartbeat(
                    &image,
                    &heartbeat(broker, epochs[&broker], image.offset()),
                    900,
                )
                .unwrap();
        }
        assert!(controller.tick(&image, 999).is_empty());
        let batches = controller.tick(&image, 1000);
        assert_eq!(batches.len(), 1);
        let before = image.clone();
        commit(&mut image, &batches[0]);
        let leaders: Vec<Option<BrokerId>> = image
            .topic(topic)
            .unwrap()
            .partitions
            .iter()
            .map(|p| p.leader)
            .collect();
        assert_eq!(leaders, preferred);
        for (old, new) in before
            .topic(topic)
            .unwrap()
            .partitions
            .iter()
            .zip(&image.topic(topic).unwrap().partitions)
        {
            if old.leader != new.leader {
                assert_eq!(new.leader_epoch, LeaderEpoch(old.leader_epoch.0 + 1));
            }
        }
        // Balanced now: nothing more to do at the next check.
        for broker in [1, 2, 3] {
            controller
                .heartbeat(
                    &image,
                    &heartbeat(broker, epochs[&broker], image.offset()),
                    1900,
                )
                .unwrap();
        }
        assert!(controller.tick(&image, 2000).is_empty());
    }

    #[test]
    fn the_rebalance_is_off_with_a_zero_interval() {
        let mut controller = QuorumController::default().with_leader_imbalance_check_interval_ms(0);
        let mut image = MetadataImage::new();
        let epochs = cluster(&mut controller, &mut image, &[1, 2]);
        controller.become_active(&image, 0);
        let topic = create(&controller, &mut image, "t", 2, 2);
        fence(&mut controller, &mut image, 1);
        unfence(&mut controller, &mut image, 1);
        assert!(
            image
                .topic(topic)
                .unwrap()
                .partitions
                .iter()
                .all(|p| p.leader == Some(BrokerId(2)))
        );
        for broker in [1, 2] {
            controller
                .heartbeat(
                    &image,
                    &heartbeat(broker, epochs[&broker], image.offset()),
                    999_999,
                )
                .unwrap();
        }
        assert!(controller.tick(&image, 1_000_000).iter().all(|batch| {
            batch
                .iter()
                .all(|r| !matches!(r, MetadataRecord::PartitionChange(_)))
        }));
    }
}
