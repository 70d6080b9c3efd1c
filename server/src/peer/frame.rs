//! The frame header and a sans-I/O codec. No I/O here: bytes in, frames
//! out, so the whole validation path is unit tested and run on garbage.
//!
//! Layout (all little-endian, 20 bytes, read in place with `zerocopy`):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `SLPF` |
//! | 4 | 2 | version (1) |
//! | 6 | 2 | kind (`peer::kind`) |
//! | 8 | 2 | flags (kind-specific; 0 today) |
//! | 10 | 2 | reserved, must be 0 |
//! | 12 | 4 | payload size in bytes |
//! | 16 | 4 | CRC-32C (Castagnoli) of the payload |
//!
//! Invariant: a `Frame` handed out has passed every check (magic, version,
//! reserved bits, size bound, CRC).

use thiserror::Error;
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

pub const MAGIC: u32 = u32::from_le_bytes(*b"SLPF");
pub const VERSION: u16 = 1;
pub const HEADER_SIZE: usize = 20;
/// The largest payload accepted: a controller snapshot of many thousands
/// of topics fits (about 100 bytes a partition), and a replication push is
/// bounded by the segment batch limits far below it. Checked before any
/// allocation, so a hostile size cannot exhaust memory.
pub const PAYLOAD_SIZE_MAX: usize = 64 * 1024 * 1024;

#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct FrameHeader {
    pub magic: U32,
    pub version: U16,
    pub kind: U16,
    pub flags: U16,
    pub reserved: U16,
    pub payload_size: U32,
    pub payload_crc32c: U32,
}

const _: () = assert!(std::mem::size_of::<FrameHeader>() == HEADER_SIZE);

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("bad magic {found:#010x} (not a Sluice peer)")]
    BadMagic { found: u32 },
    #[error("unsupported peer protocol version {found}")]
    UnsupportedVersion { found: u16 },
    #[error("reserved header bits set ({found:#06x})")]
    ReservedBits { found: u16 },
    #[error("payload of {size} bytes is above the {max} byte limit")]
    TooLarge { size: u64, max: usize },
    #[error("payload CRC-32C {found:#010x} does not match the header's {expected:#010x}")]
    BadChecksum { expected: u32, found: u32 },
}

/// One validated frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: u16,
    pub flags: u16,
    pub payload: Vec<u8>,
}

impl FrameHeader {
    pub fn new(kind: u16, flags: u16, payload: &[u8]) -> Result<FrameHeader, FrameError> {
        if payload.len() > PAYLOAD_SIZE_MAX {
            return Err(FrameError::TooLarge {
                size: payload.len() as u64,
                max: PAYLOAD_SIZE_MAX,
            });
        }
        let size = u32::try_from(payload.len()).expect("bounded by PAYLOAD_SIZE_MAX");
        Ok(FrameHeader {
            magic: U32::new(MAGIC),
            version: U16::new(VERSION),
            kind: U16::new(kind),
            flags: U16::new(flags),
            reserved: U16::new(0),
            payload_size: U32::new(size),
            payload_crc32c: U32::new(crc32c::crc32c(payload)),
        })
    }

    /// The header of a payload given as several buffers, in order (the
    /// replication push: its fields, then stored batches, never copied into
    /// one buffer).
    pub fn for_parts(kind: u16, flags: u16, parts: &[&[u8]]) -> Result<FrameHeader, FrameError> {
        let size: usize = parts.iter().map(|part| part.len()).sum();
        if size > PAYLOAD_SIZE_MAX {
            return Err(FrameError::TooLarge {
                size: size as u64,
                max: PAYLOAD_SIZE_MAX,
            });
        }
        let crc = parts
            .iter()
            .fold(0, |crc, part| crc32c::crc32c_append(crc, part));
        Ok(FrameHeader {
            magic: U32::new(MAGIC),
            version: U16::new(VERSION),
            kind: U16::new(kind),
            flags: U16::new(flags),
            reserved: U16::new(0),
            payload_size: U32::new(u32::try_from(size).expect("bounded by PAYLOAD_SIZE_MAX")),
            payload_crc32c: U32::new(crc),
        })
    }

    /// Reads and checks a header; the payload is checked by
    /// [`FrameHeader::check_payload`] once it has arrived.
    pub fn decode(bytes: &[u8; HEADER_SIZE]) -> Result<FrameHeader, FrameError> {
        let header = FrameHeader::read_from_bytes(bytes).expect("the array is exactly a header");
        if header.magic.get() != MAGIC {
            return Err(FrameError::BadMagic {
                found: header.magic.get(),
            });
        }
        if header.version.get() != VERSION {
            return Err(FrameError::UnsupportedVersion {
                found: header.version.get(),
            });
        }
        if header.reserved.get() != 0 {
            return Err(FrameError::ReservedBits {
                found: header.reserved.get(),
            });
        }
        let size = header.payload_size.get();
        if usize::try_from(size).map_or(true, |size| size > PAYLOAD_SIZE_MAX) {
            return Err(FrameError::TooLarge {
                size: u64::from(size),
                max: PAYLOAD_SIZE_MAX,
            });
        }
        Ok(header)
    }

    pub fn payload_size(&self) -> usize {
        usize::try_from(self.payload_size.get()).expect("checked against PAYLOAD_SIZE_MAX")
    }

    pub fn check_payload(&self, payload: &[u8]) -> Result<(), FrameError> {
        assert_eq!(
            payload.len(),
            self.payload_size(),
            "caller reads exactly the payload"
        );
        let found = crc32c::crc32c(payload);
        if found != self.payload_crc32c.get() {
            return Err(FrameError::BadChecksum {
                expected: self.payload_crc32c.get(),
                found,
            });
        }
        Ok(())
    }
}

