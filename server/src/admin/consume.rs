//! `sluice consume TOPIC`: records to stdout, one per line (as the
//! `--record-format` template says, or one JSON object per line with
//! `--format json`).
//!
//! Each partition starts at `--offset` (earliest, latest, N) or the first
//! record at `--timestamp`; with `--group`, at the group's committed offset
//! where it has one. Fetch requests go to each partition's leader
//! (sessionless, read_uncommitted); record batches are split at their
//! length prefix (a fetch may end in a partial batch) and decoded with
//! kafka-protocol's `RecordBatchDecoder`. Control batches (transaction
//! markers) are skipped; compressed batches are refused with a clear error
//! (this build has no codecs).
//!
//! With `--group`, the offsets after the printed records are committed
//! after each fetch round and at the end (an admin commit, generation -1:
//! the group is not joined). `--count` stops after that many records,
//! `--exit-at-end` at the end of every partition; otherwise the command
//! follows the topic until interrupted.

use std::collections::BTreeMap;
use std::io::Write;
use std::ops::RangeInclusive;
use std::process::ExitCode;

use bytes::Bytes;
use kafka_protocol::error::{ParseResponseErrorCode, ResponseError};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Record, RecordBatchDecoder};
use serde_json::json;

use super::AdminError;
use super::args::{ConsumeArgs, StartOffset};
use super::client::check_code;
use super::group::{commit_offsets, fetch_committed};
use super::output::{Format, Progress, stdout_error};
use super::pool::{BrokerPool, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, by_leader};
use super::profile::{self, Target};

/// Fetch v4 is the first that returns record batches v2 with log start
/// offsets; v13 names topics by id.
const FETCH_VERSIONS: RangeInclusive<i16> = 4..=12;
/// How long a broker may hold a fetch that has no data yet.
const FETCH_WAIT_MS: i32 = 500;
/// Bytes per fetch response and per partition (Kafka's consumer defaults
/// are 50 MiB and 1 MiB; the CLI holds a response in memory).
const FETCH_BYTES_MAX: i32 = 16 << 20;
const PARTITION_FETCH_BYTES_MAX: i32 = 1 << 20;
/// Record batch v2 header: base offset (8), length (4), leader epoch (4),
/// magic (1), crc (4), attributes (2), last offset delta (4).
const BATCH_LENGTH_OFFSET: usize = 8;
const BATCH_MAGIC_OFFSET: usize = 16;
const BATCH_ATTRIBUTES_OFFSET: usize = 21;
const BATCH_LAST_OFFSET_DELTA_OFFSET: usize = 23;
const BATCH_HEADER_BYTES: usize = 27;

/// Run `sluice consume TOPIC`.
pub fn run(args: ConsumeArgs) -> ExitCode {
    let result = profile::target(&args.common).and_then(|bootstrap| consume(&bootstrap, &args));
    super::exit("consume", result)
}

/// Where one partition is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    /// The next offset to fetch (the last printed + 1).
    next: i64,
    /// The high watermark from the latest fetch (`None` before one).
    high_watermark: Option<i64>,
    /// The offset last committed for the group.
    committed: Option<i64>,
}

