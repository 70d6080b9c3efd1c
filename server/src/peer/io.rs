//! Blocking reads and writes of whole frames on a `std::io` stream. Used
//! by the control plane's own threads (a few per process); data shards
//! never call these.

use std::io::{self, Read, Write};

use thiserror::Error;

use super::frame::{Frame, FrameError, FrameHeader, HEADER_SIZE, encode_frame};

#[derive(Debug, Error)]
pub enum PeerError {
    #[error("peer connection: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the connection at a frame boundary.
    #[error("peer closed the connection")]
    Closed,
    /// A bad frame: the connection must be closed.
    #[error("bad peer frame: {0}")]
    Frame(#[from] FrameError),
}

/// Reads one frame. `Closed` when the stream ends before a header starts;
/// an end inside a frame is an `Io(UnexpectedEof)`.
pub fn read_frame(reader: &mut impl Read) -> Result<Frame, PeerError> {
    let mut header_bytes = [0u8; HEADER_SIZE];
    let mut filled = 0;
    while filled < HEADER_SIZE {
        match reader.read(&mut header_bytes[filled..]) {
            Ok(0) if filled == 0 => return Err(PeerError::Closed),
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(count) => filled += count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error.into()),
        }
    }
    let header = FrameHeader::decode(&header_bytes)?;
    // The size was checked against PAYLOAD_SIZE_MAX before this allocation.
    let mut payload = vec![0u8; header.payload_size()];
    reader.read_exact(&mut payload)?;
    header.check_payload(&payload)?;
    Ok(Frame {
        kind: header.kind.get(),
        flags: header.flags.get(),
        payload,
    })
}

/// Writes one frame (one `write_all`, so a frame is never interleaved with
/// another writer's as long as each writer owns its stream).
pub fn write_frame(
    writer: &mut impl Write,
    kind: u16,
    flags: u16,
    payload: &[u8],
) -> Result<(), PeerError> {
    let bytes = encode_frame(kind, flags, payload)?;
    writer.write_all(&bytes)?;
    writer.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn frames_round_trip_through_a_stream() {
        let mut bytes = Vec::new();
        write_frame(&mut bytes, 2, 0, b"one").unwrap();
        write_frame(&mut bytes, 3, 0, b"").unwrap();
        let mut reader = &bytes[..];
        assert_eq!(read_frame(&mut reader).unwrap().payload, b"one");
        assert_eq!(read_frame(&mut reader).unwrap().kind, 3);
        assert!(matches!(read_frame(&mut reader), Err(PeerError::Closed)));
        let mut truncated = &bytes[..bytes.len() - 1];
        read_frame(&mut truncated).unwrap();
        assert!(matches!(read_frame(&mut truncated), Err(PeerError::Io(_))));
        let mut garbage = &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..];
        assert!(matches!(
            read_frame(&mut garbage),
            Err(PeerError::Frame(FrameError::BadMagic { .. }))
        ));
    }
}
