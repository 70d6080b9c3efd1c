//! A cluster of real `sluice` processes on loopback for the cluster tests:
//! node ids `1..=N`, each broker with its own Kafka and controller ports
//! (picked free, never fixed, so tests run in parallel) and its own data
//! directory; the first `min(N, 3)` nodes are the controller's voters
//! (fewer with [`Cluster::start_with_voters`]) and every broker gets the
//! same `--controller-voters`.
//!
//! Brokers cannot serve before a controller quorum exists, so [`Cluster`]
//! spawns every broker first and then waits for each to answer ApiVersions.
//! Everything is addressed by node id (`broker(1)` is node 1), never by a
//! position in a list. The helpers that ask the cluster something
//! (Metadata, DescribeCluster) return `None`/`Err` instead of panicking, so
//! tests can poll them through [`wait_until`] while brokers come and go.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kafka_protocol::messages::{
    DescribeClusterRequest, DescribeClusterResponse, MetadataRequest, MetadataResponse,
};
use sluice_server::admin::client::{ClientError, Connection};

use super::{Broker, reserve_port};

/// Voters of a cluster of more than one node (Raft: 1 or 3).
const VOTERS_MAX: usize = 3;

/// The processes of one test's cluster; every broker is killed when this
/// is dropped, and a passing test's directories are removed.
pub struct Cluster {
    name: String,
    root: PathBuf,
    /// Node `i` at index `i - 1`.
    brokers: Vec<Broker>,
    controller_ports: Vec<u16>,
    voter_count: usize,
}

impl Cluster {
    /// Start `nodes` brokers with `extra_args` added to each one's flags,
    /// and wait until all of them serve.
    pub fn start(name: &str, nodes: usize, extra_args: &[&str]) -> Cluster {
        Cluster::start_with_node_args(name, nodes, extra_args, &|_| Vec::new())
    }

    /// [`Cluster::start`], with `node_args(node)` added to node `node`'s
    /// flags after `extra_args` (e.g. each broker's own
    /// `--replication-listen` and `--replication-advertised`, the latter a
    /// fault proxy in front of the former).
    pub fn start_with_node_args(
        name: &str,
        nodes: usize,
        extra_args: &[&str],
        node_args: &dyn Fn(i32) -> Vec<String>,
    ) -> Cluster {
        Cluster::start_full(name, nodes, nodes.min(VOTERS_MAX), extra_args, node_args)
    }

    /// [`Cluster::start`] with only nodes `1..=voters` as the controller's
    /// voters: the others can be stopped, killed or wiped without
    /// touching the controller's quorum or its Raft state.
    pub fn start_with_voters(
        name: &str,
        nodes: usize,
        voters: usize,
        extra_args: &[&str],
    ) -> Cluster {
        assert!(
            (1..=nodes.min(VOTERS_MAX)).contains(&voters),
            "1 to 3 voters among the nodes"
        );
        Cluster::start_full(name, nodes, voters, extra_args, &|_| Vec::new())
    }

    fn start_full(
        name: &str,
        nodes: usize,
        voter_count: usize,
        extra_args: &[&str],
        node_args: &dyn Fn(i32) -> Vec<String>,
    ) -> Cluster {
        assert!(nodes >= 1, "a cluster has at least one node");
        let root = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("cluster")
            .join(format!("{name}-{}", std::process::id()));
        if root.exists() {
            std::fs::remove_dir_all(&root).expect("removing an old cluster directory");
        }
        // Every port first: each broker's flags name every voter's.
        let kafka_ports: Vec<u16> = (0..nodes).map(|_| reserve_port()).collect();
        let controller_ports: Vec<u16> = (0..nodes).map(|_| reserve_port()).collect();
        let voters = (1..=voter_count)
            .map(|node| format!("{node}@127.0.0.1:{}", controller_ports[node - 1]))
            .collect::<Vec<_>>()
            .join(",");
        let brokers = (1..=nodes)
            .map(|node| {
                let mut args = vec![
                    "--node-id".to_string(),
                    node.to_string(),
                    "--controller-voters".to_string(),
                    voters.clone(),
                ];
                if node <= voter_count {
                    args.push("--controller-listen".to_string());
                    args.push(format!("127.0.0.1:{}", controller_ports[node - 1]));
                }
                args.extend(extra_args.iter().map(|arg| arg.to_string()));
                args.extend(node_args(i32::try_from(node).expect("node count fits i32")));
                Broker::spawn_in(
                    &format!("{name}-node-{node}"),
                    &root.join(format!("node-{node}")),
                    kafka_ports[node - 1],
                    &args,
                )
            })
            .collect();
        let mut cluster = Cluster {
            name: name.to_string(),
            root,
            brokers,
            controller_ports,
            voter_count,
        };
        for broker in &mut cluster.brokers {
            broker.wait_until_serving();
        }
        cluster
    }

