//! `sluice groups list` and `sluice groups describe GROUP`: what
//! kafka-consumer-groups.sh `--list` and `--describe` show, fetched over the
//! Kafka protocol from any broker.
//!
//! Describe: FindCoordinator(group) -> DescribeGroups (state, members and
//! their assignments) + OffsetFetch (committed offsets) on the coordinator;
//! Metadata for the partitions' leaders -> ListOffsets "latest" (the log end
//! a consumer can reach, the high watermark) on each leader. Lag is
//! log end - committed, as Kafka's tool computes it (not clamped).
//!
//! The gathering ([`describe_group`], [`list_groups`]) returns plain data;
//! the rendering ([`render_description`], [`render_listing`]) is pure, so
//! both are testable apart.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use kafka_protocol::error::{ParseResponseErrorCode, ResponseError};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, BrokerId, ConsumerProtocolAssignment, DescribeGroupsRequest, FindCoordinatorRequest,
    GroupId, ListGroupsRequest, ListOffsetsRequest, MetadataRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

use super::client::{ClientError, Connection, check_code};
use crate::cli::{GroupsArgs, GroupsCommand};

/// Versions this client speaks, per API (the broker's ranges narrow them).
const FIND_COORDINATOR_VERSIONS: std::ops::RangeInclusive<i16> = 0..=4;
const LIST_GROUPS_VERSIONS: std::ops::RangeInclusive<i16> = 0..=4;
const DESCRIBE_GROUPS_VERSIONS: std::ops::RangeInclusive<i16> = 0..=5;
/// From v2, topics = null fetches every partition the group committed.
const OFFSET_FETCH_VERSIONS: std::ops::RangeInclusive<i16> = 2..=7;
const LIST_OFFSETS_VERSIONS: std::ops::RangeInclusive<i16> = 1..=7;
const METADATA_VERSIONS: std::ops::RangeInclusive<i16> = 1..=9;
/// ListOffsets timestamp meaning "the latest offset" (the high watermark).
const LATEST_TIMESTAMP: i64 = -1;
/// How long FindCoordinator is retried while the coordinator is loading
/// (a new `__consumer_offsets` partition, a broker just started).
const COORDINATOR_WAIT: Duration = Duration::from_secs(10);
const COORDINATOR_RETRY_INTERVAL: Duration = Duration::from_millis(200);
/// Shown for a value that does not exist (no commit, no member).
const NONE: &str = "-";

/// One group as ListGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    /// `None` from brokers older than ListGroups v4.
    pub state: Option<String>,
}

/// One member of a described group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    /// (topic, partition) assigned to it; empty unless the group is Stable.
    pub assignment: Vec<(String, i32)>,
}

/// One partition row of a described group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRow {
    pub topic: String,
    pub partition: i32,
    /// The committed offset, `None` when the group committed none.
    pub committed: Option<i64>,
    /// The partition's log end (high watermark), `None` when unknown.
    pub log_end: Option<i64>,
    /// Index into [`GroupDescription::members`] of the member assigned to it.
    pub member: Option<usize>,
}

impl PartitionRow {
    /// log end - committed, when both are known (Kafka's definition; not
    /// clamped, so a committed offset past the end shows as negative).
    pub fn lag(&self) -> Option<i64> {
        Some(self.log_end? - self.committed?)
    }
}

/// Everything `describe` shows about one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    /// The coordinator: node id and `host:port`.
    pub coordinator: (i32, String),
    pub members: Vec<MemberDescription>,
    /// Sorted by topic then partition: every partition that has a committed
    /// offset or is assigned to a member.
    pub partitions: Vec<PartitionRow>,
}

/// Errors of the groups subcommand that are not the wire client's.
#[derive(Debug, thiserror::Error)]
pub enum GroupsError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("consumer group {0:?} does not exist")]
    GroupNotFound(String),
    #[error("no coordinator for group {group:?} within {COORDINATOR_WAIT:?}: {last}")]
    CoordinatorUnavailable { group: String, last: ClientError },
    #[error("broker {node_id} (leader of {topic}-{partition}) is not in the cluster metadata")]
    UnknownLeader {
        node_id: i32,
        topic: String,
        partition: i32,
    },
    #[error("cannot decode the assignment of member {member}: {reason}")]
    Assignment { member: String, reason: String },
}

