//! The metadata follower: one thread per broker that turns each newly
//! applied controller image into a view (metadata/), makes this broker's
//! shards match it, then publishes it.
//!
//! Order per round, and why:
//! 1. removals first (topics deleted, replicas moved away): a topic deleted
//!    and created again under its name must not have the new partitions
//!    removed by the old one's cleanup;
//! 2. opens of the local replicas that are new in the view, on their shards;
//! 3. replica states (role, leader epoch: shard/partition.rs) changed since
//!    the last round, applied to the open replicas: a replica that stops
//!    leading refuses appends before any request sees the view that says
//!    so, and one that starts leading accepts them when requests are
//!    routed to it;
//! 4. configs changed since the last round (the topic's own, or this
//!    broker's dynamic defaults under them: metadata/broker_config.rs),
//!    applied to the open logs;
//! 5. the committed offsets of topics deleted since the last round go
//!    from the groups this broker coordinates (`group::forget_topics`),
//!    after step 3 so that a group load it started (a new leadership of an
//!    offsets partition) is already counted and drops them too when it
//!    ends, and before any request sees the view;
//! 6. publish: only now do requests see the view, so a request never finds
//!    a local replica that is not open yet, or not in the view's state.
//!
//! A replica that fails to open is logged and tried again every round (the
//! view is published anyway; requests for it find no open partition).
//!
//! Runs on its own thread (never a shard's): it blocks on the controller's
//! image and on the shards' answers.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use futures_util::future::join_all;

use crate::controller::service::block_on;
use crate::controller::types::MetadataOffset;
use crate::metadata::{ClusterMetadata, Metadata, TopicConfig, TopicMetadata};
use crate::shard::partition::Assignment;
use crate::shard::{ReplicaState, ShardId, Shards, TopicPartition};

/// How long one wait for a new image lasts before the loop looks at its
/// stop flag and retries failed opens.
const POLL: Duration = Duration::from_millis(200);