    /// The controller port of node `node` (a voter's peer listener).
    pub fn controller_port(&self, node: i32) -> u16 {
        self.controller_ports[usize::try_from(node - 1).expect("node ids start at 1")]
    }

    /// Node ids, `1..=N`.
    pub fn nodes(&self) -> std::ops::RangeInclusive<i32> {
        1..=i32::try_from(self.brokers.len()).expect("node count fits i32")
    }

    /// Whether `node` is one of the controller's voters.
    pub fn is_voter(&self, node: i32) -> bool {
        usize::try_from(node).is_ok_and(|node| (1..=self.voter_count).contains(&node))
    }

    /// Every broker's Kafka address, comma separated (running or not).
    pub fn bootstrap(&self) -> String {
        self.brokers
            .iter()
            .map(Broker::bootstrap)
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn broker(&self, node: i32) -> &Broker {
        &self.brokers[Self::index(node)]
    }

    pub fn broker_mut(&mut self, node: i32) -> &mut Broker {
        &mut self.brokers[Self::index(node)]
    }

    /// Node ids of the brokers whose process is running.
    pub fn running(&mut self) -> Vec<i32> {
        let nodes: Vec<i32> = self.nodes().collect();
        nodes
            .into_iter()
            .filter(|node| self.broker_mut(*node).is_running())
            .collect()
    }

    /// SIGKILL `node` (kill -9) and reap it.
    pub fn kill9(&mut self, node: i32) {
        self.broker_mut(node).kill9();
    }

    /// SIGTERM `node` and wait for its clean exit.
    pub fn stop(&mut self, node: i32) {
        self.broker_mut(node).stop();
    }

    /// Start `node` again (same ports and data) and wait until it serves.
    pub fn start_again(&mut self, node: i32) {
        self.broker_mut(node).start_again();
    }

    /// SIGTERM every running broker at once and wait for each to exit
    /// cleanly (at once: voters stopping one by one would leave the last
    /// ones without a quorum for their controlled shutdown).
    pub fn stop_all(&mut self) {
        std::thread::scope(|scope| {
            for broker in &mut self.brokers {
                if broker.is_running() {
                    scope.spawn(move || broker.stop());
                }
            }
        });
    }

    /// Start every broker that is not running, then wait for all of them.
    pub fn start_all_again(&mut self) {
        for broker in &mut self.brokers {
            if !broker.is_running() {
                broker.spawn();
            }
        }
        for broker in &mut self.brokers {
            broker.wait_until_serving();
        }
    }

    /// Every broker's stderr (first and last lines), for failure messages.
    pub fn stderr_tails(&self) -> String {
        self.brokers.iter().map(Broker::stderr_tail).collect()
    }

    /// Metadata (all topics, no auto-creation) from `node`.
    pub fn metadata(&self, node: i32) -> Result<MetadataResponse, ClientError> {
        let mut connection = Connection::open(&self.broker(node).bootstrap())?;
        let request = MetadataRequest::default()
            .with_topics(None)
            .with_allow_auto_topic_creation(false);
        Ok(connection.call(&request, 1..=12)?.0)
    }

    /// DescribeCluster from `node`.
    pub fn describe_cluster(&self, node: i32) -> Result<DescribeClusterResponse, ClientError> {
        let mut connection = Connection::open(&self.broker(node).bootstrap())?;
        Ok(connection
            .call(&DescribeClusterRequest::default(), 0..=1)?
            .0)
    }

    /// The active controller's node id as the first running broker that
    /// answers DescribeCluster (skipping `except`) reports it; `None`
    /// while none answers or none knows one.
    pub fn active_controller(&mut self, except: &[i32]) -> Option<i32> {
        for node in self.running() {
            if except.contains(&node) {
                continue;
            }
            if let Ok(response) = self.describe_cluster(node)
                && response.error_code == 0
                && response.controller_id.0 >= 0
            {
                return Some(response.controller_id.0);
            }
        }
        None
    }

    /// The transaction coordinator of `id` per FindCoordinator (key type 1),
    /// asked of `node`.
    pub fn transaction_coordinator(&self, node: i32, id: &str) -> Result<i32, String> {
        use kafka_protocol::messages::FindCoordinatorRequest;
        use kafka_protocol::protocol::StrBytes;
        use sluice_server::admin::client::Connection;

        let mut connection =
            Connection::open(&self.broker(node).bootstrap()).map_err(|error| error.to_string())?;
        let request = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(id.to_string()))
            .with_key_type(1);
        let (response, _) = connection
            .call(&request, 1..=3)
            .map_err(|error| error.to_string())?;
        if response.error_code != 0 {
            return Err(format!("error {}", response.error_code));
        }
        Ok(response.node_id.0)
    }

