//! Kafka wire protocol glue (no runtime here): request framing and header
//! decoding, response encoding, and the table of API versions we serve.
//!
//! Message bodies are encoded and decoded by the kafka-protocol crate; the
//! Fetch response is framed by hand (handlers/fetch.rs) so that record bytes
//! go to the socket as their own buffers.

pub mod versions;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

/// A decoded request.
#[derive(Debug)]
pub struct Request {
    pub api_key: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    pub body: RequestKind,
}

/// Why a frame could not become a `Request`.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// An API we do not serve, or a version outside our range. For
    /// ApiVersions the caller answers UNSUPPORTED_VERSION (KIP-511); for
    /// anything else it closes the connection, as Kafka does.
    #[error("unsupported api key {api_key} version {version}")]
    Unsupported {
        api_key: i16,
        version: i16,
        correlation_id: i32,
    },
    /// Bytes that do not parse: the connection is closed.
    #[error("malformed request: {0}")]
    Malformed(String),
}

/// Decode one request frame (without its 4-byte size prefix).
pub fn decode_request(frame: Bytes) -> Result<Request, DecodeError> {
    if frame.len() < 8 {
        return Err(DecodeError::Malformed(format!(
            "request of {} bytes has no header",
            frame.len()
        )));
    }
    let api_key_code = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let unsupported = DecodeError::Unsupported {
        api_key: api_key_code,
        version,
        correlation_id,
    };
    let Ok(api_key) = ApiKey::try_from(api_key_code) else {
        return Err(unsupported);
    };
    match versions::supported(api_key) {
        Some(range) if range.min <= version && version <= range.max => {}
        _ => return Err(unsupported),
    }
    let mut bytes = frame;
    let header_version = api_key.request_header_version(version);
    let header = RequestHeader::decode(&mut bytes, header_version)
        .map_err(|error| DecodeError::Malformed(format!("request header: {error}")))?;
    let body = RequestKind::decode(api_key, &mut bytes, version)
        .map_err(|error| DecodeError::Malformed(format!("{api_key:?} v{version} body: {error}")))?;
    Ok(Request {
        api_key,
        version,
        header,
        body,
    })
}

/// A response frame: the 4-byte size, the header and the body. Most
/// responses are one buffer; Fetch adds the stored record bytes as more.
pub struct ResponseFrame {
    pub parts: Vec<Bytes>,
}

impl ResponseFrame {
    pub fn size(&self) -> usize {
        self.parts.iter().map(Bytes::len).sum()
    }
}

/// Encode `body` as the response to a request of `api_key` / `version`.
pub fn encode_response(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> anyhow::Result<ResponseFrame> {
    let mut buffer = BytesMut::with_capacity(256);
    buffer.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header.encode(&mut buffer, api_key.response_header_version(version))?;
    body.encode(&mut buffer, version)?;
    let size = i32::try_from(buffer.len() - 4)?;
    buffer[..4].copy_from_slice(&size.to_be_bytes());
    Ok(ResponseFrame {
        parts: vec![buffer.freeze()],
    })
}
