//! ListTransactions (v0..=1): the transactional ids this broker
//! coordinates (every shard's loaded `__transaction_state` partitions),
//! filtered by state names (unknown ones are echoed back in
//! `unknown_state_filters`), producer ids, and (v1) a minimum running time
//! of the ongoing transaction. Admin clients ask every broker.

use std::collections::BTreeSet;
use std::rc::Rc;

use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{ListTransactionsRequest, ListTransactionsResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use crate::group::wall_ms;
use crate::handlers::Reply;
use crate::shard::Shard;
use crate::txn::coordinator;
use crate::txn::state::{TxnMetadata, TxnState};

pub async fn handle(
    shard: &Rc<Shard>,
    _version: i16,
    request: ListTransactionsRequest,
) -> anyhow::Result<Reply> {
    let mut states = BTreeSet::new();
    let mut unknown = Vec::new();
    for name in &request.state_filters {
        match TxnState::from_name(name.as_str()) {
            Some(state) => {
                states.insert(state.code());
            }
            None => unknown.push(name.clone()),
        }
    }
    let producer_ids: BTreeSet<i64> = request.producer_id_filters.iter().map(|id| id.0).collect();
    let duration_ms = request.duration_filter;
    let mut found: Vec<TxnMetadata> = Vec::new();
    for owner in coordinator::shard_ids(shard) {
        if let Ok(entries) = shard
            .shards
            .call(owner, |_| async move {
                coordinator::entries()
                    .into_iter()
                    .map(|entry| entry.metadata)
                    .collect::<Vec<_>>()
            })
            .await
        {
            found.extend(entries);
        }
    }
    let now = wall_ms();
    let listed = found
        .into_iter()
        .filter(|metadata| states.is_empty() || states.contains(&metadata.state.code()))
        .filter(|metadata| producer_ids.is_empty() || producer_ids.contains(&metadata.producer_id))
        .filter(|metadata| {
            duration_ms < 0
                || (metadata.start_ms >= 0 && now.saturating_sub(metadata.start_ms) >= duration_ms)
        })
        .map(|metadata| {
            let mut state = TransactionState::default();
            state.transactional_id = StrBytes::from_string(metadata.transactional_id).into();
            state.producer_id = metadata.producer_id.into();
            state.transaction_state = StrBytes::from_static_str(metadata.state.name());
            state
        })
        .collect();
    let mut response = ListTransactionsResponse::default();
    response.unknown_state_filters = unknown;
    response.transaction_states = listed;
    Ok(Reply::Body(Box::new(ResponseKind::ListTransactions(
        response,
    ))))
}
