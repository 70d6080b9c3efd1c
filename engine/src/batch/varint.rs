//! Zigzag varints as Kafka's record format uses them (protobuf `sint32` and
//! `sint64`): the signed value is zigzag-mapped to an unsigned one, which is
//! written 7 bits at a time, least significant group first, with the high bit
//! of each byte saying "more bytes follow".
//!
//! Decoding is strict: an encoding longer than the maximum for its width
//! (5 bytes for a varint, 10 for a varlong) or one whose value does not fit
//! the width is rejected rather than truncated. Standard encoders (Kafka's
//! Java client, librdkafka, franz-go) never produce either. Decoding never
//! panics and never overflows, whatever the input.

use bytes::BufMut;

/// Encoded size bound of a 32-bit varint.
pub(crate) const VARINT_SIZE_MAX: usize = 5;

/// Encoded size bound of a 64-bit varlong.
pub(crate) const VARLONG_SIZE_MAX: usize = 10;

/// Why a varint could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VarintError {
    /// The input ended before the last byte (one without the continuation
    /// bit).
    Truncated,
    /// Longer than the width allows, or encodes a value that does not fit.
    Overlong,
}

/// Decode an unsigned varint of at most `size_max` bytes whose value is at
/// most `value_max`. Returns the value and the encoded size.
fn decode_unsigned(
    input: &[u8],
    size_max: usize,
    value_max: u64,
) -> Result<(u64, usize), VarintError> {
    let mut value: u64 = 0;
    let mut shift: u32 = 0;
    for (index, &byte) in input.iter().take(size_max).enumerate() {
        let group = u64::from(byte & 0x7f);
        // 7 * 9 = 63: the tenth group of a varlong keeps one bit. Groups that
        // would shift bits past 64 are rejected, so the shift never loses data.
        if group.leading_zeros() < shift {
            return Err(VarintError::Overlong);
        }
        value |= group << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            if value > value_max {
                return Err(VarintError::Overlong);
            }
            return Ok((value, index + 1));
        }
    }
    if input.len() >= size_max {
        Err(VarintError::Overlong)
    } else {
        Err(VarintError::Truncated)
    }
}

/// Decode a zigzag varint (Kafka `varint`, i32). Returns the value and the
/// number of bytes it occupied.
pub(crate) fn decode_varint(input: &[u8]) -> Result<(i32, usize), VarintError> {
    let (raw, size) = decode_unsigned(input, VARINT_SIZE_MAX, u64::from(u32::MAX))?;
    let raw = u32::try_from(raw).map_err(|_| VarintError::Overlong)?;
    Ok((zigzag_decode_32(raw), size))
}

/// Decode a zigzag varlong (Kafka `varlong`, i64). Returns the value and the
/// number of bytes it occupied.
pub(crate) fn decode_varlong(input: &[u8]) -> Result<(i64, usize), VarintError> {
    let (raw, size) = decode_unsigned(input, VARLONG_SIZE_MAX, u64::MAX)?;
    Ok((zigzag_decode_64(raw), size))
}

fn zigzag_decode_32(raw: u32) -> i32 {
    // Bit reinterpretation, not arithmetic: zigzag maps u32 onto all of i32.
    ((raw >> 1) as i32) ^ -((raw & 1) as i32)
}

fn zigzag_decode_64(raw: u64) -> i64 {
    ((raw >> 1) as i64) ^ -((raw & 1) as i64)
}

fn zigzag_encode_32(value: i32) -> u32 {
    ((value << 1) ^ (value >> 31)) as u32
}

fn zigzag_encode_64(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn put_unsigned(out: &mut impl BufMut, mut raw: u64) {
    while raw >= 0x80 {
        out.put_u8(((raw as u8) & 0x7f) | 0x80);
        raw >>= 7;
    }
    out.put_u8(raw as u8);
}

fn unsigned_size(raw: u64) -> usize {
    // One byte per started group of 7 significant bits; zero takes one byte.
    let bits = 64 - raw.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

/// Append `value` as a zigzag varint.
pub(crate) fn put_varint(out: &mut impl BufMut, value: i32) {
    put_unsigned(out, u64::from(zigzag_encode_32(value)));
}

/// Append `value` as a zigzag varlong.
pub(crate) fn put_varlong(out: &mut impl BufMut, value: i64) {
    put_unsigned(out, zigzag_encode_64(value));
}

/// Encoded size of `value` as a zigzag varint.
pub(crate) fn varint_size(value: i32) -> usize {
    unsigned_size(u64::from(zigzag_encode_32(value)))
}

/// Encoded size of `value` as a zigzag varlong.
pub(crate) fn varlong_size(value: i64) -> usize {
    unsigned_size(zigzag_encode_64(value))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn zigzag_matches_the_protobuf_table() {
        // From the protobuf encoding guide: 0→0, -1→1, 1→2, -2→3, ...
        let table: [(i64, u64); 6] = [
            (0, 0),
            (-1, 1),
            (1, 2),
            (-2, 3),
            (i64::from(i32::MAX), 0xffff_fffe),
            (i64::from(i32::MIN), 0xffff_ffff),
        ];
        for (value, raw) in table {
            assert_eq!(zigzag_encode_64(value), raw);
            assert_eq!(zigzag_decode_64(raw), value);
            let narrow = i32::try_from(value).unwrap();
            assert_eq!(u64::from(zigzag_encode_32(narrow)), raw);
        }
    }

    #[test]
    fn known_encodings() {
        let cases: [(i32, &[u8]); 6] = [
            (0, &[0x00]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (63, &[0x7e]),
            (64, &[0x80, 0x01]),
            (i32::MIN, &[0xff, 0xff, 0xff, 0xff, 0x0f]),
        ];
        for (value, bytes) in cases {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(out, bytes, "encoding {value}");
            assert_eq!(varint_size(value), bytes.len());
            assert_eq!(decode_varint(bytes).unwrap(), (value, bytes.len()));
        }
    }

    #[test]
    fn round_trips_at_the_edges() {
        for value in [0, 1, -1, 127, -128, 8191, -8192, i32::MAX, i32::MIN] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(decode_varint(&out).unwrap(), (value, out.len()));
        }
        for value in [0, 1, -1, i64::from(i32::MAX) + 1, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            put_varlong(&mut out, value);
            assert_eq!(out.len(), varlong_size(value));
            assert_eq!(decode_varlong(&out).unwrap(), (value, out.len()));
        }
        let mut out = Vec::new();
        put_varlong(&mut out, i64::MIN);
        assert_eq!(out.len(), VARLONG_SIZE_MAX);
    }

    #[test]
    fn rejects_truncated_and_overlong() {
        assert_eq!(decode_varint(&[]), Err(VarintError::Truncated));
        assert_eq!(decode_varint(&[0x80]), Err(VarintError::Truncated));
        assert_eq!(
            decode_varint(&[0x80, 0x80, 0x80, 0x80, 0x80]),
            Err(VarintError::Overlong)
        );
        // Five bytes whose value needs 33 bits.
        assert_eq!(
            decode_varint(&[0xff, 0xff, 0xff, 0xff, 0x1f]),
            Err(VarintError::Overlong)
        );
        assert_eq!(decode_varlong(&[0xff; 10]), Err(VarintError::Overlong));
        let mut too_wide = [0xff; 10];
        too_wide[9] = 0x02;
        assert_eq!(decode_varlong(&too_wide), Err(VarintError::Overlong));
        too_wide[9] = 0x01;
        assert_eq!(decode_varlong(&too_wide), Ok((i64::MIN, 10)));
    }
}