fn consume(bootstrap: &Target, args: &ConsumeArgs) -> Result<(), AdminError> {
    let template = parse_template(&args.record_format)?;
    let mut pool = BrokerPool::connect(bootstrap)?;
    let topic = args.topic.clone();
    let mut layout = pool.existing_topics(std::slice::from_ref(&topic), false)?;
    let all: Vec<i32> = layout
        .topic(&topic)
        .map(|topic| {
            topic
                .partitions
                .iter()
                .map(|partition| partition.partition)
                .collect()
        })
        .unwrap_or_default();
    let partitions: Vec<i32> = if args.partition.is_empty() {
        all.clone()
    } else {
        for partition in &args.partition {
            if !all.contains(partition) {
                return Err(AdminError::PartitionNotFound {
                    topic: topic.clone(),
                    partition: *partition,
                    count: all.len(),
                });
            }
        }
        let mut chosen = args.partition.clone();
        chosen.sort();
        chosen.dedup();
        chosen
    };

    let committed = match &args.group {
        Some(group) => {
            pool.with_coordinator(group, |coordinator| fetch_committed(coordinator, group))?
        }
        None => BTreeMap::new(),
    };
    let start = args.offset.unwrap_or(StartOffset::Earliest);
    let mut positions: BTreeMap<i32, Position> = BTreeMap::new();
    let mut unresolved = Vec::new();
    for partition in &partitions {
        match committed.get(&(topic.clone(), *partition)) {
            Some(offset) => {
                positions.insert(
                    *partition,
                    Position {
                        next: *offset,
                        high_watermark: None,
                        committed: Some(*offset),
                    },
                );
            }
            None => unresolved.push(*partition),
        }
    }
    for (partition, next) in resolve_start(&mut pool, &topic, &unresolved, start, args.timestamp)? {
        positions.insert(
            partition,
            Position {
                next,
                high_watermark: None,
                committed: None,
            },
        );
    }

    let mut printed: u64 = 0;
    let mut progress = Progress::beside_stdout(format!("consumed from {topic}"), args.count);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut result = Ok(());
    'rounds: loop {
        if args.count.is_some_and(|count| printed >= count) {
            break;
        }
        if args.exit_at_end
            && positions.values().all(|position| {
                position
                    .high_watermark
                    .is_some_and(|high_watermark| position.next >= high_watermark)
            })
        {
            break;
        }
        let routed = by_leader(
            &layout,
            positions.keys().map(|partition| (&topic, *partition)),
        );
        let routed = match routed {
            Ok(routed) => routed,
            Err(AdminError::NoLeader { .. }) => {
                std::thread::sleep(super::pool::SETTLE_RETRY_INTERVAL);
                layout = pool.existing_topics(std::slice::from_ref(&topic), false)?;
                continue;
            }
            Err(error) => return Err(error),
        };
        let mut refresh = false;
        for (leader, routed_partitions) in routed {
            let fetched = fetch(
                &mut pool,
                leader,
                &topic,
                routed_partitions.iter().filter_map(|(_, partition)| {
                    Some((*partition, positions.get(partition)?.next))
                }),
                if args.exit_at_end { 0 } else { FETCH_WAIT_MS },
            )?;
            for (partition, answer) in fetched {
                let Some(position) = positions.get_mut(&partition) else {
                    continue;
                };
                let data = match answer {
                    Ok(data) => data,
                    Err(code) if code == ResponseError::OffsetOutOfRange.code() => {
                        if let StartOffset::At(offset) = start
                            && position.committed.is_none()
                            && position.next == offset
                        {
                            return Err(AdminError::Invalid(format!(
                                "offset {offset} is out of range of partition {topic}-{partition}"
                            )));
                        }
                        let reset = if start == StartOffset::Latest {
                            StartOffset::Latest
                        } else {
                            StartOffset::Earliest
                        };
                        let moved = resolve_start(&mut pool, &topic, &[partition], reset, None)?;
                        if let Some(next) = moved.get(&partition) {
                            position.next = *next;
                        }
                        continue;
                    }
                    Err(code) if code.err().is_some_and(|error| error.is_retriable()) => {
                        refresh = true;
                        continue;
                    }
                    Err(code) => {
                        check_code(code, || format!("Fetch {topic}-{partition}"))?;
                        continue;
                    }
                };
                position.high_watermark = Some(data.high_watermark);
                let (records, next) =
                    decode_records(data.records, position.next).map_err(|reason| {
                        AdminError::Failed(format!("{topic}-{partition}: {reason}"))
                    })?;
                for record in records {
                    if args.count.is_some_and(|count| printed >= count) {
                        break;
                    }
                    let line = match args.common.format {
                        Format::Table => render_record(&template, &topic, partition, &record),
                        Format::Json => json_record(&topic, partition, &record),
                    };
                    if let Err(error) = out.write_all(&line) {
                        result = Err(stdout_error(error));
                        break 'rounds;
                    }
                    printed += 1;
                    progress.advance(1);
                    position.next = record.offset + 1;
                }
                if args.count.is_none_or(|count| printed < count) {
                    position.next = position.next.max(next);
                }
            }
        }
        if let Err(error) = out.flush() {
            result = Err(stdout_error(error));
            break;
        }
        if let Some(group) = &args.group {
            commit(&mut pool, group, &topic, &mut positions)?;
        }
        if refresh {
            std::thread::sleep(super::pool::SETTLE_RETRY_INTERVAL);
            layout = pool.existing_topics(std::slice::from_ref(&topic), false)?;
        }
    }
    progress.finish();
    if let Err(error) = out.flush() {
        result = result.and(Err(stdout_error(error)));
    }
    if let Some(group) = &args.group {
        commit(&mut pool, group, &topic, &mut positions)?;
    }
    result
}

