//! A small blocking Kafka client: one `std::net::TcpStream`, one request at
//! a time, requests and responses encoded with kafka-protocol. It is what
//! the admin subcommands speak to a broker (Sluice or any Kafka broker), and
//! is small enough for tests to reuse.
//!
//! [`Connection::open`] sends ApiVersions v0 first and keeps the broker's
//! version table, so that callers can pick a version both sides support
//! with [`Connection::negotiate`]. Every socket operation has a time limit:
//! a broker that does not answer is an error, never a hang.
//!
//! [`Connection::open_with`] secures the connection as
//! [`ClientSecurity`] says: TLS (rustls over the same `TcpStream`, the
//! handshake under the same time limits) and a SASL login right after
//! ApiVersions. [`Connection::open`] is PLAINTEXT.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::ops::RangeInclusive;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::{ParseResponseErrorCode, ResponseError};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

use super::security::{self, ClientSecurity};

/// Time limit of the TCP connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time limit of one read or write on the socket.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response frame accepted (a hostile or confused peer must not make
/// us allocate gigabytes).
const RESPONSE_BYTES_MAX: usize = 64 << 20;
/// client.id sent in every request header.
const CLIENT_ID: &str = "sluice-admin";

/// What can go wrong talking to a broker.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot resolve broker address {address:?}: {reason}")]
    Resolve { address: String, reason: String },
    #[error("cannot connect to broker {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("{api:?} to broker {address}: {source}")]
    Io {
        address: String,
        api: ApiKey,
        source: std::io::Error,
    },
    #[error("{api:?} v{version} to broker {address}: {reason}")]
    Protocol {
        address: String,
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error(
        "broker {address} supports {api:?} versions {broker_min}..={broker_max}, \
         this client {ours:?}"
    )]
    UnsupportedVersion {
        address: String,
        api: ApiKey,
        broker_min: i16,
        broker_max: i16,
        ours: RangeInclusive<i16>,
    },
    #[error("broker {address} does not serve {api:?}")]
    UnsupportedApi { address: String, api: ApiKey },
    #[error(
        "{address} does not speak the Kafka protocol (is it a Kafka broker's listener?): {detail}"
    )]
    NotKafka { address: String, detail: String },
    #[error("{what}: {}", describe_code(*code))]
    Kafka { what: String, code: i16 },
    #[error("TLS with broker {address}: {reason}")]
    Tls { address: String, reason: String },
    #[error("authentication failed for User:{user}: {reason} (SASL {mechanism}, broker {address})")]
    Authentication {
        address: String,
        user: String,
        mechanism: &'static str,
        reason: String,
    },
}

impl ClientError {
    /// The Kafka error of a [`ClientError::Kafka`], if that is what it is.
    pub fn kafka_error(&self) -> Option<ResponseError> {
        match self {
            ClientError::Kafka { code, .. } => code.err(),
            _ => None,
        }
    }
}

/// `GROUP_ID_NOT_FOUND (69)` style text: the name Kafka's docs use.
pub fn describe_code(code: i16) -> String {
    match code.err() {
        None => "no error".to_string(),
        Some(ResponseError::Unknown(code)) => format!("unknown error code {code}"),
        Some(error) => format!("{} ({code})", screaming_name(&error.to_string())),
    }
}

/// `GroupIdNotFound` -> `GROUP_ID_NOT_FOUND`.
fn screaming_name(camel: &str) -> String {
    let mut name = String::with_capacity(camel.len() + 8);
    for (index, character) in camel.chars().enumerate() {
        if character.is_ascii_uppercase() && index > 0 {
            name.push('_');
        }
        name.push(character.to_ascii_uppercase());
    }
    name
}

/// `Ok(())` for code 0, else a [`ClientError::Kafka`] naming `what`.
pub fn check_code(code: i16, what: impl FnOnce() -> String) -> Result<(), ClientError> {
    if code.is_ok() {
        Ok(())
    } else {
        Err(ClientError::Kafka { what: what(), code })
    }
}

