//! FindCoordinator (v0..=6): a group's coordinator is the broker leading
//! its `__consumer_offsets` partition (group/mod.rs), named with its host
//! and port from the published view; COORDINATOR_NOT_AVAILABLE (retriable)
//! while that partition has no leader. Finding it creates
//! `__consumer_offsets` on first use, as Kafka does. A transactional id's
//! coordinator (key type 1) is the broker leading its `__transaction_state`
//! partition (txn/coordinator.rs), found the same way; that topic too is
//! created on first use. Any other key type is INVALID_REQUEST.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, FindCoordinatorResponse, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;

use crate::group;
use crate::handlers::Reply;
use crate::metadata::{BrokerInfo, ClusterMetadata};
use crate::shard::Shard;

/// FindCoordinator key types.
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// `listener`: the client's listener; the coordinator's endpoint on it.
pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: FindCoordinatorRequest,
    listener: &str,
) -> anyhow::Result<Reply> {
    let keys = if version >= 4 {
        request.coordinator_keys
    } else {
        vec![request.key]
    };
    let mut coordinators = Vec::with_capacity(keys.len());
    for key in keys {
        let outcome = match request.key_type {
            KEY_TYPE_GROUP => match group::coordinator_partition(shard, &key).await {
                Ok((_, state)) => coordinator_broker(&shard.metadata.snapshot(), state.leader)
                    .ok_or((
                        ResponseError::CoordinatorNotAvailable,
                        "the group coordinator is not available yet",
                    )),
                Err(error) => Err((error, "the group coordinator is not available yet")),
            },
            KEY_TYPE_TRANSACTION => {
                match crate::txn::coordinator::coordinator_partition(shard, &key).await {
                    Ok((_, state)) => coordinator_broker(&shard.metadata.snapshot(), state.leader)
                        .ok_or((
                            ResponseError::CoordinatorNotAvailable,
                            "the transaction coordinator is not available yet",
                        )),
                    Err(error) => Err((error, "the transaction coordinator is not available yet")),
                }
            }
            _ => Err((
                ResponseError::InvalidRequest,
                "unknown coordinator key type",
            )),
        };
        let mut coordinator = Coordinator::default();
        coordinator.key = key;
        match outcome {
            Ok(broker) => {
                let (host, port) = shard.metadata.snapshot().endpoint(&broker, listener);
                coordinator.node_id = BrokerId(broker.id);
                coordinator.host = StrBytes::from_string(host);
                coordinator.port = port;
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

/// The broker leading the coordinating partition, when it is live.
fn coordinator_broker(view: &ClusterMetadata, leader: Option<i32>) -> Option<BrokerInfo> {
    leader
        .and_then(|leader| view.brokers.get(&leader))
        .filter(|broker| broker.is_live())
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(id: i32, fenced: bool) -> BrokerInfo {
        BrokerInfo {
            id,
            host: format!("host{id}"),
            port: 9000 + id,
            rack: None,
            fenced,
            in_controlled_shutdown: false,
            replication_address: None,
        }
    }

    #[test]
    fn the_coordinator_is_the_live_leader_of_the_groups_partition() {
        let view = ClusterMetadata {
            brokers: [(1, broker(1, false)), (2, broker(2, true))].into(),
            ..ClusterMetadata::default()
        };
        assert_eq!(coordinator_broker(&view, Some(1)), Some(broker(1, false)));
        assert_eq!(coordinator_broker(&view, Some(2)), None, "fenced");
        assert_eq!(coordinator_broker(&view, Some(3)), None, "unknown");
        assert_eq!(coordinator_broker(&view, None), None, "no leader");
    }
}
