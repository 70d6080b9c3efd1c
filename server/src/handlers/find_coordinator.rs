//! FindCoordinator (v0..=6): every group is coordinated by this broker (one
//! node); finding it creates `__consumer_offsets` on first use, as Kafka
//! does. Transaction coordinators (key type 1) are refused with the code
//! InitProducerId gives a transactional id
//! ([`init_producer_id::TRANSACTIONS_UNSUPPORTED`]): librdkafka
//! (`rd_kafka_txn_handle_FindCoordinator`) and the Java client
//! (`TransactionManager.FindCoordinatorHandler`) treat it as fatal, so
//! `init_transactions()` fails at once. COORDINATOR_NOT_AVAILABLE, which this
//! handler used to answer, is retriable: clients looked for a coordinator
//! until their timeout (60 s for Java's max.block.ms). Any other key type is
//! INVALID_REQUEST.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, FindCoordinatorResponse, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;

use crate::group;
use crate::handlers::Reply;
use crate::handlers::init_producer_id::TRANSACTIONS_UNSUPPORTED;
use crate::shard::Shard;

/// FindCoordinator key types.
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// What a refused transaction coordinator lookup says; clients show it.
const TRANSACTIONS_REFUSAL: &str =
    "transactions are not supported by this broker yet: unset transactional.id";

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: FindCoordinatorRequest,
) -> anyhow::Result<Reply> {
    let keys = if version >= 4 {
        request.coordinator_keys
    } else {
        vec![request.key]
    };
    let mut coordinators = Vec::with_capacity(keys.len());
    for key in keys {
        let outcome = match request.key_type {
            KEY_TYPE_GROUP => group::locate(shard, &key)
                .await
                .map_err(|error| (error, "the group coordinator is not available yet")),
            KEY_TYPE_TRANSACTION => Err((TRANSACTIONS_UNSUPPORTED, TRANSACTIONS_REFUSAL)),
            _ => Err((
                ResponseError::InvalidRequest,
                "unknown coordinator key type",
            )),
        };
        let mut coordinator = Coordinator::default();
        coordinator.key = key;
        match outcome {
            Ok(_) => {
                coordinator.node_id = BrokerId(shard.config.node_id);
                coordinator.host = StrBytes::from_string(shard.config.advertised_host.clone());
                coordinator.port = shard.config.advertised_port;
            }
            Err((error, message)) => {
                coordinator.node_id = BrokerId(-1);
                coordinator.host = StrBytes::default();
                coordinator.port = -1;
                coordinator.error_code = error.code();
                coordinator.error_message = Some(StrBytes::from_static_str(message));
            }
        }
        coordinators.push(coordinator);
    }
    let mut response = FindCoordinatorResponse::default();
    if version < 4 {
        if let Some(only) = coordinators.pop() {
            response.error_code = only.error_code;
            response.error_message = only.error_message;
            response.node_id = only.node_id;
            response.host = only.host;
            response.port = only.port;
        }
    } else {
        response.coordinators = coordinators;
    }
    Ok(Reply::Body(Box::new(ResponseKind::FindCoordinator(
        response,
    ))))
}
