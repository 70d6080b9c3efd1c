//! `sluice cluster info|health|status`: the cluster as Metadata and
//! DescribeCluster describe it.
//!
//! Info: cluster id, controller, brokers. Health: every partition of every
//! topic has a leader (and the cluster a controller); under-replicated
//! partitions (ISR smaller than the replica set) are shown but do not make
//! the cluster unhealthy. An unhealthy cluster exits 1 after the report,
//! so scripts can `sluice cluster health && ...`.
//!
//! Status: every broker the cluster knows, with the partitions it leads and
//! the replicas it holds (Metadata of every topic, internal ones included),
//! and the partitions without a leader (exit 1 when there is any). The
//! broker list comes from DescribeCluster (v2 asks for fenced brokers too,
//! flagged), else from Metadata; a broker named only in a replica set
//! (fenced, and the answer lists live brokers only) is shown as `unlisted`.
//! Only standard Kafka APIs, so it works against any Kafka broker.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::process::ExitCode;

use kafka_protocol::messages::{ApiKey, DescribeClusterRequest};
use serde::Serialize;
use serde_json::json;

use super::AdminError;
use super::args::{ClusterArgs, ClusterCommand};
use super::client::{ClientError, check_code};
use super::output::{Format, emit, emit_json, optional, render_table};
use super::pool::{BrokerAddress, BrokerPool, ClusterLayout};
use super::profile;

/// DescribeCluster versions `status` speaks: v1 names the endpoint type
/// (Kafka's KRaft brokers answer it), v2 can list fenced brokers
/// (KIP-1073). A broker without them is described from Metadata alone.
const DESCRIBE_CLUSTER_VERSIONS: RangeInclusive<i16> = 1..=2;
/// DescribeCluster v2's first version: `include_fenced_brokers`.
const DESCRIBE_CLUSTER_FENCED_VERSION: i16 = 2;

/// Run `sluice cluster ...`.
pub fn run(args: ClusterArgs) -> ExitCode {
    let format = args.common.format;
    let result = profile::target(&args.common).and_then(|bootstrap| {
        let mut pool = BrokerPool::connect(&bootstrap)?;
        match args.command {
            ClusterCommand::Info => {
                let layout = pool.metadata(Some(&[]), false)?;
                match format {
                    Format::Table => emit(&render_info(&layout)),
                    Format::Json => emit_json(&json!({
                        "cluster_id": layout.cluster_id,
                        "controller_id": layout.controller_id,
                        "brokers": layout.brokers,
                    })),
                }
            }
            ClusterCommand::Health => {
                let health = health(&pool.metadata(None, false)?);
                match format {
                    Format::Table => emit(&render_health(&health))?,
                    Format::Json => emit_json(&health)?,
                }
                if health.healthy {
                    Ok(())
                } else {
                    Err(AdminError::Failed("the cluster is not healthy".to_string()))
                }
            }
            ClusterCommand::Status => {
                let layout = pool.metadata(None, false)?;
                let described = describe_cluster(&mut pool)?;
                let status = status(&layout, described);
                match format {
                    Format::Table => emit(&render_status(&status))?,
                    Format::Json => emit_json(&status)?,
                }
                match status.leaderless_partitions.len() {
                    0 => Ok(()),
                    count => Err(AdminError::Failed(format!(
                        "{count} partition(s) without a leader"
                    ))),
                }
            }
        }
    });
    super::exit("cluster", result)
}

/// The `info` output.
pub fn render_info(layout: &ClusterLayout) -> String {
    let mut text = format!(
        "Cluster ID: {}\nController: {}\n\n",
        optional(layout.cluster_id.as_ref()),
        optional(layout.controller_id)
    );
    let rows: Vec<Vec<String>> = layout
        .brokers
        .iter()
        .map(|broker| {
            let controller = if Some(broker.node_id) == layout.controller_id {
                "*"
            } else {
                ""
            };
            vec![
                format!("{}{controller}", broker.node_id),
                broker.host.clone(),
                broker.port.to_string(),
                optional(broker.rack.as_ref()),
            ]
        })
        .collect();
    text.push_str(&render_table(&["ID", "HOST", "PORT", "RACK"], &rows));
    text
}

/// What `health` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    pub healthy: bool,
    pub controller_id: Option<i32>,
    pub broker_count: usize,
    pub topic_count: usize,
    pub partition_count: usize,
    /// `topic-partition` of every partition without a leader.
    pub leaderless_partitions: Vec<String>,
    /// `topic-partition` of every partition whose ISR is smaller than its
    /// replica set.
    pub under_replicated_partitions: Vec<String>,
}

