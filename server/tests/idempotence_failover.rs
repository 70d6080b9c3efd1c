//! An idempotent producer's state outlives the broker that accepted its
//! batches, however much of the log was written after its last batch:
//! - a follower that becomes leader (its leader killed) knows the
//!   producer, because followers feed their producer table with every
//!   batch they replicate (`txn_state::observe_replicated`): a retry of the
//!   producer's last batch is answered with its original offset, a
//!   sequence gap is OUT_OF_ORDER_SEQUENCE_NUMBER;
//! - after a kill -9 of every broker, each open rebuilds the table from its
//!   newest transaction snapshot (which holds the producer table) and the
//!   log after it, and answers the same.
//!
//! Before, a new leader and a broker restarted after a crash rebuilt the
//! table from only the last 16 MiB of the log (`RECOVERY_SCAN_BYTES`): the
//! producer was unknown there, its retry was appended a second time and its
//! gap accepted. Real brokers, a raw idempotent producer (its sequences
//! chosen by the test; no client lets a test choose them) and the
//! librdkafka producer (rdkafka crate) for the 20 MiB written after it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{InitProducerIdRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use sluice_engine::TimestampMs;
use sluice_engine::batch::BatchBuilder;
use sluice_server::admin::client::Connection;
use support::cluster::{Cluster, wait_until};
use support::kafka::{self, Record};

const TOPIC: &str = "idempotent-failover";
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;

/// A batch of `count` records of producer `producer_id`, epoch 0, from
/// sequence `sequence`, stamped now. (Stamped 0, the first batch was 56
/// years older than the topic's 7-day retention: its segment rolled at the
/// next batch and retention deleted it, as Kafka does. A broker killed
/// before its first snapshot past that then rebuilt its producer table
/// without the batch, and answered its retry OUT_OF_ORDER_SEQUENCE_NUMBER:
/// CI failed once so.)
fn idempotent_batch(producer_id: i64, sequence: i32, count: usize) -> Bytes {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        });
    let mut builder = BatchBuilder::new();
    builder.producer(producer_id, 0, sequence);
    for index in 0..count {
        let value = format!("idempotent {sequence} {index}");
        builder.record(None, Some(value.as_bytes()), TimestampMs(now));
    }
    builder.build()
}

/// Produce `records` (one batch) to partition 0 on `node` with acks=all:
/// the error code and base offset.
fn produce(cluster: &Cluster, node: i32, records: Bytes) -> (i16, i64) {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records)),
                ]),
        ]);
    let mut connection = Connection::open(&cluster.broker(node).bootstrap()).expect("connecting");
    let (response, _) = connection.call(&request, 3..=9).expect("Produce");
    let partition = &response.responses[0].partition_responses[0];
    (partition.error_code, partition.base_offset)
}

/// The leader of partition 0 that every running broker agrees on, once
/// it is not `not`.
fn leader_other_than(cluster: &mut Cluster, not: Option<i32>) -> i32 {
    let running = cluster.running();
    let cluster = &*cluster;
    wait_until("an agreed leader", Duration::from_secs(60), || {
        let mut leaders = running
            .iter()
            .map(|node| cluster.partition_leader(*node, TOPIC, 0));
        let first = leaders.next().flatten();
        match first {
            Some(Ok(leader)) if Some(leader) != not && leaders.all(|other| other == first) => {
                Ok(leader)
            }
            other => Err(format!("{other:?}")),
        }
    })
}

/// The log end of partition 0 as `node` reports it (its high watermark).
fn high_watermark(cluster: &Cluster, node: i32) -> i64 {
    kafka::watermarks(&cluster.broker(node).bootstrap(), TOPIC, 0).1
}

