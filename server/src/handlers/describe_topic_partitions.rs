//! DescribeTopicPartitions (API 75, v0; KIP-966): what Kafka 3.8+
//! `kafka-topics.sh --describe` asks instead of Metadata. Topics by name
//! (or every topic when none is named), sorted by name, paged: at most
//! `response_partition_limit` partitions per response (capped at Kafka's
//! max.request.partition.size.limit, 2000), continuing from the request's
//! cursor and answering the next one when partitions are left.
//!
//! Each partition: leader, leader epoch, replicas, ISR, offline replicas
//! (as Metadata gives them); eligible leader replicas and last known ELR
//! are empty (Sluice has no ELR). Each topic: its id, the internal flag
//! and the principal's authorized operations on it.
//!
//! Authorization (Kafka's rule): DESCRIBE on the topic. A named topic the
//! principal may not describe is TOPIC_AUTHORIZATION_FAILED; when every
//! topic is asked for, such topics are left out. A named topic the view
//! does not know is UNKNOWN_TOPIC_OR_PARTITION. Reads only the metadata
//! snapshot, on the connection's shard.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, ResponseKind,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::auth::acl::{AclOperation, ResourceType};
use crate::auth::authorizer::Access;
use crate::handlers::{Reply, offline_replicas};
use crate::metadata::ClusterMetadata;
use crate::shard::Shard;

/// Kafka's max.request.partition.size.limit default: the most partitions
/// one response holds, whatever the request asks.
pub const MAX_PARTITIONS_PER_RESPONSE: i32 = 2000;

pub fn handle(
    shard: &Rc<Shard>,
    _version: i16,
    request: DescribeTopicPartitionsRequest,
    access: &Access<'_>,
) -> Reply {
    let view = shard.metadata.snapshot();
    Reply::Body(Box::new(ResponseKind::DescribeTopicPartitions(describe(
        &view, request, access,
    ))))
}

/// The response to `request` from `view` (pure: unit tested).
pub fn describe(
    view: &ClusterMetadata,
    request: DescribeTopicPartitionsRequest,
    access: &Access<'_>,
) -> DescribeTopicPartitionsResponse {
    let may_describe =
        |name: &str| access.allows(AclOperation::Describe, ResourceType::Topic, name);
    let cursor = request
        .cursor
        .as_ref()
        .map(|cursor| (cursor.topic_name.0.to_string(), cursor.partition_index));
    // The topics to answer, sorted, from the cursor's topic on.
    let names: Vec<(String, bool)> = if request.topics.is_empty() {
        view.topics
            .keys()
            .filter(|name| may_describe(name))
            .map(|name| (name.clone(), true))
            .collect()
    } else {
        let mut names: Vec<String> = request
            .topics
            .iter()
            .map(|topic| topic.name.0.to_string())
            .collect();
        names.sort();
        names.dedup();
        names.into_iter().map(|name| (name, false)).collect()
    };
    let names = names.into_iter().filter(|(name, _)| {
        cursor
            .as_ref()
            .is_none_or(|(cursor_topic, _)| name.as_str() >= cursor_topic.as_str())
    });
    let mut remaining = request
        .response_partition_limit
        .clamp(1, MAX_PARTITIONS_PER_RESPONSE);
    let mut topics = Vec::new();
    let mut next_cursor = None;
    for (name, listed) in names {
        if remaining == 0 {
            next_cursor = Some(cursor_at(&name, 0));
            break;
        }
        if !listed && !may_describe(&name) {
            topics.push(error_topic(&name, ResponseError::TopicAuthorizationFailed));
            continue;
        }
        let Some(topic) = view.topics.get(&name) else {
            topics.push(error_topic(&name, ResponseError::UnknownTopicOrPartition));
            continue;
        };
        let first = match &cursor {
            Some((cursor_topic, index)) if *cursor_topic == name => (*index).max(0),
            _ => 0,
        };
        let count = i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX);
        let end = count.min(first.saturating_add(remaining));
        let partitions = (first..end)
            .map(|index| {
                let state = &topic.partitions[usize::try_from(index).unwrap_or_default()];
                let ids = |ids: &[i32]| ids.iter().copied().map(BrokerId).collect::<Vec<_>>();
                DescribeTopicPartitionsResponsePartition::default()
                    .with_error_code(match state.leader {
                        Some(_) => 0,
                        None => ResponseError::LeaderNotAvailable.code(),
                    })
                    .with_partition_index(index)
                    .with_leader_id(BrokerId(state.leader.unwrap_or(-1)))
                    .with_leader_epoch(state.leader_epoch)
                    .with_replica_nodes(ids(&state.replicas))
                    .with_isr_nodes(ids(&state.isr))
                    .with_eligible_leader_replicas(Some(Vec::new()))
                    .with_last_known_elr(Some(Vec::new()))
                    .with_offline_replicas(ids(&offline_replicas(view, state)))
            })
            .collect();
        remaining -= (end - first).max(0);
        topics.push(
            DescribeTopicPartitionsResponseTopic::default()
                .with_name(Some(topic_name(&name)))
                .with_topic_id(topic.id)
                .with_is_internal(crate::txn::is_internal_topic(&name))
                .with_partitions(partitions)
                .with_topic_authorized_operations(
                    access.authorized_operations(ResourceType::Topic, &name),
                ),
        );
        if end < count {
            next_cursor = Some(cursor_at(&name, end));
            break;
        }
    }
    DescribeTopicPartitionsResponse::default()
        .with_topics(topics)
        .with_next_cursor(next_cursor)
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn cursor_at(name: &str, partition_index: i32) -> Cursor {
    Cursor::default()
        .with_topic_name(topic_name(name))
        .with_partition_index(partition_index)
}

