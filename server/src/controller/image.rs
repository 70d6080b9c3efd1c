//! `MetadataImage`: the cluster metadata that the committed records build.
//!
//! A pure state machine: [`MetadataImage::apply_batch`] takes the records of
//! one committed Raft entry and the entry's offset and changes the image, or
//! refuses the whole batch; nothing here does I/O or reads a clock. Every
//! voter and every broker that applies the same committed log in order holds
//! an equal image (the simulation checks it after every step).
//!
//! Invariants, checked after every batch (an `ApplyError` refuses it):
//! - offsets of applied entries strictly increase;
//! - a broker's epoch is the offset of its RegisterBroker record;
//! - every partition: replicas non-empty and distinct, ISR ⊆ replicas, the
//!   leader (if any) is in the ISR and is a registered broker that is neither
//!   fenced nor in controlled shutdown;
//! - leader and partition epochs never decrease; the partition epoch grows by
//!   one per change;
//! - topic names and ids are unique, partitions of a topic are numbered
//!   0..count, and topic configs belong to existing topics;
//! - producer-id blocks are handed out back to back, never overlapping.
//!
//! The image runs on the controller thread; shards will read a shared
//! snapshot of it (an `Arc` swapped per applied batch), not this value.

use std::collections::BTreeMap;
use std::sync::Arc;

use thiserror::Error;

use crate::auth::acl::AclTable;

use super::codec::{DecodeError, Reader, Writer};
use super::records::AccessControlEntry;
use super::records::{
    ConfigRecord, ConfigResource, LeaderChange, Listener, MetadataRecord, PartitionReassignment,
    PartitionRecord, RecordBatch, RegisterBroker, TopicRecord, UserScramCredential,
};
use super::types::{
    BrokerEpoch, BrokerId, DirectoryId, IncarnationId, LeaderEpoch, MetadataOffset,
    PRODUCER_ID_BLOCK_SIZE, PartitionEpoch, PartitionIndex, TopicId, next_leader_epoch,
};

/// Why a record (and so its whole batch) was refused. Every node refuses the
/// same committed batch the same way, so images stay equal.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ApplyError {
    #[error("offset {offset} is not after the image's offset {image_offset}")]
    OffsetNotIncreasing {
        offset: MetadataOffset,
        image_offset: MetadataOffset,
    },
    #[error("broker {broker_id}: epoch {epoch:?} is not the record's offset {offset}")]
    BrokerEpochNotOffset {
        broker_id: BrokerId,
        epoch: BrokerEpoch,
        offset: MetadataOffset,
    },
    #[error("broker {broker_id} is not registered")]
    UnknownBroker { broker_id: BrokerId },
    #[error("broker {broker_id}: stale epoch {given:?}, current {current:?}")]
    StaleBrokerEpoch {
        broker_id: BrokerId,
        given: BrokerEpoch,
        current: BrokerEpoch,
    },
    #[error("topic name {name:?} already exists")]
    TopicNameExists { name: String },
    #[error("topic id {topic_id} already exists")]
    TopicIdExists { topic_id: TopicId },
    #[error("invalid topic name {name:?}")]
    InvalidTopicName { name: String },
    #[error("topic {topic_id} does not exist")]
    UnknownTopic { topic_id: TopicId },
    #[error("topic {name:?} does not exist")]
    UnknownTopicName { name: String },
    #[error("topic {topic_id}: partition {partition:?} out of order or exists")]
    PartitionOutOfOrder {
        topic_id: TopicId,
        partition: PartitionIndex,
    },
    #[error("topic {topic_id} has no partition {partition:?}")]
    UnknownPartition {
        topic_id: TopicId,
        partition: PartitionIndex,
    },
    #[error("topic {topic_id} partition {partition:?}: {reason}")]
    InvalidPartition {
        topic_id: TopicId,
        partition: PartitionIndex,
        reason: &'static str,
    },
    #[error(
        "topic {topic_id} partition {partition:?}: partition epoch {current:?}, change expected {expected:?}"
    )]
    PartitionEpochMismatch {
        topic_id: TopicId,
        partition: PartitionIndex,
        expected: PartitionEpoch,
        current: PartitionEpoch,
    },
    #[error("producer id block starting {given} does not follow {current}")]
    ProducerIdsOutOfOrder { given: i64, current: i64 },
}

/// A registered broker as the image knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerRegistration {
    pub broker_id: BrokerId,
    pub incarnation_id: IncarnationId,
    pub broker_epoch: BrokerEpoch,
    pub listeners: Vec<Listener>,
    pub shard_count: u32,
    pub rack: Option<String>,
    /// The data directory it registered with (`None`: a broker of a
    /// version without directory ids; nothing is known about its disk).
    pub directory_id: Option<DirectoryId>,
    /// This incarnation came back with another directory than the one on
    /// record for the previous one (`RegisterBroker::directory_replaced`).
    pub directory_replaced: bool,
    pub fenced: bool,
    pub in_controlled_shutdown: bool,
}

impl BrokerRegistration {
    /// May lead partitions and join ISRs.
    pub fn is_active(&self) -> bool {
        !self.fenced && !self.in_controlled_shutdown
    }
}

/// One partition's replica state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionState {
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    pub leader: Option<BrokerId>,
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: PartitionEpoch,
    /// An ongoing reassignment (`records::PartitionReassignment`): the
    /// replicas being added (not in the ISR until caught up) and those
    /// being removed; both empty when none. `replicas` is then the target
    /// followed by `removing`.
    pub adding: Vec<BrokerId>,
    pub removing: Vec<BrokerId>,
}

impl PartitionState {
    pub fn is_reassigning(&self) -> bool {
        !self.adding.is_empty() || !self.removing.is_empty()
    }

