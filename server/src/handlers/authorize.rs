//! The authorizer applied to the group, transaction and cluster APIs, in
//! front of their handlers (docs/decisions/0011-acls.md). [`before`]
//! either refuses a whole request (answering with Kafka's error for it),
//! or removes the entries the principal may not touch from the request
//! and remembers them; [`after`] puts those entries, with their error,
//! back into the handler's response. The handlers themselves stay as
//! they were. With the authorizer off neither does anything.
//!
//! The data and topic APIs (Produce, Fetch, Metadata, ListOffsets,
//! OffsetForLeaderEpoch, topic administration, configs, DeleteRecords,
//! ACLs) check inside their handlers, per topic.
//!
//! Broker-to-broker calls (WriteTxnMarkers, AddPartitionsToTxn v4+) need
//! CLUSTER_ACTION on the cluster. With an authenticated inter-broker
//! listener (`--inter-broker-listener-name` of a SASL or SSL listener)
//! brokers log in as their own principal, which needs CLUSTER_ACTION like
//! any other (a super user, or an ACL), as in Kafka. Without one they call
//! each other unauthenticated over PLAINTEXT, so a connection from the
//! address of a registered broker is granted CLUSTER_ACTION (and only
//! that); see docs/decisions/0011-acls.md and 0014 for what that leaves
//! open.

use std::net::IpAddr;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::OffsetFetchResponseGroup;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::auth::acl::{AclOperation, ResourceType};
use crate::auth::authorizer::Access;
use crate::metadata::ClusterMetadata;

/// FindCoordinator's key types.
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// What was taken out of a request, to answer in [`after`].
#[derive(Default)]
pub enum Removed {
    #[default]
    Nothing,
    /// FindCoordinator v4+ keys, and their key type.
    CoordinatorKeys(Vec<StrBytes>, i8),
    /// DescribeGroups.
    DescribedGroups(Vec<GroupId>),
    /// DeleteGroups.
    DeletedGroups(Vec<GroupId>),
    /// ListGroups: keep only the groups the principal may DESCRIBE.
    ListedGroups,
    /// ListTransactions: keep only the ids the principal may DESCRIBE.
    ListedTransactions,
    /// OffsetFetch before v8 (one group, authorized): topics the
    /// principal may not DESCRIBE are left out when every topic was asked
    /// for (`all`), else answered TOPIC_AUTHORIZATION_FAILED.
    FetchedTopics { all: bool },
    /// OffsetFetch v8+: the groups refused, and the groups that asked for
    /// every topic (topics as above).
    FetchedGroups {
        denied: Vec<GroupId>,
        all: Vec<GroupId>,
    },
    /// OffsetCommit topics (TOPIC_AUTHORIZATION_FAILED).
    CommitTopics(Vec<offset_commit_request::OffsetCommitRequestTopic>),
    /// TxnOffsetCommit topics (TOPIC_AUTHORIZATION_FAILED).
    TxnCommitTopics(Vec<txn_offset_commit_request::TxnOffsetCommitRequestTopic>),
    /// OffsetDelete topics (TOPIC_AUTHORIZATION_FAILED, their offsets kept).
    OffsetDeleteTopics(Vec<offset_delete_request::OffsetDeleteRequestTopic>),
    /// DescribeTransactions ids (TRANSACTIONAL_ID_AUTHORIZATION_FAILED).
    DescribedTransactions(Vec<TransactionalId>),
    /// DescribeProducers topics (TOPIC_AUTHORIZATION_FAILED).
    DescribedProducers(Vec<describe_producers_request::TopicRequest>),
}

fn group(access: &Access<'_>, operation: AclOperation, group_id: &GroupId) -> bool {
    access.allows(operation, ResourceType::Group, group_id.0.as_str())
}

fn transactional_id(access: &Access<'_>, operation: AclOperation, id: &TransactionalId) -> bool {
    access.allows(operation, ResourceType::TransactionalId, id.0.as_str())
}

fn topic(access: &Access<'_>, operation: AclOperation, name: &TopicName) -> bool {
    access.allows(operation, ResourceType::Topic, name.0.as_str())
}

