//! Consumer groups with real clients against a real `sluice` process:
//! confluent-kafka (librdkafka 2.16) consumer processes that rebalance,
//! get killed and resume; kafka-python manual and auto commits; kcat's
//! balanced consumer; committed offsets across broker restarts (clean and
//! kill -9); static membership; the AdminClient's group calls; offsets
//! expiry; and `sluice groups list|describe` against a live group.
//!
//! Each scenario is a script in `server/tests/python/group_*.py` run by the
//! test venv's interpreter against its own broker. Brokers start with a
//! short join window (`--group-initial-rebalance-delay-ms`) so that tests do
//! not wait Kafka's default 3 s. A script that needs the broker restarted
//! prints `@@ broker stop|kill9|start` and waits for `ok` on its stdin (see
//! [`run_scenario`]). Without the venv or kcat the tests skip loudly; under
//! CI they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{Broker, require_python, require_tool, run_with_input, run_with_timeout};

/// Whole-script limit: generous, a script's own waits are much shorter and
/// say what they waited for.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(170);
/// The join window of every test broker (Kafka's default is 3000 ms).
const JOIN_WINDOW_MS: &str = "500";
const KCAT_TIMEOUT: Duration = Duration::from_secs(60);

fn broker_args(extra: &[&'static str]) -> Vec<&'static str> {
    let mut args = vec!["--group-initial-rebalance-delay-ms", JOIN_WINDOW_MS];
    args.extend_from_slice(extra);
    args
}

/// Run `server/tests/python/<script>.py BOOTSTRAP` against a fresh broker
/// started with `extra_args`, with `env` set. Lines `@@ broker stop`,
/// `@@ broker kill9` and `@@ broker start` on the script's stdout make this
/// harness do that to the broker, then answer `ok` on the script's stdin.
/// Passes when the script exits 0 and the broker still runs.
fn run_scenario(script: &str, extra_args: &[&'static str], env: &[(&str, &str)]) {
    let Some(python) = require_python() else {
        return;
    };
    let mut broker = Broker::start_with_args(script, &broker_args(extra_args));
    let path = support::repo_root()
        .join("server/tests/python")
        .join(format!("{script}.py"));
    let mut command = Command::new(&python);
    command
        .arg(&path)
        .arg(broker.bootstrap())
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("SLUICE_BIN", env!("CARGO_BIN_EXE_sluice"))
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|error| panic!("{script}: spawn failed: {error}"));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let (lines_sender, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_sender.send(line).is_err() {
                break;
            }
        }
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let mut transcript = String::new();
    let status = loop {
        match lines.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                transcript.push_str(&line);
                transcript.push('\n');
                if let Some(command) = line.strip_prefix("@@ ") {
                    match command.trim() {
                        "broker stop" => broker.stop(),
                        "broker kill9" => broker.kill9(),
                        "broker start" => broker.start_again(),
                        other => panic!("{script}: unknown harness command {other:?}"),
                    }
                    stdin
                        .write_all(b"ok\n")
                        .and_then(|()| stdin.flush())
                        .unwrap_or_else(|error| panic!("{script}: answering {command}: {error}"));
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // stdout closed: the script is exiting.
                if let Some(status) = child.try_wait().expect("waiting for the script") {
                    break status;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = stderr_reader.join().unwrap_or_default();
            panic!(
                "{script}.py: no exit within {SCRIPT_TIMEOUT:?}\n--- stdout ---\n{transcript}\n\
                 --- stderr ---\n{}",
                without_librdkafka_logs(&stderr)
            );
        }
    };
    let stderr = stderr_reader.join().unwrap_or_default();
    println!("--- {script}.py stdout ---\n{transcript}");
    println!("--- {script}.py stderr ---\n{stderr}");
    assert!(
        status.success(),
        "{script}.py failed with {status}:\n{}",
        without_librdkafka_logs(&stderr)
    );
    broker.assert_running();
}

/// librdkafka's own log lines start with `%`; failures are the rest.
fn without_librdkafka_logs(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|line| !line.starts_with('%'))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn three_consumer_processes_split_six_partitions_survive_a_kill_9_and_resume_from_commits() {
    run_scenario("group_three_processes", &[], &[]);
}

#[test]
fn kafka_python_resumes_after_manual_and_auto_commits() {
    run_scenario("group_kafka_python_commits", &[], &[]);
}

#[test]
fn committed_offsets_survive_a_clean_broker_restart() {
    run_scenario("group_broker_restart", &[], &[("GROUP_RESTART", "stop")]);
}

#[test]
fn committed_offsets_survive_a_broker_kill_9() {
    run_scenario("group_broker_restart", &[], &[("GROUP_RESTART", "kill9")]);
}

#[test]
fn a_static_member_that_restarts_gets_its_partitions_back_without_a_rebalance() {
    run_scenario("group_static_membership", &[], &[]);
}

#[test]
fn sluice_groups_list_and_describe_show_the_live_group_offsets_and_lag() {
    run_scenario("group_cli", &[], &[]);
}

#[test]
fn admin_client_lists_describes_and_deletes_groups() {
    run_scenario("group_admin", &[], &[]);
}

#[test]
fn committed_offsets_of_an_empty_group_expire_after_the_retention() {
    run_scenario(
        "group_offsets_expiry",
        &["--offsets-retention-ms", "2000"],
        &[],
    );
}

fn kcat(kcat: &Path, broker: &Broker) -> Command {
    let mut command = Command::new(kcat);
    command
        .arg("-b")
        .arg(broker.bootstrap())
        .args(["-X", "broker.address.family=v4"]);
    command
}

fn assert_success(output: &std::process::Output, what: &str, broker: &Broker) {
    assert!(
        output.status.success(),
        "{what} failed with {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        broker.stderr_tail()
    );
}

/// Produce `lines` to `topic` spread over its partitions (kcat -P, keyed
/// with `-K:` so that the partitioner spreads them).
fn kcat_produce(kcat_path: &Path, broker: &Broker, topic: &str, lines: &[String]) {
    let mut input = Vec::new();
    for line in lines {
        input.extend_from_slice(format!("{line}:{line}\n").as_bytes());
    }
    let mut produce = kcat(kcat_path, broker);
    produce.args(["-P", "-t", topic, "-K:"]).args([
        "-X",
        "acks=all",
        "-X",
        "message.timeout.ms=30000",
    ]);
    let output = run_with_input(produce, Some(input), KCAT_TIMEOUT, "kcat -P");
    assert_success(&output, "kcat -P", broker);
}

/// `kcat -G group topic -e ARGS`: the balanced consumer's lines.
fn kcat_group_consume(
    kcat_path: &Path,
    broker: &Broker,
    group: &str,
    topic: &str,
    args: &[&str],
) -> Vec<String> {
    let mut consume = kcat(kcat_path, broker);
    consume
        .args(["-G", group, topic, "-e", "-q"])
        .args(args)
        .args(["-f", "%s\\n"]);
    let output = run_with_timeout(consume, KCAT_TIMEOUT, "kcat -G -e");
    assert_success(&output, "kcat -G -e", broker);
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn kcat_balanced_consumer_reads_a_topic_completely_then_resumes_after_its_commits() {
    let Some(kcat_path) = require_tool("kcat") else {
        return;
    };
    let broker = Broker::start_with_args("group_kcat", &broker_args(&[]));
    let topic = "kcat-group";
    support::kafka::create_topic(&broker.bootstrap(), topic, 3, &[]);
    let first: Vec<String> = (0..600).map(|index| format!("first-{index:04}")).collect();
    kcat_produce(&kcat_path, &broker, topic, &first);
    let consumed = kcat_group_consume(
        &kcat_path,
        &broker,
        "kcat-group",
        topic,
        &["-o", "beginning"],
    );
    let consumed_set: BTreeSet<&String> = consumed.iter().collect();
    let first_set: BTreeSet<&String> = first.iter().collect();
    assert_eq!(
        consumed_set,
        first_set,
        "kcat -G consumed {} lines ({} distinct); produced {}",
        consumed.len(),
        consumed_set.len(),
        first.len()
    );
    assert_eq!(consumed.len(), first.len(), "no line consumed twice");

    // The group committed its positions when kcat closed: a second run
    // (no -o: from the committed offsets; earliest only where none) reads
    // only what was produced since.
    let second: Vec<String> = (0..90).map(|index| format!("second-{index:04}")).collect();
    kcat_produce(&kcat_path, &broker, topic, &second);
    let consumed = kcat_group_consume(
        &kcat_path,
        &broker,
        "kcat-group",
        topic,
        &["-X", "auto.offset.reset=earliest"],
    );
    let mut consumed_sorted = consumed.clone();
    consumed_sorted.sort();
    assert_eq!(
        consumed_sorted, second,
        "the second kcat -G run resumes at the committed offsets"
    );
}
