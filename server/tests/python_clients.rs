//! Interop with Python clients: confluent-kafka (the current librdkafka,
//! from its wheel) and kafka-python (its own protocol code). Each scenario
//! is a script in `server/tests/python/`, run against its own broker by the
//! test venv's interpreter (`$SLUICE_TEST_VENV/bin/python`, default
//! `target/test-venv`, which `.ci/test` creates with pinned versions).
//! Without the venv the tests skip loudly; under CI they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use support::{Broker, require_python, run_with_timeout};

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(240);

/// Run `server/tests/python/<script>.py` against a fresh broker; the test
/// passes when the script exits 0 and the broker is still running.
fn run_scenario(script: &str) {
    let Some(python) = require_python() else {
        return;
    };
    let mut broker = Broker::start(script);
    let path = support::repo_root()
        .join("server/tests/python")
        .join(format!("{script}.py"));
    let mut command = Command::new(&python);
    command
        .arg(&path)
        .arg(broker.bootstrap())
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let output = run_with_timeout(command, SCRIPT_TIMEOUT, script);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("--- {script}.py stdout ---\n{stdout}");
    println!("--- {script}.py stderr ---\n{stderr}");
    assert!(
        output.status.success(),
        "{script}.py failed with {}:\n{}",
        output.status,
        stderr
            .lines()
            .filter(|line| !line.starts_with('%'))
            .collect::<Vec<_>>()
            .join("\n")
    );
    broker.assert_running();
}

#[test]
fn python_keyed_idempotent_produce_keeps_every_key_in_one_partition_in_order_without_gaps() {
    run_scenario("keyed_idempotent_produce");
}

#[test]
fn python_offsets_for_times_finds_the_first_record_at_or_after_a_timestamp() {
    run_scenario("offsets_for_times");
}

#[test]
fn python_adding_partitions_from_three_to_six_lets_producers_use_all_six() {
    run_scenario("add_partitions");
}

#[test]
fn python_topic_configs_are_altered_and_described() {
    run_scenario("topic_configs");
}

#[test]
fn python_a_deleted_topic_is_gone() {
    run_scenario("delete_topic");
}

#[test]
fn python_a_one_mebibyte_record_is_accepted_and_a_ten_mebibyte_one_refused() {
    run_scenario("large_records");
}

#[test]
fn python_kafka_python_producer_and_consumer_round_trip() {
    run_scenario("kafka_python_round_trip");
}

#[test]
fn python_confluent_kafka_produces_five_thousand_lines_and_consumes_them_back_identical() {
    run_scenario("confluent_lines");
}

#[test]
fn python_kip848_consumers_fail_at_once_with_a_reason() {
    run_scenario("unsupported_features_fail_fast");
}

#[test]
fn python_transactions_commit_input_offsets_with_the_output_abort_and_fence_zombies() {
    run_scenario("transactional_producer");
}
