//! A data directory written by the single-node version of Sluice (before
//! the Raft controller: metadata in `cluster-metadata.json`) opens under
//! this version with its topics, configs, records and committed offsets,
//! migrated once.
//!
//! The fixture `fixtures/single-node-v0.tar.gz` was made with the
//! single-node broker (commit 3f8060a): `sluice --offsets-topic-partitions
//! 2`, `sluice topic create legacy -p 3 -c retention.ms=86400000`, 30 keyed
//! records (`key1:value1` .. `key30:value30`) with `sluice produce -K :`,
//! all consumed and committed by `kcat -G legacy-group`, clean stop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use support::{Broker, assert_success, kcat, require_tool, run_with_timeout};

const TIMEOUT: Duration = Duration::from_secs(60);

fn sluice_json(broker: &Broker, args: &[&str]) -> serde_json::Value {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .args(args)
        .args(["--bootstrap", &broker.bootstrap(), "--format", "json"]);
    let output = run_with_timeout(command, TIMEOUT, "sluice admin command");
    assert_success(&output, &format!("sluice {args:?}"), broker);
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("sluice {args:?} printed no JSON ({error})"))
}

/// Replace the broker's data directory with the fixture's.
fn install_fixture(broker: &mut Broker) {
    broker.stop();
    let data_dir = broker.data_dir().to_path_buf();
    std::fs::remove_dir_all(&data_dir).unwrap();
    let parent = data_dir.parent().unwrap();
    let fixture = support::repo_root().join("server/tests/fixtures/single-node-v0.tar.gz");
    let status = Command::new("tar")
        .arg("xzf")
        .arg(&fixture)
        .arg("-C")
        .arg(parent)
        .status()
        .expect("running tar");
    assert!(status.success(), "extracting {}", fixture.display());
    assert!(data_dir.join("cluster-metadata.json").exists());
}

fn consume_all(kcat_path: &std::path::Path, broker: &Broker) -> Vec<String> {
    let mut command = kcat(kcat_path, broker);
    command.args(["-C", "-t", "legacy", "-e", "-q", "-f", "%k:%s\\n"]);
    let output = run_with_timeout(command, TIMEOUT, "kcat consume");
    assert_success(&output, "kcat consume", broker);
    let mut lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

fn check_everything_is_there(kcat_path: &std::path::Path, broker: &Broker) {
    let mut expected: Vec<String> = (1..=30).map(|i| format!("key{i}:value{i}")).collect();
    expected.sort();
    assert_eq!(consume_all(kcat_path, broker), expected, "the records");

    let described = sluice_json(broker, &["topic", "describe", "legacy"]);
    let text = described.to_string();
    assert!(
        text.contains("retention.ms") && text.contains("86400000"),
        "configs: {text}"
    );
    let partitions = text.matches("\"partition\"").count();
    assert!(partitions >= 3, "3 partitions expected: {text}");

    let group = sluice_json(broker, &["group", "describe", "legacy-group"]);
    for (partition, offset) in [(0, 11), (1, 9), (2, 10)] {
        let committed = group["partitions"]
            .as_array()
            .and_then(|partitions| {
                partitions
                    .iter()
                    .find(|entry| entry["topic"] == "legacy" && entry["partition"] == partition)
            })
            .map(|entry| entry["committed"].clone());
        assert_eq!(
            committed,
            Some(serde_json::json!(offset)),
            "committed offset of partition {partition}: {group}"
        );
    }
    let cluster = sluice_json(broker, &["cluster", "info"]).to_string();
    assert!(
        cluster.contains("bbc1f07d954443e89d3fe37924d8e88a"),
        "the cluster id is kept: {cluster}"
    );
}

#[test]
fn a_single_node_data_dir_opens_with_topics_configs_records_and_offsets_migrated_once() {
    let Some(kcat_path) = require_tool("kcat") else {
        return;
    };
    let mut broker = Broker::start("upgrade");
    install_fixture(&mut broker);
    broker.start_again();
    check_everything_is_there(&kcat_path, &broker);
    let data_dir = broker.data_dir().to_path_buf();
    assert!(!data_dir.join("cluster-metadata.json").exists());
    assert!(data_dir.join("cluster-metadata.json.migrated").exists());

    // New records continue the old offsets.
    let mut produce = kcat(&kcat_path, &broker);
    produce.args(["-P", "-t", "legacy", "-p", "0", "-K", ":"]);
    produce.stdin(std::process::Stdio::piped());
    let mut child = produce.stdout(std::process::Stdio::null()).spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"key31:value31\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let offsets = sluice_json(&broker, &["topic", "describe", "legacy"]).to_string();
    assert!(offsets.contains("12"), "partition 0 ends at 12: {offsets}");

    // Once migrated, a restart does not migrate again and keeps everything.
    broker.restart();
    let mut expected: Vec<String> = (1..=31).map(|i| format!("key{i}:value{i}")).collect();
    expected.sort();
    assert_eq!(consume_all(&kcat_path, &broker), expected);
    assert!(
        !broker
            .stderr_tail()
            .contains("migrating the single-node metadata")
            || broker
                .stderr_tail()
                .matches("migrating the single-node metadata")
                .count()
                == 1,
        "migrated more than once:\n{}",
        broker.stderr_tail()
    );
}