    /// The leader of `topic`/`partition` as `node`'s Metadata reports it:
    /// `Some(Ok(leader))`, `Some(Err(error_code))` for a partition without
    /// a leader, `None` when the broker does not answer or does not know
    /// the partition.
    pub fn partition_leader(
        &self,
        node: i32,
        topic: &str,
        partition: i32,
    ) -> Option<Result<i32, i16>> {
        let metadata = self.metadata(node).ok()?;
        let topic = metadata.topics.iter().find(|candidate| {
            candidate
                .name
                .as_ref()
                .is_some_and(|name| name.0.as_str() == topic)
        })?;
        let partition = topic
            .partitions
            .iter()
            .find(|candidate| candidate.partition_index == partition)?;
        if partition.error_code != 0 || partition.leader_id.0 < 0 {
            return Some(Err(partition.error_code));
        }
        Some(Ok(partition.leader_id.0))
    }

    /// Leader of every partition of `topic` per `node` (index -> leader id,
    /// -1 without one); `None` when the broker does not answer or does not
    /// list the topic.
    pub fn leaders(&self, node: i32, topic: &str) -> Option<BTreeMap<i32, i32>> {
        let metadata = self.metadata(node).ok()?;
        let topic = metadata.topics.iter().find(|candidate| {
            candidate
                .name
                .as_ref()
                .is_some_and(|name| name.0.as_str() == topic)
        })?;
        Some(
            topic
                .partitions
                .iter()
                .map(|partition| {
                    let leader = if partition.error_code == 0 {
                        partition.leader_id.0
                    } else {
                        -1
                    };
                    (partition.partition_index, leader)
                })
                .collect(),
        )
    }

    /// `node`'s data directory (`<data>/<topic>-<partition>` holds its
    /// replica of a partition).
    pub fn data_dir(&self, node: i32) -> &Path {
        self.broker(node).data_dir()
    }

    /// SIGKILL every running broker at once (a power loss) and reap them.
    pub fn kill9_all(&mut self) {
        std::thread::scope(|scope| {
            for broker in &mut self.brokers {
                if broker.is_running() {
                    scope.spawn(move || broker.kill9());
                }
            }
        });
    }

    /// Every partition of `topic` as `node`'s Metadata describes it;
    /// `None` when the broker does not answer or does not list the topic.
    pub fn partition_states(
        &self,
        node: i32,
        topic: &str,
    ) -> Option<BTreeMap<i32, PartitionState>> {
        let metadata = self.metadata(node).ok()?;
        let topic = metadata.topics.iter().find(|candidate| {
            candidate
                .name
                .as_ref()
                .is_some_and(|name| name.0.as_str() == topic)
        })?;
        Some(
            topic
                .partitions
                .iter()
                .map(|partition| {
                    let nodes = |ids: &[kafka_protocol::messages::BrokerId]| {
                        ids.iter().map(|id| id.0).collect::<Vec<i32>>()
                    };
                    (
                        partition.partition_index,
                        PartitionState {
                            error_code: partition.error_code,
                            leader: partition.leader_id.0,
                            leader_epoch: partition.leader_epoch,
                            replicas: nodes(&partition.replica_nodes),
                            isr: nodes(&partition.isr_nodes),
                            offline: nodes(&partition.offline_replicas),
                        },
                    )
                })
                .collect(),
        )
    }

