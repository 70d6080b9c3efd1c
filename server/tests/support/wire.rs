//! Raw Kafka frames over `std::net::TcpStream`, encoded with kafka-protocol,
//! for tests that must send exactly the bytes they choose.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// A request frame without its size prefix: header (the version the API
/// key and version call for) then body.
pub fn request_bytes(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &RequestKind,
) -> Vec<u8> {
    try_request_bytes(api_key, version, correlation_id, body).expect("encoding a request body")
}

/// [`request_bytes`], or the encoder's error (a field set that `version`
/// does not have).
pub fn try_request_bytes(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &RequestKind,
) -> anyhow::Result<Vec<u8>> {
    let mut buffer = BytesMut::from(&header_bytes(api_key, version, correlation_id)[..]);
    body.encode(&mut buffer, version)?;
    Ok(buffer.to_vec())
}

/// A request header alone, in the header version `api_key`/`version` use.
pub fn header_bytes(api_key: ApiKey, version: i16, correlation_id: i32) -> Vec<u8> {
    let mut buffer = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("sluice-interop-test")))
        .encode(&mut buffer, api_key.request_header_version(version))
        .expect("encoding a request header");
    buffer.to_vec()
}

/// `bytes` with its 4-byte size prefix.
pub fn framed(bytes: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(bytes.len() + 4);
    frame.put_i32(i32::try_from(bytes.len()).expect("frame size fits i32"));
    frame.extend_from_slice(bytes);
    frame
}

/// A whole request frame, size prefix included.
pub fn request_frame(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &RequestKind,
) -> Vec<u8> {
    framed(&request_bytes(api_key, version, correlation_id, body))
}

pub fn connect(address: std::net::SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))
        .unwrap_or_else(|error| panic!("connecting to {address}: {error}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .expect("write timeout");
    stream
}

/// One response frame (without the size prefix).
pub fn read_frame(stream: &mut TcpStream) -> std::io::Result<Bytes> {
    let mut size = [0_u8; 4];
    stream.read_exact(&mut size)?;
    let size = i32::from_be_bytes(size);
    let size = usize::try_from(size)
        .map_err(|_| std::io::Error::other(format!("negative response size {size}")))?;
    let mut frame = vec![0_u8; size];
    stream.read_exact(&mut frame)?;
    Ok(Bytes::from(frame))
}

/// How a connection ended after a hostile request.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// The broker closed it (EOF or reset) without sending anything.
    Closed,
    /// The broker sent these bytes (then closed, or went quiet).
    Answered(Vec<u8>),
    /// Neither within the time limit: the connection is still open.
    StillOpen,
}

/// Read until the broker closes the connection or `timeout` passes.
pub fn ending(stream: &mut TcpStream, timeout: Duration) -> Ending {
    let deadline = Instant::now() + timeout;
    let mut received = Vec::new();
    let mut buffer = [0_u8; 4096];
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(count) => received.extend_from_slice(&buffer[..count]),
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if Instant::now() > deadline {
                    return if received.is_empty() {
                        Ending::StillOpen
                    } else {
                        Ending::Answered(received)
                    };
                }
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if received.is_empty() {
        Ending::Closed
    } else {
        Ending::Answered(received)
    }
}

/// Write, ignoring a broker that already closed the connection (a hostile
/// request may be refused before it is fully sent).
pub fn write_ignoring_reset(stream: &mut TcpStream, bytes: &[u8]) {
    match stream.write_all(bytes) {
        Ok(()) => {}
        Err(error)
            if matches!(
                error.kind(),
                ErrorKind::BrokenPipe | ErrorKind::ConnectionReset
            ) => {}
        Err(error) => panic!("writing to the broker: {error}"),
    }
}

/// Send `body` as `api_key` v`version` and return the response body (after
/// the response header, whose correlation id is checked).
pub fn call(stream: &mut TcpStream, api_key: ApiKey, version: i16, body: RequestKind) -> Bytes {
    let correlation_id = 7;
    stream
        .write_all(&request_frame(api_key, version, correlation_id, &body))
        .expect("sending a request");
    let mut frame = read_frame(stream)
        .unwrap_or_else(|error| panic!("no answer to {api_key:?} v{version}: {error}"));
    let header = ResponseHeader::decode(&mut frame, api_key.response_header_version(version))
        .expect("a response header");
    assert_eq!(header.correlation_id, correlation_id, "correlation id");
    frame
}
