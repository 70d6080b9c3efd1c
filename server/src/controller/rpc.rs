//! The controller's RPCs over the peer protocol (`crate::peer`): what a
//! broker asks a controller and what it answers, with their stable
//! little-endian encodings (`controller::codec`, the same conventions as
//! the metadata records).
//!
//! A `CONTROLLER_REQUEST` frame carries `version u16 = 0, tag u8`, then the
//! request's fields; the `CONTROLLER_RESPONSE` frame after it on the same
//! connection carries `version u16 = 0, ok u8`, then a reply or an error.
//! Record batches inside a MetadataFetch reply use `RecordBatch`'s encoding
//! and snapshots `MetadataImage::encode_snapshot`'s, so they are read with
//! the same decoders as the log.
//!
//! Sans-I/O; decoding garbage returns `DecodeError`, never panics.

use thiserror::Error;

use super::codec::{DecodeError, Reader, Writer};
use super::image::ApplyError;
use super::placement::PlacementError;
use super::quorum_controller::{
    AlterPartitionReply, AlterPartitionRequest, ControllerError, CreateTopicRequest,
    HeartbeatRequest, RegistrationRequest,
};
use super::records::{
    ConfigResource, Listener, MetadataRecord, RecordBatch, UserScramCredential, read_acl_binding,
    write_acl_binding,
};
use super::types::{
    BrokerEpoch, BrokerId, DirectoryId, IncarnationId, LeaderEpoch, MetadataOffset, PartitionEpoch,
    PartitionIndex, TopicId,
};
use crate::auth::acl::AclBinding;

const VERSION: u16 = 0;

/// A broker's request to the controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    RegisterBroker(RegistrationRequest),
    Heartbeat(HeartbeatRequest),
    CreateTopic(CreateTopicRequest),
    DeleteTopic {
        name: String,
    },
    /// DeleteTopics by topic id (v6+): the topic named `name` is deleted
    /// only while it still has id `topic_id`. A broker resolves the id to
    /// a name in its own view, which may lag: a topic deleted and created
    /// again under that name meanwhile has another id and stays (Kafka's
    /// controller deletes by id). A separate tag, so that an older
    /// controller refuses it rather than deleting by name alone.
    DeleteTopicWithId {
        name: String,
        topic_id: TopicId,
    },
    CreatePartitions {
        name: String,
        total_count: i32,
        assignment: Option<Vec<Vec<BrokerId>>>,
    },
    AlterConfigs {
        resource: ConfigResource,
        changes: Vec<(String, Option<String>)>,
    },
    AllocateProducerIds {
        broker_id: BrokerId,
        broker_epoch: BrokerEpoch,
    },
    /// Committed batches after `after` (any voter answers, from its own
    /// committed log), waiting up to `max_wait_ms` when there are none.
    MetadataFetch {
        after: MetadataOffset,
        max_wait_ms: u32,
    },
    /// A partition leader sets its ISR (answered `PartitionAltered`).
    AlterPartition(AlterPartitionRequest),
    /// AlterUserScramCredentials: salted credentials to create or replace,
    /// and (user, mechanism code) pairs to delete (answered `Committed`).
    AlterScramCredentials {
        upsertions: Vec<UserScramCredential>,
        deletions: Vec<(String, u8)>,
    },
    /// CreateAcls / DeleteAcls: bindings to create (those already stored
    /// are left as they are) and binding ids to delete (those gone already
    /// are skipped). Answered `Committed` (at the image's offset when
    /// nothing changed).
    AlterAcls {
        creations: Vec<AclBinding>,
        deletions: Vec<uuid::Uuid>,
    },
    /// ElectLeaders (PREFERRED): lead each (topic, partition) by its
    /// preferred replica where it is active, in the ISR and not the leader
    /// already (the others are left as they are). Answered `Committed`
    /// (at the image's offset when nothing changed).
    ElectPreferredLeaders {
        partitions: Vec<(String, i32)>,
    },
    /// ElectLeaders (UNCLEAN): give each leaderless (topic, partition) a
    /// leader: an active ISR member if there is one, else the first active
    /// replica, whatever the topic's unclean.leader.election.enable (the
    /// operator asked; acknowledged records may be lost). Partitions with
    /// a leader are left as they are. Answered `Committed`.
    ElectUncleanLeaders {
        partitions: Vec<(String, i32)>,
    },
    /// AlterPartitionReassignments: for each (topic, partition), start or
    /// replace a reassignment to the replica list, or (`None`) cancel the
    /// ongoing one (`controller::reassignment`). All or nothing: one
    /// refused partition refuses the request (the broker checks each
    /// against its view first and sends only those that pass). Answered
    /// `Committed`.
    AlterReassignments {
        reassignments: Vec<(String, i32, Option<Vec<BrokerId>>)>,
    },
}