/// The running follower; [`Follower::stop`] ends it.
pub struct Follower {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Local replicas, by topic id and partition index, with the name they had.
type Replicas = BTreeMap<(uuid::Uuid, i32), (String, usize)>;

impl Follower {
    /// Run the first round now (every local replica of the current image
    /// opened, the view published), then follow on a thread.
    pub fn start(metadata: Arc<Metadata>, shards: Arc<Shards>) -> anyhow::Result<Follower> {
        let mut state = State::new(metadata, shards);
        state.round();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("sluice-metadata".into())
            .spawn(move || {
                while !stopping.load(Ordering::SeqCst) {
                    let next = MetadataOffset(state.metadata.snapshot().offset + 1);
                    let controller = state.metadata.controller().clone();
                    if controller.wait_applied_timeout(next, POLL) || state.failed {
                        state.round();
                    }
                }
            })?;
        Ok(Follower {
            stop,
            thread: Some(thread),
        })
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct State {
    metadata: Arc<Metadata>,
    shards: Arc<Shards>,
    /// The local replicas open (or being kept) as of the last round.
    opened: Replicas,
    /// Some replica failed to open last round: try again.
    failed: bool,
    /// Local replicas whose open failed, or whose shard did not answer
    /// the open: such a replica may be open all the same (or hold a
    /// directory). A removal covers them too, so that none stays open
    /// under a deleted topic.
    unsure: Replicas,
    /// Each topic's effective configs (its own over the dynamic broker
    /// defaults) as last applied.
    configs: BTreeMap<uuid::Uuid, BTreeMap<String, String>>,
    /// Every topic of the last round's view (not only those with local
    /// replicas), by id: the deleted ones are those a view no longer has.
    topics: BTreeMap<uuid::Uuid, String>,
    /// Each open local replica's state and assignment as last applied.
    states: BTreeMap<(uuid::Uuid, i32), (ReplicaState, Assignment)>,
}

impl State {
    fn new(metadata: Arc<Metadata>, shards: Arc<Shards>) -> State {
        State {
            metadata,
            shards,
            opened: Replicas::new(),
            unsure: Replicas::new(),
            topics: BTreeMap::new(),
            failed: false,
            configs: BTreeMap::new(),
            states: BTreeMap::new(),
        }
    }

    fn round(&mut self) {
        let image = self.metadata.controller().image();
        let view = self.metadata.build_view(&image);
        self.follow(view);
    }

    /// Make this broker's shards match `view` (the steps of the module
    /// docs), then publish it.
    fn follow(&mut self, view: ClusterMetadata) {
        let wanted = local_replicas(&view);
        self.remove(&wanted);
        self.open(&view, &wanted);
        self.apply_replica_states(&view);
        self.apply_configs(&view);
        self.forget_deleted_topics(&view);
        self.metadata.publish(view);
    }

    /// The committed offsets of the topics deleted since the last round go
    /// from the groups this broker coordinates, on each shard
    /// (`group::forget_topics`), before any request sees the view: a
    /// topic created again under the name starts with no offsets in any
    /// group, whichever broker coordinates it.
    fn forget_deleted_topics(&mut self, view: &ClusterMetadata) {
        let now: BTreeMap<uuid::Uuid, String> = view
            .topics
            .values()
            .map(|topic| (topic.id, topic.name.clone()))
            .collect();
        let deleted: BTreeSet<String> = self
            .topics
            .iter()
            .filter(|(id, _)| !now.contains_key(id))
            .map(|(_, name)| name.clone())
            .collect();
        self.topics = now;
        if deleted.is_empty() {
            return;
        }
        let deleted = Arc::new(deleted);
        let calls = (0..self.shards.count()).map(|index| {
            let shards = Arc::clone(&self.shards);
            let deleted = Arc::clone(&deleted);
            async move {
                shards
                    .call(ShardId(index), move |owner| async move {
                        crate::group::forget_topics(&owner, &deleted);
                    })
                    .await
            }
        });
        for outcome in block_on(join_all(calls)) {
            if let Err(gone) = outcome {
                tracing::debug!(%gone, "shard gone while forgetting a deleted topic's offsets");
            }
        }
    }

    fn remove(&mut self, wanted: &Replicas) {
        // Per topic and shard, the partitions gone in this round: one call
        // per shard and topic, the shards at once (one call per partition
        // made deleting a 10,000-partition topic take minutes).
        let mut batches: BTreeMap<(uuid::Uuid, String, usize), Vec<i32>> = BTreeMap::new();
        for ((id, index), (name, shard)) in self.opened.iter().chain(&self.unsure) {
            if !wanted.contains_key(&(*id, *index)) {
                batches
                    .entry((*id, name.clone(), *shard))
                    .or_default()
                    .push(*index);
            }
        }
        let removals = batches.into_iter().map(|((id, name, shard), indexes)| {
            let shards = Arc::clone(&self.shards);
            async move {
                let topic = name.clone();
                let removing = indexes.clone();
                let outcome = shards
                    .call(ShardId(shard), move |owner| async move {
                        owner
                            .remove_partitions(&topic, removing)
                            .await
                            .map_err(|error| format!("{error:#}"))
                    })
                    .await;
                (id, name, shard, indexes, outcome)
            }
        });
        for (id, name, shard, indexes, outcome) in block_on(join_all(removals)) {
            match outcome {
                Ok(Ok(())) => {
                    tracing::info!(topic = %name, shard, partitions = indexes.len(), "removed partitions this broker no longer holds");
                }
                Ok(Err(error)) => {
                    tracing::error!(topic = %name, shard, %error, "removing partitions failed");
                }
                Err(gone) => tracing::debug!(%gone, "shard gone while removing partitions"),
            }
            for index in indexes {
                self.opened.remove(&(id, index));
                self.unsure.remove(&(id, index));
                self.states.remove(&(id, index));
            }
            // Forgotten only with the topic's last local replica: then a
            // replica of it opened again takes the configs of its view.
            // Forgotten while others stay, a config change of this round
            // looked like the topic's first and was never applied to them.
            if !has_replica_of(wanted, id) {
                self.configs.remove(&id);
            }
        }
    }

    fn open(&mut self, view: &ClusterMetadata, wanted: &Replicas) {
        self.failed = false;
        // Per topic and shard, the partitions new in this round.
        let mut batches: BTreeMap<(String, usize), Vec<i32>> = BTreeMap::new();
        for ((id, index), (name, shard)) in wanted {
            if !self.opened.contains_key(&(*id, *index)) {
                batches
                    .entry((name.clone(), *shard))
                    .or_default()
                    .push(*index);
            }
        }
        let defaults = view.topic_defaults(&BTreeMap::new());
        let opens = batches.iter().filter_map(|((name, shard), _)| {
            // Opened with the configs it runs with here: its own over this
            // broker's dynamic defaults (the log takes them at open).
            let mut topic = view.topics.get(name)?.clone();
            topic.configs = defaults.effective(&topic.configs);
            let shards = Arc::clone(&self.shards);
            let shard = *shard;
            Some(async move {
                let outcome = shards
                    .call(ShardId(shard), move |owner| async move {
                        owner
                            .open_topic_partitions(&topic, 0)
                            .await
                            .map_err(|errors| {
                                errors
                                    .into_iter()
                                    .map(|error| (error.partition.partition, error.to_string()))
                                    .collect::<Vec<_>>()
                            })
                    })
                    .await;
                (name.clone(), shard, outcome)
            })
        });
        let results = block_on(join_all(opens));
        // Per partition: its siblings that opened take part in the next
        // steps (replica states, removals) as any open replica does. Left
        // unsure with the one that failed, they kept the role and epoch
        // they opened with for as long as it kept failing.
        let mut failed_partitions = HashSet::new();
        let mut gone_shards = HashSet::new();
        for (name, shard, outcome) in results {
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(errors)) => {
                    for (index, error) in errors {
                        tracing::error!(topic = %name, shard, %error, "opening a partition failed; will retry");
                        failed_partitions.insert((name.clone(), index));
                    }
                }
                Err(gone) => {
                    tracing::debug!(%gone, "shard gone while opening");
                    gone_shards.insert((name, shard));
                }
            }
        }
        for (key, (name, shard)) in wanted {
            if self.opened.contains_key(key) {
                continue;
            }
            if gone_shards.contains(&(name.clone(), *shard))
                || failed_partitions.contains(&(name.clone(), key.1))
            {
                self.failed = true;
                self.unsure.insert(*key, (name.clone(), *shard));
            } else {
                self.unsure.remove(key);
                self.opened.insert(*key, (name.clone(), *shard));
            }
        }
    }

