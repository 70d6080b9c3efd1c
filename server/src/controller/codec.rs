//! Little-endian encoding helpers for metadata records, snapshots and the
//! Raft log files.
//!
//! `Writer` appends; `Reader` checks every read against the bytes left and
//! never allocates more than the input could describe (a count is refused
//! when even the smallest elements would not fit), so decoding garbage
//! returns a `DecodeError` and never panics or exhausts memory.

use thiserror::Error;
use uuid::Uuid;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("truncated: needed {needed} bytes at position {position}, {left} left")]
    Truncated {
        position: usize,
        needed: usize,
        left: usize,
    },
    #[error("unknown record type {record_type}")]
    UnknownRecordType { record_type: u16 },
    #[error("record type {record_type} has no version {version}")]
    UnknownVersion { record_type: u16, version: u16 },
    #[error("invalid {what}: {value}")]
    Invalid { what: &'static str, value: i64 },
    #[error("string is not UTF-8")]
    NotUtf8,
    #[error("{count} trailing bytes after the value")]
    TrailingBytes { count: usize },
    #[error("unknown format {format}")]
    UnknownFormat { format: u32 },
}

/// Appends little-endian values to a byte vector.
#[derive(Default)]
pub struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    pub fn new() -> Writer {
        Writer::default()
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn u8(&mut self, value: u8) {
        self.bytes.push(value);
    }

    pub fn bool(&mut self, value: bool) {
        self.u8(u8::from(value));
    }

    pub fn u16(&mut self, value: u16) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    pub fn u32(&mut self, value: u32) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    pub fn u64(&mut self, value: u64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    pub fn i32(&mut self, value: i32) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    pub fn i64(&mut self, value: i64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    pub fn uuid(&mut self, value: Uuid) {
        self.bytes.extend_from_slice(value.as_bytes());
    }

    /// A count or length prefix (u32).
    pub fn count(&mut self, count: usize) {
        self.u32(u32::try_from(count).expect("metadata collections stay below 2^32"));
    }

    pub fn bytes(&mut self, value: &[u8]) {
        self.count(value.len());
        self.bytes.extend_from_slice(value);
    }

    pub fn string(&mut self, value: &str) {
        self.bytes(value.as_bytes());
    }

    /// Presence byte (0 or 1), then the value when present.
    pub fn option<T>(&mut self, value: Option<&T>, write: impl FnOnce(&mut Writer, &T)) {
        match value {
            None => self.u8(0),
            Some(inner) => {
                self.u8(1);
                write(self, inner);
            }
        }
    }

    pub fn i32_list(&mut self, values: &[i32]) {
        self.count(values.len());
        for value in values {
            self.i32(*value);
        }
    }
}

/// Reads little-endian values from a slice, checking bounds on every read.
pub struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, position: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    pub fn position(&self) -> usize {
        self.position
    }

    /// Ok when every byte was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes { count }),
        }
    }

    pub fn take(&mut self, size: usize) -> Result<&'a [u8], DecodeError> {
        if size > self.remaining() {
            return Err(DecodeError::Truncated {
                position: self.position,
                needed: size,
                left: self.remaining(),
            });
        }
        let slice = &self.bytes[self.position..self.position + size];
        self.position += size;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(DecodeError::Invalid {
                what: "bool",
                value: i64::from(other),
            }),
        }
    }

    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    pub fn uuid(&mut self) -> Result<Uuid, DecodeError> {
        Ok(Uuid::from_bytes(self.array()?))
    }

    /// A count of elements each at least `element_size_min` bytes long:
    /// refused when they could not fit in what is left, so a hostile count
    /// never drives an allocation.
    pub fn count(&mut self, element_size_min: usize) -> Result<usize, DecodeError> {
        let count = usize::try_from(self.u32()?).map_err(|_| DecodeError::Invalid {
            what: "count",
            value: -1,
        })?;
        let needed = count.saturating_mul(element_size_min.max(1));
        if needed > self.remaining() {
            return Err(DecodeError::Truncated {
                position: self.position,
                needed,
                left: self.remaining(),
            });
        }
        Ok(count)
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let size = self.count(1)?;
        self.take(size)
    }

    pub fn string(&mut self) -> Result<String, DecodeError> {
        let bytes = self.bytes()?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| DecodeError::NotUtf8)
    }

    pub fn option<T>(
        &mut self,
        read: impl FnOnce(&mut Reader<'a>) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => read(self).map(Some),
            other => Err(DecodeError::Invalid {
                what: "option tag",
                value: i64::from(other),
            }),
        }
    }

    pub fn i32_list(&mut self) -> Result<Vec<i32>, DecodeError> {
        let count = self.count(4)?;
        (0..count).map(|_| self.i32()).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn values_round_trip() {
        let mut writer = Writer::new();
        writer.u16(7);
        writer.i64(-5);
        writer.string("héllo");
        writer.option(Some(&3i32), |w, v| w.i32(*v));
        writer.option::<i32>(None, |w, v| w.i32(*v));
        writer.i32_list(&[1, 2, 3]);
        let bytes = writer.into_bytes();
        let mut reader = Reader::new(&bytes);
        assert_eq!(reader.u16(), Ok(7));
        assert_eq!(reader.i64(), Ok(-5));
        assert_eq!(reader.string().as_deref(), Ok("héllo"));
        assert_eq!(reader.option(|r| r.i32()), Ok(Some(3)));
        assert_eq!(reader.option(|r| r.i32()), Ok(None));
        assert_eq!(reader.i32_list(), Ok(vec![1, 2, 3]));
        assert_eq!(reader.finish(), Ok(()));
    }

    #[test]
    fn a_huge_count_is_refused_without_allocating() {
        let bytes = u32::MAX.to_le_bytes();
        let mut reader = Reader::new(&bytes);
        assert!(matches!(
            reader.i32_list(),
            Err(DecodeError::Truncated { .. })
        ));
    }
}