    /// The replicas the partition is moving to (its replicas when no
    /// reassignment is going on).
    pub fn target_replicas(&self) -> Vec<BrokerId> {
        self.replicas
            .iter()
            .copied()
            .filter(|replica| !self.removing.contains(replica))
            .collect()
    }

    /// The replicas before the reassignment started (what a cancellation
    /// goes back to).
    pub fn original_replicas(&self) -> Vec<BrokerId> {
        self.replicas
            .iter()
            .copied()
            .filter(|replica| !self.adding.contains(replica))
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub topic_id: TopicId,
    /// Indexed by partition index: partitions are numbered 0..len.
    pub partitions: Vec<PartitionState>,
}

/// Producer-id blocks handed out so far.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ProducerIdsImage {
    /// The first id of the next block to hand out (the end of the last).
    pub next_block_start: i64,
    /// Who got the last block.
    pub last_owner: Option<(BrokerId, BrokerEpoch)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MetadataImage {
    offset: MetadataOffset,
    brokers: BTreeMap<BrokerId, BrokerRegistration>,
    topics: BTreeMap<TopicId, TopicImage>,
    topic_ids_by_name: BTreeMap<String, TopicId>,
    configs: BTreeMap<ConfigResource, BTreeMap<String, String>>,
    producer_ids: ProducerIdsImage,
    /// Salted SCRAM credentials by (user, Kafka mechanism code).
    scram_credentials: BTreeMap<(String, u8), UserScramCredential>,
    /// ACL bindings by id, indexed for the authorizer. Behind an `Arc`:
    /// the image is copied per applied batch and per published view, the
    /// bindings only when they change.
    acls: Arc<AclTable>,
}

impl MetadataImage {
    pub fn new() -> MetadataImage {
        MetadataImage::default()
    }

    /// The offset of the last entry applied (or refused).
    pub fn offset(&self) -> MetadataOffset {
        self.offset
    }

    pub fn brokers(&self) -> &BTreeMap<BrokerId, BrokerRegistration> {
        &self.brokers
    }

    pub fn broker(&self, broker_id: BrokerId) -> Option<&BrokerRegistration> {
        self.brokers.get(&broker_id)
    }

    /// Brokers that may take new replicas and leaderships.
    pub fn active_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values().filter(|broker| broker.is_active())
    }

    pub fn topics(&self) -> &BTreeMap<TopicId, TopicImage> {
        &self.topics
    }

    pub fn topic(&self, topic_id: TopicId) -> Option<&TopicImage> {
        self.topics.get(&topic_id)
    }

    pub fn topic_by_name(&self, name: &str) -> Option<&TopicImage> {
        self.topic_ids_by_name
            .get(name)
            .and_then(|topic_id| self.topics.get(topic_id))
    }

    pub fn partition(
        &self,
        topic_id: TopicId,
        partition: PartitionIndex,
    ) -> Option<&PartitionState> {
        let index = usize::try_from(partition.0).ok()?;
        self.topics.get(&topic_id)?.partitions.get(index)
    }

    pub fn configs(&self, resource: &ConfigResource) -> Option<&BTreeMap<String, String>> {
        self.configs.get(resource)
    }

    pub fn producer_ids(&self) -> &ProducerIdsImage {
        &self.producer_ids
    }

    /// A user's SCRAM credential for a mechanism (Kafka's code).
    pub fn scram_credential(&self, name: &str, mechanism: u8) -> Option<&UserScramCredential> {
        self.scram_credentials.get(&(name.to_string(), mechanism))
    }

    /// Every SCRAM credential, ordered by user then mechanism.
    pub fn scram_credentials(&self) -> impl Iterator<Item = &UserScramCredential> {
        self.scram_credentials.values()
    }

    /// The ACL bindings (shared: cheap to keep past this image).
    pub fn acls(&self) -> &Arc<AclTable> {
        &self.acls
    }

    /// Applies the records of one committed entry, atomically: either every
    /// record applies and the invariants hold afterwards, or the image is
    /// left as it was. Either way the image's offset becomes `offset`, so a
    /// refused batch is still counted as seen (every node refuses it alike).
    pub fn apply_batch(
        &mut self,
        offset: MetadataOffset,
        records: &[MetadataRecord],
    ) -> Result<(), ApplyError> {
        if offset <= self.offset {
            return Err(ApplyError::OffsetNotIncreasing {
                offset,
                image_offset: self.offset,
            });
        }
        let needs_copy = records.iter().any(|r| !matches!(r, MetadataRecord::NoOp));
        let before = needs_copy.then(|| self.clone());
        let mut result = Ok(());
        for record in records {
            result = self.apply(offset, record);
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            result = self.check_invariants();
        }
        if result.is_err()
            && let Some(before) = before
        {
            *self = before;
        }
        self.offset = offset;
        result
    }