    /// Give each open local replica its role and leader epoch in `view`
    /// when they differ from those last applied (one call per shard). A
    /// replica opened this round already has them (it opened from `view`);
    /// applying them again does nothing.
    fn apply_replica_states(&mut self, view: &ClusterMetadata) {
        type Change = (TopicPartition, ReplicaState, Assignment);
        let mut changes: BTreeMap<usize, Vec<Change>> = BTreeMap::new();
        let mut applied = Vec::new();
        for ((id, index), (name, shard)) in &self.opened {
            let Some(partition) = view
                .topics
                .get(name)
                .and_then(|topic| topic.partitions.get(usize::try_from(*index).ok()?))
            else {
                continue;
            };
            let state = ReplicaState::from_view(partition, view.node_id);
            let assignment = Assignment::from_view(partition);
            let applied_now = (state, assignment);
            if self.states.get(&(*id, *index)) == Some(&applied_now) {
                continue;
            }
            changes.entry(*shard).or_default().push((
                TopicPartition::new(name, *index),
                applied_now.0,
                applied_now.1.clone(),
            ));
            applied.push(((*id, *index), applied_now));
        }
        for (shard, replicas) in changes {
            let outcome = block_on(self.shards.call(ShardId(shard), move |owner| async move {
                for (topic_partition, state, assignment) in replicas {
                    if !owner.apply_replica_view(&topic_partition, state, assignment).await {
                        tracing::warn!(partition = %topic_partition, "no open replica to apply the view's state to");
                    }
                }
            }));
            if let Err(gone) = outcome {
                tracing::debug!(%gone, "shard gone while applying replica states");
            }
        }
        self.states.extend(applied);
    }

