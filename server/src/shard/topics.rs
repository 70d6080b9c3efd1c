//! Topic lifecycle across shards: change the metadata, then have every
//! owning shard open (or close and delete) its partitions.

use std::collections::BTreeMap;
use std::rc::Rc;

use crate::metadata::{MetadataError, TopicConfig, TopicMetadata};
use crate::shard::{Shard, ShardId};

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("shard {shard:?} failed to apply the change: {reason}")]
    Shard { shard: ShardId, reason: String },
}

/// Create a topic and open its partitions on their shards.
pub async fn create_topic(
    shard: &Rc<Shard>,
    name: &str,
    partitions: i32,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<TopicMetadata, TopicError> {
    let topic = shard
        .metadata
        .create_topic(name, partitions, configs, validate_only)?;
    if !validate_only {
        open_on_shards(shard, &topic).await?;
    }
    Ok(topic)
}

/// Grow a topic and open the new partitions.
pub async fn add_partitions(
    shard: &Rc<Shard>,
    name: &str,
    total: i32,
    validate_only: bool,
) -> Result<TopicMetadata, TopicError> {
    let topic = shard.metadata.add_partitions(name, total, validate_only)?;
    if !validate_only {
        open_on_shards(shard, &topic).await?;
    }
    Ok(topic)
}

/// Delete a topic: metadata first (so no new request finds it), then each
/// shard closes its logs and removes their directories.
pub async fn delete_topic(shard: &Rc<Shard>, name: &str) -> Result<TopicMetadata, TopicError> {
    let topic = shard.metadata.delete_topic(name)?;
    for target in shards_of(&topic) {
        let topic_name = topic.name.clone();
        let outcome = shard
            .shards
            .call(target, move |owner| async move {
                owner
                    .remove_topic(&topic_name)
                    .await
                    .map_err(|error| error.to_string())
            })
            .await;
        flatten(target, outcome)?;
    }
    Ok(topic)
}

/// Replace a topic's configs and apply them to its open logs.
pub async fn set_configs(
    shard: &Rc<Shard>,
    name: &str,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<TopicMetadata, TopicError> {
    let topic = shard.metadata.set_configs(name, configs, validate_only)?;
    if validate_only {
        return Ok(topic);
    }
    let config = TopicConfig::from_map(&topic.configs).map_err(MetadataError::InvalidConfig)?;
    for target in shards_of(&topic) {
        let topic_name = topic.name.clone();
        let config = config.clone();
        let outcome = shard
            .shards
            .call(target, move |owner| async move {
                owner.apply_topic_config(&topic_name, &config);
                Ok::<(), String>(())
            })
            .await;
        flatten(target, outcome)?;
    }
    Ok(topic)
}

async fn open_on_shards(shard: &Rc<Shard>, topic: &TopicMetadata) -> Result<(), TopicError> {
    for target in shards_of(topic) {
        let outcome = shard
            .shards
            .call(target, |owner| async move {
                owner
                    .open_assigned_partitions()
                    .await
                    .map_err(|error| error.to_string())
            })
            .await;
        flatten(target, outcome)?;
    }
    Ok(())
}

fn shards_of(topic: &TopicMetadata) -> Vec<ShardId> {
    let mut shards: Vec<ShardId> = topic
        .partitions
        .iter()
        .map(|partition| ShardId(partition.shard))
        .collect();
    shards.sort();
    shards.dedup();
    shards
}

fn flatten(
    shard: ShardId,
    outcome: Result<Result<(), String>, crate::shard::ShardGone>,
) -> Result<(), TopicError> {
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(reason)) => Err(TopicError::Shard { shard, reason }),
        Err(gone) => Err(TopicError::Shard {
            shard,
            reason: gone.to_string(),
        }),
    }
}
