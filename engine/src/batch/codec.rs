//! Compression codecs of record batches (Kafka's gzip, snappy, lz4, zstd)
//! and the rebuild of a batch under another codec, for a topic whose
//! compression.type differs from the producer's (Kafka's LogValidator
//! recompresses such batches).
//!
//! Formats, as Kafka writes and reads them: gzip one member; snappy in
//! xerial's framing (what the Java client writes; raw snappy, which
//! librdkafka writes, is read too); lz4 the LZ4 frame format with
//! independent 64 KiB blocks; zstd one frame. Choices and crates:
//! docs/decisions/0013-compression.md.
//!
//! Pure functions over byte slices, callable from any thread. Inputs are
//! untrusted: a decompressed records section larger than
//! [`DECOMPRESSED_BYTES_MAX`] is an error, never an allocation.

use std::io::{Read, Write};

use thiserror::Error;

use super::{BatchError, BatchHeader, Compression, attribute, layout, validate_with_max_timestamp};
use crate::constants::BATCH_HEADER_SIZE;
use crate::types::TimestampMs;

/// Largest records section a decompression may produce. A produce request
/// is at most 100 MiB by default and compression ratios of real records
/// stay far below 10x over large batches, while a hostile batch of a few
/// KiB could claim gigabytes: 256 MiB bounds the memory one batch can take.
pub const DECOMPRESSED_BYTES_MAX: usize = 256 << 20;

/// xerial snappy-java's stream header: magic, version 1, compatible 1.
const XERIAL_HEADER: [u8; 16] = [
    0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1,
];
/// snappy-java's default block size: input is compressed in blocks this big.
const XERIAL_BLOCK_BYTES: usize = 32 * 1024;

#[derive(Debug, Error)]
pub enum CodecError {
    #[error("{codec} data does not decompress: {reason}")]
    Corrupt { codec: Compression, reason: String },
    #[error("{codec} data decompresses to more than {max} bytes")]
    TooLarge { codec: Compression, max: usize },
    #[error("{codec} compression failed: {reason}")]
    Compress { codec: Compression, reason: String },
    #[error("the decompressed batch is invalid: {0}")]
    Batch(#[from] BatchError),
}

/// A codec with its level, as a topic's compression.type and
/// compression.*.level give it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    None,
    /// `None`: the codec's default level (6).
    Gzip {
        level: Option<u32>,
    },
    Snappy,
    /// The lz4 encoder has a single (fast) level; Kafka's levels 1-17 are
    /// accepted by the topic config but all give this one.
    Lz4,
    Zstd {
        level: i32,
    },
}

impl Target {
    pub fn compression(self) -> Compression {
        match self {
            Target::None => Compression::None,
            Target::Gzip { .. } => Compression::Gzip,
            Target::Snappy => Compression::Snappy,
            Target::Lz4 => Compression::Lz4,
            Target::Zstd { .. } => Compression::Zstd,
        }
    }
}

fn corrupt(codec: Compression) -> impl Fn(std::io::Error) -> CodecError {
    move |error| CodecError::Corrupt {
        codec,
        reason: error.to_string(),
    }
}

/// Read all of `reader` but at most `max` bytes.
fn read_bounded(codec: Compression, reader: impl Read, max: usize) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    reader
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(corrupt(codec))?;
    if out.len() > max {
        return Err(CodecError::TooLarge { codec, max });
    }
    Ok(out)
}

/// The bytes `data` compressed with `codec` decompress to, at most
/// [`DECOMPRESSED_BYTES_MAX`].
pub fn decompress(codec: Compression, data: &[u8]) -> Result<Vec<u8>, CodecError> {
    decompress_within(codec, data, DECOMPRESSED_BYTES_MAX)
}

fn decompress_within(codec: Compression, data: &[u8], max: usize) -> Result<Vec<u8>, CodecError> {
    match codec {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => read_bounded(codec, flate2::read::MultiGzDecoder::new(data), max),
        Compression::Snappy => snappy_decompress(data, max),
        Compression::Lz4 => read_bounded(codec, lz4_flex::frame::FrameDecoder::new(data), max),
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::new(data).map_err(corrupt(codec))?;
            read_bounded(codec, decoder, max)
        }
    }
}

