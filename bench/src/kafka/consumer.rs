//! The native consumer: manual partition assignment (no consumer group),
//! one Fetch in flight per leader connection, long-polling.
//!
//! It reads every record's value for the send timestamp the producers put
//! at its start and records the end-to-end latency (receive time minus that
//! timestamp) of records sent inside the measured window. Positions are
//! published in [`Positions`] so that the run can tell when the consumers
//! have caught up with everything the producers wrote.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, TopicName, fetch_request::FetchPartition, fetch_request::FetchTopic,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::mpsc;

use super::producer::Control;
use super::records::{TIMESTAMP_SIZE, read_batches};
use super::{Connection, Incoming, Versions, decode_response, error_name};
use crate::stats::{Clock, Recorder};

/// Next offset to read per partition, shared with the run.
#[derive(Debug)]
pub struct Positions {
    pub offsets: HashMap<i32, AtomicI64>,
}

impl Positions {
    pub fn new(start: &HashMap<i32, i64>) -> Positions {
        Positions {
            offsets: start
                .iter()
                .map(|(partition, offset)| (*partition, AtomicI64::new(*offset)))
                .collect(),
        }
    }

    pub fn get(&self, partition: i32) -> Option<i64> {
        self.offsets
            .get(&partition)
            .map(|offset| offset.load(Ordering::Acquire))
    }

    /// Whether every partition has reached `ends`.
    pub fn reached(&self, ends: &HashMap<i32, i64>) -> bool {
        ends.iter()
            .all(|(partition, end)| self.get(*partition).is_some_and(|offset| offset >= *end))
    }
}

#[derive(Clone, Debug)]
pub struct ConsumerSettings {
    pub topic: String,
    /// (partition index, leader address) of the partitions assigned.
    pub partitions: Vec<(i32, String)>,
    pub max_wait: Duration,
    pub fetch_bytes_max: i32,
    pub partition_fetch_bytes_max: i32,
    pub request_timeout: Duration,
}

/// Fetch until told to stop.
pub async fn run(
    settings: ConsumerSettings,
    versions: Versions,
    clock: Clock,
    recorder: Arc<Recorder>,
    positions: Arc<Positions>,
    control: Arc<Control>,
    connect_timeout: Duration,
) -> anyhow::Result<()> {
    let fetch_version = versions.pick(ApiKey::Fetch)?;
    let (sink, mut responses) = mpsc::unbounded_channel::<Incoming>();
    let mut addresses: Vec<String> = Vec::new();
    let mut assigned: Vec<Vec<i32>> = Vec::new();
    for (index, address) in &settings.partitions {
        match addresses.iter().position(|known| known == address) {
            Some(node) => assigned[node].push(*index),
            None => {
                addresses.push(address.clone());
                assigned.push(vec![*index]);
            }
        }
    }
    let mut connections = Vec::new();
    for (tag, address) in addresses.iter().enumerate() {
        connections.push(Connection::connect(address, connect_timeout, tag, sink.clone()).await?);
    }
    drop(sink);
    // Correlation id of each connection's fetch in flight.
    let mut in_flight: Vec<Option<i32>> = vec![None; connections.len()];
    loop {
        if control.stopping() {
            return Ok(());
        }
        for (node, connection) in connections.iter_mut().enumerate() {
            if in_flight[node].is_none() {
                let request = fetch_request(&settings, &assigned[node], &positions);
                in_flight[node] = Some(connection.send(&request, fetch_version)?);
            }
        }
        let incoming = tokio::select! {
            incoming = responses.recv() => incoming,
            () = tokio::time::sleep(settings.request_timeout) => {
                bail!("no Fetch answer within {:?}", settings.request_timeout)
            }
            () = control.stopped.notified() => continue,
        };
        let incoming = incoming.ok_or_else(|| anyhow!("every consumer connection closed"))?;
        let node = incoming.tag;
        let address = addresses
            .get(node)
            .cloned()
            .ok_or_else(|| anyhow!("answer from unknown connection {node}"))?;
        let frame = incoming
            .frame
            .with_context(|| format!("connection to {address} lost"))?;
        let expected = in_flight
            .get_mut(node)
            .and_then(Option::take)
            .ok_or_else(|| anyhow!("{address} answered a fetch that was not sent"))?;
        let (correlation_id, response) = decode_response::<FetchRequest>(frame, fetch_version)?;
        if correlation_id != expected {
            bail!("{address} answered correlation id {correlation_id}, expected {expected}");
        }
        if response.error_code != 0 {
            bail!(
                "Fetch from {address} failed: {}",
                error_name(response.error_code)
            );
        }
        let receive_wall_ns = clock.wall_ns(clock.now_ns());
        for topic in &response.responses {
            for partition in &topic.partitions {
                let index = partition.partition_index;
                if partition.error_code != 0 {
                    recorder.error(1, || {
                        format!(
                            "fetch {}-{index}: {}",
                            settings.topic,
                            error_name(partition.error_code)
                        )
                    });
                    continue;
                }
                let Some(records) = &partition.records else {
                    continue;
                };
                let Some(position) = positions.offsets.get(&index) else {
                    continue;
                };
                let current = position.load(Ordering::Acquire);
                let mut latencies = Vec::new();
                let mut value_bytes = 0_u64;
                let summary = read_batches(records, |value| {
                    value_bytes += value.len() as u64;
                    if let Some(stamp) = value.get(..TIMESTAMP_SIZE) {
                        let mut sent = [0_u8; TIMESTAMP_SIZE];
                        sent.copy_from_slice(stamp);
                        let sent_wall_ns = u64::from_be_bytes(sent);
                        if clock.is_measured(clock.since_start_ns(sent_wall_ns)) {
                            latencies.push(receive_wall_ns.saturating_sub(sent_wall_ns) / 1000);
                        }
                    }
                });
                // A fetch may return batches that start before the position
                // asked for; only what is past the position counts.
                if let Some(next) = summary.next_offset
                    && next > current
                {
                    position.store(next, Ordering::Release);
                    // Compressed batches are counted by their size.
                    let bytes = if value_bytes == 0 {
                        summary.bytes
                    } else {
                        value_bytes
                    };
                    recorder.count(summary.records, bytes);
                    recorder.record_latencies(latencies);
                }
            }
        }
    }
}

fn fetch_request(
    settings: &ConsumerSettings,
    partitions: &[i32],
    positions: &Positions,
) -> FetchRequest {
    let fetch_partitions = partitions
        .iter()
        .map(|index| {
            FetchPartition::default()
                .with_partition(*index)
                .with_fetch_offset(positions.get(*index).unwrap_or(0))
                .with_partition_max_bytes(settings.partition_fetch_bytes_max)
        })
        .collect();
    FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(i32::try_from(settings.max_wait.as_millis()).unwrap_or(i32::MAX))
        .with_min_bytes(1)
        .with_max_bytes(settings.fetch_bytes_max)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(settings.topic.clone())))
                .with_partitions(fetch_partitions),
        ])
}
