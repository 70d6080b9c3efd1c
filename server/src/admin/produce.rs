//! `sluice produce TOPIC`: each stdin line becomes one record (the line
//! without its newline is the value; with `--key-separator` the text
//! before the first separator is the key). Lines are batched per partition
//! (a batch goes out when `--linger-ms` passes without a new line, or when
//! it reaches [`PENDING_BYTES_MAX`]) into record batches v2 built by
//! kafka-protocol's `RecordBatchEncoder`, and sent as Produce requests to
//! each partition's leader.
//!
//! Partitioning follows Kafka's Java client so that keyed records land
//! where other clients would put them: murmur2 of the key, modulo the
//! partition count; records without a key go round-robin. A partition
//! whose leader moved is looked up again and its batch sent again (at
//! least once, like any non-idempotent producer).
//!
//! A reader thread owns stdin, so that the main thread can wait for the
//! next line with a time limit (the linger).

use std::collections::BTreeMap;
use std::io::BufRead;
use std::ops::RangeInclusive;
use std::process::ExitCode;
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use serde::Serialize;

use super::AdminError;
use super::args::{Acks, ProduceArgs};
use super::client::{ClientError, check_code_message};
use super::output::{Format, emit, emit_json, optional, render_table};
use super::pool::{BrokerPool, SETTLE_RETRY_INTERVAL, by_leader};
use super::profile::{self, Target};

/// Produce v3 is the first with record batches v2; v10+ adds nothing the
/// CLI uses, v13 names topics by id.
const PRODUCE_VERSIONS: RangeInclusive<i16> = 3..=9;
/// How long the broker may wait for replicas (Produce timeout_ms).
const PRODUCE_TIMEOUT_MS: i32 = 30_000;
/// Pending bytes that trigger a send, well under Kafka's default
/// max.message.bytes (1 MiB per batch).
const PENDING_BYTES_MAX: usize = 512 << 10;
/// Lines buffered between the stdin reader and the sender.
const LINES_BUFFERED_MAX: usize = 10_000;
/// Sends of one batch before its partition's error is final.
const SEND_ATTEMPTS_MAX: usize = 5;

/// Run `sluice produce TOPIC`.
pub fn run(args: ProduceArgs) -> ExitCode {
    let result = profile::target(&args.common).and_then(|bootstrap| produce(&bootstrap, &args));
    super::exit("produce", result)
}

/// Records written to one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionSummary {
    pub partition: i32,
    pub records: u64,
    /// Offsets of the first and last record written (`None` with acks=0).
    pub first_offset: Option<i64>,
    pub last_offset: Option<i64>,
}

/// One stdin line, split into key and value.
struct Line {
    key: Option<Bytes>,
    value: Bytes,
}

fn produce(bootstrap: &Target, args: &ProduceArgs) -> Result<(), AdminError> {
    let mut pool = BrokerPool::connect(bootstrap)?;
    let topic = args.topic.clone();
    let topics = [topic.clone()];
    let mut layout = pool.existing_topics(&topics, true)?;
    let partition_count = layout
        .topic(&topic)
        .map_or(0, |topic| topic.partitions.len() as i32);
    if let Some(partition) = args.partition
        && partition >= partition_count
    {
        return Err(AdminError::PartitionNotFound {
            topic,
            partition,
            count: partition_count as usize,
        });
    }
    let acks: i16 = match args.acks {
        Acks::All => -1,
        Acks::Leader => 1,
        Acks::None => 0,
    };
    let headers: IndexMap<StrBytes, Option<Bytes>> = args
        .headers
        .iter()
        .map(|(key, value)| {
            (
                StrBytes::from_string(key.clone()),
                Some(Bytes::from(value.clone().into_bytes())),
            )
        })
        .collect();
    let lines = spawn_reader(args.key_separator.clone());
    let linger = Duration::from_millis(args.linger_ms);
    let mut summaries: BTreeMap<i32, PartitionSummary> = BTreeMap::new();
    let mut round_robin: i32 = 0;
    let mut end_of_input = false;
    while !end_of_input {
        // Wait as long as it takes for the first line of a batch, then at
        // most the linger for each next one.
        let mut pending: BTreeMap<i32, Vec<Line>> = BTreeMap::new();
        let mut pending_bytes = 0;
        let mut deadline: Option<Instant> = None;
        loop {
            let received = match deadline {
                None => lines.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(deadline) => {
                    lines.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                }
            };
            let line = match received {
                Ok(line) => line?,
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    end_of_input = true;
                    break;
                }
            };
            let partition = match (args.partition, &line.key) {
                (Some(partition), _) => partition,
                (None, Some(key)) => key_partition(key, partition_count),
                (None, None) => {
                    round_robin = round_robin.wrapping_add(1);
                    round_robin.rem_euclid(partition_count.max(1))
                }
            };
            pending_bytes += line.value.len() + line.key.as_ref().map_or(0, Bytes::len);
            pending.entry(partition).or_default().push(line);
            deadline.get_or_insert_with(|| Instant::now() + linger);
            if pending_bytes >= PENDING_BYTES_MAX {
                break;
            }
        }
        if pending.is_empty() {
            continue;
        }
        let batches: BTreeMap<i32, (Bytes, u64)> = pending
            .into_iter()
            .map(|(partition, lines)| {
                let count = lines.len() as u64;
                encode_batch(&lines, &headers).map(|batch| (partition, (batch, count)))
            })
            .collect::<Result<_, _>>()?;
        let offsets = send_batches(&mut pool, &mut layout, &topic, acks, &batches)?;
        for (partition, (_, count)) in &batches {
            let summary = summaries
                .entry(*partition)
                .or_insert_with(|| PartitionSummary {
                    partition: *partition,
                    records: 0,
                    first_offset: None,
                    last_offset: None,
                });
            summary.records += count;
            if let Some(base_offset) = offsets.get(partition) {
                summary.first_offset.get_or_insert(*base_offset);
                summary.last_offset = Some(base_offset + *count as i64 - 1);
            }
        }
    }
    let summaries: Vec<PartitionSummary> = summaries.into_values().collect();
    match args.common.format {
        Format::Table => {
            let total: u64 = summaries.iter().map(|summary| summary.records).sum();
            let mut text = format!("Produced {total} records to topic {topic}\n\n");
            let rows: Vec<Vec<String>> = summaries
                .iter()
                .map(|summary| {
                    vec![
                        summary.partition.to_string(),
                        summary.records.to_string(),
                        optional(summary.first_offset),
                        optional(summary.last_offset),
                    ]
                })
                .collect();
            text.push_str(&render_table(
                &["PARTITION", "RECORDS", "FIRST-OFFSET", "LAST-OFFSET"],
                &rows,
            ));
            emit(&text)
        }
        Format::Json => emit_json(&serde_json::json!({
            "topic": topic,
            "partitions": summaries,
        })),
    }
}

