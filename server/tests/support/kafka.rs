//! rdkafka (librdkafka built from source by rdkafka-sys) helpers for the
//! interop tests: admin calls, a producer that records every delivery
//! report, a consumer reading whole partitions by manual assignment (no
//! consumer groups: `assign`, never `subscribe`), and the health check every
//! hostile-input test ends with.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::Broker;

/// Time limit of one admin call, metadata request or consume loop.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Run a future to completion on this thread (rdkafka's admin futures are
/// completed by its own background thread; no runtime needed).
pub fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        match future.as_mut().poll(&mut context) {
            Poll::Ready(output) => return output,
            Poll::Pending => std::thread::park_timeout(Duration::from_millis(100)),
        }
    }
}

/// Client settings shared by every test client.
pub fn config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("socket.timeout.ms", "30000")
        .set_log_level(RDKafkaLogLevel::Warning);
    config
}

pub fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    config(bootstrap)
        .create()
        .expect("creating an admin client")
}

pub fn admin_options() -> AdminOptions {
    AdminOptions::new().request_timeout(Some(CALL_TIMEOUT))
}

/// CreateTopics; panics unless the topic was created.
pub fn create_topic(bootstrap: &str, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let admin = admin(bootstrap);
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (key, value) in configs {
        topic = topic.set(key, value);
    }
    let results = block_on(admin.create_topics([&topic], &admin_options()))
        .unwrap_or_else(|error| panic!("CreateTopics {name}: {error}"));
    for result in results {
        if let Err((topic, code)) = result {
            panic!("CreateTopics {topic}: {code:?}");
        }
    }
}

/// CreateTopics with `replication_factor` replicas per partition (-1: the
/// broker's default); panics unless the topic was created.
pub fn create_topic_replicated(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    replication_factor: i32,
    configs: &[(&str, &str)],
) {
    let admin = admin(bootstrap);
    let mut topic = NewTopic::new(
        name,
        partitions,
        TopicReplication::Fixed(replication_factor),
    );
    for (key, value) in configs {
        topic = topic.set(key, value);
    }
    let results = block_on(admin.create_topics([&topic], &admin_options()))
        .unwrap_or_else(|error| panic!("CreateTopics {name}: {error}"));
    for result in results {
        if let Err((topic, code)) = result {
            panic!("CreateTopics {topic}: {code:?}");
        }
    }
}

/// CreateTopics with an explicit replica list per partition (the first
/// replica is the preferred leader); panics unless the topic was created.
pub fn create_topic_assigned(bootstrap: &str, name: &str, assignment: &[&[i32]]) {
    let admin = admin(bootstrap);
    let topic = NewTopic::new(
        name,
        i32::try_from(assignment.len()).expect("partition count fits i32"),
        TopicReplication::Variable(assignment),
    );
    let results = block_on(admin.create_topics([&topic], &admin_options()))
        .unwrap_or_else(|error| panic!("CreateTopics {name}: {error}"));
    for result in results {
        if let Err((topic, code)) = result {
            panic!("CreateTopics {topic}: {code:?}");
        }
    }
}

/// DescribeConfigs of a topic: name -> value.
pub fn describe_topic_configs(bootstrap: &str, topic: &str) -> BTreeMap<String, Option<String>> {
    let admin = admin(bootstrap);
    let results =
        block_on(admin.describe_configs([&ResourceSpecifier::Topic(topic)], &admin_options()))
            .unwrap_or_else(|error| panic!("DescribeConfigs {topic}: {error}"));
    let resource = results
        .into_iter()
        .next()
        .expect("one DescribeConfigs result")
        .unwrap_or_else(|code| panic!("DescribeConfigs {topic}: {code:?}"));
    resource
        .entries
        .into_iter()
        .map(|entry| (entry.name, entry.value))
        .collect()
}

/// Topic name -> partition count, from a Metadata request.
pub fn topic_partition_counts(bootstrap: &str) -> Result<BTreeMap<String, usize>, KafkaError> {
    let consumer: BaseConsumer = config(bootstrap).create()?;
    let metadata = consumer.fetch_metadata(None, CALL_TIMEOUT)?;
    Ok(metadata
        .topics()
        .iter()
        .map(|topic| (topic.name().to_string(), topic.partitions().len()))
        .collect())
}

