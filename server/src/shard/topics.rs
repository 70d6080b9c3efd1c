//! Topic lifecycle as the request handlers see it: each change goes to the
//! controller (metadata/) and returns once it is committed and this broker
//! has published a view that includes it. The metadata follower
//! (shard/follower.rs) opens, closes and reconfigures the local replicas of
//! every change, from whichever broker it came, before it publishes; so a
//! change that returned has its local partitions open here.
//!
//! Changes of one name are serialized by the controller (it commits one
//! creation of a name; a second gets TOPIC_ALREADY_EXISTS). A change is all
//! or nothing at the controller; a local replica that fails to open is
//! logged by the follower and retried, never half-recorded.

use std::collections::BTreeMap;
use std::rc::Rc;

use crate::metadata::{MetadataError, TopicMetadata};
use crate::shard::Shard;

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

/// Create a topic with the default replication factor.
pub async fn create_topic(
    shard: &Rc<Shard>,
    name: &str,
    partitions: i32,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<TopicMetadata, TopicError> {
    create_topic_with(shard, name, partitions, -1, None, configs, validate_only).await
}

/// Create a topic: `replication_factor` -1 is the default; `assignment`
/// gives each partition's replicas (broker ids) explicitly.
pub async fn create_topic_with(
    shard: &Rc<Shard>,
    name: &str,
    partitions: i32,
    replication_factor: i32,
    assignment: Option<Vec<Vec<i32>>>,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<TopicMetadata, TopicError> {
    // -1: the broker's default.replication.factor.
    let replication_factor = if replication_factor == -1 {
        i32::from(shard.config.default_replication_factor)
    } else {
        replication_factor
    };
    Ok(shard
        .metadata
        .create_topic(
            name,
            partitions,
            replication_factor,
            assignment,
            configs,
            validate_only,
        )
        .await?)
}

/// Grow a topic to `total` partitions.
pub async fn add_partitions(
    shard: &Rc<Shard>,
    name: &str,
    total: i32,
    assignment: Option<Vec<Vec<i32>>>,
    validate_only: bool,
) -> Result<TopicMetadata, TopicError> {
    Ok(shard
        .metadata
        .add_partitions(name, total, assignment, validate_only)
        .await?)
}

/// Delete a topic; every broker holding a replica removes it.
pub async fn delete_topic(shard: &Rc<Shard>, name: &str) -> Result<TopicMetadata, TopicError> {
    Ok(shard.metadata.delete_topic(name).await?)
}

/// [`delete_topic`] of the topic with id `id` only (DeleteTopics by id).
pub async fn delete_topic_with_id(
    shard: &Rc<Shard>,
    name: &str,
    id: uuid::Uuid,
) -> Result<TopicMetadata, TopicError> {
    Ok(shard.metadata.delete_topic_with_id(name, id).await?)
}

/// Replace a topic's explicit configs; the follower applies them to the
/// open logs.
pub async fn set_configs(
    shard: &Rc<Shard>,
    name: &str,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<TopicMetadata, TopicError> {
    Ok(shard
        .metadata
        .set_configs(name, configs, validate_only)
        .await?)
}