fn snappy_block(data: &[u8], total: usize, max: usize) -> Result<Vec<u8>, CodecError> {
    let codec = Compression::Snappy;
    let length = snap::raw::decompress_len(data).map_err(|error| CodecError::Corrupt {
        codec,
        reason: error.to_string(),
    })?;
    if total + length > max {
        return Err(CodecError::TooLarge { codec, max });
    }
    snap::raw::Decoder::new()
        .decompress_vec(data)
        .map_err(|error| CodecError::Corrupt {
            codec,
            reason: error.to_string(),
        })
}

fn snappy_decompress(data: &[u8], max: usize) -> Result<Vec<u8>, CodecError> {
    // xerial's header starts with the magic; compatible versions may differ.
    if data.len() < XERIAL_HEADER.len() || data[..8] != XERIAL_HEADER[..8] {
        return snappy_block(data, 0, max);
    }
    let mut out = Vec::new();
    let mut rest = &data[XERIAL_HEADER.len()..];
    while !rest.is_empty() {
        let truncated = || CodecError::Corrupt {
            codec: Compression::Snappy,
            reason: "truncated xerial block".to_string(),
        };
        let length_bytes: [u8; 4] = rest
            .get(..4)
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(truncated)?;
        let length = u32::from_be_bytes(length_bytes) as usize;
        let block = rest.get(4..4 + length).ok_or_else(truncated)?;
        out.extend_from_slice(&snappy_block(block, out.len(), max)?);
        rest = &rest[4 + length..];
    }
    Ok(out)
}

/// A reader that gives at most `left` bytes of `inner` and notes whether
/// `inner` had more (the decompressed-size bound).
struct Bounded<R> {
    inner: R,
    left: u64,
    max: usize,
    exceeded: bool,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? > 0 {
                self.exceeded = true;
                return Err(std::io::Error::other("decompressed size bound reached"));
            }
            return Ok(0);
        }
        let wanted = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let read = self.inner.read(&mut buf[..wanted])?;
        self.left -= read as u64;
        Ok(read)
    }
}

