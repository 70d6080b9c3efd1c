//! DescribeTransactions (v0): the state of transactional ids, answered by
//! their coordinator (NOT_COORDINATOR from another broker, as Kafka;
//! TRANSACTIONAL_ID_NOT_FOUND for an id it does not know).

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;

use crate::handlers::Reply;
use crate::shard::Shard;
use crate::txn::coordinator;
use crate::txn::state::TxnMetadata;

pub async fn handle(
    shard: &Rc<Shard>,
    _version: i16,
    request: DescribeTransactionsRequest,
) -> anyhow::Result<Reply> {
    let mut states = Vec::with_capacity(request.transactional_ids.len());
    for transactional_id in request.transactional_ids {
        let id = transactional_id.0.to_string();
        let found: Result<TxnMetadata, ResponseError> =
            coordinator::on_coordinator(shard, &id.clone(), move |_, _| async move {
                coordinator::entry(&id)
                    .map(|entry| entry.metadata)
                    .ok_or(ResponseError::TransactionalIdNotFound)
            })
            .await
            .and_then(|found| found);
        let mut state = TransactionState::default();
        state.transactional_id = transactional_id;
        match found {
            Ok(metadata) => {
                state.transaction_state = StrBytes::from_static_str(metadata.state.name());
                state.transaction_timeout_ms = metadata.timeout_ms;
                state.transaction_start_time_ms = metadata.start_ms;
                state.producer_id = metadata.producer_id.into();
                state.producer_epoch = metadata.producer_epoch;
                state.topics = metadata
                    .partitions
                    .into_iter()
                    .map(|(topic, partitions)| {
                        let mut data = TopicData::default();
                        data.topic = StrBytes::from_string(topic).into();
                        data.partitions = partitions.into_iter().collect();
                        data
                    })
                    .collect();
            }
            Err(error) => {
                state.error_code = error.code();
                state.transaction_state = StrBytes::default();
                state.producer_id = (-1).into();
                state.producer_epoch = -1;
                state.transaction_start_time_ms = -1;
            }
        }
        states.push(state);
    }
    let mut response = DescribeTransactionsResponse::default();
    response.transaction_states = states;
    Ok(Reply::Body(Box::new(ResponseKind::DescribeTransactions(
        response,
    ))))
}
