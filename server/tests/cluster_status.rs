//! `sluice cluster status` (issue 9) against real brokers:
//!
//! - three brokers and a 6-partition topic: every broker listed, exactly
//!   one active controller, the leaders summing to every partition
//!   (internal topics included); a broker killed with -9 shows as fenced
//!   (or absent) with its partitions leaderless and exit code 1, and the
//!   status is whole again (exit 0) once it is back;
//! - one broker alone: it is the controller and leads every partition;
//!   a bad argument exits 2.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use support::cluster::{Cluster, wait_until};
use support::{Broker, run_with_timeout};

/// A 3 s session (Kafka's default is 9 s) and heartbeats often enough for
/// it, so a killed broker is fenced within seconds; a small
/// `__consumer_offsets` in case a broker creates it.
const BROKER_ARGS: [&str; 6] = [
    "--broker-session-timeout-ms",
    "3000",
    "--broker-heartbeat-interval-ms",
    "500",
    "--offsets-topic-partitions",
    "3",
];
const TOPIC: &str = "status-events";
const TOPIC_PARTITIONS: usize = 6;
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the cluster may take to agree after a change (a topic created,
/// a broker fenced or back).
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);

/// `sluice ARGS --bootstrap BOOTSTRAP`, without the caller's environment
/// or profile.
fn sluice(bootstrap: &str, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .env_remove("SLUICE_BOOTSTRAP")
        .env_remove("SLUICE_PROFILE")
        .env("XDG_CONFIG_HOME", "/nonexistent/sluice-test-config")
        .args(args)
        .arg("--bootstrap")
        .arg(bootstrap);
    run_with_timeout(
        command,
        COMMAND_TIMEOUT,
        &format!("sluice {}", args.join(" ")),
    )
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `sluice cluster status --format json`: its exit code and its JSON
/// (`Err` with the output when it printed none).
fn status_json(bootstrap: &str) -> Result<(i32, Value), String> {
    let output = sluice(bootstrap, &["cluster", "status", "--format", "json"]);
    let code = output.status.code().unwrap_or(-1);
    serde_json::from_slice(&output.stdout)
        .map(|json| (code, json))
        .map_err(|error| format!("{error}: {}", describe(&output)))
}

fn brokers(json: &Value) -> &Vec<Value> {
    json["brokers"].as_array().expect("brokers is an array")
}

fn broker(json: &Value, node: i32) -> Option<&Value> {
    brokers(json)
        .iter()
        .find(|broker| broker["node_id"] == node)
}

fn sum(json: &Value, field: &str) -> u64 {
    brokers(json)
        .iter()
        .map(|broker| broker[field].as_u64().expect("a count"))
        .sum()
}

/// Partitions of every topic as `node`'s Metadata lists them.
fn metadata_partition_count(cluster: &Cluster, node: i32) -> Option<usize> {
    let metadata = cluster.metadata(node).ok()?;
    Some(
        metadata
            .topics
            .iter()
            .map(|topic| topic.partitions.len())
            .sum(),
    )
}

/// Wait until status exits 0 with every partition led and `TOPIC` in it;
/// its JSON.
fn wait_until_whole(cluster: &Cluster, what: &str, brokers_expected: usize) -> Value {
    let bootstrap = cluster.bootstrap();
    wait_until(what, CONVERGE_TIMEOUT, || {
        let (code, json) = status_json(&bootstrap)?;
        let unfenced = brokers(&json)
            .iter()
            .filter(|broker| broker["state"] == "unfenced")
            .count();
        if code == 0
            && unfenced == brokers_expected
            && json["partition_count"].as_u64() >= Some(TOPIC_PARTITIONS as u64)
        {
            Ok(json)
        } else {
            Err(format!("exit {code}: {json}"))
        }
    })
}

#[test]
fn status_follows_a_broker_that_is_killed_fenced_and_back() {
    let mut cluster = Cluster::start("cluster-status", 3, &BROKER_ARGS);
    let bootstrap = cluster.bootstrap();
    let created = sluice(
        &bootstrap,
        &[
            "topic",
            "create",
            TOPIC,
            "-p",
            &TOPIC_PARTITIONS.to_string(),
        ],
    );
    assert!(created.status.success(), "{}", describe(&created));

    // Whole: three unfenced brokers, one controller, every partition led.
    let json = wait_until_whole(&cluster, "status of the new cluster", 3);
    assert_eq!(brokers(&json).len(), 3, "{json}");
    let controllers: Vec<&Value> = brokers(&json)
        .iter()
        .filter(|broker| broker["controller"] == true)
        .collect();
    assert_eq!(controllers.len(), 1, "{json}");
    assert_eq!(json["controller_id"], controllers[0]["node_id"], "{json}");
    for node in cluster.nodes() {
        let listed = broker(&json, node).unwrap_or_else(|| panic!("broker {node}: {json}"));
        assert_eq!(listed["fenced"], false, "{json}");
        let port = cluster.broker(node).bootstrap();
        assert_eq!(listed["address"].as_str(), Some(port.as_str()), "{json}");
    }
    let partitions = json["partition_count"].as_u64().unwrap();
    assert_eq!(sum(&json, "leader_count"), partitions, "{json}");
    assert!(sum(&json, "replica_count") >= partitions, "{json}");
    assert_eq!(
        json["leaderless_partitions"],
        Value::Array(vec![]),
        "{json}"
    );
    // The partitions counted are every topic's, internal ones included.
    let listed = metadata_partition_count(&cluster, 1).expect("Metadata from node 1");
    assert_eq!(partitions, listed as u64, "{json}");
    assert!(json["cluster_id"].is_string(), "{json}");

    let table = sluice(&bootstrap, &["cluster", "status"]);
    assert!(table.status.success(), "{}", describe(&table));
    let text = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(text.starts_with("Cluster ID: "), "{text}");
    assert!(
        text.contains("ID  ADDRESS") && text.contains("LEADERS  REPLICAS"),
        "{text}"
    );
    assert!(!text.contains("Partitions without a leader:"), "{text}");

    // Kill a broker that leads some of the topic (not the controller, so
    // no election slows the test down).
    let controller = json["controller_id"].as_i64().unwrap() as i32;
    let victim = cluster
        .nodes()
        .filter(|node| *node != controller)
        .max_by_key(|node| broker(&json, *node).unwrap()["leader_count"].as_u64())
        .unwrap();
    let led: BTreeSet<String> = cluster
        .leaders(controller, TOPIC)
        .expect("the topic's leaders")
        .into_iter()
        .filter(|(_, leader)| *leader == victim)
        .map(|(partition, _)| format!("{TOPIC}-{partition}"))
        .collect();
    assert!(
        !led.is_empty(),
        "broker {victim} leads none of {TOPIC}: {json}"
    );
    cluster.kill9(victim);

    let json = wait_until(
        "the killed broker fenced with its partitions leaderless",
        CONVERGE_TIMEOUT,
        || {
            let (code, json) = status_json(&bootstrap)?;
            let fenced_or_absent = broker(&json, victim)
                .is_none_or(|listed| listed["state"] == "fenced" || listed["state"] == "unlisted");
            let leaderless: BTreeSet<String> = json["leaderless_partitions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|name| name.as_str().unwrap().to_string())
                .collect();
            if code == 1 && fenced_or_absent && led.is_subset(&leaderless) {
                Ok(json)
            } else {
                Err(format!("exit {code}: {json}"))
            }
        },
    );
    if let Some(listed) = broker(&json, victim) {
        assert_eq!(listed["leader_count"], 0, "{json}");
        assert_eq!(listed["controller"], false, "{json}");
    }
    let leaderless = json["leaderless_partitions"].as_array().unwrap().len() as u64;
    assert_eq!(
        sum(&json, "leader_count") + leaderless,
        json["partition_count"].as_u64().unwrap(),
        "{json}"
    );
    let table = sluice(&bootstrap, &["cluster", "status"]);
    assert_eq!(table.status.code(), Some(1), "{}", describe(&table));
    let text = String::from_utf8_lossy(&table.stdout).to_string();
    let first = led.iter().next().unwrap();
    assert!(
        text.contains("Partitions without a leader: ") && text.contains(first.as_str()),
        "{text}"
    );

    // Back: whole again.
    cluster.start_again(victim);
    let json = wait_until_whole(&cluster, "status after the broker returned", 3);
    assert_eq!(brokers(&json).len(), 3, "{json}");
    assert_eq!(
        sum(&json, "leader_count"),
        json["partition_count"].as_u64().unwrap(),
        "{json}"
    );
}

#[test]
fn status_of_a_single_broker_shows_it_as_controller_and_leader_of_everything() {
    let broker = Broker::start("cluster-status-single");
    let bootstrap = broker.bootstrap();
    let created = sluice(&bootstrap, &["topic", "create", TOPIC, "-p", "3"]);
    assert!(created.status.success(), "{}", describe(&created));

    let (code, json) = wait_until("status of one broker", CONVERGE_TIMEOUT, || {
        let (code, json) = status_json(&bootstrap)?;
        if code == 0 && json["partition_count"].as_u64() >= Some(3) {
            Ok((code, json))
        } else {
            Err(format!("exit {code}: {json}"))
        }
    });
    assert_eq!(code, 0);
    assert_eq!(brokers(&json).len(), 1, "{json}");
    let only = &brokers(&json)[0];
    assert_eq!(only["controller"], true, "{json}");
    assert_eq!(only["state"], "unfenced", "{json}");
    assert_eq!(only["address"].as_str(), Some(bootstrap.as_str()), "{json}");
    let partitions = json["partition_count"].as_u64().unwrap();
    assert_eq!(only["leader_count"].as_u64(), Some(partitions), "{json}");
    assert_eq!(only["replica_count"].as_u64(), Some(partitions), "{json}");

    let table = sluice(&bootstrap, &["cluster", "status"]);
    assert!(table.status.success(), "{}", describe(&table));
    let text = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(text.contains("Partitions: "), "{text}");
    assert!(text.contains(" yes "), "{text}");

    let bad = sluice(&bootstrap, &["cluster", "status", "--format", "yaml"]);
    assert_eq!(bad.status.code(), Some(2), "{}", describe(&bad));
}
