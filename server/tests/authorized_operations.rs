//! With no authorizer configured, DescribeCluster and Metadata asked for
//! authorized operations answer every operation of the resource, as Kafka
//! does (librdkafka's admin test 0081 checks this), and the "not asked"
//! value (i32::MIN) when not asked.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, DescribeClusterRequest, DescribeClusterResponse, MetadataRequest, MetadataResponse,
    RequestKind, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use support::Broker;
use support::{kafka, wire};

/// Kafka's AclOperation codes.
const READ: i32 = 3;
const WRITE: i32 = 4;
const CREATE: i32 = 5;
const DELETE: i32 = 6;
const ALTER: i32 = 7;
const DESCRIBE: i32 = 8;
const CLUSTER_ACTION: i32 = 9;
const DESCRIBE_CONFIGS: i32 = 10;
const ALTER_CONFIGS: i32 = 11;
const IDEMPOTENT_WRITE: i32 = 12;

fn bits(operations: &[i32]) -> i32 {
    operations
        .iter()
        .fold(0, |bits, operation| bits | (1 << operation))
}

#[test]
fn without_an_authorizer_every_operation_is_authorized() {
    let broker = Broker::start("authorized-operations");
    kafka::create_topic(&broker.bootstrap(), "operations", 1, &[]);
    let mut stream = wire::connect(broker.address());
    let cluster_operations = bits(&[
        CREATE,
        CLUSTER_ACTION,
        DESCRIBE_CONFIGS,
        ALTER_CONFIGS,
        IDEMPOTENT_WRITE,
        ALTER,
        DESCRIBE,
    ]);

    for asked in [true, false] {
        let request =
            DescribeClusterRequest::default().with_include_cluster_authorized_operations(asked);
        let mut body = wire::call(
            &mut stream,
            ApiKey::DescribeCluster,
            0,
            RequestKind::DescribeCluster(request),
        );
        let response = DescribeClusterResponse::decode(&mut body, 0).unwrap();
        let expected = if asked { cluster_operations } else { i32::MIN };
        assert_eq!(
            response.cluster_authorized_operations, expected,
            "DescribeCluster, asked: {asked}"
        );
    }

    let request = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
            TopicName(StrBytes::from_static_str("operations")),
        ))]))
        .with_include_cluster_authorized_operations(true)
        .with_include_topic_authorized_operations(true);
    let mut body = wire::call(
        &mut stream,
        ApiKey::Metadata,
        10,
        RequestKind::Metadata(request),
    );
    let response = MetadataResponse::decode(&mut body, 10).unwrap();
    assert_eq!(response.cluster_authorized_operations, cluster_operations);
    assert_eq!(response.topics.len(), 1);
    assert_eq!(
        response.topics[0].topic_authorized_operations,
        bits(&[
            READ,
            WRITE,
            CREATE,
            DESCRIBE,
            DELETE,
            ALTER,
            DESCRIBE_CONFIGS,
            ALTER_CONFIGS
        ])
    );
}
