//! The read-only web console on the admin HTTP port (issue 15,
//! docs/operations/console.md): a page of hand-written HTML, CSS and JS
//! embedded in the binary, and the JSON endpoints it polls.
//!
//! - `GET /` and `GET /console/`: the page; `/console/console.js`,
//!   `/console/console.css`: its assets (no build step, no third-party
//!   code).
//! - `GET /v1/cluster`: cluster id, controller, brokers and their state.
//! - `GET /v1/topics`: topics with their configs and partitions (leader,
//!   replicas, ISR; offsets and sizes of the replicas this broker holds).
//! - `GET /v1/groups`: consumer groups, their members and committed
//!   offsets with the lag: on a single broker from its own shards; in a
//!   cluster every group, asked of its coordinator over the Kafka protocol
//!   (`cluster_groups_json`), this broker's own if that fails.
//! - `GET /v1/counters`: totals of the data path's counters (produce and
//!   fetch bytes, Produce and Fetch latency histograms) for the charts.
//!
//! Everything here runs on the admin server's own threads, never a shard's.
//! What only a shard may read (its partitions' offsets, its groups) is
//! gathered the way `/metrics` gathers: one short job per shard through
//! `Shards::call`, with a deadline, so a shard is never locked or blocked;
//! a shard that does not answer in time is left out and counted in
//! `shards_missing`. The builders of the JSON documents are pure functions
//! of those snapshots. Strings are never put into HTML here: the page
//! escapes every value it inserts.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::ConsumerProtocolAssignment;
use kafka_protocol::protocol::Decodable;
use serde_json::{Value, json};

use crate::metadata::ClusterMetadata;
use crate::metrics::{CounterTotals, LATENCY_BOUNDS_SECONDS, ShardSnapshot};
use crate::shard::{ShardId, Shards};

const INDEX_HTML: &str = include_str!("assets/index.html");
const CONSOLE_JS: &str = include_str!("assets/console.js");
const CONSOLE_CSS: &str = include_str!("assets/console.css");

/// The JSON endpoints the page polls.
pub const JSON_PATHS: [&str; 4] = ["/v1/cluster", "/v1/topics", "/v1/groups", "/v1/counters"];

/// Headers of every console answer: nothing is cached (the data is live),
/// and the page may load only its own scripts and styles, so a value that
/// escaped escaping still could not run code.
pub const HEADERS: [(&str, &str); 3] = [
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
];

/// The embedded asset served at `path`: its content type and bytes.
pub fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    match path {
        "/" | "/console" | "/console/" | "/console/index.html" => {
            Some(("text/html; charset=utf-8", INDEX_HTML.as_bytes()))
        }
        "/console/console.js" => Some(("text/javascript; charset=utf-8", CONSOLE_JS.as_bytes())),
        "/console/console.css" => Some(("text/css; charset=utf-8", CONSOLE_CSS.as_bytes())),
        _ => None,
    }
}

/// One group at a gather (taken on its coordinating shard).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupSnapshot {
    pub id: String,
    pub state: &'static str,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub generation: i32,
    pub leader: Option<String>,
    /// The `__consumer_offsets` partition holding the group.
    pub offsets_partition: i32,
    pub members: Vec<MemberSnapshot>,
    /// Committed offsets by (topic, partition).
    pub offsets: BTreeMap<(String, i32), i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberSnapshot {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Assigned partitions by topic, when the assignment is the consumer
    /// protocol's and could be decoded.
    pub assignment: Vec<(String, Vec<i32>)>,
}