    /// Applies one record of the entry at `offset` (records of one entry
    /// share its offset, so `offset` may equal the image's). Validates
    /// before it changes anything; cross-record invariants are checked by
    /// `apply_batch` at the end of the batch.
    pub fn apply(
        &mut self,
        offset: MetadataOffset,
        record: &MetadataRecord,
    ) -> Result<(), ApplyError> {
        if offset < self.offset {
            return Err(ApplyError::OffsetNotIncreasing {
                offset,
                image_offset: self.offset,
            });
        }
        match record {
            MetadataRecord::RegisterBroker(record) => {
                if record.broker_epoch != BrokerEpoch::from_offset(offset) {
                    return Err(ApplyError::BrokerEpochNotOffset {
                        broker_id: record.broker_id,
                        epoch: record.broker_epoch,
                        offset,
                    });
                }
                self.register(record, true, false);
            }
            MetadataRecord::BrokerRegistrationChange(change) => {
                let broker = self.broker_with_epoch(change.broker_id, change.broker_epoch)?;
                if let Some(fenced) = change.fenced {
                    broker.fenced = fenced;
                }
                if let Some(shutdown) = change.in_controlled_shutdown {
                    broker.in_controlled_shutdown = shutdown;
                }
            }
            MetadataRecord::UnregisterBroker(record) => {
                self.broker_with_epoch(record.broker_id, record.broker_epoch)?;
                self.brokers.remove(&record.broker_id);
            }
            MetadataRecord::Topic(record) => self.add_topic(record)?,
            MetadataRecord::Partition(record) => self.add_partition(record)?,
            MetadataRecord::PartitionChange(change) => {
                // Fenced or shutting-down brokers never join an ISR (they
                // may stay in it as its last member).
                if let Some(isr) = &change.isr
                    && let Some(current) = self.partition(change.topic_id, change.partition)
                {
                    let ineligible_joiner = isr.iter().any(|member| {
                        !current.isr.contains(member)
                            && !self.brokers.get(member).is_some_and(|b| b.is_active())
                    });
                    if ineligible_joiner {
                        return Err(ApplyError::InvalidPartition {
                            topic_id: change.topic_id,
                            partition: change.partition,
                            reason: "an inactive broker cannot join the ISR",
                        });
                    }
                }
                let partition = self.partition_mut(change.topic_id, change.partition)?;
                if let Some(expected) = change.expected_partition_epoch
                    && expected != partition.partition_epoch
                {
                    return Err(ApplyError::PartitionEpochMismatch {
                        topic_id: change.topic_id,
                        partition: change.partition,
                        expected,
                        current: partition.partition_epoch,
                    });
                }
                let mut next = partition.clone();
                if let Some(isr) = &change.isr {
                    next.isr = isr.clone();
                }
                if let Some(replicas) = &change.replicas {
                    next.replicas = replicas.clone();
                }
                match change.leader {
                    LeaderChange::Unchanged => {}
                    LeaderChange::NoLeader => next.leader = None,
                    LeaderChange::To(leader) => next.leader = Some(leader),
                }
                // Only a new leader gets a new leader epoch. KRaft also bumps
                // it when a replica is removed, to fence the removed
                // replica's fetches; Sluice's leaders push to their
                // followers (a removed one is no longer pushed to), and a
                // bump would fail the acks=all produces waiting on a leader
                // that stays (docs/internals/replication.md, reassignment).
                if next.leader != partition.leader {
                    next.leader_epoch = next_leader_epoch(partition.leader_epoch);
                }
                next.partition_epoch = partition.partition_epoch.next();
                check_partition_shape(change.topic_id, change.partition, &next)?;
                *partition = next;
            }
            MetadataRecord::PartitionReassignment(record) => {
                // Checked against the replicas at the end of the batch
                // (`check_invariants`): a batch changes both.
                let partition = self.partition_mut(record.topic_id, record.partition)?;
                partition.adding = record.adding.clone();
                partition.removing = record.removing.clone();
            }
            MetadataRecord::Config(record) => self.set_config(record)?,
            MetadataRecord::UserScramCredential(record) => {
                self.scram_credentials
                    .insert((record.name.clone(), record.mechanism), record.clone());
            }
            MetadataRecord::RemoveUserScramCredential(record) => {
                // Removing what is not there changes nothing (a retried
                // deletion).
                self.scram_credentials
                    .remove(&(record.name.clone(), record.mechanism));
            }
            MetadataRecord::AccessControlEntry(record) => {
                Arc::make_mut(&mut self.acls).insert(record.id, record.binding.clone());
            }
            MetadataRecord::RemoveAccessControlEntry(record) => {
                // Removing what is not there changes nothing (a retried
                // deletion).
                if self.acls.get(&record.id).is_some() {
                    Arc::make_mut(&mut self.acls).remove(&record.id);
                }
            }
            MetadataRecord::RemoveTopic(record) => {
                let topic =
                    self.topics
                        .remove(&record.topic_id)
                        .ok_or(ApplyError::UnknownTopic {
                            topic_id: record.topic_id,
                        })?;
                self.topic_ids_by_name.remove(&topic.name);
                self.configs.remove(&ConfigResource::Topic(topic.name));
            }
            MetadataRecord::ProducerIds(record) => {
                self.broker_with_epoch(record.broker_id, record.broker_epoch)?;
                let expected = self.producer_ids.next_block_start + PRODUCER_ID_BLOCK_SIZE;
                if record.next_block_start != expected {
                    return Err(ApplyError::ProducerIdsOutOfOrder {
                        given: record.next_block_start,
                        current: self.producer_ids.next_block_start,
                    });
                }
                self.producer_ids = ProducerIdsImage {
                    next_block_start: record.next_block_start,
                    last_owner: Some((record.broker_id, record.broker_epoch)),
                };
            }
            MetadataRecord::NoOp => {}
        }
        Ok(())
    }

    fn register(&mut self, record: &RegisterBroker, fenced: bool, in_controlled_shutdown: bool) {
        self.brokers.insert(
            record.broker_id,
            BrokerRegistration {
                broker_id: record.broker_id,
                incarnation_id: record.incarnation_id,
                broker_epoch: record.broker_epoch,
                listeners: record.listeners.clone(),
                shard_count: record.shard_count,
                rack: record.rack.clone(),
                directory_id: record.directory_id,
                directory_replaced: record.directory_replaced,
                fenced,
                in_controlled_shutdown,
            },
        );
    }

    fn broker_with_epoch(
        &mut self,
        broker_id: BrokerId,
        epoch: BrokerEpoch,
    ) -> Result<&mut BrokerRegistration, ApplyError> {
        let broker = self
            .brokers
            .get_mut(&broker_id)
            .ok_or(ApplyError::UnknownBroker { broker_id })?;
        if broker.broker_epoch != epoch {
            return Err(ApplyError::StaleBrokerEpoch {
                broker_id,
                given: epoch,
                current: broker.broker_epoch,
            });
        }
        Ok(broker)
    }