/// A thread reading stdin lines into a bounded channel; the channel closes
/// at the end of input (after an error, which is the last item).
fn spawn_reader(key_separator: Option<String>) -> Receiver<Result<Line, AdminError>> {
    let (sender, receiver) = sync_channel(LINES_BUFFERED_MAX);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut stdin = stdin.lock();
        let mut number: u64 = 0;
        loop {
            let mut buffer = Vec::new();
            match stdin.read_until(b'\n', &mut buffer) {
                Ok(0) => return,
                Ok(_) => {}
                Err(error) => {
                    let _ = sender.send(Err(AdminError::Io {
                        what: "reading stdin".to_string(),
                        source: error,
                    }));
                    return;
                }
            }
            number += 1;
            if buffer.last() == Some(&b'\n') {
                buffer.pop();
                if buffer.last() == Some(&b'\r') {
                    buffer.pop();
                }
            }
            let line = split_line(buffer, key_separator.as_deref(), number);
            let stop = line.is_err();
            if sender.send(line).is_err() || stop {
                return;
            }
        }
    });
    receiver
}

/// `line` as key and value: split at the first `separator` when there is
/// one; a line without it is an error naming its number.
fn split_line(line: Vec<u8>, separator: Option<&str>, number: u64) -> Result<Line, AdminError> {
    let Some(separator) = separator else {
        return Ok(Line {
            key: None,
            value: Bytes::from(line),
        });
    };
    let separator = separator.as_bytes();
    let position = (!separator.is_empty())
        .then(|| {
            line.windows(separator.len())
                .position(|window| window == separator)
        })
        .flatten()
        .ok_or_else(|| {
            AdminError::Invalid(format!(
                "line {number} has no key separator {:?}",
                String::from_utf8_lossy(separator)
            ))
        })?;
    let line = Bytes::from(line);
    Ok(Line {
        key: Some(line.slice(..position)),
        value: line.slice(position + separator.len()..),
    })
}

/// One record batch v2 (uncompressed, no producer id) of `lines`.
fn encode_batch(
    lines: &[Line],
    headers: &IndexMap<StrBytes, Option<Bytes>>,
) -> Result<Bytes, AdminError> {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64);
    let records: Vec<Record> = lines
        .iter()
        .enumerate()
        .map(|(index, line)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: index as i64,
            // The encoder keeps records in one batch while offset -
            // sequence is constant; the batch's base sequence is the first
            // record's: -1, no sequence.
            sequence: index as i32 - 1,
            timestamp,
            key: line.key.clone(),
            value: Some(line.value.clone()),
            headers: headers.clone(),
        })
        .collect();
    let mut buffer = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buffer,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|error| AdminError::Invalid(format!("encoding a record batch: {error}")))?;
    Ok(buffer.freeze())
}