impl Request {
    /// Whether only the active controller may answer (everything but a
    /// metadata fetch).
    pub fn needs_active_controller(&self) -> bool {
        !matches!(self, Request::MetadataFetch { .. })
    }
}

/// One committed batch as a follower applies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchedBatch {
    pub offset: MetadataOffset,
    pub records: Vec<MetadataRecord>,
}

/// What a request committed or found. `offset` fields are the metadata
/// offset of the committed batch: once a node's image reaches it
/// (`ControllerHandle::wait_applied`), the change is visible there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Registered {
        broker_epoch: BrokerEpoch,
    },
    Heartbeat {
        is_fenced: bool,
        is_caught_up: bool,
        should_shut_down: bool,
    },
    Committed {
        offset: MetadataOffset,
    },
    TopicCreated {
        topic_id: TopicId,
        offset: MetadataOffset,
    },
    /// The block `[first, first + count)` belongs to the broker.
    ProducerIds {
        first: i64,
        count: i64,
        offset: MetadataOffset,
    },
    /// Batches in order, contiguous from `after + 1` (empty: nothing new).
    Batches {
        batches: Vec<FetchedBatch>,
        leader: Option<BrokerId>,
    },
    /// The caller is behind the log start: the whole image.
    Snapshot {
        image: Vec<u8>,
        leader: Option<BrokerId>,
    },
    /// AlterPartition: the partition's committed state.
    PartitionAltered(AlterPartitionReply),
}

/// What kind of refusal, for mapping to a Kafka error code at the edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    TopicAlreadyExists = 1,
    UnknownTopic = 2,
    InvalidTopicName = 3,
    InvalidPartitions = 4,
    InvalidReplicationFactor = 5,
    InvalidReplicaAssignment = 6,
    UnknownBroker = 7,
    StaleBrokerEpoch = 8,
    BrokerNotFenced = 9,
    InvalidRequest = 10,
    /// The proposal was overwritten by a new leader (not committed); safe
    /// to retry.
    ProposalLost = 11,
    Internal = 12,
    /// AlterPartition for a partition the topic does not have.
    UnknownTopicOrPartition = 13,
    /// AlterPartition from a broker that does not lead the partition.
    NotLeaderOrFollower = 14,
    /// AlterPartition with another leader epoch than the partition's.
    FencedLeaderEpoch = 15,
    /// AlterPartition with another partition epoch than the partition's:
    /// the leader has not applied the last change yet.
    InvalidUpdateVersion = 16,
    /// AlterPartition adding a broker that is not active to the ISR.
    IneligibleReplica = 17,
}

impl ErrorKind {
    fn from_code(code: u16) -> Result<ErrorKind, DecodeError> {
        use ErrorKind::*;
        Ok(match code {
            1 => TopicAlreadyExists,
            2 => UnknownTopic,
            3 => InvalidTopicName,
            4 => InvalidPartitions,
            5 => InvalidReplicationFactor,
            6 => InvalidReplicaAssignment,
            7 => UnknownBroker,
            8 => StaleBrokerEpoch,
            9 => BrokerNotFenced,
            10 => InvalidRequest,
            11 => ProposalLost,
            12 => Internal,
            13 => UnknownTopicOrPartition,
            14 => NotLeaderOrFollower,
            15 => FencedLeaderEpoch,
            16 => InvalidUpdateVersion,
            17 => IneligibleReplica,
            other => {
                return Err(DecodeError::Invalid {
                    what: "error kind",
                    value: i64::from(other),
                });
            }
        })
    }
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum RequestError {
    /// Ask `leader` instead (None: no leader known yet; retry later).
    #[error("not the active controller (leader: {leader:?})")]
    NotController { leader: Option<BrokerId> },
    #[error("{kind:?}: {message}")]
    Rejected { kind: ErrorKind, message: String },
    /// No answer within the caller's deadline (the change may still commit).
    #[error("controller request timed out")]
    Timeout,
    /// The local controller service has stopped.
    #[error("controller service stopped")]
    Stopped,
}

impl RequestError {
    pub fn rejected(kind: ErrorKind, message: impl Into<String>) -> RequestError {
        RequestError::Rejected {
            kind,
            message: message.into(),
        }
    }

    /// The kind of a refusal (`None` for the other errors).
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            RequestError::Rejected { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// Worth retrying at another (or the same, later) controller.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            RequestError::NotController { .. }
                | RequestError::Rejected {
                    kind: ErrorKind::ProposalLost,
                    ..
                }
        )
    }
}