/// The retry of the producer's first batch is a duplicate at `original`
/// and changes nothing; a gap in its sequences is refused; its next batch
/// is appended at the log end.
fn assert_producer_known(
    cluster: &Cluster,
    leader: i32,
    producer_id: i64,
    original: i64,
    next_sequence: i32,
    when: &str,
) {
    let end = high_watermark(cluster, leader);
    let (error, offset) = produce(cluster, leader, idempotent_batch(producer_id, 0, 5));
    assert_eq!(
        (error, offset),
        (0, original),
        "{when}: the retry of the producer's first batch is answered with its original offset"
    );
    assert_eq!(
        high_watermark(cluster, leader),
        end,
        "{when}: nothing appended"
    );
    let (error, _) = produce(
        cluster,
        leader,
        idempotent_batch(producer_id, next_sequence + 2, 1),
    );
    assert_eq!(
        error, OUT_OF_ORDER_SEQUENCE_NUMBER,
        "{when}: a sequence gap"
    );
    let (error, offset) = produce(
        cluster,
        leader,
        idempotent_batch(producer_id, next_sequence, 1),
    );
    assert_eq!((error, offset), (0, end), "{when}: the next batch");
}

#[test]
fn a_producer_is_known_after_failover_and_power_loss_however_far_its_last_batch() {
    // Snapshots every half second, so the power loss below finds one.
    let mut cluster = Cluster::start(TOPIC, 3, &["--log-cleaner-interval-ms", "500"]);
    let bootstrap = cluster.bootstrap();
    kafka::create_topic_replicated(&bootstrap, TOPIC, 1, 3, &[("min.insync.replicas", "2")]);
    cluster.wait_for_full_isr(TOPIC, 1, Duration::from_secs(60));
    let leader = leader_other_than(&mut cluster, None);

    let mut connection = Connection::open(&cluster.broker(leader).bootstrap()).expect("connecting");
    let request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id((-1).into())
        .with_producer_epoch(-1);
    let (initialized, _) = connection.call(&request, 0..=4).expect("InitProducerId");
    assert_eq!(initialized.error_code, 0);
    let producer_id = initialized.producer_id.0;
    assert_eq!(initialized.producer_epoch, 0);

    let (error, original) = produce(&cluster, leader, idempotent_batch(producer_id, 0, 5));
    assert_eq!(error, 0);
    assert_eq!(
        produce(&cluster, leader, idempotent_batch(producer_id, 0, 5)),
        (0, original),
        "a retry to the same leader is a duplicate"
    );

    // 20 MiB after it: more than the 16 MiB tail an open used to replay.
    let value = vec![b'x'; 1024];
    let records: Vec<Record> = (0..20 * 1024)
        .map(|_| Record {
            key: None,
            value: Some(value.clone()),
            headers: Vec::new(),
        })
        .collect();
    kafka::produce_all(
        &bootstrap,
        TOPIC,
        Some(0),
        &records,
        &[("acks", "all"), ("linger.ms", "5")],
    );
    cluster.wait_for_full_isr(TOPIC, 1, Duration::from_secs(60));

    cluster.kill9(leader);
    let new_leader = leader_other_than(&mut cluster, Some(leader));
    assert_producer_known(
        &cluster,
        new_leader,
        producer_id,
        original,
        5,
        "after failover",
    );

    // Every broker back, in sync, with a transaction snapshot past the
    // producer's batches; then a power loss of all three.
    cluster.start_again(leader);
    cluster.wait_for_full_isr(TOPIC, 1, Duration::from_secs(60));
    let end = high_watermark(&cluster, new_leader);
    for node in cluster.nodes() {
        let dir = cluster.data_dir(node).join(format!("{TOPIC}-0"));
        wait_until(
            &format!("a transaction snapshot at {end} on node {node}"),
            Duration::from_secs(30),
            || {
                let names: Vec<String> = std::fs::read_dir(&dir)
                    .map_err(|error| error.to_string())?
                    .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
                    .collect();
                names
                    .iter()
                    .filter_map(|name| name.strip_suffix(".txnsnapshot")?.parse::<i64>().ok())
                    .any(|offset| offset >= end)
                    .then_some(())
                    .ok_or(format!("{names:?}"))
            },
        );
    }
    cluster.kill9_all();
    cluster.start_all_again();
    cluster.wait_for_full_isr(TOPIC, 1, Duration::from_secs(60));
    let leader = leader_other_than(&mut cluster, None);
    assert_producer_known(
        &cluster,
        leader,
        producer_id,
        original,
        6,
        "after a power loss",
    );
}
