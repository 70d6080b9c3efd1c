//! Topic lifecycle across shards: change the metadata, then have every
//! owning shard open (or close and delete) its partitions.
//!
//! Changes of one topic (create, add partitions, delete, set configs) run
//! one at a time: each holds the topic's [`TopicChange`] from before it
//! reads the metadata until its partitions are open (or removed), on every
//! shard. Requests that find a topic (Metadata, Produce's auto-creation, the
//! group coordinator) first wait for its change in flight ([`settled`]), so
//! they never see a topic whose partitions are still opening. A change of
//! another topic runs at the same time.
//!
//! A change is all or nothing: when a partition fails to open, the change
//! is undone (the topic, or the added partitions, leave the metadata first,
//! then every shard closes and removes what it opened) and the error names
//! the partition and the cause.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_channel::oneshot;
use futures_util::FutureExt;
use futures_util::future::{Shared, join_all};

use crate::metadata::{ClusterMetadata, MetadataError, TopicConfig, TopicMetadata};
use crate::shard::{Shard, ShardId, Shards};

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("shard {shard:?} failed to apply the change: {reason}")]
    Shard { shard: ShardId, reason: String },
    /// A partition did not open; the change was undone (`undone`) or its
    /// undo failed too (logged).
    #[error(
        "{reason}; the change of topic {topic} was {}",
        if *undone { "undone" } else { "not fully undone (see the broker log)" }
    )]
    Open {
        topic: String,
        reason: String,
        undone: bool,
    },
}

/// Topic changes in flight, by topic name (shared by every shard).
#[derive(Default)]
pub struct TopicChanges {
    in_flight: Mutex<HashMap<String, Shared<oneshot::Receiver<()>>>>,
    /// `in_flight.len()`, read without the lock on the request path.
    count: AtomicUsize,
}

/// The change of one topic in flight; dropping it ends the change and wakes
/// those waiting for it.
pub struct TopicChange {
    shards: Arc<Shards>,
    name: String,
    _done: oneshot::Sender<()>,
}

impl Drop for TopicChange {
    fn drop(&mut self) {
        // Leave the table before `_done` drops: a woken waiter must not
        // find this change still registered.
        let changes = &self.shards.topic_changes;
        let mut in_flight = changes.lock();
        in_flight.remove(&self.name);
        changes.count.store(in_flight.len(), Ordering::SeqCst);
    }
}