/// Judge `layout` (Metadata of every topic).
pub fn health(layout: &ClusterLayout) -> Health {
    let mut leaderless = Vec::new();
    let mut under_replicated = Vec::new();
    let mut partition_count = 0;
    for topic in &layout.topics {
        for partition in &topic.partitions {
            partition_count += 1;
            let name = format!("{}-{}", topic.name, partition.partition);
            if partition.leader.is_none() {
                leaderless.push(name.clone());
            }
            if partition.isr.len() < partition.replicas.len() {
                under_replicated.push(name);
            }
        }
    }
    Health {
        healthy: leaderless.is_empty() && layout.controller_id.is_some(),
        controller_id: layout.controller_id,
        broker_count: layout.brokers.len(),
        topic_count: layout.topics.len(),
        partition_count,
        leaderless_partitions: leaderless,
        under_replicated_partitions: under_replicated,
    }
}

/// The `health` output.
pub fn render_health(health: &Health) -> String {
    let list = |names: &[String]| {
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    };
    format!(
        "Healthy: {}\nController: {}\nBrokers: {}\nTopics: {}\nPartitions: {}\n\
         Partitions without a leader: {}\nUnder-replicated partitions: {}\n",
        if health.healthy { "yes" } else { "no" },
        optional(health.controller_id),
        health.broker_count,
        health.topic_count,
        health.partition_count,
        list(&health.leaderless_partitions),
        list(&health.under_replicated_partitions),
    )
}

/// Where `status` learnt the broker list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BrokerSource {
    /// DescribeCluster v2 with `include_fenced_brokers`: fenced brokers
    /// listed and flagged.
    #[serde(rename = "DescribeCluster v2")]
    DescribeClusterWithFenced,
    /// DescribeCluster v1: live brokers only.
    #[serde(rename = "DescribeCluster v1")]
    DescribeCluster,
    /// Metadata: live brokers only (the broker has no DescribeCluster v1+).
    Metadata,
}

/// A DescribeCluster answer, reduced to what `status` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedCluster {
    pub source: BrokerSource,
    pub cluster_id: Option<String>,
    pub controller_id: Option<i32>,
    /// Each broker with whether it is fenced.
    pub brokers: Vec<(BrokerAddress, bool)>,
}

/// DescribeCluster from the bootstrap broker; `None` when it does not
/// serve v1 or later (then Metadata's broker list is all there is).
pub fn describe_cluster(pool: &mut BrokerPool) -> Result<Option<DescribedCluster>, AdminError> {
    let connection = pool.any();
    let version = match connection.negotiate(ApiKey::DescribeCluster, DESCRIBE_CLUSTER_VERSIONS) {
        Ok(version) => version,
        Err(ClientError::UnsupportedApi { .. } | ClientError::UnsupportedVersion { .. }) => {
            return Ok(None);
        }
        Err(error) => return Err(error.into()),
    };
    let with_fenced = version >= DESCRIBE_CLUSTER_FENCED_VERSION;
    let request = DescribeClusterRequest::default().with_include_fenced_brokers(with_fenced);
    let response = connection.send(&request, version)?;
    check_code(response.error_code, || "DescribeCluster".to_string())?;
    Ok(Some(DescribedCluster {
        source: if with_fenced {
            BrokerSource::DescribeClusterWithFenced
        } else {
            BrokerSource::DescribeCluster
        },
        cluster_id: Some(response.cluster_id.to_string()).filter(|id| !id.is_empty()),
        controller_id: (response.controller_id.0 >= 0).then_some(response.controller_id.0),
        brokers: response
            .brokers
            .iter()
            .map(|broker| {
                let address = BrokerAddress {
                    node_id: broker.broker_id.0,
                    host: broker.host.to_string(),
                    port: broker.port,
                    rack: broker.rack.as_ref().map(|rack| rack.to_string()),
                };
                (address, with_fenced && broker.is_fenced)
            })
            .collect(),
    }))
}

/// A broker as `status` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerState {
    /// Listed and not fenced.
    Unfenced,
    /// Listed as fenced (DescribeCluster v2).
    Fenced,
    /// Named in a replica set but not listed: fenced or gone, as far as a
    /// broker that lists live brokers only can tell.
    Unlisted,
}

/// One broker of `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokerStatus {
    pub node_id: i32,
    /// `host:port`; `None` for an unlisted broker.
    pub address: Option<String>,
    pub rack: Option<String>,
    /// Whether it is the active controller.
    pub controller: bool,
    pub fenced: bool,
    pub state: BrokerState,
    /// Partitions it leads.
    pub leader_count: usize,
    /// Partitions with it in their replica set (leader included).
    pub replica_count: usize,
}

