//! Restarts on the same directory. Clean ones (SIGTERM, exit 0): records,
//! offsets, topics, partition counts and topic configs survive, and
//! producing continues where the log ended. Clean or after kill -9: once the
//! broker answers, it answers for every partition.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;

use rdkafka::admin::{AlterConfig, NewPartitions, ResourceSpecifier};
use rdkafka::producer::Producer;
use support::Broker;
use support::kafka::{self, Consumed, Record};

fn records(count: usize, tag: &str) -> Vec<Record> {
    (0..count)
        .map(|index| Record {
            key: Some(format!("key-{}", index % 30).into_bytes()),
            value: Some(format!("{tag} {index} {}", "v".repeat(index % 700)).into_bytes()),
            headers: vec![("tag".to_string(), Some(tag.as_bytes().to_vec()))],
        })
        .collect()
}

/// Every partition's records, by partition.
fn read_everything(bootstrap: &str, topic: &str, partitions: i32) -> BTreeMap<i32, Vec<Consumed>> {
    (0..partitions)
        .map(|partition| (partition, kafka::consume_all(bootstrap, topic, partition)))
        .collect()
}

fn assert_same(before: &BTreeMap<i32, Vec<Consumed>>, after: &BTreeMap<i32, Vec<Consumed>>) {
    for (partition, records) in before {
        let again = &after[partition];
        assert_eq!(
            again.len(),
            records.len(),
            "partition {partition}: record count"
        );
        for (old, new) in records.iter().zip(again) {
            assert_eq!(old.offset, new.offset, "partition {partition}: offsets");
            assert_eq!(
                old.record, new.record,
                "partition {partition} offset {}",
                old.offset
            );
            assert_eq!(
                old.timestamp_ms, new.timestamp_ms,
                "partition {partition} offset {}: timestamp",
                old.offset
            );
        }
    }
}

#[test]
fn records_topics_and_configs_survive_a_clean_restart() {
    let mut broker = Broker::start("restart_clean");
    let bootstrap = broker.bootstrap();
    let topic = "restart-survivor";
    // Small segments, so the partitions hold several sealed segments and an
    // open one across the restart.
    let configs = [
        ("segment.bytes", "262144"),
        ("retention.ms", "86400000"),
        ("max.message.bytes", "2097152"),
    ];
    kafka::create_topic(&bootstrap, topic, 4, &configs);
    let sent = records(4000, "before");
    let placed = kafka::produce_all(&bootstrap, topic, None, &sent, &[("acks", "all")]);
    let before = read_everything(&bootstrap, topic, 4);
    let total: usize = before.values().map(Vec::len).sum();
    assert_eq!(
        total,
        sent.len(),
        "everything produced is read back before the restart"
    );
    for (record, (partition, offset)) in sent.iter().zip(&placed) {
        let consumed = &before[partition][*offset as usize];
        assert_eq!(
            &consumed.record, record,
            "partition {partition} offset {offset}"
        );
    }

    broker.restart();

    let partitions = kafka::topic_partition_counts(&bootstrap).expect("metadata after restart");
    assert_eq!(
        partitions.get(topic),
        Some(&4),
        "the topic and its 4 partitions survive"
    );
    let described = kafka::describe_topic_configs(&bootstrap, topic);
    for (name, value) in configs {
        assert_eq!(
            described.get(name).cloned().flatten().as_deref(),
            Some(value),
            "topic config {name} survives the restart"
        );
    }
    let after = read_everything(&bootstrap, topic, 4);
    assert_same(&before, &after);

    // Producing continues at the old log end.
    let ends: BTreeMap<i32, i64> = (0..4)
        .map(|partition| (partition, kafka::watermarks(&bootstrap, topic, partition).1))
        .collect();
    let more = records(400, "after");
    let placed = kafka::produce_all(&bootstrap, topic, None, &more, &[("acks", "all")]);
    for partition in 0..4 {
        let first_new = placed
            .iter()
            .filter(|(p, _)| *p == partition)
            .map(|(_, offset)| *offset)
            .min();
        if let Some(first_new) = first_new {
            assert_eq!(
                first_new, ends[&partition],
                "partition {partition}: the first record after the restart follows the old end"
            );
        }
    }

    // A second restart, after appending to recovered logs.
    let before = read_everything(&bootstrap, topic, 4);
    broker.restart();
    let after = read_everything(&bootstrap, topic, 4);
    assert_same(&before, &after);
}