    /// `topic`/`partition` as `node`'s Metadata describes it.
    pub fn partition_state(
        &self,
        node: i32,
        topic: &str,
        partition: i32,
    ) -> Option<PartitionState> {
        self.partition_states(node, topic)?.remove(&partition)
    }

    /// The in-sync replicas of `topic`/`partition` per `node`, sorted.
    pub fn isr(&self, node: i32, topic: &str, partition: i32) -> Option<Vec<i32>> {
        let mut isr = self.partition_state(node, topic, partition)?.isr;
        isr.sort_unstable();
        Some(isr)
    }

    /// The replicas of `topic`/`partition` per `node`, in assignment order.
    pub fn replicas(&self, node: i32, topic: &str, partition: i32) -> Option<Vec<i32>> {
        Some(self.partition_state(node, topic, partition)?.replicas)
    }

    /// Wait until every running broker lists `topic` with `partitions`
    /// partitions, each with a leader and its ISR equal to its replicas,
    /// and they all agree on leaders and ISRs; the agreed states.
    pub fn wait_for_full_isr(
        &mut self,
        topic: &str,
        partitions: usize,
        timeout: Duration,
    ) -> BTreeMap<i32, PartitionState> {
        let running = self.running();
        let cluster = &*self;
        wait_until(
            &format!("every running broker ({running:?}) lists {topic} with full ISRs"),
            timeout,
            || {
                let mut agreed: Option<BTreeMap<i32, PartitionState>> = None;
                for node in &running {
                    let states = cluster
                        .partition_states(*node, topic)
                        .ok_or(format!("node {node} does not list {topic}"))?;
                    if states.len() != partitions {
                        return Err(format!("node {node}: {} partitions", states.len()));
                    }
                    for (index, state) in &states {
                        if !state.is_led_with_full_isr() {
                            return Err(format!("node {node}: partition {index}: {state:?}"));
                        }
                    }
                    match &agreed {
                        None => agreed = Some(states),
                        Some(first) => {
                            let differ = first.iter().any(|(index, state)| {
                                states.get(index).is_none_or(|other| {
                                    other.leader != state.leader
                                        || other.sorted_isr() != state.sorted_isr()
                                })
                            });
                            if differ {
                                return Err(format!(
                                    "brokers disagree: {first:?} and node {node}: {states:?}"
                                ));
                            }
                        }
                    }
                }
                agreed.ok_or("no broker is running".to_string())
            },
        )
    }

    fn index(node: i32) -> usize {
        usize::try_from(node - 1).expect("node ids start at 1")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Each Broker kills its process and removes its own directory
        // (keeps it when the test failed); the cluster root goes when empty.
        self.brokers.clear();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.root);
        } else {
            eprintln!(
                "cluster {} (directories under {}) when the test failed",
                self.name,
                self.root.display()
            );
        }
    }
}

/// Poll `condition` every 100 ms until it holds; panic naming `what` (and
/// the last value `condition` described) after `timeout`.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut condition: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match condition() {
            Ok(value) => return value,
            Err(state) => {
                if Instant::now() > deadline {
                    panic!("{what}: not within {timeout:?}; last: {state}");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One partition as a broker's Metadata answer describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionState {
    pub error_code: i16,
    /// -1 without a leader.
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline: Vec<i32>,
}

impl PartitionState {
    pub fn sorted_isr(&self) -> Vec<i32> {
        let mut isr = self.isr.clone();
        isr.sort_unstable();
        isr
    }

    pub fn sorted_replicas(&self) -> Vec<i32> {
        let mut replicas = self.replicas.clone();
        replicas.sort_unstable();
        replicas
    }

    /// No error, a leader among the ISR, and every replica in the ISR.
    pub fn is_led_with_full_isr(&self) -> bool {
        self.error_code == 0
            && self.leader >= 0
            && self.isr.contains(&self.leader)
            && !self.replicas.is_empty()
            && self.sorted_isr() == self.sorted_replicas()
    }
}

/// A record batch as a segment file stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBatch {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The whole batch, header included (baseOffset .. end).
    pub bytes: Vec<u8>,
}

/// The batches of one replica directory read straight from its segment
/// files, and where reading stopped.
#[derive(Debug, Default)]
pub struct ReplicaContents {
    pub batches: Vec<StoredBatch>,
    /// Per segment: the file name and why reading it ended before the end
    /// of the file (zeros: preallocated space; otherwise an invalid batch).
    pub stops: Vec<String>,
}