/// Like [`check_code`], with the broker's error message (when it sent one)
/// after `what`: Kafka puts the useful detail there ("Invalid value abc for
/// configuration retention.ms").
pub fn check_code_message(
    code: i16,
    message: Option<&StrBytes>,
    what: impl FnOnce() -> String,
) -> Result<(), ClientError> {
    check_code(code, || match message {
        Some(message) if !message.is_empty() => format!("{} ({message})", what()),
        _ => what(),
    })
}

/// The byte stream under a [`Connection`]: the socket, or TLS over it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(stream) => stream.read(buffer),
            Stream::Tls(stream) => stream.read(buffer),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(stream) => stream.write(buffer),
            Stream::Tls(stream) => stream.write(buffer),
        }
    }

    fn write_all(&mut self, buffer: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Plain(stream) => stream.write_all(buffer),
            // rustls buffers what is written: flush sends it.
            Stream::Tls(stream) => {
                stream.write_all(buffer)?;
                stream.flush()
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(stream) => stream.flush(),
            Stream::Tls(stream) => stream.flush(),
        }
    }
}

/// One connection to one broker.
pub struct Connection {
    stream: Stream,
    address: String,
    correlation_id: i32,
    /// api key -> (min, max) version the broker serves.
    versions: BTreeMap<i16, (i16, i16)>,
}

impl Connection {
    /// Connect to `address` (`host:port`) within [`CONNECT_TIMEOUT`] and
    /// learn the broker's API versions, over PLAINTEXT.
    pub fn open(address: &str) -> Result<Connection, ClientError> {
        Connection::open_with(address, &ClientSecurity::default())
    }

    /// Like [`Connection::open`], secured as `security` says: the TLS
    /// handshake after the TCP connect, the SASL login after ApiVersions.
    pub fn open_with(address: &str, security: &ClientSecurity) -> Result<Connection, ClientError> {
        let socket_addresses: Vec<SocketAddr> = address
            .to_socket_addrs()
            .map_err(|error| ClientError::Resolve {
                address: address.to_string(),
                reason: error.to_string(),
            })?
            .collect();
        let mut last_error = None;
        let mut stream = None;
        for socket_address in &socket_addresses {
            match TcpStream::connect_timeout(socket_address, CONNECT_TIMEOUT) {
                Ok(connected) => {
                    stream = Some(connected);
                    break;
                }
                Err(error) => last_error = Some(error),
            }
        }
        let stream = match (stream, last_error) {
            (Some(stream), _) => stream,
            (None, Some(error)) => {
                return Err(ClientError::Connect {
                    address: address.to_string(),
                    source: error,
                });
            }
            (None, None) => {
                return Err(ClientError::Resolve {
                    address: address.to_string(),
                    reason: "no addresses".to_string(),
                });
            }
        };
        let configure = |result: std::io::Result<()>| {
            result.map_err(|error| ClientError::Connect {
                address: address.to_string(),
                source: error,
            })
        };
        configure(stream.set_read_timeout(Some(IO_TIMEOUT)))?;
        configure(stream.set_write_timeout(Some(IO_TIMEOUT)))?;
        configure(stream.set_nodelay(true))?;
        let stream = match &security.tls {
            None => Stream::Plain(stream),
            Some(config) => Stream::Tls(Box::new(tls_handshake(address, config, stream)?)),
        };
        let mut connection = Connection {
            stream,
            address: address.to_string(),
            correlation_id: 0,
            versions: BTreeMap::new(),
        };
        // v0: every broker parses it, and its answer is never flexible.
        let response: ApiVersionsResponse = connection.send(&ApiVersionsRequest::default(), 0)?;
        check_code(response.error_code, || {
            format!("ApiVersions from broker {address}")
        })?;
        connection.versions = response
            .api_keys
            .iter()
            .map(|api| (api.api_key, (api.min_version, api.max_version)))
            .collect();
        if let Some(login) = &security.sasl {
            security::authenticate(&mut connection, login)?;
        }
        Ok(connection)
    }