#[test]
fn added_partitions_altered_configs_and_deleted_topics_survive_a_clean_restart() {
    let mut broker = Broker::start("restart_admin");
    let bootstrap = broker.bootstrap();
    kafka::create_topic(&bootstrap, "grows", 2, &[]);
    kafka::create_topic(
        &bootstrap,
        "reconfigured",
        1,
        &[("retention.ms", "1000000")],
    );
    kafka::create_topic(&bootstrap, "deleted", 1, &[]);
    let admin = kafka::admin(&bootstrap);
    let options = kafka::admin_options();

    let results =
        kafka::block_on(admin.create_partitions([&NewPartitions::new("grows", 5)], &options))
            .expect("CreatePartitions");
    for result in results {
        result.unwrap_or_else(|(topic, code)| panic!("CreatePartitions {topic}: {code:?}"));
    }
    // The internal topics' partition counts place groups and transactional
    // ids: never changed.
    let internal = [
        NewPartitions::new("__consumer_offsets", 60),
        NewPartitions::new("__transaction_state", 60),
    ];
    let results =
        kafka::block_on(admin.create_partitions(&internal, &options)).expect("CreatePartitions");
    for result in results {
        assert!(
            matches!(
                result,
                Err((_, rdkafka::types::RDKafkaErrorCode::InvalidRequest))
            ),
            "{result:?}"
        );
    }
    let alter =
        AlterConfig::new(ResourceSpecifier::Topic("reconfigured")).set("retention.ms", "7200000");
    let results = kafka::block_on(admin.alter_configs([&alter], &options)).expect("AlterConfigs");
    for result in results {
        result.unwrap_or_else(|(resource, code)| panic!("AlterConfigs {resource:?}: {code:?}"));
    }
    let results =
        kafka::block_on(admin.delete_topics(&["deleted"], &options)).expect("DeleteTopics");
    for result in results {
        result.unwrap_or_else(|(topic, code)| panic!("DeleteTopics {topic}: {code:?}"));
    }
    // Something in the new partitions.
    let sent = records(50, "grown");
    for partition in 0..5 {
        kafka::produce_all(
            &bootstrap,
            "grows",
            Some(partition),
            &sent,
            &[("acks", "all")],
        );
    }

    broker.restart();

    let partitions = kafka::topic_partition_counts(&bootstrap).expect("metadata after restart");
    assert_eq!(
        partitions.get("grows"),
        Some(&5),
        "added partitions survive"
    );
    assert_eq!(
        partitions.get("deleted"),
        None,
        "a deleted topic stays deleted"
    );
    let described = kafka::describe_topic_configs(&bootstrap, "reconfigured");
    assert_eq!(
        described.get("retention.ms").cloned().flatten().as_deref(),
        Some("7200000"),
        "an altered config survives"
    );
    for partition in 0..5 {
        let consumed = kafka::consume_all(&bootstrap, "grows", partition);
        let records: Vec<Record> = consumed
            .into_iter()
            .map(|consumed| consumed.record)
            .collect();
        assert_eq!(records, sent, "partition {partition} of the grown topic");
    }
}

/// ListOffsets (latest) for `partitions` partitions of `topic`, on a fresh
/// connection: (partition, error code, offset) each.
fn list_latest_offsets(broker: &Broker, topic: &str, partitions: i32) -> Vec<(i32, i16, i64)> {
    use bytes::Buf;
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::{
        ApiKey, ListOffsetsRequest, ListOffsetsResponse, RequestKind, TopicName,
    };
    use kafka_protocol::protocol::{Decodable, StrBytes};
    use std::io::Write;

    const VERSION: i16 = 5;
    let request = ListOffsetsRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(
                    (0..partitions)
                        .map(|index| {
                            ListOffsetsPartition::default()
                                .with_partition_index(index)
                                .with_timestamp(-1)
                        })
                        .collect(),
                ),
        ]);
    let mut stream = support::wire::connect(broker.address());
    stream
        .write_all(&support::wire::request_frame(
            ApiKey::ListOffsets,
            VERSION,
            1,
            &RequestKind::ListOffsets(request),
        ))
        .expect("sending ListOffsets");
    let mut frame = support::wire::read_frame(&mut stream).expect("a ListOffsets answer");
    assert_eq!(frame.get_i32(), 1, "correlation id");
    let response =
        ListOffsetsResponse::decode(&mut frame, VERSION).expect("a ListOffsets response");
    response
        .topics
        .iter()
        .flat_map(|topic| topic.partitions.iter())
        .map(|partition| {
            (
                partition.partition_index,
                partition.error_code,
                partition.offset,
            )
        })
        .collect()
}

#[test]
fn every_partition_is_served_as_soon_as_the_broker_answers_after_a_restart() {
    // Many partitions, so that the shards finish opening them at different
    // moments. A client that reaches a shard which is ready must not be told
    // that a partition of a shard still opening its logs does not exist.
    const PARTITIONS: i32 = 1000;
    let mut broker = Broker::start("restart_serving_early");
    let bootstrap = broker.bootstrap();
    let topic = "many";
    // 1 MiB segments: a written segment is preallocated up to segment.bytes.
    kafka::create_topic(
        &bootstrap,
        topic,
        PARTITIONS,
        &[("segment.bytes", "1048576")],
    );
    let (producer, reports) = kafka::producer(&bootstrap, &[("acks", "all"), ("linger.ms", "5")]);
    for index in 0..(PARTITIONS * 5) as usize {
        let record = Record {
            key: Some(format!("key-{index}").into_bytes()),
            value: Some(vec![b'r'; 1000]),
            headers: Vec::new(),
        };
        kafka::send(
            &producer,
            topic,
            Some(index as i32 % PARTITIONS),
            index,
            &record,
        );
        producer.poll(std::time::Duration::ZERO);
    }
    producer
        .flush(std::time::Duration::from_secs(120))
        .expect("flushing");
    assert!(
        reports
            .0
            .lock()
            .expect("reports")
            .iter()
            .all(|(_, outcome)| outcome.is_ok()),
        "every record delivered"
    );
    drop(producer);
    for clean in [false, true] {
        if clean {
            broker.restart();
        } else {
            broker.kill9();
            broker.start_again();
        }
        let mut answers: Vec<(i32, i16, i64)> = Vec::new();
        for _ in 0..8 {
            answers.extend(list_latest_offsets(&broker, topic, PARTITIONS));
        }
        let refused: Vec<_> = answers.iter().filter(|(_, error, _)| *error != 0).collect();
        assert!(
            refused.is_empty(),
            "right after a {} restart, ListOffsets answered {} errors, e.g. (partition, error \
             code, offset) {:?}\n{}",
            if clean { "clean" } else { "kill -9" },
            refused.len(),
            &refused[..refused.len().min(5)],
            broker.stderr_tail()
        );
        for (partition, _, offset) in answers {
            assert_eq!(offset, 5, "partition {partition}: every record survives");
        }
    }
}
