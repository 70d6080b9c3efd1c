//! The bench's native Kafka client: just what a load generator needs, on a
//! single-threaded tokio runtime (docs/decisions/0005-bench-harness.md).
//!
//! - [`Connection`]: one TCP connection; requests are written by a writer
//!   task in the order they are sent, response frames are read by a reader
//!   task and handed, tagged, to one channel that the owner drains. Kafka
//!   answers the requests of a connection in order, so the owner matches
//!   responses to requests by position (and checks the correlation id).
//! - [`Client`]: a connection used one request at a time, with the API
//!   versions negotiated against the broker's ApiVersions answer: metadata,
//!   topic creation and deletion, list offsets.
//! - [`producer`] and [`consumer`]: the load.

pub mod consumer;
pub mod producer;
pub mod records;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, CreateTopicsRequest, DeleteTopicsRequest, ListOffsetsRequest,
    MetadataRequest, RequestHeader, ResponseHeader, TopicName,
    create_topics_request::CreatableTopic, create_topics_request::CreatableTopicConfig,
    list_offsets_request::ListOffsetsPartition, list_offsets_request::ListOffsetsTopic,
    metadata_request::MetadataRequestTopic,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Largest response frame accepted (a Fetch answer is bounded by the
/// request's max_bytes; this only stops a garbage size prefix).
const FRAME_SIZE_MAX: usize = 256 << 20;
const CLIENT_ID: &str = "sluice-bench";
/// Read buffer of a connection: several Fetch or Produce answers per read.
const READ_BUFFER_BYTES: usize = 1 << 20;

/// Versions the client prefers per API (the highest it knows how to use
/// with topic names), and the lowest it can use.
fn preferred_versions(api_key: ApiKey) -> (i16, i16) {
    match api_key {
        ApiKey::ApiVersions => (0, 3),
        ApiKey::Metadata => (1, 9),
        ApiKey::Produce => (3, 9),
        ApiKey::Fetch => (4, 12),
        ApiKey::ListOffsets => (1, 7),
        ApiKey::CreateTopics => (2, 5),
        ApiKey::DeleteTopics => (1, 5),
        _ => (0, 0),
    }
}

/// A response frame from connection `tag`, or the error that ended it.
#[derive(Debug)]
pub struct Incoming {
    pub tag: usize,
    pub frame: std::io::Result<Bytes>,
}

/// One TCP connection to a broker (see the module comment).
#[derive(Debug)]
pub struct Connection {
    pub address: String,
    writer: mpsc::UnboundedSender<Bytes>,
    next_correlation_id: i32,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Connection {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Connection {
    /// Connect within `timeout`; responses go to `sink` tagged `tag`.
    pub async fn connect(
        address: &str,
        timeout: Duration,
        tag: usize,
        sink: mpsc::UnboundedSender<Incoming>,
    ) -> anyhow::Result<Connection> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                return Err(error).with_context(|| format!("cannot connect to broker {address}"));
            }
            Err(_) => bail!(
                "cannot connect to broker {address}: no answer within {} ms",
                timeout.as_millis()
            ),
        };
        stream.set_nodelay(true).context("TCP_NODELAY")?;
        let (read_half, mut write_half) = stream.into_split();
        let (writer, mut frames) = mpsc::unbounded_channel::<Bytes>();
        let write_task = tokio::spawn(async move {
            while let Some(frame) = frames.recv().await {
                if write_half.write_all(&frame).await.is_err() {
                    return;
                }
            }
        });
        let read_task = tokio::spawn(async move {
            let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, read_half);
            let mut buffer = BytesMut::new();
            loop {
                let frame = read_frame(&mut reader, &mut buffer).await;
                let failed = frame.is_err();
                if sink.send(Incoming { tag, frame }).is_err() || failed {
                    return;
                }
            }
        });
        Ok(Connection {
            address: address.to_owned(),
            writer,
            next_correlation_id: 0,
            tasks: [write_task, read_task],
        })
    }

    /// Queue `request` for writing; returns its correlation id.
    pub fn send<R: Request>(&mut self, request: &R, version: i16) -> anyhow::Result<i32> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let api_key =
            ApiKey::try_from(R::KEY).map_err(|_| anyhow!("unknown API key {}", R::KEY))?;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let header_version = R::header_version(version);
        let size = header.compute_size(header_version)? + request.compute_size(version)?;
        let mut frame = BytesMut::with_capacity(size + 4);
        frame.put_i32(i32::try_from(size).context("request too large")?);
        header.encode(&mut frame, header_version)?;
        request
            .encode(&mut frame, version)
            .with_context(|| format!("encoding {api_key:?} v{version}"))?;
        self.writer
            .send(frame.freeze())
            .map_err(|_| anyhow!("connection to {} is closed", self.address))?;
        Ok(correlation_id)
    }
}