    fn apply_configs(&mut self, view: &ClusterMetadata) {
        let defaults = view.topic_defaults(&BTreeMap::new());
        for topic in view.topics.values() {
            if topic
                .partitions
                .iter()
                .all(|partition| partition.local_shard.is_none())
            {
                continue;
            }
            // Its own configs over this broker's dynamic defaults: a change
            // of either is applied.
            let effective = defaults.effective(&topic.configs);
            let previous = self.configs.get(&topic.id);
            if previous == Some(&effective) {
                continue;
            }
            let first_seen = previous.is_none();
            self.configs.insert(topic.id, effective.clone());
            if first_seen {
                // Opened with these configs this round.
                continue;
            }
            let (config, set_aside) = TopicConfig::for_replica(&effective);
            for reason in set_aside {
                tracing::warn!(topic = %topic.name, %reason, "topic config set aside");
            }
            for shard in shards_of(topic) {
                let name = topic.name.clone();
                let config = config.clone();
                let _ = block_on(self.shards.call(ShardId(shard), move |owner| async move {
                    owner.apply_topic_config(&name, &config);
                }));
            }
        }
    }
}

/// This broker's replicas in `view`.
fn local_replicas(view: &ClusterMetadata) -> Replicas {
    let mut replicas = Replicas::new();
    for topic in view.topics.values() {
        for (index, partition) in topic.partitions.iter().enumerate() {
            if let Some(shard) = partition.local_shard {
                replicas.insert((topic.id, index as i32), (topic.name.clone(), shard));
            }
        }
    }
    replicas
}

/// Whether `replicas` holds a partition of the topic with id `topic_id`.
fn has_replica_of(replicas: &Replicas, topic_id: uuid::Uuid) -> bool {
    replicas
        .range((topic_id, i32::MIN)..=(topic_id, i32::MAX))
        .next()
        .is_some()
}

fn shards_of(topic: &TopicMetadata) -> Vec<usize> {
    let mut shards: Vec<usize> = topic
        .partitions
        .iter()
        .filter_map(|partition| partition.local_shard)
        .collect();
    shards.sort_unstable();
    shards.dedup();
    shards
}

/// A single-node controller kept in memory, its [`Metadata`] and a running
/// follower over `shards`: the metadata of in-process tests (no Raft log
/// on disk, no network). Stop the follower, then the controller, at the end.
pub fn in_memory_single_node(
    data_dir: &std::path::Path,
    shards: &Arc<Shards>,
) -> anyhow::Result<(Arc<Metadata>, Follower)> {
    let metadata = in_memory_metadata(data_dir, shards)?;
    let follower = Follower::start(Arc::clone(&metadata), Arc::clone(shards))?;
    Ok((metadata, follower))
}

/// The [`Metadata`] of [`in_memory_single_node`], with no follower.
fn in_memory_metadata(
    data_dir: &std::path::Path,
    shards: &Arc<Shards>,
) -> anyhow::Result<Arc<Metadata>> {
    use crate::controller::records::Listener;
    use crate::controller::service::{self, ServiceConfig, StoreKind};
    use crate::controller::types::BrokerId;
    let mut config = ServiceConfig::single_node(
        BrokerId(0),
        data_dir.to_path_buf(),
        vec![Listener {
            name: "PLAINTEXT".to_string(),
            host: "127.0.0.1".to_string(),
            port: 9092,
        }],
        u32::try_from(shards.count()).unwrap_or(u32::MAX),
    );
    config.store = StoreKind::Memory;
    let controller = service::start(config)?;
    // Registered, then unfenced by its first heartbeat: before that the
    // broker is not live and a topic would find no broker to place on.
    anyhow::ensure!(
        controller.wait_ready(Duration::from_secs(30))
            && crate::broker::wait_unfenced(&controller, 0, Duration::from_secs(30)),
        "the in-memory controller did not become ready"
    );
    Ok(Arc::new(Metadata::new(
        controller,
        0,
        "sluice-test".to_string(),
        shards.count(),
    )))
}

#[cfg(test)]
mod tests {
    //! The follower's rounds driven by hand, with views the tests write,
    //! over one real shard (its own thread, io_uring, a temporary data
    //! directory). No follower thread runs beside them.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::path::Path;
    use std::rc::Rc;

    use sluice_engine::io::uring::UringIo;
    use sluice_engine::{Committer, LeaderEpoch};

    use super::*;
    use crate::cli::BrokerConfig;
    use crate::metadata::PartitionMetadata;
    use crate::shard::{ReplicaRole, Shard};

