//! Building uncompressed record batches v2, for tests and benchmarks.
//!
//! The encoding is the standard one Kafka's Java producer and librdkafka
//! write: records with attributes 0, offsetDelta = index, timestampDelta from
//! the first record's timestamp, minimal zigzag varints; a header with
//! baseTimestamp = first record's timestamp, maxTimestamp = the largest record
//! timestamp, lastOffsetDelta = count - 1 and the CRC-32C over attributes..end.
//! Every built batch passes [`super::validate`].
//!
//! Not used on the produce path (the engine stores producers' bytes); no
//! compression and no control batches.

use bytes::{BufMut, Bytes, BytesMut};

use super::layout;
use super::varint::{put_varint, put_varlong, varint_size, varlong_size};
use crate::constants::BATCH_HEADER_SIZE;
use crate::types::{LeaderEpoch, Offset, TimestampMs};

#[derive(Clone, Debug)]
struct PendingRecord {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp: TimestampMs,
}

/// Builds one uncompressed record batch v2 from records added in offset
/// order.
///
/// Defaults match what a plain (non-idempotent) Java producer sends:
/// baseOffset 0, partitionLeaderEpoch -1, producerId/producerEpoch/
/// baseSequence -1, CreateTime, not transactional.
///
/// ```
/// use sluice_engine::batch::{BatchBuilder, validate};
/// use sluice_engine::types::TimestampMs;
///
/// let batch = BatchBuilder::new()
///     .record(Some(&b"key"[..]), Some(&b"value"[..]), TimestampMs(1_700_000_000_000))
///     .record(None, Some(&b"second"[..]), TimestampMs(1_700_000_000_005))
///     .build();
/// let header = validate(&batch, 1 << 20).unwrap();
/// assert_eq!(header.records_count(), 2);
/// ```
#[derive(Clone, Debug)]
pub struct BatchBuilder {
    base_offset: Offset,
    partition_leader_epoch: LeaderEpoch,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    transactional: bool,
    log_append_time: Option<TimestampMs>,
    records: Vec<PendingRecord>,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        BatchBuilder::new()
    }
}

impl BatchBuilder {
    pub fn new() -> BatchBuilder {
        BatchBuilder {
            base_offset: Offset::ZERO,
            partition_leader_epoch: LeaderEpoch(-1),
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            transactional: false,
            log_append_time: None,
            records: Vec::new(),
        }
    }

    pub fn base_offset(&mut self, base_offset: Offset) -> &mut Self {
        self.base_offset = base_offset;
        self
    }

    pub fn partition_leader_epoch(&mut self, leader_epoch: LeaderEpoch) -> &mut Self {
        self.partition_leader_epoch = leader_epoch;
        self
    }

