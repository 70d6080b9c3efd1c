//! Transactions end to end with the rdkafka crate (librdkafka): the
//! transaction coordinator (FindCoordinator key type 1, InitProducerId with
//! a transactional id, AddPartitionsToTxn, AddOffsetsToTxn, EndTxn,
//! TxnOffsetCommit) and the partitions' data path (markers, last stable
//! offset, aborted transactions) against a real `sluice` process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use support::Broker;
use support::kafka;

/// Time limit of a transactional call (init, commit, abort).
const TXN_TIMEOUT: Duration = Duration::from_secs(60);

fn transactional_producer(bootstrap: &str, id: &str, settings: &[(&str, &str)]) -> BaseProducer {
    let mut config = kafka::config(bootstrap);
    config.set("transactional.id", id);
    for (key, value) in settings {
        config.set(*key, *value);
    }
    let producer: BaseProducer = config.create().expect("creating a transactional producer");
    producer
        .init_transactions(TXN_TIMEOUT)
        .unwrap_or_else(|error| panic!("init_transactions({id}): {error}"));
    producer
}

fn send(producer: &BaseProducer, topic: &str, partition: i32, value: &str) {
    loop {
        let record = BaseRecord::<(), str>::to(topic)
            .partition(partition)
            .payload(value);
        match producer.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                producer.poll(Duration::from_millis(10));
            }
            Err((error, _)) => panic!("send to {topic}/{partition}: {error}"),
        }
    }
}

/// The values of `topic`'s partitions, in order, read from the start up
/// to the end the isolation level allows (the last stable offset for
/// read_committed, the high watermark otherwise).
fn read(bootstrap: &str, topic: &str, partitions: i32, committed: bool) -> Vec<(i32, String)> {
    let consumer: BaseConsumer = kafka::config(bootstrap)
        .set("group.id", "transactions-test-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set(
            "isolation.level",
            if committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        .create()
        .expect("creating a consumer");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .expect("assignment");
    }
    consumer.assign(&assignment).expect("assign");
    let mut at_end = BTreeSet::new();
    let mut values = Vec::new();
    let deadline = Instant::now() + kafka::CALL_TIMEOUT;
    while at_end.len() < partitions as usize {
        assert!(Instant::now() < deadline, "reading {topic} timed out");
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(message)) => values.push((
                message.partition(),
                String::from_utf8_lossy(message.payload().unwrap_or_default()).to_string(),
            )),
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
            }
            Some(Err(error)) => panic!("reading {topic}: {error}"),
        }
    }
    values
}

fn sorted(mut values: Vec<(i32, String)>) -> Vec<(i32, String)> {
    values.sort();
    values
}

fn pairs(list: &[(i32, &str)]) -> Vec<(i32, String)> {
    sorted(
        list.iter()
            .map(|(partition, value)| (*partition, value.to_string()))
            .collect(),
    )
}

