//! WriteTxnMarkers (API 27, v1; the only version kafka-protocol decodes):
//! the transaction coordinator asks the leaders of a transaction's
//! partitions to write its commit or abort marker.
//!
//! Runs on the connection's shard; every partition goes to its owning shard
//! (`shard::txn_state::write_txn_marker`, which appends the control batch
//! as leader and answers once it is committed), all of them concurrently.
//! Errors are per partition: UNKNOWN_TOPIC_OR_PARTITION,
//! NOT_LEADER_OR_FOLLOWER (the coordinator looks for the new leader and
//! retries), INVALID_PRODUCER_EPOCH, TRANSACTION_COORDINATOR_FENCED,
//! NOT_ENOUGH_REPLICAS, REQUEST_TIMED_OUT, KAFKA_STORAGE_ERROR.
//!
//! Kafka accepts this API only from brokers (CLUSTER_ACTION); without
//! authorization here, any client may send it.

use std::rc::Rc;

use futures_util::future::join_all;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{ResponseKind, WriteTxnMarkersRequest, WriteTxnMarkersResponse};

use crate::handlers::Reply;
use crate::handlers::fetch::on_shard;
use crate::shard::txn_state::write_txn_marker;
use crate::shard::{Shard, TopicPartition};

pub async fn handle(
    shard: &Rc<Shard>,
    _version: i16,
    request: WriteTxnMarkersRequest,
) -> anyhow::Result<Reply> {
    let snapshot = shard.metadata.snapshot();
    let markers = request.markers.into_iter().map(|marker| {
        let snapshot = &snapshot;
        async move {
            let producer_id = marker.producer_id.0;
            let producer_epoch = marker.producer_epoch;
            let coordinator_epoch = marker.coordinator_epoch;
            let commit = marker.transaction_result;
            let mut topics = Vec::with_capacity(marker.topics.len());
            for topic in marker.topics {
                let name = topic.name.0.to_string();
                let placement = snapshot.topics.get(name.as_str());
                let partitions = join_all(topic.partition_indexes.iter().map(|&index| {
                    let owner = placement
                        .and_then(|found| {
                            usize::try_from(index)
                                .ok()
                                .and_then(|at| found.partitions.get(at))
                        })
                        .ok_or(ResponseError::UnknownTopicOrPartition)
                        .and_then(|state| crate::handlers::serving_shard(snapshot, state));
                    let topic_partition = TopicPartition::new(&name, index);
                    async move {
                        let outcome = match owner {
                            Err(error) => Err(error),
                            Ok(owner) => on_shard(shard, owner, move |owner_shard| async move {
                                write_txn_marker(
                                    &owner_shard,
                                    &topic_partition,
                                    producer_id,
                                    producer_epoch,
                                    coordinator_epoch,
                                    commit,
                                )
                                .await
                            })
                            .await
                            .unwrap_or(Err(ResponseError::NotLeaderOrFollower)),
                        };
                        let error_code = match outcome {
                            Ok(_) => 0,
                            Err(error) => error.code(),
                        };
                        WritableTxnMarkerPartitionResult::default()
                            .with_partition_index(index)
                            .with_error_code(error_code)
                    }
                }))
                .await;
                topics.push(
                    WritableTxnMarkerTopicResult::default()
                        .with_name(topic.name)
                        .with_partitions(partitions),
                );
            }
            WritableTxnMarkerResult::default()
                .with_producer_id(marker.producer_id)
                .with_topics(topics)
        }
    });
    let markers = join_all(markers).await;
    let response = WriteTxnMarkersResponse::default().with_markers(markers);
    Ok(Reply::Body(Box::new(ResponseKind::WriteTxnMarkers(
        response,
    ))))
}
