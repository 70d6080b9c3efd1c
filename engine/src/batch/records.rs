//! Decoding the records of an uncompressed record batch v2.
//!
//! The records follow the 61-byte header back to back. Each is
//!
//! ```text
//! length: varint            (bytes after this field)
//! attributes: i8            (unused, 0)
//! timestampDelta: varlong   (from the batch baseTimestamp)
//! offsetDelta: varint       (from the batch baseOffset)
//! keyLength: varint (-1 = null), key
//! valueLength: varint (-1 = null), value
//! headersCount: varint
//!   headerKeyLength: varint (>= 0), headerKey (UTF-8 by contract, not checked)
//!   headerValueLength: varint (-1 = null), headerValue
//! ```
//!
//! [`Records`] walks them without copying and without trusting any length:
//! every read is bounds-checked, every arithmetic step is checked, and a
//! problem ends the walk with a [`BatchError`] naming the record and field.
//! It never panics on any input.

use super::varint::{self, VarintError};
use super::{BatchError, BatchHeader, Compression, RecordField, RecordProblem};
use crate::constants::BATCH_HEADER_SIZE;

/// A bounds-checked reader over `input[position..]`. Positions are absolute
/// in the batch, so errors can name the byte where a record starts.
#[derive(Clone, Debug)]
struct Cursor<'a> {
    input: &'a [u8],
    position: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a [u8] {
        self.input.get(self.position..).unwrap_or(&[])
    }

    fn remaining(&self) -> usize {
        self.rest().len()
    }

    fn u8(&mut self, field: RecordField) -> Result<u8, RecordProblem> {
        let byte = *self.rest().first().ok_or(RecordProblem::Truncated {
            field,
            needed: 1,
            available: 0,
        })?;
        self.position += 1;
        Ok(byte)
    }

    fn varint(&mut self, field: RecordField) -> Result<i32, RecordProblem> {
        let (value, size) =
            varint::decode_varint(self.rest()).map_err(|error| varint_problem(field, error))?;
        self.position += size;
        Ok(value)
    }

    fn varlong(&mut self, field: RecordField) -> Result<i64, RecordProblem> {
        let (value, size) =
            varint::decode_varlong(self.rest()).map_err(|error| varint_problem(field, error))?;
        self.position += size;
        Ok(value)
    }

    fn bytes(&mut self, field: RecordField, size: usize) -> Result<&'a [u8], RecordProblem> {
        let available = self.remaining();
        let bytes = self.rest().get(..size).ok_or(RecordProblem::Truncated {
            field,
            needed: size,
            available,
        })?;
        self.position += size;
        Ok(bytes)
    }

    /// A length-prefixed byte string; a length of -1 means null.
    fn nullable_bytes(
        &mut self,
        length_field: RecordField,
        bytes_field: RecordField,
    ) -> Result<Option<&'a [u8]>, RecordProblem> {
        match self.varint(length_field)? {
            -1 => Ok(None),
            length => Ok(Some(
                self.bytes(bytes_field, non_negative(length_field, length)?)?,
            )),
        }
    }
}

pub(crate) fn varint_problem(field: RecordField, error: VarintError) -> RecordProblem {
    match error {
        VarintError::Truncated => RecordProblem::VarintTruncated { field },
        VarintError::Overlong => RecordProblem::VarintOverlong { field },
    }
}

fn non_negative(field: RecordField, length: i32) -> Result<usize, RecordProblem> {
    usize::try_from(length).map_err(|_| RecordProblem::NegativeLength { field, length })
}

/// One decoded record, borrowing from the batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// Unused by Kafka so far; carried through.
    pub attributes: u8,
    /// Added to the batch baseTimestamp gives the record's CreateTime
    /// (meaningless for LogAppendTime batches, see
    /// [`BatchHeader::timestamp_type`]).
    pub timestamp_delta: i64,
    /// Added to the batch baseOffset gives the record's offset.
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    headers_count: u32,
    /// The encoded headers, already checked to decode to `headers_count`.
    headers_encoded: &'a [u8],
}

impl<'a> Record<'a> {
    pub fn headers_count(&self) -> u32 {
        self.headers_count
    }

    /// The record headers as `(key, value)`; keys are UTF-8 by contract but
    /// not checked, so they are returned as bytes.
    pub fn headers(&self) -> RecordHeaders<'a> {
        RecordHeaders {
            cursor: Cursor {
                input: self.headers_encoded,
                position: 0,
            },
            remaining_count: self.headers_count,
        }
    }
}

/// Iterator over the headers of a [`Record`].
#[derive(Clone, Debug)]
pub struct RecordHeaders<'a> {
    cursor: Cursor<'a>,
    remaining_count: u32,
}

impl<'a> Iterator for RecordHeaders<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining_count == 0 {
            return None;
        }
        self.remaining_count -= 1;
        // The headers were fully decoded once when the record was read, so
        // this cannot fail; stop rather than panic if it somehow does.
        match decode_header(&mut self.cursor) {
            Ok(header) => Some(header),
            Err(_) => {
                self.remaining_count = 0;
                None
            }
        }
    }
}

fn decode_header<'a>(
    cursor: &mut Cursor<'a>,
) -> Result<(&'a [u8], Option<&'a [u8]>), RecordProblem> {
    let key_length = cursor.varint(RecordField::HeaderKeyLength)?;
    let key = cursor.bytes(
        RecordField::HeaderKey,
        non_negative(RecordField::HeaderKeyLength, key_length)?,
    )?;
    let value = cursor.nullable_bytes(RecordField::HeaderValueLength, RecordField::HeaderValue)?;
    Ok((key, value))
}

