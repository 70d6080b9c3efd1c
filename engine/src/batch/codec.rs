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

use super::{BatchError, BatchHeader, Compression, attribute, layout, validate};
use crate::constants::BATCH_HEADER_SIZE;

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
    let total = header.total_size();
    let records = batch
        .get(BATCH_HEADER_SIZE..total)
        .ok_or(BatchError::LengthMismatch {
            declared_size: total,
            actual_size: batch.len(),
        })?;
    let plain = decompress(header.compression(), records)?;
    let uncompressed = rebuild(batch, Compression::None, &plain);
    validate(&uncompressed, uncompressed.len())?;
    if target == Target::None {
        return Ok(uncompressed);
    }
    let compressed = compress(target, &plain)?;
    Ok(rebuild(batch, target.compression(), &compressed))
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
    use crate::batch::{BatchBuilder, TimestampType, records};
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
