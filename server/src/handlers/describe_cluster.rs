//! DescribeCluster: the cluster id, this broker (the only one, and so the
//! controller too) and, when asked, the cluster operations a client may
//! perform (all of them: Sluice has no authorizer).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;

use crate::handlers::Reply;
use crate::shard::Shard;

/// Kafka's `EndpointType` codes (DescribeCluster v1+).
const ENDPOINT_TYPE_BROKER: i8 = 1;

/// Kafka's `AclOperation` codes that apply to the CLUSTER resource.
const CLUSTER_OPERATIONS: &[i32] = &[
    5,  // CREATE
    7,  // ALTER
    8,  // DESCRIBE
    9,  // CLUSTER_ACTION
    10, // DESCRIBE_CONFIGS
    11, // ALTER_CONFIGS
    12, // IDEMPOTENT_WRITE
];

/// "Authorized operations not requested" in Kafka's responses.
const OPERATIONS_NOT_REQUESTED: i32 = i32::MIN;

pub fn handle(shard: &Shard, version: i16, request: &DescribeClusterRequest) -> Reply {
    let config = &shard.config;
    let node_id = BrokerId(config.node_id);
    let mut response = DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(
            shard.metadata.snapshot().cluster_id.clone(),
        ))
        .with_controller_id(node_id);
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
    let broker = DescribeClusterBroker::default()
        .with_broker_id(node_id)
        .with_host(StrBytes::from_string(config.advertised_host.clone()))
        .with_port(config.advertised_port)
        .with_rack(None);
    let operations = if request.include_cluster_authorized_operations {
        CLUSTER_OPERATIONS
            .iter()
            .fold(0, |bits, operation| bits | (1 << operation))
    } else {
        OPERATIONS_NOT_REQUESTED
    };
    let response = response
        .with_brokers(vec![broker])
        .with_cluster_authorized_operations(operations);
    Reply::Body(Box::new(ResponseKind::DescribeCluster(response)))
}