/// What `status` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub cluster_id: Option<String>,
    /// `None` when the cluster has no active controller.
    pub controller_id: Option<i32>,
    pub broker_source: BrokerSource,
    /// Sorted by node id.
    pub brokers: Vec<BrokerStatus>,
    pub topic_count: usize,
    pub partition_count: usize,
    /// `topic-partition` of every partition without a leader, sorted.
    pub leaderless_partitions: Vec<String>,
}

/// Combine Metadata of every topic (`layout`) with DescribeCluster
/// (`described`, `None` when the broker has no DescribeCluster v1+).
pub fn status(layout: &ClusterLayout, described: Option<DescribedCluster>) -> Status {
    let described = described.unwrap_or_else(|| DescribedCluster {
        source: BrokerSource::Metadata,
        cluster_id: None,
        controller_id: None,
        brokers: layout
            .brokers
            .iter()
            .map(|broker| (broker.clone(), false))
            .collect(),
    });
    let controller_id = described.controller_id.or(layout.controller_id);
    let mut brokers: BTreeMap<i32, BrokerStatus> = described
        .brokers
        .into_iter()
        .map(|(broker, fenced)| {
            let status = BrokerStatus {
                node_id: broker.node_id,
                address: Some(broker.address()),
                rack: broker.rack,
                controller: Some(broker.node_id) == controller_id,
                fenced,
                state: if fenced {
                    BrokerState::Fenced
                } else {
                    BrokerState::Unfenced
                },
                leader_count: 0,
                replica_count: 0,
            };
            (broker.node_id, status)
        })
        .collect();
    let mut leaderless = Vec::new();
    let mut partition_count = 0;
    for topic in &layout.topics {
        for partition in &topic.partitions {
            partition_count += 1;
            match partition.leader {
                Some(leader) => broker_entry(&mut brokers, leader, controller_id).leader_count += 1,
                None => leaderless.push(format!("{}-{}", topic.name, partition.partition)),
            }
            for replica in &partition.replicas {
                broker_entry(&mut brokers, *replica, controller_id).replica_count += 1;
            }
        }
    }
    Status {
        cluster_id: described.cluster_id.or_else(|| layout.cluster_id.clone()),
        controller_id,
        broker_source: described.source,
        brokers: brokers.into_values().collect(),
        topic_count: layout.topics.len(),
        partition_count,
        leaderless_partitions: leaderless,
    }
}

/// `node_id`'s entry; a broker a partition names but no answer listed is
/// added as unlisted.
fn broker_entry(
    brokers: &mut BTreeMap<i32, BrokerStatus>,
    node_id: i32,
    controller_id: Option<i32>,
) -> &mut BrokerStatus {
    brokers.entry(node_id).or_insert_with(|| BrokerStatus {
        node_id,
        address: None,
        rack: None,
        controller: Some(node_id) == controller_id,
        fenced: false,
        state: BrokerState::Unlisted,
        leader_count: 0,
        replica_count: 0,
    })
}

