//! Topic configs that change behaviour, through a real broker and a real
//! client (rdkafka): message.timestamp.* bounds refuse produced batches
//! with INVALID_TIMESTAMP, max.compaction.lag.ms makes the cleaner compact
//! a log under its min.cleanable.dirty.ratio, and every config of Kafka's
//! documentation that librdkafka's admin test uses is accepted and
//! described.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AlterConfig, ResourceSpecifier};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, Producer};
use support::Broker;
use support::kafka::{self, Record};

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
    let (producer, reports) = kafka::producer(
        bootstrap,
        &[("acks", "all"), ("retries", "0"), ("linger.ms", "0")],
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