/// Read one response frame into `buffer`'s spare room and split it off.
/// Once the caller drops a frame, the next `reserve` takes its allocation
/// back, so a consumer's fetch answers (16 MiB each in a catch-up) reuse
/// one buffer instead of each being a fresh zero-filled mapping the kernel
/// faults in, clears and unmaps again (which held the bench's consumer
/// thread ~4 ms per answer with no fetch in flight).
async fn read_frame(
    reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    buffer: &mut BytesMut,
) -> std::io::Result<Bytes> {
    let size = reader.read_i32().await?;
    let size = usize::try_from(size)
        .ok()
        .filter(|size| *size <= FRAME_SIZE_MAX && *size >= 4)
        .ok_or_else(|| std::io::Error::other(format!("invalid response size {size}")))?;
    debug_assert!(buffer.is_empty(), "every frame read is split off whole");
    buffer.reserve(size);
    while buffer.len() < size {
        let missing = (size - buffer.len()) as u64;
        if (&mut *reader).take(missing).read_buf(buffer).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(buffer.split_to(size).freeze())
}

/// Decode a response frame of `R` at `version`: (correlation id, body).
pub fn decode_response<R: Request>(
    mut frame: Bytes,
    version: i16,
) -> anyhow::Result<(i32, R::Response)> {
    let header = ResponseHeader::decode(&mut frame, R::Response::header_version(version))
        .context("decoding a response header")?;
    let body = R::Response::decode(&mut frame, version)
        .with_context(|| format!("decoding the response to API key {} v{version}", R::KEY))?;
    Ok((header.correlation_id, body))
}

/// A Kafka error code as text for messages.
pub fn error_name(code: i16) -> String {
    let name = match code {
        1 => "OFFSET_OUT_OF_RANGE",
        2 => "CORRUPT_MESSAGE",
        3 => "UNKNOWN_TOPIC_OR_PARTITION",
        5 => "LEADER_NOT_AVAILABLE",
        6 => "NOT_LEADER_OR_FOLLOWER",
        7 => "REQUEST_TIMED_OUT",
        10 => "MESSAGE_TOO_LARGE",
        19 => "NOT_ENOUGH_REPLICAS",
        20 => "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
        35 => "UNSUPPORTED_VERSION",
        36 => "TOPIC_ALREADY_EXISTS",
        37 => "INVALID_PARTITIONS",
        38 => "INVALID_REPLICATION_FACTOR",
        41 => "NOT_CONTROLLER",
        42 => "INVALID_REQUEST",
        56 => "KAFKA_STORAGE_ERROR",
        _ => "",
    };
    if name.is_empty() {
        format!("Kafka error code {code}")
    } else {
        format!("{name} ({code})")
    }
}

/// API versions both sides support.
#[derive(Clone, Debug, Default)]
pub struct Versions {
    ranges: HashMap<i16, (i16, i16)>,
}

impl Versions {
    /// The version to use for `api_key`: the highest the broker supports up
    /// to the client's preferred one.
    pub fn pick(&self, api_key: ApiKey) -> anyhow::Result<i16> {
        let (client_min, client_max) = preferred_versions(api_key);
        let Some((broker_min, broker_max)) = self.ranges.get(&(api_key as i16)) else {
            bail!("the broker does not serve {api_key:?}");
        };
        let version = client_max.min(*broker_max);
        if version < client_min.max(*broker_min) {
            bail!(
                "the broker serves {api_key:?} v{broker_min}-{broker_max}, \
                 the bench needs a version in v{client_min}-{client_max}"
            );
        }
        Ok(version)
    }
}

/// A partition's leader as metadata reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    pub index: i32,
    pub leader: i32,
    pub error_code: i16,
}

