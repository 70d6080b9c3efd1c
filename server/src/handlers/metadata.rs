//! Metadata: the live brokers, the active controller, topics and their
//! partitions (leader and leader epoch, replicas, ISR, offline replicas)
//! as the published view (metadata/) knows them, with auto topic creation
//! when the broker and the request allow it.
//!
//! Fenced brokers are not listed (clients would connect to them); their
//! replicas are listed as offline. A partition without a leader answers
//! LEADER_NOT_AVAILABLE with leader -1, as Kafka.
//!
//! With the authorizer on (auth/authorizer.rs), as Kafka: listing every
//! topic lists those the principal may DESCRIBE; a named topic it may not
//! DESCRIBE answers TOPIC_AUTHORIZATION_FAILED (exists or not); auto
//! creation also needs CREATE on the cluster or the topic (else
//! TOPIC_AUTHORIZATION_FAILED); authorized-operations fields come from
//! the authorizer.
//!
//! A topic is described from one published view, which the follower
//! publishes only once this broker's local replicas are open, so a client
//! never learns of a local partition that is not open yet.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, MetadataRequest, MetadataResponse, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::auth::acl::{AclOperation, CLUSTER_NAME, ResourceType};
use crate::auth::authorizer::Access;
use crate::handlers::Reply;
use crate::handlers::offline_replicas;
use crate::metadata::{ClusterMetadata, MetadataError, TopicMetadata, validate_topic_name};
use crate::shard::Shard;
use crate::shard::topics::{TopicError, create_topic};

/// `listener`: the name of the listener the client connected on; brokers
/// are listed with their endpoints on it.
pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: MetadataRequest,
    listener: &str,
    access: &Access<'_>,
) -> anyhow::Result<Reply> {
    let config = &shard.config;
    let include_topic_operations = request.include_topic_authorized_operations;
    let include_cluster_operations = request.include_cluster_authorized_operations;
    let requested: Option<Vec<(Option<String>, uuid::Uuid)>> = match request.topics {
        // v0: an empty list means every topic; v1+: null means every topic.
        Some(topics) if !(version == 0 && topics.is_empty()) => Some(
            topics
                .into_iter()
                .map(|topic| (topic.name.map(|name| name.0.to_string()), topic.topic_id))
                .collect(),
        ),
        _ => None,
    };
    let allow_auto_create =
        config.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);
    let mut topics = Vec::new();
    match requested {
        None => {
            let snapshot = shard.metadata.snapshot();
            topics.extend(
                snapshot
                    .topics
                    .values()
                    .filter(|topic| {
                        access.allows(AclOperation::Describe, ResourceType::Topic, &topic.name)
                    })
                    .map(|topic| describe(&snapshot, topic)),
            );
        }
        Some(requested) => {
            for (name, id) in requested {
                let snapshot = shard.metadata.snapshot();
                let found = match &name {
                    Some(name) => snapshot.topics.get(name),
                    None => snapshot.topics.values().find(|topic| topic.id == id),
                };
                let described = found.map(|topic| topic.name.as_str()).or(name.as_deref());
                let may_describe = described.is_some_and(|topic| {
                    access.allows(AclOperation::Describe, ResourceType::Topic, topic)
                });
                let may_create = |topic: &str| {
                    access.allows_cluster(AclOperation::Create)
                        || access.allows(AclOperation::Create, ResourceType::Topic, topic)
                };
                let entry = match (found, name) {
                    // Named by id and not described: the name stays hidden.
                    (Some(_), None) if !may_describe => {
                        error_topic(None, id, ResponseError::TopicAuthorizationFailed)
                    }
                    (_, Some(name)) if !may_describe => {
                        error_topic(Some(name), id, ResponseError::TopicAuthorizationFailed)
                    }
                    (Some(topic), _) => describe(&snapshot, topic),
                    (None, Some(name)) if validate_topic_name(&name).is_err() => {
                        error_topic(Some(name), id, ResponseError::InvalidTopicException)
                    }
                    // Internal topics are never auto-created as user topics
                    // (Kafka creates __consumer_offsets on FindCoordinator).
                    (None, Some(name)) if crate::txn::is_internal_topic(&name) => {
                        error_topic(Some(name), id, ResponseError::UnknownTopicOrPartition)
                    }
                    (None, Some(name)) if allow_auto_create && !may_create(&name) => {
                        error_topic(Some(name), id, ResponseError::TopicAuthorizationFailed)
                    }
                    (None, Some(name)) if allow_auto_create => {
                        let partitions = config.default_partitions;
                        match create_topic(shard, &name, partitions, BTreeMap::new(), false).await {
                            Ok(topic) => {
                                tracing::info!(topic = %name, partitions, api = "Metadata", "auto-created topic");
                                describe(&shard.metadata.snapshot(), &topic)
                            }
                            // Created meanwhile by another connection.
                            Err(TopicError::Metadata(MetadataError::TopicExists(_))) => {
                                let snapshot = shard.metadata.snapshot();
                                match snapshot.topics.get(&name) {
                                    Some(topic) => describe(&snapshot, topic),
                                    None => error_topic(
                                        Some(name),
                                        id,
                                        ResponseError::UnknownTopicOrPartition,
                                    ),
                                }
                            }
                            Err(error) => {
                                tracing::warn!(topic = %name, %error, "auto topic creation failed");
                                error_topic(Some(name), id, ResponseError::UnknownTopicOrPartition)
                            }
                        }
                    }
                    // Asked by an id no topic has: Kafka's UNKNOWN_TOPIC_ID.
                    (None, None) => error_topic(None, id, ResponseError::UnknownTopicId),
                    (None, name) => error_topic(name, id, ResponseError::UnknownTopicOrPartition),
                };
                topics.push(entry);
            }
        }
    }
    // From the authorizer; without one every operation on every resource
    // (Kafka's answer without one), when the client asks (v8+).
    if include_topic_operations {
        for topic in topics.iter_mut().filter(|topic| topic.error_code == 0) {
            let name = topic.name.as_ref().map_or("", |name| name.0.as_str());
            topic.topic_authorized_operations =
                access.authorized_operations(ResourceType::Topic, name);
        }
    }
    // The brokers and controller of the latest view (auto-creation above
    // may have published a newer one).
    let view = shard.metadata.snapshot();
    let mut response = MetadataResponse::default();
    if include_cluster_operations && (8..=10).contains(&version) {
        response.cluster_authorized_operations =
            access.authorized_operations(ResourceType::Cluster, CLUSTER_NAME);
    }
    let response = response
        .with_brokers(brokers(&view, listener))
        .with_cluster_id(Some(StrBytes::from_string(view.cluster_id.clone())))
        .with_controller_id(BrokerId(view.controller_id.unwrap_or(-1)))
        .with_topics(topics);
    Ok(Reply::Body(Box::new(ResponseKind::Metadata(response))))
}

