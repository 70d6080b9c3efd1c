//! Kafka RecordBatch v2: header parsing, validation, in-place patching and
//! record-level timestamp lookup, plus a builder for tests and benchmarks.
//!
//! The engine stores batches exactly as producers sent them, except for two
//! header fields the leader assigns: baseOffset and partitionLeaderEpoch.
//! Both lie before the CRC-covered region, so patching them (see
//! [`patch_base_offset`], [`patch_leader_epoch`]) keeps the stored CRC
//! valid; the [`layout`] constants assert it at compile time.
//!
//! Layout (big-endian; positions in bytes from the batch start):
//!
//! ```text
//!  0 baseOffset i64           21 attributes i16          43 producerId i64
//!  8 batchLength i32          23 lastOffsetDelta i32     51 producerEpoch i16
//! 12 partitionLeaderEpoch i32 27 baseTimestamp i64       53 baseSequence i32
//! 16 magic i8 (= 2)           35 maxTimestamp i64        57 recordsCount i32
//! 17 crc u32 (CRC-32C of bytes 21..end)                  61 records
//! ```
//!
//! batchLength counts the bytes after itself, so a batch occupies
//! `12 + batchLength` bytes. The records format is described in
//! [`records`](mod@records).
//!
//! Trust: nothing here trusts its input. [`validate`] is the gate for bytes
//! from the network (produce) and from disk (recovery); every function that
//! takes bytes returns an error or `None` on bad input rather than panicking,
//! except where a precondition is documented and asserted (a caller bug).
//!
//! Pure functions over byte slices: no I/O, no shared state, callable from
//! any thread.

pub mod build;
pub mod codec;
pub mod records;
mod varint;

#[cfg(test)]
mod tests;

use std::fmt;
use std::ops::Range;

use thiserror::Error;

pub use build::{BatchBuilder, simple_batch};
pub use records::{Record, RecordHeaders, Records, records};

use crate::constants::{BATCH_HEADER_SIZE, BATCH_SIZE_MAX};
use crate::types::{LeaderEpoch, Offset, TimestampMs};

/// Positions of the header fields, in bytes from the start of the batch.
pub mod layout {
    use crate::constants::BATCH_HEADER_SIZE;

    pub const BASE_OFFSET_AT: usize = 0;
    pub const BATCH_LENGTH_AT: usize = 8;
    /// Bytes before and including batchLength, which batchLength does not
    /// count (Kafka's LOG_OVERHEAD).
    pub const LOG_OVERHEAD: usize = 12;
    pub const PARTITION_LEADER_EPOCH_AT: usize = 12;
    pub const MAGIC_AT: usize = 16;
    pub const CRC_AT: usize = 17;
    pub const ATTRIBUTES_AT: usize = 21;
    pub const LAST_OFFSET_DELTA_AT: usize = 23;
    pub const BASE_TIMESTAMP_AT: usize = 27;
    pub const MAX_TIMESTAMP_AT: usize = 35;
    pub const PRODUCER_ID_AT: usize = 43;
    pub const PRODUCER_EPOCH_AT: usize = 51;
    pub const BASE_SEQUENCE_AT: usize = 53;
    pub const RECORDS_COUNT_AT: usize = 57;
    pub const RECORDS_AT: usize = 61;
    /// The CRC covers the bytes from here to the end of the batch.
    pub const CRC_COVERED_FROM: usize = ATTRIBUTES_AT;

    /// The only magic value this module understands.
    pub const MAGIC_V2: i8 = 2;

    // The patched fields must stay outside the CRC-covered region, or
    // patching would invalidate stored CRCs.
    const _: () = assert!(BASE_OFFSET_AT + 8 <= CRC_AT);
    const _: () = assert!(PARTITION_LEADER_EPOCH_AT + 4 <= CRC_AT);
    const _: () = assert!(CRC_AT + 4 == CRC_COVERED_FROM);
    const _: () = assert!(BATCH_LENGTH_AT + 4 == LOG_OVERHEAD);
    const _: () = assert!(RECORDS_COUNT_AT + 4 == RECORDS_AT);
    const _: () = assert!(RECORDS_AT == BATCH_HEADER_SIZE);
}

