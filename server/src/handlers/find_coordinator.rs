//! FindCoordinator (v0..=6): every group is coordinated by this broker (one
//! node); finding it creates `__consumer_offsets` on first use, as Kafka
//! does. Transaction coordinators (key type 1) are not available: this
//! broker has no transactions yet.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, FindCoordinatorResponse, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;

use crate::group;
use crate::handlers::Reply;
use crate::shard::Shard;

/// FindCoordinator key types.
const KEY_TYPE_GROUP: i8 = 0;

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
        let outcome = if request.key_type == KEY_TYPE_GROUP {
            group::locate(shard, &key).await.map(|_| ())
        } else {
            Err(ResponseError::CoordinatorNotAvailable)
        };
        let mut coordinator = Coordinator::default();
        coordinator.key = key;
        match outcome {
            Ok(()) => {
                coordinator.node_id = BrokerId(shard.config.node_id);
                coordinator.host = StrBytes::from_string(shard.config.advertised_host.clone());
                coordinator.port = shard.config.advertised_port;
            }
            Err(error) => {
                coordinator.node_id = BrokerId(-1);
                coordinator.host = StrBytes::default();
                coordinator.port = -1;
                coordinator.error_code = error.code();
                coordinator.error_message = Some(StrBytes::from_static_str(
                    if request.key_type == KEY_TYPE_GROUP {
                        "the group coordinator is not available yet"
                    } else {
                        "transactions are not supported by this broker"
                    },
                ));
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
