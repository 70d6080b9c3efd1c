//! `sluice cluster info|health`: the cluster as Metadata describes it.
//!
//! Info: cluster id, controller, brokers. Health: every partition of every
//! topic has a leader (and the cluster a controller); under-replicated
//! partitions (ISR smaller than the replica set) are shown but do not make
//! the cluster unhealthy. An unhealthy cluster exits 1 after the report,
//! so scripts can `sluice cluster health && ...`.

use std::process::ExitCode;

use serde::Serialize;
use serde_json::json;

use super::AdminError;
use super::args::{ClusterArgs, ClusterCommand};
use super::output::{Format, emit, emit_json, optional, render_table};
use super::pool::{BrokerPool, ClusterLayout};
use super::profile;

/// Run `sluice cluster ...`.
pub fn run(args: ClusterArgs) -> ExitCode {
    let format = args.common.format;
    let result = profile::bootstrap(&args.common).and_then(|bootstrap| {
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
    fn info_marks_the_controller() {
        let text = render_info(&layout(&[], &[]));
        assert!(
            text.starts_with("Cluster ID: c1\nController: 1\n"),
            "{text}"
        );
        assert!(text.contains("1*  h     9092  -"), "{text}");
    }
}