/// Record batch v2 header: baseOffset i64, batchLength i32,
/// partitionLeaderEpoch i32, magic i8, crc u32, attributes i16,
/// lastOffsetDelta i32, ... (61 bytes); the CRC-32C covers byte 21 to the end.
const BATCH_HEADER_SIZE_BYTES: usize = 61;
const BATCH_LENGTH_FIELD_END: usize = 12;
const BATCH_MAGIC_POSITION: usize = 16;
const BATCH_CRC_POSITION: usize = 17;
const BATCH_CRC_COVERED_START: usize = 21;
const BATCH_LAST_OFFSET_DELTA_POSITION: usize = 23;

/// Read every `<20-digit base offset>.log` segment of the partition
/// directory `directory` (docs/internals/storage-format.md), in base offset
/// order: record batches back to back, each checked (magic 2, CRC-32C);
/// a segment ends at zeros (preallocated space), at the end of the file,
/// or at the first batch that does not check out (a torn tail).
pub fn read_replica(directory: &Path) -> Result<ReplicaContents, String> {
    let mut segments: Vec<(i64, PathBuf)> = std::fs::read_dir(directory)
        .map_err(|error| format!("listing {}: {error}", directory.display()))?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().to_string();
            let base = name.strip_suffix(".log")?;
            if base.len() != 20 || !base.bytes().all(|byte| byte.is_ascii_digit()) {
                return None;
            }
            Some((base.parse().ok()?, entry.path()))
        })
        .collect();
    segments.sort();
    let mut contents = ReplicaContents::default();
    for (_, path) in segments {
        let bytes =
            std::fs::read(&path).map_err(|error| format!("reading {}: {error}", path.display()))?;
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().to_string())
            .unwrap_or_default();
        let mut position = 0;
        while position < bytes.len() {
            let rest = &bytes[position..];
            let stop = |reason: &str| format!("{name} at byte {position}: {reason}");
            if rest.len() < BATCH_HEADER_SIZE_BYTES {
                if rest.iter().any(|byte| *byte != 0) {
                    contents.stops.push(stop("a partial header"));
                }
                break;
            }
            let length = i32::from_be_bytes(rest[8..BATCH_LENGTH_FIELD_END].try_into().unwrap());
            if length == 0
                && rest[..BATCH_HEADER_SIZE_BYTES]
                    .iter()
                    .all(|byte| *byte == 0)
            {
                contents.stops.push(stop("zeros (preallocated)"));
                break;
            }
            let Ok(length) = usize::try_from(length) else {
                contents.stops.push(stop(&format!("batch length {length}")));
                break;
            };
            let size = BATCH_LENGTH_FIELD_END + length;
            if size < BATCH_HEADER_SIZE_BYTES || size > rest.len() {
                contents.stops.push(stop(&format!(
                    "batch length {length}, {} bytes left",
                    rest.len()
                )));
                break;
            }
            let batch = &rest[..size];
            if batch[BATCH_MAGIC_POSITION] != 2 {
                contents
                    .stops
                    .push(stop(&format!("magic {}", batch[BATCH_MAGIC_POSITION])));
                break;
            }
            let crc = u32::from_be_bytes(
                batch[BATCH_CRC_POSITION..BATCH_CRC_COVERED_START]
                    .try_into()
                    .unwrap(),
            );
            if crc32c::crc32c(&batch[BATCH_CRC_COVERED_START..]) != crc {
                contents.stops.push(stop("CRC-32C mismatch"));
                break;
            }
            let base_offset = i64::from_be_bytes(batch[..8].try_into().unwrap());
            let last_offset_delta = i32::from_be_bytes(
                batch[BATCH_LAST_OFFSET_DELTA_POSITION..BATCH_LAST_OFFSET_DELTA_POSITION + 4]
                    .try_into()
                    .unwrap(),
            );
            contents.batches.push(StoredBatch {
                base_offset,
                last_offset: base_offset + i64::from(last_offset_delta),
                bytes: batch.to_vec(),
            });
            position += size;
        }
    }
    Ok(contents)
}

