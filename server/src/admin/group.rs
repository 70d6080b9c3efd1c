//! `sluice group list|describe|delete|seek` (alias `sluice groups`): what
//! kafka-consumer-groups.sh `--list`, `--describe`, `--delete` and
//! `--reset-offsets` do, over the Kafka protocol against any broker.
//!
//! Describe: FindCoordinator(group) -> DescribeGroups (state, members and
//! their assignments) + OffsetFetch (committed offsets) on the coordinator;
//! Metadata for the partitions' leaders -> ListOffsets "latest" (the log end
//! a consumer can reach, the high watermark) on each leader. Lag is
//! log end - committed, as Kafka's tool computes it (not clamped).
//!
//! Seek: refused unless the group has no members (Empty or Dead), as
//! kafka-consumer-groups.sh refuses: a live member's next commit would
//! overwrite the new offsets. The new offsets come from ListOffsets on each
//! partition's leader and are committed with OffsetCommit generation -1
//! (an admin commit) on the coordinator.
//!
//! The gathering returns plain data; the rendering ([`render_description`],
//! [`render_listing`], [`render_seek`]) is pure, so both are testable apart.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::process::ExitCode;

use bytes::{Buf, Bytes};
use kafka_protocol::error::{ParseResponseErrorCode, ResponseError};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, DeleteGroupsRequest, DescribeGroupsRequest, GroupId,
    ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use serde::Serialize;
use serde_json::json;

use super::AdminError;
use super::args::{GroupArgs, GroupCommand, GroupSeekArgs, SeekTo};
use super::client::{ClientError, Connection, check_code, describe_code};
use super::output::{Format, NONE, Progress, emit, emit_json, non_empty, optional, render_table};
use super::pool::{BrokerPool, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP};
use super::profile::{self, Target};

/// Versions this client speaks, per API (the broker's ranges narrow them).
const LIST_GROUPS_VERSIONS: RangeInclusive<i16> = 0..=4;
const DESCRIBE_GROUPS_VERSIONS: RangeInclusive<i16> = 0..=5;
/// From v2, topics = null fetches every partition the group committed.
const OFFSET_FETCH_VERSIONS: RangeInclusive<i16> = 2..=7;
/// v9+ names topics by id only from v10; 8 is the last by name with
/// generation-less (admin) commits unchanged.
const OFFSET_COMMIT_VERSIONS: RangeInclusive<i16> = 2..=8;
const DELETE_GROUPS_VERSIONS: RangeInclusive<i16> = 0..=2;
/// Partitions per OffsetCommit of `group seek` (the progress unit).
const SEEK_COMMIT_CHUNK: usize = 500;

/// One group as ListGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    /// `None` from brokers older than ListGroups v4.
    pub state: Option<String>,
}

/// One member of a described group.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
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

/// Run `sluice group ...`.
pub fn run(args: GroupArgs) -> ExitCode {
    let format = args.common.format;
    let result = profile::target(&args.common).and_then(|bootstrap| match args.command {
        GroupCommand::List => list_groups(&bootstrap).and_then(|groups| match format {
            Format::Table => emit(&render_listing(&groups)),
            Format::Json => emit_json(&groups),
        }),
        GroupCommand::Describe { group } => {
            describe_group(&bootstrap, &group).and_then(|group| match format {
                Format::Table => emit(&render_description(&group)),
                Format::Json => emit_json(&description_json(&group)),
            })
        }
        GroupCommand::Delete { groups } => delete_groups(&bootstrap, &groups, format),
        GroupCommand::Seek(seek) => seek_group(&bootstrap, &seek, format),
    });
    super::exit("group", result)
}