#[test]
fn committed_records_are_read_committed_and_aborted_ones_only_read_uncommitted() {
    let broker = Broker::start("txn-commit-abort");
    let bootstrap = broker.bootstrap();
    kafka::create_topic(&bootstrap, "txn-a", 2, &[]);
    kafka::create_topic(&bootstrap, "txn-b", 1, &[]);
    let producer = transactional_producer(&bootstrap, "txn-commit-abort", &[]);

    producer.begin_transaction().expect("begin");
    send(&producer, "txn-a", 0, "committed-a0");
    send(&producer, "txn-a", 1, "committed-a1");
    send(&producer, "txn-b", 0, "committed-b0");
    producer.commit_transaction(TXN_TIMEOUT).expect("commit");

    producer.begin_transaction().expect("begin");
    send(&producer, "txn-a", 0, "aborted-a0");
    send(&producer, "txn-b", 0, "aborted-b0");
    producer.flush(TXN_TIMEOUT).expect("flush");
    producer.abort_transaction(TXN_TIMEOUT).expect("abort");

    // Back-to-back transactions: each AddPartitionsToTxn may find the
    // previous commit's markers still being written
    // (CONCURRENT_TRANSACTIONS), which the client retries.
    for round in 0..5 {
        producer.begin_transaction().expect("begin");
        send(&producer, "txn-b", 0, &format!("round-{round}"));
        producer.commit_transaction(TXN_TIMEOUT).expect("commit");
    }

    let mut committed_b = vec![(0, "committed-b0")];
    let rounds: Vec<String> = (0..5).map(|round| format!("round-{round}")).collect();
    committed_b.extend(rounds.iter().map(|value| (0, value.as_str())));
    assert_eq!(
        sorted(read(&bootstrap, "txn-a", 2, true)),
        pairs(&[(0, "committed-a0"), (1, "committed-a1")])
    );
    assert_eq!(
        sorted(read(&bootstrap, "txn-b", 1, true)),
        pairs(&committed_b)
    );
    assert_eq!(
        sorted(read(&bootstrap, "txn-a", 2, false)),
        pairs(&[(0, "committed-a0"), (0, "aborted-a0"), (1, "committed-a1")])
    );
    let mut everything_b = committed_b.clone();
    everything_b.push((0, "aborted-b0"));
    assert_eq!(
        sorted(read(&bootstrap, "txn-b", 1, false)),
        pairs(&everything_b)
    );
}

#[test]
fn a_second_producer_with_the_same_transactional_id_fences_the_first() {
    let broker = Broker::start("txn-fencing");
    let bootstrap = broker.bootstrap();
    kafka::create_topic(&bootstrap, "txn-fenced", 1, &[]);
    let zombie = transactional_producer(&bootstrap, "txn-zombie", &[]);
    zombie.begin_transaction().expect("begin");
    send(&zombie, "txn-fenced", 0, "from-the-zombie");
    zombie.flush(TXN_TIMEOUT).expect("flush");

    // Its InitProducerId aborts the zombie's open transaction and bumps
    // the epoch.
    let successor = transactional_producer(&bootstrap, "txn-zombie", &[]);
    let error = zombie
        .commit_transaction(TXN_TIMEOUT)
        .expect_err("the fenced producer's commit");
    match &error {
        KafkaError::Transaction(inner) => assert!(
            inner.is_fatal() || inner.txn_requires_abort(),
            "the zombie is fenced: {error}"
        ),
        other => panic!("not a transaction error: {other}"),
    }

    successor.begin_transaction().expect("begin");
    send(&successor, "txn-fenced", 0, "from-the-successor");
    successor.commit_transaction(TXN_TIMEOUT).expect("commit");
    assert_eq!(
        read(&bootstrap, "txn-fenced", 1, true),
        pairs(&[(0, "from-the-successor")])
    );
}

#[test]
fn a_transaction_past_its_timeout_is_aborted_and_its_producer_fenced() {
    let broker = Broker::start("txn-timeout");
    let bootstrap = broker.bootstrap();
    kafka::create_topic(&bootstrap, "txn-slow", 1, &[]);
    let producer = transactional_producer(
        &bootstrap,
        "txn-slow",
        &[
            ("transaction.timeout.ms", "2000"),
            ("socket.timeout.ms", "2000"),
        ],
    );
    producer.begin_transaction().expect("begin");
    send(&producer, "txn-slow", 0, "too-late");
    producer.flush(TXN_TIMEOUT).expect("flush");
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        producer.commit_transaction(TXN_TIMEOUT).is_err(),
        "a commit after the coordinator aborted the transaction"
    );
    assert_eq!(read(&bootstrap, "txn-slow", 1, true), Vec::new());
    assert_eq!(
        read(&bootstrap, "txn-slow", 1, false),
        pairs(&[(0, "too-late")])
    );
}

#[test]
fn a_transaction_timeout_above_the_maximum_is_refused() {
    let broker = Broker::start("txn-timeout-max");
    let mut config = kafka::config(&broker.bootstrap());
    config
        .set("transactional.id", "txn-too-long")
        .set("transaction.timeout.ms", "900001");
    let producer: BaseProducer = config.create().expect("creating a producer");
    let error = producer
        .init_transactions(TXN_TIMEOUT)
        .expect_err("a timeout above transaction.max.timeout.ms");
    assert!(
        error.to_string().to_lowercase().contains("timeout"),
        "the error names the timeout: {error}"
    );
}