/// Commit every position that moved since its last commit.
fn commit(
    pool: &mut BrokerPool,
    group: &str,
    topic: &str,
    positions: &mut BTreeMap<i32, Position>,
) -> Result<(), AdminError> {
    let moved: Vec<(String, i32, i64)> = positions
        .iter()
        .filter(|(_, position)| position.committed != Some(position.next))
        .map(|(partition, position)| (topic.to_string(), *partition, position.next))
        .collect();
    if moved.is_empty() {
        return Ok(());
    }
    pool.with_coordinator(group, |coordinator| {
        commit_offsets(coordinator, group, &moved)
    })?;
    for (_, partition, offset) in moved {
        if let Some(position) = positions.get_mut(&partition) {
            position.committed = Some(offset);
        }
    }
    Ok(())
}

/// The first offset to read of each partition for `start` (or the first
/// record at `timestamp`, the log end when there is none).
fn resolve_start(
    pool: &mut BrokerPool,
    topic: &str,
    partitions: &[i32],
    start: StartOffset,
    timestamp: Option<i64>,
) -> Result<BTreeMap<i32, i64>, AdminError> {
    let query = |timestamp: i64| -> Vec<(String, i32, i64)> {
        partitions
            .iter()
            .map(|partition| (topic.to_string(), *partition, timestamp))
            .collect()
    };
    let by_partition = |answers: BTreeMap<(String, i32), i64>| -> BTreeMap<i32, i64> {
        answers
            .into_iter()
            .map(|((_, partition), offset)| (partition, offset))
            .collect()
    };
    if let Some(timestamp) = timestamp {
        let found = by_partition(pool.list_offsets(&query(timestamp))?);
        let ends = by_partition(pool.list_offsets(&query(LATEST_TIMESTAMP))?);
        return Ok(partitions
            .iter()
            .map(|partition| {
                let offset = match found.get(partition) {
                    Some(offset) if *offset >= 0 => *offset,
                    _ => ends.get(partition).copied().unwrap_or(0),
                };
                (*partition, offset)
            })
            .collect());
    }
    Ok(match start {
        StartOffset::Earliest => by_partition(pool.list_offsets(&query(EARLIEST_TIMESTAMP))?),
        StartOffset::Latest => by_partition(pool.list_offsets(&query(LATEST_TIMESTAMP))?),
        StartOffset::At(offset) => partitions
            .iter()
            .map(|partition| (*partition, offset))
            .collect(),
    })
}

/// What a Fetch answered for one partition.
struct FetchedData {
    high_watermark: i64,
    records: Bytes,
}

/// One partition of a Fetch answer: its data or its error code.
type FetchAnswer = (i32, Result<FetchedData, i16>);

/// One Fetch of `partitions` (partition, offset) from `leader`: per
/// partition its data or its error code.
fn fetch(
    pool: &mut BrokerPool,
    leader: i32,
    topic: &str,
    partitions: impl Iterator<Item = (i32, i64)>,
    max_wait_ms: i32,
) -> Result<Vec<FetchAnswer>, AdminError> {
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_BYTES_MAX)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(
                    partitions
                        .map(|(partition, offset)| {
                            FetchPartition::default()
                                .with_partition(partition)
                                .with_current_leader_epoch(-1)
                                .with_fetch_offset(offset)
                                .with_last_fetched_epoch(-1)
                                .with_log_start_offset(-1)
                                .with_partition_max_bytes(PARTITION_FETCH_BYTES_MAX)
                        })
                        .collect(),
                ),
        ]);
    let connection = pool.broker(leader)?;
    let version = connection.negotiate(ApiKey::Fetch, FETCH_VERSIONS)?;
    let response = connection.send(&request, version)?;
    check_code(response.error_code, || format!("Fetch {topic}"))?;
    let mut answers = Vec::new();
    for topic_response in response.responses {
        for partition in topic_response.partitions {
            let answer = if partition.error_code.is_ok() {
                Ok(FetchedData {
                    high_watermark: partition.high_watermark,
                    records: partition.records.unwrap_or_default(),
                })
            } else {
                Err(partition.error_code)
            };
            answers.push((partition.partition_index, answer));
        }
    }
    Ok(answers)
}

