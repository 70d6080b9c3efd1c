//! Log compaction of a transactional topic through a real broker and the
//! rdkafka crate's transactional producer (KIP-98, as Kafka's LogCleaner):
//! the cleaner removes the records of aborted transactions whatever their
//! keys, compacts committed transactional records by key like any record,
//! and leaves an open transaction (and everything after its first offset)
//! untouched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use support::Broker;
use support::kafka::{self, Record};

const TOPIC: &str = "compacted-transactions";
const KEYS: usize = 10;
/// Keys 0..UPDATED get a second committed value.
const UPDATED: usize = 5;
const FILLER: usize = 60;
const TXN_TIMEOUT: Duration = Duration::from_secs(60);
const DEADLINE: Duration = Duration::from_secs(60);

fn key_name(key: usize) -> String {
    format!("key-{key}")
}

fn transactional_producer(bootstrap: &str, id: &str) -> BaseProducer {
    let producer: BaseProducer = kafka::config(bootstrap)
        .set("transactional.id", id)
        // The open transaction must outlive the test.
        .set("transaction.timeout.ms", "300000")
        .set("linger.ms", "0")
        .create()
        .expect("creating a transactional producer");
    producer
        .init_transactions(TXN_TIMEOUT)
        .unwrap_or_else(|error| panic!("init_transactions({id}): {error}"));
    producer
}

fn send(producer: &BaseProducer, key: &str, value: &str) {
    loop {
        let record = BaseRecord::to(TOPIC).partition(0).key(key).payload(value);
        match producer.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                producer.poll(Duration::from_millis(10));
            }
            Err((error, _)) => panic!("send to {TOPIC}: {error}"),
        }
    }
}

/// A transaction of `(key, value)` records, committed or aborted.
fn transaction(producer: &BaseProducer, records: &[(String, String)], commit: bool) {
    producer.begin_transaction().expect("begin_transaction");
    for (key, value) in records {
        send(producer, key, value);
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

/// (offset, key, value) of partition 0 from its start to the end the
/// isolation level allows.
fn read(bootstrap: &str, committed: bool) -> Vec<(i64, String, String)> {
    let consumer = kafka::reader_from_start(bootstrap, TOPIC, 1, committed);
    let mut records = Vec::new();
    let deadline = Instant::now() + kafka::CALL_TIMEOUT;
    loop {
        assert!(Instant::now() < deadline, "reading {TOPIC} timed out");
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(message)) => records.push((
                message.offset(),
                String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
                String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned(),
            )),
            Some(Err(KafkaError::PartitionEOF(_))) => return records,
            Some(Err(error)) => panic!("reading {TOPIC}: {error}"),
        }
    }
}

fn filler(from: usize) -> Vec<Record> {
    (from..from + FILLER)
        .map(|index| Record {
            key: Some(b"filler".to_vec()),
            value: Some(format!("filler-{index}-{}", "f".repeat(60)).into_bytes()),
            headers: Vec::new(),
        })
        .collect()
}

