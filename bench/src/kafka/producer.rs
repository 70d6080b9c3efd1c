//! The native producer: per-partition batches with batch.size and linger
//! semantics, several Produce requests in flight per connection, paced to a
//! fixed rate or as fast as the broker acknowledges.
//!
//! One producer is one task on the client runtime thread. It owns its
//! batches, its connections (one per partition leader) and the requests in
//! flight, so nothing in it is shared but the [`Recorder`] and [`Control`].
//!
//! Pacing: at a fixed rate, record `k` is due at `start + k / rate`; a record
//! is stamped with that due time, not the time it was built, so a producer
//! that falls behind (broker back-pressure, full buffer) shows it in the
//! latencies (no coordinated omission). At max rate a record is stamped when
//! it is built, which happens as soon as the buffer has room.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, ProduceRequest, TopicName, produce_request::PartitionProduceData,
    produce_request::TopicProduceData,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::{Notify, mpsc};

use super::records::BatchWriter;
use super::{Connection, Incoming, Versions, decode_response, error_name};
use crate::stats::{Clock, Recorder};
use crate::workload::Keys;

/// Most bytes of record batches in one Produce request (Kafka's
/// max.request.size default), beyond the first batch.
const REQUEST_BYTES_MAX: usize = 1 << 20;
/// Records built per turn of the loop at max rate before answers are read.
const BUILD_CHUNK_RECORDS: usize = 4096;
const FILLER: &[u8] = b"sluice-bench payload: 0123456789abcdefghijklmnopqrstuvwxyz";

/// Signals from the run to its producers (and consumers).
#[derive(Debug, Default)]
pub struct Control {
    /// Stop producing; send what is buffered and wait for its answers.
    pub stop: AtomicBool,
    /// Woken every pacing tick (about 100 us) by the run's ticker thread.
    pub tick: Notify,
    /// Woken once when `stop` is set.
    pub stopped: Notify,
}

impl Control {
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.stopped.notify_waiters();
        self.tick.notify_waiters();
    }
}

/// What one producer does.
#[derive(Clone, Debug)]
pub struct ProducerSettings {
    pub topic: String,
    /// (partition index, leader address) for every partition of the topic.
    pub partitions: Vec<(i32, String)>,
    pub value_size_bytes: usize,
    pub keys: Arc<Keys>,
    pub batch_size_bytes: usize,
    pub linger: Duration,
    pub acks: i16,
    pub in_flight_max: usize,
    pub buffer_bytes_max: usize,
    /// Records per second for this producer; `None` = as fast as possible.
    pub rate: Option<f64>,
    pub request_timeout: Duration,
    /// How long to wait for answers after being told to stop.
    pub drain_timeout: Duration,
    pub seed: u64,
}

struct OpenBatch {
    writer: BatchWriter,
    sent_ns: Vec<u64>,
    opened_ns: u64,
}

struct ClosedBatch {
    bytes: Bytes,
    sent_ns: Vec<u64>,
    size_bytes: usize,
}

struct PartitionQueue {
    index: i32,
    node: usize,
    open: Option<OpenBatch>,
    closed: VecDeque<ClosedBatch>,
}

struct InFlight {
    correlation_id: i32,
    batches: Vec<(i32, ClosedBatch)>,
    sent_ns: u64,
}

struct Node {
    connection: Connection,
    in_flight: VecDeque<InFlight>,
}