/// A whole frame as bytes: header then payload.
pub fn encode_frame(kind: u16, flags: u16, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    let header = FrameHeader::new(kind, flags, payload)?;
    let mut bytes = Vec::with_capacity(HEADER_SIZE + payload.len());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(payload);
    Ok(bytes)
}

/// Incremental decoder for bytes arriving in arbitrary pieces. After an
/// error it stays failed: the stream cannot be resynchronised.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
    failed: Option<FrameError>,
}

impl FrameDecoder {
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete frame, `None` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let Some(header_bytes) = self.buffer.first_chunk::<HEADER_SIZE>() else {
            return Ok(None);
        };
        let header = FrameHeader::decode(header_bytes).inspect_err(|error| {
            self.failed = Some(error.clone());
        })?;
        let end = HEADER_SIZE + header.payload_size();
        if self.buffer.len() < end {
            return Ok(None);
        }
        let payload = &self.buffer[HEADER_SIZE..end];
        if let Err(error) = header.check_payload(payload) {
            self.failed = Some(error.clone());
            return Err(error);
        }
        let frame = Frame {
            kind: header.kind.get(),
            flags: header.flags.get(),
            payload: payload.to_vec(),
        };
        self.buffer.drain(..end);
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_header_of_parts_equals_the_header_of_their_concatenation() {
        let parts: [&[u8]; 3] = [b"abc", b"", b"defgh"];
        let joined = FrameHeader::new(17, 0, b"abcdefgh").unwrap();
        let split = FrameHeader::for_parts(17, 0, &parts).unwrap();
        assert_eq!(joined.as_bytes(), split.as_bytes());
    }

    #[test]
    fn the_header_layout_is_pinned() {
        let bytes = encode_frame(0x0302, 0x0504, b"abc").unwrap();
        let crc = crc32c::crc32c(b"abc").to_le_bytes();
        let mut expected = vec![b'S', b'L', b'P', b'F', 1, 0, 2, 3, 4, 5, 0, 0, 3, 0, 0, 0];
        expected.extend_from_slice(&crc);
        expected.extend_from_slice(b"abc");
        assert_eq!(bytes, expected);
    }

    #[test]
    fn frames_round_trip_in_any_pieces() {
        let mut stream = Vec::new();
        let payloads: Vec<Vec<u8>> = (0..20u8).map(|n| vec![n; usize::from(n) * 7]).collect();
        for (index, payload) in payloads.iter().enumerate() {
            stream.extend(encode_frame(index as u16, 0, payload).unwrap());
        }
        for piece in [1, 3, 19, 20, 21, 1000] {
            let mut decoder = FrameDecoder::new();
            let mut frames = Vec::new();
            for chunk in stream.chunks(piece) {
                decoder.push(chunk);
                while let Some(frame) = decoder.next_frame().unwrap() {
                    frames.push(frame);
                }
            }
            assert_eq!(frames.len(), payloads.len(), "piece {piece}");
            for (index, frame) in frames.iter().enumerate() {
                assert_eq!(frame.kind, index as u16);
                assert_eq!(frame.payload, payloads[index]);
            }
        }
    }

    #[test]
    fn every_bad_header_field_is_refused() {
        let good = encode_frame(1, 0, b"payload").unwrap();
        let decode = |bytes: &[u8]| {
            let mut decoder = FrameDecoder::new();
            decoder.push(bytes);
            decoder.next_frame()
        };
        let mut bad = good.clone();
        bad[0] ^= 1;
        assert!(matches!(decode(&bad), Err(FrameError::BadMagic { .. })));
        let mut bad = good.clone();
        bad[4] = 2;
        assert!(matches!(
            decode(&bad),
            Err(FrameError::UnsupportedVersion { found: 2 })
        ));
        let mut bad = good.clone();
        bad[10] = 1;
        assert!(matches!(decode(&bad), Err(FrameError::ReservedBits { .. })));
        let mut bad = good.clone();
        bad[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&bad), Err(FrameError::TooLarge { .. })));
        let mut bad = good.clone();
        *bad.last_mut().unwrap() ^= 0x40;
        assert!(matches!(decode(&bad), Err(FrameError::BadChecksum { .. })));
        assert_eq!(
            decode(&good[..good.len() - 1]),
            Ok(None),
            "a short frame waits"
        );
        assert!(FrameHeader::new(1, 0, &vec![0; PAYLOAD_SIZE_MAX + 1]).is_err());
    }

    /// Garbage (random bytes, and valid frames with random corruption)
    /// never panics and never yields a frame that was not sent.
    #[test]
    fn garbage_never_panics() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        for round in 0..5000 {
            let mut bytes: Vec<u8> = if round % 2 == 0 {
                let size = (next() % 200) as usize;
                (0..size).map(|_| next() as u8).collect()
            } else {
                let payload: Vec<u8> = (0..next() % 64).map(|_| next() as u8).collect();
                encode_frame(1, 0, &payload).unwrap()
            };
            let flips = next() % 3;
            for _ in 0..flips {
                if !bytes.is_empty() {
                    let at = (next() as usize) % bytes.len();
                    bytes[at] ^= 1 << (next() % 8);
                }
            }
            let mut decoder = FrameDecoder::new();
            decoder.push(&bytes);
            while let Ok(Some(frame)) = decoder.next_frame() {
                // A frame that passed the CRC is what was framed.
                assert!(frame.payload.len() <= PAYLOAD_SIZE_MAX);
            }
        }
    }
}