impl TopicChanges {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Shared<oneshot::Receiver<()>>>> {
        self.in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn in_flight(&self, name: &str) -> Option<Shared<oneshot::Receiver<()>>> {
        self.lock().get(name).cloned()
    }
}

/// Start a change of topic `name` once the change in flight (if any) ends.
pub async fn begin_change(shards: &Arc<Shards>, name: &str) -> TopicChange {
    loop {
        let waiting = {
            let mut in_flight = shards.topic_changes.lock();
            match in_flight.get(name) {
                Some(change) => change.clone(),
                None => {
                    let (sender, receiver) = oneshot::channel();
                    in_flight.insert(name.to_string(), receiver.shared());
                    shards
                        .topic_changes
                        .count
                        .store(in_flight.len(), Ordering::SeqCst);
                    return TopicChange {
                        shards: Arc::clone(shards),
                        name: name.to_string(),
                        _done: sender,
                    };
                }
            }
        };
        let _ = waiting.await;
    }
}

/// The metadata once no change of topic `name` is in flight: the topic
/// (if there) has every partition open. A change that starts later is not
/// waited for: its topic or partitions are not in the returned snapshot.
pub async fn settled_snapshot(shard: &Shard, name: &str) -> Arc<ClusterMetadata> {
    let (shards, metadata) = (&shard.shards, &shard.metadata);
    loop {
        // Snapshot first: a change registers before it changes the
        // metadata, so a topic seen here with no change registered after
        // it is complete.
        let snapshot = metadata.snapshot();
        if shards.topic_changes.count.load(Ordering::SeqCst) == 0 {
            return snapshot;
        }
        match shards.topic_changes.in_flight(name) {
            Some(change) => {
                let _ = change.await;
            }
            None => return snapshot,
        }
    }
}

/// [`settled_snapshot`] for every topic: waits for the changes in flight
/// of the topics in the snapshot (a few rounds at most, should changes keep
/// starting).
pub async fn settled_snapshot_all(shard: &Shard) -> Arc<ClusterMetadata> {
    let (shards, metadata) = (&shard.shards, &shard.metadata);
    for _ in 0..SETTLE_ROUNDS_MAX {
        let snapshot = metadata.snapshot();
        if shards.topic_changes.count.load(Ordering::SeqCst) == 0 {
            return snapshot;
        }
        let changes: Vec<_> = {
            let in_flight = shards.topic_changes.lock();
            snapshot
                .topics
                .keys()
                .filter_map(|name| in_flight.get(name).cloned())
                .collect()
        };
        if changes.is_empty() {
            return snapshot;
        }
        join_all(changes).await;
    }
    metadata.snapshot()
}

/// Rounds of waiting in [`settled_snapshot_all`].
const SETTLE_ROUNDS_MAX: usize = 8;

/// Create a topic and open its partitions on their shards.
pub async fn create_topic(
    shard: &Rc<Shard>,
    name: &str,
    partitions: i32,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<TopicMetadata, TopicError> {
    if validate_only {
        return Ok(shard
            .metadata
            .create_topic(name, partitions, configs, true)?);
    }
    let _change = begin_change(&shard.shards, name).await;
    let topic = shard
        .metadata
        .create_topic(name, partitions, configs, false)?;
    if let Err(error) = open_on_shards(shard, &topic, 0).await {
        let undone = match shard.metadata.delete_topic(name) {
            Ok(_) => remove_on_shards(shard, &topic, 0).await.is_ok(),
            Err(undo_error) => {
                tracing::error!(topic = %name, %undo_error, "undoing a failed topic creation failed: the topic stays in the metadata");
                false
            }
        };
        tracing::error!(topic = %name, %error, undone, "creating a topic failed");
        return Err(TopicError::Open {
            topic: name.to_string(),
            reason: error.to_string(),
            undone,
        });
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
    if validate_only {
        return Ok(shard.metadata.add_partitions(name, total, true)?);
    }
    let _change = begin_change(&shard.shards, name).await;
    let before = shard
        .metadata
        .snapshot()
        .topics
        .get(name)
        .map_or(0, |topic| topic.partitions.len());
    let topic = shard.metadata.add_partitions(name, total, false)?;
    if let Err(error) = open_on_shards(shard, &topic, before).await {
        let undone = match shard.metadata.remove_added_partitions(name, before) {
            Ok(_) => remove_on_shards(shard, &topic, before).await.is_ok(),
            Err(undo_error) => {
                tracing::error!(topic = %name, %undo_error, "undoing failed added partitions failed: they stay in the metadata");
                false
            }
        };
        tracing::error!(topic = %name, %error, undone, "adding partitions failed");
        return Err(TopicError::Open {
            topic: name.to_string(),
            reason: error.to_string(),
            undone,
        });
    }
    Ok(topic)
}

/// Delete a topic: metadata first (so no new request finds it), then each
/// shard closes its logs and removes their directories.
pub async fn delete_topic(shard: &Rc<Shard>, name: &str) -> Result<TopicMetadata, TopicError> {
    let _change = begin_change(&shard.shards, name).await;
    let topic = shard.metadata.delete_topic(name)?;
    remove_on_shards(shard, &topic, 0).await?;
    Ok(topic)
}

/// Replace a topic's configs and apply them to its open logs.
pub async fn set_configs(
    shard: &Rc<Shard>,
    name: &str,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<TopicMetadata, TopicError> {
    if validate_only {
        return Ok(shard.metadata.set_configs(name, configs, true)?);
    }
    let _change = begin_change(&shard.shards, name).await;
    let topic = shard.metadata.set_configs(name, configs, false)?;
    let config = TopicConfig::from_map(&topic.configs).map_err(MetadataError::InvalidConfig)?;
    for target in shards_of(&topic, 0) {
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

/// Open the partitions of `topic` from index `first` on, on every owning
/// shard at once.
async fn open_on_shards(
    shard: &Rc<Shard>,
    topic: &TopicMetadata,
    first: usize,
) -> Result<(), TopicError> {
    let opens = shards_of(topic, first).into_iter().map(|target| {
        let topic = topic.clone();
        async move {
            let outcome = shard
                .shards
                .call(target, move |owner| async move {
                    owner
                        .open_topic_partitions(&topic, first)
                        .await
                        .map_err(|error| error.to_string())
                })
                .await;
            flatten(target, outcome)
        }
    });
    join_all(opens).await.into_iter().collect()
}

/// Close and remove the partitions of `topic` from index `first` on, on
/// every owning shard, open or not. Tries every shard; returns the first
/// error.
async fn remove_on_shards(
    shard: &Rc<Shard>,
    topic: &TopicMetadata,
    first: usize,
) -> Result<(), TopicError> {
    let mut result = Ok(());
    for target in shards_of(topic, first) {
        let name = topic.name.clone();
        let indexes: Vec<i32> = topic
            .partitions
            .iter()
            .enumerate()
            .skip(first)
            .filter(|(_, assignment)| assignment.shard == target.0)
            .map(|(index, _)| index as i32)
            .collect();
        let outcome = shard
            .shards
            .call(target, move |owner| async move {
                owner
                    .remove_partitions(&name, indexes)
                    .await
                    .map_err(|error| format!("{error:#}"))
            })
            .await;
        if let Err(error) = flatten(target, outcome) {
            tracing::error!(topic = %topic.name, %error, "removing partitions failed");
            if result.is_ok() {
                result = Err(error);
            }
        }
    }
    result
}

/// The shards owning partitions of `topic` from index `first` on.
fn shards_of(topic: &TopicMetadata, first: usize) -> Vec<ShardId> {
    let mut shards: Vec<ShardId> = topic
        .partitions
        .iter()
        .skip(first)
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