/// Brokers and topics from a Metadata answer.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    /// node id -> "host:port"
    pub brokers: HashMap<i32, String>,
    pub topics: HashMap<String, (i16, Vec<PartitionInfo>)>,
}

impl Metadata {
    pub fn leader_address(&self, topic: &str, partition: i32) -> anyhow::Result<(i32, String)> {
        let (_, partitions) = self
            .topics
            .get(topic)
            .ok_or_else(|| anyhow!("no metadata for topic {topic}"))?;
        let info = partitions
            .iter()
            .find(|info| info.index == partition)
            .ok_or_else(|| anyhow!("no metadata for {topic}-{partition}"))?;
        let address = self
            .brokers
            .get(&info.leader)
            .ok_or_else(|| anyhow!("{topic}-{partition} has no live leader"))?;
        Ok((info.leader, address.clone()))
    }
}

/// One connection used one request at a time (admin work: setup,
/// verification), with negotiated versions.
#[derive(Debug)]
pub struct Client {
    connection: Connection,
    responses: mpsc::UnboundedReceiver<Incoming>,
    pub versions: Versions,
    timeout: Duration,
}

impl Client {
    /// Connect to `address` and ask for its API versions, within `timeout`
    /// for each step: an address where nothing listens fails at once, one
    /// that never answers fails after `timeout`.
    pub async fn connect(address: &str, timeout: Duration) -> anyhow::Result<Client> {
        let (sink, responses) = mpsc::unbounded_channel();
        let connection = Connection::connect(address, timeout, 0, sink).await?;
        let mut client = Client {
            connection,
            responses,
            versions: Versions::default(),
            timeout,
        };
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let answer = client.call_version(&request, 3).await.with_context(|| {
            format!("{address} does not answer ApiVersions like a Kafka broker")
        })?;
        if answer.error_code != 0 && answer.api_keys.is_empty() {
            bail!(
                "{address} refused ApiVersions: {}",
                error_name(answer.error_code)
            );
        }
        for key in answer.api_keys {
            client
                .versions
                .ranges
                .insert(key.api_key, (key.min_version, key.max_version));
        }
        Ok(client)
    }