/// Send each partition's batch to its leader; the base offset of each
/// (none with acks=0). Retriable errors (a leader that moved) are retried
/// after a metadata refresh.
fn send_batches(
    pool: &mut BrokerPool,
    layout: &mut super::pool::ClusterLayout,
    topic: &str,
    acks: i16,
    batches: &BTreeMap<i32, (Bytes, u64)>,
) -> Result<BTreeMap<i32, i64>, AdminError> {
    let topic_name = topic.to_string();
    let mut offsets = BTreeMap::new();
    let mut remaining: Vec<i32> = batches.keys().copied().collect();
    for attempt in 1..=SEND_ATTEMPTS_MAX {
        let mut retry = Vec::new();
        let mut last_error = None;
        let routed = by_leader(
            layout,
            remaining.iter().map(|partition| (&topic_name, *partition)),
        )?;
        for (leader, partitions) in routed {
            let request = ProduceRequest::default()
                .with_acks(acks)
                .with_timeout_ms(PRODUCE_TIMEOUT_MS)
                .with_topic_data(vec![
                    TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_string(topic_name.clone())))
                        .with_partition_data(
                            partitions
                                .iter()
                                .filter_map(|(_, partition)| {
                                    let (batch, _) = batches.get(partition)?;
                                    Some(
                                        PartitionProduceData::default()
                                            .with_index(*partition)
                                            .with_records(Some(batch.clone())),
                                    )
                                })
                                .collect(),
                        ),
                ]);
            let connection = pool.broker(leader)?;
            let version = connection.negotiate(ApiKey::Produce, PRODUCE_VERSIONS)?;
            if acks == 0 {
                connection.send_without_response(&request, version)?;
                continue;
            }
            let response = connection.send(&request, version)?;
            for topic_response in response.responses {
                for partition in topic_response.partition_responses {
                    let code = partition.error_code;
                    match code.err() {
                        None => {
                            offsets.insert(partition.index, partition.base_offset);
                        }
                        Some(error) if error.is_retriable() && attempt < SEND_ATTEMPTS_MAX => {
                            retry.push(partition.index);
                            last_error = Some(error);
                        }
                        Some(_) => {
                            check_code_message(code, partition.error_message.as_ref(), || {
                                format!("Produce to {topic}-{}", partition.index)
                            })?;
                        }
                    }
                }
            }
        }
        if retry.is_empty() {
            return Ok(offsets);
        }
        tracing::debug!(?last_error, attempt, "retrying produce");
        std::thread::sleep(SETTLE_RETRY_INTERVAL);
        *layout = pool.existing_topics(std::slice::from_ref(&topic_name), true)?;
        remaining = retry;
    }
    Err(ClientError::Kafka {
        what: format!("Produce to {topic}: partitions {remaining:?} kept failing"),
        code: kafka_protocol::error::ResponseError::UnknownServerError.code(),
    }
    .into())
}

/// The partition of a keyed record, as Kafka's Java client chooses it:
/// murmur2 of the key, made positive, modulo the partition count.
pub fn key_partition(key: &[u8], partition_count: i32) -> i32 {
    if partition_count <= 0 {
        return 0;
    }
    ((murmur2(key) & 0x7fff_ffff) as i32) % partition_count
}

/// Kafka's `Utils.murmur2` (32-bit MurmurHash2, seed 0x9747b28c).
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len();
    let mut hash = SEED ^ (length as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        hash = hash.wrapping_mul(M);
        hash ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        hash ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        hash ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        hash ^= u32::from(tail[0]);
        hash = hash.wrapping_mul(M);
    }
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(M);
    hash ^= hash >> 15;
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;

    #[test]
    fn murmur2_matches_kafkas_test_vectors() {
        // From Kafka's UtilsTest.testMurmur2.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(
                murmur2(key) as i32,
                expected,
                "{:?}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn lines_split_at_the_first_separator() {
        let line = split_line(b"k1:v:1".to_vec(), Some(":"), 1).ok();
        let line = line.map(|line| (line.key, line.value));
        assert_eq!(
            line,
            Some((Some(Bytes::from_static(b"k1")), Bytes::from_static(b"v:1")))
        );
        assert!(matches!(
            split_line(b"no separator".to_vec(), Some("\t"), 7),
            Err(AdminError::Invalid(message)) if message.contains("line 7")
        ));
        let plain = split_line(b"just a value".to_vec(), None, 1).ok();
        assert_eq!(plain.map(|line| line.key), Some(None));
    }

    #[test]
    fn lines_become_one_batch_that_decodes_back() {
        let lines = vec![
            Line {
                key: Some(Bytes::from_static(b"a")),
                value: Bytes::from_static(b"one"),
            },
            Line {
                key: None,
                value: Bytes::from_static(b"two"),
            },
        ];
        let headers: IndexMap<StrBytes, Option<Bytes>> = [(
            StrBytes::from_static_str("h"),
            Some(Bytes::from_static(b"v")),
        )]
        .into_iter()
        .collect();
        let mut batch = encode_batch(&lines, &headers).unwrap_or_default();
        let sets = RecordBatchDecoder::decode_all(&mut batch).unwrap_or_default();
        assert_eq!(sets.len(), 1, "one batch");
        let records = &sets[0].records;
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].key, Some(Bytes::from_static(b"a")));
        assert_eq!(records[1].value, Some(Bytes::from_static(b"two")));
        assert_eq!(records[1].offset, 1);
        assert_eq!(
            records[0].headers.get(&StrBytes::from_static_str("h")),
            Some(&Some(Bytes::from_static(b"v")))
        );
    }
}