/// Attribute bits (of the i16 at [`layout::ATTRIBUTES_AT`]).
mod attribute {
    pub const COMPRESSION_MASK: i16 = 0x07;
    pub const LOG_APPEND_TIME: i16 = 0x08;
    pub const TRANSACTIONAL: i16 = 0x10;
    pub const CONTROL: i16 = 0x20;
    pub const DELETE_HORIZON: i16 = 0x40;
}

/// Compression codec of a batch's records section (attributes bits 0-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// The codec for an attributes code, or `None` for codes 5-7, which Kafka
    /// does not define.
    pub fn from_code(code: u8) -> Option<Compression> {
        match code {
            0 => Some(Compression::None),
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Snappy),
            3 => Some(Compression::Lz4),
            4 => Some(Compression::Zstd),
            _ => None,
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        };
        f.write_str(name)
    }
}

/// Kafka's NO_TIMESTAMP: a record or batch without a timestamp.
pub const NO_TIMESTAMP: TimestampMs = TimestampMs(-1);

/// Meaning of the batch and record timestamps (attributes bit 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimestampType {
    /// Each record carries the producer's timestamp
    /// (baseTimestamp + timestampDelta).
    CreateTime,
    /// The broker's append time, stored once as the batch maxTimestamp and
    /// shared by every record; record deltas are ignored.
    LogAppendTime,
}

/// A parsed view of the 61-byte header of a record batch v2.
///
/// `Ok` from [`BatchHeader::parse`] promises only that the header decodes:
/// the magic is 2, the compression code is known and batchLength is large
/// enough for a header. It does not promise that the slice holds the whole
/// batch, that the CRC matches or that the records decode; [`validate`]
/// checks those.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    base_offset: Offset,
    batch_length: i32,
    partition_leader_epoch: LeaderEpoch,
    magic: i8,
    crc: u32,
    attributes: i16,
    last_offset_delta: i32,
    base_timestamp: TimestampMs,
    max_timestamp: TimestampMs,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    records_count: i32,
}

/// `N` bytes of the header at `at`. Only called with the constant field
/// positions, all of which lie inside the header.
fn field<const N: usize>(header: &[u8; BATCH_HEADER_SIZE], at: usize) -> [u8; N] {
    let mut bytes = [0; N];
    bytes.copy_from_slice(&header[at..at + N]);
    bytes
}

