//! OffsetFetch (v1..=9): committed offsets of a group (v8+: of several
//! groups), for the partitions asked or all of them (null topics). A
//! partition without a committed offset answers -1.
//!
//! Offsets a transaction committed (TxnOffsetCommit) are not shown until
//! its commit marker is written. With require_stable (v7+, sent by
//! read_committed consumers), a partition with such pending offsets
//! answers UNSTABLE_OFFSET_COMMIT instead (retriable: the client asks
//! again), as Kafka does.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::group;
use crate::handlers::Reply;
use crate::shard::Shard;

/// One partition's answer: (partition, offset, leader epoch, metadata,
/// error code).
type Fetched = (i32, i64, i32, String, i16);

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: OffsetFetchRequest,
) -> anyhow::Result<Reply> {
    let mut response = OffsetFetchResponse::default();
    if version >= 8 {
        for asked in request.groups {
            let topics = asked.topics.map(|topics| {
                topics
                    .into_iter()
                    .map(|topic| (topic.name.0.to_string(), topic.partition_indexes))
                    .collect()
            });
            let mut out = OffsetFetchResponseGroup::default();
            let require_stable = request.require_stable;
            match fetch(shard, asked.group_id.0.to_string(), topics, require_stable).await {
                Ok(found) => {
                    out.topics = found
                        .into_iter()
                        .map(|(name, partitions)| {
                            let mut topic = OffsetFetchResponseTopics::default();
                            topic.name = TopicName(StrBytes::from_string(name));
                            topic.partitions = partitions
                                .into_iter()
                                .map(|(index, offset, epoch, metadata, code)| {
                                    let mut partition = OffsetFetchResponsePartitions::default();
                                    partition.error_code = code;
                                    partition.partition_index = index;
                                    partition.committed_offset = offset;
                                    partition.committed_leader_epoch = epoch;
                                    partition.metadata = Some(StrBytes::from_string(metadata));
                                    partition
                                })
                                .collect();
                            topic
                        })
                        .collect();
                }
                Err(error) => out.error_code = error.code(),
            }
            out.group_id = asked.group_id;
            response.groups.push(out);
        }
    } else {
        let topics = request.topics.map(|topics| {
            topics
                .into_iter()
                .map(|topic| (topic.name.0.to_string(), topic.partition_indexes))
                .collect()
        });
        let require_stable = version >= 7 && request.require_stable;
        let outcome = fetch(
            shard,
            request.group_id.0.to_string(),
            topics.clone(),
            require_stable,
        )
        .await;
        let (found, error) = match outcome {
            Ok(found) => (found, None),
            // Per partition below v2, which has no top-level error.
            Err(error) => (
                topics
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(name, partitions)| {
                        let unknown = partitions
                            .into_iter()
                            .map(|index| (index, -1, -1, String::new(), 0))
                            .collect();
                        (name, unknown)
                    })
                    .collect(),
                Some(error),
            ),
        };
        response.error_code = error.map_or(0, |error| error.code());
        response.topics = found
            .into_iter()
            .map(|(name, partitions)| {
                let mut topic = OffsetFetchResponseTopic::default();
                topic.name = TopicName(StrBytes::from_string(name));
                topic.partitions = partitions
                    .into_iter()
                    .map(|(index, offset, epoch, metadata, code)| {
                        let mut partition = OffsetFetchResponsePartition::default();
                        partition.partition_index = index;
                        partition.committed_offset = offset;
                        partition.committed_leader_epoch = epoch;
                        partition.metadata = Some(StrBytes::from_string(metadata));
                        partition.error_code = code;
                        if version < 2 {
                            partition.error_code = error.map_or(0, |error| error.code());
                        }
                        partition
                    })
                    .collect();
                topic
            })
            .collect();
    }
    Ok(Reply::Body(Box::new(ResponseKind::OffsetFetch(response))))
}

/// The committed offsets of `group_id`: of the partitions asked, or all.
async fn fetch(
    shard: &Rc<Shard>,
    group_id: String,
    topics: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Result<Vec<(String, Vec<Fetched>)>, ResponseError> {
    if group_id.is_empty() {
        return Err(ResponseError::InvalidGroupId);
    }
    group::on_coordinator(shard, &group_id.clone(), move |owner, _| async move {
        let groups = owner.groups.groups.borrow();
        let group = groups.get(&group_id);
        let lookup = |topic: &str, partition: i32| -> Fetched {
            let key = (topic.to_string(), partition);
            let unstable = require_stable
                && group.is_some_and(|group| {
                    group
                        .pending_txn_offsets
                        .values()
                        .any(|pending| pending.contains_key(&key))
                });
            if unstable {
                return (
                    partition,
                    -1,
                    -1,
                    String::new(),
                    ResponseError::UnstableOffsetCommit.code(),
                );
            }
            group.and_then(|group| group.offsets.get(&key)).map_or(
                (partition, -1, -1, String::new(), 0),
                |committed| {
                    (
                        partition,
                        committed.offset,
                        committed.leader_epoch,
                        committed.metadata.clone(),
                        0,
                    )
                },
            )
        };
        match topics {
            Some(topics) => topics
                .into_iter()
                .map(|(topic, partitions)| {
                    let found = partitions
                        .into_iter()
                        .map(|partition| lookup(&topic, partition))
                        .collect();
                    (topic, found)
                })
                .collect(),
            None => {
                let mut all: Vec<(String, Vec<Fetched>)> = Vec::new();
                for (topic, partition) in group
                    .map(|group| group.offsets.keys())
                    .into_iter()
                    .flatten()
                {
                    let entry = lookup(topic, *partition);
                    match all.last_mut() {
                        Some((last, partitions)) if last == topic => partitions.push(entry),
                        _ => all.push((topic.clone(), vec![entry])),
                    }
                }
                all
            }
        }
    })
    .await
}