    /// How long later requests may take (creating 1000 partitions takes
    /// longer than connecting should).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    async fn call_version<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> anyhow::Result<R::Response> {
        let correlation_id = self.connection.send(request, version)?;
        let address = self.connection.address.clone();
        let incoming = match tokio::time::timeout(self.timeout, self.responses.recv()).await {
            Ok(Some(incoming)) => incoming,
            Ok(None) => bail!("connection to {address} closed"),
            Err(_) => bail!(
                "{address} did not answer API key {} within {} ms",
                R::KEY,
                self.timeout.as_millis()
            ),
        };
        let frame = incoming
            .frame
            .with_context(|| format!("reading from {address}"))?;
        let (answered, response) = decode_response::<R>(frame, version)?;
        if answered != correlation_id {
            bail!("{address} answered correlation id {answered}, expected {correlation_id}");
        }
        Ok(response)
    }

    async fn call<R: Request>(
        &mut self,
        request: &R,
        api_key: ApiKey,
    ) -> anyhow::Result<R::Response> {
        let version = self.versions.pick(api_key)?;
        self.call_version(request, version).await
    }

    /// Metadata of `topics` (all topics when `None`).
    pub async fn metadata(&mut self, topics: Option<&[String]>) -> anyhow::Result<Metadata> {
        let request = MetadataRequest::default().with_topics(topics.map(|topics| {
            topics
                .iter()
                .map(|name| {
                    MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(name.clone()))))
                })
                .collect()
        }));
        let response = self.call(&request, ApiKey::Metadata).await?;
        let mut metadata = Metadata::default();
        for broker in response.brokers {
            metadata.brokers.insert(
                broker.node_id.0,
                format!("{}:{}", broker.host.as_str(), broker.port),
            );
        }
        for topic in response.topics {
            let Some(name) = topic.name else { continue };
            let partitions = topic
                .partitions
                .iter()
                .map(|partition| PartitionInfo {
                    index: partition.partition_index,
                    leader: partition.leader_id.0,
                    error_code: partition.error_code,
                })
                .collect();
            metadata
                .topics
                .insert(name.0.to_string(), (topic.error_code, partitions));
        }
        Ok(metadata)
    }

    /// Create `name` with `partitions` partitions, then wait until metadata
    /// shows a leader for every one of them.
    pub async fn create_topic(
        &mut self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(String, String)],
    ) -> anyhow::Result<()> {
        let topic = CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.to_owned())))
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor)
            .with_configs(
                configs
                    .iter()
                    .map(|(key, value)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(key.clone()))
                            .with_value(Some(StrBytes::from_string(value.clone())))
                    })
                    .collect(),
            );
        let request = CreateTopicsRequest::default()
            .with_topics(vec![topic])
            .with_timeout_ms(i32::try_from(self.timeout.as_millis()).unwrap_or(i32::MAX));
        let response = self.call(&request, ApiKey::CreateTopics).await?;
        for result in response.topics {
            if result.error_code != 0 {
                let message = result
                    .error_message
                    .map(|message| format!(": {}", message.as_str()))
                    .unwrap_or_default();
                bail!(
                    "cannot create topic {name}: {}{message}",
                    error_name(result.error_code)
                );
            }
        }
        let names = [name.to_owned()];
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let metadata = self.metadata(Some(&names)).await?;
            let ready = metadata.topics.get(name).is_some_and(|(error, infos)| {
                *error == 0
                    && infos.len() == usize::try_from(partitions).unwrap_or(0)
                    && infos.iter().all(|info| {
                        info.error_code == 0 && metadata.brokers.contains_key(&info.leader)
                    })
            });
            if ready {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "topic {name} has no leader for every partition after {:?}",
                    self.timeout
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn delete_topics(&mut self, names: &[String]) -> anyhow::Result<()> {
        let request = DeleteTopicsRequest::default()
            .with_topic_names(
                names
                    .iter()
                    .map(|name| TopicName(StrBytes::from_string(name.clone())))
                    .collect(),
            )
            .with_timeout_ms(i32::try_from(self.timeout.as_millis()).unwrap_or(i32::MAX));
        let response = self.call(&request, ApiKey::DeleteTopics).await?;
        for result in response.responses {
            if result.error_code != 0 {
                bail!(
                    "cannot delete topic {:?}: {}",
                    result.name.map(|name| name.0.to_string()),
                    error_name(result.error_code)
                );
            }
        }
        Ok(())
    }

    /// Offsets of `partitions` of `topic` at `timestamp` (-1 latest, -2
    /// earliest), asked of this connection's broker (the partitions' leader).
    pub async fn list_offsets(
        &mut self,
        topic: &str,
        partitions: &[i32],
        timestamp: i64,
    ) -> anyhow::Result<HashMap<i32, i64>> {
        let request = ListOffsetsRequest::default()
            .with_replica_id((-1).into())
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                    .with_partitions(
                        partitions
                            .iter()
                            .map(|index| {
                                ListOffsetsPartition::default()
                                    .with_partition_index(*index)
                                    .with_timestamp(timestamp)
                            })
                            .collect(),
                    ),
            ]);
        let response = self.call(&request, ApiKey::ListOffsets).await?;
        let mut offsets = HashMap::new();
        for topic_response in response.topics {
            for partition in topic_response.partitions {
                if partition.error_code != 0 {
                    bail!(
                        "ListOffsets {topic}-{}: {}",
                        partition.partition_index,
                        error_name(partition.error_code)
                    );
                }
                offsets.insert(partition.partition_index, partition.offset);
            }
        }
        Ok(offsets)
    }
}

/// Offsets of every partition of `topic` at `timestamp`, asking each
/// partition's leader.
pub async fn topic_offsets(
    metadata: &Metadata,
    topic: &str,
    timestamp: i64,
    timeout: Duration,
) -> anyhow::Result<HashMap<i32, i64>> {
    let (_, partitions) = metadata
        .topics
        .get(topic)
        .ok_or_else(|| anyhow!("no metadata for topic {topic}"))?;
    let mut by_leader: HashMap<String, Vec<i32>> = HashMap::new();
    for info in partitions {
        let (_, address) = metadata.leader_address(topic, info.index)?;
        by_leader.entry(address).or_default().push(info.index);
    }
    let mut offsets = HashMap::new();
    for (address, indexes) in by_leader {
        let mut client = Client::connect(&address, timeout).await?;
        offsets.extend(client.list_offsets(topic, &indexes, timestamp).await?);
    }
    Ok(offsets)
}