    /// Idempotent producer fields.
    pub fn producer(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    ) -> &mut Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Set the isTransactional attribute (a real transactional batch also
    /// has a producer id, see [`BatchBuilder::producer`]).
    pub fn transactional(&mut self, transactional: bool) -> &mut Self {
        self.transactional = transactional;
        self
    }

    /// Mark the batch LogAppendTime with `append_time` as its maxTimestamp,
    /// as a broker does on a topic with message.timestamp.type=LogAppendTime.
    /// Record timestamps are still encoded as given (the broker leaves them).
    pub fn log_append_time(&mut self, append_time: TimestampMs) -> &mut Self {
        self.log_append_time = Some(append_time);
        self
    }

    /// Add a record without headers.
    pub fn record(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: TimestampMs,
    ) -> &mut Self {
        self.record_with_headers(key, value, &[], timestamp)
    }

    /// Add a record; header values may be null.
    pub fn record_with_headers(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
        timestamp: TimestampMs,
    ) -> &mut Self {
        self.records.push(PendingRecord {
            key: key.map(<[u8]>::to_vec),
            value: value.map(<[u8]>::to_vec),
            headers: headers
                .iter()
                .map(|(key, value)| ((*key).to_owned(), value.map(<[u8]>::to_vec)))
                .collect(),
            timestamp,
        });
        self
    }

    pub fn records_count(&self) -> usize {
        self.records.len()
    }

    /// Encode the batch. Panics when no record was added (Kafka has no empty
    /// batches) or when the batch would not fit batchLength's i32.
    pub fn build(&self) -> Bytes {
        let Some(first) = self.records.first() else {
            panic!("a batch needs at least one record");
        };
        let records_count = length_i32(self.records.len());
        let base_timestamp = first.timestamp;
        let max_timestamp = match self.log_append_time {
            Some(append_time) => append_time,
            None => self
                .records
                .iter()
                .map(|record| record.timestamp)
                .max()
                .unwrap_or(base_timestamp),
        };
        let mut attributes: i16 = 0; // compression none
        if self.log_append_time.is_some() {
            attributes |= super::attribute::LOG_APPEND_TIME;
        }
        if self.transactional {
            attributes |= super::attribute::TRANSACTIONAL;
        }

        let mut batch = BytesMut::with_capacity(BATCH_HEADER_SIZE + 64 * self.records.len());
        batch.put_i64(self.base_offset.value());
        batch.put_i32(0); // batchLength, patched below
        batch.put_i32(self.partition_leader_epoch.0);
        batch.put_i8(layout::MAGIC_V2);
        batch.put_u32(0); // crc, patched below
        batch.put_i16(attributes);
        batch.put_i32(records_count - 1);
        batch.put_i64(base_timestamp.0);
        batch.put_i64(max_timestamp.0);
        batch.put_i64(self.producer_id);
        batch.put_i16(self.producer_epoch);
        batch.put_i32(self.base_sequence);
        batch.put_i32(records_count);
        assert_eq!(batch.len(), BATCH_HEADER_SIZE);

        for (offset_delta, record) in (0_i32..).zip(&self.records) {
            encode_record(&mut batch, record, offset_delta, base_timestamp);
        }

        let batch_length = length_i32(batch.len() - layout::LOG_OVERHEAD);
        batch[layout::BATCH_LENGTH_AT..layout::BATCH_LENGTH_AT + 4]
            .copy_from_slice(&batch_length.to_be_bytes());
        let crc = crc32c::crc32c(&batch[layout::CRC_COVERED_FROM..]);
        batch[layout::CRC_AT..layout::CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        batch.freeze()
    }
}

fn length_i32(length: usize) -> i32 {
    i32::try_from(length).unwrap_or_else(|_| panic!("length {length} does not fit an i32"))
}

fn nullable_size(bytes: Option<&[u8]>) -> usize {
    match bytes {
        None => varint_size(-1),
        Some(bytes) => varint_size(length_i32(bytes.len())) + bytes.len(),
    }
}

fn put_nullable(out: &mut BytesMut, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(out, -1),
        Some(bytes) => {
            put_varint(out, length_i32(bytes.len()));
            out.put_slice(bytes);
        }
    }
}

/// Append one record: its length varint, then the body. The length is
/// computed first and checked against what was written.
fn encode_record(
    out: &mut BytesMut,
    record: &PendingRecord,
    offset_delta: i32,
    base_timestamp: TimestampMs,
) {
    let timestamp_delta = record.timestamp.0.wrapping_sub(base_timestamp.0);
    let headers_count = length_i32(record.headers.len());
    let headers_size: usize = record
        .headers
        .iter()
        .map(|(key, value)| nullable_size(Some(key.as_bytes())) + nullable_size(value.as_deref()))
        .sum();
    let body_size = 1
        + varlong_size(timestamp_delta)
        + varint_size(offset_delta)
        + nullable_size(record.key.as_deref())
        + nullable_size(record.value.as_deref())
        + varint_size(headers_count)
        + headers_size;
    put_varint(out, length_i32(body_size));
    let body_start = out.len();
    out.put_u8(0); // attributes
    put_varlong(out, timestamp_delta);
    put_varint(out, offset_delta);
    put_nullable(out, record.key.as_deref());
    put_nullable(out, record.value.as_deref());
    put_varint(out, headers_count);
    for (key, value) in &record.headers {
        put_nullable(out, Some(key.as_bytes()));
        put_nullable(out, value.as_deref());
    }
    assert_eq!(
        out.len() - body_start,
        body_size,
        "record size computed wrong"
    );
}

/// A batch of `records_count` records without key or headers, each with a
/// `value_size`-byte value (a deterministic byte pattern that varies by
/// record) and timestamp `timestamp`.
pub fn simple_batch(records_count: usize, value_size: usize, timestamp: TimestampMs) -> Bytes {
    let mut builder = BatchBuilder::new();
    let mut value = vec![0_u8; value_size];
    for index in 0..records_count {
        for (position, byte) in value.iter_mut().enumerate() {
            // Truncation to a byte is the point: a cheap varying pattern.
            *byte = (index.wrapping_mul(31).wrapping_add(position) % 251) as u8;
        }
        builder.record(None, Some(&value), timestamp);
    }
    builder.build()
}