fn error_topic(name: &str, error: ResponseError) -> DescribeTopicPartitionsResponseTopic {
    DescribeTopicPartitionsResponseTopic::default()
        .with_error_code(error.code())
        .with_name(Some(topic_name(name)))
        .with_topic_authorized_operations(i32::MIN)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use kafka_protocol::messages::describe_topic_partitions_request::{
        Cursor as RequestCursor, TopicRequest,
    };

    use super::*;
    use crate::metadata::{BrokerInfo, PartitionMetadata, TopicMetadata};

    fn view() -> ClusterMetadata {
        let broker = |id: i32, fenced: bool| BrokerInfo {
            id,
            host: format!("broker{id}"),
            port: 9090 + id,
            rack: None,
            fenced,
            in_controlled_shutdown: false,
            replication_address: None,
        };
        let topic = |name: &str, partitions: usize| TopicMetadata {
            name: name.to_string(),
            id: uuid::Uuid::from_u128(partitions as u128 + 1),
            partitions: (0..partitions)
                .map(|index| PartitionMetadata {
                    replicas: vec![1, 2],
                    isr: vec![1],
                    leader: (index != 1).then_some(1),
                    leader_epoch: 3,
                    partition_epoch: 4,
                    local_shard: Some(0),
                })
                .collect(),
            configs: Default::default(),
        };
        ClusterMetadata {
            node_id: 1,
            brokers: [(1, broker(1, false)), (2, broker(2, true))].into(),
            topics: [
                ("b".to_string(), topic("b", 3)),
                ("a".to_string(), topic("a", 2)),
            ]
            .into_iter()
            .collect(),
            ..ClusterMetadata::default()
        }
    }

    fn request(
        topics: &[&str],
        limit: i32,
        cursor: Option<(&str, i32)>,
    ) -> DescribeTopicPartitionsRequest {
        DescribeTopicPartitionsRequest::default()
            .with_topics(
                topics
                    .iter()
                    .map(|name| TopicRequest::default().with_name(topic_name(name)))
                    .collect(),
            )
            .with_response_partition_limit(limit)
            .with_cursor(cursor.map(|(name, index)| {
                RequestCursor::default()
                    .with_topic_name(topic_name(name))
                    .with_partition_index(index)
            }))
    }

    fn summary(response: &DescribeTopicPartitionsResponse) -> Vec<(String, i16, Vec<i32>)> {
        response
            .topics
            .iter()
            .map(|topic| {
                (
                    topic.name.as_ref().unwrap().0.to_string(),
                    topic.error_code,
                    topic.partitions.iter().map(|p| p.partition_index).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn every_topic_sorted_with_its_partitions_state() {
        let response = describe(&view(), request(&[], 2000, None), &Access::unrestricted());
        assert_eq!(
            summary(&response),
            vec![
                ("a".to_string(), 0, vec![0, 1]),
                ("b".to_string(), 0, vec![0, 1, 2])
            ]
        );
        assert!(response.next_cursor.is_none());
        let partition = &response.topics[0].partitions[0];
        assert_eq!(partition.leader_id, BrokerId(1));
        assert_eq!(partition.leader_epoch, 3);
        assert_eq!(partition.replica_nodes, vec![BrokerId(1), BrokerId(2)]);
        assert_eq!(partition.isr_nodes, vec![BrokerId(1)]);
        assert_eq!(partition.offline_replicas, vec![BrokerId(2)]);
        assert_eq!(partition.eligible_leader_replicas, Some(vec![]));
        assert_eq!(
            response.topics[0].partitions[1].error_code,
            ResponseError::LeaderNotAvailable.code()
        );
        assert_eq!(response.topics[0].topic_id, uuid::Uuid::from_u128(3));
    }

    #[test]
    fn named_topics_unknown_ones_are_errors() {
        let response = describe(
            &view(),
            request(&["zz", "b"], 2000, None),
            &Access::unrestricted(),
        );
        assert_eq!(
            summary(&response),
            vec![
                ("b".to_string(), 0, vec![0, 1, 2]),
                (
                    "zz".to_string(),
                    ResponseError::UnknownTopicOrPartition.code(),
                    vec![]
                )
            ]
        );
    }

    #[test]
    fn the_partition_limit_pages_with_a_cursor() {
        let view = view();
        let all = Access::unrestricted();
        let first = describe(&view, request(&[], 3, None), &all);
        assert_eq!(
            summary(&first),
            vec![
                ("a".to_string(), 0, vec![0, 1]),
                ("b".to_string(), 0, vec![0])
            ]
        );
        let cursor = first.next_cursor.unwrap();
        assert_eq!(
            (cursor.topic_name.0.as_str(), cursor.partition_index),
            ("b", 1)
        );
        let second = describe(&view, request(&[], 3, Some(("b", 1))), &all);
        assert_eq!(summary(&second), vec![("b".to_string(), 0, vec![1, 2])]);
        assert!(second.next_cursor.is_none());
        // A limit ending exactly at a topic's end: the cursor names the next topic.
        let exact = describe(&view, request(&[], 2, None), &all);
        assert_eq!(summary(&exact), vec![("a".to_string(), 0, vec![0, 1])]);
        let cursor = exact.next_cursor.unwrap();
        assert_eq!(
            (cursor.topic_name.0.as_str(), cursor.partition_index),
            ("b", 0)
        );
    }
}
