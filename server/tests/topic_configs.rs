//! Topic configs that change behaviour, through a real broker and a real
//! client (rdkafka): message.timestamp.* bounds refuse produced batches
//! with INVALID_TIMESTAMP, max.compaction.lag.ms makes the cleaner compact
//! a log under its min.cleanable.dirty.ratio, compression.type recompresses
//! batches of another codec (read back by rdkafka, the stored codec checked
//! with a raw Fetch), and every config of Kafka's documentation that
//! librdkafka's admin test uses is accepted and described.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, RequestKind, TopicName};
use kafka_protocol::protocol::{Decodable, StrBytes};
use rdkafka::admin::{AlterConfig, ResourceSpecifier};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, Producer};
use sluice_engine::batch::codec::{self, Target};
use sluice_engine::batch::{self, BatchHeader, Compression};
use support::Broker;
use support::kafka::{self, Record};
use support::wire;

const HOUR_MS: i64 = 3_600_000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// Produce one record with CreateTime `timestamp_ms` to partition 0 of
/// `topic`; the delivery outcome (offset or error).
fn produce_at(bootstrap: &str, topic: &str, timestamp_ms: i64) -> Result<i64, KafkaError> {
    produce_compressed_at(bootstrap, topic, timestamp_ms, "none")
}

/// [`produce_at`] with the producer's compression codec `codec`.
fn produce_compressed_at(
    bootstrap: &str,
    topic: &str,
    timestamp_ms: i64,
    codec: &str,
) -> Result<i64, KafkaError> {
    let (producer, reports) = kafka::producer(
        bootstrap,
        &[
            ("acks", "all"),
            ("retries", "0"),
            ("linger.ms", "0"),
            ("compression.codec", codec),
        ],
    );
    let record: BaseRecord<'_, [u8], [u8], Box<usize>> =
        BaseRecord::with_opaque_to(topic, Box::new(0))
            .partition(0)
            .payload(&b"value"[..])
            .timestamp(timestamp_ms);
    producer
        .send(record)
        .map_err(|(error, _)| error)
        .expect("queueing the record");
    producer
        .flush(Duration::from_secs(30))
        .expect("flushing the producer");
    let reports = std::mem::take(&mut *reports.0.lock().expect("reports"));
    assert_eq!(reports.len(), 1, "one delivery report");
    reports
        .into_iter()
        .next()
        .expect("one report")
        .1
        .map(|(_, offset)| offset)
}

fn assert_invalid_timestamp(outcome: Result<i64, KafkaError>, what: &str) {
    match outcome {
        Err(KafkaError::MessageProduction(RDKafkaErrorCode::InvalidTimestamp)) => {}
        other => panic!("{what}: expected INVALID_TIMESTAMP, got {other:?}"),
    }
}

#[test]
fn create_time_records_outside_the_timestamp_bounds_are_refused_with_invalid_timestamp() {
    let broker = Broker::start("timestamp-bounds");
    let bootstrap = broker.bootstrap();
    let hour = HOUR_MS.to_string();
    kafka::create_topic(
        &bootstrap,
        "bounded",
        1,
        &[
            ("message.timestamp.before.max.ms", &hour),
            ("message.timestamp.after.max.ms", &hour),
        ],
    );
    kafka::create_topic(
        &bootstrap,
        "bounded-by-difference",
        1,
        &[("message.timestamp.difference.max.ms", &hour)],
    );
    kafka::create_topic(
        &bootstrap,
        "append-time",
        1,
        &[
            ("message.timestamp.type", "LogAppendTime"),
            ("message.timestamp.before.max.ms", &hour),
        ],
    );
    kafka::create_topic(&bootstrap, "unbounded", 1, &[]);

    for topic in ["bounded", "bounded-by-difference"] {
        assert_invalid_timestamp(
            produce_at(&bootstrap, topic, now_ms() - 2 * HOUR_MS),
            &format!("{topic}: two hours old"),
        );
        assert_invalid_timestamp(
            produce_at(&bootstrap, topic, now_ms() + 2 * HOUR_MS),
            &format!("{topic}: two hours ahead"),
        );
        assert_invalid_timestamp(
            produce_compressed_at(&bootstrap, topic, now_ms() - 2 * HOUR_MS, "lz4"),
            &format!("{topic}: two hours old, lz4"),
        );
        assert_eq!(
            produce_at(&bootstrap, topic, now_ms() - HOUR_MS / 2).unwrap(),
            0,
            "{topic}: half an hour old is within the bounds, and refused batches wrote nothing"
        );
        assert_eq!(kafka::watermarks(&bootstrap, topic, 0), (0, 1));
    }
    // LogAppendTime ignores the bounds; without bounds anything goes.
    assert_eq!(
        produce_at(&bootstrap, "append-time", now_ms() - 2 * HOUR_MS).unwrap(),
        0
    );
    assert_eq!(produce_at(&bootstrap, "unbounded", 1).unwrap(), 0);

    let described = kafka::describe_topic_configs(&bootstrap, "bounded");
    assert_eq!(
        described["message.timestamp.before.max.ms"].as_deref(),
        Some(hour.as_str())
    );
    assert_eq!(
        described["message.timestamp.difference.max.ms"].as_deref(),
        Some("9223372036854775807")
    );
}

