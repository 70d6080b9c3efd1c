//! `sluice topic reassign` and `sluice topic reassignments`: what
//! kafka-reassign-partitions.sh does (AlterPartitionReassignments,
//! ListPartitionReassignments), over the Kafka protocol against any
//! broker that serves them.
//!
//! The new replica list of each chosen partition is given (`--replicas`),
//! derived from a replication factor (`--replication-factor`: the current
//! replicas, trimmed from the end but keeping the leader, or grown with
//! the brokers holding the fewest of the topic's replicas), or the
//! ongoing reassignment is cancelled (`--cancel`). The broker answers once
//! the move has started; the data is copied afterwards. `--wait` follows
//! it until every chosen partition is done, with progress on a terminal.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, ListPartitionReassignmentsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;

use super::AdminError;
use super::args::TopicReassignArgs;
use super::client::{ClientError, describe_code};
use super::group::failures;
use super::output::{Format, Progress, emit, emit_json, join, render_table};
use super::pool::{BrokerPool, ClusterLayout};

const ALTER_VERSIONS: RangeInclusive<i16> = 0..=1;
const LIST_VERSIONS: RangeInclusive<i16> = 0..=0;
const ADMIN_TIMEOUT_MS: i32 = 30_000;
/// How often `--wait` asks what is still moving.
const WAIT_POLL: Duration = Duration::from_millis(500);

/// One partition's outcome of `reassign`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReassignOutcome {
    pub partition: i32,
    /// The replica list asked for (`None`: cancelled).
    pub replicas: Option<Vec<i32>>,
    /// `None`: accepted.
    pub error: Option<String>,
}

/// One ongoing reassignment, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ongoing {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

pub fn reassign(
    pool: &mut BrokerPool,
    args: &TopicReassignArgs,
    format: Format,
) -> Result<(), AdminError> {
    let layout = pool.existing_topics(std::slice::from_ref(&args.topic), false)?;
    let topic = layout
        .topic(&args.topic)
        .ok_or_else(|| AdminError::TopicNotFound(args.topic.clone()))?;
    let count = topic.partitions.len();
    let chosen: Vec<i32> = if args.partitions.is_empty() {
        (0..count as i32).collect()
    } else {
        args.partitions.clone()
    };
    if let Some(missing) = chosen
        .iter()
        .find(|partition| usize::try_from(**partition).map_or(true, |p| p >= count))
    {
        return Err(AdminError::PartitionNotFound {
            topic: args.topic.clone(),
            partition: *missing,
            count,
        });
    }
    let mut targets: Vec<(i32, Option<Vec<i32>>)> = Vec::with_capacity(chosen.len());
    for &partition in &chosen {
        let target = match (&args.replicas, args.replication_factor, args.cancel) {
            (Some(replicas), None, false) => Some(replicas.clone()),
            (None, Some(factor), false) => {
                Some(grow_or_trim(&layout, &args.topic, partition, factor)?)
            }
            (None, None, true) => None,
            _ => {
                return Err(AdminError::Invalid(
                    "give exactly one of --replicas, --replication-factor and --cancel".into(),
                ));
            }
        };
        targets.push((partition, target));
    }
    let request = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(ADMIN_TIMEOUT_MS)
        .with_allow_replication_factor_change(true)
        .with_topics(vec![
            ReassignableTopic::default()
                .with_name(TopicName(StrBytes::from_string(args.topic.clone())))
                .with_partitions(
                    targets
                        .iter()
                        .map(|(partition, target)| {
                            ReassignablePartition::default()
                                .with_partition_index(*partition)
                                .with_replicas(
                                    target
                                        .as_ref()
                                        .map(|list| list.iter().map(|id| BrokerId(*id)).collect()),
                                )
                        })
                        .collect(),
                ),
        ]);
    let (response, _) = pool.any().call(&request, ALTER_VERSIONS)?;
    if response.error_code != 0 {
        return Err(ClientError::Kafka {
            what: "AlterPartitionReassignments".into(),
            code: response.error_code,
        }
        .into());
    }
    let answers: BTreeMap<i32, (i16, Option<String>)> = response
        .responses
        .iter()
        .filter(|topic| topic.name.0.as_str() == args.topic)
        .flat_map(|topic| topic.partitions.iter())
        .map(|partition| {
            (
                partition.partition_index,
                (
                    partition.error_code,
                    partition.error_message.as_ref().map(|m| m.to_string()),
                ),
            )
        })
        .collect();
    let outcomes: Vec<ReassignOutcome> = targets
        .into_iter()
        .map(|(partition, replicas)| {
            let error = match answers.get(&partition) {
                Some((0, _)) => None,
                Some((code, message)) => Some(match message {
                    Some(message) if !message.is_empty() => {
                        format!("{}: {message}", describe_code(*code))
                    }
                    _ => describe_code(*code),
                }),
                None => Some("the broker did not answer for this partition".into()),
            };
            ReassignOutcome {
                partition,
                replicas,
                error,
            }
        })
        .collect();
    let accepted: Vec<i32> = outcomes
        .iter()
        .filter(|outcome| outcome.error.is_none())
        .map(|outcome| outcome.partition)
        .collect();
    let wait_result = if args.wait && !accepted.is_empty() {
        wait_done(
            pool,
            &args.topic,
            &accepted,
            Duration::from_secs(args.timeout_secs),
        )
    } else {
        Ok(())
    };
    match format {
        Format::Table => {
            let done = if args.cancel {
                "cancelled"
            } else if args.wait {
                "done"
            } else {
                "started"
            };
            let rows: Vec<Vec<String>> = outcomes
                .iter()
                .map(|outcome| {
                    vec![
                        format!("{}-{}", args.topic, outcome.partition),
                        outcome
                            .replicas
                            .as_deref()
                            .map_or_else(|| "(original)".into(), join),
                        outcome.error.clone().unwrap_or_else(|| done.into()),
                    ]
                })
                .collect();
            emit(&render_table(&["PARTITION", "REPLICAS", "STATUS"], &rows))?;
        }
        Format::Json => emit_json(&outcomes)?,
    }
    wait_result?;
    failures(
        outcomes
            .iter()
            .filter(|outcome| outcome.error.is_some())
            .count(),
        outcomes.len(),
        "partitions were not reassigned",
    )
}

