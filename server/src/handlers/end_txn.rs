//! EndTxn (v0..=4): commit or abort the producer's transaction. Answered
//! once PrepareCommit / PrepareAbort is committed to `__transaction_state`
//! (the outcome is decided then, as in Kafka); the coordinator writes the
//! markers and the completion afterwards (txn/coordinator.rs). An EndTxn
//! while the markers of the previous one are still being written is
//! CONCURRENT_TRANSACTIONS (clients retry it). v5 (KIP-890's epoch bump
//! per transaction) is not served.

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
    let outcome = coordinator::on_coordinator(shard, &id, move |owner, partition| async move {
        coordinator::end_txn(
            &owner,
            partition,
            transactional_id,
            producer_id,
            producer_epoch,
            commit,
        )
        .await
        .map_err(|error| error.code(version, FENCED_SINCE))
    })
    .await
    .and_then(|answer| answer);
    let response =
        EndTxnResponse::default().with_error_code(outcome.err().map_or(0, |error| error.code()));
    Ok(Reply::Body(Box::new(ResponseKind::EndTxn(response))))
}
