//! One Kafka request to another broker's client listener and its response,
//! on a fresh connection: what the transaction code sends between brokers
//! (WriteTxnMarkers from a coordinator to partition leaders, and
//! AddPartitionsToTxn v5 from partition leaders and group coordinators to a
//! transaction coordinator). Both are rare (once per transaction and
//! broker, or per transaction and partition), so no connection is kept.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use compio::BufResult;
use compio::io::{AsyncReadExt, AsyncWriteExt};
use compio::net::TcpStream;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

use crate::auth::SecurityProtocol;
use crate::metadata::{BrokerInfo, ClusterMetadata};
use crate::shard::Shard;

/// A call gives up after this long.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response accepted.
const RESPONSE_BYTES_MAX: usize = 16 << 20;
/// The correlation id of the single request on a connection.
const CORRELATION_ID: i32 = 1;

/// Where this broker sends these requests to `broker`: its endpoint on the
/// first PLAINTEXT listener of this broker's configuration (brokers of a
/// cluster share their listener names), else its first listener. The
/// calls speak plaintext Kafka protocol: a cluster whose listeners are all
/// TLS or SASL has no way to send them yet (issue 13).
pub fn broker_address(shard: &Shard, view: &ClusterMetadata, broker: &BrokerInfo) -> (String, u16) {
    let (host, port) = match shard
        .config
        .listeners
        .iter()
        .find(|listener| listener.protocol == SecurityProtocol::Plaintext)
    {
        Some(listener) => view.endpoint(broker, &listener.name),
        None => (broker.host.clone(), broker.port),
    };
    (host, u16::try_from(port).unwrap_or(0))
}

/// Send `request` (API `api_key`, `version`) to `address` and decode its
/// response, within [`REQUEST_TIMEOUT`].
pub async fn call<Request, Response>(
    address: &(String, u16),
    api_key: ApiKey,
    version: i16,
    client_id: &'static str,
    request: &Request,
) -> anyhow::Result<Response>
where
    Request: Encodable + HeaderVersion,
    Response: Decodable + HeaderVersion,
{
    compio::time::timeout(
        REQUEST_TIMEOUT,
        exchange(address, api_key, version, client_id, request),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no answer within {REQUEST_TIMEOUT:?}"))?
}

async fn exchange<Request, Response>(
    address: &(String, u16),
    api_key: ApiKey,
    version: i16,
    client_id: &'static str,
    request: &Request,
) -> anyhow::Result<Response>
where
    Request: Encodable + HeaderVersion,
    Response: Decodable + HeaderVersion,
{
    let mut stream = TcpStream::connect((address.0.as_str(), address.1)).await?;
    let _ = stream.set_nodelay(true);
    let mut header = RequestHeader::default();
    header.request_api_key = api_key as i16;
    header.request_api_version = version;
    header.correlation_id = CORRELATION_ID;
    header.client_id = Some(StrBytes::from_static_str(client_id));
    let mut body = BytesMut::new();
    header.encode(&mut body, Request::header_version(version))?;
    request.encode(&mut body, version)?;
    let mut frame = BytesMut::with_capacity(4 + body.len());
    frame.put_i32(i32::try_from(body.len())?);
    frame.extend_from_slice(&body);
    let BufResult(written, _) = stream.write_all(frame.to_vec()).await;
    written?;
    let BufResult(read, size) = stream.read_exact(vec![0u8; 4]).await;
    read?;
    let size = usize::try_from(i32::from_be_bytes([size[0], size[1], size[2], size[3]]))?;
    anyhow::ensure!(size <= RESPONSE_BYTES_MAX, "response of {size} bytes");
    let BufResult(read, payload) = stream.read_exact(vec![0u8; size]).await;
    read?;
    let mut payload = Bytes::from(payload);
    let response_header = ResponseHeader::decode(&mut payload, Response::header_version(version))?;
    anyhow::ensure!(
        response_header.correlation_id == CORRELATION_ID,
        "response to another request"
    );
    let response = Response::decode(&mut payload, version)?;
    let _ = payload.remaining();
    Ok(response)
}