impl BatchHeader {
    /// Parse the header at the start of `batch` (which may be longer than the
    /// header, or than the batch). See the type docs for what `Ok` promises.
    pub fn parse(batch: &[u8]) -> Result<BatchHeader, BatchError> {
        use layout::*;

        let header: &[u8; BATCH_HEADER_SIZE] = batch
            .first_chunk()
            .ok_or(BatchError::TooShort { size: batch.len() })?;
        let magic = i8::from_be_bytes(field(header, MAGIC_AT));
        if magic != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic { magic });
        }
        let batch_length = i32::from_be_bytes(field(header, BATCH_LENGTH_AT));
        if !usize::try_from(batch_length).is_ok_and(|length| length >= RECORDS_AT - LOG_OVERHEAD) {
            return Err(BatchError::InvalidBatchLength { batch_length });
        }
        let attributes = i16::from_be_bytes(field(header, ATTRIBUTES_AT));
        let compression_code = (attributes & attribute::COMPRESSION_MASK) as u8;
        if Compression::from_code(compression_code).is_none() {
            return Err(BatchError::UnknownCompression {
                code: compression_code,
            });
        }
        Ok(BatchHeader {
            base_offset: Offset(i64::from_be_bytes(field(header, BASE_OFFSET_AT))),
            batch_length,
            partition_leader_epoch: LeaderEpoch(i32::from_be_bytes(field(
                header,
                PARTITION_LEADER_EPOCH_AT,
            ))),
            magic,
            crc: u32::from_be_bytes(field(header, CRC_AT)),
            attributes,
            last_offset_delta: i32::from_be_bytes(field(header, LAST_OFFSET_DELTA_AT)),
            base_timestamp: TimestampMs(i64::from_be_bytes(field(header, BASE_TIMESTAMP_AT))),
            max_timestamp: TimestampMs(i64::from_be_bytes(field(header, MAX_TIMESTAMP_AT))),
            producer_id: i64::from_be_bytes(field(header, PRODUCER_ID_AT)),
            producer_epoch: i16::from_be_bytes(field(header, PRODUCER_EPOCH_AT)),
            base_sequence: i32::from_be_bytes(field(header, BASE_SEQUENCE_AT)),
            records_count: i32::from_be_bytes(field(header, RECORDS_COUNT_AT)),
        })
    }

    pub fn base_offset(&self) -> Offset {
        self.base_offset
    }

    /// The raw batchLength field: bytes after it (at least 49).
    pub fn batch_length(&self) -> i32 {
        self.batch_length
    }

    pub fn partition_leader_epoch(&self) -> LeaderEpoch {
        self.partition_leader_epoch
    }

    /// Always 2 for a parsed header.
    pub fn magic(&self) -> i8 {
        self.magic
    }

    /// The stored CRC (not checked by `parse`).
    pub fn crc(&self) -> u32 {
        self.crc
    }

    /// The raw attributes field; prefer the typed accessors.
    pub fn attributes(&self) -> i16 {
        self.attributes
    }

    pub fn last_offset_delta(&self) -> i32 {
        self.last_offset_delta
    }

    pub fn base_timestamp(&self) -> TimestampMs {
        self.base_timestamp
    }

    /// The largest record timestamp for CreateTime batches (as the producer
    /// computed it; not checked against the records), the append time for
    /// LogAppendTime batches.
    pub fn max_timestamp(&self) -> TimestampMs {
        self.max_timestamp
    }

    /// -1 when the producer is neither idempotent nor transactional.
    pub fn producer_id(&self) -> i64 {
        self.producer_id
    }

    pub fn producer_epoch(&self) -> i16 {
        self.producer_epoch
    }

    pub fn base_sequence(&self) -> i32 {
        self.base_sequence
    }

    pub fn records_count(&self) -> i32 {
        self.records_count
    }

    /// Bytes the whole batch occupies: 12 + batchLength (at least 61).
    pub fn total_size(&self) -> usize {
        // parse() checked batch_length >= 49, so the conversion is lossless.
        layout::LOG_OVERHEAD + usize::try_from(self.batch_length).unwrap_or(0)
    }

    /// Offset of the last record: baseOffset + lastOffsetDelta. Saturates
    /// instead of overflowing on garbage headers; [`validate`] rejects batches
    /// where it would overflow.
    pub fn last_offset(&self) -> Offset {
        Offset(
            self.base_offset
                .0
                .saturating_add(i64::from(self.last_offset_delta)),
        )
    }

    /// The offset after the batch's last record (the log end offset after
    /// appending it). Saturates like [`BatchHeader::last_offset`].
    pub fn next_offset(&self) -> Offset {
        Offset(self.last_offset().0.saturating_add(1))
    }

    pub fn compression(&self) -> Compression {
        // parse() rejected unknown codes.
        Compression::from_code((self.attributes & attribute::COMPRESSION_MASK) as u8)
            .unwrap_or(Compression::None)
    }

    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & attribute::LOG_APPEND_TIME != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    /// The timestamp of `record` (a record of this batch) as Kafka reads
    /// it: the batch maxTimestamp for every record of a LogAppendTime
    /// batch, else baseTimestamp + timestampDelta (wrapping, as Java's
    /// arithmetic).
    pub fn record_timestamp(&self, record: &Record<'_>) -> TimestampMs {
        match self.timestamp_type() {
            TimestampType::LogAppendTime => self.max_timestamp,
            TimestampType::CreateTime => {
                TimestampMs(self.base_timestamp.0.wrapping_add(record.timestamp_delta))
            }
        }
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & attribute::TRANSACTIONAL != 0
    }

    /// Control batches carry transaction markers, not user records.
    pub fn is_control(&self) -> bool {
        self.attributes & attribute::CONTROL != 0
    }

    /// Set by log compaction (KIP-534): baseTimestamp is then the delete
    /// horizon for tombstones and transaction markers.
    pub fn has_delete_horizon(&self) -> bool {
        self.attributes & attribute::DELETE_HORIZON != 0
    }

    /// True when the batch comes from an idempotent or transactional
    /// producer.
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }
}