impl From<ControllerError> for RequestError {
    fn from(error: ControllerError) -> RequestError {
        use ControllerError as E;
        let kind = match &error {
            E::NotController => return RequestError::NotController { leader: None },
            E::UnknownBroker { .. } => ErrorKind::UnknownBroker,
            E::StaleBrokerEpoch { .. } => ErrorKind::StaleBrokerEpoch,
            E::BrokerNotFenced { .. } => ErrorKind::BrokerNotFenced,
            E::InvalidTopicName { .. } => ErrorKind::InvalidTopicName,
            E::TopicAlreadyExists { .. } => ErrorKind::TopicAlreadyExists,
            E::UnknownTopic { .. } => ErrorKind::UnknownTopic,
            E::InvalidPartitionCount { .. } => ErrorKind::InvalidPartitions,
            E::Placement(PlacementError::InvalidReplicationFactor { .. }) => {
                ErrorKind::InvalidReplicationFactor
            }
            E::Placement(PlacementError::InvalidPartitionCount { .. }) => {
                ErrorKind::InvalidPartitions
            }
            E::Placement(PlacementError::InvalidReplicaAssignment { .. }) => {
                ErrorKind::InvalidReplicaAssignment
            }
            E::UnknownTopicId { .. } => ErrorKind::UnknownTopic,
            E::UnknownPartition { .. } => ErrorKind::UnknownTopicOrPartition,
            E::NotLeaderOrFollower { .. } => ErrorKind::NotLeaderOrFollower,
            E::FencedLeaderEpoch { .. } => ErrorKind::FencedLeaderEpoch,
            E::InvalidUpdateVersion { .. } => ErrorKind::InvalidUpdateVersion,
            E::InvalidIsr { .. } => ErrorKind::InvalidRequest,
            E::IneligibleReplica { .. } => ErrorKind::IneligibleReplica,
        };
        RequestError::rejected(kind, error.to_string())
    }
}

impl From<ApplyError> for RequestError {
    /// A committed batch the image refused (a conflicting concurrent
    /// proposal won).
    fn from(error: ApplyError) -> RequestError {
        use ApplyError as E;
        let kind = match &error {
            E::TopicNameExists { .. } | E::TopicIdExists { .. } => ErrorKind::TopicAlreadyExists,
            E::UnknownTopic { .. } | E::UnknownTopicName { .. } => ErrorKind::UnknownTopic,
            E::InvalidTopicName { .. } => ErrorKind::InvalidTopicName,
            E::PartitionOutOfOrder { .. } | E::UnknownPartition { .. } => {
                ErrorKind::InvalidPartitions
            }
            E::UnknownBroker { .. } => ErrorKind::UnknownBroker,
            E::StaleBrokerEpoch { .. } => ErrorKind::StaleBrokerEpoch,
            // Two concurrent proposals raced; the caller may simply retry.
            E::ProducerIdsOutOfOrder { .. }
            | E::BrokerEpochNotOffset { .. }
            | E::PartitionEpochMismatch { .. } => ErrorKind::ProposalLost,
            E::OffsetNotIncreasing { .. } | E::InvalidPartition { .. } => ErrorKind::Internal,
        };
        RequestError::rejected(kind, error.to_string())
    }
}

pub type Response = Result<Reply, RequestError>;

fn invalid(what: &'static str, value: impl Into<i64>) -> DecodeError {
    DecodeError::Invalid {
        what,
        value: value.into(),
    }
}

fn write_partitions(writer: &mut Writer, partitions: &[(String, i32)]) {
    writer.count(partitions.len());
    for (topic, partition) in partitions {
        writer.string(topic);
        writer.i32(*partition);
    }
}

fn read_partitions(reader: &mut Reader<'_>) -> Result<Vec<(String, i32)>, DecodeError> {
    let count = reader.count(8)?;
    (0..count)
        .map(|_| Ok((reader.string()?, reader.i32()?)))
        .collect()
}

fn write_broker_ids(writer: &mut Writer, ids: &[BrokerId]) {
    let raw: Vec<i32> = ids.iter().map(|id| id.0).collect();
    writer.i32_list(&raw);
}

fn read_broker_ids(reader: &mut Reader<'_>) -> Result<Vec<BrokerId>, DecodeError> {
    Ok(reader.i32_list()?.into_iter().map(BrokerId).collect())
}

fn write_leader(writer: &mut Writer, leader: Option<BrokerId>) {
    writer.i32(leader.map_or(-1, |id| id.0));
}

fn read_leader(reader: &mut Reader<'_>) -> Result<Option<BrokerId>, DecodeError> {
    match reader.i32()? {
        -1 => Ok(None),
        id if id >= 0 => Ok(Some(BrokerId(id))),
        other => Err(invalid("leader id", other)),
    }
}

fn write_resource(writer: &mut Writer, resource: &ConfigResource) {
    match resource {
        ConfigResource::Topic(name) => {
            writer.u8(0);
            writer.string(name);
        }
        ConfigResource::Broker(broker) => {
            writer.u8(1);
            writer.option(broker.as_ref(), |writer, id| writer.i32(id.0));
        }
    }
}