    fn add_topic(&mut self, record: &TopicRecord) -> Result<(), ApplyError> {
        if !valid_topic_name(&record.name) {
            return Err(ApplyError::InvalidTopicName {
                name: record.name.clone(),
            });
        }
        if self.topic_ids_by_name.contains_key(&record.name) {
            return Err(ApplyError::TopicNameExists {
                name: record.name.clone(),
            });
        }
        if self.topics.contains_key(&record.topic_id) {
            return Err(ApplyError::TopicIdExists {
                topic_id: record.topic_id,
            });
        }
        self.topic_ids_by_name
            .insert(record.name.clone(), record.topic_id);
        self.topics.insert(
            record.topic_id,
            TopicImage {
                name: record.name.clone(),
                topic_id: record.topic_id,
                partitions: Vec::new(),
            },
        );
        Ok(())
    }

    fn add_partition(&mut self, record: &PartitionRecord) -> Result<(), ApplyError> {
        let topic = self
            .topics
            .get_mut(&record.topic_id)
            .ok_or(ApplyError::UnknownTopic {
                topic_id: record.topic_id,
            })?;
        if usize::try_from(record.partition.0).ok() != Some(topic.partitions.len()) {
            return Err(ApplyError::PartitionOutOfOrder {
                topic_id: record.topic_id,
                partition: record.partition,
            });
        }
        let state = PartitionState {
            replicas: record.replicas.clone(),
            isr: record.isr.clone(),
            leader: record.leader,
            leader_epoch: record.leader_epoch,
            partition_epoch: record.partition_epoch,
            adding: Vec::new(),
            removing: Vec::new(),
        };
        check_partition_shape(record.topic_id, record.partition, &state)?;
        topic.partitions.push(state);
        Ok(())
    }

    fn partition_mut(
        &mut self,
        topic_id: TopicId,
        partition: PartitionIndex,
    ) -> Result<&mut PartitionState, ApplyError> {
        let topic = self
            .topics
            .get_mut(&topic_id)
            .ok_or(ApplyError::UnknownTopic { topic_id })?;
        usize::try_from(partition.0)
            .ok()
            .and_then(|index| topic.partitions.get_mut(index))
            .ok_or(ApplyError::UnknownPartition {
                topic_id,
                partition,
            })
    }

    fn set_config(&mut self, record: &ConfigRecord) -> Result<(), ApplyError> {
        if let ConfigResource::Topic(name) = &record.resource
            && !self.topic_ids_by_name.contains_key(name)
        {
            return Err(ApplyError::UnknownTopicName { name: name.clone() });
        }
        match &record.value {
            Some(value) => {
                self.configs
                    .entry(record.resource.clone())
                    .or_default()
                    .insert(record.key.clone(), value.clone());
            }
            None => {
                if let Some(configs) = self.configs.get_mut(&record.resource) {
                    configs.remove(&record.key);
                    if configs.is_empty() {
                        self.configs.remove(&record.resource);
                    }
                }
            }
        }
        Ok(())
    }

    /// The invariants that span records (see the module docs).
    pub fn check_invariants(&self) -> Result<(), ApplyError> {
        for (broker_id, broker) in &self.brokers {
            assert_eq!(*broker_id, broker.broker_id, "broker map key");
        }
        assert_eq!(
            self.topics.len(),
            self.topic_ids_by_name.len(),
            "name index"
        );
        for (topic_id, topic) in &self.topics {
            assert_eq!(self.topic_ids_by_name.get(&topic.name), Some(topic_id));
            for (index, partition) in topic.partitions.iter().enumerate() {
                let partition_index =
                    PartitionIndex(i32::try_from(index).expect("partition count fits i32"));
                check_partition_shape(*topic_id, partition_index, partition)?;
                check_reassignment_shape(*topic_id, partition_index, partition)?;
                if let Some(leader) = partition.leader
                    && !self.brokers.get(&leader).is_some_and(|b| b.is_active())
                {
                    return Err(ApplyError::InvalidPartition {
                        topic_id: *topic_id,
                        partition: partition_index,
                        reason: "leader is not an active broker",
                    });
                }
            }
        }
        for resource in self.configs.keys() {
            if let ConfigResource::Topic(name) = resource
                && !self.topic_ids_by_name.contains_key(name)
            {
                return Err(ApplyError::UnknownTopicName { name: name.clone() });
            }
        }
        Ok(())
    }