#[test]
fn the_configs_librdkafkas_admin_test_uses_are_accepted_and_described() {
    let broker = Broker::start("kafka-topic-configs");
    let bootstrap = broker.bootstrap();
    let configs = [
        ("compression.type", "lz4"),
        ("delete.retention.ms", "900"),
        ("max.compaction.lag.ms", "3600000"),
        ("file.delete.delay.ms", "1000"),
        ("min.insync.replicas", "1"),
        ("segment.jitter.ms", "10"),
        ("preallocate", "true"),
        ("message.timestamp.after.max.ms", "60000"),
        ("leader.replication.throttled.replicas", "*"),
    ];
    kafka::create_topic(&bootstrap, "kafka-configs", 1, &configs);
    let described = kafka::describe_topic_configs(&bootstrap, "kafka-configs");
    for (name, value) in configs {
        assert_eq!(described[name].as_deref(), Some(value), "{name}");
    }
    assert_eq!(described["compression.zstd.level"].as_deref(), Some("3"));
    assert_eq!(described["remote.storage.enable"].as_deref(), Some("false"));
    assert!(
        described.len() >= 36,
        "{} configs described",
        described.len()
    );
}

/// Replace the explicit configs of `topic` (legacy AlterConfigs).
fn alter_configs(bootstrap: &str, topic: &str, configs: &[(&str, &str)]) {
    let admin = kafka::admin(bootstrap);
    let mut alter = AlterConfig::new(ResourceSpecifier::Topic(topic));
    for (name, value) in configs {
        alter = alter.set(name, value);
    }
    let results = kafka::block_on(admin.alter_configs([&alter], &kafka::admin_options()))
        .unwrap_or_else(|error| panic!("AlterConfigs {topic}: {error}"));
    for result in results {
        result.unwrap_or_else(|(_, code)| panic!("AlterConfigs {topic}: {code:?}"));
    }
}

fn updates(rounds: usize, tag: &str) -> Vec<Record> {
    let mut records = Vec::new();
    for round in 0..rounds {
        for key in 0..10 {
            records.push(Record {
                key: Some(format!("key-{key}").into_bytes()),
                value: Some(format!("{tag}-{round}-{}", "v".repeat(60)).into_bytes()),
                headers: Vec::new(),
            });
        }
    }
    // One key's filler, so that every update lands in a sealed segment.
    for index in 0..40 {
        records.push(Record {
            key: Some(b"filler".to_vec()),
            value: Some(format!("filler-{tag}-{index}-{}", "f".repeat(60)).into_bytes()),
            headers: Vec::new(),
        });
    }
    records
}

/// Whether every updated key of `topic`/0 has a single record left (the
/// filler's tail stays in the active segment, which is never cleaned).
fn compacted(bootstrap: &str, topic: &str) -> bool {
    let consumed = kafka::consume_all(bootstrap, topic, 0);
    let updated: Vec<&Option<Vec<u8>>> = consumed
        .iter()
        .map(|record| &record.record.key)
        .filter(|key| key.as_deref() != Some(&b"filler"[..]))
        .collect();
    let keys: BTreeSet<&&Option<Vec<u8>>> = updated.iter().collect();
    updated.len() == keys.len()
}