/// Whether `peer` is the address of a registered broker (its brokers'
/// calls: WriteTxnMarkers, AddPartitionsToTxn v4+).
fn is_broker(view: &ClusterMetadata, peer: IpAddr) -> bool {
    let matches = |host: &str| host.parse::<IpAddr>().is_ok_and(|ip| ip == peer);
    view.brokers.values().any(|broker| matches(&broker.host))
        || view
            .listener_endpoints
            .values()
            .flatten()
            .any(|(_, host, _)| matches(host))
}

/// CLUSTER_ACTION for a broker's call: by ACL, or (`broker_peer`: the
/// caller's address, when inter-broker calls are not authenticated) by
/// coming from a registered broker's address.
fn cluster_action(
    access: &Access<'_>,
    broker_peer: Option<IpAddr>,
    view: impl FnOnce() -> std::sync::Arc<ClusterMetadata>,
) -> bool {
    access.allows_cluster(AclOperation::ClusterAction)
        || broker_peer.is_some_and(|peer| is_broker(&view(), peer))
}

/// The checks made before a group, transaction or cluster API's handler:
/// `Err` is the whole answer (nothing was done), `Ok` the request to
/// handle (maybe with entries removed) and what was removed.
// The refusal is built once per refused request and answered at once;
// boxing it buys nothing.
#[allow(clippy::result_large_err)]
pub fn before(
    access: &Access<'_>,
    version: i16,
    request: RequestKind,
    broker_peer: Option<IpAddr>,
    view: impl Fn() -> std::sync::Arc<ClusterMetadata>,
) -> Result<(RequestKind, Removed), ResponseKind> {
    use AclOperation::*;
    if !access.is_enabled() {
        return Ok((request, Removed::Nothing));
    }
    let group_failed = ResponseError::GroupAuthorizationFailed.code();
    let transactional_id_failed = ResponseError::TransactionalIdAuthorizationFailed.code();
    let cluster_failed = ResponseError::ClusterAuthorizationFailed.code();
    let topic_failed = ResponseError::TopicAuthorizationFailed.code();
    let removed = match request {
        RequestKind::JoinGroup(ref body) if !group(access, Read, &body.group_id) => {
            return Err(ResponseKind::JoinGroup(
                JoinGroupResponse::default()
                    .with_error_code(group_failed)
                    .with_generation_id(-1),
            ));
        }
        RequestKind::SyncGroup(ref body) if !group(access, Read, &body.group_id) => {
            return Err(ResponseKind::SyncGroup(
                SyncGroupResponse::default().with_error_code(group_failed),
            ));
        }
        RequestKind::Heartbeat(ref body) if !group(access, Read, &body.group_id) => {
            return Err(ResponseKind::Heartbeat(
                HeartbeatResponse::default().with_error_code(group_failed),
            ));
        }
        RequestKind::LeaveGroup(ref body) if !group(access, Read, &body.group_id) => {
            return Err(ResponseKind::LeaveGroup(
                LeaveGroupResponse::default().with_error_code(group_failed),
            ));
        }
        RequestKind::OffsetDelete(ref body) if !group(access, Delete, &body.group_id) => {
            return Err(ResponseKind::OffsetDelete(
                OffsetDeleteResponse::default().with_error_code(group_failed),
            ));
        }
        // As Kafka's handleOffsetDeleteRequest: DELETE on the group, then
        // READ on each topic; a topic without it is answered
        // TOPIC_AUTHORIZATION_FAILED and its offsets stay (DELETE on a
        // group alone must not reset a consumer's position on a topic the
        // principal may not read).
        RequestKind::OffsetDelete(mut body) => {
            let (kept, denied) = body
                .topics
                .into_iter()
                .partition(|entry| topic(access, Read, &entry.name));
            body.topics = kept;
            return Ok((
                RequestKind::OffsetDelete(body),
                Removed::OffsetDeleteTopics(denied),
            ));
        }
        RequestKind::OffsetCommit(ref body) if !group(access, Read, &body.group_id) => {
            let topics = body
                .topics
                .iter()
                .map(|topic| commit_topic(topic, group_failed))
                .collect();
            return Err(ResponseKind::OffsetCommit(
                OffsetCommitResponse::default().with_topics(topics),
            ));
        }
        RequestKind::OffsetCommit(mut body) => {
            let (kept, denied) = body
                .topics
                .into_iter()
                .partition(|entry| topic(access, Read, &entry.name));
            body.topics = kept;
            return Ok((
                RequestKind::OffsetCommit(body),
                Removed::CommitTopics(denied),
            ));
        }
        RequestKind::OffsetFetch(ref body)
            if version < 8 && !group(access, Describe, &body.group_id) =>
        {
            return Err(ResponseKind::OffsetFetch(
                OffsetFetchResponse::default().with_error_code(group_failed),
            ));
        }
        RequestKind::OffsetFetch(mut body) if version >= 8 => {
            let (kept, denied): (Vec<_>, Vec<_>) = body
                .groups
                .into_iter()
                .partition(|entry| group(access, Describe, &entry.group_id));
            body.groups = kept;
            let all = body
                .groups
                .iter()
                .filter(|entry| entry.topics.is_none())
                .map(|entry| entry.group_id.clone())
                .collect();
            let denied = denied.into_iter().map(|entry| entry.group_id).collect();
            return Ok((
                RequestKind::OffsetFetch(body),
                Removed::FetchedGroups { denied, all },
            ));
        }
        RequestKind::OffsetFetch(ref body) => Removed::FetchedTopics {
            all: body.topics.is_none(),
        },
        RequestKind::FindCoordinator(ref body) if version < 4 => {
            let allowed = match body.key_type {
                KEY_TYPE_TRANSACTION => {
                    access.allows(Describe, ResourceType::TransactionalId, body.key.as_str())
                }
                _ => access.allows(Describe, ResourceType::Group, body.key.as_str()),
            };
            if !allowed {
                let error = match body.key_type {
                    KEY_TYPE_TRANSACTION => transactional_id_failed,
                    _ => group_failed,
                };
                return Err(ResponseKind::FindCoordinator(
                    FindCoordinatorResponse::default()
                        .with_error_code(error)
                        .with_node_id(BrokerId(-1))
                        .with_port(-1),
                ));
            }
            Removed::Nothing
        }
        RequestKind::FindCoordinator(mut body) => {
            let resource = match body.key_type {
                KEY_TYPE_TRANSACTION => ResourceType::TransactionalId,
                KEY_TYPE_GROUP => ResourceType::Group,
                _ => return Ok((RequestKind::FindCoordinator(body), Removed::Nothing)),
            };
            let (kept, denied) = body
                .coordinator_keys
                .into_iter()
                .partition(|key| access.allows(Describe, resource, key.as_str()));
            body.coordinator_keys = kept;
            let removed = Removed::CoordinatorKeys(denied, body.key_type);
            return Ok((RequestKind::FindCoordinator(body), removed));
        }
        RequestKind::DescribeGroups(mut body) => {
            let (kept, denied) = body
                .groups
                .into_iter()
                .partition(|id| group(access, Describe, id));
            body.groups = kept;
            return Ok((
                RequestKind::DescribeGroups(body),
                Removed::DescribedGroups(denied),
            ));
        }
        RequestKind::DeleteGroups(mut body) => {
            let (kept, denied) = body
                .groups_names
                .into_iter()
                .partition(|id| group(access, Delete, id));
            body.groups_names = kept;
            return Ok((
                RequestKind::DeleteGroups(body),
                Removed::DeletedGroups(denied),
            ));
        }
        RequestKind::ListGroups(_) if !access.allows_cluster(Describe) => Removed::ListedGroups,
        RequestKind::ListTransactions(_) => Removed::ListedTransactions,
        RequestKind::InitProducerId(ref body) => {
            let allowed = match &body.transactional_id {
                Some(id) => transactional_id(access, Write, id),
                // An idempotent producer (Kafka 3.x): IDEMPOTENT_WRITE on
                // the cluster, or WRITE on some topic.
                None => {
                    access.allows_cluster(IdempotentWrite)
                        || access.allows_any(Write, ResourceType::Topic)
                }
            };
            if !allowed {
                let error = match body.transactional_id {
                    Some(_) => transactional_id_failed,
                    None => cluster_failed,
                };
                return Err(ResponseKind::InitProducerId(
                    InitProducerIdResponse::default()
                        .with_error_code(error)
                        .with_producer_id(ProducerId(-1))
                        .with_producer_epoch(-1),
                ));
            }
            Removed::Nothing
        }
        RequestKind::AddOffsetsToTxn(ref body) => {
            let error = if !transactional_id(access, Write, &body.transactional_id) {
                Some(transactional_id_failed)
            } else if !group(access, Read, &body.group_id) {
                Some(group_failed)
            } else {
                None
            };
            if let Some(error) = error {
                return Err(ResponseKind::AddOffsetsToTxn(
                    AddOffsetsToTxnResponse::default().with_error_code(error),
                ));
            }
            Removed::Nothing
        }
        RequestKind::EndTxn(ref body)
            if !transactional_id(access, Write, &body.transactional_id) =>
        {
            return Err(ResponseKind::EndTxn(
                EndTxnResponse::default()
                    .with_error_code(transactional_id_failed)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1),
            ));
        }
        RequestKind::TxnOffsetCommit(mut body) => {
            let error = if !transactional_id(access, Write, &body.transactional_id) {
                Some(transactional_id_failed)
            } else if !group(access, Read, &body.group_id) {
                Some(group_failed)
            } else {
                None
            };
            if let Some(error) = error {
                let topics = body
                    .topics
                    .iter()
                    .map(|topic| txn_commit_topic(topic, error))
                    .collect();
                return Err(ResponseKind::TxnOffsetCommit(
                    TxnOffsetCommitResponse::default().with_topics(topics),
                ));
            }
            let (kept, denied) = body
                .topics
                .into_iter()
                .partition(|entry| topic(access, Read, &entry.name));
            body.topics = kept;
            return Ok((
                RequestKind::TxnOffsetCommit(body),
                Removed::TxnCommitTopics(denied),
            ));
        }
        RequestKind::AddPartitionsToTxn(ref body) if version < 4 => {
            let id_allowed = transactional_id(access, Write, &body.v3_and_below_transactional_id);
            let denied_topic = body
                .v3_and_below_topics
                .iter()
                .any(|entry| !topic(access, Write, &entry.name));
            if !id_allowed || denied_topic {
                let not_attempted = ResponseError::OperationNotAttempted.code();
                let results = body
                    .v3_and_below_topics
                    .iter()
                    .map(|entry| {
                        let error = if !id_allowed {
                            transactional_id_failed
                        } else if !topic(access, Write, &entry.name) {
                            topic_failed
                        } else {
                            not_attempted
                        };
                        AddPartitionsToTxnTopicResult::default()
                            .with_name(entry.name.clone())
                            .with_results_by_partition(
                                entry
                                    .partitions
                                    .iter()
                                    .map(|index| {
                                        AddPartitionsToTxnPartitionResult::default()
                                            .with_partition_index(*index)
                                            .with_partition_error_code(error)
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                return Err(ResponseKind::AddPartitionsToTxn(
                    AddPartitionsToTxnResponse::default()
                        .with_results_by_topic_v3_and_below(results),
                ));
            }
            Removed::Nothing
        }
        RequestKind::AddPartitionsToTxn(_) if !cluster_action(access, broker_peer, &view) => {
            return Err(ResponseKind::AddPartitionsToTxn(
                AddPartitionsToTxnResponse::default().with_error_code(cluster_failed),
            ));
        }
        RequestKind::WriteTxnMarkers(ref body) if !cluster_action(access, broker_peer, &view) => {
            let markers = body
                .markers
                .iter()
                .map(|marker| {
                    WritableTxnMarkerResult::default()
                        .with_producer_id(marker.producer_id)
                        .with_topics(
                            marker
                                .topics
                                .iter()
                                .map(|entry| {
                                    WritableTxnMarkerTopicResult::default()
                                        .with_name(entry.name.clone())
                                        .with_partitions(
                                            entry
                                                .partition_indexes
                                                .iter()
                                                .map(|index| {
                                                    WritableTxnMarkerPartitionResult::default()
                                                        .with_partition_index(*index)
                                                        .with_error_code(cluster_failed)
                                                })
                                                .collect(),
                                        )
                                })
                                .collect(),
                        )
                })
                .collect();
            return Err(ResponseKind::WriteTxnMarkers(
                WriteTxnMarkersResponse::default().with_markers(markers),
            ));
        }
        RequestKind::DescribeTransactions(mut body) => {
            let (kept, denied) = body
                .transactional_ids
                .into_iter()
                .partition(|id| transactional_id(access, Describe, id));
            body.transactional_ids = kept;
            return Ok((
                RequestKind::DescribeTransactions(body),
                Removed::DescribedTransactions(denied),
            ));
        }
        RequestKind::DescribeProducers(mut body) => {
            let (kept, denied) = body
                .topics
                .into_iter()
                .partition(|entry| topic(access, Read, &entry.name));
            body.topics = kept;
            return Ok((
                RequestKind::DescribeProducers(body),
                Removed::DescribedProducers(denied),
            ));
        }
        RequestKind::DescribeUserScramCredentials(_) if !access.allows_cluster(Describe) => {
            return Err(ResponseKind::DescribeUserScramCredentials(
                DescribeUserScramCredentialsResponse::default()
                    .with_error_code(cluster_failed)
                    .with_error_message(Some(StrBytes::from_static_str(
                        "Cluster authorization failed.",
                    ))),
            ));
        }
        RequestKind::AlterUserScramCredentials(ref body) if !access.allows_cluster(Alter) => {
            let results = body
                .deletions
                .iter()
                .map(|deletion| &deletion.name)
                .chain(body.upsertions.iter().map(|upsertion| &upsertion.name))
                .map(|user| {
                    alter_user_scram_credentials_response::AlterUserScramCredentialsResult::default(
                    )
                    .with_user(user.clone())
                    .with_error_code(cluster_failed)
                })
                .collect();
            return Err(ResponseKind::AlterUserScramCredentials(
                AlterUserScramCredentialsResponse::default().with_results(results),
            ));
        }
        _ => Removed::Nothing,
    };
    Ok((request, removed))
}

fn commit_topic(
    topic: &offset_commit_request::OffsetCommitRequestTopic,
    error: i16,
) -> OffsetCommitResponseTopic {
    OffsetCommitResponseTopic::default()
        .with_name(topic.name.clone())
        .with_topic_id(topic.topic_id)
        .with_partitions(
            topic
                .partitions
                .iter()
                .map(|partition| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(partition.partition_index)
                        .with_error_code(error)
                })
                .collect(),
        )
}

fn txn_commit_topic(
    topic: &txn_offset_commit_request::TxnOffsetCommitRequestTopic,
    error: i16,
) -> TxnOffsetCommitResponseTopic {
    TxnOffsetCommitResponseTopic::default()
        .with_name(topic.name.clone())
        .with_partitions(
            topic
                .partitions
                .iter()
                .map(|partition| {
                    TxnOffsetCommitResponsePartition::default()
                        .with_partition_index(partition.partition_index)
                        .with_error_code(error)
                })
                .collect(),
        )
}

/// Puts what [`before`] removed back into the handler's response, with
/// its error; filters listings.
pub fn after(access: &Access<'_>, removed: Removed, response: &mut ResponseKind) {
    let group_failed = ResponseError::GroupAuthorizationFailed.code();
    let topic_failed = ResponseError::TopicAuthorizationFailed.code();
    match (removed, response) {
        (Removed::Nothing, _) => {}
        (Removed::CoordinatorKeys(keys, key_type), ResponseKind::FindCoordinator(response)) => {
            let error = match key_type {
                KEY_TYPE_TRANSACTION => ResponseError::TransactionalIdAuthorizationFailed.code(),
                _ => group_failed,
            };
            for key in keys {
                response.coordinators.push(
                    Coordinator::default()
                        .with_key(key)
                        .with_node_id(BrokerId(-1))
                        .with_port(-1)
                        .with_error_code(error),
                );
            }
        }
        (Removed::DescribedGroups(groups), ResponseKind::DescribeGroups(response)) => {
            for described in &mut response.groups {
                if described.authorized_operations != i32::MIN {
                    described.authorized_operations = access
                        .authorized_operations(ResourceType::Group, described.group_id.0.as_str());
                }
            }
            for group_id in groups {
                response.groups.push(
                    DescribedGroup::default()
                        .with_group_id(group_id)
                        .with_error_code(group_failed),
                );
            }
        }
        (Removed::DeletedGroups(groups), ResponseKind::DeleteGroups(response)) => {
            for group_id in groups {
                response.results.push(
                    DeletableGroupResult::default()
                        .with_group_id(group_id)
                        .with_error_code(group_failed),
                );
            }
        }
        (Removed::ListedGroups, ResponseKind::ListGroups(response)) => {
            response
                .groups
                .retain(|listed| group(access, AclOperation::Describe, &listed.group_id));
        }
        (Removed::ListedTransactions, ResponseKind::ListTransactions(response)) => {
            response.transaction_states.retain(|state| {
                transactional_id(access, AclOperation::Describe, &state.transactional_id)
            });
        }
        (Removed::FetchedTopics { all }, ResponseKind::OffsetFetch(response)) => {
            if all {
                response
                    .topics
                    .retain(|entry| topic(access, AclOperation::Describe, &entry.name));
            }
            for entry in &mut response.topics {
                if !topic(access, AclOperation::Describe, &entry.name) {
                    for partition in &mut entry.partitions {
                        partition.committed_offset = -1;
                        partition.committed_leader_epoch = -1;
                        partition.metadata = None;
                        partition.error_code = topic_failed;
                    }
                }
            }
        }
        (Removed::FetchedGroups { denied, all }, ResponseKind::OffsetFetch(response)) => {
            for fetched in &mut response.groups {
                if all.contains(&fetched.group_id) {
                    fetched
                        .topics
                        .retain(|entry| topic(access, AclOperation::Describe, &entry.name));
                }
                for entry in &mut fetched.topics {
                    if !topic(access, AclOperation::Describe, &entry.name) {
                        for partition in &mut entry.partitions {
                            partition.committed_offset = -1;
                            partition.committed_leader_epoch = -1;
                            partition.metadata = None;
                            partition.error_code = topic_failed;
                        }
                    }
                }
            }
            for group_id in denied {
                response.groups.push(
                    OffsetFetchResponseGroup::default()
                        .with_group_id(group_id)
                        .with_error_code(group_failed),
                );
            }
        }
        (Removed::CommitTopics(topics), ResponseKind::OffsetCommit(response)) => {
            response
                .topics
                .extend(topics.iter().map(|topic| commit_topic(topic, topic_failed)));
        }
        (Removed::OffsetDeleteTopics(topics), ResponseKind::OffsetDelete(response)) => {
            response.topics.extend(topics.into_iter().map(|topic| {
                offset_delete_response::OffsetDeleteResponseTopic::default()
                    .with_name(topic.name)
                    .with_partitions(
                        topic
                            .partitions
                            .iter()
                            .map(|partition| {
                                offset_delete_response::OffsetDeleteResponsePartition::default()
                                    .with_partition_index(partition.partition_index)
                                    .with_error_code(topic_failed)
                            })
                            .collect(),
                    )
            }));
        }
        (Removed::TxnCommitTopics(topics), ResponseKind::TxnOffsetCommit(response)) => {
            response.topics.extend(
                topics
                    .iter()
                    .map(|topic| txn_commit_topic(topic, topic_failed)),
            );
        }
        (Removed::DescribedTransactions(ids), ResponseKind::DescribeTransactions(response)) => {
            let error = ResponseError::TransactionalIdAuthorizationFailed.code();
            response
                .transaction_states
                .extend(ids.into_iter().map(|id| {
                    describe_transactions_response::TransactionState::default()
                        .with_transactional_id(id)
                        .with_error_code(error)
                        .with_producer_id(ProducerId(-1))
                        .with_producer_epoch(-1)
                }));
        }
        (Removed::DescribedProducers(topics), ResponseKind::DescribeProducers(response)) => {
            response.topics.extend(topics.into_iter().map(|entry| {
                describe_producers_response::TopicResponse::default()
                    .with_name(entry.name)
                    .with_partitions(
                        entry
                            .partition_indexes
                            .iter()
                            .map(|index| {
                                describe_producers_response::PartitionResponse::default()
                                    .with_partition_index(*index)
                                    .with_error_code(topic_failed)
                            })
                            .collect(),
                    )
            }));
        }
        (removed, response) => {
            let _ = (removed, response);
            debug_assert!(false, "a removal does not match its response");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use kafka_protocol::messages::list_groups_response::ListedGroup;
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use uuid::Uuid;

    use super::*;
    use crate::auth::Principal;
    use crate::auth::acl::{AclBinding, AclPermission, AclTable, PatternType};
    use crate::auth::authorizer::AuthorizerConfig;

    fn allow(resource_type: ResourceType, name: &str, operation: AclOperation) -> AclBinding {
        AclBinding {
            resource_type,
            resource_name: name.into(),
            pattern_type: PatternType::Literal,
            principal: "User:alice".into(),
            host: "*".into(),
            operation,
            permission: AclPermission::Allow,
        }
    }

    fn table(bindings: &[AclBinding]) -> Arc<AclTable> {
        let mut table = AclTable::default();
        for (index, binding) in bindings.iter().enumerate() {
            table.insert(Uuid::from_u128(index as u128 + 1), binding.clone());
        }
        Arc::new(table)
    }

    fn peer() -> IpAddr {
        "10.0.0.1".parse().unwrap()
    }

    fn view() -> Arc<ClusterMetadata> {
        Arc::new(ClusterMetadata::default())
    }

    fn name(text: &str) -> StrBytes {
        StrBytes::from_string(text.to_string())
    }

    #[test]
    fn with_the_authorizer_off_nothing_is_refused_or_removed() {
        let request = RequestKind::JoinGroup(JoinGroupRequest::default());
        let (_, removed) = before(&Access::unrestricted(), 5, request, Some(peer()), view)
            .ok()
            .unwrap();
        assert!(matches!(removed, Removed::Nothing));
    }

    #[test]
    fn a_group_the_principal_may_not_read_refuses_its_membership_calls() {
        let config = AuthorizerConfig::default();
        let principal = Principal::user("alice");
        let acls = table(&[allow(ResourceType::Group, "mine", AclOperation::Read)]);
        let access = Access::new(&config, acls, &principal, peer());
        let join = |group: &str| {
            RequestKind::JoinGroup(JoinGroupRequest::default().with_group_id(GroupId(name(group))))
        };
        assert!(before(&access, 5, join("mine"), Some(peer()), view).is_ok());
        match before(&access, 5, join("theirs"), Some(peer()), view) {
            Err(ResponseKind::JoinGroup(response)) => {
                assert_eq!(
                    response.error_code,
                    ResponseError::GroupAuthorizationFailed.code()
                );
                assert_eq!(response.generation_id, -1);
            }
            _ => panic!("JoinGroup to a group alice may not read was not refused"),
        }
    }

    #[test]
    fn offset_commit_topics_without_read_are_removed_and_answered_with_their_error() {
        let config = AuthorizerConfig::default();
        let principal = Principal::user("alice");
        let acls = table(&[
            allow(ResourceType::Group, "g", AclOperation::Read),
            allow(ResourceType::Topic, "mine", AclOperation::Read),
        ]);
        let access = Access::new(&config, acls, &principal, peer());
        let topic = |topic: &str| {
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(name(topic)))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default().with_partition_index(0),
                ])
        };
        let request = RequestKind::OffsetCommit(
            OffsetCommitRequest::default()
                .with_group_id(GroupId(name("g")))
                .with_topics(vec![topic("mine"), topic("theirs")]),
        );
        let (request, removed) = before(&access, 8, request, Some(peer()), view)
            .ok()
            .unwrap();
        let RequestKind::OffsetCommit(request) = request else {
            panic!("not an OffsetCommit");
        };
        assert_eq!(request.topics.len(), 1);
        assert_eq!(request.topics[0].name.0.as_str(), "mine");
        let mut response = ResponseKind::OffsetCommit(OffsetCommitResponse::default());
        after(&access, removed, &mut response);
        let ResponseKind::OffsetCommit(response) = response else {
            panic!("not an OffsetCommit");
        };
        assert_eq!(response.topics.len(), 1);
        assert_eq!(response.topics[0].name.0.as_str(), "theirs");
        assert_eq!(
            response.topics[0].partitions[0].error_code,
            ResponseError::TopicAuthorizationFailed.code()
        );
    }

    #[test]
    fn list_groups_without_cluster_describe_lists_only_describable_groups() {
        let config = AuthorizerConfig::default();
        let principal = Principal::user("alice");
        let acls = table(&[allow(ResourceType::Group, "mine", AclOperation::Describe)]);
        let access = Access::new(&config, acls, &principal, peer());
        let request = RequestKind::ListGroups(ListGroupsRequest::default());
        let (_, removed) = before(&access, 4, request, Some(peer()), view)
            .ok()
            .unwrap();
        let mut response = ResponseKind::ListGroups(
            ListGroupsResponse::default().with_groups(
                ["mine", "theirs"]
                    .into_iter()
                    .map(|group| ListedGroup::default().with_group_id(GroupId(name(group))))
                    .collect(),
            ),
        );
        after(&access, removed, &mut response);
        let ResponseKind::ListGroups(response) = response else {
            panic!("not a ListGroups");
        };
        let listed: Vec<&str> = response
            .groups
            .iter()
            .map(|group| group.group_id.0.as_str())
            .collect();
        assert_eq!(listed, vec!["mine"]);
    }

    #[test]
    fn describe_transactions_answers_the_ids_it_may_not_describe_with_their_error() {
        let config = AuthorizerConfig::default();
        let principal = Principal::user("alice");
        let acls = table(&[allow(
            ResourceType::TransactionalId,
            "mine",
            AclOperation::Describe,
        )]);
        let access = Access::new(&config, acls, &principal, peer());
        let ids = ["mine", "theirs"].map(|id| TransactionalId(name(id)));
        let request = RequestKind::DescribeTransactions(
            DescribeTransactionsRequest::default().with_transactional_ids(ids.to_vec()),
        );
        let (request, removed) = before(&access, 0, request, Some(peer()), view)
            .ok()
            .unwrap();
        let RequestKind::DescribeTransactions(request) = request else {
            panic!("not a DescribeTransactions");
        };
        assert_eq!(request.transactional_ids, vec![ids[0].clone()]);
        let mut response =
            ResponseKind::DescribeTransactions(DescribeTransactionsResponse::default());
        after(&access, removed, &mut response);
        let ResponseKind::DescribeTransactions(response) = response else {
            panic!("not a DescribeTransactions");
        };
        assert_eq!(response.transaction_states.len(), 1);
        assert_eq!(response.transaction_states[0].transactional_id, ids[1]);
        assert_eq!(
            response.transaction_states[0].error_code,
            ResponseError::TransactionalIdAuthorizationFailed.code()
        );
    }

    #[test]
    fn broker_calls_need_cluster_action_which_a_registered_brokers_address_has() {
        let config = AuthorizerConfig::default();
        let principal = Principal::anonymous();
        let access = Access::new(&config, table(&[]), &principal, peer());
        let markers = || RequestKind::WriteTxnMarkers(WriteTxnMarkersRequest::default());
        assert!(matches!(
            before(&access, 1, markers(), Some(peer()), view),
            Err(ResponseKind::WriteTxnMarkers(_))
        ));
        let with_broker = || {
            let mut view = ClusterMetadata::default();
            view.listener_endpoints
                .insert(1, vec![("PLAINTEXT".into(), "10.0.0.1".into(), 9092)]);
            Arc::new(view)
        };
        assert!(before(&access, 1, markers(), Some(peer()), with_broker).is_ok());
        // CLUSTER_ACTION only: the same address is not allowed the rest.
        let join = RequestKind::JoinGroup(JoinGroupRequest::default());
        assert!(before(&access, 5, join, Some(peer()), with_broker).is_err());
        // With authenticated inter-broker calls the address counts for
        // nothing: the principal needs CLUSTER_ACTION itself.
        assert!(matches!(
            before(&access, 1, markers(), None, with_broker),
            Err(ResponseKind::WriteTxnMarkers(_))
        ));
        let broker = Principal::user("broker");
        let super_users = AuthorizerConfig {
            super_users: vec!["User:broker".to_string()],
            allow_everyone_if_no_acl_found: false,
        };
        let as_broker = Access::new(&super_users, table(&[]), &broker, peer());
        assert!(before(&as_broker, 1, markers(), None, view).is_ok());
    }
}