    /// The whole image as bytes: what a Raft snapshot carries, so a
    /// restarted voter or broker loads it and then applies the log's tail.
    /// Deterministic (ordered maps), so equal images encode equally.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut writer = Writer::new();
        writer.u32(SNAPSHOT_MAGIC);
        writer.u8(SNAPSHOT_FORMAT_0);
        writer.i64(self.offset.0);
        writer.count(self.brokers.len());
        for broker in self.brokers.values() {
            let record = MetadataRecord::RegisterBroker(RegisterBroker {
                broker_id: broker.broker_id,
                incarnation_id: broker.incarnation_id,
                broker_epoch: broker.broker_epoch,
                listeners: broker.listeners.clone(),
                shard_count: broker.shard_count,
                rack: broker.rack.clone(),
                directory_id: broker.directory_id,
                directory_replaced: broker.directory_replaced,
            });
            writer.bytes(&record.to_bytes());
            writer.bool(broker.fenced);
            writer.bool(broker.in_controlled_shutdown);
        }
        writer.count(self.topics.len());
        for topic in self.topics.values() {
            let mut records = vec![MetadataRecord::Topic(TopicRecord {
                name: topic.name.clone(),
                topic_id: topic.topic_id,
            })];
            for (index, partition) in topic.partitions.iter().enumerate() {
                records.push(MetadataRecord::Partition(PartitionRecord {
                    topic_id: topic.topic_id,
                    partition: PartitionIndex(
                        i32::try_from(index).expect("partition count fits i32"),
                    ),
                    replicas: partition.replicas.clone(),
                    isr: partition.isr.clone(),
                    leader: partition.leader,
                    leader_epoch: partition.leader_epoch,
                    partition_epoch: partition.partition_epoch,
                }));
            }
            // After all the partition records: (older snapshots have none).
            for (index, partition) in topic.partitions.iter().enumerate() {
                if partition.is_reassigning() {
                    records.push(MetadataRecord::PartitionReassignment(
                        PartitionReassignment {
                            topic_id: topic.topic_id,
                            partition: PartitionIndex(
                                i32::try_from(index).expect("partition count fits i32"),
                            ),
                            adding: partition.adding.clone(),
                            removing: partition.removing.clone(),
                        },
                    ));
                }
            }
            writer.bytes(&RecordBatch::new(records).encode());
        }
        let mut config_records = Vec::new();
        for (resource, configs) in &self.configs {
            for (key, value) in configs {
                config_records.push(MetadataRecord::Config(ConfigRecord {
                    resource: resource.clone(),
                    key: key.clone(),
                    value: Some(value.clone()),
                }));
            }
        }
        writer.bytes(&RecordBatch::new(config_records).encode());
        writer.i64(self.producer_ids.next_block_start);
        writer.option(self.producer_ids.last_owner.as_ref(), |w, (id, epoch)| {
            w.i32(id.0);
            w.i64(epoch.0);
        });
        // Added after format 0 was first written: an optional trailing
        // section, absent when there are no credentials (so snapshots
        // without any read and encode as before).
        if !self.scram_credentials.is_empty() || !self.acls.is_empty() {
            let records = self
                .scram_credentials
                .values()
                .cloned()
                .map(MetadataRecord::UserScramCredential)
                .collect();
            writer.bytes(&RecordBatch::new(records).encode());
        }
        // A second optional section after it (the SCRAM section is then
        // written, maybe empty): the ACL bindings.
        if !self.acls.is_empty() {
            let records = self
                .acls
                .iter()
                .map(|(id, binding)| {
                    MetadataRecord::AccessControlEntry(AccessControlEntry {
                        id: *id,
                        binding: binding.clone(),
                    })
                })
                .collect();
            writer.bytes(&RecordBatch::new(records).encode());
        }
        writer.into_bytes()
    }

    /// Rebuilds an image from [`MetadataImage::encode_snapshot`]'s bytes and
    /// checks its invariants.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<MetadataImage, SnapshotError> {
        let mut reader = Reader::new(bytes);
        let magic = reader.u32()?;
        if magic != SNAPSHOT_MAGIC {
            return Err(DecodeError::UnknownFormat { format: magic }.into());
        }
        let format = reader.u8()?;
        if format != SNAPSHOT_FORMAT_0 {
            return Err(DecodeError::UnknownFormat {
                format: u32::from(format),
            }
            .into());
        }
        let mut image = MetadataImage {
            offset: MetadataOffset(reader.i64()?),
            ..MetadataImage::default()
        };
        for _ in 0..reader.count(10)? {
            let record = MetadataRecord::from_bytes(reader.bytes()?)?;
            let fenced = reader.bool()?;
            let in_controlled_shutdown = reader.bool()?;
            let MetadataRecord::RegisterBroker(record) = record else {
                return Err(SnapshotError::Unexpected("broker"));
            };
            image.register(&record, fenced, in_controlled_shutdown);
        }
        let offset = image.offset;
        for _ in 0..reader.count(5)? {
            let batch = RecordBatch::decode(reader.bytes()?)?;
            for record in &batch.records {
                match record {
                    MetadataRecord::Topic(_)
                    | MetadataRecord::Partition(_)
                    | MetadataRecord::PartitionReassignment(_) => image.apply(offset, record)?,
                    _ => return Err(SnapshotError::Unexpected("topic")),
                }
            }
        }
        for record in RecordBatch::decode(reader.bytes()?)?.records {
            match record {
                MetadataRecord::Config(_) => image.apply(offset, &record)?,
                _ => return Err(SnapshotError::Unexpected("config")),
            }
        }
        image.producer_ids.next_block_start = reader.i64()?;
        image.producer_ids.last_owner = reader.option(|r| {
            let id = BrokerId(r.i32()?);
            Ok((id, BrokerEpoch(r.i64()?)))
        })?;
        if reader.remaining() > 0 {
            for record in RecordBatch::decode(reader.bytes()?)?.records {
                match record {
                    MetadataRecord::UserScramCredential(_) => image.apply(offset, &record)?,
                    _ => return Err(SnapshotError::Unexpected("SCRAM credential")),
                }
            }
        }
        if reader.remaining() > 0 {
            for record in RecordBatch::decode(reader.bytes()?)?.records {
                match record {
                    MetadataRecord::AccessControlEntry(_) => image.apply(offset, &record)?,
                    _ => return Err(SnapshotError::Unexpected("ACL")),
                }
            }
        }
        reader.finish()?;
        image.check_invariants()?;
        Ok(image)
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("snapshot does not decode: {0}")]
    Decode(#[from] DecodeError),
    #[error("snapshot breaks an invariant: {0}")]
    Apply(#[from] ApplyError),
    #[error("snapshot has a record of the wrong kind in its {0} section")]
    Unexpected(&'static str),
}

const SNAPSHOT_MAGIC: u32 = u32::from_le_bytes(*b"SLMI");
const SNAPSHOT_FORMAT_0: u8 = 0;

/// Kafka's rule: 1 to 249 characters of [a-zA-Z0-9._-], not "." or "..".
pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

fn check_partition_shape(
    topic_id: TopicId,
    partition: PartitionIndex,
    state: &PartitionState,
) -> Result<(), ApplyError> {
    let invalid = |reason| ApplyError::InvalidPartition {
        topic_id,
        partition,
        reason,
    };
    if state.replicas.is_empty() {
        return Err(invalid("no replicas"));
    }
    let mut sorted = state.replicas.clone();
    sorted.sort();
    sorted.dedup();
    if sorted.len() != state.replicas.len() {
        return Err(invalid("duplicate replica"));
    }
    let mut isr = state.isr.clone();
    isr.sort();
    isr.dedup();
    if isr.len() != state.isr.len() {
        return Err(invalid("duplicate ISR member"));
    }
    if !state
        .isr
        .iter()
        .all(|member| state.replicas.contains(member))
    {
        return Err(invalid("ISR member is not a replica"));
    }
    if let Some(leader) = state.leader
        && !state.isr.contains(&leader)
    {
        return Err(invalid("leader is not in the ISR"));
    }
    if state.leader_epoch.0 < 0 || state.partition_epoch.0 < 0 {
        return Err(invalid("negative epoch"));
    }
    Ok(())
}

/// A reassignment's lists: sets of replicas, disjoint, leaving a target.
fn check_reassignment_shape(
    topic_id: TopicId,
    partition: PartitionIndex,
    state: &PartitionState,
) -> Result<(), ApplyError> {
    let invalid = |reason| ApplyError::InvalidPartition {
        topic_id,
        partition,
        reason,
    };
    let distinct = |list: &[BrokerId]| {
        let mut sorted = list.to_vec();
        sorted.sort();
        sorted.dedup();
        sorted.len() == list.len()
    };
    if !distinct(&state.adding) || !distinct(&state.removing) {
        return Err(invalid("duplicate replica in a reassignment"));
    }
    if !state
        .adding
        .iter()
        .chain(&state.removing)
        .all(|replica| state.replicas.contains(replica))
    {
        return Err(invalid("a reassigned replica is not a replica"));
    }
    if state
        .adding
        .iter()
        .any(|replica| state.removing.contains(replica))
    {
        return Err(invalid("a replica both added and removed"));
    }
    if state.is_reassigning() && state.target_replicas().is_empty() {
        return Err(invalid("a reassignment to no replica"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::controller::records::{
        BrokerRegistrationChange, PartitionChange, ProducerIds, RemoveTopic,
    };
    use uuid::Uuid;

    fn topic_id(n: u8) -> TopicId {
        TopicId(Uuid::from_bytes([n; 16]))
    }

    fn register(broker: i32, offset: i64) -> MetadataRecord {
        MetadataRecord::RegisterBroker(RegisterBroker {
            broker_id: BrokerId(broker),
            incarnation_id: IncarnationId(Uuid::from_bytes([broker as u8; 16])),
            broker_epoch: BrokerEpoch(offset),
            listeners: vec![Listener {
                name: "PLAINTEXT".into(),
                host: "127.0.0.1".into(),
                port: 9092 + broker as u16,
            }],
            shard_count: 2,
            rack: None,
            directory_id: None,
            directory_replaced: false,
        })
    }

    fn unfence(broker: i32, epoch: i64) -> MetadataRecord {
        MetadataRecord::BrokerRegistrationChange(BrokerRegistrationChange {
            broker_id: BrokerId(broker),
            broker_epoch: BrokerEpoch(epoch),
            fenced: Some(false),
            in_controlled_shutdown: None,
        })
    }

    fn partition(topic: TopicId, index: i32, replicas: &[i32], leader: i32) -> MetadataRecord {
        let replicas: Vec<BrokerId> = replicas.iter().map(|id| BrokerId(*id)).collect();
        MetadataRecord::Partition(PartitionRecord {
            topic_id: topic,
            partition: PartitionIndex(index),
            isr: replicas.clone(),
            replicas,
            leader: Some(BrokerId(leader)),
            leader_epoch: LeaderEpoch(0),
            partition_epoch: PartitionEpoch(0),
        })
    }

    /// Three unfenced brokers and a two-partition topic with a config.
    fn populated() -> MetadataImage {
        let mut image = MetadataImage::new();
        for (broker, offset) in [(1, 1), (2, 2), (3, 3)] {
            let offset = MetadataOffset(offset);
            image
                .apply_batch(offset, &[register(broker, offset.0)])
                .unwrap();
        }
        image
            .apply_batch(
                MetadataOffset(4),
                &[unfence(1, 1), unfence(2, 2), unfence(3, 3)],
            )
            .unwrap();
        let topic = topic_id(7);
        image
            .apply_batch(
                MetadataOffset(5),
                &[
                    MetadataRecord::Topic(TopicRecord {
                        name: "orders".into(),
                        topic_id: topic,
                    }),
                    partition(topic, 0, &[1, 2], 1),
                    partition(topic, 1, &[2, 3], 2),
                    MetadataRecord::Config(ConfigRecord {
                        resource: ConfigResource::Topic("orders".into()),
                        key: "retention.ms".into(),
                        value: Some("60000".into()),
                    }),
                ],
            )
            .unwrap();
        image
            .apply_batch(
                MetadataOffset(6),
                &[MetadataRecord::ProducerIds(ProducerIds {
                    broker_id: BrokerId(2),
                    broker_epoch: BrokerEpoch(2),
                    next_block_start: PRODUCER_ID_BLOCK_SIZE,
                })],
            )
            .unwrap();
        image
    }

    #[test]
    fn a_populated_image_holds_what_was_applied() {
        let image = populated();
        assert_eq!(image.offset(), MetadataOffset(6));
        assert_eq!(image.active_brokers().count(), 3);
        let topic = image.topic_by_name("orders").unwrap();
        assert_eq!(topic.partitions.len(), 2);
        assert_eq!(
            image
                .configs(&ConfigResource::Topic("orders".into()))
                .unwrap()
                .get("retention.ms")
                .map(String::as_str),
            Some("60000")
        );
        assert_eq!(
            image.producer_ids().next_block_start,
            PRODUCER_ID_BLOCK_SIZE
        );
    }

    #[test]
    fn a_new_registration_is_fenced_and_its_epoch_is_its_offset() {
        let mut image = MetadataImage::new();
        let refused = image.apply_batch(MetadataOffset(5), &[register(1, 4)]);
        assert!(matches!(
            refused,
            Err(ApplyError::BrokerEpochNotOffset { .. })
        ));
        assert!(image.broker(BrokerId(1)).is_none());
        assert_eq!(image.offset(), MetadataOffset(5), "a refused batch is seen");
        image
            .apply_batch(MetadataOffset(6), &[register(1, 6)])
            .unwrap();
        assert!(image.broker(BrokerId(1)).unwrap().fenced);
    }

    #[test]
    fn offsets_must_increase() {
        let mut image = populated();
        assert!(matches!(
            image.apply_batch(MetadataOffset(6), &[MetadataRecord::NoOp]),
            Err(ApplyError::OffsetNotIncreasing { .. })
        ));
    }

    #[test]
    fn a_batch_is_atomic() {
        let mut image = populated();
        let before = image.clone();
        let result = image.apply_batch(
            MetadataOffset(7),
            &[
                MetadataRecord::Topic(TopicRecord {
                    name: "fresh".into(),
                    topic_id: topic_id(8),
                }),
                // Leader 4 is not a replica: the whole batch is refused.
                partition(topic_id(8), 0, &[1], 4),
            ],
        );
        assert!(result.is_err());
        assert!(image.topic_by_name("fresh").is_none());
        assert_eq!(image.topics(), before.topics());
    }

    #[test]
    fn partition_changes_bump_epochs() {
        let mut image = populated();
        let topic = topic_id(7);
        let shrink = MetadataRecord::PartitionChange(PartitionChange {
            topic_id: topic,
            partition: PartitionIndex(0),
            isr: Some(vec![BrokerId(1)]),
            leader: LeaderChange::Unchanged,
            replicas: None,
            expected_partition_epoch: None,
        });
        image.apply_batch(MetadataOffset(7), &[shrink]).unwrap();
        let state = image.partition(topic, PartitionIndex(0)).unwrap();
        assert_eq!(state.partition_epoch, PartitionEpoch(1));
        assert_eq!(
            state.leader_epoch,
            LeaderEpoch(0),
            "an ISR shrink keeps the leader epoch"
        );
        let no_leader = MetadataRecord::PartitionChange(PartitionChange {
            topic_id: topic,
            partition: PartitionIndex(0),
            isr: None,
            leader: LeaderChange::NoLeader,
            replicas: None,
            expected_partition_epoch: None,
        });
        image.apply_batch(MetadataOffset(8), &[no_leader]).unwrap();
        let state = image.partition(topic, PartitionIndex(0)).unwrap();
        assert_eq!(state.partition_epoch, PartitionEpoch(2));
        assert_eq!(state.leader_epoch, LeaderEpoch(1));
        assert_eq!(state.leader, None);
    }

    #[test]
    fn a_fenced_broker_cannot_stay_leader() {
        let mut image = populated();
        let fence = MetadataRecord::BrokerRegistrationChange(BrokerRegistrationChange {
            broker_id: BrokerId(1),
            broker_epoch: BrokerEpoch(1),
            fenced: Some(true),
            in_controlled_shutdown: None,
        });
        assert!(
            image
                .apply_batch(MetadataOffset(7), std::slice::from_ref(&fence))
                .is_err()
        );
        let move_leader = MetadataRecord::PartitionChange(PartitionChange {
            topic_id: topic_id(7),
            partition: PartitionIndex(0),
            isr: Some(vec![BrokerId(2)]),
            leader: LeaderChange::To(BrokerId(2)),
            replicas: None,
            expected_partition_epoch: None,
        });
        image
            .apply_batch(MetadataOffset(8), &[fence, move_leader])
            .unwrap();
    }

    #[test]
    fn stale_broker_epochs_and_duplicate_topics_are_refused() {
        let mut image = populated();
        assert!(matches!(
            image.apply_batch(MetadataOffset(7), &[unfence(1, 99)]),
            Err(ApplyError::StaleBrokerEpoch { .. })
        ));
        let duplicate = MetadataRecord::Topic(TopicRecord {
            name: "orders".into(),
            topic_id: topic_id(9),
        });
        assert!(matches!(
            image.apply_batch(MetadataOffset(8), &[duplicate]),
            Err(ApplyError::TopicNameExists { .. })
        ));
        let overlapping = MetadataRecord::ProducerIds(ProducerIds {
            broker_id: BrokerId(1),
            broker_epoch: BrokerEpoch(1),
            next_block_start: PRODUCER_ID_BLOCK_SIZE,
        });
        assert!(matches!(
            image.apply_batch(MetadataOffset(9), &[overlapping]),
            Err(ApplyError::ProducerIdsOutOfOrder { .. })
        ));
    }

    #[test]
    fn removing_a_topic_removes_its_name_and_configs() {
        let mut image = populated();
        image
            .apply_batch(
                MetadataOffset(7),
                &[MetadataRecord::RemoveTopic(RemoveTopic {
                    topic_id: topic_id(7),
                })],
            )
            .unwrap();
        assert!(image.topic_by_name("orders").is_none());
        assert!(
            image
                .configs(&ConfigResource::Topic("orders".into()))
                .is_none()
        );
    }

    #[test]
    fn image_to_snapshot_to_image_is_identical() {
        let mut image = populated();
        image
            .apply_batch(
                MetadataOffset(7),
                &[MetadataRecord::BrokerRegistrationChange(
                    BrokerRegistrationChange {
                        broker_id: BrokerId(3),
                        broker_epoch: BrokerEpoch(3),
                        fenced: None,
                        in_controlled_shutdown: Some(true),
                    },
                )],
            )
            .unwrap();
        // A broker on a replaced disk: its directory id and the flag travel
        // in its registration record (version 1).
        let MetadataRecord::RegisterBroker(again) = register(4, 8) else {
            unreachable!()
        };
        image
            .apply_batch(
                MetadataOffset(8),
                &[MetadataRecord::RegisterBroker(RegisterBroker {
                    directory_id: Some(DirectoryId(Uuid::from_u128(22))),
                    directory_replaced: true,
                    ..again
                })],
            )
            .unwrap();
        let broker = image.broker(BrokerId(4)).unwrap();
        assert_eq!(broker.directory_id, Some(DirectoryId(Uuid::from_u128(22))));
        assert!(broker.directory_replaced);
        let bytes = image.encode_snapshot();
        let loaded = MetadataImage::decode_snapshot(&bytes).unwrap();
        assert_eq!(loaded, image);
        assert_eq!(loaded.encode_snapshot(), bytes);
        let empty = MetadataImage::new();
        assert_eq!(
            MetadataImage::decode_snapshot(&empty.encode_snapshot()).unwrap(),
            empty
        );
    }

    /// SCRAM credentials are applied, replaced, removed, and carried by
    /// snapshots (in the optional trailing section); a snapshot without any
    /// encodes as before they existed.
    #[test]
    fn scram_credentials_apply_and_survive_a_snapshot() {
        use crate::controller::records::RemoveUserScramCredential;
        let mut image = populated();
        let without = image.encode_snapshot();
        let credential = |name: &str, mechanism: u8, key: u8| UserScramCredential {
            name: name.into(),
            mechanism,
            salt: vec![key; 16],
            stored_key: vec![key; 64],
            server_key: vec![key; 64],
            iterations: 4096,
        };
        image
            .apply_batch(
                MetadataOffset(7),
                &[
                    MetadataRecord::UserScramCredential(credential("alice", 2, 1)),
                    MetadataRecord::UserScramCredential(credential("alice", 2, 2)),
                    MetadataRecord::UserScramCredential(credential("bob", 1, 3)),
                    MetadataRecord::UserScramCredential(credential("carol", 1, 4)),
                    MetadataRecord::RemoveUserScramCredential(RemoveUserScramCredential {
                        name: "carol".into(),
                        mechanism: 1,
                    }),
                ],
            )
            .unwrap();
        assert_eq!(
            image.scram_credential("alice", 2),
            Some(&credential("alice", 2, 2))
        );
        assert_eq!(image.scram_credential("alice", 1), None);
        assert_eq!(image.scram_credential("carol", 1), None);
        assert_eq!(image.scram_credentials().count(), 2);
        let bytes = image.encode_snapshot();
        assert!(bytes.len() > without.len());
        let loaded = MetadataImage::decode_snapshot(&bytes).unwrap();
        assert_eq!(loaded, image);
        assert_eq!(
            MetadataImage::decode_snapshot(&without).unwrap(),
            populated()
        );
    }

    /// ACL bindings are applied, removed (twice: the second changes
    /// nothing) and carried by snapshots, with or without SCRAM
    /// credentials before them.
    #[test]
    fn acl_bindings_apply_and_survive_a_snapshot() {
        use crate::auth::acl::{
            AclBinding, AclOperation, AclPermission, PatternType, ResourceType,
        };
        use crate::controller::records::RemoveAccessControlEntry;
        let mut image = populated();
        let binding = |name: &str| AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: name.into(),
            pattern_type: PatternType::Literal,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: AclOperation::Read,
            permission: AclPermission::Allow,
        };
        let id = |n: u8| uuid::Uuid::from_bytes([n; 16]);
        image
            .apply_batch(
                MetadataOffset(7),
                &[
                    MetadataRecord::AccessControlEntry(AccessControlEntry {
                        id: id(1),
                        binding: binding("a"),
                    }),
                    MetadataRecord::AccessControlEntry(AccessControlEntry {
                        id: id(2),
                        binding: binding("b"),
                    }),
                    MetadataRecord::RemoveAccessControlEntry(RemoveAccessControlEntry {
                        id: id(1),
                    }),
                    MetadataRecord::RemoveAccessControlEntry(RemoveAccessControlEntry {
                        id: id(1),
                    }),
                ],
            )
            .unwrap();
        assert_eq!(image.acls().len(), 1);
        assert_eq!(image.acls().get(&id(2)), Some(&binding("b")));
        let loaded = MetadataImage::decode_snapshot(&image.encode_snapshot()).unwrap();
        assert_eq!(loaded, image);
        image
            .apply_batch(
                MetadataOffset(8),
                &[MetadataRecord::UserScramCredential(UserScramCredential {
                    name: "alice".into(),
                    mechanism: 1,
                    salt: vec![1; 16],
                    stored_key: vec![2; 32],
                    server_key: vec![3; 32],
                    iterations: 4096,
                })],
            )
            .unwrap();
        let loaded = MetadataImage::decode_snapshot(&image.encode_snapshot()).unwrap();
        assert_eq!(loaded, image);
        assert_eq!(loaded.acls().len(), 1);
    }

    #[test]
    fn decoding_a_damaged_snapshot_never_panics() {
        let bytes = populated().encode_snapshot();
        for cut in 0..bytes.len() {
            assert!(MetadataImage::decode_snapshot(&bytes[..cut]).is_err());
        }
        for position in 0..bytes.len() {
            for flip in [1u8, 0x80, 0xff] {
                let mut damaged = bytes.clone();
                damaged[position] ^= flip;
                let _ = MetadataImage::decode_snapshot(&damaged);
            }
        }
    }
}