/// Run one producer until told to stop and drained (or failed).
pub async fn run(
    settings: ProducerSettings,
    versions: Versions,
    clock: Clock,
    recorder: Arc<Recorder>,
    control: Arc<Control>,
    connect_timeout: Duration,
) -> anyhow::Result<()> {
    let produce_version = versions.pick(ApiKey::Produce)?;
    let (sink, mut responses) = mpsc::unbounded_channel::<Incoming>();
    let mut addresses: Vec<String> = Vec::new();
    let mut queues = Vec::with_capacity(settings.partitions.len());
    for (index, address) in &settings.partitions {
        let node = match addresses.iter().position(|known| known == address) {
            Some(node) => node,
            None => {
                addresses.push(address.clone());
                addresses.len() - 1
            }
        };
        queues.push(PartitionQueue {
            index: *index,
            node,
            open: None,
            closed: VecDeque::new(),
        });
    }
    if queues.is_empty() {
        bail!("topic {} has no partitions", settings.topic);
    }
    let mut nodes = Vec::with_capacity(addresses.len());
    for (tag, address) in addresses.iter().enumerate() {
        let connection = Connection::connect(address, connect_timeout, tag, sink.clone()).await?;
        nodes.push(Node {
            connection,
            in_flight: VecDeque::new(),
        });
    }
    drop(sink);
    let mut producer = Producer {
        settings,
        produce_version,
        clock,
        recorder,
        queues,
        nodes,
        queued_bytes: 0,
        sticky: 0,
        built: 0,
        next_slot: 0,
        start_ns: clock.now_ns(),
        random: crate::stats::SplitMix64::new(0),
    };
    producer.random = crate::stats::SplitMix64::new(producer.settings.seed);
    let mut stop_ns: Option<u64> = None;
    loop {
        while let Ok(incoming) = responses.try_recv() {
            producer.answer(incoming)?;
        }
        let now_ns = producer.clock.now_ns();
        if stop_ns.is_none() && control.stopping() {
            stop_ns = Some(now_ns);
        }
        let mut buffer_full = false;
        if stop_ns.is_none() {
            buffer_full = producer.build(now_ns);
        }
        producer.send(now_ns, stop_ns.is_some())?;
        producer.check_timeouts(now_ns)?;
        if let Some(stop_ns) = stop_ns {
            if producer.is_drained() {
                return Ok(());
            }
            if now_ns.saturating_sub(stop_ns)
                > crate::stats::duration_ns(producer.settings.drain_timeout)
            {
                let unanswered = producer.unanswered_records();
                producer.recorder.error(unanswered, || {
                    format!(
                        "{unanswered} records not acknowledged within {:?} after the run ended",
                        producer.settings.drain_timeout
                    )
                });
                return Ok(());
            }
        }
        let more_to_build = stop_ns.is_none() && producer.settings.rate.is_none() && !buffer_full;
        if more_to_build {
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            incoming = responses.recv() => match incoming {
                Some(incoming) => producer.answer(incoming)?,
                None => bail!("every connection of the producer closed"),
            },
            () = control.tick.notified() => {}
        }
    }
}

struct Producer {
    settings: ProducerSettings,
    produce_version: i16,
    clock: Clock,
    recorder: Arc<Recorder>,
    queues: Vec<PartitionQueue>,
    nodes: Vec<Node>,
    queued_bytes: usize,
    /// The partition records without a key go to until its batch closes
    /// (Kafka's sticky partitioner).
    sticky: usize,
    /// Records built so far.
    built: u64,
    /// The partition slot the next request starts from.
    next_slot: usize,
    start_ns: u64,
    random: crate::stats::SplitMix64,
}

impl Producer {
    /// Build the records that are due (fixed rate) or that fit in the
    /// buffer (max rate). Returns whether the buffer is full.
    fn build(&mut self, now_ns: u64) -> bool {
        let (count, interval_ns) = match self.settings.rate {
            Some(rate) => {
                let elapsed_secs = now_ns.saturating_sub(self.start_ns) as f64 / 1e9;
                let due = (elapsed_secs * rate) as u64;
                (due.saturating_sub(self.built), 1e9 / rate)
            }
            None => (BUILD_CHUNK_RECORDS as u64, 0.0),
        };
        for _ in 0..count {
            if self.queued_bytes >= self.settings.buffer_bytes_max {
                return true;
            }
            let sent_ns = match self.settings.rate {
                Some(_) => self.start_ns + (self.built as f64 * interval_ns) as u64,
                None => now_ns,
            };
            self.append(sent_ns);
            self.built += 1;
        }
        self.queued_bytes >= self.settings.buffer_bytes_max
    }