/// Run `sluice groups ...`: print to stdout, errors to stderr; exit code 1
/// on any error.
pub fn run(args: GroupsArgs) -> ExitCode {
    let outcome = match args.command {
        GroupsCommand::List(target) => {
            list_groups(&target.bootstrap).map(|groups| render_listing(&groups))
        }
        GroupsCommand::Describe { group, target } => {
            describe_group(&target.bootstrap, &group).map(|group| render_description(&group))
        }
    };
    match outcome {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("sluice groups: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Every group of every broker in the cluster, sorted by id.
pub fn list_groups(bootstrap: &str) -> Result<Vec<GroupListing>, GroupsError> {
    let mut connection = Connection::open(bootstrap)?;
    let brokers = cluster_brokers(&mut connection, &[])?.0;
    let mut groups = BTreeMap::new();
    for address in brokers.values() {
        let mut broker = if brokers.len() == 1 {
            // A single broker: the connection we have (whatever address it
            // advertises).
            None
        } else {
            Some(Connection::open(address)?)
        };
        let broker = broker.as_mut().unwrap_or(&mut connection);
        let version = broker.negotiate(ApiKey::ListGroups, LIST_GROUPS_VERSIONS)?;
        let response = broker.send(&ListGroupsRequest::default(), version)?;
        check_code(response.error_code, || {
            format!("ListGroups from broker {}", broker.address())
        })?;
        for listed in response.groups {
            let group_id = listed.group_id.0.to_string();
            groups.insert(
                group_id.clone(),
                GroupListing {
                    group_id,
                    protocol_type: listed.protocol_type.to_string(),
                    state: (version >= 4).then(|| listed.group_state.to_string()),
                },
            );
        }
    }
    Ok(groups.into_values().collect())
}

/// Describe `group`: members, committed offsets, log ends.
pub fn describe_group(bootstrap: &str, group: &str) -> Result<GroupDescription, GroupsError> {
    let mut connection = Connection::open(bootstrap)?;
    let (coordinator_id, coordinator_address) = find_coordinator(&mut connection, group)?;
    let mut coordinator = Connection::open(&coordinator_address)?;

    let version = coordinator.negotiate(ApiKey::DescribeGroups, DESCRIBE_GROUPS_VERSIONS)?;
    let request = DescribeGroupsRequest::default()
        .with_groups(vec![GroupId(StrBytes::from_string(group.to_string()))]);
    let response = coordinator.send(&request, version)?;
    let described = response
        .groups
        .into_iter()
        .next()
        .ok_or_else(|| ClientError::Kafka {
            what: format!("DescribeGroups {group:?} answered no group"),
            code: ResponseError::UnknownServerError.code(),
        })?;
    if described.error_code == ResponseError::GroupIdNotFound.code() {
        return Err(GroupsError::GroupNotFound(group.to_string()));
    }
    check_code(described.error_code, || format!("DescribeGroups {group:?}"))?;
    let mut members = Vec::with_capacity(described.members.len());
    for member in described.members {
        let member_id = member.member_id.to_string();
        let assignment = decode_assignment(member.member_assignment).map_err(|reason| {
            GroupsError::Assignment {
                member: member_id.clone(),
                reason,
            }
        })?;
        members.push(MemberDescription {
            member_id,
            group_instance_id: member.group_instance_id.map(|id| id.to_string()),
            client_id: member.client_id.to_string(),
            host: member.client_host.to_string(),
            assignment,
        });
    }

    let committed = fetch_committed(&mut coordinator, group)?;
    let state = described.group_state.to_string();
    if state == "Dead" && committed.is_empty() {
        return Err(GroupsError::GroupNotFound(group.to_string()));
    }

    let mut partitions: BTreeMap<(String, i32), PartitionRow> = BTreeMap::new();
    for ((topic, partition), offset) in &committed {
        partitions.insert(
            (topic.clone(), *partition),
            PartitionRow {
                topic: topic.clone(),
                partition: *partition,
                committed: Some(*offset),
                log_end: None,
                member: None,
            },
        );
    }
    for (index, member) in members.iter().enumerate() {
        for (topic, partition) in &member.assignment {
            partitions
                .entry((topic.clone(), *partition))
                .or_insert_with(|| PartitionRow {
                    topic: topic.clone(),
                    partition: *partition,
                    committed: None,
                    log_end: None,
                    member: None,
                })
                .member = Some(index);
        }
    }
    let ends = log_ends(&mut connection, partitions.keys())?;
    for (key, row) in &mut partitions {
        row.log_end = ends.get(key).copied();
    }

    Ok(GroupDescription {
        group_id: group.to_string(),
        state,
        protocol_type: described.protocol_type.to_string(),
        protocol: described.protocol_data.to_string(),
        coordinator: (coordinator_id, coordinator_address),
        members,
        partitions: partitions.into_values().collect(),
    })
}

/// The coordinator of `group`: node id and `host:port`. Retries while the
/// coordinator is loading or not yet available.
fn find_coordinator(
    connection: &mut Connection,
    group: &str,
) -> Result<(i32, String), GroupsError> {
    let version = connection.negotiate(ApiKey::FindCoordinator, FIND_COORDINATOR_VERSIONS)?;
    let key = StrBytes::from_string(group.to_string());
    let mut request = FindCoordinatorRequest::default();
    if version >= 4 {
        request.coordinator_keys = vec![key];
    } else {
        request.key = key;
    }
    let deadline = Instant::now() + COORDINATOR_WAIT;
    loop {
        let response = connection.send(&request, version)?;
        let (code, node_id, host, port) = if version >= 4 {
            let coordinator =
                response
                    .coordinators
                    .into_iter()
                    .next()
                    .ok_or_else(|| ClientError::Kafka {
                        what: format!("FindCoordinator {group:?} answered no coordinator"),
                        code: ResponseError::UnknownServerError.code(),
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
        match check_code(code, || format!("FindCoordinator {group:?}")) {
            Ok(()) => return Ok((node_id.0, format!("{host}:{port}"))),
            Err(error)
                if code.err().is_some_and(|kafka| kafka.is_retriable())
                    && Instant::now() < deadline =>
            {
                drop(error);
                std::thread::sleep(COORDINATOR_RETRY_INTERVAL);
            }
            Err(error) if code.err().is_some_and(|kafka| kafka.is_retriable()) => {
                return Err(GroupsError::CoordinatorUnavailable {
                    group: group.to_string(),
                    last: error,
                });
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// The group's committed offsets (OffsetFetch of every partition), without
/// the partitions that have none (offset -1).
fn fetch_committed(
    coordinator: &mut Connection,
    group: &str,
) -> Result<BTreeMap<(String, i32), i64>, GroupsError> {
    let version = coordinator.negotiate(ApiKey::OffsetFetch, OFFSET_FETCH_VERSIONS)?;
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_topics(None);
    let response = coordinator.send(&request, version)?;
    check_code(response.error_code, || format!("OffsetFetch {group:?}"))?;
    let mut committed = BTreeMap::new();
    for topic in response.topics {
        let name = topic.name.0.to_string();
        for partition in topic.partitions {
            check_code(partition.error_code, || {
                format!("OffsetFetch {group:?} {name}-{}", partition.partition_index)
            })?;
            if partition.committed_offset >= 0 {
                committed.insert(
                    (name.clone(), partition.partition_index),
                    partition.committed_offset,
                );
            }
        }
    }
    Ok(committed)
}

/// Brokers (node id -> `host:port`) and, for `topics`, each partition's
/// leader node id.
#[allow(clippy::type_complexity)]
fn cluster_brokers(
    connection: &mut Connection,
    topics: &[String],
) -> Result<(BTreeMap<i32, String>, BTreeMap<(String, i32), i32>), GroupsError> {
    let version = connection.negotiate(ApiKey::Metadata, METADATA_VERSIONS)?;
    // An empty list asks for no topics (null would mean all of them).
    let request = MetadataRequest::default()
        .with_topics(Some(
            topics
                .iter()
                .map(|topic| {
                    MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(topic.clone()))))
                })
                .collect(),
        ))
        .with_allow_auto_topic_creation(false);
    let response = connection.send(&request, version)?;
    let brokers = response
        .brokers
        .iter()
        .map(|broker| (broker.node_id.0, format!("{}:{}", broker.host, broker.port)))
        .collect();
    let mut leaders = BTreeMap::new();
    for topic in response.topics {
        let Some(name) = topic.name else { continue };
        // A topic that no longer exists keeps its committed offsets; its
        // log end is simply unknown.
        if topic.error_code.is_err() {
            continue;
        }
        for partition in topic.partitions {
            if partition.error_code.is_ok() && partition.leader_id != BrokerId(-1) {
                leaders.insert(
                    (name.0.to_string(), partition.partition_index),
                    partition.leader_id.0,
                );
            }
        }
    }
    Ok((brokers, leaders))
}

/// The log end (ListOffsets latest) of each partition, asked of its leader.
/// Partitions without a leader or with an error are left out.
fn log_ends<'a>(
    connection: &mut Connection,
    partitions: impl Iterator<Item = &'a (String, i32)>,
) -> Result<BTreeMap<(String, i32), i64>, GroupsError> {
    let partitions: Vec<&(String, i32)> = partitions.collect();
    if partitions.is_empty() {
        return Ok(BTreeMap::new());
    }
    let topics: Vec<String> = partitions
        .iter()
        .map(|(topic, _)| topic.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let (brokers, leaders) = cluster_brokers(connection, &topics)?;
    let mut by_leader: BTreeMap<i32, BTreeMap<String, Vec<i32>>> = BTreeMap::new();
    for key in partitions {
        if let Some(leader) = leaders.get(key) {
            by_leader
                .entry(*leader)
                .or_default()
                .entry(key.0.clone())
                .or_default()
                .push(key.1);
        }
    }
    let mut ends = BTreeMap::new();
    for (leader, topics) in by_leader {
        let Some(address) = brokers.get(&leader) else {
            let (topic, partitions) = topics.into_iter().next().unwrap_or_default();
            return Err(GroupsError::UnknownLeader {
                node_id: leader,
                topic,
                partition: partitions.first().copied().unwrap_or(-1),
            });
        };
        let mut other;
        let broker = if brokers.len() == 1 {
            &mut *connection
        } else {
            other = Connection::open(address)?;
            &mut other
        };
        let version = broker.negotiate(ApiKey::ListOffsets, LIST_OFFSETS_VERSIONS)?;
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(
                topics
                    .into_iter()
                    .map(|(topic, partitions)| {
                        ListOffsetsTopic::default()
                            .with_name(TopicName(StrBytes::from_string(topic)))
                            .with_partitions(
                                partitions
                                    .into_iter()
                                    .map(|partition| {
                                        ListOffsetsPartition::default()
                                            .with_partition_index(partition)
                                            .with_timestamp(LATEST_TIMESTAMP)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        let response = broker.send(&request, version)?;
        for topic in response.topics {
            for partition in topic.partitions {
                if partition.error_code.is_ok() && partition.offset >= 0 {
                    ends.insert(
                        (topic.name.0.to_string(), partition.partition_index),
                        partition.offset,
                    );
                }
            }
        }
    }
    Ok(ends)
}

/// The (topic, partition) pairs of a consumer-protocol assignment: an i16
/// version, then the ConsumerProtocolAssignment body (a newer version than
/// this client knows is read as the newest it knows, as Kafka's clients
/// do: the versions only add fields at the end). Empty bytes: nothing
/// assigned (or the group is not Stable).
pub fn decode_assignment(bytes: Bytes) -> Result<Vec<(String, i32)>, String> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut bytes = bytes;
    if bytes.remaining() < 2 {
        return Err(format!("{} bytes, shorter than a version", bytes.len()));
    }
    let version = bytes.get_i16();
    if version < 0 {
        return Err(format!("version {version}"));
    }
    let assignment = ConsumerProtocolAssignment::decode(&mut bytes, version.min(3))
        .map_err(|error| format!("version {version}: {error}"))?;
    let mut pairs: Vec<(String, i32)> = assignment
        .assigned_partitions
        .into_iter()
        .flat_map(|topic| {
            let name = topic.topic.0.to_string();
            topic
                .partitions
                .into_iter()
                .map(move |partition| (name.clone(), partition))
        })
        .collect();
    pairs.sort();
    Ok(pairs)
}

/// `headers` and `rows` as columns padded to their widest cell, separated by
/// two spaces, trailing spaces trimmed.
pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers
        .iter()
        .map(|header| header.chars().count())
        .collect();
    for row in rows {
        for (index, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(index) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let mut text = String::new();
    let header_cells: Vec<String> = headers.iter().map(|header| header.to_string()).collect();
    for row in std::iter::once(&header_cells).chain(rows) {
        let mut line = String::new();
        for (index, cell) in row.iter().enumerate() {
            if index > 0 {
                line.push_str("  ");
            }
            let width = widths.get(index).copied().unwrap_or(0);
            line.push_str(&format!("{cell:<width$}"));
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

fn optional(value: Option<impl ToString>) -> String {
    value.map_or_else(|| NONE.to_string(), |value| value.to_string())
}

fn non_empty(value: &str) -> String {
    if value.is_empty() {
        NONE.to_string()
    } else {
        value.to_string()
    }
}

/// The `describe` output: a summary line, the partition table (as
/// kafka-consumer-groups --describe) and the member table.
pub fn render_description(group: &GroupDescription) -> String {
    let mut text = format!(
        "Group {}: state {}, protocol type {}, protocol {}, coordinator {} ({}), {} members\n\n",
        group.group_id,
        group.state,
        non_empty(&group.protocol_type),
        non_empty(&group.protocol),
        group.coordinator.0,
        group.coordinator.1,
        group.members.len()
    );
    if group.members.is_empty() {
        text.push_str(&format!(
            "Consumer group '{}' has no active members.\n\n",
            group.group_id
        ));
    }
    let rows: Vec<Vec<String>> = group
        .partitions
        .iter()
        .map(|row| {
            let member = row.member.and_then(|index| group.members.get(index));
            vec![
                group.group_id.clone(),
                row.topic.clone(),
                row.partition.to_string(),
                optional(row.committed),
                optional(row.log_end),
                optional(row.lag()),
                optional(member.map(|member| &member.member_id)),
                optional(member.map(|member| &member.host)),
                optional(member.map(|member| &member.client_id)),
            ]
        })
        .collect();
    text.push_str(&render_table(
        &[
            "GROUP",
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "CONSUMER-ID",
            "HOST",
            "CLIENT-ID",
        ],
        &rows,
    ));
    if !group.members.is_empty() {
        let rows: Vec<Vec<String>> = group
            .members
            .iter()
            .map(|member| {
                vec![
                    member.member_id.clone(),
                    optional(member.group_instance_id.as_ref()),
                    non_empty(&member.host),
                    non_empty(&member.client_id),
                    member.assignment.len().to_string(),
                    if member.assignment.is_empty() {
                        NONE.to_string()
                    } else {
                        member
                            .assignment
                            .iter()
                            .map(|(topic, partition)| format!("{topic}-{partition}"))
                            .collect::<Vec<_>>()
                            .join(",")
                    },
                ]
            })
            .collect();
        text.push('\n');
        text.push_str(&render_table(
            &[
                "CONSUMER-ID",
                "GROUP-INSTANCE-ID",
                "HOST",
                "CLIENT-ID",
                "#PARTITIONS",
                "ASSIGNMENT",
            ],
            &rows,
        ));
    }
    text
}

/// The `list` output: one row per group.
pub fn render_listing(groups: &[GroupListing]) -> String {
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|group| {
            vec![
                group.group_id.clone(),
                optional(group.state.as_ref()),
                non_empty(&group.protocol_type),
            ]
        })
        .collect();
    render_table(&["GROUP", "STATE", "PROTOCOL-TYPE"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use kafka_protocol::protocol::Encodable;

    fn row(
        topic: &str,
        partition: i32,
        committed: Option<i64>,
        log_end: Option<i64>,
    ) -> PartitionRow {
        PartitionRow {
            topic: topic.to_string(),
            partition,
            committed,
            log_end,
            member: None,
        }
    }

    #[test]
    fn lag_is_log_end_minus_committed_when_both_are_known() {
        assert_eq!(row("t", 0, Some(10), Some(25)).lag(), Some(15));
        assert_eq!(row("t", 0, Some(25), Some(25)).lag(), Some(0));
        assert_eq!(row("t", 0, Some(0), Some(0)).lag(), Some(0));
        // Not clamped: a commit past the end (a truncated log) shows.
        assert_eq!(row("t", 0, Some(30), Some(25)).lag(), Some(-5));
        assert_eq!(row("t", 0, None, Some(25)).lag(), None);
        assert_eq!(row("t", 0, Some(3), None).lag(), None);
    }

    #[test]
    fn table_columns_are_padded_to_the_widest_cell() {
        let table = render_table(
            &["A", "LONG-HEADER", "C"],
            &[
                vec!["wide-cell".into(), "1".into(), "x".into()],
                vec!["b".into(), "22".into(), "".into()],
            ],
        );
        assert_eq!(
            table,
            "A          LONG-HEADER  C\n\
             wide-cell  1            x\n\
             b          22\n"
        );
    }

    fn description() -> GroupDescription {
        GroupDescription {
            group_id: "orders".into(),
            state: "Stable".into(),
            protocol_type: "consumer".into(),
            protocol: "range".into(),
            coordinator: (0, "127.0.0.1:9092".into()),
            members: vec![MemberDescription {
                member_id: "rdkafka-1".into(),
                group_instance_id: Some("static-1".into()),
                client_id: "app".into(),
                host: "/127.0.0.1".into(),
                assignment: vec![("events".into(), 0), ("events".into(), 1)],
            }],
            partitions: vec![
                PartitionRow {
                    member: Some(0),
                    ..row("events", 0, Some(5), Some(12))
                },
                PartitionRow {
                    member: Some(0),
                    ..row("events", 1, None, Some(3))
                },
                row("old", 0, Some(7), None),
            ],
        }
    }

    #[test]
    fn describe_shows_every_partition_with_offsets_lag_and_owner() {
        let text = render_description(&description());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "Group orders: state Stable, protocol type consumer, protocol range, \
             coordinator 0 (127.0.0.1:9092), 1 members"
        );
        let table: Vec<Vec<&str>> = lines
            .iter()
            .skip_while(|line| !line.starts_with("GROUP "))
            .take_while(|line| !line.is_empty())
            .map(|line| line.split_whitespace().collect())
            .collect();
        assert_eq!(
            table,
            vec![
                vec![
                    "GROUP",
                    "TOPIC",
                    "PARTITION",
                    "CURRENT-OFFSET",
                    "LOG-END-OFFSET",
                    "LAG",
                    "CONSUMER-ID",
                    "HOST",
                    "CLIENT-ID"
                ],
                vec![
                    "orders",
                    "events",
                    "0",
                    "5",
                    "12",
                    "7",
                    "rdkafka-1",
                    "/127.0.0.1",
                    "app"
                ],
                vec![
                    "orders",
                    "events",
                    "1",
                    "-",
                    "3",
                    "-",
                    "rdkafka-1",
                    "/127.0.0.1",
                    "app"
                ],
                vec!["orders", "old", "0", "7", "-", "-", "-", "-", "-"],
            ]
        );
        let members: Vec<Vec<&str>> = lines
            .iter()
            .skip_while(|line| !line.starts_with("CONSUMER-ID "))
            .map(|line| line.split_whitespace().collect())
            .collect();
        assert_eq!(
            members,
            vec![
                vec![
                    "CONSUMER-ID",
                    "GROUP-INSTANCE-ID",
                    "HOST",
                    "CLIENT-ID",
                    "#PARTITIONS",
                    "ASSIGNMENT"
                ],
                vec![
                    "rdkafka-1",
                    "static-1",
                    "/127.0.0.1",
                    "app",
                    "2",
                    "events-0,events-1"
                ],
            ],
            "{text}"
        );
    }

    #[test]
    fn an_empty_group_says_it_has_no_active_members() {
        let mut group = description();
        group.state = "Empty".into();
        group.members.clear();
        for row in &mut group.partitions {
            row.member = None;
        }
        let text = render_description(&group);
        assert!(text.contains("Consumer group 'orders' has no active members."));
        assert!(!text.contains("CONSUMER-ID  GROUP-INSTANCE-ID"), "{text}");
    }

    #[test]
    fn listing_shows_state_and_protocol_type() {
        let text = render_listing(&[
            GroupListing {
                group_id: "a".into(),
                protocol_type: "consumer".into(),
                state: Some("Stable".into()),
            },
            GroupListing {
                group_id: "bb".into(),
                protocol_type: String::new(),
                state: None,
            },
        ]);
        assert_eq!(
            text,
            "GROUP  STATE   PROTOCOL-TYPE\n\
             a      Stable  consumer\n\
             bb     -       -\n"
        );
    }

    fn assignment_bytes(version: i16, partitions: &[(&str, &[i32])]) -> Bytes {
        let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
            partitions
                .iter()
                .map(|(topic, partitions)| {
                    TopicPartition::default()
                        .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                        .with_partitions(partitions.to_vec())
                })
                .collect(),
        );
        let mut bytes = bytes::BytesMut::new();
        bytes.put_i16(version);
        assignment
            .encode(&mut bytes, version.min(3))
            .expect("encoding an assignment");
        bytes.freeze()
    }

    #[test]
    fn assignments_decode_to_sorted_topic_partitions() {
        for version in [0, 1, 3] {
            let bytes = assignment_bytes(version, &[("b", &[2, 0]), ("a", &[1])]);
            assert_eq!(
                decode_assignment(bytes),
                Ok(vec![("a".into(), 1), ("b".into(), 0), ("b".into(), 2)]),
                "version {version}"
            );
        }
        assert_eq!(decode_assignment(Bytes::new()), Ok(Vec::new()));
        assert!(decode_assignment(Bytes::from_static(&[0])).is_err());
        assert!(decode_assignment(Bytes::from_static(&[0, 0, 0, 0, 0, 9])).is_err());
    }
}