/// Walk the records of the compressed batch `batch` (its header `header`
/// parsed, CRC checked) as they decompress, without holding them all:
/// each record is decoded and given to `each` with its index. The records
/// must be exactly what the header says (Kafka's LogValidator): recordsCount
/// of them, record `i` with offsetDelta `i`, nothing after them; else
/// `CodecError::Batch` with the `BatchError` an uncompressed batch would
/// get (positions count from the batch start as if uncompressed). A stream
/// that does not decompress is `Corrupt`, one past
/// [`DECOMPRESSED_BYTES_MAX`] `TooLarge`.
///
/// Memory: the largest record plus the codec's window, where
/// [`recompress`] holds the whole records section twice. Snappy (which
/// expands at most about 21 times) is decompressed whole.
pub fn walk_compressed_records(
    batch: &[u8],
    header: &BatchHeader,
    each: impl FnMut(u32, &super::Record<'_>),
) -> Result<(), CodecError> {
    walk_within(batch, header, DECOMPRESSED_BYTES_MAX, each)
}

fn walk_within(
    batch: &[u8],
    header: &BatchHeader,
    max: usize,
    each: impl FnMut(u32, &super::Record<'_>),
) -> Result<(), CodecError> {
    let mut stream = None;
    let result = walk_stream(batch, header, max, &mut stream, each);
    // As when the whole section is decompressed before its records are
    // read: a stream that does not decompress (or is too large) is that,
    // even if a record went wrong before the codec noticed.
    if let (Err(CodecError::Batch(_)), Some(stream)) = (&result, stream.as_mut()) {
        let drained = std::io::copy(stream, &mut std::io::sink());
        if let Err(error) = drained {
            return Err(stream_error(header.compression(), stream, error));
        }
    }
    result
}

type Stream<'a> = std::io::BufReader<Bounded<Box<dyn Read + 'a>>>;

fn stream_error(codec: Compression, stream: &Stream<'_>, error: std::io::Error) -> CodecError {
    let bound = stream.get_ref();
    if bound.exceeded {
        CodecError::TooLarge {
            codec,
            max: bound.max,
        }
    } else {
        corrupt(codec)(error)
    }
}

fn walk_stream<'a>(
    batch: &'a [u8],
    header: &BatchHeader,
    max: usize,
    slot: &mut Option<Stream<'a>>,
    mut each: impl FnMut(u32, &super::Record<'_>),
) -> Result<(), CodecError> {
    let codec = header.compression();
    let records = records_section(batch, header)?;
    let decoder: Box<dyn Read + 'a> = match codec {
        Compression::None => Box::new(records),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(records)),
        Compression::Snappy => Box::new(std::io::Cursor::new(snappy_decompress(records, max)?)),
        Compression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(records)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(records).map_err(corrupt(codec))?)
        }
    };
    let stream = slot.insert(std::io::BufReader::new(Bounded {
        inner: decoder,
        left: max as u64,
        max,
        exceeded: false,
    }));
    let failed = |stream: &Stream<'_>, error| stream_error(codec, stream, error);
    let records_count = header.records_count();
    let declared = u32::try_from(records_count).unwrap_or(0);
    let mut encoded = Vec::new();
    let mut position = BATCH_HEADER_SIZE;
    for index in 0..declared {
        let malformed = |problem| {
            CodecError::Batch(BatchError::MalformedRecord {
                index,
                position,
                problem,
            })
        };
        // The length varint, a byte at a time (at most 5).
        encoded.clear();
        let length = loop {
            let mut byte = [0u8; 1];
            match stream.read(&mut byte) {
                Ok(0) if encoded.is_empty() => {
                    return Err(CodecError::Batch(BatchError::RecordsMissing {
                        records_count,
                        found: index,
                    }));
                }
                Ok(0) => {
                    return Err(malformed(super::RecordProblem::VarintTruncated {
                        field: super::RecordField::Length,
                    }));
                }
                Ok(_) => encoded.push(byte[0]),
                Err(error) => return Err(failed(stream, error)),
            }
            if byte[0] & 0x80 == 0 || encoded.len() == 5 {
                break super::varint::decode_varint(&encoded).map(|(length, _)| length);
            }
        };
        let body = match length {
            Ok(length) if length >= 0 => length as u64,
            Ok(length) => {
                return Err(malformed(super::RecordProblem::NegativeLength {
                    field: super::RecordField::Length,
                    length,
                }));
            }
            Err(error) => {
                return Err(malformed(super::records::varint_problem(
                    super::RecordField::Length,
                    error,
                )));
            }
        };
        let read = (&mut *stream)
            .take(body)
            .read_to_end(&mut encoded)
            .map_err(|error| failed(stream, error))?;
        if (read as u64) < body {
            return Err(malformed(super::RecordProblem::Truncated {
                field: super::RecordField::Body,
                needed: usize::try_from(body).unwrap_or(usize::MAX),
                available: read,
            }));
        }
        let record = super::records::decode_one(&encoded).map_err(malformed)?;
        if i64::from(record.offset_delta) != i64::from(index) {
            return Err(CodecError::Batch(BatchError::RecordOffsetDeltaMismatch {
                index,
                offset_delta: record.offset_delta,
            }));
        }
        each(index, &record);
        position += encoded.len();
    }
    let mut rest = [0u8; 1];
    match stream.read(&mut rest) {
        Ok(0) => Ok(()),
        Ok(trailing_bytes) => Err(CodecError::Batch(BatchError::TrailingBytes {
            records_count,
            trailing_bytes,
        })),
        Err(error) => Err(failed(stream, error)),
    }
}

/// The records section of `batch` (after its header), as `header` sizes it.
fn records_section<'a>(batch: &'a [u8], header: &BatchHeader) -> Result<&'a [u8], BatchError> {
    let total = header.total_size();
    batch
        .get(BATCH_HEADER_SIZE..total)
        .ok_or(BatchError::LengthMismatch {
            declared_size: total,
            actual_size: batch.len(),
        })
}