#[test]
fn max_compaction_lag_makes_the_cleaner_compact_a_log_under_its_dirty_ratio() {
    let broker =
        Broker::start_with_args("max-compaction-lag", &["--log-cleaner-interval-ms", "200"]);
    let bootstrap = broker.bootstrap();
    let first = [
        ("cleanup.policy", "compact"),
        ("segment.bytes", "4096"),
        ("min.cleanable.dirty.ratio", "0.01"),
    ];
    for topic in ["lagged", "unlagged"] {
        kafka::create_topic(&bootstrap, topic, 1, &first);
        kafka::produce_one_per_batch(&bootstrap, topic, &updates(5, "first"));
    }
    let started = Instant::now();
    while !(compacted(&bootstrap, "lagged") && compacted(&bootstrap, "unlagged")) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the first compaction did not happen; broker log:\n{}",
            broker.stderr_tail()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // Now only a log whose every cleanable byte is dirty reaches the ratio:
    // after the first pass, new updates never do.
    alter_configs(
        &bootstrap,
        "lagged",
        &[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "4096"),
            ("min.cleanable.dirty.ratio", "1.0"),
            ("max.compaction.lag.ms", "2000"),
        ],
    );
    alter_configs(
        &bootstrap,
        "unlagged",
        &[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "4096"),
            ("min.cleanable.dirty.ratio", "1.0"),
        ],
    );
    for topic in ["lagged", "unlagged"] {
        kafka::produce_one_per_batch(&bootstrap, topic, &updates(3, "second"));
    }
    let started = Instant::now();
    while !compacted(&bootstrap, "lagged") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "max.compaction.lag.ms did not force a compaction; broker log:\n{}",
            broker.stderr_tail()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        !compacted(&bootstrap, "unlagged"),
        "without max.compaction.lag.ms the log stays under its dirty ratio and uncompacted"
    );
}

/// Every stored batch of `topic`/0 from offset 0, by a raw Fetch (v11):
/// each batch's header and its records decompressed with Sluice's codec
/// (so zstd, which the test's librdkafka is built without, is read too).
fn stored_batches(broker: &Broker, topic: &str) -> Vec<(BatchHeader, Vec<Vec<u8>>)> {
    let mut stream = wire::connect(broker.address());
    let request = FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 24)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(1 << 24),
                ]),
        ]);
    let mut body = wire::call(&mut stream, ApiKey::Fetch, 11, RequestKind::Fetch(request));
    let response = FetchResponse::decode(&mut body, 11).expect("a Fetch response");
    let partition = &response.responses[0].partitions[0];
    assert_eq!(partition.error_code, 0, "fetch {topic}");
    let records = partition.records.clone().unwrap_or_default();
    batch::split_batches(&records)
        .unwrap()
        .into_iter()
        .map(|range| {
            let stored = &records[range];
            let header = batch::validate(stored, stored.len()).unwrap();
            let plain = codec::recompress(stored, &header, Target::None).unwrap();
            let plain_header = batch::validate(&plain, plain.len()).unwrap();
            let values = batch::records(&plain, &plain_header)
                .map(|record| record.unwrap().value.unwrap_or_default().to_vec())
                .collect();
            (header, values)
        })
        .collect()
}

fn numbered(count: usize) -> Vec<Record> {
    (0..count)
        .map(|index| Record {
            key: Some(format!("key-{index}").into_bytes()),
            value: Some(format!("value-{index}-{}", "x".repeat(100)).into_bytes()),
            headers: vec![("h".to_string(), Some(b"header".to_vec()))],
        })
        .collect()
}

#[test]
fn compression_type_recompresses_batches_of_another_codec_keeping_producer_fields() {
    let broker = Broker::start("compression-type");
    let bootstrap = broker.bootstrap();
    let records = numbered(50);
    let cases = [
        ("to-gzip", "gzip", "none", Compression::Gzip),
        ("to-snappy", "snappy", "lz4", Compression::Snappy),
        ("to-lz4", "lz4", "gzip", Compression::Lz4),
        ("to-zstd", "zstd", "none", Compression::Zstd),
        ("to-uncompressed", "uncompressed", "lz4", Compression::None),
        ("as-produced", "producer", "snappy", Compression::Snappy),
    ];
    for (topic, topic_codec, producer_codec, stored) in cases {
        kafka::create_topic(&bootstrap, topic, 1, &[("compression.type", topic_codec)]);
        // An idempotent producer: its id, epoch and sequences must survive
        // the rebuild (the broker checks sequences of the next batch).
        kafka::produce_all(
            &bootstrap,
            topic,
            Some(0),
            &records,
            &[
                ("compression.codec", producer_codec),
                ("enable.idempotence", "true"),
                ("batch.num.messages", "10"),
                ("linger.ms", "5"),
            ],
        );
        let batches = stored_batches(&broker, topic);
        assert!(!batches.is_empty(), "{topic}: nothing stored");
        let mut values = Vec::new();
        let mut next_sequence = 0;
        for (header, batch_values) in batches {
            assert_eq!(header.compression(), stored, "{topic}: stored codec");
            assert!(header.producer_id() >= 0, "{topic}: producer id kept");
            assert_eq!(
                header.base_sequence(),
                next_sequence,
                "{topic}: sequences kept"
            );
            next_sequence += header.records_count();
            values.extend(batch_values);
        }
        let expected: Vec<Vec<u8>> = records
            .iter()
            .map(|record| record.value.clone().unwrap())
            .collect();
        assert_eq!(values, expected, "{topic}: stored records");
        if stored != Compression::Zstd {
            // A real client decodes what the broker wrote.
            let consumed = kafka::consume_all(&bootstrap, topic, 0);
            let read: Vec<Record> = consumed.into_iter().map(|record| record.record).collect();
            assert_eq!(read, records, "{topic}: records read back by rdkafka");
        }
    }
}

