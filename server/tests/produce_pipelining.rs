//! Produce requests pipelined on one connection (several sent before any
//! answer is read) are appended in the order they were sent and answered
//! in that order, each with its own offsets, and a request of another API
//! queued behind them is handled after them (ListOffsets sees every one of
//! their records).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;

use bytes::Bytes;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ListOffsetsRequest, ListOffsetsResponse, ProduceRequest, ProduceResponse, RequestKind,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use sluice_engine::batch::simple_batch;
use sluice_engine::types::TimestampMs;
use support::Broker;
use support::kafka::create_topic;
use support::wire::{connect, read_frame, request_frame};

const PRODUCE_VERSION: i16 = 9;
/// Not flexible: response header v0.
const LIST_OFFSETS_VERSION: i16 = 5;
const REQUESTS: i32 = 12;
const RECORDS_PER_BATCH: usize = 3;

fn produce(topic: &str, partition: i32, batch: Bytes) -> RequestKind {
    RequestKind::Produce(
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(partition)
                            .with_records(Some(batch)),
                    ]),
            ]),
    )
}

#[test]
fn pipelined_produce_requests_are_appended_and_answered_in_order() {
    let broker = Broker::start("produce_pipelining");
    let topic = "pipelined";
    // Two partitions, so that with two shards one of them is usually on
    // another shard than the connection.
    create_topic(&broker.bootstrap(), topic, 2, &[]);
    let mut stream = connect(broker.address());
    let mut frames = Vec::new();
    for correlation_id in 0..REQUESTS {
        let batch = simple_batch(RECORDS_PER_BATCH, 100, TimestampMs(1_700_000_000_000));
        let body = produce(topic, correlation_id % 2, batch);
        frames.extend(request_frame(
            ApiKey::Produce,
            PRODUCE_VERSION,
            correlation_id,
            &body,
        ));
    }
    let list_offsets = RequestKind::ListOffsets(
        ListOffsetsRequest::default()
            .with_replica_id((-1).into())
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                    .with_partitions(vec![
                        ListOffsetsPartition::default()
                            .with_partition_index(0)
                            .with_timestamp(-1),
                    ]),
            ]),
    );
    frames.extend(request_frame(
        ApiKey::ListOffsets,
        LIST_OFFSETS_VERSION,
        REQUESTS,
        &list_offsets,
    ));
    // Everything in one write: the broker reads ahead while earlier
    // requests wait for their fsync.
    stream.write_all(&frames).unwrap();

    let mut next_offset = [0_i64; 2];
    for correlation_id in 0..REQUESTS {
        let mut frame = read_frame(&mut stream).unwrap();
        let header = ResponseHeader::decode(&mut frame, 1).unwrap();
        assert_eq!(
            header.correlation_id, correlation_id,
            "answers come in request order"
        );
        let response = ProduceResponse::decode(&mut frame, PRODUCE_VERSION).unwrap();
        let partition = &response.responses[0].partition_responses[0];
        assert_eq!(partition.error_code, 0, "{partition:?}");
        let index = usize::try_from(partition.index).unwrap();
        assert_eq!(partition.index, correlation_id % 2);
        assert_eq!(
            partition.base_offset, next_offset[index],
            "request {correlation_id} was appended after the earlier ones"
        );
        next_offset[index] += RECORDS_PER_BATCH as i64;
    }
    let mut frame = read_frame(&mut stream).unwrap();
    let header = ResponseHeader::decode(&mut frame, 0).unwrap();
    assert_eq!(
        header.correlation_id, REQUESTS,
        "the ListOffsets answer comes last"
    );
    let response = ListOffsetsResponse::decode(&mut frame, LIST_OFFSETS_VERSION).unwrap();
    let partition = &response.topics[0].partitions[0];
    assert_eq!(partition.error_code, 0, "{partition:?}");
    assert_eq!(
        partition.offset, next_offset[0],
        "ListOffsets, sent after the produce requests, sees all of their records"
    );
}
