//! How a partition keeps its transaction state on disk (shard/txn_index.rs,
//! docs/internals/storage-format.md), through a real broker and the rdkafka
//! crate's transactional producer and read_committed consumers:
//! per-segment aborted-transaction indexes (`.txnindex`) and periodic
//! snapshots (`.txnsnapshot`) let a broker killed with SIGKILL reopen by
//! reading only the log after its newest snapshot; DeleteRecords deletes a
//! segment's index with it; the cleaner removes the markers of
//! transactions that have no data left once delete.retention.ms passed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use support::Broker;
use support::cluster::read_replica;
use support::kafka;

const TXN_TIMEOUT: Duration = Duration::from_secs(60);
const DEADLINE: Duration = Duration::from_secs(60);
/// The control attribute bit of a batch (attributes at byte 21).
const CONTROL_ATTRIBUTE: u8 = 0x20;

fn transactional_producer(bootstrap: &str, id: &str) -> BaseProducer {
    let producer: BaseProducer = kafka::config(bootstrap)
        .set("transactional.id", id)
        .set("linger.ms", "0")
        .create()
        .expect("creating a transactional producer");
    producer
        .init_transactions(TXN_TIMEOUT)
        .unwrap_or_else(|error| panic!("init_transactions({id}): {error}"));
    producer
}

fn send(producer: &BaseProducer, topic: &str, key: &str, value: &str) {
    loop {
        let record = BaseRecord::to(topic).partition(0).key(key).payload(value);
        match producer.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                producer.poll(Duration::from_millis(10));
            }
            Err((error, _)) => panic!("send to {topic}: {error}"),
        }
    }
}

/// One transaction of `(key, value)` records, committed or aborted.
fn transaction(producer: &BaseProducer, topic: &str, records: &[(String, String)], commit: bool) {
    producer.begin_transaction().expect("begin_transaction");
    for (key, value) in records {
        send(producer, topic, key, value);
    }
    if commit {
        producer
            .commit_transaction(TXN_TIMEOUT)
            .expect("commit_transaction");
    } else {
        producer
            .flush(TXN_TIMEOUT)
            .expect("flush before abort_transaction");
        producer
            .abort_transaction(TXN_TIMEOUT)
            .expect("abort_transaction");
    }
}

/// Transactions `rounds` of four records each, every third one aborted;
/// returns the values committed, in order.
fn transactions(
    producer: &BaseProducer,
    topic: &str,
    rounds: std::ops::Range<usize>,
) -> Vec<String> {
    let mut committed = Vec::new();
    for round in rounds {
        let commit = round % 3 != 0;
        let state = if commit { "committed" } else { "aborted" };
        let records: Vec<(String, String)> = (0..4)
            .map(|record| {
                (
                    format!("key-{round}-{record}"),
                    format!("{state}-{round}-{record}-{}", "p".repeat(40)),
                )
            })
            .collect();
        transaction(producer, topic, &records, commit);
        if commit {
            committed.extend(records.into_iter().map(|(_, value)| value));
        }
    }
    committed
}

/// (offset, value) of partition 0 from its start to the end the isolation
/// level allows.
fn read(bootstrap: &str, topic: &str, committed: bool) -> Vec<(i64, String)> {
    let consumer = kafka::reader_from_start(bootstrap, topic, 1, committed);
    let mut records = Vec::new();
    let deadline = Instant::now() + kafka::CALL_TIMEOUT;
    loop {
        assert!(Instant::now() < deadline, "reading {topic} timed out");
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(message)) => records.push((
                message.offset(),
                String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned(),
            )),
            Some(Err(KafkaError::PartitionEOF(_))) => return records,
            // A broker just restarted: librdkafka retries.
            Some(Err(error)) if committed && records.is_empty() => {
                eprintln!("reading {topic}: {error} (retrying)");
            }
            Some(Err(error)) => panic!("reading {topic}: {error}"),
        }
    }
}

/// read_committed until it returns `expected`: EndTxn answers once the
/// outcome is decided and the coordinator writes the markers after (and
/// after a restart resumes them), so the last transaction may become
/// readable a little later.
fn wait_read_committed(bootstrap: &str, topic: &str, expected: &[String]) {
    let started = Instant::now();
    loop {
        let read = values(&read(bootstrap, topic, true));
        if read == expected {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE && read.len() <= expected.len(),
            "read_committed of {topic}: {} records, expected {}",
            read.len(),
            expected.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn values(records: &[(i64, String)]) -> Vec<String> {
    records.iter().map(|(_, value)| value.clone()).collect()
}

/// Base offsets of the files in `dir` whose name ends with `suffix`.
fn offsets_of(dir: &Path, suffix: &str) -> BTreeSet<i64> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|entry| {
                    let name = entry.ok()?.file_name().to_string_lossy().into_owned();
                    let stem = name.strip_suffix(suffix)?;
                    (stem.len() == 20).then(|| stem.parse().ok()).flatten()
                })
                .collect()
        })
        .unwrap_or_default()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < DEADLINE, "{what} within {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The broker's stderr of its `start`-th process (0 = the first).