    /// The `host:port` this connection was opened to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The highest version of `api` in both `ours` and the broker's range.
    pub fn negotiate(&self, api: ApiKey, ours: RangeInclusive<i16>) -> Result<i16, ClientError> {
        let (broker_min, broker_max) =
            *self
                .versions
                .get(&(api as i16))
                .ok_or_else(|| ClientError::UnsupportedApi {
                    address: self.address.clone(),
                    api,
                })?;
        let version = broker_max.min(*ours.end());
        if version < broker_min || version < *ours.start() {
            return Err(ClientError::UnsupportedVersion {
                address: self.address.clone(),
                api,
                broker_min,
                broker_max,
                ours,
            });
        }
        Ok(version)
    }

    /// Negotiate the version of `R` within `ours`, send `request` as that
    /// version and wait for its response: the response and the version.
    pub fn call<R: Request>(
        &mut self,
        request: &R,
        ours: RangeInclusive<i16>,
    ) -> Result<(R::Response, i16), ClientError> {
        let api = api_of::<R>(&self.address)?;
        let version = self.negotiate(api, ours)?;
        Ok((self.send(request, version)?, version))
    }

    /// Send `request` as `version` and wait for its response. Kafka error
    /// codes inside the response are the caller's to check.
    pub fn send<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, ClientError> {
        self.write_request(request, version)?;
        self.read_response::<R>(version)
    }

    /// Send `request` as `version` and do not wait: for requests the broker
    /// never answers (Produce with acks=0). `Ok` promises only that the
    /// bytes were written to the socket.
    pub fn send_without_response<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<(), ClientError> {
        self.write_request(request, version)
    }

    fn write_request<R: Request>(&mut self, request: &R, version: i16) -> Result<(), ClientError> {
        let api = api_of::<R>(&self.address)?;
        let protocol = |reason: String| ClientError::Protocol {
            address: self.address.clone(),
            api,
            version,
            reason,
        };
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let correlation_id = self.correlation_id;
        let mut frame = BytesMut::new();
        frame.extend_from_slice(&[0; 4]);
        RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)))
            .encode(&mut frame, R::header_version(version))
            .map_err(|error| protocol(format!("encoding the request header: {error}")))?;
        request
            .encode(&mut frame, version)
            .map_err(|error| protocol(format!("encoding the request: {error}")))?;
        let size = i32::try_from(frame.len() - 4)
            .map_err(|_| protocol(format!("request of {} bytes", frame.len())))?;
        frame[..4].copy_from_slice(&size.to_be_bytes());

        let io = |source: std::io::Error| io_error(&self.address, api, source);
        self.stream.write_all(&frame).map_err(io)?;
        Ok(())
    }

    fn read_response<R: Request>(&mut self, version: i16) -> Result<R::Response, ClientError> {
        let api = api_of::<R>(&self.address)?;
        let correlation_id = self.correlation_id;
        let protocol = |reason: String| ClientError::Protocol {
            address: self.address.clone(),
            api,
            version,
            reason,
        };
        let io = |source: std::io::Error| io_error(&self.address, api, source);
        let mut size = [0_u8; 4];
        self.stream.read_exact(&mut size).map_err(|error| {
            if error.kind() == std::io::ErrorKind::UnexpectedEof {
                ClientError::NotKafka {
                    address: self.address.clone(),
                    detail: format!("it closed the connection without answering {api:?}"),
                }
            } else {
                io(error)
            }
        })?;
        let size = usize::try_from(i32::from_be_bytes(size))
            .ok()
            .filter(|length| *length <= RESPONSE_BYTES_MAX)
            .ok_or_else(|| ClientError::NotKafka {
                address: self.address.clone(),
                detail: not_kafka_detail(size),
            })?;
        let mut body = vec![0_u8; size];
        self.stream.read_exact(&mut body).map_err(io)?;
        let mut body = Bytes::from(body);
        let header = ResponseHeader::decode(
            &mut body,
            <R::Response as HeaderVersion>::header_version(version),
        )
        .map_err(|error| protocol(format!("decoding the response header: {error}")))?;
        if header.correlation_id != correlation_id {
            return Err(protocol(format!(
                "response has correlation id {}, request had {correlation_id}",
                header.correlation_id
            )));
        }
        let response = <R::Response as Decodable>::decode(&mut body, version)
            .map_err(|error| protocol(format!("decoding the response: {error}")))?;
        Ok(response)
    }
}