/// The broker is alive and a fresh rdkafka client gets its metadata.
pub fn assert_serves_metadata(broker: &mut Broker) {
    broker.assert_running();
    let consumer: BaseConsumer = config(&broker.bootstrap())
        .create()
        .expect("creating a consumer");
    match consumer.fetch_metadata(None, Duration::from_secs(20)) {
        Ok(metadata) => assert_eq!(metadata.brokers().len(), 1, "one broker in metadata"),
        Err(error) => panic!(
            "the broker no longer serves a metadata request: {error}\n{}",
            broker.stderr_tail()
        ),
    }
}

/// (low, high) watermarks of a partition: ListOffsets earliest and latest.
/// OFFSET_NOT_AVAILABLE (a new leader whose high watermark has not caught
/// up yet, retriable as the Java client treats it; librdkafka's query does
/// not retry it) is asked again for up to 30 s.
pub fn watermarks(bootstrap: &str, topic: &str, partition: i32) -> (i64, i64) {
    let consumer: BaseConsumer = config(bootstrap).create().expect("creating a consumer");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match consumer.fetch_watermarks(topic, partition, CALL_TIMEOUT) {
            Ok(watermarks) => return watermarks,
            Err(KafkaError::MetadataFetch(
                rdkafka::types::RDKafkaErrorCode::OffsetNotAvailable,
            )) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(error) => panic!("ListOffsets {topic}/{partition}: {error}"),
        }
    }
}

/// One record as a test sent or read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// A record read back, with where it was.
#[derive(Clone, Debug)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub record: Record,
}

fn record_of(message: &impl Message) -> Record {
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|header| (header.key.to_string(), header.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default();
    Record {
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        headers,
    }
}

/// Read `topic`/`partition` from `from` until offset `until` (exclusive),
/// by manual assignment. Panics on a consumer error or when the records do
/// not arrive within [`CALL_TIMEOUT`] of the last progress.
pub fn consume_partition(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    from: i64,
    until: i64,
) -> Vec<Consumed> {
    let consumed = consume_while(bootstrap, topic, partition, from, &|consumed| {
        consumed.last().map_or(from, |last| last.offset + 1) < until
    });
    if let Some(first) = consumed.first() {
        assert!(
            first.offset >= from,
            "{topic}/{partition}: read from {from}, got offset {}",
            first.offset
        );
    }
    consumed
}

/// Read `topic`/`partition` from `from` (which may be out of range: the
/// consumer then resets to the earliest offset) until `count` records came.
pub fn consume_count(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    from: i64,
    count: usize,
) -> Vec<Consumed> {
    consume_while(bootstrap, topic, partition, from, &|consumed| {
        consumed.len() < count
    })
}

/// Poll a consumer assigned to `topic`/`partition` at `from` while `more`
/// says so; offsets must increase.
fn consume_while(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    from: i64,
    more: &dyn Fn(&[Consumed]) -> bool,
) -> Vec<Consumed> {
    // librdkafka wants a group.id even for assign(); it stays unused
    // (nothing is committed, no group is joined).
    let consumer: BaseConsumer = config(bootstrap)
        .set("group.id", "sluice-interop-unused")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("creating a consumer");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, partition, Offset::Offset(from))
        .expect("assignment");
    consumer.assign(&assignment).expect("assign");
    let mut consumed: Vec<Consumed> = Vec::new();
    let mut last_progress = Instant::now();
    while more(&consumed) {
        if last_progress.elapsed() > CALL_TIMEOUT {
            panic!(
                "consuming {topic}/{partition} from {from}: no progress for {CALL_TIMEOUT:?} \
                 after {} records (last offset {:?})",
                consumed.len(),
                consumed.last().map(|last| last.offset)
            );
        }
        let Some(result) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message =
            result.unwrap_or_else(|error| panic!("consuming {topic}/{partition}: {error}"));
        if let Some(last) = consumed.last() {
            assert!(
                message.offset() > last.offset,
                "{topic}/{partition}: offset {} after {} (offsets go backwards)",
                message.offset(),
                last.offset
            );
        }
        last_progress = Instant::now();
        consumed.push(Consumed {
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis(),
            record: record_of(&message),
        });
    }
    consumed
}

/// Everything in a partition, from its log start to its high watermark.
pub fn consume_all(bootstrap: &str, topic: &str, partition: i32) -> Vec<Consumed> {
    let (low, high) = watermarks(bootstrap, topic, partition);
    consume_partition(bootstrap, topic, partition, low, high)
}

/// A delivery report: the record's index in the test's list, and where it
/// landed or why it failed.
pub type Delivery = (usize, Result<(i32, i64), KafkaError>);