/// The data records at or after `from` in `records` (whole batches; a
/// partial batch at the end is left for the next fetch), and the offset
/// after the last whole batch (control batches included, so that a
/// partition ending in transaction markers is read past them).
fn decode_records(mut records: Bytes, from: i64) -> Result<(Vec<Record>, i64), String> {
    let mut decoded = Vec::new();
    let mut next = from;
    while records.len() >= BATCH_HEADER_BYTES {
        let length = i32::from_be_bytes(read4(&records, BATCH_LENGTH_OFFSET));
        let Some(total) = usize::try_from(length)
            .ok()
            .map(|length| length + BATCH_LENGTH_OFFSET + 4)
        else {
            return Err(format!("record batch with length {length}"));
        };
        if records.len() < total {
            break;
        }
        let mut batch = records.split_to(total);
        let base_offset = i64::from_be_bytes(read8(&batch, 0));
        let magic = batch[BATCH_MAGIC_OFFSET];
        if magic != 2 {
            return Err(format!(
                "the batch at offset {base_offset} is in message format v{magic}; \
                 only record batches v2 are read"
            ));
        }
        let attributes = i16::from_be_bytes([
            batch[BATCH_ATTRIBUTES_OFFSET],
            batch[BATCH_ATTRIBUTES_OFFSET + 1],
        ]);
        let codec = attributes & 0x7;
        if codec != 0 {
            let name = match codec {
                1 => "gzip",
                2 => "snappy",
                3 => "lz4",
                4 => "zstd",
                _ => "an unknown codec",
            };
            return Err(format!(
                "the batch at offset {base_offset} is compressed with {name}, which this \
                 build of sluice cannot decompress"
            ));
        }
        let last_offset_delta = i32::from_be_bytes(read4(&batch, BATCH_LAST_OFFSET_DELTA_OFFSET));
        next = next.max(base_offset + i64::from(last_offset_delta) + 1);
        let set = RecordBatchDecoder::decode(&mut batch)
            .map_err(|error| format!("the batch at offset {base_offset}: {error}"))?;
        decoded.extend(
            set.records
                .into_iter()
                .filter(|record| !record.control && record.offset >= from),
        );
    }
    Ok((decoded, next))
}

fn read4(bytes: &[u8], at: usize) -> [u8; 4] {
    [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]
}

fn read8(bytes: &[u8], at: usize) -> [u8; 8] {
    let mut out = [0; 8];
    out.copy_from_slice(&bytes[at..at + 8]);
    out
}

/// One piece of a `--record-format` template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(Vec<u8>),
    Value,
    Key,
    Topic,
    Partition,
    Offset,
    Timestamp,
    Headers,
}