    fn append(&mut self, sent_ns: u64) {
        let keys = Arc::clone(&self.settings.keys);
        let key = keys.choose(&mut self.random);
        let mut slot = match key {
            Some((_, partition_hash)) => (partition_hash % self.queues.len() as u64) as usize,
            None => self.sticky,
        };
        let keyed = key.is_some();
        let key = key.map(|(key, _)| key);
        let value_size = self.settings.value_size_bytes;
        let batch_size = self.settings.batch_size_bytes;
        let record_size = BatchWriter::record_size_bytes(key, value_size);
        // A record that does not fit its partition's open batch closes it.
        // Without a key it then goes to the next sticky partition, as in
        // Kafka's producer (KIP-480: the accumulator aborts the append that
        // would open a new batch and the partitioner picks again). Opening
        // the new batch in the old partition instead left a one-record
        // batch behind each full one, which linger 0 sent on its own: at
        // 1,000 partitions seven of every fifteen batches of a request
        // (issue 11, docs/benchmarks.md, eleventh session).
        while let Some(open) = &self.queues[slot].open
            && open.writer.size_bytes() + record_size > batch_size
        {
            close(&mut self.queues[slot]);
            if keyed {
                break;
            }
            self.sticky = (self.sticky + 1) % self.queues.len();
            slot = self.sticky;
        }
        let queue = &mut self.queues[slot];
        let open = queue.open.get_or_insert_with(|| OpenBatch {
            writer: BatchWriter::new(batch_size.min(16 << 10)),
            sent_ns: Vec::new(),
            opened_ns: sent_ns,
        });
        // A new batch counts its header too; the buffer holds exactly the
        // bytes `send` subtracts when the batch leaves.
        let size_before = if open.sent_ns.is_empty() {
            0
        } else {
            open.writer.size_bytes()
        };
        let timestamp_ms = i64::try_from(self.clock.wall_ns(sent_ns) / 1_000_000).unwrap_or(0);
        open.writer.push(
            key,
            self.clock.wall_ns(sent_ns),
            value_size,
            FILLER,
            timestamp_ms,
        );
        open.sent_ns.push(sent_ns);
        self.queued_bytes += open.writer.size_bytes() - size_before;
    }

    /// Send a Produce request to every node that has room in flight and
    /// batches ready: full ones, ones past linger, or all when draining.
    fn send(&mut self, now_ns: u64, draining: bool) -> anyhow::Result<()> {
        let linger_ns = crate::stats::duration_ns(self.settings.linger);
        for node_index in 0..self.nodes.len() {
            while self.nodes[node_index].in_flight.len() < self.settings.in_flight_max {
                let mut batches: Vec<(i32, ClosedBatch)> = Vec::new();
                let mut request_bytes = 0_usize;
                // Start each request where the previous one stopped, so that
                // when requests cannot take every partition's batch, no
                // partition waits behind the others every time.
                let partition_count = self.queues.len();
                let first = self.next_slot;
                for step in 0..partition_count {
                    let slot = (first + step) % partition_count;
                    let queue = &mut self.queues[slot];
                    if queue.node != node_index {
                        continue;
                    }
                    if queue.closed.is_empty()
                        && let Some(open) = &queue.open
                        && (draining || now_ns >= open.opened_ns + linger_ns)
                    {
                        close(queue);
                        if slot == self.sticky {
                            self.sticky = (self.sticky + 1) % self.queues.len();
                        }
                    }
                    let queue = &mut self.queues[slot];
                    let fits = queue.closed.front().is_some_and(|batch| {
                        batches.is_empty() || request_bytes + batch.size_bytes <= REQUEST_BYTES_MAX
                    });
                    if fits && let Some(batch) = queue.closed.pop_front() {
                        request_bytes += batch.size_bytes;
                        batches.push((queue.index, batch));
                        self.next_slot = (slot + 1) % partition_count;
                    }
                }
                if batches.is_empty() {
                    break;
                }
                self.queued_bytes = self.queued_bytes.saturating_sub(request_bytes);
                self.send_request(node_index, batches, now_ns)?;
            }
        }
        Ok(())
    }