/// `data` compressed as `target` says.
pub fn compress(target: Target, data: &[u8]) -> Result<Vec<u8>, CodecError> {
    let codec = target.compression();
    let failed = |error: std::io::Error| CodecError::Compress {
        codec,
        reason: error.to_string(),
    };
    match target {
        Target::None => Ok(data.to_vec()),
        Target::Gzip { level } => {
            let level = level.map_or(flate2::Compression::default(), flate2::Compression::new);
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), level);
            encoder.write_all(data).map_err(failed)?;
            encoder.finish().map_err(failed)
        }
        Target::Snappy => {
            let mut out = XERIAL_HEADER.to_vec();
            let mut encoder = snap::raw::Encoder::new();
            for block in data.chunks(XERIAL_BLOCK_BYTES) {
                let compressed =
                    encoder
                        .compress_vec(block)
                        .map_err(|error| CodecError::Compress {
                            codec,
                            reason: error.to_string(),
                        })?;
                out.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
                out.extend_from_slice(&compressed);
            }
            Ok(out)
        }
        Target::Lz4 => {
            let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
            encoder.write_all(data).map_err(failed)?;
            encoder.finish().map_err(|error| CodecError::Compress {
                codec,
                reason: error.to_string(),
            })
        }
        Target::Zstd { level } => zstd::bulk::compress(data, level).map_err(failed),
    }
}

/// The batch `batch` (validated, with header `header`) rebuilt with its
/// records section under `target`: every header field kept (offsets,
/// timestamps, producer id, epoch and sequence, transactional and
/// timestamp-type bits), the codec bits and the CRC rewritten. The records
/// are decompressed and validated as an uncompressed batch first (count,
/// offset deltas, encoding), so a corrupt compressed batch is an error
/// here. Control batches are never compressed by Kafka; callers leave them.
pub fn recompress(
    batch: &[u8],
    header: &BatchHeader,
    target: Target,
) -> Result<Vec<u8>, CodecError> {
    recompress_with_max_timestamp(batch, header, target).map(|(rebuilt, _)| rebuilt)
}

/// [`recompress`], also answering the maxTimestamp the records give (see
/// [`super::validate_with_max_timestamp`]), read as they are validated.
/// The rebuilt header keeps the original's maxTimestamp all the same.
pub fn recompress_with_max_timestamp(
    batch: &[u8],
    header: &BatchHeader,
    target: Target,
) -> Result<(Vec<u8>, TimestampMs), CodecError> {
    let records = records_section(batch, header)?;
    let plain = decompress(header.compression(), records)?;
    let uncompressed = rebuild(batch, Compression::None, &plain);
    let (_, max_timestamp) = validate_with_max_timestamp(&uncompressed, uncompressed.len())?;
    let Some(max_timestamp) = max_timestamp else {
        unreachable!("the records of an uncompressed batch are read as it is validated");
    };
    if target == Target::None {
        return Ok((uncompressed, max_timestamp));
    }
    let compressed = compress(target, &plain)?;
    Ok((
        rebuild(batch, target.compression(), &compressed),
        max_timestamp,
    ))
}