/// The offsets group `group` has committed for `topic` partition 0 (None:
/// none).
fn committed_offset(bootstrap: &str, group: &str, topic: &str) -> Option<i64> {
    let consumer: BaseConsumer = kafka::config(bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("creating a consumer");
    let mut partitions = TopicPartitionList::new();
    partitions.add_partition(topic, 0);
    let committed = consumer
        .committed_offsets(partitions, kafka::CALL_TIMEOUT)
        .expect("OffsetFetch");
    match committed.find_partition(topic, 0).expect("asked").offset() {
        Offset::Offset(offset) => Some(offset),
        _ => None,
    }
}

#[test]
fn offsets_sent_to_a_transaction_are_visible_only_once_it_commits() {
    let broker = Broker::start("txn-offsets");
    let bootstrap = broker.bootstrap();
    kafka::create_topic(&bootstrap, "txn-in", 1, &[]);
    kafka::create_topic(&bootstrap, "txn-out", 1, &[]);
    let group: BaseConsumer = kafka::config(&bootstrap)
        .set("group.id", "txn-group")
        .set("enable.auto.commit", "false")
        .create()
        .expect("creating the group's consumer");
    let metadata = group.group_metadata().expect("group metadata");
    let producer = transactional_producer(&bootstrap, "txn-offsets", &[]);
    let offsets = |offset: i64| {
        let mut list = TopicPartitionList::new();
        list.add_partition_offset("txn-in", 0, Offset::Offset(offset))
            .expect("offset");
        list
    };

    producer.begin_transaction().expect("begin");
    send(&producer, "txn-out", 0, "out-1");
    producer
        .send_offsets_to_transaction(&offsets(5), &metadata, TXN_TIMEOUT)
        .expect("send_offsets_to_transaction");
    assert_eq!(
        committed_offset(&bootstrap, "txn-group", "txn-in"),
        None,
        "pending until the commit"
    );
    producer.commit_transaction(TXN_TIMEOUT).expect("commit");
    let deadline = Instant::now() + kafka::CALL_TIMEOUT;
    while committed_offset(&bootstrap, "txn-group", "txn-in") != Some(5) {
        assert!(
            Instant::now() < deadline,
            "the committed offset never showed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    producer.begin_transaction().expect("begin");
    send(&producer, "txn-out", 0, "out-2");
    producer
        .send_offsets_to_transaction(&offsets(9), &metadata, TXN_TIMEOUT)
        .expect("send_offsets_to_transaction");
    producer.flush(TXN_TIMEOUT).expect("flush");
    producer.abort_transaction(TXN_TIMEOUT).expect("abort");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        committed_offset(&bootstrap, "txn-group", "txn-in"),
        Some(5),
        "an aborted transaction's offsets are dropped"
    );
}

#[test]
fn the_coordinator_resumes_after_a_restart() {
    let mut broker = Broker::start("txn-restart");
    let bootstrap = broker.bootstrap();
    kafka::create_topic(&bootstrap, "txn-kept", 1, &[]);
    {
        let producer = transactional_producer(&bootstrap, "txn-kept", &[]);
        producer.begin_transaction().expect("begin");
        send(&producer, "txn-kept", 0, "before-restart");
        producer.commit_transaction(TXN_TIMEOUT).expect("commit");
    }
    broker.restart();
    let producer = transactional_producer(&bootstrap, "txn-kept", &[]);
    producer.begin_transaction().expect("begin");
    send(&producer, "txn-kept", 0, "after-restart");
    producer.commit_transaction(TXN_TIMEOUT).expect("commit");
    assert_eq!(
        sorted(read(&bootstrap, "txn-kept", 1, true)),
        pairs(&[(0, "after-restart"), (0, "before-restart")])
    );
}
