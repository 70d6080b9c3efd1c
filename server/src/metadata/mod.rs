//! Cluster metadata as this broker serves it: a view of the controller's
//! committed [`MetadataImage`] (controller/) plus where this broker keeps
//! its own replicas (which shard).
//!
//! [`Metadata`] is shared by every shard. Readers take the published view
//! ([`Metadata::snapshot`], an `Arc` swap): every request answers from one
//! view. Only the follower (shard/follower.rs) publishes, and only after
//! this broker's shards have opened every local replica the view lists, so
//! a request never finds a local partition that is not open yet.
//!
//! Changes (create/delete topics, add partitions, configs) go to the active
//! controller through the [`ControllerHandle`]; each returns once the change
//! is committed and this broker has published a view that includes it.
//!
//! Shard placement is local and not replicated: a replica of this broker
//! goes to the least loaded shard when it first appears in a view, and
//! stays there while the process lives (any shard can open any directory,
//! so a restart with another --cores just places again).

pub mod broker_config;
pub mod migrate;
pub mod topic_config;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_channel::oneshot;
use thiserror::Error;

pub use topic_config::TopicConfig;

use crate::controller::MetadataImage;
use crate::controller::quorum_controller::CreateTopicRequest;
use crate::controller::records::ConfigResource;
use crate::controller::rpc::{ErrorKind, RequestError};
use crate::controller::service::ControllerHandle;
use crate::controller::types::BrokerId;
use broker_config::{BrokerConfigError, DynamicBrokerConfigs, TopicDefaults};

/// The name of the listener a broker registers for replication.
pub const REPLICATION_LISTENER: &str = "REPLICATION";

/// A broker of the cluster as the view knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerInfo {
    pub id: i32,
    /// Where Kafka clients reach it (its first listener).
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// Fenced (missed its session, or not yet caught up) or shutting down:
    /// not listed to clients, leads nothing.
    pub fenced: bool,
    pub in_controlled_shutdown: bool,
    /// Where leaders push to it (its `REPLICATION` listener, host:port).
    pub replication_address: Option<String>,
}

impl BrokerInfo {
    /// Listed to clients in Metadata and DescribeCluster.
    pub fn is_live(&self) -> bool {
        !self.fenced
    }
}

/// One partition as the view knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionMetadata {
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// None: offline (no live replica can lead).
    pub leader: Option<i32>,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// The shard holding this broker's replica, if this broker has one.
    pub local_shard: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicMetadata {
    pub name: String,
    /// Kafka topic id (a UUID), stable for the topic's lifetime.
    pub id: uuid::Uuid,
    pub partitions: Vec<PartitionMetadata>,
    /// Topic configs set explicitly (Kafka names, e.g. "retention.ms").
    pub configs: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterMetadata {
    /// Reported in Metadata and DescribeCluster.
    pub cluster_id: String,
    /// The metadata log offset this view reflects.
    pub offset: i64,
    /// This broker.
    pub node_id: i32,
    /// What Metadata and DescribeCluster name as the controller: the active
    /// controller when its broker is live, else the live broker with the
    /// lowest id; none while no controller is active. Clients send the controller's requests there (the Java
    /// AdminClient's CreateTopics, librdkafka's admin calls) and any broker
    /// takes them; a fenced one is not listed, and clients named it waited
    /// until they timed out. Kafka's KRaft brokers name a random live one.
    pub controller_id: Option<i32>,
    /// Every registered broker, live or not.
    pub brokers: BTreeMap<i32, BrokerInfo>,
    pub topics: BTreeMap<String, TopicMetadata>,
    /// Every broker's client listeners (name, host, port) as registered,
    /// so that a client is answered with the endpoints of the listener it
    /// connected on ([`ClusterMetadata::endpoint`]).
    pub listener_endpoints: BTreeMap<i32, Vec<(String, String, i32)>>,
    /// The dynamic broker configs: the cluster-wide topic-config defaults
    /// and each broker's own (metadata/broker_config.rs).
    pub broker_configs: DynamicBrokerConfigs,
}

/// Where a request for one partition goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// This broker leads it; its replica is on this shard.
    Local {
        shard: usize,
        partition: &'a PartitionMetadata,
    },
    /// Another broker leads it (or nobody: `leader` None); the client must
    /// refresh its metadata (NOT_LEADER_OR_FOLLOWER, or
    /// LEADER_NOT_AVAILABLE when offline).
    Elsewhere {
        leader: Option<&'a BrokerInfo>,
        partition: &'a PartitionMetadata,
    },
    /// No such topic or partition.
    Unknown,
}

