//! AddPartitionsToTxn (v0..=3): a transactional producer names the
//! partitions it is about to write in its transaction; the transaction
//! coordinator (txn/coordinator.rs) records them (state Ongoing, written to
//! `__transaction_state`) before answering, so it knows where to write the
//! markers. One error for every partition, as Kafka: an unknown partition
//! fails the request (UNKNOWN_TOPIC_OR_PARTITION for it,
//! OPERATION_NOT_ATTEMPTED for the others). v4+ is the broker-to-broker
//! form (KIP-890), not served.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ResponseKind,
};

use crate::handlers::Reply;
use crate::shard::Shard;
use crate::txn::coordinator;
use crate::txn::state::TxnPartitions;

/// First version answering PRODUCER_FENCED (older get INVALID_PRODUCER_EPOCH).
const FENCED_SINCE: i16 = 2;

/// Producers do not write the coordinators' topics.
fn is_internal(topic: &str) -> bool {
    topic == crate::group::OFFSETS_TOPIC || topic == crate::txn::TRANSACTION_STATE_TOPIC
}

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: AddPartitionsToTxnRequest,
) -> anyhow::Result<Reply> {
    let transactional_id = request.v3_and_below_transactional_id.0.to_string();
    let producer_id = request.v3_and_below_producer_id.0;
    let producer_epoch = request.v3_and_below_producer_epoch;
    let view = shard.metadata.snapshot();
    let mut added = TxnPartitions::new();
    let mut unknown = Vec::new();
    for topic in &request.v3_and_below_topics {
        let name = topic.name.0.to_string();
        let known = view.topics.get(&name);
        for partition in &topic.partitions {
            let exists = known.is_some_and(|found| {
                usize::try_from(*partition).is_ok_and(|index| index < found.partitions.len())
            });
            if exists && !is_internal(&name) {
                added.entry(name.clone()).or_default().insert(*partition);
            } else {
                unknown.push((name.clone(), *partition));
            }
        }
    }
    let error: Option<ResponseError> = if !unknown.is_empty() {
        None
    } else {
        let id = transactional_id.clone();
        coordinator::on_coordinator(shard, &id, move |owner, partition| async move {
            coordinator::add_partitions(
                &owner,
                partition,
                transactional_id,
                producer_id,
                producer_epoch,
                added,
            )
            .await
            .map_err(|error| error.code(version, FENCED_SINCE))
        })
        .await
        .and_then(|answer| answer)
        .err()
    };
    let results = request
        .v3_and_below_topics
        .iter()
        .map(|topic| {
            let name = topic.name.0.to_string();
            let mut out = AddPartitionsToTxnTopicResult::default();
            out.name = topic.name.clone();
            out.results_by_partition = topic
                .partitions
                .iter()
                .map(|partition| {
                    let code = if unknown.is_empty() {
                        error.map_or(0, |error| error.code())
                    } else if unknown.contains(&(name.clone(), *partition)) {
                        ResponseError::UnknownTopicOrPartition.code()
                    } else {
                        ResponseError::OperationNotAttempted.code()
                    };
                    let mut result = AddPartitionsToTxnPartitionResult::default();
                    result.partition_index = *partition;
                    result.partition_error_code = code;
                    result
                })
                .collect();
            out
        })
        .collect();
    let mut response = AddPartitionsToTxnResponse::default();
    response.results_by_topic_v3_and_below = results;
    Ok(Reply::Body(Box::new(ResponseKind::AddPartitionsToTxn(
        response,
    ))))
}
