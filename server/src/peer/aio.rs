//! Async reads of whole frames on a compio stream, for the data shards'
//! connections (replication). The blocking twin is `io.rs`.

use compio::BufResult;
use compio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::auth::{self, ClientHandshake, HandshakeError, PeerSecret, ServerHandshake};
use super::frame::{Frame, FrameHeader, HEADER_SIZE, encode_frame};
use super::kind;

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

/// Read one frame of the authentication handshake: a header announcing
/// more than [`auth::PAYLOAD_BYTES_MAX`] bytes is refused before anything
/// is allocated (the peer is not trusted yet).
async fn read_handshake_frame<R: AsyncRead>(reader: &mut R) -> Result<Frame, HandshakeFailure> {
    let BufResult(result, header_bytes) = reader.read_exact(Vec::with_capacity(HEADER_SIZE)).await;
    if result.is_err() {
        return Err(HandshakeFailure::Closed);
    }
    let header_bytes = header_bytes
        .first_chunk::<HEADER_SIZE>()
        .ok_or(HandshakeFailure::Closed)?;
    let header = FrameHeader::decode(header_bytes)
        .map_err(|error| HandshakeFailure::Io(error.to_string()))?;
    if header.payload_size() > auth::PAYLOAD_BYTES_MAX {
        return Err(HandshakeFailure::Handshake(HandshakeError::Malformed {
            kind: header.kind.get(),
            length: header.payload_size(),
        }));
    }
    let BufResult(result, payload) = reader
        .read_exact(Vec::with_capacity(header.payload_size()))
        .await;
    if result.is_err() {
        return Err(HandshakeFailure::Closed);
    }
    header
        .check_payload(&payload)
        .map_err(|error| HandshakeFailure::Io(error.to_string()))?;
    Ok(Frame {
        kind: header.kind.get(),
        flags: header.flags.get(),
        payload,
    })
}

async fn write_handshake_frame<W: AsyncWrite>(
    writer: &mut W,
    kind: u16,
    payload: &[u8],
) -> Result<(), HandshakeFailure> {
    let bytes =
        encode_frame(kind, 0, payload).map_err(|error| HandshakeFailure::Io(error.to_string()))?;
    let BufResult(result, _) = writer.write_all(bytes).await;
    result.map_err(|error| HandshakeFailure::Io(error.to_string()))?;
    writer
        .flush()
        .await
        .map_err(|error| HandshakeFailure::Io(error.to_string()))
}

/// Why an async peer authentication failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeFailure {
    #[error("{0}")]
    Handshake(#[from] HandshakeError),
    #[error("the peer closed the connection during authentication")]
    Closed,
    #[error("during authentication: {0}")]
    Io(String),
    #[error("authentication took longer than {:?}", auth::HANDSHAKE_TIMEOUT)]
    TimedOut,
}

/// The connecting side of the peer authentication (`auth.rs`), within
/// [`auth::HANDSHAKE_TIMEOUT`].
pub async fn authenticate_client<S: AsyncRead + AsyncWrite>(
    stream: &mut S,
    secret: &PeerSecret,
) -> Result<(), HandshakeFailure> {
    let exchange = async {
        let (handshake, hello) = ClientHandshake::start(secret)?;
        write_handshake_frame(stream, kind::AUTH_HELLO, &hello).await?;
        let refused = |failure| match failure {
            HandshakeFailure::Closed => HandshakeFailure::Handshake(HandshakeError::Refused),
            other => other,
        };
        let challenge = read_handshake_frame(stream).await.map_err(refused)?;
        let proof = handshake.answer(challenge.kind, &challenge.payload)?;
        write_handshake_frame(stream, kind::AUTH_PROOF, &proof).await?;
        let done = read_handshake_frame(stream).await.map_err(refused)?;
        ClientHandshake::finish(done.kind)?;
        Ok(())
    };
    compio::time::timeout(auth::HANDSHAKE_TIMEOUT, exchange)
        .await
        .map_err(|_| HandshakeFailure::TimedOut)?
}

/// The accepting side of the peer authentication, within
/// [`auth::HANDSHAKE_TIMEOUT`].
pub async fn authenticate_server<S: AsyncRead + AsyncWrite>(
    stream: &mut S,
    secret: &PeerSecret,
) -> Result<(), HandshakeFailure> {
    let exchange = async {
        let hello = read_handshake_frame(stream).await?;
        let (handshake, challenge) =
            ServerHandshake::challenge(secret, hello.kind, &hello.payload)?;
        write_handshake_frame(stream, kind::AUTH_CHALLENGE, &challenge).await?;
        let proof = read_handshake_frame(stream).await?;
        handshake.verify(proof.kind, &proof.payload)?;
        write_handshake_frame(stream, kind::AUTH_OK, &[]).await?;
        Ok(())
    };
    compio::time::timeout(auth::HANDSHAKE_TIMEOUT, exchange)
        .await
        .map_err(|_| HandshakeFailure::TimedOut)?
}
