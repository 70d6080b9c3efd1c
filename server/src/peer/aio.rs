//! Async reads of whole frames on a compio stream, for the data shards'
//! connections (replication). The blocking twin is `io.rs`.

use compio::BufResult;
use compio::io::{AsyncRead, AsyncReadExt};

use super::frame::{Frame, FrameHeader, HEADER_SIZE};

/// Read one frame: header, then its payload, every check of
/// `FrameHeader` made. `Err` says why the connection must end (a read
/// error, the peer closing, a bad frame).
pub async fn read_frame<R: AsyncRead>(reader: &mut R) -> Result<Frame, String> {
    let BufResult(result, header_bytes) = reader.read_exact(Vec::with_capacity(HEADER_SIZE)).await;
    if let Err(error) = result {
        return Err(format!("reading: {error}"));
    }
    let header_bytes = header_bytes
        .first_chunk::<HEADER_SIZE>()
        .ok_or_else(|| "short header".to_string())?;
    let header = FrameHeader::decode(header_bytes).map_err(|error| error.to_string())?;
    // The size was checked against PAYLOAD_SIZE_MAX before this allocation.
    let BufResult(result, payload) = reader
        .read_exact(Vec::with_capacity(header.payload_size()))
        .await;
    if let Err(error) = result {
        return Err(format!("reading: {error}"));
    }
    header
        .check_payload(&payload)
        .map_err(|error| error.to_string())?;
    Ok(Frame {
        kind: header.kind.get(),
        flags: header.flags.get(),
        payload,
    })
}