/// Decode one record starting at `cursor`, which is limited to the end of the
/// records section. Advances the cursor past the record.
fn decode_record<'a>(cursor: &mut Cursor<'a>) -> Result<Record<'a>, RecordProblem> {
    let length = cursor.varint(RecordField::Length)?;
    let body_size = non_negative(RecordField::Length, length)?;
    let body_start = cursor.position;
    let body = cursor.bytes(RecordField::Body, body_size)?;
    // Decode the body on its own cursor so no field can read past the
    // record's declared end into the next record.
    let mut body_cursor = Cursor {
        input: &cursor.input[..body_start + body.len()],
        position: body_start,
    };
    let attributes = body_cursor.u8(RecordField::Attributes)?;
    let timestamp_delta = body_cursor.varlong(RecordField::TimestampDelta)?;
    let offset_delta = body_cursor.varint(RecordField::OffsetDelta)?;
    let key = body_cursor.nullable_bytes(RecordField::KeyLength, RecordField::Key)?;
    let value = body_cursor.nullable_bytes(RecordField::ValueLength, RecordField::Value)?;
    let headers_count = body_cursor.varint(RecordField::HeadersCount)?;
    let headers_count =
        u32::try_from(headers_count).map_err(|_| RecordProblem::NegativeLength {
            field: RecordField::HeadersCount,
            length: headers_count,
        })?;
    let headers_start = body_cursor.position;
    // Every header takes at least two bytes, so a huge count fails on bounds
    // after at most body_size / 2 iterations.
    for _ in 0..headers_count {
        decode_header(&mut body_cursor)?;
    }
    let headers_encoded = &body_cursor.input[headers_start..body_cursor.position];
    if body_cursor.remaining() != 0 {
        return Err(RecordProblem::SizeMismatch {
            declared: body_size,
            consumed: body_cursor.position - body_start,
        });
    }
    Ok(Record {
        attributes,
        timestamp_delta,
        offset_delta,
        key,
        value,
        headers_count,
        headers_encoded,
    })
}

/// Decode `encoded`, exactly one record (its length varint and body), for
/// a walk that reads records one at a time from a decompressing stream
/// (`codec::walk_compressed_records`). Bytes after the record's declared
/// end are a size mismatch.
pub(crate) fn decode_one(encoded: &[u8]) -> Result<Record<'_>, RecordProblem> {
    let mut cursor = Cursor {
        input: encoded,
        position: 0,
    };
    let record = decode_record(&mut cursor)?;
    if cursor.remaining() != 0 {
        return Err(RecordProblem::SizeMismatch {
            declared: encoded.len() - cursor.remaining(),
            consumed: encoded.len(),
        });
    }
    Ok(record)
}

/// Iterator over the records of one uncompressed batch; see [`records`].
///
/// Yields `Ok` for each of the `recordsCount` records, then, if bytes remain
/// after them, one `Err(TrailingBytes)`. If the bytes run out first it yields
/// `Err(RecordsMissing)`; a record that does not decode yields
/// `Err(MalformedRecord)`. After an error it yields nothing more.
///
/// It does not check offset deltas against record indexes; [`super::validate`]
/// does.
#[derive(Clone, Debug)]
pub struct Records<'a> {
    cursor: Cursor<'a>,
    records_count: i32,
    index: u32,
    done: bool,
}

impl Records<'_> {
    /// Byte position in the batch where the next record starts (after the
    /// last one yielded). Lets a caller slice out the encoded bytes of each
    /// record (log compaction copies kept records verbatim).
    pub fn position(&self) -> usize {
        self.cursor.position
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let declared = u32::try_from(self.records_count).unwrap_or(0);
        if self.index >= declared {
            self.done = true;
            let trailing_bytes = self.cursor.remaining();
            return (trailing_bytes != 0).then_some(Err(BatchError::TrailingBytes {
                records_count: self.records_count,
                trailing_bytes,
            }));
        }
        if self.cursor.remaining() == 0 {
            self.done = true;
            return Some(Err(BatchError::RecordsMissing {
                records_count: self.records_count,
                found: self.index,
            }));
        }
        let position = self.cursor.position;
        match decode_record(&mut self.cursor) {
            Ok(record) => {
                self.index += 1;
                Some(Ok(record))
            }
            Err(problem) => {
                self.done = true;
                Some(Err(BatchError::MalformedRecord {
                    index: self.index,
                    position,
                    problem,
                }))
            }
        }
    }
}

/// The records of the uncompressed batch `batch` whose parsed header is
/// `header`. `batch` may extend past the batch; only `header.total_size()`
/// bytes are read.
///
/// The caller must have checked that the batch is uncompressed and that
/// `batch` holds the whole batch (both are asserted: calling this on a
/// compressed batch is a bug, since its records section is a compressed
/// stream). The records are not trusted: see [`Records`].
pub fn records<'a>(batch: &'a [u8], header: &BatchHeader) -> Records<'a> {
    assert_eq!(
        header.compression(),
        Compression::None,
        "records() of a compressed batch"
    );
    assert!(
        batch.len() >= header.total_size(),
        "batch slice of {} bytes is shorter than the batch ({} bytes)",
        batch.len(),
        header.total_size()
    );
    Records {
        cursor: Cursor {
            input: &batch[..header.total_size()],
            position: BATCH_HEADER_SIZE,
        },
        records_count: header.records_count(),
        index: 0,
        done: false,
    }
}