/// One field of a record, named in [`RecordProblem`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordField {
    Length,
    Body,
    Attributes,
    TimestampDelta,
    OffsetDelta,
    KeyLength,
    Key,
    ValueLength,
    Value,
    HeadersCount,
    HeaderKeyLength,
    HeaderKey,
    HeaderValueLength,
    HeaderValue,
}

impl fmt::Display for RecordField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            RecordField::Length => "length",
            RecordField::Body => "body",
            RecordField::Attributes => "attributes",
            RecordField::TimestampDelta => "timestampDelta",
            RecordField::OffsetDelta => "offsetDelta",
            RecordField::KeyLength => "keyLength",
            RecordField::Key => "key",
            RecordField::ValueLength => "valueLength",
            RecordField::Value => "value",
            RecordField::HeadersCount => "headersCount",
            RecordField::HeaderKeyLength => "header keyLength",
            RecordField::HeaderKey => "header key",
            RecordField::HeaderValueLength => "header valueLength",
            RecordField::HeaderValue => "header value",
        };
        f.write_str(name)
    }
}

/// Why one record of a batch does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum RecordProblem {
    #[error("{field} needs {needed} bytes but only {available} remain")]
    Truncated {
        field: RecordField,
        needed: usize,
        available: usize,
    },
    #[error("{field} varint is cut off by the end of the record")]
    VarintTruncated { field: RecordField },
    #[error("{field} varint is longer than its maximum encoded size or overflows")]
    VarintOverlong { field: RecordField },
    #[error("{field} is negative ({length})")]
    NegativeLength { field: RecordField, length: i32 },
    #[error("length says {declared} bytes but the fields occupy {consumed}")]
    SizeMismatch { declared: usize, consumed: usize },
}

/// Why a byte slice is not an acceptable record batch v2.
///
/// Map to Kafka error codes with [`BatchError::kafka_error_name`] at the
/// protocol edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum BatchError {
    #[error("record batch too short: {size} bytes, a header alone is 61")]
    TooShort { size: usize },
    #[error("record batch batchLength {batch_length} is smaller than a header")]
    InvalidBatchLength { batch_length: i32 },
    #[error("record batch declares {declared_size} bytes but {actual_size} were given")]
    LengthMismatch {
        declared_size: usize,
        actual_size: usize,
    },
    #[error(
        "record batch truncated: batch at byte {position} declares {declared_size} bytes, \
         only {available} remain"
    )]
    Truncated {
        position: usize,
        declared_size: usize,
        available: usize,
    },
    #[error("record batch of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("record batch magic {magic} is not supported (only magic 2)")]
    UnsupportedMagic { magic: i8 },
    #[error("record batch compression code {code} is not defined")]
    UnknownCompression { code: u8 },
    #[error("record batch CRC mismatch: stored {expected:#010x}, computed {actual:#010x}")]
    CorruptCrc { expected: u32, actual: u32 },
    #[error("record batch recordsCount {records_count} is not positive")]
    InvalidRecordsCount { records_count: i32 },
    #[error(
        "record batch lastOffsetDelta {last_offset_delta} does not match recordsCount \
         {records_count}"
    )]
    OffsetDeltaMismatch {
        last_offset_delta: i32,
        records_count: i32,
    },
    #[error(
        "record batch baseOffset {base_offset} + lastOffsetDelta {last_offset_delta} overflows"
    )]
    OffsetOverflow {
        base_offset: i64,
        last_offset_delta: i32,
    },
    #[error("record {index} of the batch has offsetDelta {offset_delta}, expected {index}")]
    RecordOffsetDeltaMismatch { index: u32, offset_delta: i32 },
    #[error("record {index} (at byte {position} of the batch) is malformed: {problem}")]
    MalformedRecord {
        index: u32,
        position: usize,
        problem: RecordProblem,
    },
    #[error("record batch declares {records_count} records but its bytes end after {found}")]
    RecordsMissing { records_count: i32, found: u32 },
    #[error("record batch has {trailing_bytes} bytes after its {records_count} records")]
    TrailingBytes {
        records_count: i32,
        trailing_bytes: usize,
    },
}

