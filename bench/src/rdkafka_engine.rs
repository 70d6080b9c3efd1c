//! `--client rdkafka`: the same workload driven by librdkafka (rdkafka
//! crate), an independent client to check the native one against.
//!
//! Each producer is a thread that builds records at the workload's pace and
//! hands them to a `ThreadedProducer` (librdkafka batches, partitions and
//! sends them on its own threads); delivery reports read the send time back
//! from the value and record the publish latency. Each consumer is a thread
//! polling a `BaseConsumer` with a manual assignment (`assign`, never
//! `subscribe`: no consumer group is involved).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::kafka::consumer::Positions;
use crate::kafka::producer::Control;
use crate::kafka::records::TIMESTAMP_SIZE;
use crate::stats::{Clock, Recorder, SplitMix64};
use crate::workload::{Keys, Workload, acks_name};

const FILLER: u8 = b'r';

struct DeliveryContext {
    clock: Clock,
    recorder: Arc<Recorder>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(message) => {
                let payload = message.payload().unwrap_or(&[]);
                self.recorder.count(1, payload.len() as u64);
                if let Some(sent_wall_ns) = timestamp_of(payload) {
                    let sent_ns = self.clock.since_start_ns(sent_wall_ns);
                    if self.clock.is_measured(sent_ns) {
                        let ack_ns = self.clock.now_ns();
                        self.recorder
                            .record_latencies([ack_ns.saturating_sub(sent_ns) / 1000]);
                    }
                }
            }
            Err((error, _)) => self
                .recorder
                .error(1, || format!("rdkafka delivery: {error}")),
        }
    }
}

fn timestamp_of(value: &[u8]) -> Option<u64> {
    let stamp: [u8; TIMESTAMP_SIZE] = value.get(..TIMESTAMP_SIZE)?.try_into().ok()?;
    Some(u64::from_be_bytes(stamp))
}

fn base_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("client.id", "sluice-bench-rdkafka")
        .set("log_level", "3");
    config
}

/// Start a producer thread writing to `topic` until `control` says stop,
/// then flushing for at most [`crate::run::DRAIN_TIMEOUT`].
pub fn spawn_producer(
    workload: &Workload,
    bootstrap: &str,
    topic: String,
    clock: Clock,
    recorder: Arc<Recorder>,
    control: Arc<Control>,
    seed: u64,
) -> anyhow::Result<JoinHandle<anyhow::Result<()>>> {
    let mut config = base_config(bootstrap);
    config
        .set("acks", acks_name(workload.acks))
        .set("enable.idempotence", "false")
        .set("compression.type", "none")
        .set(
            "linger.ms",
            format!("{}", workload.linger.as_secs_f64() * 1000.0),
        )
        .set("batch.size", workload.batch_size_bytes.to_string())
        .set(
            "max.in.flight.requests.per.connection",
            workload.in_flight_max.to_string(),
        )
        .set(
            "queue.buffering.max.kbytes",
            (workload.buffer_bytes_max / 1024).max(1).to_string(),
        )
        .set("queue.buffering.max.messages", "10000000")
        .set("message.timeout.ms", "60000");
    let context = DeliveryContext {
        clock,
        recorder: Arc::clone(&recorder),
    };
    let producer: ThreadedProducer<DeliveryContext> = config
        .create_with_context(context)
        .context("creating the rdkafka producer")?;
    let rate = workload.rate_per_producer();
    let value_size = workload.record_size_bytes;
    let keys = Keys::new(workload.keys, workload.key_count);
    std::thread::Builder::new()
        .name("rdkafka-producer".into())
        .spawn(move || {
            let mut random = SplitMix64::new(seed);
            let mut value = vec![FILLER; value_size];
            let start_ns = clock.now_ns();
            let mut built = 0_u64;
            while !control.stopping() {
                let now_ns = clock.now_ns();
                let due = match rate {
                    Some(rate) => ((now_ns.saturating_sub(start_ns) as f64 / 1e9 * rate) as u64)
                        .saturating_sub(built),
                    None => 1024,
                };
                if due == 0 {
                    std::thread::sleep(Duration::from_micros(100));
                    continue;
                }
                for _ in 0..due {
                    if control.stopping() {
                        break;
                    }
                    let sent_ns = match rate {
                        Some(rate) => start_ns + (built as f64 * 1e9 / rate) as u64,
                        None => clock.now_ns(),
                    };
                    value[..TIMESTAMP_SIZE].copy_from_slice(&clock.wall_ns(sent_ns).to_be_bytes());
                    let key = keys.choose(&mut random).map(|(key, _)| key);
                    loop {
                        let mut record = BaseRecord::<[u8], [u8]>::to(&topic).payload(&value);
                        if let Some(key) = key {
                            record = record.key(key);
                        }
                        match producer.send(record) {
                            Ok(()) => break,
                            Err((
                                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                                _,
                            )) => {
                                if control.stopping() {
                                    break;
                                }
                                std::thread::sleep(Duration::from_micros(50));
                            }
                            Err((error, _)) => {
                                recorder.error(1, || format!("rdkafka send: {error}"));
                                break;
                            }
                        }
                    }
                    built += 1;
                }
            }
            producer
                .flush(crate::run::DRAIN_TIMEOUT)
                .context("rdkafka producer flush after the run")?;
            Ok(())
        })
        .context("spawning an rdkafka producer thread")
}