impl ClusterMetadata {
    /// Where clients of `listener` reach `broker`: its endpoint on the
    /// listener of that name, else its first listener (a broker that does
    /// not have the listener).
    pub fn endpoint(&self, broker: &BrokerInfo, listener: &str) -> (String, i32) {
        self.listener_endpoints
            .get(&broker.id)
            .and_then(|endpoints| endpoints.iter().find(|(name, _, _)| name == listener))
            .map_or_else(
                || (broker.host.clone(), broker.port),
                |(_, host, port)| (host.clone(), *port),
            )
    }

    /// Route a request for `topic`-`partition` (see [`Route`]).
    pub fn route(&self, topic: &str, partition: i32) -> Route<'_> {
        let Some(state) = self.topics.get(topic).and_then(|topic| {
            usize::try_from(partition)
                .ok()
                .and_then(|index| topic.partitions.get(index))
        }) else {
            return Route::Unknown;
        };
        match (state.leader, state.local_shard) {
            (Some(leader), Some(shard)) if leader == self.node_id => Route::Local {
                shard,
                partition: state,
            },
            (leader, _) => Route::Elsewhere {
                leader: leader.and_then(|id| self.brokers.get(&id)),
                partition: state,
            },
        }
    }

    /// The topic-config defaults in effect on this broker: its dynamic
    /// value, the cluster's, then `statics` (the broker's flags, by topic
    /// config name).
    pub fn topic_defaults(&self, statics: &BTreeMap<&'static str, String>) -> TopicDefaults {
        self.broker_configs.topic_defaults(self.node_id, statics)
    }

    /// The brokers listed to clients, by id.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerInfo> {
        self.brokers.values().filter(|broker| broker.is_live())
    }

    /// This broker's own entry (host and port as registered).
    pub fn this_broker(&self) -> Option<&BrokerInfo> {
        self.brokers.get(&self.node_id)
    }
}