impl BatchError {
    /// The Kafka error this maps to in a produce response: CORRUPT_MESSAGE
    /// for CRC and framing (sizes, lengths, varints), MESSAGE_TOO_LARGE for
    /// the size limit, UNSUPPORTED_FOR_MESSAGE_FORMAT for magic != 2 and
    /// INVALID_RECORD for a well-framed batch whose counts and offsets
    /// disagree.
    pub fn kafka_error_name(&self) -> &'static str {
        match self {
            BatchError::TooShort { .. }
            | BatchError::InvalidBatchLength { .. }
            | BatchError::LengthMismatch { .. }
            | BatchError::Truncated { .. }
            | BatchError::UnknownCompression { .. }
            | BatchError::CorruptCrc { .. }
            | BatchError::MalformedRecord { .. } => "CORRUPT_MESSAGE",
            BatchError::TooLarge { .. } => "MESSAGE_TOO_LARGE",
            BatchError::UnsupportedMagic { .. } => "UNSUPPORTED_FOR_MESSAGE_FORMAT",
            BatchError::InvalidRecordsCount { .. }
            | BatchError::OffsetDeltaMismatch { .. }
            | BatchError::OffsetOverflow { .. }
            | BatchError::RecordOffsetDeltaMismatch { .. }
            | BatchError::RecordsMissing { .. }
            | BatchError::TrailingBytes { .. } => "INVALID_RECORD",
        }
    }
}

/// CRC-32C of the CRC-covered part of a batch (attributes to the end).
/// `batch` must be exactly one batch, at least a header long.
fn computed_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(batch.get(layout::CRC_COVERED_FROM..).unwrap_or(&[]))
}

/// Validate that `batch` is exactly one well-formed record batch v2 of at
/// most `max_batch_bytes` (and never more than [`BATCH_SIZE_MAX`]).
///
/// Checks, in order: the header parses (length, magic, batchLength,
/// compression code); batchLength matches the slice length exactly; the
/// size limit; the CRC; recordsCount >= 1; lastOffsetDelta ==
/// recordsCount - 1; baseOffset + lastOffsetDelta does not overflow. For
/// uncompressed batches it also walks the records: exactly recordsCount
/// records fill the records section exactly, every record decodes within its
/// declared length, and record `i` has offsetDelta `i`.
///
/// `Ok` promises the batch can be stored, indexed and served: offsets and
/// sizes in the header are consistent. It does not look inside compressed
/// records, does not check that maxTimestamp is the records' maximum, and
/// does not apply produce policy (control batches from clients, producer id
/// and sequence rules, timestamp limits); those belong to the produce path.
/// Never panics, whatever the input.
pub fn validate(batch: &[u8], max_batch_bytes: usize) -> Result<BatchHeader, BatchError> {
    validate_as(batch, max_batch_bytes, Form::Produced).map(|(header, _)| header)
}

/// [`validate`], also answering, for an uncompressed batch, the
/// maxTimestamp its records give: the largest record timestamp
/// ([`BatchHeader::record_timestamp`]), [`NO_TIMESTAMP`] when none is
/// larger, as Kafka's LogValidator computes the maxTimestamp it stores. It
/// is read on the same pass over the records, so it costs a comparison per
/// record. `None` for a compressed batch, whose records are not read here.
///
/// The header's own maxTimestamp is the producer's claim: the produce path
/// compares the two and stores the records' value ([`set_max_timestamp`]).
pub fn validate_with_max_timestamp(
    batch: &[u8],
    max_batch_bytes: usize,
) -> Result<(BatchHeader, Option<TimestampMs>), BatchError> {
    validate_as(batch, max_batch_bytes, Form::Produced)
}

/// [`validate`] for a batch that log compaction may have rewritten (Kafka's
/// cleaner output): its records keep their offsetDelta and the header keeps
/// its lastOffsetDelta, but records may be missing. Accepts 1 <=
/// recordsCount <= lastOffsetDelta + 1 and, for uncompressed batches,
/// strictly increasing record offsetDeltas within `0..=lastOffsetDelta`.
/// Every other check of [`validate`] applies. Recovery uses it for segments
/// the checkpoint trusts (only those can have been cleaned); producers are
/// always held to [`validate`].
pub fn validate_compacted(batch: &[u8], max_batch_bytes: usize) -> Result<BatchHeader, BatchError> {
    validate_as(batch, max_batch_bytes, Form::Compacted).map(|(header, _)| header)
}

