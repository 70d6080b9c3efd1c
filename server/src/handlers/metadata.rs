//! Metadata: brokers (just this one), topics and partitions, with auto topic
//! creation when the broker and the request allow it.
//!
//! A topic is described only once its change in flight (creation, added
//! partitions) has finished on every shard (`settled_snapshot` in
//! shard/topics.rs), so a client never learns of a partition that is not
//! open yet.

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

use crate::handlers::Reply;
use crate::metadata::{MetadataError, TopicMetadata, validate_topic_name};
use crate::shard::Shard;
use crate::shard::topics::{TopicError, create_topic, settled_snapshot, settled_snapshot_all};

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: MetadataRequest,
) -> anyhow::Result<Reply> {
    let config = &shard.config;
    let node_id = BrokerId(config.node_id);
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
            let snapshot = settled_snapshot_all(shard).await;
            topics.extend(
                snapshot
                    .topics
                    .values()
                    .map(|topic| describe(node_id, topic)),
            );
        }
        Some(requested) => {
            for (name, id) in requested {
                let found = {
                    let snapshot = match &name {
                        Some(name) => settled_snapshot(shard, name).await,
                        None => settled_snapshot_all(shard).await,
                    };
                    match &name {
                        Some(name) => snapshot.topics.get(name).cloned(),
                        None => snapshot
                            .topics
                            .values()
                            .find(|topic| topic.id == id)
                            .cloned(),
                    }
                };
                let entry = match (found, name) {
                    (Some(topic), _) => describe(node_id, &topic),
                    (None, Some(name)) if validate_topic_name(&name).is_err() => {
                        error_topic(Some(name), id, ResponseError::InvalidTopicException)
                    }
                    // Internal topics are never auto-created as user topics
                    // (Kafka creates __consumer_offsets on FindCoordinator).
                    (None, Some(name)) if name == crate::group::OFFSETS_TOPIC => {
                        error_topic(Some(name), id, ResponseError::UnknownTopicOrPartition)
                    }
                    (None, Some(name)) if allow_auto_create => {
                        let partitions = config.default_partitions;
                        match create_topic(shard, &name, partitions, BTreeMap::new(), false).await {
                            Ok(topic) => {
                                tracing::info!(topic = %name, partitions, api = "Metadata", "auto-created topic");
                                describe(node_id, &topic)
                            }
                            // Created meanwhile by another connection.
                            Err(TopicError::Metadata(MetadataError::TopicExists(_))) => {
                                match settled_snapshot(shard, &name).await.topics.get(&name) {
                                    Some(topic) => describe(node_id, topic),
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
                    (None, name) => error_topic(name, id, ResponseError::UnknownTopicOrPartition),
                };
                topics.push(entry);
            }
        }
    }
    let broker = MetadataResponseBroker::default()
        .with_node_id(node_id)
        .with_host(StrBytes::from_string(config.advertised_host.clone()))
        .with_port(config.advertised_port);
    let response = MetadataResponse::default()
        .with_brokers(vec![broker])
        .with_cluster_id(Some(StrBytes::from_string(
            shard.metadata.snapshot().cluster_id.clone(),
        )))
        .with_controller_id(node_id)
        .with_topics(topics);
    Ok(Reply::Body(Box::new(ResponseKind::Metadata(response))))
}

fn describe(node_id: BrokerId, topic: &TopicMetadata) -> MetadataResponseTopic {
    let partitions = (0..topic.partitions.len() as i32)
        .map(|index| {
            MetadataResponsePartition::default()
                .with_partition_index(index)
                .with_leader_id(node_id)
                .with_leader_epoch(0)
                .with_replica_nodes(vec![node_id])
                .with_isr_nodes(vec![node_id])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(topic.id)
        .with_is_internal(topic.name == crate::group::OFFSETS_TOPIC)
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
