//! OffsetCommit (v2..=9): store committed offsets as records in the group's
//! `__consumer_offsets` partition; answered once they are durable.
//!
//! Kafka's rules (group/state.rs `check_commit`): a consumer that manages
//! its own partitions commits with generation -1 to an empty (or new)
//! group; a group member commits with its current generation, also while
//! the group prepares a rebalance (so it can commit before giving up its
//! partitions), but not while the assignment is being handed out.

use std::rc::Rc;
use std::time::Instant;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse, ResponseKind};

use crate::group::records::OffsetValue;
use crate::group::state::{CommittedOffset, Group};
use crate::group::{
    self, OFFSET_METADATA_MAX_BYTES, apply_commit, offset_key, record_offset, wall_ms,
};
use crate::handlers::Reply;
use crate::shard::Shard;

/// One partition's commit as validated on the connection's shard.
pub(crate) struct Commit {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
}

/// A partition's commit as a request carries it (OffsetCommit and
/// TxnOffsetCommit name the fields alike).
pub(crate) struct Proposed<'a> {
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<&'a str>,
}

/// Per (topic index, partition index): an error found before writing,
/// and the commits that passed (Kafka's checks, shared by OffsetCommit and
/// TxnOffsetCommit): a group id, a known partition, metadata within
/// `OFFSET_METADATA_MAX_BYTES`.
pub(crate) fn validate<'a>(
    view: &crate::metadata::ClusterMetadata,
    group_id: &str,
    topics: impl Iterator<Item = (String, Vec<Proposed<'a>>)>,
) -> (Vec<Vec<Option<ResponseError>>>, Vec<Commit>) {
    let mut errors = Vec::new();
    let mut commits = Vec::new();
    for (name, partitions) in topics {
        let known = view.topics.get(&name);
        let mut topic_errors = Vec::new();
        for partition in partitions {
            let exists = known.is_some_and(|found| {
                usize::try_from(partition.partition)
                    .is_ok_and(|index| index < found.partitions.len())
            });
            let metadata = partition.metadata.unwrap_or_default().to_string();
            let error = if group_id.is_empty() {
                Some(ResponseError::InvalidGroupId)
            } else if !exists {
                Some(ResponseError::UnknownTopicOrPartition)
            } else if metadata.len() > OFFSET_METADATA_MAX_BYTES {
                Some(ResponseError::OffsetMetadataTooLarge)
            } else {
                commits.push(Commit {
                    topic: name.clone(),
                    partition: partition.partition,
                    offset: partition.offset,
                    leader_epoch: partition.leader_epoch,
                    metadata,
                });
                None
            };
            topic_errors.push(error);
        }
        errors.push(topic_errors);
    }
    (errors, commits)
}

pub async fn handle(
    shard: &Rc<Shard>,
    _version: i16,
    request: OffsetCommitRequest,
) -> anyhow::Result<Reply> {
    let group_id = request.group_id.0.to_string();
    let snapshot = shard.metadata.snapshot();
    let (errors, commits) = validate(
        &snapshot,
        &group_id,
        request.topics.iter().map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|partition| Proposed {
                    partition: partition.partition_index,
                    offset: partition.committed_offset,
                    leader_epoch: partition.committed_leader_epoch,
                    metadata: partition.committed_metadata.as_deref(),
                })
                .collect();
            (topic.name.0.to_string(), partitions)
        }),
    );
    let group_error = if commits.is_empty() {
        None
    } else {
        let generation = request.generation_id_or_member_epoch;
        let member_id = request.member_id.to_string();
        let instance_id = request.group_instance_id.map(|id| id.to_string());
        group::on_coordinator(
            shard,
            &group_id.clone(),
            move |owner, partition| async move {
                commit_on_coordinator(
                    &owner,
                    partition,
                    group_id,
                    generation,
                    member_id,
                    instance_id,
                    commits,
                )
                .await
            },
        )
        .await
        .unwrap_or_else(Some)
    };
    let topics = request
        .topics
        .into_iter()
        .zip(errors)
        .map(|(topic, topic_errors)| {
            let mut out = OffsetCommitResponseTopic::default();
            out.partitions = topic
                .partitions
                .iter()
                .zip(topic_errors)
                .map(|(partition, error)| {
                    let mut result = OffsetCommitResponsePartition::default();
                    result.partition_index = partition.partition_index;
                    result.error_code = error.or(group_error).map_or(0, |error| error.code());
                    result
                })
                .collect();
            out.name = topic.name;
            out.topic_id = topic.topic_id;
            out
        })
        .collect();
    let mut response = OffsetCommitResponse::default();
    response.topics = topics;
    Ok(Reply::Body(Box::new(ResponseKind::OffsetCommit(response))))
}

pub(crate) async fn commit_on_coordinator(
    owner: &Rc<Shard>,
    partition: i32,
    group_id: String,
    generation: i32,
    member_id: String,
    instance_id: Option<String>,
    commits: Vec<Commit>,
) -> Option<ResponseError> {
    let now_ms = wall_ms();
    let incarnation = {
        let mut groups = owner.groups.groups.borrow_mut();
        let group = match groups.get_mut(&group_id) {
            Some(group) => group,
            // A consumer that manages its own partitions (assign()).
            None if generation < 0 => groups
                .entry(group_id.clone())
                .or_insert_with(|| Group::new(&group_id, partition, now_ms)),
            None => return Some(ResponseError::IllegalGeneration),
        };
        if let Err(error) = group.check_commit(
            generation,
            &member_id,
            instance_id.as_deref(),
            Instant::now(),
        ) {
            return Some(error);
        }
        group.begin_commit()
    };
    let records: Vec<_> = commits
        .iter()
        .map(|commit| {
            let value = OffsetValue {
                offset: commit.offset,
                leader_epoch: commit.leader_epoch,
                metadata: commit.metadata.clone(),
                commit_timestamp: now_ms,
            };
            (
                offset_key(&group_id, &commit.topic, commit.partition),
                Some(value.encode()),
            )
        })
        .collect();
    let written = group::write(owner, partition, &records).await;
    let mut groups = owner.groups.groups.borrow_mut();
    let Some(group) = groups.get_mut(&group_id) else {
        // Deleted meanwhile by DeleteGroups, whose tombstones follow ours.
        return written.err();
    };
    finish_commit(group, incarnation, written, commits, now_ms)
}

/// An OffsetCommit's write completed (`written`: its first record's
/// offset): apply its offsets, then count the commit done. In that order:
/// the last commit in flight done clears the group's record of topics
/// deleted meanwhile, which decides whether an offset still applies
/// (`Group::forgotten`).
pub(crate) fn finish_commit(
    group: &mut Group,
    incarnation: u64,
    written: Result<i64, ResponseError>,
    commits: Vec<Commit>,
    now_ms: i64,
) -> Option<ResponseError> {
    let base = match written {
        Ok(base) => base,
        Err(error) => {
            group.commit_done(incarnation);
            return Some(error);
        }
    };
    for (index, commit) in commits.into_iter().enumerate() {
        let at = record_offset(base, index);
        if group.deleted_after(&commit.topic, commit.partition, at) {
            // OffsetDelete's tombstone follows it in the log.
            continue;
        }
        apply_commit(
            group,
            &commit.topic,
            commit.partition,
            CommittedOffset {
                offset: commit.offset,
                leader_epoch: commit.leader_epoch,
                metadata: commit.metadata,
                commit_timestamp: now_ms,
                record_offset: at,
            },
        );
    }
    group.commit_done(incarnation);
    None
}