fn read_resource(reader: &mut Reader<'_>) -> Result<ConfigResource, DecodeError> {
    match reader.u8()? {
        0 => Ok(ConfigResource::Topic(reader.string()?)),
        1 => Ok(ConfigResource::Broker(
            reader.option(|reader| reader.i32().map(BrokerId))?,
        )),
        other => Err(invalid("config resource", other)),
    }
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::new();
        writer.u16(VERSION);
        match self {
            Request::RegisterBroker(request) => {
                // Tag 15 is tag 0 followed by the directory id. Without an
                // id (never sent by this version) it is tag 0, which older
                // brokers send and every controller reads.
                writer.u8(if request.directory_id.is_some() {
                    15
                } else {
                    0
                });
                writer.i32(request.broker_id.0);
                writer.uuid(request.incarnation_id.0);
                writer.count(request.listeners.len());
                for listener in &request.listeners {
                    writer.string(&listener.name);
                    writer.string(&listener.host);
                    writer.u16(listener.port);
                }
                writer.u32(request.shard_count);
                writer.option(request.rack.as_ref(), |writer, rack| writer.string(rack));
                if let Some(directory_id) = request.directory_id {
                    writer.uuid(directory_id.0);
                }
            }
            Request::Heartbeat(request) => {
                writer.u8(1);
                writer.i32(request.broker_id.0);
                writer.i64(request.broker_epoch.0);
                writer.i64(request.current_metadata_offset.0);
                writer.bool(request.want_fence);
                writer.bool(request.want_shut_down);
            }
            Request::CreateTopic(request) => {
                writer.u8(2);
                writer.string(&request.name);
                writer.i32(request.partition_count);
                writer.i32(request.replication_factor);
                writer.option(request.assignment.as_ref(), |writer, lists| {
                    writer.count(lists.len());
                    for list in lists {
                        write_broker_ids(writer, list);
                    }
                });
                writer.count(request.configs.len());
                for (key, value) in &request.configs {
                    writer.string(key);
                    writer.string(value);
                }
            }
            Request::DeleteTopic { name } => {
                writer.u8(3);
                writer.string(name);
            }
            Request::CreatePartitions {
                name,
                total_count,
                assignment,
            } => {
                writer.u8(4);
                writer.string(name);
                writer.i32(*total_count);
                writer.option(assignment.as_ref(), |writer, lists| {
                    writer.count(lists.len());
                    for list in lists {
                        write_broker_ids(writer, list);
                    }
                });
            }
            Request::AlterConfigs { resource, changes } => {
                writer.u8(5);
                write_resource(&mut writer, resource);
                writer.count(changes.len());
                for (key, value) in changes {
                    writer.string(key);
                    writer.option(value.as_ref(), |writer, value| writer.string(value));
                }
            }
            Request::AllocateProducerIds {
                broker_id,
                broker_epoch,
            } => {
                writer.u8(6);
                writer.i32(broker_id.0);
                writer.i64(broker_epoch.0);
            }
            Request::MetadataFetch { after, max_wait_ms } => {
                writer.u8(7);
                writer.i64(after.0);
                writer.u32(*max_wait_ms);
            }
            Request::AlterPartition(request) => {
                writer.u8(8);
                writer.i32(request.broker_id.0);
                writer.i64(request.broker_epoch.0);
                writer.uuid(request.topic_id.0);
                writer.i32(request.partition.0);
                writer.i32(request.leader_epoch.0);
                writer.i32(request.partition_epoch.0);
                write_broker_ids(&mut writer, &request.new_isr);
            }
            Request::AlterScramCredentials {
                upsertions,
                deletions,
            } => {
                writer.u8(9);
                writer.count(upsertions.len());
                for credential in upsertions {
                    writer.string(&credential.name);
                    writer.u8(credential.mechanism);
                    writer.bytes(&credential.salt);
                    writer.bytes(&credential.stored_key);
                    writer.bytes(&credential.server_key);
                    writer.i32(credential.iterations);
                }
                writer.count(deletions.len());
                for (name, mechanism) in deletions {
                    writer.string(name);
                    writer.u8(*mechanism);
                }
            }
            Request::AlterAcls {
                creations,
                deletions,
            } => {
                writer.u8(10);
                writer.count(creations.len());
                for binding in creations {
                    write_acl_binding(&mut writer, binding);
                }
                writer.count(deletions.len());
                for id in deletions {
                    writer.uuid(*id);
                }
            }
            Request::ElectPreferredLeaders { partitions } => {
                writer.u8(11);
                write_partitions(&mut writer, partitions);
            }
            Request::ElectUncleanLeaders { partitions } => {
                writer.u8(12);
                write_partitions(&mut writer, partitions);
            }
            Request::DeleteTopicWithId { name, topic_id } => {
                writer.u8(14);
                writer.string(name);
                writer.uuid(topic_id.0);
            }
            Request::AlterReassignments { reassignments } => {
                writer.u8(13);
                writer.count(reassignments.len());
                for (topic, partition, target) in reassignments {
                    writer.string(topic);
                    writer.i32(*partition);
                    writer.option(target.as_ref(), |w, target| write_broker_ids(w, target));
                }
            }
        }
        writer.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Request, DecodeError> {
        let mut reader = Reader::new(bytes);
        let version = reader.u16()?;
        if version != VERSION {
            return Err(invalid("request version", version));
        }
        let assignment = |reader: &mut Reader<'_>| {
            reader.option(|reader| {
                let count = reader.count(4)?;
                (0..count).map(|_| read_broker_ids(reader)).collect()
            })
        };
        let request = match reader.u8()? {
            tag @ (0 | 15) => {
                let broker_id = BrokerId(reader.i32()?);
                let incarnation_id = IncarnationId(reader.uuid()?);
                let count = reader.count(10)?;
                let listeners = (0..count)
                    .map(|_| {
                        Ok(Listener {
                            name: reader.string()?,
                            host: reader.string()?,
                            port: reader.u16()?,
                        })
                    })
                    .collect::<Result<_, DecodeError>>()?;
                let shard_count = reader.u32()?;
                let rack = reader.option(Reader::string)?;
                let directory_id = if tag == 15 {
                    Some(DirectoryId(reader.uuid()?))
                } else {
                    None
                };
                Request::RegisterBroker(RegistrationRequest {
                    broker_id,
                    incarnation_id,
                    listeners,
                    shard_count,
                    rack,
                    directory_id,
                })
            }
            1 => Request::Heartbeat(HeartbeatRequest {
                broker_id: BrokerId(reader.i32()?),
                broker_epoch: BrokerEpoch(reader.i64()?),
                current_metadata_offset: MetadataOffset(reader.i64()?),
                want_fence: reader.bool()?,
                want_shut_down: reader.bool()?,
            }),
            2 => {
                let name = reader.string()?;
                let partition_count = reader.i32()?;
                let replication_factor = reader.i32()?;
                let assignment = assignment(&mut reader)?;
                let count = reader.count(8)?;
                let configs = (0..count)
                    .map(|_| Ok((reader.string()?, reader.string()?)))
                    .collect::<Result<_, DecodeError>>()?;
                Request::CreateTopic(CreateTopicRequest {
                    name,
                    partition_count,
                    replication_factor,
                    assignment,
                    configs,
                })
            }
            3 => Request::DeleteTopic {
                name: reader.string()?,
            },
            4 => Request::CreatePartitions {
                name: reader.string()?,
                total_count: reader.i32()?,
                assignment: assignment(&mut reader)?,
            },
            5 => {
                let resource = read_resource(&mut reader)?;
                let count = reader.count(5)?;
                let changes = (0..count)
                    .map(|_| Ok((reader.string()?, reader.option(Reader::string)?)))
                    .collect::<Result<_, DecodeError>>()?;
                Request::AlterConfigs { resource, changes }
            }
            6 => Request::AllocateProducerIds {
                broker_id: BrokerId(reader.i32()?),
                broker_epoch: BrokerEpoch(reader.i64()?),
            },
            7 => Request::MetadataFetch {
                after: MetadataOffset(reader.i64()?),
                max_wait_ms: reader.u32()?,
            },
            8 => Request::AlterPartition(AlterPartitionRequest {
                broker_id: BrokerId(reader.i32()?),
                broker_epoch: BrokerEpoch(reader.i64()?),
                topic_id: TopicId(reader.uuid()?),
                partition: PartitionIndex(reader.i32()?),
                leader_epoch: LeaderEpoch(reader.i32()?),
                partition_epoch: PartitionEpoch(reader.i32()?),
                new_isr: read_broker_ids(&mut reader)?,
            }),
            9 => {
                let count = reader.count(21)?;
                let upsertions = (0..count)
                    .map(|_| {
                        Ok(UserScramCredential {
                            name: reader.string()?,
                            mechanism: reader.u8()?,
                            salt: reader.bytes()?.to_vec(),
                            stored_key: reader.bytes()?.to_vec(),
                            server_key: reader.bytes()?.to_vec(),
                            iterations: reader.i32()?,
                        })
                    })
                    .collect::<Result<_, DecodeError>>()?;
                let count = reader.count(5)?;
                let deletions = (0..count)
                    .map(|_| Ok((reader.string()?, reader.u8()?)))
                    .collect::<Result<_, DecodeError>>()?;
                Request::AlterScramCredentials {
                    upsertions,
                    deletions,
                }
            }
            10 => {
                let count = reader.count(19)?;
                let creations = (0..count)
                    .map(|_| read_acl_binding(&mut reader))
                    .collect::<Result<_, DecodeError>>()?;
                let count = reader.count(16)?;
                let deletions = (0..count)
                    .map(|_| reader.uuid())
                    .collect::<Result<_, DecodeError>>()?;
                Request::AlterAcls {
                    creations,
                    deletions,
                }
            }
            11 => Request::ElectPreferredLeaders {
                partitions: read_partitions(&mut reader)?,
            },
            12 => Request::ElectUncleanLeaders {
                partitions: read_partitions(&mut reader)?,
            },
            13 => {
                let count = reader.count(9)?;
                let reassignments = (0..count)
                    .map(|_| {
                        Ok((
                            reader.string()?,
                            reader.i32()?,
                            reader.option(read_broker_ids)?,
                        ))
                    })
                    .collect::<Result<_, DecodeError>>()?;
                Request::AlterReassignments { reassignments }
            }
            14 => Request::DeleteTopicWithId {
                name: reader.string()?,
                topic_id: TopicId(reader.uuid()?),
            },
            other => return Err(invalid("request tag", other)),
        };
        reader.finish()?;
        Ok(request)
    }
}

