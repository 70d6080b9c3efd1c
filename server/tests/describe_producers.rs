//! DescribeProducers (API 61) against a real `sluice` process: an
//! idempotent producer's id, epoch and last sequence on the partition it
//! wrote, no open transaction; an unknown partition is
//! UNKNOWN_TOPIC_OR_PARTITION; ApiVersions advertises the API; after a
//! clean restart the producer comes back from the stop's transaction
//! snapshot.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::TcpStream;
use std::time::Duration;

use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, DescribeProducersRequest,
    DescribeProducersResponse, RequestKind, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use rdkafka::producer::{BaseRecord, Producer};
use support::Broker;
use support::kafka::{create_topic, producer};
use support::wire::call;

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

fn describe(
    stream: &mut TcpStream,
    topic: &str,
    partitions: Vec<i32>,
) -> DescribeProducersResponse {
    let request = DescribeProducersRequest::default().with_topics(vec![
        TopicRequest::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_indexes(partitions),
    ]);
    let mut body = call(
        stream,
        ApiKey::DescribeProducers,
        0,
        RequestKind::DescribeProducers(request),
    );
    DescribeProducersResponse::decode(&mut body, 0).expect("a DescribeProducers response")
}

#[test]
fn an_idempotent_producer_is_described_with_its_last_sequence() {
    let mut broker = Broker::start_with_args(
        "describe-producers",
        &[
            "--log-level",
            "info,sluice_server::shard::producer_state=debug",
        ],
    );
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "described", 2, &[]);
    let (producer, reports) = producer(&bootstrap, &[("enable.idempotence", "true")]);
    for index in 0..5_usize {
        let record = BaseRecord::with_opaque_to("described", Box::new(index))
            .partition(0)
            .key("k")
            .payload("v");
        producer.send(record).map_err(|(error, _)| error).unwrap();
        // One batch each: the last sequence is then 4.
        producer.flush(Duration::from_secs(10)).unwrap();
    }
    assert!(
        reports
            .0
            .lock()
            .unwrap()
            .iter()
            .all(|(_, outcome)| outcome.is_ok())
    );

    let mut stream = TcpStream::connect(broker.address()).unwrap();
    let versions = call(
        &mut stream,
        ApiKey::ApiVersions,
        3,
        RequestKind::ApiVersions(ApiVersionsRequest::default()),
    );
    let versions = ApiVersionsResponse::decode(&mut versions.clone(), 3).unwrap();
    assert!(
        versions
            .api_keys
            .iter()
            .any(|key| key.api_key == ApiKey::DescribeProducers as i16),
        "ApiVersions lists DescribeProducers"
    );

    let response = describe(&mut stream, "described", vec![0, 1, 7]);
    let partitions = &response.topics[0].partitions;
    assert_eq!(partitions.len(), 3);
    let written = &partitions[0];
    assert_eq!(written.error_code, 0);
    assert_eq!(written.active_producers.len(), 1, "{written:?}");
    let described = &written.active_producers[0];
    assert!(described.producer_id.0 >= 0);
    assert_eq!(described.producer_epoch, 0);
    assert_eq!(described.last_sequence, 4);
    assert_eq!(described.current_txn_start_offset, -1);
    assert_eq!(partitions[1].error_code, 0);
    assert!(partitions[1].active_producers.is_empty());
    assert_eq!(partitions[2].error_code, UNKNOWN_TOPIC_OR_PARTITION);

    // A clean restart loads the producer from the stop's transaction
    // snapshot at the log end, reading nothing of the log, and describes
    // it the same.
    drop(stream);
    broker.restart();
    assert!(
        broker
            .stderr_tail()
            .contains("described-0 source=\"snapshot\" from=5 end=5 replayed=0 producers=1"),
        "the restart did not use the snapshot\n{}",
        broker.stderr_tail()
    );
    let mut stream = TcpStream::connect(broker.address()).unwrap();
    let response = describe(&mut stream, "described", vec![0]);
    let written = &response.topics[0].partitions[0];
    assert_eq!(written.active_producers.len(), 1, "{written:?}");
    assert_eq!(
        written.active_producers[0].producer_id,
        described.producer_id
    );
    assert_eq!(written.active_producers[0].last_sequence, 4);
}
