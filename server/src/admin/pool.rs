//! Connections to every broker of a cluster, and where each request goes:
//! partition requests (ListOffsets, Produce, Fetch) to the partition's
//! leader from Metadata, group requests to the group's coordinator from
//! FindCoordinator, admin requests (CreateTopics, DeleteTopics, configs) to
//! any broker, which forwards them to the controller as Kafka does.
//!
//! Connections open lazily, one per broker id, and stay open for the
//! command's life. When the cluster has a single broker, every request
//! uses the bootstrap connection, whatever address the broker advertises
//! (a broker behind a port forward advertises an address the CLI may not
//! reach).

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use kafka_protocol::error::{ParseResponseErrorCode, ResponseError};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, ListOffsetsRequest, MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;

use super::AdminError;
use super::client::{ClientError, Connection, check_code, describe_code};
use super::profile::Target;
use super::security::ClientSecurity;

/// Versions this client speaks, per API (the broker's ranges narrow them).
const METADATA_VERSIONS: RangeInclusive<i16> = 1..=12;
const FIND_COORDINATOR_VERSIONS: RangeInclusive<i16> = 0..=4;
const LIST_OFFSETS_VERSIONS: RangeInclusive<i16> = 1..=7;
/// ListOffsets timestamps with a special meaning.
pub const EARLIEST_TIMESTAMP: i64 = -2;
pub const LATEST_TIMESTAMP: i64 = -1;
/// How long a lookup is retried while the cluster is settling (a
/// coordinator loading, a new topic's leaders not yet elected).
pub const SETTLE_WAIT: Duration = Duration::from_secs(10);
pub const SETTLE_RETRY_INTERVAL: Duration = Duration::from_millis(200);

/// One broker of the cluster as Metadata lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokerAddress {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

impl BrokerAddress {
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// One partition as Metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionLayout {
    pub partition: i32,
    /// `None` while the partition has no leader.
    pub leader: Option<i32>,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline_replicas: Vec<i32>,
    /// The partition's Kafka error name, `None` when there is none
    /// (LEADER_NOT_AVAILABLE while a leader is elected).
    pub error: Option<String>,
}

/// One topic as Metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicLayout {
    pub name: String,
    /// `None` from brokers older than Metadata v10.
    pub topic_id: Option<String>,
    pub internal: bool,
    #[serde(skip)]
    pub error_code: i16,
    /// Sorted by partition.
    pub partitions: Vec<PartitionLayout>,
}

/// A Metadata answer: brokers, controller, topics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterLayout {
    pub cluster_id: Option<String>,
    /// `None` when the cluster has no active controller.
    pub controller_id: Option<i32>,
    pub brokers: Vec<BrokerAddress>,
    /// Sorted by name.
    pub topics: Vec<TopicLayout>,
}

impl ClusterLayout {
    pub fn topic(&self, name: &str) -> Option<&TopicLayout> {
        self.topics.iter().find(|topic| topic.name == name)
    }
}

/// Connections to a cluster's brokers, opened as requests need them.
pub struct BrokerPool {
    bootstrap: Connection,
    /// How every connection is secured (the bootstrap's way).
    security: ClientSecurity,
    /// node id -> host:port, from the latest Metadata.
    brokers: BTreeMap<i32, String>,
    connections: BTreeMap<i32, Connection>,
    /// group -> coordinator (node id, `host:port`), as FindCoordinator
    /// answered.
    coordinators: BTreeMap<String, (i32, String)>,
}