fn stderr_of(broker: &Broker, start: u32) -> String {
    let path: PathBuf = broker
        .data_dir()
        .parent()
        .expect("the data directory has a parent")
        .join("logs")
        .join(format!("stderr-{start}.log"));
    std::fs::read_to_string(&path).unwrap_or_default()
}

/// The numeric field `name=<digits>` of a log line.
fn field(line: &str, name: &str) -> Option<u64> {
    let start = line.find(&format!("{name}="))? + name.len() + 1;
    let digits: String = line[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Control batches (markers) stored in the partition directory.
fn stored_markers(dir: &Path) -> usize {
    read_replica(dir)
        .map(|contents| {
            contents
                .batches
                .iter()
                .filter(|batch| batch.bytes[22] & CONTROL_ATTRIBUTE != 0)
                .count()
        })
        .unwrap_or(usize::MAX)
}

#[test]
fn a_broker_killed_after_many_transactions_reopens_from_a_snapshot_and_reads_only_the_tail() {
    const TOPIC: &str = "txn-storage-crash";
    let mut broker = Broker::start_with_args(
        "transactions-storage-crash",
        &["--log-cleaner-interval-ms", "3000"],
    );
    let bootstrap = broker.bootstrap();
    kafka::create_topic(&bootstrap, TOPIC, 1, &[("segment.bytes", "4096")]);
    let dir = broker.data_dir().join(format!("{TOPIC}-0"));
    let producer = transactional_producer(&bootstrap, "storage-crash");
    let mut committed = transactions(&producer, TOPIC, 0..60);
    wait_read_committed(&bootstrap, TOPIC, &committed);
    let segments = offsets_of(&dir, ".log");
    assert!(segments.len() > 5, "many small segments: {segments:?}");
    // The shard's cleaner captures the state, then writes it once durable.
    let (_, high) = kafka::watermarks(&bootstrap, TOPIC, 0);
    wait_for("a snapshot near the log end", || {
        offsets_of(&dir, ".txnsnapshot")
            .last()
            .is_some_and(|newest| *newest >= high - 10)
    });
    let indexes = offsets_of(&dir, ".txnindex");
    assert!(
        indexes.len() > 3 && indexes.is_subset(&offsets_of(&dir, ".log")),
        "an index per segment holding abort markers: {indexes:?}"
    );
    // A tail after the snapshot, then SIGKILL before the next one (a
    // capture, and a write one interval later). Its markers are written
    // first: this test is about the partition's files, not about the
    // coordinator resuming a completion after a restart.
    committed.extend(transactions(&producer, TOPIC, 60..66));
    wait_read_committed(&bootstrap, TOPIC, &committed);
    drop(producer);
    broker.kill9();
    broker.start_again();

    // The open read the snapshot, the indexes and only the tail.
    let stderr = stderr_of(&broker, 1);
    let line = stderr
        .lines()
        .find(|line| line.contains("transaction state recovered") && line.contains(TOPIC))
        .unwrap_or_else(|| panic!("no recovery line for {TOPIC}:\n{}", broker.stderr_tail()));
    eprintln!("{line}");
    assert!(line.contains("source=\"snapshot\""), "{line}");
    let scanned = field(line, "scanned_bytes").expect("scanned_bytes");
    let log_bytes = field(line, "log_bytes").expect("log_bytes");
    assert!(
        scanned > 0 && scanned * 4 < log_bytes,
        "only the tail was read: {line}"
    );

    // read_committed sees exactly the committed records, in order.
    wait_read_committed(&bootstrap, TOPIC, &committed);
    let uncommitted = read(&bootstrap, TOPIC, false);
    assert_eq!(uncommitted.len(), 66 * 4, "every record is in the log");

    // And again after a clean stop (the snapshot at the log end).
    broker.restart();
    assert!(
        !stderr_of(&broker, 2)
            .lines()
            .any(|line| line.contains("transaction state recovered") && line.contains(TOPIC)),
        "a clean stop leaves nothing to scan"
    );
    assert_eq!(values(&read(&bootstrap, TOPIC, true)), committed);
}

#[test]
fn delete_records_removes_the_transaction_indexes_with_their_segments() {
    const TOPIC: &str = "txn-storage-delete";
    let mut broker = Broker::start_with_args(
        "transactions-storage-delete",
        &["--log-cleaner-interval-ms", "200"],
    );
    let bootstrap = broker.bootstrap();
    kafka::create_topic(&bootstrap, TOPIC, 1, &[("segment.bytes", "4096")]);
    let dir = broker.data_dir().join(format!("{TOPIC}-0"));
    let producer = transactional_producer(&bootstrap, "storage-delete");
    let committed = transactions(&producer, TOPIC, 0..45);
    wait_read_committed(&bootstrap, TOPIC, &committed);
    let (_, high) = kafka::watermarks(&bootstrap, TOPIC, 0);
    wait_for("a snapshot at the log end", || {
        offsets_of(&dir, ".txnsnapshot").last() == Some(&high)
    });
    let indexes = offsets_of(&dir, ".txnindex");
    let segments = offsets_of(&dir, ".log");
    assert!(indexes.len() > 4, "{indexes:?}");
    // Delete everything below the fourth index's segment.
    let cut = *indexes.iter().nth(3).unwrap();
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset(TOPIC, 0, Offset::Offset(cut))
        .unwrap();
    let admin = kafka::admin(&bootstrap);
    kafka::block_on(admin.delete_records(&offsets, &kafka::admin_options()))
        .expect("DeleteRecords");
    let left = offsets_of(&dir, ".txnindex");
    assert_eq!(
        left,
        indexes
            .iter()
            .copied()
            .filter(|base| *base >= cut)
            .collect(),
        "the indexes of deleted segments went with them"
    );
    assert!(offsets_of(&dir, ".log").iter().all(|base| *base >= cut));
    assert!(segments.iter().any(|base| *base < cut));

    // read_committed from the new start: the committed records at or above
    // it, none of the aborted ones.
    let expected: Vec<(i64, String)> = read(&bootstrap, TOPIC, false)
        .into_iter()
        .filter(|(_, value)| value.starts_with("committed-"))
        .collect();
    assert!(expected.iter().all(|(offset, _)| *offset >= cut));
    assert_eq!(read(&bootstrap, TOPIC, true), expected);
    // The same after SIGKILL: the snapshot's indexes below the cut are gone
    // and not needed.
    drop(producer);
    broker.kill9();
    broker.start_again();
    assert_eq!(read(&bootstrap, TOPIC, true), expected);
}

#[test]
fn compaction_removes_the_markers_of_transactions_left_without_data_after_the_horizon() {
    const TOPIC: &str = "txn-storage-compacted";
    let mut broker = Broker::start_with_args(
        "transactions-storage-compacted",
        &["--log-cleaner-interval-ms", "200"],
    );
    let bootstrap = broker.bootstrap();
    kafka::create_topic(
        &bootstrap,
        TOPIC,
        1,
        &[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "4096"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("delete.retention.ms", "3000"),
        ],
    );
    let dir = broker.data_dir().join(format!("{TOPIC}-0"));
    let producer = transactional_producer(&bootstrap, "storage-compacted");
    // Twelve transactions, every third aborted: keys are unique, so only
    // the aborted transactions lose their data.
    let committed = transactions(&producer, TOPIC, 0..12);
    // Counted before any marker can have passed its horizon (the last
    // marker is written just after commit_transaction returns).
    let markers_before = 12;
    wait_for("one marker per transaction", || {
        stored_markers(&dir) == markers_before
    });
    // Plain filler seals the segments holding the transactions.
    let filler: Vec<kafka::Record> = (0..80)
        .map(|index| kafka::Record {
            key: Some(format!("filler-{index}").into_bytes()),
            value: Some(format!("filler-{index}-{}", "f".repeat(60)).into_bytes()),
            headers: Vec::new(),
        })
        .collect();
    kafka::produce_one_per_batch(&bootstrap, TOPIC, &filler);
    let aborted = 4;
    wait_for("the aborted transactions' markers removed", || {
        stored_markers(&dir) == markers_before - aborted
    });
    // Killed with nothing produced since: no snapshot came after the
    // removal to rewrite the aborted-transaction indexes. They used to
    // still list the removed markers' transactions after the restart, and
    // read_committed readers then skipped the committed records after them.
    broker.kill9();
    broker.start_again();
    // Committed transactions keep theirs (their data is still there).
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(stored_markers(&dir), markers_before - aborted);

    let read_committed = read(&bootstrap, TOPIC, true);
    let transactional: Vec<String> = values(&read_committed)
        .into_iter()
        .filter(|value| !value.starts_with("filler-"))
        .collect();
    assert_eq!(transactional, committed);
    let uncommitted = values(&read(&bootstrap, TOPIC, false));
    assert!(
        !uncommitted
            .iter()
            .any(|value| value.starts_with("aborted-"))
    );

    // A committed transaction whose records are all superseded (its keys
    // written again by a later one) loses its marker too.
    let keys: Vec<(String, String)> = (0..4)
        .map(|record| (format!("key-1-{record}"), format!("rewritten-{record}")))
        .collect();
    transaction(&producer, TOPIC, &keys, true);
    kafka::produce_one_per_batch(&bootstrap, TOPIC, &filler);
    wait_for("the superseded transaction's marker removed", || {
        // 12 - 4 aborted + 1 new - 1 superseded.
        stored_markers(&dir) == markers_before - aborted
            && read(&bootstrap, TOPIC, false)
                .iter()
                .all(|(_, value)| !value.starts_with("committed-1-"))
    });

    // After SIGKILL the state rebuilt from snapshot and indexes agrees.
    let expected = values(&read(&bootstrap, TOPIC, true));
    assert!(expected.iter().any(|value| value.starts_with("rewritten-")));
    drop(producer);
    broker.kill9();
    broker.start_again();
    assert_eq!(values(&read(&bootstrap, TOPIC, true)), expected);
}
