//! DescribeProducers (API 61), v0: the active idempotent and transactional
//! producers of partitions, as `kafka-transactions.sh describe-producers`
//! shows them (KIP-664): producer id and epoch, the last sequence, the
//! coordinator epoch of its last marker, and the first offset of its open
//! transaction (-1 when none).
//!
//! Only the partition's leader answers (NOT_LEADER_OR_FOLLOWER elsewhere,
//! UNKNOWN_TOPIC_OR_PARTITION for a partition the view does not know); the
//! owning shard reads its replica's producer state
//! (`shard/producer_state.rs`) and transaction state
//! (`shard/txn_state.rs`). One call per partition: an operator's request
//! names a few.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use crate::handlers::Reply;
use crate::handlers::fetch::{on_shard, serving};
use crate::shard::producer_state::ProducerId;
use crate::shard::{Shard, TopicPartition};

pub async fn handle(
    shard: &Rc<Shard>,
    _version: i16,
    request: DescribeProducersRequest,
) -> anyhow::Result<Reply> {
    let view = shard.metadata.snapshot();
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let known = view.topics.get(topic.name.0.as_str());
        let mut partitions = Vec::with_capacity(topic.partition_indexes.len());
        for index in topic.partition_indexes {
            let owner = known
                .and_then(|metadata| metadata.partitions.get(usize::try_from(index).ok()?))
                .ok_or(ResponseError::UnknownTopicOrPartition)
                .and_then(|state| serving(&view, state, -1));
            let topic_partition = TopicPartition::new(topic.name.0.as_str(), index);
            let answer = match owner {
                Err(error) => Err(error),
                Ok(owner) => on_shard(shard, owner, move |owner| async move {
                    describe_on_owner(&owner, &topic_partition)
                })
                .await
                .unwrap_or(Err(ResponseError::NotLeaderOrFollower)),
            };
            partitions.push(match answer {
                Ok(producers) => PartitionResponse::default()
                    .with_partition_index(index)
                    .with_active_producers(producers),
                Err(error) => PartitionResponse::default()
                    .with_partition_index(index)
                    .with_error_code(error.code())
                    .with_error_message(Some(StrBytes::from_static_str(
                        "this broker does not lead the partition, or does not know it",
                    ))),
            });
        }
        topics.push(
            TopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    let response = DescribeProducersResponse::default().with_topics(topics);
    Ok(Reply::Body(Box::new(ResponseKind::DescribeProducers(
        response,
    ))))
}

/// The producers of `topic_partition` on the shard that owns it; only its
/// leader answers.
fn describe_on_owner(
    owner: &Shard,
    topic_partition: &TopicPartition,
) -> Result<Vec<ProducerState>, ResponseError> {
    let replica = owner
        .partition(topic_partition)
        .filter(|replica| replica.state().is_leader())
        .ok_or(ResponseError::NotLeaderOrFollower)?;
    let producers = replica.producers.borrow();
    let txns = replica.txns.borrow();
    Ok(producers
        .describe()
        .into_iter()
        .map(|producer| {
            ProducerState::default()
                .with_producer_id(kafka_protocol::messages::ProducerId(producer.producer_id.0))
                .with_producer_epoch(i32::from(producer.epoch))
                .with_last_sequence(producer.last_sequence)
                .with_last_timestamp(producer.last_append_ms)
                .with_coordinator_epoch(producer.coordinator_epoch)
                .with_current_txn_start_offset(
                    txns.open_transaction(ProducerId(producer.producer_id.0))
                        .map_or(-1, |offset| offset.value()),
                )
        })
        .collect())
}