impl BrokerPool {
    /// Connect to the first broker of the comma-separated bootstrap list
    /// that answers, and learn the cluster's brokers. A failed TLS
    /// handshake or SASL login is final: the next broker would refuse the
    /// same settings.
    pub fn connect(target: &Target) -> Result<BrokerPool, AdminError> {
        let mut last_error = None;
        for address in target.bootstrap.split(',').map(str::trim) {
            match Connection::open_with(address, &target.security) {
                Ok(connection) => {
                    let mut pool = BrokerPool {
                        bootstrap: connection,
                        security: target.security.clone(),
                        brokers: BTreeMap::new(),
                        connections: BTreeMap::new(),
                        coordinators: BTreeMap::new(),
                    };
                    pool.metadata(Some(&[]), false)?;
                    return Ok(pool);
                }
                Err(error @ (ClientError::Tls { .. } | ClientError::Authentication { .. })) => {
                    return Err(error.into());
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(match last_error {
            Some(error) => error.into(),
            None => AdminError::Invalid("the bootstrap list is empty".to_string()),
        })
    }

    /// The bootstrap connection: for requests any broker answers.
    pub fn any(&mut self) -> &mut Connection {
        &mut self.bootstrap
    }

    /// Metadata for `topics` (`None`: every topic). `auto_create` lets a
    /// broker that is configured so create missing topics (what producers
    /// ask for). Refreshes the broker table.
    pub fn metadata(
        &mut self,
        topics: Option<&[String]>,
        auto_create: bool,
    ) -> Result<ClusterLayout, AdminError> {
        let request = MetadataRequest::default()
            .with_topics(topics.map(|topics| {
                topics
                    .iter()
                    .map(|topic| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(topic.clone()))))
                    })
                    .collect()
            }))
            .with_allow_auto_topic_creation(auto_create);
        let (response, _) = self.bootstrap.call(&request, METADATA_VERSIONS)?;
        let brokers: Vec<BrokerAddress> = response
            .brokers
            .iter()
            .map(|broker| BrokerAddress {
                node_id: broker.node_id.0,
                host: broker.host.to_string(),
                port: broker.port,
                rack: broker.rack.as_ref().map(|rack| rack.to_string()),
            })
            .collect();
        self.brokers = brokers
            .iter()
            .map(|broker| (broker.node_id, broker.address()))
            .collect();
        let mut topics: Vec<TopicLayout> = response
            .topics
            .into_iter()
            .filter_map(|topic| {
                let name = topic.name?.0.to_string();
                let mut partitions: Vec<PartitionLayout> = topic
                    .partitions
                    .into_iter()
                    .map(|partition| PartitionLayout {
                        partition: partition.partition_index,
                        leader: (partition.leader_id.0 >= 0).then_some(partition.leader_id.0),
                        leader_epoch: partition.leader_epoch,
                        replicas: partition.replica_nodes.iter().map(|id| id.0).collect(),
                        isr: partition.isr_nodes.iter().map(|id| id.0).collect(),
                        offline_replicas: partition
                            .offline_replicas
                            .iter()
                            .map(|id| id.0)
                            .collect(),
                        error: partition
                            .error_code
                            .is_err()
                            .then(|| describe_code(partition.error_code)),
                    })
                    .collect();
                partitions.sort_by_key(|partition| partition.partition);
                Some(TopicLayout {
                    name,
                    topic_id: (!topic.topic_id.is_nil()).then(|| topic.topic_id.to_string()),
                    internal: topic.is_internal,
                    error_code: topic.error_code,
                    partitions,
                })
            })
            .collect();
        topics.sort_by(|left, right| left.name.cmp(&right.name));
        Ok(ClusterLayout {
            cluster_id: response.cluster_id.map(|id| id.to_string()),
            controller_id: (response.controller_id.0 >= 0).then_some(response.controller_id.0),
            brokers,
            topics,
        })
    }

    /// Metadata for `topics`, each of which must exist; retried while a
    /// partition has no leader yet (a topic just created), up to
    /// [`SETTLE_WAIT`].
    pub fn existing_topics(
        &mut self,
        topics: &[String],
        auto_create: bool,
    ) -> Result<ClusterLayout, AdminError> {
        let deadline = Instant::now() + SETTLE_WAIT;
        loop {
            let layout = self.metadata(Some(topics), auto_create)?;
            let mut settling = false;
            for name in topics {
                let Some(topic) = layout.topic(name) else {
                    return Err(AdminError::TopicNotFound(name.clone()));
                };
                match topic.error_code.err() {
                    None => {}
                    Some(ResponseError::UnknownTopicOrPartition) => {
                        return Err(AdminError::TopicNotFound(name.clone()));
                    }
                    Some(error) if error.is_retriable() => settling = true,
                    Some(_) => {
                        return Err(ClientError::Kafka {
                            what: format!("Metadata of topic {name:?}"),
                            code: topic.error_code,
                        }
                        .into());
                    }
                }
                settling |= topic
                    .partitions
                    .iter()
                    .any(|partition| partition.leader.is_none());
            }
            if !settling || Instant::now() >= deadline {
                return Ok(layout);
            }
            std::thread::sleep(SETTLE_RETRY_INTERVAL);
        }
    }

    /// The connection to broker `node_id`.
    pub fn broker(&mut self, node_id: i32) -> Result<&mut Connection, AdminError> {
        if self.brokers.len() <= 1 {
            return Ok(&mut self.bootstrap);
        }
        let address = self
            .brokers
            .get(&node_id)
            .ok_or(AdminError::UnknownBroker(node_id))?
            .clone();
        Ok(match self.connections.entry(node_id) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => entry.insert(Connection::open_with(&address, &self.security)?),
        })
    }

    /// Forget the connection to `node_id` (after an I/O error on it): the
    /// next request opens a new one.
    pub fn drop_broker(&mut self, node_id: i32) {
        self.connections.remove(&node_id);
    }

    /// The coordinator of `group`: its node id and a connection to it.
    /// Retries while the coordinator is loading or not yet available, up
    /// to [`SETTLE_WAIT`].
    pub fn coordinator(&mut self, group: &str) -> Result<(i32, &mut Connection), AdminError> {
        let (node_id, address) = self.find_coordinator(group)?;
        if self.brokers.len() > 1 && !self.brokers.contains_key(&node_id) {
            self.brokers.insert(node_id, address);
        }
        Ok((node_id, self.broker(node_id)?))
    }

    /// Run `request` on the coordinator of `group`; when it answers that
    /// it is not (or not yet) the coordinator, look the coordinator up
    /// again and retry, up to [`SETTLE_WAIT`].
    pub fn with_coordinator<T>(
        &mut self,
        group: &str,
        mut request: impl FnMut(&mut Connection) -> Result<T, AdminError>,
    ) -> Result<T, AdminError> {
        let deadline = Instant::now() + SETTLE_WAIT;
        loop {
            let (_, connection) = self.coordinator(group)?;
            match request(connection) {
                Err(AdminError::Client(error))
                    if matches!(
                        error.kafka_error(),
                        Some(
                            ResponseError::NotCoordinator
                                | ResponseError::CoordinatorNotAvailable
                                | ResponseError::CoordinatorLoadInProgress
                        )
                    ) && Instant::now() < deadline =>
                {
                    self.coordinators.remove(group);
                    std::thread::sleep(SETTLE_RETRY_INTERVAL);
                }
                result => return result,
            }
        }
    }

    /// The coordinator's node id and `host:port` (asked once per group).
    pub fn find_coordinator(&mut self, group: &str) -> Result<(i32, String), AdminError> {
        if let Some(coordinator) = self.coordinators.get(group) {
            return Ok(coordinator.clone());
        }
        let coordinator = self.ask_coordinator(group)?;
        self.coordinators
            .insert(group.to_string(), coordinator.clone());
        Ok(coordinator)
    }

    fn ask_coordinator(&mut self, group: &str) -> Result<(i32, String), AdminError> {
        let connection = &mut self.bootstrap;
        let version = connection.negotiate(
            kafka_protocol::messages::ApiKey::FindCoordinator,
            FIND_COORDINATOR_VERSIONS,
        )?;
        let key = StrBytes::from_string(group.to_string());
        let mut request = FindCoordinatorRequest::default();
        if version >= 4 {
            request.coordinator_keys = vec![key];
        } else {
            request.key = key;
        }
        let deadline = Instant::now() + SETTLE_WAIT;
        loop {
            let response = connection.send(&request, version)?;
            let (code, node_id, host, port) =
                if version >= 4 {
                    let coordinator =
                        response.coordinators.into_iter().next().ok_or_else(|| {
                            ClientError::Kafka {
                                what: format!("FindCoordinator {group:?} answered no coordinator"),
                                code: ResponseError::UnknownServerError.code(),
                            }
                        })?;
                    (
                        coordinator.error_code,
                        coordinator.node_id,
                        coordinator.host,
                        coordinator.port,
                    )
                } else {
                    (
                        response.error_code,
                        response.node_id,
                        response.host,
                        response.port,
                    )
                };
            let retriable = code.err().is_some_and(|kafka| kafka.is_retriable());
            match check_code(code, || format!("FindCoordinator {group:?}")) {
                Ok(()) => return Ok((node_id.0, format!("{host}:{port}"))),
                Err(_) if retriable && Instant::now() < deadline => {
                    std::thread::sleep(SETTLE_RETRY_INTERVAL);
                }
                Err(error) if retriable => {
                    return Err(AdminError::CoordinatorUnavailable {
                        group: group.to_string(),
                        last: error,
                    });
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// ListOffsets of each (topic, partition, timestamp), asked of the
    /// partition's leader: the offset (`-1` when a timestamp has no record
    /// at or after it). Every topic must exist and every partition have a
    /// leader; a leader that moved is looked up again. A partition queried
    /// twice is asked once, with its first timestamp (the answers are per
    /// partition): a broker answers a partition named twice in one request
    /// INVALID_REQUEST.
    pub fn list_offsets(
        &mut self,
        queries: &[(String, i32, i64)],
    ) -> Result<BTreeMap<(String, i32), i64>, AdminError> {
        let mut answers = BTreeMap::new();
        if queries.is_empty() {
            return Ok(answers);
        }
        let mut topics: Vec<String> = queries.iter().map(|query| query.0.clone()).collect();
        topics.sort();
        topics.dedup();
        let mut asked = BTreeSet::new();
        let mut pending: Vec<(String, i32, i64)> = queries
            .iter()
            .filter(|query| asked.insert((query.0.as_str(), query.1)))
            .cloned()
            .collect();
        let deadline = Instant::now() + SETTLE_WAIT;
        loop {
            let layout = self.existing_topics(&topics, false)?;
            let by_leader = by_leader(&layout, pending.iter().map(|query| (&query.0, query.1)))?;
            let mut retry = Vec::new();
            let mut last_error = None;
            for (leader, partitions) in by_leader {
                let request = ListOffsetsRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_topics(
                        group_by_topic(&partitions)
                            .into_iter()
                            .map(|(topic, partitions)| {
                                ListOffsetsTopic::default()
                                    .with_name(TopicName(StrBytes::from_string(topic.clone())))
                                    .with_partitions(
                                        partitions
                                            .into_iter()
                                            .map(|partition| {
                                                let timestamp = pending
                                                    .iter()
                                                    .find(|query| {
                                                        query.0 == topic && query.1 == partition
                                                    })
                                                    .map_or(LATEST_TIMESTAMP, |query| query.2);
                                                ListOffsetsPartition::default()
                                                    .with_partition_index(partition)
                                                    .with_timestamp(timestamp)
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    );
                let (response, _) = self.broker(leader)?.call(&request, LIST_OFFSETS_VERSIONS)?;
                for topic in response.topics {
                    let name = topic.name.0.to_string();
                    for partition in topic.partitions {
                        let index = partition.partition_index;
                        let code = partition.error_code;
                        match code.err() {
                            None => {
                                answers.insert((name.clone(), index), partition.offset);
                            }
                            Some(error) if error.is_retriable() => {
                                if let Some(query) = pending
                                    .iter()
                                    .find(|query| query.0 == name && query.1 == index)
                                {
                                    retry.push(query.clone());
                                }
                                last_error = Some(ClientError::Kafka {
                                    what: format!("ListOffsets {name}-{index}"),
                                    code,
                                });
                            }
                            Some(_) => {
                                check_code(code, || format!("ListOffsets {name}-{index}"))?;
                            }
                        }
                    }
                }
            }
            match last_error {
                None => return Ok(answers),
                Some(error) if Instant::now() >= deadline => return Err(error.into()),
                Some(_) => {
                    pending = retry;
                    std::thread::sleep(SETTLE_RETRY_INTERVAL);
                }
            }
        }
    }
}

/// `partitions` grouped by their leader in `layout`. A partition of a
/// topic not in `layout`, or without a leader, is an error.
pub fn by_leader<'a>(
    layout: &ClusterLayout,
    partitions: impl Iterator<Item = (&'a String, i32)>,
) -> Result<BTreeMap<i32, Vec<(String, i32)>>, AdminError> {
    let mut grouped: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
    for (topic, partition) in partitions {
        let layout_topic = layout
            .topic(topic)
            .ok_or_else(|| AdminError::TopicNotFound(topic.clone()))?;
        let Some(layout_partition) = layout_topic
            .partitions
            .iter()
            .find(|candidate| candidate.partition == partition)
        else {
            return Err(AdminError::PartitionNotFound {
                topic: topic.clone(),
                partition,
                count: layout_topic.partitions.len(),
            });
        };
        let leader = layout_partition
            .leader
            .ok_or_else(|| AdminError::NoLeader {
                topic: topic.clone(),
                partition,
            })?;
        grouped
            .entry(leader)
            .or_default()
            .push((topic.clone(), partition));
    }
    Ok(grouped)
}

/// (topic, partition) pairs as topic -> partitions, topics in first-seen
/// order kept stable by sorting.
pub fn group_by_topic(partitions: &[(String, i32)]) -> BTreeMap<String, Vec<i32>> {
    let mut grouped: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in partitions {
        grouped.entry(topic.clone()).or_default().push(*partition);
    }
    grouped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> ClusterLayout {
        let partition = |partition: i32, leader: Option<i32>| PartitionLayout {
            partition,
            leader,
            leader_epoch: 0,
            replicas: vec![1],
            isr: vec![1],
            offline_replicas: vec![],
            error: None,
        };
        ClusterLayout {
            cluster_id: None,
            controller_id: Some(1),
            brokers: vec![],
            topics: vec![TopicLayout {
                name: "events".into(),
                topic_id: None,
                internal: false,
                error_code: 0,
                partitions: vec![
                    partition(0, Some(1)),
                    partition(1, Some(2)),
                    partition(2, None),
                ],
            }],
        }
    }

    #[test]
    fn partitions_are_routed_to_their_leaders() {
        let topic = "events".to_string();
        let grouped = by_leader(&layout(), [(&topic, 0), (&topic, 1)].into_iter());
        let grouped = grouped.ok().unwrap_or_default();
        assert_eq!(grouped.get(&1), Some(&vec![(topic.clone(), 0)]));
        assert_eq!(grouped.get(&2), Some(&vec![(topic.clone(), 1)]));
    }

    #[test]
    fn a_partition_without_leader_or_topic_is_an_error() {
        let topic = "events".to_string();
        let missing = "missing".to_string();
        assert!(matches!(
            by_leader(&layout(), [(&topic, 2)].into_iter()),
            Err(AdminError::NoLeader { .. })
        ));
        assert!(matches!(
            by_leader(&layout(), [(&topic, 9)].into_iter()),
            Err(AdminError::PartitionNotFound { count: 3, .. })
        ));
        assert!(matches!(
            by_leader(&layout(), [(&missing, 0)].into_iter()),
            Err(AdminError::TopicNotFound(_))
        ));
    }
}