    fn send_request(
        &mut self,
        node_index: usize,
        batches: Vec<(i32, ClosedBatch)>,
        now_ns: u64,
    ) -> anyhow::Result<()> {
        let partition_data = batches
            .iter()
            .map(|(index, batch)| {
                PartitionProduceData::default()
                    .with_index(*index)
                    .with_records(Some(batch.bytes.clone()))
            })
            .collect();
        let request = ProduceRequest::default()
            .with_acks(self.settings.acks)
            .with_timeout_ms(
                i32::try_from(self.settings.request_timeout.as_millis()).unwrap_or(i32::MAX),
            )
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(
                        self.settings.topic.clone(),
                    )))
                    .with_partition_data(partition_data),
            ]);
        let node = &mut self.nodes[node_index];
        let correlation_id = node.connection.send(&request, self.produce_version)?;
        if self.settings.acks == 0 {
            // No answer comes: count the records as sent, without latency.
            for (_, batch) in &batches {
                self.recorder.count(
                    batch.sent_ns.len() as u64,
                    self.value_bytes(batch.sent_ns.len()),
                );
            }
            return Ok(());
        }
        node.in_flight.push_back(InFlight {
            correlation_id,
            batches,
            sent_ns: now_ns,
        });
        Ok(())
    }

    fn value_bytes(&self, records: usize) -> u64 {
        (records * self.settings.value_size_bytes) as u64
    }

    fn answer(&mut self, incoming: Incoming) -> anyhow::Result<()> {
        let node = self
            .nodes
            .get_mut(incoming.tag)
            .ok_or_else(|| anyhow!("answer from unknown connection {}", incoming.tag))?;
        let address = node.connection.address.clone();
        let frame = incoming
            .frame
            .with_context(|| format!("connection to {address} lost"))?;
        let request = node
            .in_flight
            .pop_front()
            .ok_or_else(|| anyhow!("{address} answered a request that was not sent"))?;
        let (correlation_id, response) =
            decode_response::<ProduceRequest>(frame, self.produce_version)?;
        if correlation_id != request.correlation_id {
            bail!(
                "{address} answered correlation id {correlation_id}, expected {}",
                request.correlation_id
            );
        }
        let ack_ns = self.clock.now_ns();
        let mut errors: Vec<(i32, i16)> = Vec::new();
        for topic in &response.responses {
            for partition in &topic.partition_responses {
                if partition.error_code != 0 {
                    errors.push((partition.index, partition.error_code));
                }
            }
        }
        let clock = self.clock;
        let mut acknowledged = 0_usize;
        for (index, batch) in &request.batches {
            if let Some((_, code)) = errors.iter().find(|(failed, _)| failed == index) {
                let topic = &self.settings.topic;
                self.recorder.error(batch.sent_ns.len() as u64, || {
                    format!("produce to {topic}-{index} failed: {}", error_name(*code))
                });
                continue;
            }
            acknowledged += batch.sent_ns.len();
            self.recorder.record_latencies(
                batch
                    .sent_ns
                    .iter()
                    .filter(|sent_ns| clock.is_measured(**sent_ns))
                    .map(|sent_ns| ack_ns.saturating_sub(*sent_ns) / 1000),
            );
        }
        self.recorder
            .count(acknowledged as u64, self.value_bytes(acknowledged));
        Ok(())
    }

    fn check_timeouts(&self, now_ns: u64) -> anyhow::Result<()> {
        let timeout_ns = crate::stats::duration_ns(self.settings.request_timeout);
        for node in &self.nodes {
            if let Some(oldest) = node.in_flight.front()
                && now_ns.saturating_sub(oldest.sent_ns) > timeout_ns
            {
                bail!(
                    "{} did not answer a Produce request within {:?}",
                    node.connection.address,
                    self.settings.request_timeout
                );
            }
        }
        Ok(())
    }

    fn is_drained(&self) -> bool {
        self.queues
            .iter()
            .all(|queue| queue.open.is_none() && queue.closed.is_empty())
            && self.nodes.iter().all(|node| node.in_flight.is_empty())
    }

    fn unanswered_records(&self) -> u64 {
        let queued: usize = self
            .queues
            .iter()
            .map(|queue| {
                queue.open.as_ref().map_or(0, |open| open.sent_ns.len())
                    + queue
                        .closed
                        .iter()
                        .map(|batch| batch.sent_ns.len())
                        .sum::<usize>()
            })
            .sum();
        let in_flight: usize = self
            .nodes
            .iter()
            .flat_map(|node| &node.in_flight)
            .flat_map(|request| &request.batches)
            .map(|(_, batch)| batch.sent_ns.len())
            .sum();
        (queued + in_flight) as u64
    }
}