#[test]
fn a_group_resource_is_described_with_kafkas_group_config_defaults() {
    let broker = Broker::start("group-configs");
    let bootstrap = broker.bootstrap();
    let admin = kafka::admin(&bootstrap);
    let results = kafka::block_on(admin.describe_configs(
        [&ResourceSpecifier::Group("my-group")],
        &kafka::admin_options(),
    ))
    .expect("DescribeConfigs of a group");
    let resource = results
        .into_iter()
        .next()
        .expect("one result")
        .unwrap_or_else(|code| panic!("DescribeConfigs GROUP: {code:?}"));
    let value = |name: &str| {
        resource
            .entries
            .iter()
            .find(|entry| entry.name == name)
            .and_then(|entry| entry.value.clone())
    };
    assert_eq!(
        value("consumer.session.timeout.ms").as_deref(),
        Some("45000")
    );
    assert_eq!(
        value("consumer.heartbeat.interval.ms").as_deref(),
        Some("5000")
    );
}

#[test]
fn a_broker_resource_lists_its_settings_under_kafkas_names() {
    let broker = Broker::start_with_args(
        "broker-configs",
        &[
            "--min-insync-replicas",
            "1",
            "--log-cleaner-interval-ms",
            "500",
        ],
    );
    let bootstrap = broker.bootstrap();
    let admin = kafka::admin(&bootstrap);
    let results = kafka::block_on(
        admin.describe_configs([&ResourceSpecifier::Broker(0)], &kafka::admin_options()),
    )
    .expect("DescribeConfigs of the broker");
    let resource = results
        .into_iter()
        .next()
        .expect("one result")
        .unwrap_or_else(|code| panic!("DescribeConfigs BROKER: {code:?}"));
    let entry = |name: &str| {
        resource
            .entries
            .iter()
            .find(|entry| entry.name == name)
            .unwrap_or_else(|| panic!("{name} is not described"))
    };
    assert_eq!(
        entry("log.cleaner.backoff.ms").value.as_deref(),
        Some("500")
    );
    assert!(entry("log.cleaner.backoff.ms").is_read_only);
    assert_eq!(entry("node.id").value.as_deref(), Some("0"));
    assert_eq!(
        entry("log.retention.ms").value.as_deref(),
        Some("604800000")
    );
    assert_eq!(entry("compression.type").value.as_deref(), Some("producer"));
    assert_eq!(
        entry("log.cleaner.max.compaction.lag.ms").value.as_deref(),
        Some("9223372036854775807")
    );
}

/// CreateTopics with validate_only (v5+) answers the partition count and
/// replication factor the topic would get, as Kafka (the Java AdminClient's
/// numPartitions() read 0), and creates nothing.
#[test]
fn create_topics_validate_only_answers_the_count_it_would_create() {
    use kafka_protocol::messages::CreateTopicsRequest;
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use sluice_server::admin::client::Connection;

    let broker = Broker::start("validate-only-count");
    let bootstrap = broker.bootstrap();
    let mut connection = Connection::open(&bootstrap).expect("connecting");
    let request = CreateTopicsRequest::default()
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("would-be")))
                .with_num_partitions(3)
                .with_replication_factor(1),
        ])
        .with_timeout_ms(10_000)
        .with_validate_only(true);
    let (response, _) = connection.call(&request, 5..=7).expect("CreateTopics");
    let result = &response.topics[0];
    assert_eq!(result.error_code, 0);
    assert_eq!((result.num_partitions, result.replication_factor), (3, 1));
    assert!(
        !kafka::topic_partition_counts(&bootstrap)
            .unwrap()
            .contains_key("would-be"),
        "validate_only created nothing"
    );
}