    /// Run `test` with a follower state over a one-shard broker whose data
    /// directory (`test`'s second argument) is removed afterwards.
    fn with_state(name: &str, test: impl FnOnce(&mut State, &Path)) {
        let dir =
            std::env::temp_dir().join(format!("sluice-follower-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = Arc::new(BrokerConfig::single_node(dir.clone(), 1));
        let (shards, mut inboxes) = Shards::new(1);
        let metadata = in_memory_metadata(&dir, &shards).unwrap();
        let (stop, stopped) = futures_channel::oneshot::channel::<()>();
        let inbox = inboxes.remove(0);
        let (shard_shards, shard_metadata) = (Arc::clone(&shards), Arc::clone(&metadata));
        let thread = std::thread::spawn(move || {
            let runtime = compio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let io = UringIo::new();
                let shard = Rc::new(Shard {
                    id: ShardId(0),
                    io,
                    committer: Committer::new(io),
                    config,
                    shards: shard_shards,
                    metadata: shard_metadata,
                    partitions: Default::default(),
                    groups: Default::default(),
                    replication_links: Default::default(),
                });
                let committer = shard.committer.clone();
                compio::runtime::spawn(async move { committer.run().await }).detach();
                crate::shard::serve_inbox(&shard, inbox);
                let _ = stopped.await;
                shard.close_all().await;
            });
        });
        let mut state = State::new(Arc::clone(&metadata), shards);
        test(&mut state, &dir);
        let _ = stop.send(());
        thread.join().unwrap();
        metadata.controller().stop();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A view of this broker (node 0, one shard) with `topics`.
    fn view(offset: i64, topics: Vec<TopicMetadata>) -> ClusterMetadata {
        ClusterMetadata {
            offset,
            node_id: 0,
            topics: topics
                .into_iter()
                .map(|topic| (topic.name.clone(), topic))
                .collect(),
            ..ClusterMetadata::default()
        }
    }

    fn topic(
        name: &str,
        id: uuid::Uuid,
        partitions: Vec<PartitionMetadata>,
        configs: &[(&str, &str)],
    ) -> TopicMetadata {
        TopicMetadata {
            name: name.to_string(),
            id,
            partitions,
            configs: configs
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
        }
    }

    /// A partition on brokers `replicas`, all in sync, led by `leader`.
    fn partition(replicas: &[i32], leader: i32, leader_epoch: i32) -> PartitionMetadata {
        PartitionMetadata {
            replicas: replicas.to_vec(),
            isr: replicas.to_vec(),
            leader: Some(leader),
            leader_epoch,
            partition_epoch: leader_epoch,
            local_shard: replicas.contains(&0).then_some(0),
        }
    }

    /// The state of each open replica of partitions `0..count` of `name`.
    fn replica_states(state: &State, name: &str, count: usize) -> Vec<Option<ReplicaState>> {
        let name = name.to_string();
        block_on(state.shards.call(ShardId(0), move |owner| async move {
            (0..count)
                .map(|index| {
                    owner
                        .partition(&TopicPartition::new(&name, index as i32))
                        .map(|replica| replica.state())
                })
                .collect::<Vec<_>>()
        }))
        .unwrap()
    }

    /// A partition whose open fails every round (a directory holding data
    /// and recording no topic) holds back none of its siblings on the
    /// shard: they open, past the first batch of opens too, and take the
    /// role and epoch of later views, while it is tried again each round.
    #[test]
    fn siblings_of_a_partition_that_keeps_failing_to_open_follow_later_views() {
        with_state("failing-sibling", |state, dir| {
            let unclaimed = dir.join("t-1");
            std::fs::create_dir_all(&unclaimed).unwrap();
            std::fs::write(unclaimed.join("00000000000000000000.log"), b"junk").unwrap();
            let id = uuid::Uuid::from_u128(7);
            // More partitions than one batch of opens (OPENS_IN_FLIGHT_MAX).
            let count = 66;
            let leading = (0..count).map(|_| partition(&[0], 0, 0)).collect();
            state.follow(view(1, vec![topic("t", id, leading, &[])]));
            // Broker 1 takes every leadership in epoch 1.
            let following = (0..count).map(|_| partition(&[1, 0], 1, 1)).collect();
            state.follow(view(2, vec![topic("t", id, following, &[])]));
            let follower = ReplicaState {
                role: ReplicaRole::Follower,
                leader_epoch: LeaderEpoch(1),
            };
            for (index, replica) in replica_states(state, "t", count).into_iter().enumerate() {
                if index == 1 {
                    assert_eq!(replica, None);
                } else {
                    assert_eq!(replica, Some(follower), "partition {index}");
                }
            }
            assert!(state.failed, "the failing partition is tried again");
            assert_eq!(state.unsure.keys().collect::<Vec<_>>(), vec![&(id, 1)]);
            assert_eq!(state.opened.len(), count - 1);
        });
    }

    /// A topic config change reaches the topic's replicas that stay here
    /// when another of its local replicas is removed in the same round.
    #[test]
    fn a_config_change_applies_beside_the_removal_of_a_sibling() {
        with_state("config-beside-removal", |state, _| {
            let id = uuid::Uuid::from_u128(8);
            let both = vec![partition(&[0], 0, 0), partition(&[0], 0, 0)];
            state.follow(view(
                1,
                vec![topic("t", id, both, &[("retention.ms", "1000")])],
            ));
            // Partition 1 moves to broker 1 as retention.ms changes.
            let one = vec![partition(&[0], 0, 0), partition(&[1], 1, 1)];
            state.follow(view(
                2,
                vec![topic("t", id, one, &[("retention.ms", "2000")])],
            ));
            let name: Arc<str> = Arc::from("t");
            let retention_ms = block_on(state.shards.call(ShardId(0), move |owner| async move {
                let topic = owner.topic(&name).expect("the topic is open");
                assert!(topic.partition(1).is_none(), "partition 1 was removed");
                let replica = topic.partition(0).expect("partition 0 stays");
                let retention_ms = replica.config.borrow().log.retention_ms;
                (retention_ms, replica.log.config().retention_ms)
            }))
            .unwrap();
            assert_eq!(retention_ms, (Some(2000), Some(2000)));
        });
    }
}