/// Every group of every broker in the cluster, sorted by id.
pub fn list_groups(bootstrap: &Target) -> Result<Vec<GroupListing>, AdminError> {
    let mut pool = BrokerPool::connect(bootstrap)?;
    let layout = pool.metadata(Some(&[]), false)?;
    let mut groups = BTreeMap::new();
    for broker in &layout.brokers {
        let connection = pool.broker(broker.node_id)?;
        let (response, version) =
            connection.call(&ListGroupsRequest::default(), LIST_GROUPS_VERSIONS)?;
        check_code(response.error_code, || {
            format!("ListGroups from broker {}", connection.address())
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

/// State and members of a group as DescribeGroups answers.
struct DescribedGroup {
    state: String,
    protocol_type: String,
    protocol: String,
    members: Vec<MemberDescription>,
}

fn describe_members(
    coordinator: &mut Connection,
    group: &str,
) -> Result<DescribedGroup, AdminError> {
    let request = DescribeGroupsRequest::default()
        .with_groups(vec![GroupId(StrBytes::from_string(group.to_string()))]);
    let (response, _) = coordinator.call(&request, DESCRIBE_GROUPS_VERSIONS)?;
    let described = response
        .groups
        .into_iter()
        .next()
        .ok_or_else(|| ClientError::Kafka {
            what: format!("DescribeGroups {group:?} answered no group"),
            code: ResponseError::UnknownServerError.code(),
        })?;
    if described.error_code == ResponseError::GroupIdNotFound.code() {
        return Err(AdminError::GroupNotFound(group.to_string()));
    }
    check_code(described.error_code, || format!("DescribeGroups {group:?}"))?;
    let mut members = Vec::with_capacity(described.members.len());
    for member in described.members {
        let member_id = member.member_id.to_string();
        let assignment = decode_assignment(member.member_assignment).map_err(|reason| {
            AdminError::Assignment {
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
    Ok(DescribedGroup {
        state: described.group_state.to_string(),
        protocol_type: described.protocol_type.to_string(),
        protocol: described.protocol_data.to_string(),
        members,
    })
}

/// Describe `group`: members, committed offsets, log ends.
pub fn describe_group(bootstrap: &Target, group: &str) -> Result<GroupDescription, AdminError> {
    let mut pool = BrokerPool::connect(bootstrap)?;
    let described =
        pool.with_coordinator(group, |coordinator| describe_members(coordinator, group))?;
    let committed =
        pool.with_coordinator(group, |coordinator| fetch_committed(coordinator, group))?;
    let (coordinator_id, coordinator_address) = pool.find_coordinator(group)?;
    if described.state == "Dead" && committed.is_empty() {
        return Err(AdminError::GroupNotFound(group.to_string()));
    }
    let members = described.members;

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
    let ends = log_ends(&mut pool, partitions.keys())?;
    for (key, row) in &mut partitions {
        row.log_end = ends.get(key).copied();
    }

    Ok(GroupDescription {
        group_id: group.to_string(),
        state: described.state,
        protocol_type: described.protocol_type,
        protocol: described.protocol,
        coordinator: (coordinator_id, coordinator_address),
        members,
        partitions: partitions.into_values().collect(),
    })
}

/// The group's committed offsets (OffsetFetch of every partition), without
/// the partitions that have none (offset -1).
pub fn fetch_committed(
    coordinator: &mut Connection,
    group: &str,
) -> Result<BTreeMap<(String, i32), i64>, AdminError> {
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_topics(None);
    let (response, _) = coordinator.call(&request, OFFSET_FETCH_VERSIONS)?;
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

/// Commit `offsets` (topic, partition, offset) for `group` as an admin
/// (generation -1, no member id): the coordinator accepts it only while
/// the group has no members. `Ok` means every partition was committed.
pub fn commit_offsets(
    coordinator: &mut Connection,
    group: &str,
    offsets: &[(String, i32, i64)],
) -> Result<(), AdminError> {
    let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for (topic, partition, offset) in offsets {
        topics.entry(topic).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(*partition)
                .with_committed_offset(*offset),
        );
    }
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(StrBytes::from_static_str(""))
        .with_retention_time_ms(-1)
        .with_topics(
            topics
                .into_iter()
                .map(|(topic, partitions)| {
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    let (response, _) = coordinator.call(&request, OFFSET_COMMIT_VERSIONS)?;
    for topic in response.topics {
        for partition in topic.partitions {
            let code = partition.error_code;
            if code == ResponseError::UnknownMemberId.code()
                || code == ResponseError::IllegalGeneration.code()
                || code == ResponseError::RebalanceInProgress.code()
            {
                return Err(AdminError::Failed(format!(
                    "OffsetCommit {group:?} {}-{}: {}: the group has active members",
                    topic.name.0,
                    partition.partition_index,
                    describe_code(code)
                )));
            }
            check_code(code, || {
                format!(
                    "OffsetCommit {group:?} {}-{}",
                    topic.name.0, partition.partition_index
                )
            })?;
        }
    }
    Ok(())
}

/// The log end (ListOffsets latest) of each partition, asked of its leader.
/// Partitions of topics that no longer exist, or without a leader, are
/// left out (their log end is unknown).
fn log_ends<'a>(
    pool: &mut BrokerPool,
    partitions: impl Iterator<Item = &'a (String, i32)>,
) -> Result<BTreeMap<(String, i32), i64>, AdminError> {
    let partitions: Vec<&(String, i32)> = partitions.collect();
    if partitions.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut topics: Vec<String> = partitions.iter().map(|(topic, _)| topic.clone()).collect();
    topics.dedup();
    let layout = pool.metadata(Some(&topics), false)?;
    let queries: Vec<(String, i32, i64)> = partitions
        .into_iter()
        .filter(|(topic, partition)| {
            layout.topic(topic).is_some_and(|layout| {
                layout.error_code.is_ok()
                    && layout.partitions.iter().any(|candidate| {
                        candidate.partition == *partition && candidate.leader.is_some()
                    })
            })
        })
        .map(|(topic, partition)| (topic.clone(), *partition, LATEST_TIMESTAMP))
        .collect();
    pool.list_offsets(&queries)
}

/// Delete `groups` (each must have no members).
fn delete_groups(bootstrap: &Target, groups: &[String], format: Format) -> Result<(), AdminError> {
    let mut pool = BrokerPool::connect(bootstrap)?;
    let mut results: Vec<(String, Option<String>)> = Vec::new();
    for group in groups {
        let request = DeleteGroupsRequest::default()
            .with_groups_names(vec![GroupId(StrBytes::from_string(group.clone()))]);
        let (response, _) = pool.with_coordinator(group, |coordinator| {
            Ok(coordinator.call(&request, DELETE_GROUPS_VERSIONS)?)
        })?;
        let code = response
            .results
            .iter()
            .find(|result| result.group_id.0.as_str() == group)
            .map_or(ResponseError::UnknownServerError.code(), |result| {
                result.error_code
            });
        let error = match code.err() {
            None => None,
            Some(ResponseError::GroupIdNotFound) => {
                Some(format!("does not exist ({})", describe_code(code)))
            }
            Some(ResponseError::NonEmptyGroup) => {
                Some(format!("has active members ({})", describe_code(code)))
            }
            Some(_) => Some(describe_code(code)),
        };
        results.push((group.clone(), error));
    }
    match format {
        Format::Table => {
            let rows: Vec<Vec<String>> = results
                .iter()
                .map(|(group, error)| {
                    vec![group.clone(), error.clone().unwrap_or_else(|| "deleted".into())]
                })
                .collect();
            emit(&render_table(&["GROUP", "STATUS"], &rows))?;
        }
        Format::Json => emit_json(
            &results
                .iter()
                .map(|(group, error)| json!({"group": group, "deleted": error.is_none(), "error": error}))
                .collect::<Vec<_>>(),
        )?,
    }
    failures(
        results.iter().filter(|(_, error)| error.is_some()).count(),
        results.len(),
        "groups were not deleted",
    )
}

/// `Err(Failed)` naming how many of `total` items failed, if any did.
pub fn failures(failed: usize, total: usize, what: &str) -> Result<(), AdminError> {
    if failed == 0 {
        Ok(())
    } else {
        Err(AdminError::Failed(format!("{failed} of {total} {what}")))
    }
}

/// One partition of a `group seek` plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeekRow {
    pub topic: String,
    pub partition: i32,
    /// The committed offset before the seek.
    pub current: Option<i64>,
    /// The offset to commit; `None` when there is none to compute (a shift
    /// of a partition that has no committed offset): left as it is.
    pub new: Option<i64>,
}

/// The new offset of one partition: `to` applied to its committed offset
/// and its log start and end (and the timestamp lookup's answer), clamped
/// to [log start, log end] as Kafka's tool clamps.
pub fn seek_target(
    to: &SeekTo,
    current: Option<i64>,
    log_start: i64,
    log_end: i64,
    at_timestamp: Option<i64>,
) -> Option<i64> {
    let clamp = |offset: i64| offset.clamp(log_start, log_end.max(log_start));
    if to.to_earliest {
        Some(log_start)
    } else if to.to_latest {
        Some(log_end)
    } else if let Some(offset) = to.to_offset {
        Some(clamp(offset))
    } else if let Some(shift) = to.shift_by {
        current.map(|current| clamp(current.saturating_add(shift)))
    } else {
        // A timestamp after the last record: no offset, the log end.
        Some(match at_timestamp {
            Some(offset) if offset >= 0 => clamp(offset),
            _ => log_end,
        })
    }
}

/// `sluice group seek`: plan the new offsets, commit them unless
/// `--dry-run`.
fn seek_group(bootstrap: &Target, args: &GroupSeekArgs, format: Format) -> Result<(), AdminError> {
    let group = args.group.as_str();
    let mut pool = BrokerPool::connect(bootstrap)?;
    let described =
        match pool.with_coordinator(group, |coordinator| describe_members(coordinator, group)) {
            Ok(described) => Some(described),
            Err(AdminError::GroupNotFound(_)) => None,
            Err(error) => return Err(error),
        };
    if let Some(described) = &described
        && !described.members.is_empty()
    {
        return Err(AdminError::GroupActive {
            group: group.to_string(),
            members: described.members.len(),
            state: described.state.clone(),
        });
    }
    let committed =
        pool.with_coordinator(group, |coordinator| fetch_committed(coordinator, group))?;
    // The partitions to move: every partition of the named topics, else
    // every partition the group committed whose topic still exists.
    let partitions: Vec<(String, i32)> = if args.topics.is_empty() {
        if committed.is_empty() {
            return Err(AdminError::Invalid(format!(
                "consumer group {group:?} has no committed offsets: name the topics to seek with --topic"
            )));
        }
        let mut topics: Vec<String> = committed.keys().map(|(topic, _)| topic.clone()).collect();
        topics.dedup();
        let layout = pool.metadata(Some(&topics), false)?;
        committed
            .keys()
            .filter(|(topic, _)| {
                layout
                    .topic(topic)
                    .is_some_and(|topic| topic.error_code.is_ok())
            })
            .cloned()
            .collect()
    } else {
        let layout = pool.existing_topics(&args.topics, false)?;
        let mut partitions = Vec::new();
        for topic in &args.topics {
            if let Some(layout_topic) = layout.topic(topic) {
                for partition in &layout_topic.partitions {
                    partitions.push((topic.clone(), partition.partition));
                }
            }
        }
        partitions.sort();
        partitions.dedup();
        partitions
    };
    let query = |timestamp: i64| -> Vec<(String, i32, i64)> {
        partitions
            .iter()
            .map(|(topic, partition)| (topic.clone(), *partition, timestamp))
            .collect()
    };
    let starts = pool.list_offsets(&query(EARLIEST_TIMESTAMP))?;
    let ends = pool.list_offsets(&query(LATEST_TIMESTAMP))?;
    let at_timestamp = match args.to.to_timestamp {
        Some(timestamp) => Some(pool.list_offsets(&query(timestamp))?),
        None => None,
    };
    let rows: Vec<SeekRow> = partitions
        .iter()
        .map(|key| {
            let current = committed.get(key).copied();
            let log_start = starts.get(key).copied().unwrap_or(0);
            let log_end = ends.get(key).copied().unwrap_or(log_start);
            let found = at_timestamp
                .as_ref()
                .and_then(|found| found.get(key).copied());
            SeekRow {
                topic: key.0.clone(),
                partition: key.1,
                current,
                new: seek_target(&args.to, current, log_start, log_end, found),
            }
        })
        .collect();

    if !args.dry_run {
        let offsets: Vec<(String, i32, i64)> = rows
            .iter()
            .filter_map(|row| Some((row.topic.clone(), row.partition, row.new?)))
            .collect();
        let mut progress = Progress::new(
            format!("committing offsets of group {group}"),
            Some(offsets.len() as u64),
        );
        for chunk in offsets.chunks(SEEK_COMMIT_CHUNK) {
            pool.with_coordinator(group, |coordinator| {
                commit_offsets(coordinator, group, chunk)
            })?;
            progress.advance(chunk.len() as u64);
        }
        progress.finish();
    }
    match format {
        Format::Table => emit(&render_seek(group, &rows, args.dry_run)),
        Format::Json => emit_json(&json!({
            "group": group,
            "dry_run": args.dry_run,
            "partitions": rows,
        })),
    }
}

/// The `seek` output: a summary line, then one row per partition.
pub fn render_seek(group: &str, rows: &[SeekRow], dry_run: bool) -> String {
    let moved = rows.iter().filter(|row| row.new.is_some()).count();
    let mut text = if dry_run {
        format!("Group {group}: new offsets of {moved} partitions (dry run, nothing committed)\n\n")
    } else {
        format!("Group {group}: committed new offsets of {moved} partitions\n\n")
    };
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            vec![
                group.to_string(),
                row.topic.clone(),
                row.partition.to_string(),
                optional(row.current),
                optional(row.new),
            ]
        })
        .collect();
    text.push_str(&render_table(
        &[
            "GROUP",
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "NEW-OFFSET",
        ],
        &table_rows,
    ));
    text
}

/// `describe` as JSON: the description with each partition's lag.
fn description_json(group: &GroupDescription) -> serde_json::Value {
    json!({
        "group": group.group_id,
        "state": group.state,
        "protocol_type": group.protocol_type,
        "protocol": group.protocol,
        "coordinator": {"node_id": group.coordinator.0, "address": group.coordinator.1},
        "members": group.members,
        "partitions": group.partitions.iter().map(|row| json!({
            "topic": row.topic,
            "partition": row.partition,
            "committed": row.committed,
            "log_end": row.log_end,
            "lag": row.lag(),
            "member_id": row.member.and_then(|index| group.members.get(index)).map(|member| &member.member_id),
        })).collect::<Vec<_>>(),
    })
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

    fn to(
        earliest: bool,
        latest: bool,
        timestamp: Option<i64>,
        offset: Option<i64>,
        shift: Option<i64>,
    ) -> SeekTo {
        SeekTo {
            to_earliest: earliest,
            to_latest: latest,
            to_timestamp: timestamp,
            to_offset: offset,
            shift_by: shift,
        }
    }

    #[test]
    fn seek_targets_are_clamped_to_the_log() {
        // Log [5, 20), committed 12.
        let target = |to: SeekTo, current, found| seek_target(&to, current, 5, 20, found);
        assert_eq!(
            target(to(true, false, None, None, None), Some(12), None),
            Some(5)
        );
        assert_eq!(
            target(to(false, true, None, None, None), Some(12), None),
            Some(20)
        );
        assert_eq!(
            target(to(false, false, None, Some(3), None), Some(12), None),
            Some(5)
        );
        assert_eq!(
            target(to(false, false, None, Some(99), None), None, None),
            Some(20)
        );
        assert_eq!(
            target(to(false, false, None, None, Some(-4)), Some(12), None),
            Some(8)
        );
        assert_eq!(
            target(to(false, false, None, None, Some(-40)), Some(12), None),
            Some(5)
        );
        assert_eq!(
            target(to(false, false, None, None, Some(40)), Some(12), None),
            Some(20)
        );
        // A shift needs a committed offset.
        assert_eq!(
            target(to(false, false, None, None, Some(1)), None, None),
            None
        );
        // A timestamp: the found offset, or the log end when none.
        assert_eq!(
            target(to(false, false, Some(1), None, None), None, Some(9)),
            Some(9)
        );
        assert_eq!(
            target(to(false, false, Some(1), None, None), None, Some(-1)),
            Some(20)
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