/// The `status` output.
pub fn render_status(status: &Status) -> String {
    let fenced = status
        .brokers
        .iter()
        .filter(|broker| broker.state != BrokerState::Unfenced)
        .count();
    let mut text = format!(
        "Cluster ID: {}\nController: {}\nBrokers: {} ({fenced} fenced or unlisted)\n\
         Topics: {}\nPartitions: {} ({} without a leader)\n\n",
        optional(status.cluster_id.as_ref()),
        optional(status.controller_id),
        status.brokers.len(),
        status.topic_count,
        status.partition_count,
        status.leaderless_partitions.len(),
    );
    let rows: Vec<Vec<String>> = status
        .brokers
        .iter()
        .map(|broker| {
            vec![
                broker.node_id.to_string(),
                optional(broker.address.as_ref()),
                optional(broker.rack.as_ref()),
                if broker.controller { "yes" } else { "no" }.to_string(),
                match broker.state {
                    BrokerState::Unfenced => "unfenced",
                    BrokerState::Fenced => "fenced",
                    BrokerState::Unlisted => "unlisted",
                }
                .to_string(),
                broker.leader_count.to_string(),
                broker.replica_count.to_string(),
            ]
        })
        .collect();
    text.push_str(&render_table(
        &[
            "ID",
            "ADDRESS",
            "RACK",
            "CONTROLLER",
            "STATE",
            "LEADERS",
            "REPLICAS",
        ],
        &rows,
    ));
    if !status.leaderless_partitions.is_empty() {
        text.push_str(&format!(
            "\nPartitions without a leader: {}\n",
            status.leaderless_partitions.join(", ")
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::pool::{BrokerAddress, PartitionLayout, TopicLayout};

    fn layout(leaders: &[Option<i32>], isr_sizes: &[usize]) -> ClusterLayout {
        ClusterLayout {
            cluster_id: Some("c1".into()),
            controller_id: Some(1),
            brokers: vec![BrokerAddress {
                node_id: 1,
                host: "h".into(),
                port: 9092,
                rack: None,
            }],
            topics: vec![TopicLayout {
                name: "t".into(),
                topic_id: None,
                internal: false,
                error_code: 0,
                partitions: leaders
                    .iter()
                    .zip(isr_sizes)
                    .enumerate()
                    .map(|(index, (leader, isr_size))| PartitionLayout {
                        partition: index as i32,
                        leader: *leader,
                        leader_epoch: 0,
                        replicas: vec![1, 2],
                        isr: vec![1, 2][..*isr_size].to_vec(),
                        offline_replicas: vec![],
                        error: None,
                    })
                    .collect(),
            }],
        }
    }

    #[test]
    fn a_cluster_is_healthy_when_every_partition_has_a_leader() {
        let healthy = health(&layout(&[Some(1), Some(2)], &[2, 1]));
        assert!(healthy.healthy);
        assert_eq!(healthy.under_replicated_partitions, vec!["t-1".to_string()]);
        let unhealthy = health(&layout(&[Some(1), None], &[2, 2]));
        assert!(!unhealthy.healthy);
        assert_eq!(unhealthy.leaderless_partitions, vec!["t-1".to_string()]);
        assert!(render_health(&unhealthy).starts_with("Healthy: no\n"));
    }

    #[test]
    fn status_counts_leaders_and_replicas_and_shows_unlisted_brokers() {
        let layout = layout(&[Some(1), None, Some(1)], &[2, 2, 1]);
        let status = status(&layout, None);
        assert_eq!(status.broker_source, BrokerSource::Metadata);
        assert_eq!(status.partition_count, 3);
        assert_eq!(status.leaderless_partitions, vec!["t-1".to_string()]);
        let counts: Vec<(i32, BrokerState, bool, usize, usize)> = status
            .brokers
            .iter()
            .map(|broker| {
                (
                    broker.node_id,
                    broker.state,
                    broker.controller,
                    broker.leader_count,
                    broker.replica_count,
                )
            })
            .collect();
        assert_eq!(
            counts,
            vec![
                (1, BrokerState::Unfenced, true, 2, 3),
                (2, BrokerState::Unlisted, false, 0, 3),
            ]
        );
        let text = render_status(&status);
        assert!(
            text.starts_with("Cluster ID: c1\nController: 1\n"),
            "{text}"
        );
        assert!(text.contains("1   h:9092   -     yes"), "{text}");
        assert!(
            text.ends_with("Partitions without a leader: t-1\n"),
            "{text}"
        );
    }

    #[test]
    fn status_takes_fenced_brokers_and_the_controller_from_describe_cluster() {
        let broker = |node_id: i32| BrokerAddress {
            node_id,
            host: "h".into(),
            port: 9090 + node_id,
            rack: Some("r".into()),
        };
        let described = DescribedCluster {
            source: BrokerSource::DescribeClusterWithFenced,
            cluster_id: Some("c2".into()),
            controller_id: Some(2),
            brokers: vec![(broker(2), false), (broker(1), true)],
        };
        let status = status(&layout(&[Some(2)], &[1]), Some(described));
        assert_eq!(status.cluster_id.as_deref(), Some("c2"));
        assert_eq!(status.controller_id, Some(2));
        assert!(status.leaderless_partitions.is_empty());
        assert_eq!(status.brokers[0].state, BrokerState::Fenced);
        assert!(status.brokers[0].fenced && !status.brokers[0].controller);
        assert_eq!(status.brokers[1].address.as_deref(), Some("h:9092"));
        assert!(status.brokers[1].controller);
        assert_eq!(status.brokers[1].leader_count, 1);
        assert!(!render_status(&status).contains("without a leader:"));
    }

    #[test]
    fn info_marks_the_controller() {
        let text = render_info(&layout(&[], &[]));
        assert!(
            text.starts_with("Cluster ID: c1\nController: 1\n"),
            "{text}"
        );
        assert!(text.contains("1*  h     9092  -"), "{text}");
    }
}
