//! DescribeLogDirs (API 35, v1-4): what `kafka-log-dirs.sh --describe`
//! and `rpk cluster logdirs describe` ask each broker. Sluice has one log
//! directory, the data directory; the answer lists every partition
//! replica open on this broker (on any shard), or those of the requested
//! topics and partitions (null topics: all): its log's size in bytes, its
//! offset lag and `is_future_key` false (Sluice never moves replicas
//! between directories). v4+ also gives the filesystem's total and usable
//! bytes (statvfs).
//!
//! Offset lag is Kafka's `max(high watermark - log end offset, 0)`: 0 on a
//! leader, and 0 on a follower too, whose recorded high watermark is
//! bounded by its own log end (a follower does not learn the leader's log
//! end offset here).
//!
//! Authorization (Kafka's rule): DESCRIBE on the cluster; refused, the
//! response has no results and CLUSTER_AUTHORIZATION_FAILED.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{
    DescribeLogDirsRequest, DescribeLogDirsResponse, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::auth::acl::AclOperation;
use crate::auth::authorizer::Access;
use crate::handlers::Reply;
use crate::handlers::fetch::on_shard;
use crate::shard::{Shard, ShardId};

/// Which partitions to describe: `None` all, else by topic the requested
/// partition indexes.
type Filter = Option<BTreeMap<String, BTreeSet<i32>>>;

/// One replica as described: topic, partition, size in bytes, offset lag.
type Described = (String, i32, i64, i64);

pub async fn handle(
    shard: &Rc<Shard>,
    _version: i16,
    request: DescribeLogDirsRequest,
    access: &Access<'_>,
) -> anyhow::Result<Reply> {
    if !access.allows_cluster(AclOperation::Describe) {
        let response = DescribeLogDirsResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code());
        return Ok(Reply::Body(Box::new(ResponseKind::DescribeLogDirs(
            response,
        ))));
    }
    let filter: Filter = request.topics.map(|topics| {
        let mut wanted: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
        for topic in topics {
            wanted
                .entry(topic.topic.0.to_string())
                .or_default()
                .extend(topic.partitions);
        }
        wanted
    });
    let mut replicas: Vec<Described> = Vec::new();
    for index in 0..shard.shards.count() {
        let filter = filter.clone();
        let described = on_shard(shard, ShardId(index), move |owner| async move {
            describe_on_shard(&owner, &filter)
        })
        .await
        .unwrap_or_default();
        replicas.extend(described);
    }
    let data_dir = &shard.config.data_dir;
    let (total_bytes, usable_bytes) = filesystem_bytes(data_dir).unwrap_or((-1, -1));
    let result = DescribeLogDirsResult::default()
        .with_log_dir(StrBytes::from_string(
            std::path::absolute(data_dir)
                .unwrap_or_else(|_| data_dir.clone())
                .display()
                .to_string(),
        ))
        .with_topics(group_by_topic(replicas))
        .with_total_bytes(total_bytes)
        .with_usable_bytes(usable_bytes);
    let response = DescribeLogDirsResponse::default().with_results(vec![result]);
    Ok(Reply::Body(Box::new(ResponseKind::DescribeLogDirs(
        response,
    ))))
}

/// The replicas open on `owner` that `filter` selects.
fn describe_on_shard(owner: &Shard, filter: &Filter) -> Vec<Described> {
    owner
        .partitions
        .values()
        .into_iter()
        .filter(|replica| {
            let topic_partition = &replica.topic_partition;
            filter.as_ref().is_none_or(|wanted| {
                wanted
                    .get(topic_partition.topic.as_ref())
                    .is_some_and(|partitions| partitions.contains(&topic_partition.partition))
            })
        })
        .map(|replica| {
            let log_end = replica.log.log_end_offset().value();
            let lag = (replica.high_watermark().value() - log_end).max(0);
            (
                replica.topic_partition.topic.to_string(),
                replica.topic_partition.partition,
                i64::try_from(replica.log.size_bytes()).unwrap_or(i64::MAX),
                lag,
            )
        })
        .collect()
}

/// The response's topics, sorted by name, partitions by index (pure).
fn group_by_topic(replicas: Vec<Described>) -> Vec<DescribeLogDirsTopic> {
    let mut topics: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
    for (topic, partition, size, lag) in replicas {
        topics.entry(topic).or_default().push(
            DescribeLogDirsPartition::default()
                .with_partition_index(partition)
                .with_partition_size(size)
                .with_offset_lag(lag)
                .with_is_future_key(false),
        );
    }
    topics
        .into_iter()
        .map(|(name, mut partitions)| {
            partitions.sort_by_key(|partition| partition.partition_index);
            DescribeLogDirsTopic::default()
                .with_name(TopicName(StrBytes::from_string(name)))
                .with_partitions(partitions)
        })
        .collect()
}

/// The total and available (to unprivileged users) bytes of the
/// filesystem holding `path`.
pub fn filesystem_bytes(path: &Path) -> Option<(i64, i64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `stat` is a valid out pointer;
    // statvfs fills it when it returns 0.
    let stat = unsafe {
        if libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    // The field types differ between targets (u64 on 64-bit Linux).
    #[allow(clippy::unnecessary_cast)]
    let (fragment, blocks, available) = (
        (stat.f_frsize as u64).max(1),
        stat.f_blocks as u64,
        stat.f_bavail as u64,
    );
    let bytes = |count: u64| i64::try_from(count.saturating_mul(fragment)).unwrap_or(i64::MAX);
    Some((bytes(blocks), bytes(available)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_grouped_by_topic_in_order() {
        let topics = group_by_topic(vec![
            ("b".into(), 1, 10, 0),
            ("a".into(), 0, 5, 0),
            ("b".into(), 0, 7, 2),
        ]);
        type Summary = Vec<(String, Vec<(i32, i64, i64)>)>;
        let summary: Summary = topics
            .iter()
            .map(|topic| {
                (
                    topic.name.0.to_string(),
                    topic
                        .partitions
                        .iter()
                        .map(|p| (p.partition_index, p.partition_size, p.offset_lag))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("a".to_string(), vec![(0, 5, 0)]),
                ("b".to_string(), vec![(0, 7, 2), (1, 10, 0)]),
            ]
        );
    }

    #[test]
    fn the_filesystem_has_a_size() {
        let (total, usable) = filesystem_bytes(Path::new("/")).unwrap();
        assert!(total > 0 && usable >= 0 && usable <= total);
        assert_eq!(filesystem_bytes(Path::new("/no/such/dir")), None);
    }
}