/// The header of `batch` with codec `codec` and `records` as its records
/// section; batchLength and CRC recomputed.
fn rebuild(batch: &[u8], codec: Compression, records: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(BATCH_HEADER_SIZE + records.len());
    out.extend_from_slice(&batch[..BATCH_HEADER_SIZE]);
    out.extend_from_slice(records);
    let batch_length = (out.len() - layout::LOG_OVERHEAD) as i32;
    out[layout::BATCH_LENGTH_AT..layout::BATCH_LENGTH_AT + 4]
        .copy_from_slice(&batch_length.to_be_bytes());
    let at = layout::ATTRIBUTES_AT;
    let attributes = (i16::from_be_bytes([out[at], out[at + 1]]) & !attribute::COMPRESSION_MASK)
        | i16::from(codec.code());
    out[at..at + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&out[layout::CRC_COVERED_FROM..]);
    out[layout::CRC_AT..layout::CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::batch::{BatchBuilder, TimestampType, records, validate};
    use crate::types::TimestampMs;

    fn sample() -> Vec<u8> {
        let mut builder = BatchBuilder::new();
        builder.producer(7, 3, 42).transactional(true);
        for index in 0..200 {
            builder.record(
                Some(format!("key-{index}").as_bytes()),
                Some("value ".repeat(20).as_bytes()),
                TimestampMs(1_700_000_000_000 + index),
            );
        }
        builder.build().to_vec()
    }

    const TARGETS: [Target; 7] = [
        Target::Gzip { level: None },
        Target::Gzip { level: Some(1) },
        Target::Snappy,
        Target::Lz4,
        Target::Zstd { level: 3 },
        Target::Zstd { level: -5 },
        Target::None,
    ];

    #[test]
    fn every_codec_round_trips_and_keeps_every_header_field() {
        let original = sample();
        let header = validate(&original, original.len()).unwrap();
        for target in TARGETS {
            let rebuilt = recompress(&original, &header, target).unwrap();
            let rebuilt_header = validate(&rebuilt, rebuilt.len()).unwrap();
            assert_eq!(rebuilt_header.compression(), target.compression());
            assert_eq!(rebuilt_header.producer_id(), 7);
            assert_eq!(rebuilt_header.producer_epoch(), 3);
            assert_eq!(rebuilt_header.base_sequence(), 42);
            assert!(rebuilt_header.is_transactional());
            assert_eq!(rebuilt_header.timestamp_type(), TimestampType::CreateTime);
            assert_eq!(rebuilt_header.records_count(), 200);
            assert_eq!(rebuilt_header.base_timestamp(), header.base_timestamp());
            assert_eq!(rebuilt_header.max_timestamp(), header.max_timestamp());
            assert_eq!(rebuilt_header.last_offset_delta(), 199);
            if target != Target::None {
                assert!(rebuilt.len() < original.len(), "{target:?} compresses");
            }
            // And back: the same bytes as the original.
            let back = recompress(&rebuilt, &rebuilt_header, Target::None).unwrap();
            assert_eq!(back, original, "{target:?} round trip");
            let back_header = validate(&back, back.len()).unwrap();
            assert_eq!(records(&back, &back_header).count(), 200);
        }
    }

    #[test]
    fn raw_snappy_as_librdkafka_writes_it_is_read() {
        let data = b"librdkafka writes raw snappy ".repeat(50);
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(decompress(Compression::Snappy, &raw).unwrap(), data);
        let framed = compress(Target::Snappy, &data).unwrap();
        assert_eq!(&framed[..16], &XERIAL_HEADER);
        assert_eq!(decompress(Compression::Snappy, &framed).unwrap(), data);
    }

    #[test]
    fn corrupt_data_is_an_error_not_a_panic() {
        let garbage = [
            0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13,
        ];
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            assert!(decompress(codec, &garbage).is_err(), "{codec}");
        }
        let mut truncated_xerial = XERIAL_HEADER.to_vec();
        truncated_xerial.extend_from_slice(&100u32.to_be_bytes());
        truncated_xerial.extend_from_slice(b"short");
        assert!(decompress(Compression::Snappy, &truncated_xerial).is_err());
        // A compressed batch whose records do not match its header.
        let original = sample();
        let header = validate(&original, original.len()).unwrap();
        let rebuilt = recompress(&original, &header, Target::Lz4).unwrap();
        let mut lying = rebuilt.clone();
        lying[layout::RECORDS_COUNT_AT..layout::RECORDS_COUNT_AT + 4]
            .copy_from_slice(&300i32.to_be_bytes());
        let crc = crc32c::crc32c(&lying[layout::CRC_COVERED_FROM..]);
        lying[layout::CRC_AT..layout::CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        let lying_header = BatchHeader::parse(&lying).unwrap();
        assert!(recompress(&lying, &lying_header, Target::None).is_err());
    }

    /// What Kafka answers for a codec outcome (as the produce path maps it).
    fn kafka_name(result: &Result<(), CodecError>) -> &'static str {
        match result {
            Ok(()) => "NONE",
            Err(CodecError::Batch(error)) => error.kafka_error_name(),
            Err(_) => "CORRUPT_MESSAGE",
        }
    }

    /// The batch with its recordsCount and lastOffsetDelta set, CRC fixed.
    fn claiming(batch: &[u8], count: i32, last_delta: i32) -> Vec<u8> {
        let mut lying = batch.to_vec();
        lying[layout::RECORDS_COUNT_AT..layout::RECORDS_COUNT_AT + 4]
            .copy_from_slice(&count.to_be_bytes());
        lying[layout::LAST_OFFSET_DELTA_AT..layout::LAST_OFFSET_DELTA_AT + 4]
            .copy_from_slice(&last_delta.to_be_bytes());
        let crc = crc32c::crc32c(&lying[layout::CRC_COVERED_FROM..]);
        lying[layout::CRC_AT..layout::CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        lying
    }

    /// The streaming walk accepts exactly what decompressing the whole
    /// records section and validating it accepts, with the same Kafka
    /// error otherwise, and gives the same records: for every codec, the
    /// intact batch, headers claiming more or fewer records, and the
    /// compressed bytes damaged at many places (the CRC fixed, so only the
    /// contents are wrong).
    #[test]
    fn walking_compressed_records_agrees_with_decompressing_them() {
        let original = sample();
        let header = validate(&original, original.len()).unwrap();
        let expected: Vec<(i32, Option<Vec<u8>>)> = records(&original, &header)
            .map(|record| {
                let record = record.unwrap();
                (record.offset_delta, record.key.map(<[u8]>::to_vec))
            })
            .collect();
        let mut compared = 0;
        for target in TARGETS.into_iter().filter(|target| *target != Target::None) {
            let compressed = recompress(&original, &header, target).unwrap();
            let mut walked = Vec::new();
            let compressed_header = BatchHeader::parse(&compressed).unwrap();
            walk_compressed_records(&compressed, &compressed_header, |index, record| {
                assert_eq!(i64::from(record.offset_delta), i64::from(index));
                walked.push((record.offset_delta, record.key.map(<[u8]>::to_vec)));
            })
            .unwrap();
            assert_eq!(walked, expected, "{target:?}");

            let mut variants = vec![
                claiming(&compressed, 201, 200),
                claiming(&compressed, 199, 198),
                claiming(&compressed, 1, 0),
            ];
            let records_at = BATCH_HEADER_SIZE;
            for at in (records_at..compressed.len()).step_by(7) {
                let mut damaged = compressed.clone();
                damaged[at] ^= 0x5a;
                let crc = crc32c::crc32c(&damaged[layout::CRC_COVERED_FROM..]);
                damaged[layout::CRC_AT..layout::CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
                variants.push(damaged);
            }
            for variant in variants {
                let variant_header = BatchHeader::parse(&variant).unwrap();
                let whole = recompress(&variant, &variant_header, Target::None).map(|_| ());
                let walk = walk_compressed_records(&variant, &variant_header, |_, _| {});
                assert_eq!(
                    kafka_name(&walk),
                    kafka_name(&whole),
                    "{target:?}: walk {walk:?}, whole {whole:?}"
                );
                compared += 1;
            }
        }
        assert!(compared > 100);
    }

    /// The walk stops at the decompressed-size bound, whatever the records.
    #[test]
    fn the_walk_refuses_more_than_the_bound() {
        let mut builder = BatchBuilder::new();
        builder.record(None, Some(&vec![0u8; 100_000][..]), TimestampMs(0));
        let plain = builder.build().to_vec();
        let plain_header = validate(&plain, plain.len()).unwrap();
        let section = plain.len() - BATCH_HEADER_SIZE;
        for target in [
            Target::Gzip { level: None },
            Target::Snappy,
            Target::Lz4,
            Target::Zstd { level: 1 },
        ] {
            let bomb = recompress(&plain, &plain_header, target).unwrap();
            let header = BatchHeader::parse(&bomb).unwrap();
            assert!(
                matches!(
                    walk_within(&bomb, &header, section - 1, |_, _| {}),
                    Err(CodecError::TooLarge { .. })
                ),
                "{target:?}"
            );
            walk_within(&bomb, &header, section, |_, _| {}).unwrap();
        }
    }

    #[test]
    fn a_decompression_bomb_is_refused() {
        let zeros = vec![0u8; 1 << 20];
        for target in [
            Target::Gzip { level: None },
            Target::Snappy,
            Target::Lz4,
            Target::Zstd { level: 1 },
        ] {
            let bomb = compress(target, &zeros).unwrap();
            let codec = target.compression();
            assert!(
                matches!(
                    decompress_within(codec, &bomb, (1 << 20) - 1),
                    Err(CodecError::TooLarge { .. })
                ),
                "{codec}"
            );
            assert_eq!(decompress_within(codec, &bomb, 1 << 20).unwrap(), zeros);
        }
    }
}
