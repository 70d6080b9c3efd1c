//! EndTxn (v0..=5): commit or abort the producer's transaction. Answered
//! once PrepareCommit / PrepareAbort is committed to `__transaction_state`
//! (the outcome is decided then, as in Kafka); the coordinator writes the
//! markers and the completion afterwards (txn/coordinator.rs). An EndTxn
//! while the markers of the previous one are still being written is
//! CONCURRENT_TRANSACTIONS (clients retry it).
//!
//! v5 is transaction protocol v2 (KIP-890): the coordinator bumps the
//! producer epoch with every EndTxn and the answer carries the producer id
//! and epoch the client continues with (txn/state.rs `prepare_end_v2`).

use std::rc::Rc;

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse, ResponseKind};

use crate::handlers::Reply;
use crate::shard::Shard;
use crate::txn::coordinator;

/// First version answering PRODUCER_FENCED (older get INVALID_PRODUCER_EPOCH).
const FENCED_SINCE: i16 = 2;

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: EndTxnRequest,
) -> anyhow::Result<Reply> {
    let transactional_id = request.transactional_id.0.to_string();
    let producer_id = request.producer_id.0;
    let producer_epoch = request.producer_epoch;
    let commit = request.committed;
    let id = transactional_id.clone();
    // v5: the producer id and epoch to continue with.
    let outcome = coordinator::on_coordinator(shard, &id, move |owner, partition| async move {
        let ended = if version >= 5 {
            coordinator::end_txn_v2(
                &owner,
                partition,
                transactional_id,
                producer_id,
                producer_epoch,
                commit,
            )
            .await
            .map(Some)
        } else {
            coordinator::end_txn(
                &owner,
                partition,
                transactional_id,
                producer_id,
                producer_epoch,
                commit,
            )
            .await
            .map(|()| None)
        };
        ended.map_err(|error| error.code(version, FENCED_SINCE))
    })
    .await
    .and_then(|answer| answer);
    let response = match outcome {
        Ok(Some((producer_id, producer_epoch))) => EndTxnResponse::default()
            .with_producer_id(producer_id.into())
            .with_producer_epoch(producer_epoch),
        Ok(None) => EndTxnResponse::default(),
        Err(error) => EndTxnResponse::default()
            .with_error_code(error.code())
            .with_producer_id((-1).into())
            .with_producer_epoch(-1),
    };
    Ok(Reply::Body(Box::new(ResponseKind::EndTxn(response))))
}