/// A replica list of `factor` replicas for the partition: its replicas
/// trimmed from the end (the leader kept), or grown with the brokers that
/// hold the fewest replicas of the topic (then the lowest id).
fn grow_or_trim(
    layout: &ClusterLayout,
    topic: &str,
    partition: i32,
    factor: i16,
) -> Result<Vec<i32>, AdminError> {
    let factor = usize::try_from(factor).unwrap_or(0);
    let brokers: Vec<i32> = layout.brokers.iter().map(|broker| broker.node_id).collect();
    if factor == 0 || factor > brokers.len() {
        return Err(AdminError::Invalid(format!(
            "replication factor {factor} asked, the cluster has {} brokers",
            brokers.len()
        )));
    }
    let topic = layout
        .topic(topic)
        .ok_or_else(|| AdminError::TopicNotFound(topic.to_string()))?;
    let current = topic
        .partitions
        .iter()
        .find(|p| p.partition == partition)
        .ok_or_else(|| AdminError::PartitionNotFound {
            topic: topic.name.clone(),
            partition,
            count: topic.partitions.len(),
        })?;
    let mut replicas = current.replicas.clone();
    if replicas.len() > factor {
        let leader = current.leader;
        while replicas.len() > factor {
            let last_not_leader = replicas
                .iter()
                .rposition(|replica| Some(*replica) != leader);
            match last_not_leader {
                Some(position) => {
                    replicas.remove(position);
                }
                None => break,
            }
        }
        return Ok(replicas);
    }
    let mut load: BTreeMap<i32, usize> = brokers.iter().map(|broker| (*broker, 0)).collect();
    for p in &topic.partitions {
        for replica in &p.replicas {
            *load.entry(*replica).or_default() += 1;
        }
    }
    while replicas.len() < factor {
        let Some((next, _)) = load
            .iter()
            .filter(|(broker, _)| !replicas.contains(broker))
            .min_by_key(|(broker, count)| (**count, **broker))
        else {
            break;
        };
        let next = *next;
        replicas.push(next);
        *load.entry(next).or_default() += 1;
    }
    Ok(replicas)
}

/// The ongoing reassignments of `topics` (`None`: all).
fn list_ongoing(
    pool: &mut BrokerPool,
    topics: Option<&BTreeMap<String, Vec<i32>>>,
) -> Result<Vec<Ongoing>, AdminError> {
    let request = ListPartitionReassignmentsRequest::default()
        .with_timeout_ms(ADMIN_TIMEOUT_MS)
        .with_topics(topics.map(|topics| {
            topics
                .iter()
                .map(|(name, partitions)| {
                    ListPartitionReassignmentsTopics::default()
                        .with_name(TopicName(StrBytes::from_string(name.clone())))
                        .with_partition_indexes(partitions.clone())
                })
                .collect()
        }));
    let (response, _) = pool.any().call(&request, LIST_VERSIONS)?;
    if response.error_code != 0 {
        return Err(ClientError::Kafka {
            what: "ListPartitionReassignments".into(),
            code: response.error_code,
        }
        .into());
    }
    let ids = |list: &[BrokerId]| list.iter().map(|id| id.0).collect::<Vec<i32>>();
    let mut ongoing: Vec<Ongoing> = response
        .topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().map(|partition| Ongoing {
                topic: topic.name.0.to_string(),
                partition: partition.partition_index,
                replicas: ids(&partition.replicas),
                adding: ids(&partition.adding_replicas),
                removing: ids(&partition.removing_replicas),
            })
        })
        .collect();
    ongoing.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    Ok(ongoing)
}