/// The live brokers of `view`, by id.
/// Each broker's endpoint on the client's `listener`.
fn brokers(view: &ClusterMetadata, listener: &str) -> Vec<MetadataResponseBroker> {
    view.live_brokers()
        .map(|broker| {
            let (host, port) = view.endpoint(broker, listener);
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(broker.id))
                .with_host(StrBytes::from_string(host))
                .with_port(port)
                .with_rack(broker.rack.clone().map(StrBytes::from_string))
        })
        .collect()
}

fn describe(view: &ClusterMetadata, topic: &TopicMetadata) -> MetadataResponseTopic {
    let ids = |ids: &[i32]| ids.iter().copied().map(BrokerId).collect::<Vec<_>>();
    let partitions = topic
        .partitions
        .iter()
        .zip(0..)
        .map(|(state, index)| {
            let error = match state.leader {
                Some(_) => 0,
                None => ResponseError::LeaderNotAvailable.code(),
            };
            MetadataResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(index)
                .with_leader_id(BrokerId(state.leader.unwrap_or(-1)))
                .with_leader_epoch(state.leader_epoch)
                .with_replica_nodes(ids(&state.replicas))
                .with_isr_nodes(ids(&state.isr))
                .with_offline_replicas(ids(&offline_replicas(view, state)))
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(topic.id)
        .with_is_internal(crate::txn::is_internal_topic(&topic.name))
        .with_partitions(partitions)
}

fn error_topic(
    name: Option<String>,
    id: uuid::Uuid,
    error: ResponseError,
) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(error.code())
        .with_name(name.map(|name| TopicName(StrBytes::from_string(name))))
        .with_topic_id(id)
}