#[derive(Debug, Error)]
pub enum MetadataError {
    #[error("topic {0} already exists")]
    TopicExists(String),
    /// Kafka's metric names replace '.' by '_': such names would collide.
    #[error("Topic '{name}' collides with existing topic: {existing}")]
    TopicCollision { name: String, existing: String },
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName { name: String, reason: &'static str },
    #[error("invalid partition count {count}: {reason}")]
    InvalidPartitions { count: i32, reason: &'static str },
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(String),
    #[error("invalid replica assignment: {0}")]
    InvalidReplicaAssignment(String),
    /// The controller could not be reached or did not answer in time (the
    /// change may still commit).
    #[error("the controller is not available: {0}")]
    ControllerUnavailable(String),
    #[error("the controller refused the change: {0}")]
    Controller(String),
    /// A dynamic broker config change refused (metadata/broker_config.rs).
    #[error(transparent)]
    BrokerConfig(#[from] BrokerConfigError),
    #[error("Broker {0} is not registered in the cluster")]
    UnknownBroker(i32),
}

impl From<RequestError> for MetadataError {
    fn from(error: RequestError) -> MetadataError {
        match error {
            RequestError::Rejected { kind, message } => match kind {
                ErrorKind::TopicAlreadyExists => MetadataError::TopicExists(message),
                ErrorKind::UnknownTopic => MetadataError::UnknownTopic(message),
                ErrorKind::InvalidTopicName => MetadataError::InvalidTopicName {
                    name: message,
                    reason: "refused by the controller",
                },
                ErrorKind::InvalidPartitions => MetadataError::InvalidPartitions {
                    count: -1,
                    reason: "refused by the controller",
                },
                ErrorKind::InvalidReplicationFactor => {
                    MetadataError::InvalidReplicationFactor(message)
                }
                ErrorKind::InvalidReplicaAssignment => {
                    MetadataError::InvalidReplicaAssignment(message)
                }
                _ => MetadataError::Controller(format!("{kind:?}: {message}")),
            },
            other => MetadataError::ControllerUnavailable(other.to_string()),
        }
    }
}

/// [`ClusterMetadata::controller_id`]: `active` when its broker is live,
/// else the live broker with the lowest id; none while no controller is
/// active (`sluice cluster health` reads that as a lost quorum).
fn listed_controller(active: Option<i32>, brokers: &BTreeMap<i32, BrokerInfo>) -> Option<i32> {
    let active = active?;
    if brokers.get(&active).is_some_and(BrokerInfo::is_live) {
        return Some(active);
    }
    brokers
        .values()
        .find(|broker| broker.is_live())
        .map(|broker| broker.id)
}

/// Topic names as Kafka allows them.
pub fn validate_topic_name(name: &str) -> Result<(), MetadataError> {
    let invalid = |reason| {
        Err(MetadataError::InvalidTopicName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("empty");
    }
    if name == "." || name == ".." {
        return invalid("'.' and '..' are reserved");
    }
    if name.len() > 249 {
        return invalid("longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
    {
        return invalid("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// Partition counts above this are refused (a guard against typos that
/// would create millions of files).
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;

/// Replication factor when a request asks for the broker default (-1).
pub const DEFAULT_REPLICATION_FACTOR: i32 = 1;

/// The metadata shared by all shards. See the module docs.
pub struct Metadata {
    controller: ControllerHandle,
    node_id: i32,
    cluster_id: String,
    shard_count: usize,
    published: Mutex<Arc<ClusterMetadata>>,
    placement: Mutex<Placement>,
    /// Woken when a view at or past their offset is published.
    waiters: Mutex<Vec<(i64, oneshot::Sender<()>)>>,
}

/// Local replicas' shards, and each shard's load.
#[derive(Default)]
struct Placement {
    shards: HashMap<(uuid::Uuid, i32), usize>,
}

impl Placement {
    fn shard_of(&mut self, key: (uuid::Uuid, i32), shard_count: usize) -> usize {
        if let Some(shard) = self.shards.get(&key) {
            return *shard;
        }
        let mut loads = vec![0usize; shard_count];
        for shard in self.shards.values() {
            if let Some(load) = loads.get_mut(*shard) {
                *load += 1;
            }
        }
        let shard = (0..shard_count)
            .min_by_key(|&shard| (loads[shard], shard))
            .unwrap_or(0);
        self.shards.insert(key, shard);
        shard
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Metadata {
    pub fn new(
        controller: ControllerHandle,
        node_id: i32,
        cluster_id: String,
        shard_count: usize,
    ) -> Metadata {
        let empty = ClusterMetadata {
            cluster_id: cluster_id.clone(),
            node_id,
            ..ClusterMetadata::default()
        };
        Metadata {
            controller,
            node_id,
            cluster_id,
            shard_count: shard_count.max(1),
            published: Mutex::new(Arc::new(empty)),
            placement: Mutex::new(Placement::default()),
            waiters: Mutex::new(Vec::new()),
        }
    }

    pub fn controller(&self) -> &ControllerHandle {
        &self.controller
    }

    /// The published view (see the module docs).
    pub fn snapshot(&self) -> Arc<ClusterMetadata> {
        Arc::clone(&lock(&self.published))
    }

    /// Build the view of `image` (placing new local replicas on shards).
    /// The follower publishes it once the shards have opened them.
    pub fn build_view(&self, image: &MetadataImage) -> ClusterMetadata {
        let mut placement = lock(&self.placement);
        let brokers = image
            .brokers()
            .values()
            .map(|broker| {
                let listener = broker.listeners.first();
                (
                    broker.broker_id.0,
                    BrokerInfo {
                        id: broker.broker_id.0,
                        host: listener
                            .map(|listener| listener.host.clone())
                            .unwrap_or_default(),
                        port: listener.map_or(-1, |listener| i32::from(listener.port)),
                        rack: broker.rack.clone(),
                        fenced: broker.fenced,
                        in_controlled_shutdown: broker.in_controlled_shutdown,
                        replication_address: broker
                            .listeners
                            .iter()
                            .find(|listener| listener.name == REPLICATION_LISTENER)
                            .map(|listener| format!("{}:{}", listener.host, listener.port)),
                    },
                )
            })
            .collect();
        let topics = image
            .topics()
            .values()
            .map(|topic| {
                let partitions = topic
                    .partitions
                    .iter()
                    .enumerate()
                    .map(|(index, state)| {
                        let local = state.replicas.contains(&BrokerId(self.node_id));
                        PartitionMetadata {
                            replicas: state.replicas.iter().map(|id| id.0).collect(),
                            isr: state.isr.iter().map(|id| id.0).collect(),
                            leader: state.leader.map(|id| id.0),
                            leader_epoch: state.leader_epoch.0,
                            partition_epoch: state.partition_epoch.0,
                            local_shard: local.then(|| {
                                placement
                                    .shard_of((topic.topic_id.0, index as i32), self.shard_count)
                            }),
                        }
                    })
                    .collect();
                let configs = image
                    .configs(&ConfigResource::Topic(topic.name.clone()))
                    .cloned()
                    .unwrap_or_default();
                (
                    topic.name.clone(),
                    TopicMetadata {
                        name: topic.name.clone(),
                        id: topic.topic_id.0,
                        partitions,
                        configs,
                    },
                )
            })
            .collect::<BTreeMap<_, _>>();
        // Forget the shards of replicas that left the view.
        let present: std::collections::HashSet<(uuid::Uuid, i32)> = topics
            .values()
            .flat_map(|topic: &TopicMetadata| {
                (0..topic.partitions.len()).map(move |index| (topic.id, index as i32))
            })
            .collect();
        placement.shards.retain(|key, _| present.contains(key));
        ClusterMetadata {
            cluster_id: self.cluster_id.clone(),
            offset: image.offset().0,
            node_id: self.node_id,
            controller_id: listed_controller(
                self.controller.active_controller().map(|id| id.0),
                &brokers,
            ),
            brokers,
            topics,
            listener_endpoints: image
                .brokers()
                .values()
                .map(|broker| {
                    let endpoints = broker
                        .listeners
                        .iter()
                        .filter(|listener| listener.name != REPLICATION_LISTENER)
                        .map(|listener| {
                            (
                                listener.name.clone(),
                                listener.host.clone(),
                                i32::from(listener.port),
                            )
                        })
                        .collect();
                    (broker.broker_id.0, endpoints)
                })
                .collect(),
            broker_configs: DynamicBrokerConfigs::from_image(image),
        }
    }

    /// Publish `view` (the follower, once its local replicas are open) and
    /// wake those waiting for its offset.
    pub fn publish(&self, view: ClusterMetadata) {
        let offset = view.offset;
        *lock(&self.published) = Arc::new(view);
        let mut waiters = lock(&self.waiters);
        let (ready, waiting): (Vec<_>, Vec<_>) =
            waiters.drain(..).partition(|(wanted, _)| *wanted <= offset);
        *waiters = waiting;
        drop(waiters);
        for (_, waiter) in ready {
            let _ = waiter.send(());
        }
    }

    /// Wait until a view at or past `offset` is published.
    pub async fn wait_published(&self, offset: i64) -> Result<(), MetadataError> {
        let receiver = {
            let mut waiters = lock(&self.waiters);
            if self.snapshot().offset >= offset {
                return Ok(());
            }
            let (sender, receiver) = oneshot::channel();
            waiters.push((offset, sender));
            receiver
        };
        receiver.await.map_err(|_| {
            MetadataError::ControllerUnavailable("the broker is shutting down".to_string())
        })
    }

    /// The published view once it holds everything this broker's
    /// controller client has applied. A broker publishes a change only
    /// after it removed or opened its own replicas of it, which takes a
    /// while for a large topic: an admin request's checks against a view
    /// lagging another broker's change (a topic deleted there and created
    /// here at once, created there and altered here) answered
    /// TOPIC_ALREADY_EXISTS or UNKNOWN_TOPIC_OR_PARTITION, which clients do
    /// not retry. Kafka's brokers send these requests to the controller,
    /// which decides on its committed state. Checks that fail on the view
    /// look again here before they answer.
    pub async fn caught_up(&self) -> Result<Arc<ClusterMetadata>, MetadataError> {
        self.wait_published(self.controller.applied_offset().0)
            .await?;
        Ok(self.snapshot())
    }

    /// The topic `name` of the view, looked up again in a caught-up view
    /// ([`Metadata::caught_up`]) when the view does not have it.
    pub async fn current_topic(&self, name: &str) -> Result<TopicMetadata, MetadataError> {
        if let Some(topic) = self.snapshot().topics.get(name) {
            return Ok(topic.clone());
        }
        self.caught_up()
            .await?
            .topics
            .get(name)
            .cloned()
            .ok_or_else(|| MetadataError::UnknownTopic(name.to_string()))
    }

    /// Validate a new topic against the published view, as far as this
    /// broker can (the controller checks again when it commits).
    fn check_new_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i32,
        manual: bool,
        configs: &BTreeMap<String, String>,
    ) -> Result<(), MetadataError> {
        validate_topic_name(name)?;
        if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&partitions) {
            return Err(MetadataError::InvalidPartitions {
                count: partitions,
                reason: "must be 1 to 10000",
            });
        }
        let view = self.snapshot();
        // With this broker's dynamic defaults under them, as the topic
        // will run (a topic value may contradict a default).
        TopicConfig::from_map(&view.topic_defaults(&BTreeMap::new()).effective(configs))
            .map_err(MetadataError::InvalidConfig)?;
        if view.topics.contains_key(name) {
            return Err(MetadataError::TopicExists(name.to_string()));
        }
        let collision_key = name.replace('.', "_");
        if let Some(existing) = view
            .topics
            .keys()
            .find(|existing| existing.replace('.', "_") == collision_key)
        {
            return Err(MetadataError::TopicCollision {
                name: name.to_string(),
                existing: existing.clone(),
            });
        }
        // A manual assignment may name registered brokers that are down,
        // as Kafka's validateManualPartitionAssignment allows: they start
        // outside the ISR; the controller refuses an unregistered broker,
        // or a partition whose brokers are all down (placement.rs).
        let live = view
            .brokers
            .values()
            .filter(|broker| broker.is_live() && !broker.in_controlled_shutdown)
            .count();
        if replication_factor < 1 || (!manual && replication_factor as usize > live.max(1)) {
            return Err(MetadataError::InvalidReplicationFactor(format!(
                "replication factor {replication_factor} with {live} live broker(s)"
            )));
        }
        Ok(())
    }

    /// Create a topic; returns it once committed and published here.
    /// `replication_factor` -1 means the default; `assignment` lists each
    /// partition's replicas explicitly.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i32,
        assignment: Option<Vec<Vec<i32>>>,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<TopicMetadata, MetadataError> {
        let replication_factor = if replication_factor == -1 {
            DEFAULT_REPLICATION_FACTOR
        } else {
            replication_factor
        };
        let (partitions, replication_factor) = match &assignment {
            Some(assignment) => (
                i32::try_from(assignment.len()).unwrap_or(i32::MAX),
                assignment
                    .first()
                    .map_or(0, |replicas| replicas.len() as i32),
            ),
            None => (partitions, replication_factor),
        };
        let manual = assignment.is_some();
        match self.check_new_topic(name, partitions, replication_factor, manual, &configs) {
            Err(MetadataError::TopicExists(_) | MetadataError::TopicCollision { .. }) => {
                self.caught_up().await?;
                self.check_new_topic(name, partitions, replication_factor, manual, &configs)?;
            }
            checked => checked?,
        }
        if validate_only {
            return Ok(TopicMetadata {
                name: name.to_string(),
                id: uuid::Uuid::nil(),
                partitions: Vec::new(),
                configs,
            });
        }
        let created = self
            .controller
            .create_topic(CreateTopicRequest {
                name: name.to_string(),
                partition_count: partitions,
                replication_factor,
                assignment: assignment.map(|assignment| {
                    assignment
                        .into_iter()
                        .map(|replicas| replicas.into_iter().map(BrokerId).collect())
                        .collect()
                }),
                configs: configs.into_iter().collect(),
            })
            .await;
        let created = match created {
            Ok(created) => created,
            Err(error) => {
                // Someone else's creation of this name committed: make it
                // visible here before answering, so that the caller (e.g.
                // the group coordinator racing a CreateTopics) finds it.
                let error = MetadataError::from(error);
                if matches!(error, MetadataError::TopicExists(_)) {
                    self.wait_published(self.controller.applied_offset().0)
                        .await?;
                }
                return Err(error);
            }
        };
        self.wait_published(created.offset.0).await?;
        self.topic_by_id(name, created.topic_id.0)
    }

    fn topic_by_id(&self, name: &str, id: uuid::Uuid) -> Result<TopicMetadata, MetadataError> {
        self.snapshot()
            .topics
            .get(name)
            .filter(|topic| topic.id == id)
            .cloned()
            // Deleted again between commit and publication.
            .ok_or_else(|| MetadataError::UnknownTopic(name.to_string()))
    }

    pub async fn delete_topic(&self, name: &str) -> Result<TopicMetadata, MetadataError> {
        let topic = self.current_topic(name).await?;
        let offset = self.controller.delete_topic(name).await?;
        self.wait_published(offset.0).await?;
        Ok(topic)
    }

    /// Delete the topic with id `id` (named `name` in this view): the
    /// controller deletes it only while the name is still that topic's, so
    /// a view that lags a deletion and a creation under the same name never
    /// deletes the newer topic. `UnknownTopic` when it is gone.
    pub async fn delete_topic_with_id(
        &self,
        name: &str,
        id: uuid::Uuid,
    ) -> Result<TopicMetadata, MetadataError> {
        let topic = self.current_topic(name).await?;
        let offset = self
            .controller
            .delete_topic_with_id(name, crate::controller::types::TopicId(id))
            .await?;
        self.wait_published(offset.0).await?;
        Ok(topic)
    }

    /// Grow a topic to `total` partitions.
    pub async fn add_partitions(
        &self,
        name: &str,
        total: i32,
        assignment: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    ) -> Result<TopicMetadata, MetadataError> {
        let topic = self.current_topic(name).await?;
        let current = topic.partitions.len() as i32;
        if total <= current {
            return Err(MetadataError::InvalidPartitions {
                count: total,
                reason: "a topic can only grow",
            });
        }
        if total > PARTITIONS_PER_TOPIC_MAX {
            return Err(MetadataError::InvalidPartitions {
                count: total,
                reason: "must be 1 to 10000",
            });
        }
        if validate_only {
            // As the real request's placement would (Kafka runs it and
            // discards the records): new replicas on live brokers only, as
            // many as partition 0 has; a manual partition needs one live.
            let view = self.snapshot();
            let live = |id: &i32| {
                view.brokers
                    .get(id)
                    .is_some_and(|broker| broker.is_live() && !broker.in_controlled_shutdown)
            };
            let live_count = view.brokers.keys().filter(|id| live(id)).count();
            let factor = topic
                .partitions
                .first()
                .map_or(0, |partition| partition.replicas.len());
            match &assignment {
                None if factor > live_count => {
                    return Err(MetadataError::InvalidReplicationFactor(format!(
                        "replication factor {factor} with {live_count} live broker(s)"
                    )));
                }
                Some(assignment) => {
                    if let Some(index) = assignment
                        .iter()
                        .position(|replicas| !replicas.iter().any(live))
                    {
                        return Err(MetadataError::InvalidReplicaAssignment(format!(
                            "every broker of new partition {index} is fenced or shutting down"
                        )));
                    }
                }
                None => {}
            }
            return Ok(topic);
        }
        let assignment: Option<Vec<Vec<BrokerId>>> = assignment.map(|assignment| {
            assignment
                .into_iter()
                .map(|replicas| replicas.into_iter().map(BrokerId).collect())
                .collect()
        });
        // The controller checks a request against its committed image: of
        // two growths of one topic in flight, the second to commit is
        // refused. Look again and retry while the topic is still smaller
        // than asked (Kafka's controller applies them one after the other).
        let mut attempts = 0;
        let offset = loop {
            attempts += 1;
            match self
                .controller
                .create_partitions(name, total, assignment.clone())
                .await
                .map_err(MetadataError::from)
            {
                Ok(offset) => break offset,
                Err(MetadataError::InvalidPartitions { .. }) if attempts < 5 => {
                    self.wait_published(self.controller.applied_offset().0)
                        .await?;
                    let current = self
                        .snapshot()
                        .topics
                        .get(name)
                        .map_or(0, |topic| topic.partitions.len() as i32);
                    if total <= current {
                        return Err(MetadataError::InvalidPartitions {
                            count: total,
                            reason: "a topic can only grow",
                        });
                    }
                }
                Err(error) => return Err(error),
            }
        };
        self.wait_published(offset.0).await?;
        self.topic_by_id(name, topic.id)
    }

    /// Replace the topic's explicit configs with `configs`.
    pub async fn set_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<TopicMetadata, MetadataError> {
        let topic = self.current_topic(name).await?;
        let view = self.snapshot();
        TopicConfig::from_map(&view.topic_defaults(&BTreeMap::new()).effective(&configs))
            .map_err(MetadataError::InvalidConfig)?;
        if validate_only {
            return Ok(TopicMetadata { configs, ..topic });
        }
        let mut changes: Vec<(String, Option<String>)> = topic
            .configs
            .keys()
            .filter(|key| !configs.contains_key(*key))
            .map(|key| (key.clone(), None))
            .collect();
        changes.extend(
            configs
                .iter()
                .filter(|(key, value)| topic.configs.get(*key) != Some(value))
                .map(|(key, value)| (key.clone(), Some(value.clone()))),
        );
        if changes.is_empty() {
            return Ok(topic);
        }
        let offset = self
            .controller
            .alter_configs(ConfigResource::Topic(name.to_string()), changes)
            .await?;
        self.wait_published(offset.0).await?;
        self.topic_by_id(name, topic.id)
    }

    /// Replace the dynamic broker configs of `broker` (`None`: the
    /// cluster-wide default) with `configs` (broker config names). Checked
    /// first: names and values (`read_only` names this broker's static
    /// settings, for the message), then every topic's configs on every
    /// broker the change reaches must still hold together. Returns once
    /// committed and published here; the other brokers apply it as their
    /// followers publish it.
    pub async fn set_broker_configs(
        &self,
        broker: Option<i32>,
        configs: BTreeMap<String, String>,
        read_only: &dyn Fn(&str) -> bool,
        validate_only: bool,
    ) -> Result<(), MetadataError> {
        broker_config::validate(&configs, read_only, broker.is_some())?;
        let view = self.snapshot();
        if let Some(id) = broker
            && !view.brokers.contains_key(&id)
        {
            return Err(MetadataError::UnknownBroker(id));
        }
        let changed = view.broker_configs.with(broker, configs.clone());
        let nodes: Vec<i32> = match broker {
            Some(id) => vec![id],
            None => {
                let mut nodes: Vec<i32> = view.brokers.keys().copied().collect();
                nodes.push(view.node_id);
                nodes.sort_unstable();
                nodes.dedup();
                nodes
            }
        };
        // Topics share few distinct explicit config sets: check each once.
        let mut explicit_sets: Vec<(&str, &BTreeMap<String, String>)> = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for topic in view.topics.values() {
            if seen.insert(&topic.configs) {
                explicit_sets.push((topic.name.as_str(), &topic.configs));
            }
        }
        let empty = BTreeMap::new();
        for node in nodes {
            let defaults = changed.topic_defaults(node, &BTreeMap::new());
            TopicConfig::from_map(&defaults.effective(&empty)).map_err(|error| {
                BrokerConfigError::Conflict(format!(
                    "The broker config defaults would not hold together on broker {node}: \
                     {error}"
                ))
            })?;
            for (name, explicit) in &explicit_sets {
                TopicConfig::from_map(&defaults.effective(explicit)).map_err(|error| {
                    BrokerConfigError::Conflict(format!(
                        "With these broker config defaults the configs of topic '{name}' \
                         would be invalid on broker {node}: {error}"
                    ))
                })?;
            }
        }
        if validate_only {
            return Ok(());
        }
        let current = view.broker_configs.of(broker);
        let mut changes: Vec<(String, Option<String>)> = current
            .keys()
            .filter(|key| !configs.contains_key(*key))
            .map(|key| (key.clone(), None))
            .collect();
        changes.extend(
            configs
                .iter()
                .filter(|(key, value)| current.get(*key) != Some(value))
                .map(|(key, value)| (key.clone(), Some(value.clone()))),
        );
        if changes.is_empty() {
            return Ok(());
        }
        let offset = self
            .controller
            .alter_configs(ConfigResource::Broker(broker.map(BrokerId)), changes)
            .await?;
        self.wait_published(offset.0).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(id: i32, fenced: bool) -> (i32, BrokerInfo) {
        (
            id,
            BrokerInfo {
                id,
                host: "127.0.0.1".to_string(),
                port: 9092,
                rack: None,
                fenced,
                in_controlled_shutdown: false,
                replication_address: None,
            },
        )
    }

    /// The controller clients are told of is always a broker they are
    /// told of: a fenced active controller (starting, or at the end of a
    /// controlled shutdown) is not listed, and clients sent to it waited
    /// until they timed out.
    #[test]
    fn the_named_controller_is_a_listed_broker() {
        let brokers: BTreeMap<i32, BrokerInfo> =
            [broker(1, true), broker(2, false), broker(3, false)]
                .into_iter()
                .collect();
        assert_eq!(listed_controller(Some(3), &brokers), Some(3));
        assert_eq!(listed_controller(Some(1), &brokers), Some(2));
        // No active controller (a lost quorum): none, as before.
        assert_eq!(listed_controller(None, &brokers), None);
        let fenced: BTreeMap<i32, BrokerInfo> = [broker(1, true)].into_iter().collect();
        assert_eq!(listed_controller(Some(1), &fenced), None);
    }
}
