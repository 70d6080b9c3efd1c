//! Interop with the rdkafka crate (librdkafka 2.12, built from source):
//! a producer and a consumer by manual partition assignment (consumer
//! groups do not exist yet), records with keys, headers, null values.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;

use rdkafka::producer::Producer;
use rdkafka::types::RDKafkaErrorCode;
use support::Broker;
use support::kafka::{self, Record};

const RECORD_COUNT: usize = 3000;
const PARTITION_COUNT: i32 = 3;

/// Records with 50 distinct keys, values of 0 to 2 KiB, one to three
/// headers (one with a null value), and every hundredth value null.
fn records(count: usize, tag: &str) -> Vec<Record> {
    (0..count)
        .map(|index| {
            let value = (index % 100 != 99).then(|| {
                let size = (index * 37) % 2048;
                let mut value = format!("{tag}-{index}-").into_bytes();
                value.extend((0..size).map(|position| (index + position) as u8));
                value
            });
            let mut headers = vec![("index".to_string(), Some(index.to_string().into_bytes()))];
            if index % 3 == 0 {
                headers.push(("null-header".to_string(), None));
            }
            if index % 5 == 0 {
                headers.push(("empty-header".to_string(), Some(Vec::new())));
            }
            Record {
                key: Some(format!("key-{}", index % 50).into_bytes()),
                value,
                headers,
            }
        })
        .collect()
}

/// Read every partition back and check that each record is there exactly
/// once, at the offset its delivery report gave, identical, and that each
/// partition holds exactly the records delivered to it, in send order.
fn assert_read_back(bootstrap: &str, topic: &str, sent: &[Record], placed: &[(i32, i64)]) {
    let mut expected: BTreeMap<i32, Vec<(i64, &Record)>> = BTreeMap::new();
    for (record, (partition, offset)) in sent.iter().zip(placed) {
        expected
            .entry(*partition)
            .or_default()
            .push((*offset, record));
    }
    for (partition, records) in &expected {
        let offsets: Vec<i64> = records.iter().map(|(offset, _)| *offset).collect();
        assert!(
            offsets.windows(2).all(|pair| pair[0] < pair[1]),
            "partition {partition}: offsets follow send order"
        );
        let consumed = kafka::consume_all(bootstrap, topic, *partition);
        assert_eq!(
            consumed.len(),
            records.len(),
            "partition {partition}: {} records read, {} delivered",
            consumed.len(),
            records.len()
        );
        for (got, (offset, record)) in consumed.iter().zip(records) {
            assert_eq!(got.offset, *offset, "partition {partition}: offset");
            assert_eq!(
                &got.record, *record,
                "partition {partition} offset {offset}"
            );
        }
    }
}

#[test]
fn rdkafka_round_trips_three_thousand_keyed_records_with_headers() {
    let broker = Broker::start_with_args(
        "rdkafka_round_trip",
        &["--default-partitions", &PARTITION_COUNT.to_string()],
    );
    let bootstrap = broker.bootstrap();
    let topic = "rdkafka-round-trip";
    let sent = records(RECORD_COUNT, "plain");
    let placed = kafka::produce_all(&bootstrap, topic, None, &sent, &[("acks", "all")]);
    let partitions: std::collections::BTreeSet<i32> =
        placed.iter().map(|(partition, _)| *partition).collect();
    assert_eq!(
        partitions.len(),
        PARTITION_COUNT as usize,
        "50 keys spread over every partition of the auto-created topic"
    );
    let mut partition_of_key = BTreeMap::new();
    for (record, (partition, _)) in sent.iter().zip(&placed) {
        let first = partition_of_key
            .entry(record.key.clone())
            .or_insert(*partition);
        assert_eq!(first, partition, "a key always goes to one partition");
    }
    assert_read_back(&bootstrap, topic, &sent, &placed);
    for partition in 0..PARTITION_COUNT {
        let (low, high) = kafka::watermarks(&bootstrap, topic, partition);
        let count = placed.iter().filter(|(p, _)| *p == partition).count();
        assert_eq!(
            (low, high),
            (0, count as i64),
            "partition {partition} watermarks"
        );
    }
}

#[test]
fn rdkafka_round_trips_records_in_every_compression_codec() {
    let broker = Broker::start("rdkafka_compression");
    let bootstrap = broker.bootstrap();
    // zstd is left out: rdkafka-sys builds librdkafka without it by default.
    for codec in ["gzip", "snappy", "lz4"] {
        let topic = format!("rdkafka-{codec}");
        let sent = records(500, codec);
        let placed = kafka::produce_all(
            &bootstrap,
            &topic,
            Some(0),
            &sent,
            &[
                ("acks", "all"),
                ("compression.type", codec),
                ("linger.ms", "20"),
            ],
        );
        assert_read_back(&bootstrap, &topic, &sent, &placed);
    }
}

#[test]
fn rdkafka_idempotent_producer_round_trips_records() {
    let broker = Broker::start_with_args("rdkafka_idempotent", &["--default-partitions", "3"]);
    let bootstrap = broker.bootstrap();
    let topic = "rdkafka-idempotent";
    let sent = records(RECORD_COUNT, "idempotent");
    let placed = kafka::produce_all(
        &bootstrap,
        topic,
        None,
        &sent,
        &[("enable.idempotence", "true"), ("acks", "all")],
    );
    assert_read_back(&bootstrap, topic, &sent, &placed);
}

#[test]
fn a_consumer_assigned_beyond_the_log_end_resets_to_the_earliest_offset() {
    // The broker answers OFFSET_OUT_OF_RANGE; auto.offset.reset acts on it.
    let broker = Broker::start("rdkafka_offset_reset");
    let bootstrap = broker.bootstrap();
    let topic = "rdkafka-reset";
    let sent = records(10, "reset");
    kafka::produce_all(&bootstrap, topic, Some(0), &sent, &[("acks", "all")]);
    let consumed = kafka::consume_count(&bootstrap, topic, 0, 1_000_000, 10);
    let offsets: Vec<i64> = consumed.iter().map(|consumed| consumed.offset).collect();
    assert_eq!(
        offsets,
        (0..10).collect::<Vec<i64>>(),
        "reset to the log start"
    );
}

#[test]
fn a_compacted_topic_refuses_records_without_keys() {
    let broker = Broker::start("rdkafka_compacted_null_key");
    let bootstrap = broker.bootstrap();
    let topic = "rdkafka-compacted";
    kafka::create_topic(&bootstrap, topic, 1, &[("cleanup.policy", "compact")]);
    let (producer, reports) = kafka::producer(&bootstrap, &[("acks", "all"), ("retries", "0")]);
    let keyless = Record {
        key: None,
        value: Some(b"no key".to_vec()),
        headers: Vec::new(),
    };
    kafka::send(&producer, topic, Some(0), 0, &keyless);
    producer
        .flush(std::time::Duration::from_secs(30))
        .expect("flushing");
    let reports = std::mem::take(&mut *reports.0.lock().expect("reports"));
    match &reports[..] {
        [(0, Err(error))] => assert_eq!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::InvalidRecord),
            "a keyless record on a compacted topic: {error}"
        ),
        other => panic!("a keyless record on a compacted topic was not refused: {other:?}"),
    }
    assert_eq!(
        kafka::watermarks(&bootstrap, topic, 0),
        (0, 0),
        "nothing written"
    );
    let keyed = records(5, "compacted");
    let placed = kafka::produce_all(&bootstrap, topic, Some(0), &keyed, &[("acks", "all")]);
    assert_read_back(&bootstrap, topic, &keyed, &placed);
}
