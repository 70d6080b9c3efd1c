//! A clean stop (SIGTERM) of a broker whose group coordinator is busy: an
//! active consumer group committing, and a stream of standalone commits
//! whose offsets expire (a short offsets retention), so the coordinator's
//! timer writes tombstones all the time. The timers must stop before the
//! logs close: before the fix, the stop logged "group coordinator append
//! refused ... was closed before the append became durable" and "writing
//! expired offsets failed". The restarted broker still has the active
//! group's committed offsets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{ApiKey, GroupId, OffsetCommitRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use sluice_server::admin::client::Connection;
use support::Broker;
use support::kafka::{self, Record};

const TOPIC: &str = "busy";
const PARTITIONS: i32 = 3;
const RECORDS_PER_PARTITION: i64 = 30;
const ACTIVE_GROUP: &str = "active-group";
/// Stops (and restarts) of the scenario: one bad stop is enough to fail.
const STOPS: usize = 3;

/// Lines a clean stop must not log (the coordinator writing to closing
/// logs, or a log failing to close).
const FORBIDDEN: [&str; 6] = [
    "group coordinator append refused",
    "group coordinator write failed",
    "writing expired offsets failed",
    "writing group metadata failed",
    "closed before the append became durable",
    "closing a log failed",
];

fn stderr_file(broker: &Broker, start: usize) -> PathBuf {
    broker
        .data_dir()
        .parent()
        .expect("the data directory has a parent")
        .join("logs")
        .join(format!("stderr-{start}.log"))
}

/// Commit offsets of new standalone groups (no members) on one connection
/// until `stop`; with a short retention they expire soon after, so the
/// coordinator's timer keeps writing tombstones.
/// Returns why it ended early, if it did.
fn commit_stream(
    bootstrap: String,
    stop: Arc<AtomicBool>,
    commits: Arc<AtomicUsize>,
) -> Result<(), String> {
    let mut connection = Connection::open(&bootstrap).map_err(|error| error.to_string())?;
    let version = connection
        .negotiate(ApiKey::OffsetCommit, 2..=7)
        .map_err(|error| error.to_string())?;
    let mut index = 0u64;
    while !stop.load(Ordering::Relaxed) {
        index += 1;
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(format!(
                "standalone-{index}"
            ))))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(StrBytes::default())
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                    .with_partitions(vec![
                        OffsetCommitRequestPartition::default()
                            .with_partition_index((index % PARTITIONS as u64) as i32)
                            .with_committed_offset(1),
                    ]),
            ]);
        // The broker stops under the stream: the first failure ends it.
        let response = connection
            .send(&request, version)
            .map_err(|error| error.to_string())?;
        let code = response.topics[0].partitions[0].error_code;
        if code != 0 {
            return Err(format!("OffsetCommit answered error {code}"));
        }
        commits.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// The committed offsets of [`ACTIVE_GROUP`] (OffsetFetch, no join).
fn committed(broker: &Broker) -> Vec<Offset> {
    let consumer: BaseConsumer = kafka::config(&broker.bootstrap())
        .set("group.id", ACTIVE_GROUP)
        .create()
        .expect("creating a consumer");
    let mut partitions = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        partitions.add_partition(TOPIC, partition);
    }
    consumer
        .committed_offsets(partitions, kafka::CALL_TIMEOUT)
        .expect("OffsetFetch")
        .elements()
        .iter()
        .map(|element| element.offset())
        .collect()
}

#[test]
fn a_clean_stop_with_a_busy_group_coordinator_logs_no_write_errors_and_keeps_committed_offsets() {
    let mut broker = Broker::start_with_args(
        "clean-stop",
        &[
            "--group-initial-rebalance-delay-ms",
            "300",
            "--offsets-retention-ms",
            "300",
        ],
    );
    kafka::create_topic(&broker.bootstrap(), TOPIC, PARTITIONS, &[]);
    for partition in 0..PARTITIONS {
        let records: Vec<Record> = (0..RECORDS_PER_PARTITION)
            .map(|index| Record {
                key: None,
                value: Some(format!("{partition}/{index}").into_bytes()),
                headers: Vec::new(),
            })
            .collect();
        kafka::produce_all(&broker.bootstrap(), TOPIC, Some(partition), &records, &[]);
    }

    // The active group: one member that reads everything and commits every
    // 100 ms; it stays a member across the restarts (so its offsets never
    // expire: only an empty group's do).
    let stop_consumer = Arc::new(AtomicBool::new(false));
    let consumed = Arc::new(Mutex::new(BTreeSet::new()));
    let consumer_thread = {
        let consumer: BaseConsumer = kafka::config(&broker.bootstrap())
            .set("group.id", ACTIVE_GROUP)
            .set("auto.offset.reset", "earliest")
            .set("auto.commit.interval.ms", "100")
            .set("enable.partition.eof", "false")
            .create()
            .expect("creating a consumer");
        consumer.subscribe(&[TOPIC]).expect("subscribing");
        let (stop, consumed) = (Arc::clone(&stop_consumer), Arc::clone(&consumed));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
                    consumed
                        .lock()
                        .unwrap()
                        .insert((message.partition(), message.offset()));
                }
            }
        })
    };
    let everything = Offset::Offset(RECORDS_PER_PARTITION);
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed(&broker)
        .iter()
        .any(|offset| *offset != everything)
    {
        assert!(
            Instant::now() < deadline,
            "the active group did not commit every record: {:?}, consumed {}\n{}",
            committed(&broker),
            consumed.lock().unwrap().len(),
            broker.stderr_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    for stop in 0..STOPS {
        let stop_stream = Arc::new(AtomicBool::new(false));
        let commits = Arc::new(AtomicUsize::new(0));
        let stream = {
            let (bootstrap, stop_stream, commits) = (
                broker.bootstrap(),
                Arc::clone(&stop_stream),
                Arc::clone(&commits),
            );
            std::thread::spawn(move || commit_stream(bootstrap, stop_stream, commits))
        };
        // Long enough for the first commits to expire and keep expiring.
        std::thread::sleep(Duration::from_millis(1500));
        if stream.is_finished() {
            panic!(
                "the commit stream ended: {:?}",
                stream.join().expect("the commit stream panicked")
            );
        }
        assert!(
            commits.load(Ordering::Relaxed) > 100,
            "the commit stream is too slow"
        );
        broker.stop();
        stop_stream.store(true, Ordering::Relaxed);
        // It ends with an error (the broker went away) or at the flag.
        let _ = stream.join().expect("the commit stream panicked");

        let stderr = std::fs::read_to_string(stderr_file(&broker, stop)).expect("broker stderr");
        assert!(
            stderr.contains("committed offset expired"),
            "stop {stop}: no offset expired before the stop: the scenario did not run"
        );
        let bad: Vec<&str> = stderr
            .lines()
            .filter(|line| FORBIDDEN.iter().any(|forbidden| line.contains(forbidden)))
            .collect();
        assert!(
            bad.is_empty(),
            "stop {stop}: the clean stop logged write errors:\n{}",
            bad.join("\n")
        );

        broker.start_again();
        assert_eq!(
            committed(&broker),
            vec![everything; PARTITIONS as usize],
            "stop {stop}: the active group's committed offsets after the restart\n{}",
            broker.stderr_tail()
        );
    }
    stop_consumer.store(true, Ordering::Relaxed);
    consumer_thread
        .join()
        .expect("the consumer thread panicked");
    broker.assert_running();
}