/// Compare `topic`/`partition` on `nodes` (whose brokers are stopped)
/// below `high_watermark`: each replica must hold contiguous, valid batches
/// from its first up to the high watermark, and they must be byte for byte
/// the same on every node. Returns the number of batches compared.
pub fn compare_replicas(
    cluster: &Cluster,
    topic: &str,
    partition: i32,
    nodes: &[i32],
    high_watermark: i64,
) -> Result<usize, String> {
    let directories: Vec<(i32, PathBuf)> = nodes
        .iter()
        .map(|node| {
            (
                *node,
                cluster.data_dir(*node).join(format!("{topic}-{partition}")),
            )
        })
        .collect();
    compare_replica_directories(
        &format!("{topic}-{partition}"),
        &directories,
        high_watermark,
    )
}

/// [`compare_replicas`] on replica directories named by node id.
pub fn compare_replica_directories(
    name: &str,
    directories: &[(i32, PathBuf)],
    high_watermark: i64,
) -> Result<usize, String> {
    compare_replica_directories_from(name, directories, i64::MIN, high_watermark)
}

/// [`compare_replicas`] from the batch holding `log_start` on: replicas
/// that started over at a log start (a new replica of a partition whose
/// first records were deleted) hold nothing before it.
pub fn compare_replicas_from(
    cluster: &Cluster,
    topic: &str,
    partition: i32,
    nodes: &[i32],
    log_start: i64,
    high_watermark: i64,
) -> Result<usize, String> {
    let directories: Vec<(i32, PathBuf)> = nodes
        .iter()
        .map(|node| {
            (
                *node,
                cluster.data_dir(*node).join(format!("{topic}-{partition}")),
            )
        })
        .collect();
    compare_replica_directories_from(
        &format!("{topic}-{partition}"),
        &directories,
        log_start,
        high_watermark,
    )
}

/// [`compare_replica_directories`] of the batches ending at or after
/// `log_start`.
pub fn compare_replica_directories_from(
    name: &str,
    directories: &[(i32, PathBuf)],
    log_start: i64,
    high_watermark: i64,
) -> Result<usize, String> {
    let mut prefixes: Vec<(i32, Vec<StoredBatch>)> = Vec::new();
    for (node, directory) in directories {
        let contents = read_replica(directory).map_err(|error| format!("node {node}: {error}"))?;
        let prefix: Vec<StoredBatch> = contents
            .batches
            .into_iter()
            .filter(|batch| batch.base_offset < high_watermark && batch.last_offset >= log_start)
            .collect();
        for pair in prefix.windows(2) {
            if pair[1].base_offset != pair[0].last_offset + 1 {
                return Err(format!(
                    "node {node} {name}: batch at {} follows one ending at {} \
                     (stops: {:?})",
                    pair[1].base_offset, pair[0].last_offset, contents.stops
                ));
            }
        }
        let end = prefix.last().map_or(-1, |batch| batch.last_offset);
        if high_watermark > 0 && end < high_watermark - 1 {
            return Err(format!(
                "node {node} {name}: batches end at offset {end}, below the high \
                 watermark {high_watermark} ({} batches; stops: {:?})",
                prefix.len(),
                contents.stops
            ));
        }
        prefixes.push((*node, prefix));
    }
    let Some((first_node, first)) = prefixes.first() else {
        return Ok(0);
    };
    for (node, other) in &prefixes[1..] {
        if other.len() != first.len() {
            return Err(format!(
                "{name} below {high_watermark}: node {first_node} holds {} batches \
                 ({:?}..{:?}), node {node} {} ({:?}..{:?})",
                first.len(),
                first.first().map(|batch| batch.base_offset),
                first.last().map(|batch| batch.last_offset),
                other.len(),
                other.first().map(|batch| batch.base_offset),
                other.last().map(|batch| batch.last_offset),
            ));
        }
        if let Some((index, (mine, theirs))) = first
            .iter()
            .zip(other)
            .enumerate()
            .find(|(_, (mine, theirs))| mine != theirs)
        {
            let differing = mine
                .bytes
                .iter()
                .zip(&theirs.bytes)
                .position(|(left, right)| left != right);
            return Err(format!(
                "{name}: batch {index} differs between node {first_node} (offsets \
                 {}..={}, {} bytes) and node {node} (offsets {}..={}, {} bytes); first \
                 differing byte: {differing:?}",
                mine.base_offset,
                mine.last_offset,
                mine.bytes.len(),
                theirs.base_offset,
                theirs.last_offset,
                theirs.bytes.len(),
            ));
        }
    }
    Ok(first.len())
}