/// Which offset layout a batch must have.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    /// As a producer sends it: record `i` has offsetDelta `i`.
    Produced,
    /// As compaction leaves it: offsetDeltas increase, gaps allowed.
    Compacted,
}

/// The header, and for an uncompressed batch its records' maxTimestamp
/// (see [`validate_with_max_timestamp`]).
fn validate_as(
    batch: &[u8],
    max_batch_bytes: usize,
    form: Form,
) -> Result<(BatchHeader, Option<TimestampMs>), BatchError> {
    let header = BatchHeader::parse(batch)?;
    if header.total_size() != batch.len() {
        return Err(BatchError::LengthMismatch {
            declared_size: header.total_size(),
            actual_size: batch.len(),
        });
    }
    let max = max_batch_bytes.min(BATCH_SIZE_MAX);
    if batch.len() > max {
        return Err(BatchError::TooLarge {
            size: batch.len(),
            max,
        });
    }
    let actual = computed_crc(batch);
    if actual != header.crc() {
        return Err(BatchError::CorruptCrc {
            expected: header.crc(),
            actual,
        });
    }
    let records_count = header.records_count();
    if records_count < 1 {
        return Err(BatchError::InvalidRecordsCount { records_count });
    }
    let last_offset_delta = header.last_offset_delta();
    let counts_agree = match form {
        Form::Produced => i64::from(last_offset_delta) == i64::from(records_count) - 1,
        Form::Compacted => i64::from(last_offset_delta) >= i64::from(records_count) - 1,
    };
    if !counts_agree {
        return Err(BatchError::OffsetDeltaMismatch {
            last_offset_delta,
            records_count,
        });
    }
    let base_offset = header.base_offset().value();
    if base_offset
        .checked_add(i64::from(last_offset_delta))
        .is_none()
    {
        return Err(BatchError::OffsetOverflow {
            base_offset,
            last_offset_delta,
        });
    }
    if header.compression() != Compression::None {
        return Ok((header, None));
    }
    let mut previous_delta: i64 = -1;
    let mut max_timestamp = NO_TIMESTAMP;
    for (index, record) in (0_u32..).zip(records(batch, &header)) {
        let record = record?;
        max_timestamp = max_timestamp.max(header.record_timestamp(&record));
        let offset_delta = record.offset_delta;
        let in_place = match form {
            Form::Produced => i64::from(offset_delta) == i64::from(index),
            Form::Compacted => {
                i64::from(offset_delta) > previous_delta && offset_delta <= last_offset_delta
            }
        };
        if !in_place {
            return Err(BatchError::RecordOffsetDeltaMismatch {
                index,
                offset_delta,
            });
        }
        previous_delta = i64::from(offset_delta);
    }
    Ok((header, Some(max_timestamp)))
}

/// Split a buffer of concatenated batches into the byte range of each, using
/// only the batchLength fields. An empty buffer gives an empty list.
///
/// Checks framing only: every batch must have a header and fit in the
/// buffer, or the call fails with [`BatchError::Truncated`] (for a short
/// tail) or the header error. It does not validate the batches; run
/// [`validate`] on each range. Never panics.
pub fn split_batches(buffer: &[u8]) -> Result<Vec<Range<usize>>, BatchError> {
    let mut ranges = Vec::new();
    let mut position = 0;
    while position < buffer.len() {
        let rest = &buffer[position..];
        let available = rest.len();
        if available < BATCH_HEADER_SIZE {
            return Err(BatchError::Truncated {
                position,
                declared_size: BATCH_HEADER_SIZE,
                available,
            });
        }
        let header = BatchHeader::parse(rest)?;
        let declared_size = header.total_size();
        if declared_size > available {
            return Err(BatchError::Truncated {
                position,
                declared_size,
                available,
            });
        }
        ranges.push(position..position + declared_size);
        position += declared_size;
    }
    Ok(ranges)
}

