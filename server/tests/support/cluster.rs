//! A cluster of real `sluice` processes on loopback for the cluster tests:
//! node ids `1..=N`, each broker with its own Kafka and controller ports
//! (picked free, never fixed, so tests run in parallel) and its own data
//! directory; the first `min(N, 3)` nodes are the controller's voters and
//! every broker gets the same `--controller-voters`.
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
        let voter_count = nodes.min(VOTERS_MAX);
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