#[test]
fn the_cleaner_removes_aborted_records_compacts_committed_ones_and_leaves_an_open_transaction() {
    let broker = Broker::start_with_args(
        "compaction-transactions",
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
        ],
    );
    let pad = "v".repeat(40);
    let committer = transactional_producer(&bootstrap, "compaction-committer");
    let first: Vec<(String, String)> = (0..KEYS)
        .map(|key| (key_name(key), format!("committed-old-{key}-{pad}")))
        .collect();
    transaction(&committer, &first, true);
    // Aborted: the same keys, and keys no other record has.
    let aborted: Vec<(String, String)> = (0..KEYS)
        .map(|key| (key_name(key), format!("aborted-{key}-{pad}")))
        .chain((0..KEYS).map(|key| (format!("aborted-only-{key}"), format!("aborted-only-{pad}"))))
        .collect();
    transaction(&committer, &aborted, false);
    // Still in the active segment, so not cleaned yet: read_uncommitted
    // sees the aborted records.
    assert!(
        read(&bootstrap, false)
            .iter()
            .any(|(_, _, value)| value.starts_with("aborted-")),
        "aborted records are read uncommitted before cleaning"
    );
    let second: Vec<(String, String)> = (0..UPDATED)
        .map(|key| (key_name(key), format!("committed-new-{key}-{pad}")))
        .collect();
    transaction(&committer, &second, true);
    // Plain filler seals the segments holding the transactions.
    kafka::produce_one_per_batch(&bootstrap, TOPIC, &filler(0));

    // An open transaction, then more filler after it.
    let opener = transactional_producer(&bootstrap, "compaction-opener");
    opener.begin_transaction().expect("begin_transaction");
    for key in UPDATED..KEYS {
        send(&opener, &key_name(key), &format!("open-{key}"));
    }
    opener
        .flush(TXN_TIMEOUT)
        .expect("flush the open transaction");
    kafka::produce_one_per_batch(&bootstrap, TOPIC, &filler(FILLER));
    let before = read(&bootstrap, false);
    let open_first = before
        .iter()
        .find(|(_, _, value)| value.starts_with("open-"))
        .expect("the open transaction's records are readable uncommitted")
        .0;
    let tail_before: Vec<_> = before
        .iter()
        .filter(|(offset, _, _)| *offset >= open_first)
        .cloned()
        .collect();

    // Wait for the cleaner to remove the aborted records.
    let started = Instant::now();
    let after = loop {
        let records = read(&bootstrap, false);
        let aborted_left = records
            .iter()
            .filter(|(_, _, value)| value.starts_with("aborted-"))
            .count();
        let superseded_left = records
            .iter()
            .filter(|(_, _, value)| value.starts_with("committed-old-"))
            .count();
        if aborted_left == 0 && superseded_left == KEYS - UPDATED {
            break records;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the cleaner did not clean {TOPIC} within {DEADLINE:?}: {aborted_left} aborted and \
             {superseded_left} committed-old records left"
        );
        std::thread::sleep(Duration::from_millis(300));
    };

    // The open transaction, and everything from its first offset on, is
    // untouched.
    let tail_after: Vec<_> = after
        .iter()
        .filter(|(offset, _, _)| *offset >= open_first)
        .cloned()
        .collect();
    assert_eq!(
        tail_after, tail_before,
        "nothing at or past the open transaction changed"
    );

    // read_uncommitted below the open transaction: one committed value per
    // key, the latest one.
    let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (offset, key, value) in &after {
        if *offset < open_first && key.starts_with("key-") {
            values.entry(key.clone()).or_default().push(value.clone());
        }
    }
    for key in 0..KEYS {
        let expected = if key < UPDATED {
            format!("committed-new-{key}-{pad}")
        } else {
            format!("committed-old-{key}-{pad}")
        };
        assert_eq!(
            values.get(&key_name(key)),
            Some(&vec![expected]),
            "key {key}"
        );
    }

    // read_committed: the latest committed value per key, nothing aborted,
    // nothing of the open transaction.
    let committed = read(&bootstrap, true);
    let mut latest: BTreeMap<String, String> = BTreeMap::new();
    let mut seen_keys = BTreeSet::new();
    for (_, key, value) in &committed {
        assert!(!value.starts_with("aborted-"), "{key}={value}");
        assert!(!value.starts_with("open-"), "{key}={value}");
        seen_keys.insert(key.clone());
        latest.insert(key.clone(), value.clone());
    }
    for key in 0..KEYS {
        let expected = if key < UPDATED {
            format!("committed-new-{key}-{pad}")
        } else {
            format!("committed-old-{key}-{pad}")
        };
        assert_eq!(latest.get(&key_name(key)), Some(&expected), "key {key}");
    }
    assert!(!seen_keys.iter().any(|key| key.starts_with("aborted-only")));

    // Once it commits, the open transaction's records are read committed.
    opener
        .commit_transaction(TXN_TIMEOUT)
        .expect("commit_transaction");
    let committed = read(&bootstrap, true);
    for key in UPDATED..KEYS {
        assert!(
            committed
                .iter()
                .any(|(_, name, value)| *name == key_name(key) && *value == format!("open-{key}")),
            "key {key}"
        );
    }
}
