//! The admin CLI against a three-broker cluster (issue 15: every command
//! against a cluster as well as a single node, tests/admin_cli.rs): topics
//! whose partitions are led by different brokers, commands sent through
//! one broker and checked through another, a consumer group whose
//! coordinator may be any broker, a reassignment, and the mistakes a user
//! makes (unknown topic, bad config value, an existing topic, a bootstrap
//! that is not a broker), each a clear message and a non-zero exit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use support::cluster::{Cluster, wait_until};

const TOPIC: &str = "orders";
const RECORDS: usize = 60;

fn sluice(bootstrap: &str, args: &[&str], input: Option<&[u8]>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .args(args)
        .arg("--bootstrap")
        .arg(bootstrap)
        .env_remove("SLUICE_BOOTSTRAP")
        .env_remove("SLUICE_PROFILE")
        .env("XDG_CONFIG_HOME", "/nonexistent/sluice-test-config");
    let what = format!("sluice {}", args.join(" "));
    support::run_with_input(
        command,
        input.map(<[u8]>::to_vec),
        Duration::from_secs(120),
        &what,
    )
}

fn ok(bootstrap: &str, args: &[&str]) -> String {
    ok_with_input(bootstrap, args, None)
}

fn ok_with_input(bootstrap: &str, args: &[&str], input: Option<&[u8]>) -> String {
    let output = sluice(bootstrap, args, input);
    assert!(
        output.status.success(),
        "sluice {} failed ({}):\n{}\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn json(bootstrap: &str, args: &[&str]) -> Value {
    let mut with_format = args.to_vec();
    with_format.extend(["--format", "json"]);
    let stdout = ok(bootstrap, &with_format);
    serde_json::from_str(&stdout)
        .unwrap_or_else(|error| panic!("sluice {}: not JSON ({error}): {stdout}", args.join(" ")))
}

/// Exit code 1 and a stderr naming every needle, no panic: the stderr.
fn fails(bootstrap: &str, args: &[&str], needles: &[&str]) -> String {
    let output = sluice(bootstrap, args, None);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        output.status.code(),
        Some(1),
        "sluice {}: {}\n{stdout}\n{stderr}",
        args.join(" "),
        output.status
    );
    let both = format!("{stdout}{stderr}");
    for needle in needles {
        assert!(
            both.contains(needle),
            "sluice {}: does not say {needle:?}:\n{both}",
            args.join(" ")
        );
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

fn partitions(described: &Value) -> &Vec<Value> {
    described[0]["partitions"].as_array().unwrap()
}

#[test]
fn every_cli_command_against_three_brokers() {
    let cluster = Cluster::start(
        "cli-cluster",
        3,
        &[
            "--broker-heartbeat-interval-ms",
            "500",
            "--broker-session-timeout-ms",
            "3000",
            "--offsets-topic-partitions",
            "6",
        ],
    );
    let first = cluster.broker(1).bootstrap();
    let second = cluster.broker(2).bootstrap();
    let third = cluster.broker(3).bootstrap();

    // Cluster: three brokers, healthy.
    let info = json(&first, &["cluster", "info"]);
    let ids: BTreeSet<i64> = info["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|broker| broker["node_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, BTreeSet::from([1, 2, 3]), "{info}");

    // Topics: created through broker 1, seen through broker 2.
    let created = json(
        &first,
        &[
            "topic",
            "create",
            TOPIC,
            "-p",
            "6",
            "-r",
            "3",
            "-c",
            "retention.ms=60000",
        ],
    );
    assert_eq!(created[0]["error"], Value::Null, "{created}");
    let listed = json(&second, &["topic", "list"]);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|topic| topic["name"] == TOPIC),
        "{listed}"
    );
    let described = wait_until(
        "six partitions, each in sync on three brokers",
        Duration::from_secs(60),
        || {
            let described = json(&second, &["topic", "describe", TOPIC]);
            let whole = partitions(&described).len() == 6
                && partitions(&described).iter().all(|partition| {
                    partition["isr"]
                        .as_array()
                        .is_some_and(|isr| isr.len() == 3)
                });
            whole
                .then_some(described.clone())
                .ok_or(described.to_string())
        },
    );
    let leaders: BTreeSet<i64> = partitions(&described)
        .iter()
        .map(|partition| partition["leader"].as_i64().unwrap())
        .collect();
    assert!(
        leaders.len() >= 2,
        "leaders spread over brokers: {described}"
    );

    // Produce through broker 3; the records land on every leader.
    let lines: String = (0..RECORDS)
        .map(|index| format!("key-{index}:value-{index}\n"))
        .collect();
    ok_with_input(
        &third,
        &["produce", TOPIC, "-K", ":", "--acks", "all"],
        Some(lines.as_bytes()),
    );
    let described = json(&first, &["topic", "describe", TOPIC]);
    let total: i64 = partitions(&described)
        .iter()
        .map(|partition| partition["log_end"].as_i64().unwrap())
        .sum();
    assert_eq!(total, RECORDS as i64, "{described}");

    // Configs: altered through broker 2, described through broker 3; a bad
    // value is refused.
    ok(
        &second,
        &[
            "topic",
            "alter-config",
            TOPIC,
            "--set",
            "retention.ms=120000",
        ],
    );
    let described = json(&third, &["topic", "describe", TOPIC]);
    let retention = described[0]["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|config| config["name"] == "retention.ms")
        .cloned();
    assert_eq!(retention.unwrap()["value"], "120000", "{described}");
    fails(
        &first,
        &["topic", "alter-config", TOPIC, "--set", "retention.ms=soon"],
        &["INVALID_CONFIG"],
    );

    // Partitions added; one reassigned to two replicas.
    ok(&first, &["topic", "add-partitions", TOPIC, "--total", "8"]);
    ok(
        &second,
        &[
            "topic",
            "reassign",
            TOPIC,
            "-p",
            "0",
            "--replication-factor",
            "2",
            "--wait",
        ],
    );
    let described = wait_until(
        "8 partitions, partition 0 on two brokers",
        Duration::from_secs(60),
        || {
            let described = json(&third, &["topic", "describe", TOPIC]);
            let done = partitions(&described).len() == 8
                && partitions(&described)[0]["replicas"]
                    .as_array()
                    .is_some_and(|replicas| replicas.len() == 2);
            done.then_some(described.clone())
                .ok_or(described.to_string())
        },
    );
    assert_eq!(partitions(&described).len(), 8);

    // A group: consume with commits through broker 1, described, moved back
    // and deleted through the others (its coordinator is whichever broker
    // leads its offsets partition).
    let consumed = ok(
        &first,
        &[
            "consume",
            TOPIC,
            "-o",
            "earliest",
            "-g",
            "billing",
            "-n",
            &RECORDS.to_string(),
            "-f",
            "%v\\n",
        ],
    );
    let values: BTreeSet<&str> = consumed.lines().collect();
    assert_eq!(values.len(), RECORDS, "{consumed}");
    let listed = json(&second, &["group", "list"]);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|group| group["group_id"] == "billing"),
        "{listed}"
    );
    let group = json(&third, &["group", "describe", "billing"]);
    let committed: i64 = group["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["committed"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(committed, RECORDS as i64, "{group}");
    ok(&second, &["group", "seek", "billing", "--to-earliest"]);
    let group = json(&first, &["group", "describe", "billing"]);
    let lag: i64 = group["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["lag"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(lag, RECORDS as i64, "{group}");
    ok(&third, &["group", "delete", "billing"]);
    let listed = json(&first, &["group", "list"]);
    assert!(
        !listed
            .as_array()
            .unwrap()
            .iter()
            .any(|group| group["group_id"] == "billing"),
        "{listed}"
    );

    // Health, and the user's mistakes.
    assert_eq!(json(&second, &["cluster", "health"])["healthy"], true);
    fails(
        &first,
        &["topic", "create", TOPIC, "-r", "3"],
        &["TOPIC_ALREADY_EXISTS"],
    );
    fails(
        &second,
        &["topic", "describe", "nowhere"],
        &["does not exist"],
    );
    fails(
        &third,
        &["topic", "create", "too-many", "-r", "4"],
        &["INVALID_REPLICATION_FACTOR"],
    );
    let port = support::reserve_port();
    fails(
        &format!("127.0.0.1:{port}"),
        &["topic", "list"],
        &[&format!("127.0.0.1:{port}")],
    );

    // Deleted through broker 3, gone everywhere.
    ok(&third, &["topic", "delete", TOPIC]);
    for bootstrap in [&first, &second, &third] {
        wait_until("the topic gone", Duration::from_secs(30), || {
            let listed = json(bootstrap, &["topic", "list"]);
            (!listed
                .as_array()
                .unwrap()
                .iter()
                .any(|topic| topic["name"] == TOPIC))
            .then_some(())
            .ok_or(listed.to_string())
        });
    }
}