pub fn encode_response(response: &Response) -> Vec<u8> {
    let mut writer = Writer::new();
    writer.u16(VERSION);
    match response {
        Ok(reply) => {
            writer.u8(1);
            match reply {
                Reply::Registered { broker_epoch } => {
                    writer.u8(0);
                    writer.i64(broker_epoch.0);
                }
                Reply::Heartbeat {
                    is_fenced,
                    is_caught_up,
                    should_shut_down,
                } => {
                    writer.u8(1);
                    writer.bool(*is_fenced);
                    writer.bool(*is_caught_up);
                    writer.bool(*should_shut_down);
                }
                Reply::Committed { offset } => {
                    writer.u8(2);
                    writer.i64(offset.0);
                }
                Reply::TopicCreated { topic_id, offset } => {
                    writer.u8(3);
                    writer.uuid(topic_id.0);
                    writer.i64(offset.0);
                }
                Reply::ProducerIds {
                    first,
                    count,
                    offset,
                } => {
                    writer.u8(4);
                    writer.i64(*first);
                    writer.i64(*count);
                    writer.i64(offset.0);
                }
                Reply::Batches { batches, leader } => {
                    writer.u8(5);
                    write_leader(&mut writer, *leader);
                    writer.count(batches.len());
                    for batch in batches {
                        writer.i64(batch.offset.0);
                        writer.bytes(&RecordBatch::new(batch.records.clone()).encode());
                    }
                }
                Reply::Snapshot { image, leader } => {
                    writer.u8(6);
                    write_leader(&mut writer, *leader);
                    writer.bytes(image);
                }
                Reply::PartitionAltered(reply) => {
                    writer.u8(7);
                    write_broker_ids(&mut writer, &reply.isr);
                    writer.i32(reply.leader_epoch.0);
                    writer.i32(reply.partition_epoch.0);
                    writer.i64(reply.offset.0);
                }
            }
        }
        Err(error) => {
            writer.u8(0);
            match error {
                RequestError::NotController { leader } => {
                    writer.u8(0);
                    write_leader(&mut writer, *leader);
                }
                RequestError::Rejected { kind, message } => {
                    writer.u8(1);
                    writer.u16(*kind as u16);
                    writer.string(message);
                }
                RequestError::Timeout => writer.u8(2),
                RequestError::Stopped => writer.u8(3),
            }
        }
    }
    writer.into_bytes()
}

