//! Blocking reads and writes of whole frames on a `std::io` stream. Used
//! by the control plane's own threads (a few per process); data shards
//! never call these.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use thiserror::Error;

use super::auth::{self, ClientHandshake, HandshakeError, PeerSecret, ServerHandshake};
use super::frame::{Frame, FrameError, FrameHeader, HEADER_SIZE, encode_frame};
use super::kind;

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
    /// The peer authentication failed: the connection must be closed.
    #[error("peer authentication: {0}")]
    Handshake(#[from] HandshakeError),
}

/// Reads one frame. `Closed` when the stream ends before a header starts;
/// an end inside a frame is an `Io(UnexpectedEof)`.
pub fn read_frame(reader: &mut impl Read) -> Result<Frame, PeerError> {
    read_frame_within(reader, usize::MAX)
}

/// [`read_frame`], refusing (before allocating) a payload larger than
/// `payload_max`.
fn read_frame_within(reader: &mut impl Read, payload_max: usize) -> Result<Frame, PeerError> {
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
    if header.payload_size() > payload_max {
        return Err(PeerError::Handshake(HandshakeError::Malformed {
            kind: header.kind.get(),
            length: header.payload_size(),
        }));
    }
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

/// Reads one frame of the authentication handshake: a header announcing
/// more than [`auth::PAYLOAD_BYTES_MAX`] bytes is refused before anything
/// is allocated (the peer is not trusted yet).
fn read_handshake_frame(reader: &mut impl Read) -> Result<Frame, PeerError> {
    read_frame_within(reader, auth::PAYLOAD_BYTES_MAX)
}

/// The connecting side of the peer authentication (`auth.rs`), within
/// [`auth::HANDSHAKE_TIMEOUT`]; afterwards the stream has no read timeout
/// set by this function (the caller sets its own).
pub fn authenticate_client(stream: &mut TcpStream, secret: &PeerSecret) -> Result<(), PeerError> {
    stream.set_read_timeout(Some(auth::HANDSHAKE_TIMEOUT))?;
    let (handshake, hello) = ClientHandshake::start(secret)?;
    write_frame(stream, kind::AUTH_HELLO, 0, &hello)?;
    let challenge = read_handshake_frame(stream).map_err(refused_when_closed)?;
    let proof = handshake.answer(challenge.kind, &challenge.payload)?;
    write_frame(stream, kind::AUTH_PROOF, 0, &proof)?;
    let done = read_handshake_frame(stream).map_err(refused_when_closed)?;
    ClientHandshake::finish(done.kind)?;
    stream.set_read_timeout(None)?;
    Ok(())
}

/// The accepting side of the peer authentication, within
/// [`auth::HANDSHAKE_TIMEOUT`]; the read timeout is cleared afterwards.
pub fn authenticate_server(stream: &mut TcpStream, secret: &PeerSecret) -> Result<(), PeerError> {
    stream.set_read_timeout(Some(auth::HANDSHAKE_TIMEOUT))?;
    let hello = read_handshake_frame(stream)?;
    let (handshake, challenge) = ServerHandshake::challenge(secret, hello.kind, &hello.payload)?;
    write_frame(stream, kind::AUTH_CHALLENGE, 0, &challenge)?;
    let proof = read_handshake_frame(stream)?;
    handshake.verify(proof.kind, &proof.payload)?;
    write_frame(stream, kind::AUTH_OK, 0, &[])?;
    stream.set_read_timeout(None)?;
    Ok(())
}

/// A server that closes the connection mid-handshake refused us.
fn refused_when_closed(error: PeerError) -> PeerError {
    match error {
        PeerError::Closed => PeerError::Handshake(HandshakeError::Refused),
        PeerError::Io(error) if error.kind() == io::ErrorKind::ConnectionReset => {
            PeerError::Handshake(HandshakeError::Refused)
        }
        other => other,
    }
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