/// Overwrite the baseOffset of the batch at the start of `batch`. The field
/// lies outside the CRC-covered region, so a valid batch stays valid.
///
/// Panics if `batch` is shorter than a header: callers patch batches they
/// have validated.
pub fn patch_base_offset(batch: &mut [u8], base_offset: Offset) {
    assert!(
        batch.len() >= BATCH_HEADER_SIZE,
        "patching a {}-byte batch",
        batch.len()
    );
    let at = layout::BASE_OFFSET_AT;
    batch[at..at + 8].copy_from_slice(&base_offset.value().to_be_bytes());
}

/// Overwrite the partitionLeaderEpoch of the batch at the start of `batch`.
/// The field lies outside the CRC-covered region, so a valid batch stays
/// valid.
///
/// Panics if `batch` is shorter than a header: callers patch batches they
/// have validated.
pub fn patch_leader_epoch(batch: &mut [u8], leader_epoch: LeaderEpoch) {
    assert!(
        batch.len() >= BATCH_HEADER_SIZE,
        "patching a {}-byte batch",
        batch.len()
    );
    let at = layout::PARTITION_LEADER_EPOCH_AT;
    batch[at..at + 4].copy_from_slice(&leader_epoch.0.to_be_bytes());
}

/// A copy of the uncompressed batch `batch` holding only the records whose
/// encoded bytes are at `kept` (ranges in the batch, in order, as
/// [`Records::position`] reports them): header fields unchanged (base
/// offset, lastOffsetDelta, timestamps, producer fields, attributes), except
/// batchLength, recordsCount and the CRC, which are recomputed. Kept records
/// keep their offsetDelta, so their offsets do not change; the result passes
/// [`validate_compacted`]. Log compaction uses it.
///
/// Panics if `kept` is empty, out of order or outside the records section:
/// the caller computed the ranges from this batch.
pub fn retain_records(batch: &[u8], kept: &[Range<usize>]) -> Vec<u8> {
    assert!(!kept.is_empty(), "a batch keeps at least one record");
    let records_size: usize = kept.iter().map(|range| range.len()).sum();
    let mut out = Vec::with_capacity(BATCH_HEADER_SIZE + records_size);
    out.extend_from_slice(&batch[..BATCH_HEADER_SIZE]);
    let mut previous_end = BATCH_HEADER_SIZE;
    for range in kept {
        assert!(range.start >= previous_end && range.end <= batch.len());
        out.extend_from_slice(&batch[range.clone()]);
        previous_end = range.end;
    }
    // Smaller than the original batch, whose sizes fit these fields.
    let batch_length = i32::try_from(out.len() - layout::LOG_OVERHEAD).unwrap_or(i32::MAX);
    let records_count = i32::try_from(kept.len()).unwrap_or(i32::MAX);
    let at = layout::BATCH_LENGTH_AT;
    out[at..at + 4].copy_from_slice(&batch_length.to_be_bytes());
    let at = layout::RECORDS_COUNT_AT;
    out[at..at + 4].copy_from_slice(&records_count.to_be_bytes());
    let crc = crc32c::crc32c(&out[layout::CRC_COVERED_FROM..]);
    out[layout::CRC_AT..layout::CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Mark the batch at the start of `batch` LogAppendTime with `append_time` as
/// its maxTimestamp and recompute its CRC (Kafka's
/// DefaultRecordBatch.setMaxTimestamp). Record timestamps are left alone:
/// readers of a LogAppendTime batch use maxTimestamp for every record.
///
/// Panics if `batch` is shorter than a header: callers rewrite batches they
/// have validated.
pub fn set_log_append_time(batch: &mut [u8], append_time: TimestampMs) {
    set_max_timestamp(batch, TimestampType::LogAppendTime, append_time);
}

/// Give the batch at the start of `batch` the timestamp type
/// `timestamp_type` and the maxTimestamp `max_timestamp`, and recompute its
/// CRC (Kafka's DefaultRecordBatch.setMaxTimestamp); the records are left
/// alone. A batch that has both already is not touched (no CRC pass).
///
/// Panics if `batch` is shorter than a header: callers rewrite batches they
/// have validated.
pub fn set_max_timestamp(
    batch: &mut [u8],
    timestamp_type: TimestampType,
    max_timestamp: TimestampMs,
) {
    assert!(
        batch.len() >= BATCH_HEADER_SIZE,
        "rewriting a {}-byte batch",
        batch.len()
    );
    let at = layout::ATTRIBUTES_AT;
    let attributes = i16::from_be_bytes([batch[at], batch[at + 1]]);
    let attributes = match timestamp_type {
        TimestampType::LogAppendTime => attributes | attribute::LOG_APPEND_TIME,
        TimestampType::CreateTime => attributes & !attribute::LOG_APPEND_TIME,
    };
    let max_at = layout::MAX_TIMESTAMP_AT;
    let unchanged = batch[at..at + 2] == attributes.to_be_bytes()
        && batch[max_at..max_at + 8] == max_timestamp.0.to_be_bytes();
    if unchanged {
        return;
    }
    let total = BatchHeader::parse(batch)
        .map_or(batch.len(), |header| header.total_size().min(batch.len()));
    batch[at..at + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[max_at..max_at + 8].copy_from_slice(&max_timestamp.0.to_be_bytes());
    let crc = crc32c::crc32c(&batch[layout::CRC_COVERED_FROM..total]);
    batch[layout::CRC_AT..layout::CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// The first record (in offset order) of the batch whose timestamp is at
/// least `target`, as (offset, timestamp): offset = baseOffset +
/// offsetDelta, timestamp = baseTimestamp + timestampDelta for CreateTime
/// batches and the batch maxTimestamp for every record of a LogAppendTime
/// batch. This is the per-batch step of ListOffsets by timestamp.
///
/// A compressed batch is decompressed as it streams
/// ([`codec::walk_compressed_records`]: one record and the codec's window in
/// memory, at most [`codec::DECOMPRESSED_BYTES_MAX`] decompressed), as
/// Kafka's FileRecords.searchForTimestamp iterates the records of a
/// compressed batch: the answer is a record, never the batch's base offset
/// with its maxTimestamp, which a consumer seeking by time would take for
/// a record that may be older than the target.
///
/// `None` when no record qualifies. `batch` should have passed
/// [`validate`]; on bytes that do not decode (a compressed section
/// included) the result is `None` (never a panic), unless a record before
/// the undecodable part qualifies.
pub fn first_offset_with_timestamp_at_least(
    batch: &[u8],
    target: TimestampMs,
) -> Option<(Offset, TimestampMs)> {
    first_offset_with_timestamp_at_least_from(batch, target, Offset(i64::MIN))
}

/// [`first_offset_with_timestamp_at_least`] among the records at or after
/// `from` (a log start inside the batch: the records before it are
/// deleted, as Kafka's findOffsetByTimestamp skips them).
pub fn first_offset_with_timestamp_at_least_from(
    batch: &[u8],
    target: TimestampMs,
    from: Offset,
) -> Option<(Offset, TimestampMs)> {
    let header = BatchHeader::parse(batch).ok()?;
    if batch.len() < header.total_size() {
        return None;
    }
    if header.timestamp_type() == TimestampType::LogAppendTime {
        // Every record shares the append time, compressed or not: no
        // record needs reading. The first record has offsetDelta 0 in a
        // validated batch.
        let append_time = header.max_timestamp();
        let first = header.base_offset().max(from);
        return (append_time >= target && first <= header.last_offset())
            .then_some((first, append_time));
    }
    let base_offset = header.base_offset().value();
    let base_timestamp = header.base_timestamp().0;
    let qualifies = |record: &Record<'_>| {
        // Wrapping like Kafka's Java arithmetic; only garbage overflows.
        let timestamp = TimestampMs(base_timestamp.wrapping_add(record.timestamp_delta));
        let offset = Offset(base_offset.checked_add(i64::from(record.offset_delta))?);
        (timestamp >= target && offset >= from).then_some((offset, timestamp))
    };
    if header.compression() == Compression::None {
        for record in records(batch, &header) {
            if let Some(found) = qualifies(&record.ok()?) {
                return Some(found);
            }
        }
        return None;
    }
    let mut found = None;
    // The walk reads the batch to its end, past the first match. Its error
    // does not change the answer: the records before a match decoded (each
    // reaches the closure decoded), and without a match it is `None` anyway.
    let _ = codec::walk_compressed_records(batch, &header, |_, record| {
        if found.is_none() {
            found = qualifies(record);
        }
    });
    found
}