/// Poll until none of `partitions` of `topic` is being reassigned.
fn wait_done(
    pool: &mut BrokerPool,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> Result<(), AdminError> {
    let asked = BTreeMap::from([(topic.to_string(), partitions.to_vec())]);
    let deadline = Instant::now() + timeout;
    let total = partitions.len() as u64;
    let mut progress = Progress::new("reassigning partitions", Some(total));
    let mut done = 0;
    loop {
        let moving = list_ongoing(pool, Some(&asked))?.len() as u64;
        let now_done = total.saturating_sub(moving);
        if now_done > done {
            progress.advance(now_done - done);
            done = now_done;
        }
        if moving == 0 {
            progress.finish();
            return Ok(());
        }
        if Instant::now() >= deadline {
            progress.finish();
            return Err(AdminError::Invalid(format!(
                "{moving} partitions of {topic:?} were still being reassigned after {} s \
                 (the move goes on; see `sluice topic reassignments`)",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(WAIT_POLL);
    }
}

/// `sluice topic reassignments [TOPIC...]`.
pub fn list(pool: &mut BrokerPool, topics: &[String], format: Format) -> Result<(), AdminError> {
    let asked = if topics.is_empty() {
        None
    } else {
        let layout = pool.existing_topics(topics, false)?;
        Some(
            topics
                .iter()
                .map(|name| {
                    let count = layout.topic(name).map_or(0, |topic| topic.partitions.len());
                    (name.clone(), (0..count as i32).collect())
                })
                .collect::<BTreeMap<String, Vec<i32>>>(),
        )
    };
    let ongoing = list_ongoing(pool, asked.as_ref())?;
    match format {
        Format::Table => {
            let rows: Vec<Vec<String>> = ongoing
                .iter()
                .map(|o| {
                    vec![
                        format!("{}-{}", o.topic, o.partition),
                        join(&o.replicas),
                        join(&o.adding),
                        join(&o.removing),
                    ]
                })
                .collect();
            emit(&render_table(
                &["PARTITION", "REPLICAS", "ADDING", "REMOVING"],
                &rows,
            ))
        }
        Format::Json => emit_json(&ongoing),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::admin::pool::{BrokerAddress, PartitionLayout, TopicLayout};

    fn layout(partitions: &[(Option<i32>, &[i32])]) -> ClusterLayout {
        ClusterLayout {
            cluster_id: None,
            controller_id: None,
            brokers: (1..=4)
                .map(|node_id| BrokerAddress {
                    node_id,
                    host: "127.0.0.1".into(),
                    port: 9092,
                    rack: None,
                })
                .collect(),
            topics: vec![TopicLayout {
                name: "t".into(),
                topic_id: None,
                internal: false,
                error_code: 0,
                partitions: partitions
                    .iter()
                    .enumerate()
                    .map(|(index, (leader, replicas))| PartitionLayout {
                        partition: index as i32,
                        leader: *leader,
                        leader_epoch: 0,
                        replicas: replicas.to_vec(),
                        isr: replicas.to_vec(),
                        offline_replicas: vec![],
                        error: None,
                    })
                    .collect(),
            }],
        }
    }

    #[test]
    fn a_replication_factor_grows_onto_the_least_loaded_brokers_and_trims_keeping_the_leader() {
        let layout = layout(&[(Some(1), &[1]), (Some(2), &[2, 1]), (Some(3), &[3, 1, 2])]);
        // Loads: 1 -> 3, 2 -> 2, 3 -> 1, 4 -> 0.
        assert_eq!(grow_or_trim(&layout, "t", 0, 3).unwrap(), vec![1, 4, 3]);
        assert_eq!(grow_or_trim(&layout, "t", 1, 2).unwrap(), vec![2, 1]);
        assert_eq!(grow_or_trim(&layout, "t", 2, 1).unwrap(), vec![3]);
        let led_by_last = super::tests::layout(&[(Some(2), &[1, 3, 2])]);
        assert_eq!(grow_or_trim(&led_by_last, "t", 0, 1).unwrap(), vec![2]);
        assert!(grow_or_trim(&layout, "t", 0, 5).is_err());
    }
}