fn close(queue: &mut PartitionQueue) {
    if let Some(open) = queue.open.take() {
        let size_bytes = open.writer.size_bytes();
        queue.closed.push_back(ClosedBatch {
            bytes: open.writer.finish(),
            sent_ns: open.sent_ns,
            size_bytes,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::KeyDistribution;

    fn producer(partitions: i32, keys: KeyDistribution) -> Producer {
        let settings = ProducerSettings {
            topic: "t".to_string(),
            partitions: (0..partitions)
                .map(|index| (index, "127.0.0.1:9092".to_string()))
                .collect(),
            value_size_bytes: 1024,
            keys: Arc::new(Keys::new(keys, 100)),
            batch_size_bytes: 16 << 10,
            linger: Duration::ZERO,
            acks: -1,
            in_flight_max: 5,
            buffer_bytes_max: 32 << 20,
            rate: None,
            request_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            seed: 1,
        };
        let queues = settings
            .partitions
            .iter()
            .map(|(index, _)| PartitionQueue {
                index: *index,
                node: 0,
                open: None,
                closed: VecDeque::new(),
            })
            .collect();
        let clock = Clock::start(Duration::ZERO);
        let start_ns = clock.now_ns();
        Producer {
            settings,
            produce_version: 9,
            clock,
            recorder: Arc::new(Recorder::new()),
            queues,
            nodes: Vec::new(),
            queued_bytes: 0,
            sticky: 0,
            built: 0,
            next_slot: 0,
            start_ns,
            random: crate::stats::SplitMix64::new(1),
        }
    }

    /// Records per closed batch, over every partition.
    fn closed_batch_records(producer: &Producer) -> Vec<usize> {
        producer
            .queues
            .iter()
            .flat_map(|queue| queue.closed.iter().map(|batch| batch.sent_ns.len()))
            .collect()
    }

    #[test]
    fn a_record_that_overflows_the_sticky_batch_starts_the_next_partition() {
        let mut producer = producer(1000, KeyDistribution::None);
        for _ in 0..200 {
            producer.append(0);
        }
        let closed = closed_batch_records(&producer);
        // 16 KiB batches of 1 KiB records: every closed batch is full, and
        // only the sticky partition holds an open one (no one-record batch
        // left behind in the partition the sticky one moved from).
        assert!(closed.len() >= 10, "{closed:?}");
        let full = closed[0];
        assert!(
            full > 1 && closed.iter().all(|records| *records == full),
            "{closed:?}"
        );
        let open: Vec<usize> = producer
            .queues
            .iter()
            .enumerate()
            .filter(|(_, queue)| queue.open.is_some())
            .map(|(slot, _)| slot)
            .collect();
        assert_eq!(open, vec![producer.sticky]);
        assert_eq!(
            closed.iter().sum::<usize>()
                + producer.queues[producer.sticky]
                    .open
                    .as_ref()
                    .map_or(0, |open| open.sent_ns.len()),
            200
        );
    }

    #[test]
    fn a_keyed_record_that_overflows_its_batch_stays_in_its_partition() {
        let mut producer = producer(4, KeyDistribution::Random);
        for _ in 0..400 {
            producer.append(0);
        }
        // Keyed records open their next batch in the partition of their key.
        assert!(producer.queues.iter().all(|queue| queue.open.is_some()));
        let closed = closed_batch_records(&producer);
        let full = closed[0];
        assert!(closed.iter().all(|records| *records == full), "{closed:?}");
    }
}
