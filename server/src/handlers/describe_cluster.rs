//! DescribeCluster: the cluster id, the live brokers and the active
//! controller of the published view (fenced brokers are not listed, as
//! Kafka) and, when asked, the cluster operations a client may
//! perform: from the authorizer, shown only to a principal that may
//! DESCRIBE the cluster, as Kafka (every operation when it is off).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;

use crate::auth::acl::{AclOperation, CLUSTER_NAME, ResourceType};
use crate::auth::authorizer::Access;
use crate::handlers::Reply;
use crate::shard::Shard;

/// Kafka's `EndpointType` codes (DescribeCluster v1+).
const ENDPOINT_TYPE_BROKER: i8 = 1;

/// "Authorized operations not requested" in Kafka's responses.
const OPERATIONS_NOT_REQUESTED: i32 = i32::MIN;

/// `listener`: the client's listener; brokers are listed with their
/// endpoints on it.
pub fn handle(
    shard: &Shard,
    version: i16,
    request: &DescribeClusterRequest,
    listener: &str,
    access: &Access<'_>,
) -> Reply {
    let view = shard.metadata.snapshot();
    let mut response = DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(view.cluster_id.clone()))
        .with_controller_id(BrokerId(view.controller_id.unwrap_or(-1)));
    if version >= 1 {
        response = response.with_endpoint_type(request.endpoint_type);
    }
    if version >= 1 && request.endpoint_type != ENDPOINT_TYPE_BROKER {
        let response = response
            .with_error_code(ResponseError::MismatchedEndpointType.code())
            .with_error_message(Some(StrBytes::from_string(format!(
                "The request was sent to an endpoint of type BROKER, but it asked for endpoint \
                 type {}.",
                request.endpoint_type
            ))));
        return Reply::Body(Box::new(ResponseKind::DescribeCluster(response)));
    }
    // v2 may ask for fenced brokers too, flagged (KIP-1073).
    let include_fenced = version >= 2 && request.include_fenced_brokers;
    let brokers = view
        .brokers
        .values()
        .filter(|broker| include_fenced || broker.is_live())
        .map(|broker| {
            let (host, port) = view.endpoint(broker, listener);
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(broker.id))
                .with_host(StrBytes::from_string(host))
                .with_port(port)
                .with_rack(broker.rack.clone().map(StrBytes::from_string))
                .with_is_fenced(version >= 2 && !broker.is_live())
        })
        .collect();
    let operations = if request.include_cluster_authorized_operations {
        if access.allows_cluster(AclOperation::Describe) {
            access.authorized_operations(ResourceType::Cluster, CLUSTER_NAME)
        } else {
            0
        }
    } else {
        OPERATIONS_NOT_REQUESTED
    };
    let response = response
        .with_brokers(brokers)
        .with_cluster_authorized_operations(operations);
    Reply::Body(Box::new(ResponseKind::DescribeCluster(response)))
}