/// The partitions of a consumer-protocol assignment (empty if none or
/// undecodable).
fn consumer_assignment(assignment: &[u8]) -> Vec<(String, Vec<i32>)> {
    if assignment.len() < 2 {
        return Vec::new();
    }
    let version = i16::from_be_bytes([assignment[0], assignment[1]]);
    let mut body = Bytes::copy_from_slice(&assignment[2..]);
    // Newer versions only add fields at the end: read what we know.
    match ConsumerProtocolAssignment::decode(&mut body, version.clamp(0, 3)) {
        Ok(decoded) => decoded
            .assigned_partitions
            .iter()
            .map(|topic| (topic.topic.0.to_string(), topic.partitions.clone()))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Every group coordinated by this broker (their `__consumer_offsets`
/// partition in `coordinated`), one job per shard, each within
/// `deadline`; shards that do not answer in time are counted as missing.
pub fn gather_groups(
    shards: &Shards,
    coordinated: BTreeSet<i32>,
    deadline: Duration,
) -> (Vec<GroupSnapshot>, usize) {
    let count = shards.count();
    let coordinated = Arc::new(coordinated);
    let calls = (0..count).map(|index| {
        let coordinated = Arc::clone(&coordinated);
        shards.call(ShardId(index), move |shard| async move {
            let groups = shard.groups.groups.borrow();
            groups
                .values()
                .filter(|group| coordinated.contains(&group.partition))
                .map(|group| GroupSnapshot {
                    id: group.id.clone(),
                    state: group.state.name(),
                    protocol_type: group.protocol_type.clone(),
                    protocol: group.protocol.clone(),
                    generation: group.generation,
                    leader: group.leader.clone(),
                    offsets_partition: group.partition,
                    members: group
                        .members
                        .values()
                        .map(|member| MemberSnapshot {
                            id: member.id.clone(),
                            instance_id: member.instance_id.clone(),
                            client_id: member.client_id.clone(),
                            client_host: member.client_host.clone(),
                            assignment: consumer_assignment(&member.assignment),
                        })
                        .collect(),
                    offsets: group
                        .offsets
                        .iter()
                        .map(|(key, committed)| (key.clone(), committed.offset))
                        .collect(),
                })
                .collect::<Vec<_>>()
        })
    });
    let all = futures_util::future::join_all(calls);
    let results = crate::metrics::block_on_timeout(all, deadline).unwrap_or_default();
    let mut groups = Vec::new();
    let mut answered = 0;
    for result in results.into_iter().flatten() {
        answered += 1;
        groups.extend(result);
    }
    groups.sort_by(|left, right| left.id.cmp(&right.id));
    (groups, count - answered)
}

/// What the admin server knows of this broker besides the metadata view.
#[derive(Clone, Debug)]
pub struct BrokerStatus {
    pub node_id: i32,
    /// Ready, or why not (as `/v1/status/ready`).
    pub readiness: Result<(), &'static str>,
    /// The active controller as this node's controller service knows it.
    pub active_controller: Option<i32>,
    pub metadata_offset: i64,
}

/// `/v1/cluster`: the cluster as this broker's view has it (`view` is
/// `None` until the shards serve).
pub fn cluster_json(status: &BrokerStatus, view: Option<&ClusterMetadata>) -> Value {
    let brokers: Vec<Value> = view
        .map(|view| {
            view.brokers
                .values()
                .map(|broker| {
                    let state = if broker.in_controlled_shutdown {
                        "shutting down"
                    } else if broker.fenced {
                        "fenced"
                    } else {
                        "live"
                    };
                    let listeners: Vec<Value> = view
                        .listener_endpoints
                        .get(&broker.id)
                        .map(|endpoints| {
                            endpoints
                                .iter()
                                .map(|(name, host, port)| {
                                    json!({"name": name, "host": host, "port": port})
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    let leads = view
                        .topics
                        .values()
                        .flat_map(|topic| &topic.partitions)
                        .filter(|partition| partition.leader == Some(broker.id))
                        .count();
                    json!({
                        "id": broker.id,
                        "host": broker.host,
                        "port": broker.port,
                        "address": format!("{}:{}", broker.host, broker.port),
                        "rack": broker.rack,
                        "state": state,
                        "fenced": broker.fenced,
                        "listeners": listeners,
                        "partitions_led": leads,
                        "this_broker": broker.id == status.node_id,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "node_id": status.node_id,
        "version": env!("CARGO_PKG_VERSION"),
        "ready": status.readiness.is_ok(),
        "not_ready_reason": status.readiness.err(),
        "cluster_id": view.map(|view| view.cluster_id.clone()),
        "controller_id": view
            .and_then(|view| view.controller_id)
            .or(status.active_controller),
        "metadata_offset": status.metadata_offset,
        "topic_count": view.map_or(0, |view| view.topics.len()),
        "partition_count": view.map_or(0, |view| {
            view.topics.values().map(|topic| topic.partitions.len()).sum::<usize>()
        }),
        "brokers": brokers,
    })
}

/// The local replicas in `shards` by (topic, partition).
fn local_partitions(
    shards: &[ShardSnapshot],
) -> BTreeMap<(&str, i32), &crate::metrics::PartitionSnapshot> {
    shards
        .iter()
        .flat_map(|shard| &shard.partitions)
        .map(|partition| ((&*partition.topic, partition.partition), partition))
        .collect()
}

/// `/v1/topics`: every topic of the view with its configs and partitions;
/// offsets and sizes for the replicas this broker holds (`null` for the
/// others, and for replicas of shards that did not answer).
pub fn topics_json(
    view: &ClusterMetadata,
    shards: &[ShardSnapshot],
    shards_missing: usize,
) -> Value {
    let local = local_partitions(shards);
    let topics: Vec<Value> = view
        .topics
        .values()
        .map(|topic| {
            let partitions: Vec<Value> = topic
                .partitions
                .iter()
                .zip(0_i32..)
                .map(|(partition, index)| {
                    let replica = local.get(&(topic.name.as_str(), index));
                    json!({
                        "partition": index,
                        "leader": partition.leader,
                        "leader_epoch": partition.leader_epoch,
                        "replicas": partition.replicas,
                        "isr": partition.isr,
                        "under_replicated": partition.isr.len() < partition.replicas.len(),
                        "local": replica.is_some(),
                        "log_start_offset": replica.map(|replica| replica.log_start_offset),
                        "log_end_offset": replica.map(|replica| replica.log_end_offset),
                        "high_watermark": replica.map(|replica| replica.high_watermark),
                        "size_bytes": replica.map(|replica| replica.size_bytes),
                    })
                })
                .collect();
            let sizes: Vec<u64> = (0_i32..)
                .take(topic.partitions.len())
                .filter_map(|index| local.get(&(topic.name.as_str(), index)))
                .map(|replica| replica.size_bytes)
                .collect();
            json!({
                "name": topic.name,
                "id": topic.id.to_string(),
                "internal": topic.name.starts_with("__"),
                "configs": topic.configs,
                "partitions": partitions,
                "local_size_bytes": sizes.iter().sum::<u64>(),
            })
        })
        .collect();
    json!({
        "node_id": view.node_id,
        "shards_missing": shards_missing,
        "topics": topics,
    })
}

/// `/v1/groups`: the groups this broker coordinates; per committed
/// partition the end offset (the high watermark: what a consumer can read)
/// and the lag, where this broker holds a replica of the partition (`null`
/// elsewhere).
pub fn groups_json(
    node_id: i32,
    groups: &[GroupSnapshot],
    shards: &[ShardSnapshot],
    shards_missing: usize,
) -> Value {
    let local = local_partitions(shards);
    let groups: Vec<Value> = groups
        .iter()
        .map(|group| {
            let mut total_lag: Option<i64> = Some(0);
            let offsets: Vec<Value> = group
                .offsets
                .iter()
                .map(|((topic, partition), committed)| {
                    let end = local
                        .get(&(topic.as_str(), *partition))
                        .map(|replica| replica.high_watermark);
                    let lag = end.map(|end| (end - committed).max(0));
                    total_lag = match (total_lag, lag) {
                        (Some(total), Some(lag)) => Some(total + lag),
                        _ => None,
                    };
                    json!({
                        "topic": topic,
                        "partition": partition,
                        "committed_offset": committed,
                        "end_offset": end,
                        "lag": lag,
                    })
                })
                .collect();
            let members: Vec<Value> = group
                .members
                .iter()
                .map(|member| {
                    let assignment: Vec<Value> = member
                        .assignment
                        .iter()
                        .map(
                            |(topic, partitions)| json!({"topic": topic, "partitions": partitions}),
                        )
                        .collect();
                    json!({
                        "member_id": member.id,
                        "instance_id": member.instance_id,
                        "client_id": member.client_id,
                        "client_host": member.client_host,
                        "leader": group.leader.as_deref() == Some(member.id.as_str()),
                        "assignment": assignment,
                    })
                })
                .collect();
            json!({
                "group_id": group.id,
                "state": group.state,
                "protocol_type": group.protocol_type,
                "protocol": group.protocol,
                "generation": group.generation,
                "coordinator": node_id,
                "offsets_partition": group.offsets_partition,
                "members": members,
                "offsets": offsets,
                "total_lag": total_lag,
            })
        })
        .collect();
    json!({
        "node_id": node_id,
        "coordinated_here_only": true,
        "shards_missing": shards_missing,
        "groups": groups,
    })
}

/// Groups described per cluster at most (each costs a few requests).
const CLUSTER_GROUPS_MAX: usize = 100;

/// `/v1/groups` of a cluster: every group (ListGroups on every broker),
/// each described by its coordinator with its committed offsets and the
/// lag from the partitions' leaders (`admin::group`, what `sluice group
/// describe` shows), the first [`CLUSTER_GROUPS_MAX`] of them. Blocking;
/// the admin server's thread.
pub fn cluster_groups_json(
    node_id: i32,
    target: &crate::admin::profile::Target,
) -> Result<Value, crate::admin::AdminError> {
    let listed = crate::admin::group::list_groups(target)?;
    let truncated = listed.len() > CLUSTER_GROUPS_MAX;
    let mut groups = Vec::new();
    for listing in listed.iter().take(CLUSTER_GROUPS_MAX) {
        let group = crate::admin::group::describe_group(target, &listing.group_id)?;
        let mut total_lag = Some(0_i64);
        let offsets: Vec<Value> = group
            .partitions
            .iter()
            .filter_map(|row| {
                let committed = row.committed?;
                let lag = row.lag().map(|lag| lag.max(0));
                total_lag = total_lag.zip(lag).map(|(total, lag)| total + lag);
                Some(json!({
                    "topic": row.topic,
                    "partition": row.partition,
                    "committed_offset": committed,
                    "end_offset": row.log_end,
                    "lag": lag,
                }))
            })
            .collect();
        let members: Vec<Value> = group
            .members
            .iter()
            .map(|member| {
                let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
                for (topic, partition) in &member.assignment {
                    by_topic.entry(topic).or_default().push(*partition);
                }
                let assignment: Vec<Value> = by_topic
                    .into_iter()
                    .map(|(topic, partitions)| json!({"topic": topic, "partitions": partitions}))
                    .collect();
                json!({
                    "member_id": member.member_id,
                    "instance_id": member.group_instance_id,
                    "client_id": member.client_id,
                    "client_host": member.host,
                    "leader": Value::Null,
                    "assignment": assignment,
                })
            })
            .collect();
        groups.push(json!({
            "group_id": group.group_id,
            "state": group.state,
            "protocol_type": group.protocol_type,
            "protocol": group.protocol,
            "generation": Value::Null,
            "coordinator": group.coordinator.0,
            "offsets_partition": Value::Null,
            "members": members,
            "offsets": offsets,
            "total_lag": total_lag,
        }));
    }
    Ok(json!({
        "node_id": node_id,
        "coordinated_here_only": false,
        "truncated_to": truncated.then_some(CLUSTER_GROUPS_MAX),
        "shards_missing": 0,
        "groups": groups,
    }))
}

/// `/v1/counters`: the counter totals and the histogram bounds; the page
/// turns successive readings into rates and percentiles.
pub fn counters_json(totals: &CounterTotals, uptime_ms: u128) -> Value {
    json!({
        "uptime_ms": uptime_ms,
        "produce_records": totals.produce_records,
        "produce_bytes": totals.produce_bytes,
        "fetch_bytes": totals.fetch_bytes,
        "requests": totals.requests,
        "latency_bounds_seconds": LATENCY_BOUNDS_SECONDS,
        "produce_latency_buckets": totals.produce_latency_buckets,
        "fetch_latency_buckets": totals.fetch_latency_buckets,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::metadata::{BrokerInfo, PartitionMetadata, TopicMetadata};
    use crate::metrics::PartitionSnapshot;

    fn view() -> ClusterMetadata {
        let partition = |leader: i32, isr: Vec<i32>| PartitionMetadata {
            replicas: vec![1, 2],
            isr,
            leader: Some(leader),
            leader_epoch: 3,
            partition_epoch: 3,
            local_shard: None,
        };
        let broker = |id: i32, fenced: bool| BrokerInfo {
            id,
            host: "127.0.0.1".to_string(),
            port: 9091 + id,
            rack: (id == 2).then(|| "rack-b".to_string()),
            fenced,
            in_controlled_shutdown: false,
            replication_address: None,
        };
        ClusterMetadata {
            cluster_id: "cluster-x".to_string(),
            offset: 40,
            node_id: 1,
            controller_id: Some(1),
            brokers: BTreeMap::from([(1, broker(1, false)), (2, broker(2, true))]),
            topics: BTreeMap::from([(
                "orders".to_string(),
                TopicMetadata {
                    name: "orders".to_string(),
                    id: uuid::Uuid::nil(),
                    partitions: vec![partition(1, vec![1, 2]), partition(2, vec![2])],
                    configs: BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]),
                },
            )]),
            listener_endpoints: BTreeMap::new(),
            ..ClusterMetadata::default()
        }
    }

    fn shards() -> Vec<ShardSnapshot> {
        vec![ShardSnapshot {
            shard: 0,
            commit: sluice_engine::CommitStats::default(),
            partitions: vec![PartitionSnapshot {
                topic: Arc::from("orders"),
                partition: 0,
                log_start_offset: 2,
                log_end_offset: 30,
                high_watermark: 28,
                size_bytes: 4096,
                isr_size: Some(2),
                followers: Vec::new(),
            }],
        }]
    }

    #[test]
    fn topics_list_every_partition_with_local_offsets_where_held() {
        let json = topics_json(&view(), &shards(), 1);
        assert_eq!(json["shards_missing"], 1);
        let topic = &json["topics"][0];
        assert_eq!(topic["name"], "orders");
        assert_eq!(topic["configs"]["retention.ms"], "1000");
        assert_eq!(topic["local_size_bytes"], 4096);
        let first = &topic["partitions"][0];
        assert_eq!(first["leader"], 1);
        assert_eq!(first["replicas"], json!([1, 2]));
        assert_eq!(first["isr"], json!([1, 2]));
        assert_eq!(first["high_watermark"], 28);
        assert_eq!(first["under_replicated"], false);
        let second = &topic["partitions"][1];
        assert_eq!(second["local"], false);
        assert_eq!(second["log_end_offset"], Value::Null);
        assert_eq!(second["under_replicated"], true);
    }

    #[test]
    fn cluster_lists_brokers_with_their_state() {
        let status = BrokerStatus {
            node_id: 1,
            readiness: Err("fenced by the controller"),
            active_controller: Some(1),
            metadata_offset: 40,
        };
        let json = cluster_json(&status, Some(&view()));
        assert_eq!(json["cluster_id"], "cluster-x");
        assert_eq!(json["controller_id"], 1);
        assert_eq!(json["ready"], false);
        assert_eq!(json["not_ready_reason"], "fenced by the controller");
        assert_eq!(json["partition_count"], 2);
        let brokers = json["brokers"].as_array().unwrap();
        assert_eq!(brokers.len(), 2);
        assert_eq!(brokers[0]["state"], "live");
        assert_eq!(brokers[0]["this_broker"], true);
        assert_eq!(brokers[0]["partitions_led"], 1);
        assert_eq!(brokers[1]["state"], "fenced");
        assert_eq!(brokers[1]["rack"], "rack-b");
        assert_eq!(brokers[1]["address"], "127.0.0.1:9093");
        // Before the shards serve there is no view: no brokers, no error.
        let starting = cluster_json(&status, None);
        assert_eq!(starting["brokers"], json!([]));
        assert_eq!(starting["cluster_id"], Value::Null);
    }

    #[test]
    fn group_lag_is_the_high_watermark_minus_the_committed_offset() {
        let mut assignment = vec![0_u8, 0];
        let mut body = bytes::BytesMut::new();
        let decoded = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
            kafka_protocol::messages::consumer_protocol_assignment::TopicPartition::default()
                .with_topic(kafka_protocol::messages::TopicName::from(
                    kafka_protocol::protocol::StrBytes::from_static_str("orders"),
                ))
                .with_partitions(vec![0, 1]),
        ]);
        kafka_protocol::protocol::Encodable::encode(&decoded, &mut body, 0).unwrap();
        assignment.extend_from_slice(&body);
        let group = GroupSnapshot {
            id: "<b>readers</b>".to_string(),
            state: "Stable",
            protocol_type: Some("consumer".to_string()),
            protocol: Some("range".to_string()),
            generation: 2,
            leader: Some("member-1".to_string()),
            offsets_partition: 7,
            members: vec![MemberSnapshot {
                id: "member-1".to_string(),
                instance_id: None,
                client_id: "client".to_string(),
                client_host: "/127.0.0.1".to_string(),
                assignment: consumer_assignment(&assignment),
            }],
            offsets: BTreeMap::from([
                (("orders".to_string(), 0), 20),
                (("orders".to_string(), 1), 5),
            ]),
        };
        let json = groups_json(1, &[group], &shards(), 0);
        let group = &json["groups"][0];
        // Strings are data: the page escapes them, the JSON keeps them.
        assert_eq!(group["group_id"], "<b>readers</b>");
        assert_eq!(group["offsets"][0]["end_offset"], 28);
        assert_eq!(group["offsets"][0]["lag"], 8);
        // Partition 1 is held elsewhere: its lag is unknown here.
        assert_eq!(group["offsets"][1]["lag"], Value::Null);
        assert_eq!(group["total_lag"], Value::Null);
        let member = &group["members"][0];
        assert_eq!(member["leader"], true);
        assert_eq!(member["assignment"][0]["topic"], "orders");
        assert_eq!(member["assignment"][0]["partitions"], json!([0, 1]));
        assert_eq!(consumer_assignment(b"\x00"), Vec::new());
        assert_eq!(consumer_assignment(b"\x00\x00\xff"), Vec::new());
    }

    #[test]
    fn assets_are_served_with_their_types() {
        let (kind, page) = asset("/").unwrap();
        assert!(kind.starts_with("text/html"));
        let page = std::str::from_utf8(page).unwrap();
        assert!(page.contains("/console/console.js"));
        assert!(page.contains("/console/console.css"));
        assert!(
            asset("/console/console.js")
                .unwrap()
                .0
                .starts_with("text/javascript")
        );
        assert!(
            asset("/console/console.css")
                .unwrap()
                .0
                .starts_with("text/css")
        );
        assert!(asset("/console/../etc/passwd").is_none());
    }
}