/// Parse `%v %k %t %p %o %T %h %%` and `\n \t \\` in `template`.
fn parse_template(template: &str) -> Result<Vec<Piece>, AdminError> {
    let mut pieces = Vec::new();
    let mut text = Vec::new();
    let mut characters = template.chars();
    while let Some(character) = characters.next() {
        let piece = match character {
            '%' => match characters.next() {
                Some('v') => Piece::Value,
                Some('k') => Piece::Key,
                Some('t') => Piece::Topic,
                Some('p') => Piece::Partition,
                Some('o') => Piece::Offset,
                Some('T') => Piece::Timestamp,
                Some('h') => Piece::Headers,
                Some('%') => {
                    text.push(b'%');
                    continue;
                }
                other => {
                    return Err(AdminError::Invalid(format!(
                        "--record-format {template:?}: unknown placeholder %{}; use %v %k %t %p %o %T %h or %%",
                        other.map(String::from).unwrap_or_default()
                    )));
                }
            },
            '\\' => {
                match characters.next() {
                    Some('n') => text.push(b'\n'),
                    Some('t') => text.push(b'\t'),
                    Some('\\') => text.push(b'\\'),
                    Some(other) => {
                        text.push(b'\\');
                        text.extend_from_slice(other.to_string().as_bytes());
                    }
                    None => text.push(b'\\'),
                }
                continue;
            }
            other => {
                let mut buffer = [0; 4];
                text.extend_from_slice(other.encode_utf8(&mut buffer).as_bytes());
                continue;
            }
        };
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
        }
        pieces.push(piece);
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

/// `record` as the template says (key and value bytes as they are; an
/// absent key or value prints as nothing).
fn render_record(template: &[Piece], topic: &str, partition: i32, record: &Record) -> Vec<u8> {
    let mut line = Vec::new();
    for piece in template {
        match piece {
            Piece::Text(text) => line.extend_from_slice(text),
            Piece::Value => line.extend_from_slice(record.value.as_deref().unwrap_or_default()),
            Piece::Key => line.extend_from_slice(record.key.as_deref().unwrap_or_default()),
            Piece::Topic => line.extend_from_slice(topic.as_bytes()),
            Piece::Partition => line.extend_from_slice(partition.to_string().as_bytes()),
            Piece::Offset => line.extend_from_slice(record.offset.to_string().as_bytes()),
            Piece::Timestamp => line.extend_from_slice(record.timestamp.to_string().as_bytes()),
            Piece::Headers => {
                for (index, (key, value)) in record.headers.iter().enumerate() {
                    if index > 0 {
                        line.push(b',');
                    }
                    line.extend_from_slice(key.as_bytes());
                    line.push(b'=');
                    line.extend_from_slice(value.as_deref().unwrap_or_default());
                }
            }
        }
    }
    line
}

/// `record` as one JSON object and a newline (bytes that are not UTF-8 are
/// replaced by U+FFFD).
fn json_record(topic: &str, partition: i32, record: &Record) -> Vec<u8> {
    let text = |bytes: &Option<Bytes>| {
        bytes
            .as_ref()
            .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
    };
    let headers: serde_json::Map<String, serde_json::Value> = record
        .headers
        .iter()
        .map(|(key, value)| (key.to_string(), json!(text(value))))
        .collect();
    let mut line = json!({
        "topic": topic,
        "partition": partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "key": text(&record.key),
        "value": text(&record.value),
        "headers": headers,
    })
    .to_string()
    .into_bytes();
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::records::{
        Compression, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    fn record(offset: i64, key: Option<&'static str>, value: &'static str) -> Record {
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence: -1,
            timestamp: 1000 + offset,
            key: key.map(|key| Bytes::from_static(key.as_bytes())),
            value: Some(Bytes::from_static(value.as_bytes())),
            headers: IndexMap::new(),
        }
    }

    fn batches(records: &[Record]) -> Bytes {
        let mut buffer = BytesMut::new();
        for record in records {
            RecordBatchEncoder::encode(
                &mut buffer,
                std::slice::from_ref(record),
                &RecordEncodeOptions {
                    version: 2,
                    compression: Compression::None,
                },
            )
            .unwrap_or_default();
        }
        buffer.freeze()
    }

    #[test]
    fn records_before_the_position_and_partial_batches_are_skipped() {
        let bytes = batches(&[
            record(5, None, "a"),
            record(6, None, "b"),
            record(7, None, "c"),
        ]);
        let (records, next) = decode_records(bytes.clone(), 6).unwrap_or_default();
        let offsets: Vec<i64> = records.iter().map(|record| record.offset).collect();
        assert_eq!(offsets, vec![6, 7]);
        assert_eq!(next, 8);
        // Cut in the last batch: only the whole ones are read.
        let cut = bytes.slice(..bytes.len() - 3);
        let (records, next) = decode_records(cut, 5).unwrap_or_default();
        assert_eq!(records.len(), 2);
        assert_eq!(next, 7);
    }

    #[test]
    fn templates_print_the_record_fields() {
        let template = parse_template("%t/%p@%o %k=%v\\n").unwrap_or_default();
        let line = render_record(&template, "events", 2, &record(9, Some("k"), "v"));
        assert_eq!(line, b"events/2@9 k=v\n".to_vec());
        assert!(parse_template("%x").is_err());
        let plain = parse_template("%v\\n").unwrap_or_default();
        assert_eq!(
            render_record(&plain, "t", 0, &record(0, None, "hello")),
            b"hello\n".to_vec()
        );
    }

    #[test]
    fn json_records_parse_back() {
        let line = json_record("t", 1, &record(3, Some("k"), "v"));
        let value: serde_json::Value = serde_json::from_slice(&line).unwrap_or_default();
        assert_eq!(value["offset"], 3);
        assert_eq!(value["key"], "k");
        assert_eq!(value["value"], "v");
    }
}
