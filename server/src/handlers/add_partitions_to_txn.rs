//! AddPartitionsToTxn (v0..=3): a transactional producer names the
//! partitions it is about to write in its transaction; the transaction
//! coordinator (txn/coordinator.rs) records them (state Ongoing, written to
//! `__transaction_state`) before answering, so it knows where to write the
//! markers. One error for every partition, as Kafka: an unknown partition
//! fails the request (UNKNOWN_TOPIC_OR_PARTITION for it,
//! OPERATION_NOT_ATTEMPTED for the others).
//!
//! v4+ is the broker-to-broker form (KIP-890, sent by txn/membership.rs):
//! several transactions per request, each either verified (VerifyOnly:
//! are these partitions in the producer's ongoing transaction?) or added on
//! the client's behalf (transaction protocol v2), answered per transaction
//! and partition. It may name `__consumer_offsets` (a group coordinator
//! adding a transactional offset commit's partition).

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ResponseKind,
};

use crate::handlers::Reply;
use crate::shard::Shard;
use crate::txn::coordinator;
use crate::txn::state::{TxnPartitions, TxnVersion};

/// First version answering PRODUCER_FENCED (older get INVALID_PRODUCER_EPOCH).
const FENCED_SINCE: i16 = 2;

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: AddPartitionsToTxnRequest,
) -> anyhow::Result<Reply> {
    let mut response = AddPartitionsToTxnResponse::default();
    if version >= 4 {
        let mut results = Vec::with_capacity(request.transactions.len());
        for transaction in request.transactions {
            let how = if transaction.verify_only {
                How::Verify
            } else {
                How::Add(TxnVersion::V2)
            };
            let topic_results = one_transaction(
                shard,
                version,
                transaction.transactional_id.0.to_string(),
                (transaction.producer_id.0, transaction.producer_epoch),
                &transaction.topics,
                how,
            )
            .await;
            let mut result = AddPartitionsToTxnResult::default();
            result.transactional_id = transaction.transactional_id;
            result.topic_results = topic_results;
            results.push(result);
        }
        response.results_by_transaction = results;
    } else {
        response.results_by_topic_v3_and_below = one_transaction(
            shard,
            version,
            request.v3_and_below_transactional_id.0.to_string(),
            (
                request.v3_and_below_producer_id.0,
                request.v3_and_below_producer_epoch,
            ),
            &request.v3_and_below_topics,
            How::Add(TxnVersion::V1),
        )
        .await;
    }
    Ok(Reply::Body(Box::new(ResponseKind::AddPartitionsToTxn(
        response,
    ))))
}

/// What is asked of the coordinator for one transaction.
#[derive(Clone, Copy)]
enum How {
    Add(TxnVersion),
    Verify,
}

/// Add or verify `topics` for one transaction; its per-partition results.
async fn one_transaction(
    shard: &Rc<Shard>,
    version: i16,
    transactional_id: String,
    (producer_id, producer_epoch): (i64, i16),
    topics: &[AddPartitionsToTxnTopic],
    how: How,
) -> Vec<AddPartitionsToTxnTopicResult> {
    // Clients may not name the internal topics; brokers (v4+) may name
    // `__consumer_offsets` for a transactional offset commit.
    let allowed = |topic: &str| {
        topic != crate::txn::TRANSACTION_STATE_TOPIC
            && (version >= 4 || topic != crate::group::OFFSETS_TOPIC)
    };
    let view = shard.metadata.snapshot();
    let mut wanted = TxnPartitions::new();
    let mut unknown = Vec::new();
    for topic in topics {
        let name = topic.name.0.to_string();
        let known = view.topics.get(&name);
        for partition in &topic.partitions {
            let exists = known.is_some_and(|found| {
                usize::try_from(*partition).is_ok_and(|index| index < found.partitions.len())
            });
            if exists && allowed(&name) {
                wanted.entry(name.clone()).or_default().insert(*partition);
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
            let outcome = match how {
                How::Verify => coordinator::verify_partitions(
                    &transactional_id,
                    producer_id,
                    producer_epoch,
                    &wanted,
                ),
                How::Add(client_version) => {
                    coordinator::add_partitions(
                        &owner,
                        partition,
                        transactional_id,
                        producer_id,
                        producer_epoch,
                        wanted,
                        client_version,
                    )
                    .await
                }
            };
            outcome.map_err(|error| error.code(version, FENCED_SINCE))
        })
        .await
        .and_then(|answer| answer)
        .err()
    };
    topics
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
        .collect()
}