/// A producer context that keeps every delivery report.
#[derive(Clone, Default)]
pub struct Reports(pub Arc<Mutex<Vec<Delivery>>>);

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = Box<usize>;

    fn delivery(&self, result: &DeliveryResult<'_>, index: Box<usize>) {
        let outcome = match result {
            Ok(message) => Ok((message.partition(), message.offset())),
            Err((error, _)) => Err(error.clone()),
        };
        self.0.lock().expect("reports").push((*index, outcome));
    }
}

/// A producer whose delivery reports land in `Reports`. `settings` add to
/// (or override) the shared client config.
pub fn producer(bootstrap: &str, settings: &[(&str, &str)]) -> (BaseProducer<Reports>, Reports) {
    let mut config = config(bootstrap);
    for (key, value) in settings {
        config.set(*key, *value);
    }
    let reports = Reports::default();
    let producer = config
        .create_with_context(reports.clone())
        .expect("creating a producer");
    (producer, reports)
}

/// Send `record` (index `index` in the test's list) to `topic`, to
/// `partition` or by the key's hash when `None`; retries while the local
/// queue is full.
pub fn send(
    producer: &BaseProducer<Reports>,
    topic: &str,
    partition: Option<i32>,
    index: usize,
    record: &Record,
) {
    let mut headers = OwnedHeaders::new();
    for (key, value) in &record.headers {
        headers = headers.insert(rdkafka::message::Header {
            key,
            value: value.as_deref(),
        });
    }
    let mut base: BaseRecord<'_, [u8], [u8], Box<usize>> =
        BaseRecord::with_opaque_to(topic, Box::new(index)).headers(headers);
    if let Some(key) = &record.key {
        base = base.key(key.as_slice());
    }
    if let Some(value) = &record.value {
        base = base.payload(value.as_slice());
    }
    if let Some(partition) = partition {
        base = base.partition(partition);
    }
    loop {
        match producer.send(base) {
            Ok(()) => return,
            Err((
                KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                back,
            )) => {
                base = back;
                producer.poll(Duration::from_millis(50));
            }
            Err((error, _)) => panic!("producing record {index} to {topic}: {error}"),
        }
    }
}

/// Produce every record and wait for all delivery reports; panics on any
/// failed delivery. Returns (partition, offset) per record, in record order.
pub fn produce_all(
    bootstrap: &str,
    topic: &str,
    partition: Option<i32>,
    records: &[Record],
    settings: &[(&str, &str)],
) -> Vec<(i32, i64)> {
    let (producer, reports) = producer(bootstrap, settings);
    for (index, record) in records.iter().enumerate() {
        send(&producer, topic, partition, index, record);
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(60))
        .unwrap_or_else(|error| panic!("flushing the producer: {error}"));
    let reports = std::mem::take(&mut *reports.0.lock().expect("reports"));
    assert_eq!(
        reports.len(),
        records.len(),
        "one delivery report per record"
    );
    let mut placed = vec![(-1, -1); records.len()];
    for (index, outcome) in reports {
        placed[index] =
            outcome.unwrap_or_else(|error| panic!("record {index} was not delivered: {error}"));
    }
    placed
}

/// Produce `records` to partition 0 of `topic` with acks=all, one record per
/// batch (so small segments roll often); returns their offsets in order.
pub fn produce_one_per_batch(bootstrap: &str, topic: &str, records: &[Record]) -> Vec<i64> {
    produce_all(
        bootstrap,
        topic,
        Some(0),
        records,
        &[
            ("acks", "all"),
            ("batch.num.messages", "1"),
            ("linger.ms", "0"),
        ],
    )
    .into_iter()
    .map(|(_, offset)| offset)
    .collect()
}

/// A consumer assigned partitions `0..partitions` of `topic` from their
/// start, reporting each partition's end (enable.partition.eof), reading
/// committed records only when `committed` (read_committed: up to the last
/// stable offset); no group membership, no commits.
pub fn reader_from_start(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    committed: bool,
) -> BaseConsumer {
    let consumer: BaseConsumer = config(bootstrap)
        .set("group.id", "test-reader")
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
    consumer
}

/// The values of `topic`'s partitions, in order, read from the start up
/// to the end the isolation level allows (the last stable offset for
/// read_committed, the high watermark otherwise).
pub fn read_values(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    committed: bool,
) -> Vec<(i32, String)> {
    let consumer = reader_from_start(bootstrap, topic, partitions, committed);
    let mut at_end = BTreeSet::new();
    let mut values = Vec::new();
    let deadline = Instant::now() + CALL_TIMEOUT;
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
