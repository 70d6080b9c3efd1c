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

use std::sync::Arc;

use crate::admin::client::Connection;
use crate::admin::security::ClientSecurity;
use crate::auth::SecurityProtocol;
use crate::metadata::{BrokerInfo, ClusterMetadata};
use crate::shard::Shard;

/// A call gives up after this long.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response accepted.
const RESPONSE_BYTES_MAX: usize = 16 << 20;
/// The correlation id of the single request on a connection.
const CORRELATION_ID: i32 = 1;

/// Another broker's endpoint and how to secure a connection to it.
#[derive(Clone, Debug)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// `--inter-broker-listener-name`'s client settings (PLAINTEXT: none).
    pub security: Arc<ClientSecurity>,
}

impl std::fmt::Display for Target {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "{}:{} ({})",
            self.host,
            self.port,
            self.security.protocol.name()
        )
    }
}

/// Where this broker sends these requests to `broker`: its endpoint on
/// `--inter-broker-listener-name` (Kafka's inter.broker.listener.name;
/// brokers of a cluster share their listener names), secured as that
/// listener's protocol says; without one, the first PLAINTEXT listener of
/// this broker's configuration, else its first listener.
pub fn broker_address(shard: &Shard, view: &ClusterMetadata, broker: &BrokerInfo) -> Target {
    inter_broker_target(&shard.config, view, broker)
}

/// [`broker_address`] from the broker's configuration (also used off the
/// shards: the console asks the other brokers through it).
pub fn inter_broker_target(
    config: &crate::cli::BrokerConfig,
    view: &ClusterMetadata,
    broker: &BrokerInfo,
) -> Target {
    let inter_broker = &config.inter_broker;
    let listener = match &inter_broker.listener_name {
        Some(name) => Some(name.as_str()),
        None => config
            .listeners
            .iter()
            .find(|listener| listener.protocol == SecurityProtocol::Plaintext)
            .map(|listener| listener.name.as_str()),
    };
    let (host, port) = match listener {
        Some(name) => view.endpoint(broker, name),
        None => (broker.host.clone(), broker.port),
    };
    Target {
        host,
        port: u16::try_from(port).unwrap_or(0),
        security: Arc::clone(&inter_broker.security),
    }
}

/// Send `request` (API `api_key`, `version`) to `address` and decode its
/// response, within [`REQUEST_TIMEOUT`].
pub async fn call<Request>(
    target: &Target,
    version: i16,
    client_id: &'static str,
    request: &Request,
) -> anyhow::Result<Request::Response>
where
    Request: kafka_protocol::protocol::Request + Clone + Send + 'static,
    Request::Response: Send + 'static,
{
    if target.security.protocol != crate::admin::security::SecurityProtocol::Plaintext {
        return secured_call(target, version, request).await;
    }
    let address = (target.host.clone(), target.port);
    compio::time::timeout(
        REQUEST_TIMEOUT,
        exchange::<Request, Request::Response>(
            &address,
            ApiKey::try_from(Request::KEY)
                .map_err(|_| anyhow::anyhow!("unknown API key {}", Request::KEY))?,
            version,
            client_id,
            request,
        ),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no answer within {REQUEST_TIMEOUT:?}"))?
}

/// Warn about an answer only the operator can fix: the other broker
/// refused this broker's principal (CLUSTER_AUTHORIZATION_FAILED).
pub fn warn_if_refused(target: &Target, api: &str, code: i16) {
    if code == kafka_protocol::error::ResponseError::ClusterAuthorizationFailed.code() {
        tracing::warn!(
            broker = %target,
            api,
            "another broker refused this broker's call (CLUSTER_AUTHORIZATION_FAILED): the \
             inter-broker principal needs CLUSTER_ACTION (list it in --super-users)"
        );
    }
}

/// A call over TLS and/or SASL: the admin client's blocking connection
/// (TLS handshake, ApiVersions, SASL login, each with its time limit) on
/// the runtime's blocking pool. These calls are rare (module docs), so a
/// thread per call costs nothing that matters.
async fn secured_call<Request>(
    target: &Target,
    version: i16,
    request: &Request,
) -> anyhow::Result<Request::Response>
where
    Request: kafka_protocol::protocol::Request + Clone + Send + 'static,
    Request::Response: Send + 'static,
{
    let address = format!("{}:{}", target.host, target.port);
    let security = Arc::clone(&target.security);
    let request = request.clone();
    let call = compio::runtime::spawn_blocking(move || {
        let mut connection = Connection::open_with(&address, &security)?;
        connection.send(&request, version)
    });
    match compio::time::timeout(REQUEST_TIMEOUT, call).await {
        Err(_) => anyhow::bail!("no answer within {REQUEST_TIMEOUT:?}"),
        Ok(Err(_)) => anyhow::bail!("the call's thread panicked"),
        Ok(Ok(answer)) => answer.map_err(|error| {
            if matches!(error, crate::admin::client::ClientError::Authentication { .. }) {
                tracing::warn!(broker = %target, %error, "this broker's inter-broker login was refused (--inter-broker-sasl-*)");
            }
            anyhow::anyhow!("{error}")
        }),
    }
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
