//! AddOffsetsToTxn (v0..=4; v4 only adds TRANSACTION_ABORTABLE, which is
//! never answered here): a transactional producer will commit a
//! group's offsets in its transaction (send_offsets_to_transaction); the
//! transaction coordinator adds the group's `__consumer_offsets` partition
//! to the transaction, so the markers reach it and the offsets become
//! visible with the commit (group/mod.rs `apply_txn_marker`).

use std::rc::Rc;

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, ResponseKind};

use crate::group;
use crate::handlers::Reply;
use crate::shard::Shard;
use crate::txn::coordinator;
use crate::txn::state::{TxnPartitions, TxnVersion};

/// First version answering PRODUCER_FENCED (older get INVALID_PRODUCER_EPOCH).
const FENCED_SINCE: i16 = 2;

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: AddOffsetsToTxnRequest,
) -> anyhow::Result<Reply> {
    let transactional_id = request.transactional_id.0.to_string();
    let producer_id = request.producer_id.0;
    let producer_epoch = request.producer_epoch;
    let group_id = request.group_id.0.to_string();
    let outcome = match group::coordinator_partition(shard, &group_id).await {
        Ok((offsets_partition, _)) => {
            let mut added = TxnPartitions::new();
            added
                .entry(group::OFFSETS_TOPIC.to_string())
                .or_default()
                .insert(offsets_partition);
            let id = transactional_id.clone();
            coordinator::on_coordinator(shard, &id, move |owner, partition| async move {
                coordinator::add_partitions(
                    &owner,
                    partition,
                    transactional_id,
                    producer_id,
                    producer_epoch,
                    added,
                    TxnVersion::V1,
                )
                .await
                .map_err(|error| error.code(version, FENCED_SINCE))
            })
            .await
            .and_then(|answer| answer)
        }
        Err(error) => Err(error),
    };
    let response = AddOffsetsToTxnResponse::default()
        .with_error_code(outcome.err().map_or(0, |error| error.code()));
    Ok(Reply::Body(Box::new(ResponseKind::AddOffsetsToTxn(
        response,
    ))))
}