/// Start a consumer thread reading `partitions` of `topic` from the offsets
/// in `positions` until `control` says stop.
pub fn spawn_consumer(
    bootstrap: &str,
    topic: String,
    partitions: Vec<i32>,
    clock: Clock,
    recorder: Arc<Recorder>,
    positions: Arc<Positions>,
    control: Arc<Control>,
) -> anyhow::Result<JoinHandle<anyhow::Result<()>>> {
    let mut config = base_config(bootstrap);
    // librdkafka wants a group.id even for assign(); it stays unused: no
    // subscribe, no commits.
    config
        .set("group.id", "sluice-bench-unused")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .set("fetch.min.bytes", "1");
    let consumer: BaseConsumer = config.create().context("creating the rdkafka consumer")?;
    let mut assignment = TopicPartitionList::new();
    for partition in &partitions {
        let offset = positions.get(*partition).unwrap_or(0);
        assignment
            .add_partition_offset(&topic, *partition, Offset::Offset(offset))
            .context("building the rdkafka assignment")?;
    }
    consumer
        .assign(&assignment)
        .context("assigning partitions to the rdkafka consumer")?;
    std::thread::Builder::new()
        .name("rdkafka-consumer".into())
        .spawn(move || {
            while !control.stopping() {
                let Some(result) = consumer.poll(Duration::from_millis(100)) else {
                    continue;
                };
                match result {
                    Ok(message) => {
                        let payload = message.payload().unwrap_or(&[]);
                        let receive_ns = clock.now_ns();
                        recorder.count(1, payload.len() as u64);
                        if let Some(sent_wall_ns) = timestamp_of(payload) {
                            let sent_ns = clock.since_start_ns(sent_wall_ns);
                            if clock.is_measured(sent_ns) {
                                recorder
                                    .record_latencies([receive_ns.saturating_sub(sent_ns) / 1000]);
                            }
                        }
                        if let Some(position) = positions.offsets.get(&message.partition()) {
                            position.store(message.offset() + 1, Ordering::Release);
                        }
                    }
                    Err(error) => recorder.error(1, || format!("rdkafka consume: {error}")),
                }
            }
            Ok(())
        })
        .context("spawning an rdkafka consumer thread")
}

/// Partitions of `count` assigned to consumer `index` of `consumers`.
pub fn assigned(count: u32, consumers: u32, index: u32) -> Vec<i32> {
    (0..count)
        .filter(|partition| partition % consumers == index)
        .filter_map(|partition| i32::try_from(partition).ok())
        .collect()
}