/// An I/O error on the connection to `address`; one that TLS raised (an
/// alert from the broker after the handshake: a refused client
/// certificate under TLS 1.3) is a [`ClientError::Tls`].
fn io_error(address: &str, api: ApiKey, source: std::io::Error) -> ClientError {
    let from_tls = source
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
    if from_tls {
        ClientError::Tls {
            address: address.to_string(),
            reason: format!("{api:?}: {}", security::describe_tls_error(&source)),
        }
    } else {
        ClientError::Io {
            address: address.to_string(),
            api,
            source,
        }
    }
}

/// The TLS handshake with the broker at `address` over `stream` (whose
/// read and write time limits bound it).
fn tls_handshake(
    address: &str,
    config: &std::sync::Arc<rustls::ClientConfig>,
    mut stream: TcpStream,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, ClientError> {
    let tls = |reason: String| ClientError::Tls {
        address: address.to_string(),
        reason,
    };
    let name = security::server_name(address).map_err(tls)?;
    let mut session = rustls::ClientConnection::new(std::sync::Arc::clone(config), name)
        .map_err(|error| tls(error.to_string()))?;
    while session.is_handshaking() {
        session
            .complete_io(&mut stream)
            .map_err(|error| tls(security::describe_tls_error(&error)))?;
    }
    Ok(rustls::StreamOwned::new(session, stream))
}

/// The [`ApiKey`] of request type `R`.
fn api_of<R: Request>(address: &str) -> Result<ApiKey, ClientError> {
    ApiKey::try_from(R::KEY).map_err(|()| ClientError::Protocol {
        address: address.to_string(),
        api: ApiKey::ApiVersions,
        version: 0,
        reason: format!("unknown api key {}", R::KEY),
    })
}

/// Describe a response that cannot be a Kafka frame from its first four
/// bytes (a length prefix there): an HTTP server's "HTTP" reads as a length
/// of 1213486160, which means nothing to a user.
fn not_kafka_detail(prefix: [u8; 4]) -> String {
    let length = i32::from_be_bytes(prefix);
    if prefix
        .iter()
        .all(|byte| byte.is_ascii_graphic() || *byte == b' ')
    {
        let text = String::from_utf8_lossy(&prefix);
        format!("it answered with text starting {text:?}, not a Kafka response")
    } else {
        format!("it answered with a response length of {length} bytes, not a Kafka response")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_answering_http_is_named_as_not_kafka() {
        assert_eq!(
            not_kafka_detail(*b"HTTP"),
            "it answered with text starting \"HTTP\", not a Kafka response"
        );
        assert!(not_kafka_detail((-5_i32).to_be_bytes()).contains("length of -5 bytes"));
    }

    #[test]
    fn error_codes_are_described_by_their_kafka_names() {
        assert_eq!(describe_code(69), "GROUP_ID_NOT_FOUND (69)");
        assert_eq!(describe_code(68), "NON_EMPTY_GROUP (68)");
        assert_eq!(describe_code(15), "COORDINATOR_NOT_AVAILABLE (15)");
        assert_eq!(describe_code(0), "no error");
        assert_eq!(describe_code(1000), "unknown error code 1000");
    }
}