pub fn decode_response(bytes: &[u8]) -> Result<Response, DecodeError> {
    let mut reader = Reader::new(bytes);
    let version = reader.u16()?;
    if version != VERSION {
        return Err(invalid("response version", version));
    }
    let response = if reader.bool()? {
        Ok(match reader.u8()? {
            0 => Reply::Registered {
                broker_epoch: BrokerEpoch(reader.i64()?),
            },
            1 => Reply::Heartbeat {
                is_fenced: reader.bool()?,
                is_caught_up: reader.bool()?,
                should_shut_down: reader.bool()?,
            },
            2 => Reply::Committed {
                offset: MetadataOffset(reader.i64()?),
            },
            3 => Reply::TopicCreated {
                topic_id: TopicId(reader.uuid()?),
                offset: MetadataOffset(reader.i64()?),
            },
            4 => Reply::ProducerIds {
                first: reader.i64()?,
                count: reader.i64()?,
                offset: MetadataOffset(reader.i64()?),
            },
            5 => {
                let leader = read_leader(&mut reader)?;
                let count = reader.count(12)?;
                let batches = (0..count)
                    .map(|_| {
                        let offset = MetadataOffset(reader.i64()?);
                        let records = RecordBatch::decode(reader.bytes()?)?.records;
                        Ok(FetchedBatch { offset, records })
                    })
                    .collect::<Result<_, DecodeError>>()?;
                Reply::Batches { batches, leader }
            }
            6 => Reply::Snapshot {
                leader: read_leader(&mut reader)?,
                image: reader.bytes()?.to_vec(),
            },
            7 => Reply::PartitionAltered(AlterPartitionReply {
                isr: read_broker_ids(&mut reader)?,
                leader_epoch: LeaderEpoch(reader.i32()?),
                partition_epoch: PartitionEpoch(reader.i32()?),
                offset: MetadataOffset(reader.i64()?),
            }),
            other => return Err(invalid("reply tag", other)),
        })
    } else {
        Err(match reader.u8()? {
            0 => RequestError::NotController {
                leader: read_leader(&mut reader)?,
            },
            1 => RequestError::Rejected {
                kind: ErrorKind::from_code(reader.u16()?)?,
                message: reader.string()?,
            },
            2 => RequestError::Timeout,
            3 => RequestError::Stopped,
            other => return Err(invalid("error tag", other)),
        })
    };
    reader.finish()?;
    Ok(response)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::controller::records::TopicRecord;

    fn requests() -> Vec<Request> {
        vec![
            Request::RegisterBroker(RegistrationRequest {
                broker_id: BrokerId(2),
                incarnation_id: IncarnationId(uuid::Uuid::from_bytes([7; 16])),
                listeners: vec![Listener {
                    name: "PLAINTEXT".into(),
                    host: "127.0.0.1".into(),
                    port: 9092,
                }],
                shard_count: 4,
                rack: Some("a".into()),
                directory_id: Some(DirectoryId(uuid::Uuid::from_bytes([8; 16]))),
            }),
            Request::RegisterBroker(RegistrationRequest {
                broker_id: BrokerId(3),
                incarnation_id: IncarnationId(uuid::Uuid::from_bytes([6; 16])),
                listeners: vec![],
                shard_count: 1,
                rack: None,
                directory_id: None,
            }),
            Request::Heartbeat(HeartbeatRequest {
                broker_id: BrokerId(1),
                broker_epoch: BrokerEpoch(5),
                current_metadata_offset: MetadataOffset(9),
                want_fence: false,
                want_shut_down: true,
            }),
            Request::CreateTopic(CreateTopicRequest {
                name: "orders".into(),
                partition_count: 3,
                replication_factor: 1,
                assignment: Some(vec![vec![BrokerId(0)], vec![BrokerId(1), BrokerId(2)]]),
                configs: vec![("retention.ms".into(), "1000".into())],
            }),
            Request::DeleteTopic {
                name: "orders".into(),
            },
            Request::DeleteTopicWithId {
                name: "orders".into(),
                topic_id: TopicId(uuid::Uuid::from_u128(7)),
            },
            Request::CreatePartitions {
                name: "orders".into(),
                total_count: 6,
                assignment: None,
            },
            Request::AlterConfigs {
                resource: ConfigResource::Broker(None),
                changes: vec![("a".into(), None), ("b".into(), Some("c".into()))],
            },
            Request::AllocateProducerIds {
                broker_id: BrokerId(0),
                broker_epoch: BrokerEpoch(3),
            },
            Request::MetadataFetch {
                after: MetadataOffset(10),
                max_wait_ms: 500,
            },
            Request::AlterPartition(AlterPartitionRequest {
                broker_id: BrokerId(1),
                broker_epoch: BrokerEpoch(12),
                topic_id: TopicId(uuid::Uuid::from_bytes([3; 16])),
                partition: PartitionIndex(2),
                leader_epoch: LeaderEpoch(4),
                partition_epoch: PartitionEpoch(9),
                new_isr: vec![BrokerId(1), BrokerId(0)],
            }),
            Request::AlterScramCredentials {
                upsertions: vec![UserScramCredential {
                    name: "alice".into(),
                    mechanism: 2,
                    salt: vec![1; 32],
                    stored_key: vec![2; 64],
                    server_key: vec![3; 64],
                    iterations: 8192,
                }],
                deletions: vec![("bob".into(), 1)],
            },
            Request::AlterAcls {
                creations: vec![crate::auth::acl::AclBinding {
                    resource_type: crate::auth::acl::ResourceType::Group,
                    resource_name: "g".into(),
                    pattern_type: crate::auth::acl::PatternType::Literal,
                    principal: "User:bob".into(),
                    host: "10.0.0.1".into(),
                    operation: crate::auth::acl::AclOperation::Read,
                    permission: crate::auth::acl::AclPermission::Allow,
                }],
                deletions: vec![uuid::Uuid::from_bytes([9; 16])],
            },
            Request::ElectPreferredLeaders {
                partitions: vec![("t".into(), 0), ("u".into(), 7)],
            },
            Request::ElectUncleanLeaders {
                partitions: vec![("v".into(), 3)],
            },
            Request::AlterReassignments {
                reassignments: vec![
                    ("w".into(), 1, Some(vec![BrokerId(2), BrokerId(3)])),
                    ("w".into(), 2, None),
                ],
            },
        ]
    }

    fn responses() -> Vec<Response> {
        vec![
            Ok(Reply::Registered {
                broker_epoch: BrokerEpoch(4),
            }),
            Ok(Reply::Heartbeat {
                is_fenced: true,
                is_caught_up: false,
                should_shut_down: true,
            }),
            Ok(Reply::Committed {
                offset: MetadataOffset(8),
            }),
            Ok(Reply::TopicCreated {
                topic_id: TopicId(uuid::Uuid::from_bytes([1; 16])),
                offset: MetadataOffset(8),
            }),
            Ok(Reply::ProducerIds {
                first: 1000,
                count: 1000,
                offset: MetadataOffset(3),
            }),
            Ok(Reply::Batches {
                batches: vec![
                    FetchedBatch {
                        offset: MetadataOffset(4),
                        records: vec![],
                    },
                    FetchedBatch {
                        offset: MetadataOffset(5),
                        records: vec![MetadataRecord::Topic(TopicRecord {
                            name: "t".into(),
                            topic_id: TopicId(uuid::Uuid::from_bytes([2; 16])),
                        })],
                    },
                ],
                leader: Some(BrokerId(1)),
            }),
            Ok(Reply::Snapshot {
                image: vec![1, 2, 3],
                leader: None,
            }),
            Ok(Reply::PartitionAltered(AlterPartitionReply {
                isr: vec![BrokerId(1), BrokerId(2)],
                leader_epoch: LeaderEpoch(4),
                partition_epoch: PartitionEpoch(10),
                offset: MetadataOffset(77),
            })),
            Err(RequestError::NotController {
                leader: Some(BrokerId(2)),
            }),
            Err(RequestError::rejected(ErrorKind::TopicAlreadyExists, "x")),
            Err(RequestError::rejected(ErrorKind::IneligibleReplica, "y")),
            Err(RequestError::Timeout),
            Err(RequestError::Stopped),
        ]
    }

    #[test]
    fn requests_and_responses_round_trip() {
        for request in requests() {
            assert_eq!(Request::decode(&request.encode()).unwrap(), request);
        }
        for response in responses() {
            assert_eq!(
                decode_response(&encode_response(&response)).unwrap(),
                response
            );
        }
    }

    /// A registration from a broker of an older version (tag 0, no
    /// directory id: these bytes are what it sends) reads as one without
    /// an id; one with an id is tag 15, tag 0's fields followed by the id.
    #[test]
    fn an_older_brokers_registration_reads_without_a_directory_id() {
        let mut old = vec![0, 0, 0];
        old.extend_from_slice(&5i32.to_le_bytes());
        old.extend_from_slice(&[4; 16]);
        old.extend_from_slice(&0u32.to_le_bytes());
        old.extend_from_slice(&2u32.to_le_bytes());
        old.push(0);
        let without = RegistrationRequest {
            broker_id: BrokerId(5),
            incarnation_id: IncarnationId(uuid::Uuid::from_bytes([4; 16])),
            listeners: vec![],
            shard_count: 2,
            rack: None,
            directory_id: None,
        };
        assert_eq!(
            Request::decode(&old).unwrap(),
            Request::RegisterBroker(without.clone())
        );
        assert_eq!(Request::RegisterBroker(without.clone()).encode(), old);
        let with = Request::RegisterBroker(RegistrationRequest {
            directory_id: Some(DirectoryId(uuid::Uuid::from_bytes([9; 16]))),
            ..without
        });
        let bytes = with.encode();
        assert_eq!(bytes[2], 15);
        assert_eq!(&bytes[3..old.len()], &old[3..]);
        assert_eq!(&bytes[old.len()..], &[9; 16]);
        assert_eq!(Request::decode(&bytes).unwrap(), with);
    }

    #[test]
    fn truncations_and_corruptions_are_errors_not_panics() {
        for request in requests() {
            let bytes = request.encode();
            for end in 0..bytes.len() {
                assert!(Request::decode(&bytes[..end]).is_err());
            }
            for at in 0..bytes.len() {
                let mut bytes = bytes.clone();
                bytes[at] ^= 0xff;
                let _ = Request::decode(&bytes);
            }
        }
        for response in responses() {
            let bytes = encode_response(&response);
            for end in 0..bytes.len() {
                assert!(decode_response(&bytes[..end]).is_err());
            }
            for at in 0..bytes.len() {
                let mut bytes = bytes.clone();
                bytes[at] ^= 0xff;
                let _ = decode_response(&bytes);
            }
        }
    }
}
