//! The admin subcommands (`sluice topic|group|cluster|produce|consume`)
//! against a real `sluice` process, with real clients beside them (kcat):
//! every command in table and JSON form, the errors a user makes (unknown
//! topic, bad config value, bad or unreachable bootstrap, invalid
//! arguments: a clear message and a non-zero exit), a produce/consume round
//! trip that kcat reads too, and `group seek` on a group created by kcat's
//! balanced consumer, which then resumes at the sought offsets.
//!
//! Also: pointed at something that is not a Kafka broker, the subcommands
//! say so instead of printing a number from a misread frame.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Broker, kcat, require_tool, run_with_input, run_with_timeout};

/// Limit of one `sluice` admin command (they take milliseconds; a broker
/// that stops answering hits the client's own 30 s I/O limit first).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
const KCAT_TIMEOUT: Duration = Duration::from_secs(60);

/// Brokers of these tests: a short join window and few offsets partitions
/// (each preallocates a segment on the real disk).
fn start_broker(name: &str) -> Broker {
    Broker::start_with_args(
        name,
        &[
            "--group-initial-rebalance-delay-ms",
            "300",
            "--offsets-topic-partitions",
            "3",
        ],
    )
}

/// A `sluice` command with no bootstrap from the environment or from the
/// developer's own profile file.
fn sluice_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .env_remove("SLUICE_BOOTSTRAP")
        .env_remove("SLUICE_PROFILE")
        .env("XDG_CONFIG_HOME", "/nonexistent/sluice-test-config");
    command
}

/// `sluice ARGS --bootstrap BROKER`, with `input` on stdin.
fn sluice_with_input(broker: &Broker, args: &[&str], input: Option<&[u8]>) -> Output {
    let mut command = sluice_command();
    command
        .args(args)
        .arg("--bootstrap")
        .arg(broker.bootstrap());
    run_with_input(
        command,
        input.map(<[u8]>::to_vec),
        COMMAND_TIMEOUT,
        &format!("sluice {}", args.join(" ")),
    )
}

fn sluice(broker: &Broker, args: &[&str]) -> Output {
    sluice_with_input(broker, args, None)
}

/// stdout of a command that must succeed.
fn ok(output: Output, what: &[&str], broker: &Broker) -> String {
    assert!(
        output.status.success(),
        "sluice {} failed with {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n{}",
        what.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        broker.stderr_tail()
    );
    String::from_utf8(output.stdout).expect("stdout is UTF-8")
}

/// `sluice ARGS` must succeed: its stdout.
fn run_ok(broker: &Broker, args: &[&str]) -> String {
    ok(sluice(broker, args), args, broker)
}

/// `sluice ARGS --format json` must succeed and print one JSON document.
fn run_json(broker: &Broker, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["--format", "json"]);
    let stdout = run_ok(broker, &args);
    serde_json::from_str(&stdout)
        .unwrap_or_else(|error| panic!("sluice {}: not JSON ({error}):\n{stdout}", args.join(" ")))
}

/// `output` failed with `code` and a stderr naming every one of `needles`,
/// without a panic or a backtrace: the stderr.
fn assert_fails(output: &Output, code: i32, needles: &[&str], what: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(code),
        "{what}: exit status {}\nstderr: {stderr}\nstdout: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout)
    );
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{what}: stderr does not say {needle:?}: {stderr}"
        );
    }
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{what}: {stderr}"
    );
    stderr
}

/// Rows (split on whitespace) of the table whose header starts with
/// `first_header`, up to the next blank line; the header row first.
fn table(text: &str, first_header: &str) -> Vec<Vec<String>> {
    text.lines()
        .skip_while(|line| line.split_whitespace().next() != Some(first_header))
        .take_while(|line| !line.trim().is_empty())
        .map(|line| line.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn topic_commands_create_list_describe_alter_add_partitions_and_delete() {
    let broker = start_broker("admin_topic");

    // Bulk create with a config; the table names each topic.
    let created = run_ok(
        &broker,
        &[
            "topic",
            "create",
            "orders",
            "payments",
            "audit",
            "-p",
            "3",
            "-r",
            "1",
            "-c",
            "retention.ms=60000",
        ],
    );
    assert_eq!(
        table(&created, "TOPIC"),
        vec![
            vec!["TOPIC", "STATUS"],
            vec!["orders", "created"],
            vec!["payments", "created"],
            vec!["audit", "created"],
        ],
        "{created}"
    );
    // A topic of its own with the broker's default partition count.
    let json = run_json(&broker, &["topic", "create", "defaults"]);
    assert_eq!(json[0]["topic"], "defaults");
    assert_eq!(json[0]["error"], Value::Null);

    // List: table and JSON; internal topics only on request.
    let listed = run_ok(&broker, &["topic", "list"]);
    let rows = table(&listed, "TOPIC");
    assert_eq!(rows[0], vec!["TOPIC", "PARTITIONS", "REPLICAS"]);
    assert!(
        rows.contains(&vec!["orders".into(), "3".into(), "1".into()]),
        "{listed}"
    );
    assert!(!listed.contains("__consumer_offsets"), "{listed}");
    let json = run_json(&broker, &["topic", "list"]);
    let names: BTreeSet<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|topic| topic["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["audit", "defaults", "orders", "payments"])
    );

    // Describe: partitions with leader, replicas, ISR and offsets; configs
    // with their source.
    let produced = sluice_with_input(
        &broker,
        &["produce", "orders", "-p", "1"],
        Some(b"one\ntwo\n"),
    );
    ok(produced, &["produce"], &broker);
    let described = run_ok(&broker, &["topic", "describe", "orders"]);
    assert!(
        described.starts_with("Topic orders: id ")
            && described.contains("3 partitions, replication factor 1"),
        "{described}"
    );
    let partitions = table(&described, "PARTITION");
    assert_eq!(
        partitions[0],
        vec![
            "PARTITION",
            "LEADER",
            "EPOCH",
            "REPLICAS",
            "ISR",
            "LOG-START-OFFSET",
            "LOG-END-OFFSET"
        ]
    );
    assert_eq!(partitions.len(), 4, "{described}");
    assert_eq!(
        partitions[2][6], "2",
        "partition 1 holds two records: {described}"
    );
    let configs = table(&described, "CONFIG");
    assert!(
        configs.contains(&vec![
            "retention.ms".into(),
            "60000".into(),
            "DYNAMIC_TOPIC_CONFIG".into()
        ]),
        "{described}"
    );
    let json = run_json(&broker, &["topic", "describe", "orders", "payments"]);
    assert_eq!(json.as_array().unwrap().len(), 2);
    assert_eq!(json[0]["partitions"][1]["log_end"], 2);
    assert_eq!(
        json[0]["partitions"][1]["leader"],
        json[0]["partitions"][1]["replicas"][0]
    );

    // Alter configs: set one, delete one; describe shows both.
    let altered = run_ok(
        &broker,
        &[
            "topic",
            "alter-config",
            "orders",
            "--set",
            "cleanup.policy=compact",
            "--delete",
            "retention.ms",
        ],
    );
    assert!(altered.contains("configs altered"), "{altered}");
    let json = run_json(&broker, &["topic", "describe", "orders"]);
    let config = |name: &str| {
        json[0]["configs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|config| config["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no config {name}: {json}"))
    };
    assert_eq!(config("cleanup.policy")["value"], "compact");
    assert_eq!(config("cleanup.policy")["source"], "DYNAMIC_TOPIC_CONFIG");
    assert_eq!(config("retention.ms")["source"], "DEFAULT_CONFIG");

    // Add partitions: by a number, then to a total.
    let added = run_ok(&broker, &["topic", "add-partitions", "payments", "-n", "2"]);
    assert!(added.contains("added 2 partitions"), "{added}");
    run_ok(
        &broker,
        &["topic", "add-partitions", "audit", "--total", "6"],
    );
    let json = run_json(&broker, &["topic", "list"]);
    let count = |name: &str| {
        json.as_array()
            .unwrap()
            .iter()
            .find(|topic| topic["name"] == name)
            .map(|topic| topic["partitions"].as_u64().unwrap())
    };
    assert_eq!(count("payments"), Some(5));
    assert_eq!(count("audit"), Some(6));

    // Delete.
    let deleted = run_ok(&broker, &["topic", "delete", "audit", "defaults"]);
    assert_eq!(
        table(&deleted, "TOPIC")[1..],
        [vec!["audit", "deleted"], vec!["defaults", "deleted"]]
    );
    let listed = run_ok(&broker, &["topic", "list"]);
    assert!(
        !listed.contains("audit") && !listed.contains("defaults"),
        "{listed}"
    );

    // The errors a user makes: a clear message and a non-zero exit.
    assert_fails(
        &sluice(&broker, &["topic", "describe", "no-such-topic"]),
        1,
        &[
            "topic \"no-such-topic\" does not exist",
            "UNKNOWN_TOPIC_OR_PARTITION",
        ],
        "describe an unknown topic",
    );
    let output = sluice(&broker, &["topic", "create", "orders"]);
    assert_fails(
        &output,
        1,
        &["1 of 1 topics were not created"],
        "create twice",
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("TOPIC_ALREADY_EXISTS"),
        "{output:?}"
    );
    let output = sluice(
        &broker,
        &["topic", "create", "bad", "-c", "retention.ms=soon"],
    );
    assert_fails(
        &output,
        1,
        &["not created"],
        "create with a bad config value",
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("INVALID_CONFIG"),
        "{output:?}"
    );
    assert_fails(
        &sluice(
            &broker,
            &[
                "topic",
                "alter-config",
                "orders",
                "--set",
                "retention.ms=soon",
            ],
        ),
        1,
        &["INVALID_CONFIG", "retention.ms"],
        "alter with a bad config value",
    );
    assert_fails(
        &sluice(
            &broker,
            &[
                "topic",
                "alter-config",
                "no-such-topic",
                "--set",
                "retention.ms=1",
            ],
        ),
        1,
        &["does not exist"],
        "alter an unknown topic",
    );
    assert_fails(
        &sluice(&broker, &["topic", "alter-config", "orders"]),
        2,
        &["nothing to change"],
        "alter nothing",
    );
    assert_fails(
        &sluice(&broker, &["topic", "create", "x", "-c", "novalue"]),
        2,
        &["is not key=value"],
        "a config that is not key=value",
    );
    assert_fails(
        &sluice(&broker, &["topic", "create", "x", "-p", "0"]),
        2,
        &["--partitions"],
        "zero partitions",
    );
    assert_fails(
        &sluice(
            &broker,
            &["topic", "add-partitions", "orders", "--total", "2"],
        ),
        1,
        &["not changed"],
        "shrinking a topic",
    );
    assert_fails(
        &sluice(&broker, &["topic", "delete", "no-such-topic"]),
        1,
        &["1 of 1 topics were not deleted"],
        "delete an unknown topic",
    );
}

#[test]
fn cluster_info_and_health_describe_a_single_node() {
    let broker = start_broker("admin_cluster");
    run_ok(&broker, &["topic", "create", "events", "-p", "4"]);
    let info = run_ok(&broker, &["cluster", "info"]);
    assert!(info.starts_with("Cluster ID: "), "{info}");
    assert!(info.contains("Controller: 0"), "{info}");
    let port = broker.bootstrap().rsplit_once(':').unwrap().1.to_string();
    assert_eq!(
        table(&info, "ID"),
        vec![
            vec![
                "ID".to_string(),
                "HOST".into(),
                "PORT".into(),
                "RACK".into()
            ],
            vec!["0*".into(), "127.0.0.1".into(), port.clone(), "-".into()],
        ],
        "{info}"
    );
    let json = run_json(&broker, &["cluster", "info"]);
    assert_eq!(json["controller_id"], 0);
    assert_eq!(json["brokers"][0]["port"].to_string(), port);
    assert!(json["cluster_id"].is_string(), "{json}");

    let health = run_ok(&broker, &["cluster", "health"]);
    assert!(health.starts_with("Healthy: yes\n"), "{health}");
    assert!(
        health.contains("Partitions without a leader: none"),
        "{health}"
    );
    let json = run_json(&broker, &["cluster", "health"]);
    assert_eq!(json["healthy"], true);
    assert!(json["partition_count"].as_u64().unwrap() >= 4, "{json}");
}

#[test]
fn produce_then_consume_gives_the_lines_back_and_kcat_reads_the_same_records() {
    let broker = start_broker("admin_round_trip");
    run_ok(&broker, &["topic", "create", "lines", "-p", "3"]);
    let lines: Vec<String> = (0..300)
        .map(|index| format!("key-{index}:value {index}"))
        .collect();
    let input = lines.join("\n") + "\n";
    let produced = ok(
        sluice_with_input(
            &broker,
            &[
                "produce",
                "lines",
                "--key-separator",
                ":",
                "--header",
                "source=cli",
            ],
            Some(input.as_bytes()),
        ),
        &["produce"],
        &broker,
    );
    assert!(
        produced.starts_with("Produced 300 records to topic lines"),
        "{produced}"
    );

    // sluice consume --count: every line back, as key:value.
    let consumed = run_ok(
        &broker,
        &["consume", "lines", "--count", "300", "-f", "%k:%v\\n"],
    );
    let consumed: BTreeSet<&str> = consumed.lines().collect();
    let expected: BTreeSet<&str> = lines.iter().map(String::as_str).collect();
    assert_eq!(consumed, expected);

    // The same key always lands in the same partition (murmur2, as the
    // Java client): each key's partition is the same in a second produce.
    let json_lines = run_ok(&broker, &["consume", "lines", "-e", "--format", "json"]);
    let records: Vec<Value> = json_lines
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(records.len(), 300);
    assert!(
        records
            .iter()
            .all(|record| record["headers"]["source"] == "cli")
    );
    let partitions: BTreeSet<i64> = records
        .iter()
        .map(|record| record["partition"].as_i64().unwrap())
        .collect();
    assert_eq!(partitions.len(), 3, "keys spread over every partition");

    // kcat reads the same records: the batches are valid for other clients.
    if let Some(kcat_path) = require_tool("kcat") {
        let mut command = kcat(&kcat_path, &broker);
        command.args(["-C", "-t", "lines", "-e", "-q", "-f", "%k:%s|%h|%p\\n"]);
        let output = run_with_timeout(command, KCAT_TIMEOUT, "kcat -C");
        support::assert_success(&output, "kcat -C", &broker);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let mut seen = BTreeSet::new();
        for line in stdout.lines() {
            let mut fields = line.split('|');
            let record = fields.next().unwrap();
            assert_eq!(fields.next(), Some("source=cli"), "{line}");
            let partition: i64 = fields.next().unwrap().parse().unwrap();
            let sluice_partition = records
                .iter()
                .find(|json| {
                    format!(
                        "{}:{}",
                        json["key"].as_str().unwrap(),
                        json["value"].as_str().unwrap()
                    ) == record
                })
                .map(|json| json["partition"].as_i64().unwrap());
            assert_eq!(sluice_partition, Some(partition), "{line}");
            seen.insert(record.to_string());
        }
        let expected: BTreeSet<String> = lines.iter().cloned().collect();
        assert_eq!(seen, expected);

        // And sluice consume reads what kcat produced.
        let mut command = kcat(&kcat_path, &broker);
        command.args(["-P", "-t", "lines", "-p", "2"]);
        let output = run_with_input(
            command,
            Some(b"from-kcat-1\nfrom-kcat-2\n".to_vec()),
            KCAT_TIMEOUT,
            "kcat -P",
        );
        support::assert_success(&output, "kcat -P", &broker);
        let tail = run_ok(
            &broker,
            &["consume", "lines", "-p", "2", "-e", "-f", "%v\\n"],
        );
        let tail: Vec<&str> = tail.lines().collect();
        assert_eq!(tail[tail.len() - 2..], ["from-kcat-1", "from-kcat-2"]);

        // Keyed records land where the Java client puts them: librdkafka's
        // murmur2_random partitioner is the Java one, and kcat with it
        // puts every key in the partition sluice chose.
        run_ok(&broker, &["topic", "create", "java-keys", "-p", "3"]);
        let mut command = kcat(&kcat_path, &broker);
        command.args([
            "-P",
            "-t",
            "java-keys",
            "-K:",
            "-X",
            "topic.partitioner=murmur2_random",
        ]);
        let output = run_with_input(
            command,
            Some(input.clone().into_bytes()),
            KCAT_TIMEOUT,
            "kcat -P",
        );
        support::assert_success(&output, "kcat -P murmur2_random", &broker);
        let java: Vec<Value> = run_ok(&broker, &["consume", "java-keys", "-e", "--format", "json"])
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(java.len(), 300);
        for record in &java {
            let ours = records
                .iter()
                .find(|candidate| candidate["key"] == record["key"])
                .map(|candidate| &candidate["partition"]);
            assert_eq!(ours, Some(&record["partition"]), "key {}", record["key"]);
        }
    }

    // Start offsets: an offset, latest (nothing new: -e ends at once), a
    // timestamp (0: from the start), one partition.
    let from_offset = run_ok(
        &broker,
        &[
            "consume", "lines", "-p", "0", "-o", "5", "-n", "1", "-f", "%p:%o\\n",
        ],
    );
    assert_eq!(from_offset, "0:5\n");
    let from_latest = run_ok(&broker, &["consume", "lines", "-o", "latest", "-e"]);
    assert_eq!(from_latest, "");
    let from_timestamp = run_ok(
        &broker,
        &[
            "consume",
            "lines",
            "--timestamp",
            "0",
            "-p",
            "1",
            "-n",
            "1",
            "-f",
            "%o\\n",
        ],
    );
    assert_eq!(from_timestamp, "0\n");

    // --group commits what it printed: the next run continues after it.
    let first = run_ok(
        &broker,
        &[
            "consume",
            "lines",
            "-p",
            "0",
            "-g",
            "cli-group",
            "-n",
            "4",
            "-f",
            "%o\\n",
        ],
    );
    assert_eq!(first, "0\n1\n2\n3\n");
    let second = run_ok(
        &broker,
        &[
            "consume",
            "lines",
            "-p",
            "0",
            "-g",
            "cli-group",
            "-n",
            "2",
            "-f",
            "%o\\n",
        ],
    );
    assert_eq!(second, "4\n5\n");
    let described = run_json(&broker, &["group", "describe", "cli-group"]);
    assert_eq!(described["partitions"][0]["committed"], 6, "{described}");

    // acks=0 and acks=1 write too; a fixed partition is honoured.
    for acks in ["0", "1"] {
        let output = sluice_with_input(
            &broker,
            &["produce", "lines", "--acks", acks, "-p", "1"],
            Some(format!("acks-{acks}\n").as_bytes()),
        );
        ok(output, &["produce --acks"], &broker);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tail = run_ok(&broker, &["consume", "lines", "-p", "1", "-e"]);
        if tail.contains("acks-0\n") && tail.contains("acks-1\n") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "acks=0/1 records not read: {tail}"
        );
        thread::sleep(Duration::from_millis(100));
    }

    // The errors a user makes.
    assert_fails(
        &sluice(&broker, &["consume", "no-such-topic", "-n", "1"]),
        1,
        &["topic \"no-such-topic\" does not exist"],
        "consume an unknown topic",
    );
    assert_fails(
        &sluice(&broker, &["consume", "lines", "-p", "7", "-n", "1"]),
        1,
        &["has no partition 7 (it has 3)"],
        "consume a partition that does not exist",
    );
    assert_fails(
        &sluice(&broker, &["consume", "lines", "-o", "soon"]),
        2,
        &["not earliest, latest or an offset"],
        "a bad --offset",
    );
    assert_fails(
        &sluice(&broker, &["consume", "lines", "-f", "%x"]),
        2,
        &["unknown placeholder %x"],
        "a bad --record-format",
    );
    assert_fails(
        &sluice_with_input(
            &broker,
            &["produce", "lines", "-K", "\t"],
            Some(b"no tab here\n"),
        ),
        2,
        &["line 1 has no key separator"],
        "a line without its key separator",
    );
    assert_fails(
        &sluice_with_input(&broker, &["produce", "lines", "-p", "9"], Some(b"x\n")),
        1,
        &["has no partition 9"],
        "produce to a partition that does not exist",
    );
    assert_fails(
        &sluice(&broker, &["produce", "lines", "--acks", "2"]),
        2,
        &["--acks"],
        "a bad --acks",
    );
}

/// kcat's balanced consumer reads `topic` in `group` to the end and
/// commits: the values it read, in order per partition.
fn kcat_group_read(kcat_path: &Path, broker: &Broker, group: &str, topic: &str) -> Vec<String> {
    let mut command = kcat(kcat_path, broker);
    command
        .args(["-G", group, topic, "-e", "-q", "-f", "%s\\n"])
        .args(["-X", "auto.offset.reset=earliest"]);
    let output = run_with_timeout(command, KCAT_TIMEOUT, "kcat -G -e");
    support::assert_success(&output, "kcat -G -e", broker);
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn group_seek_moves_a_kcat_group_and_kcat_resumes_at_the_new_offsets() {
    let Some(kcat_path) = require_tool("kcat") else {
        return;
    };
    let broker = start_broker("admin_group_seek");
    run_ok(&broker, &["topic", "create", "seek-me", "-p", "2"]);
    for partition in ["0", "1"] {
        let input: String = (0..10)
            .map(|index| format!("p{partition}-{index}\n"))
            .collect();
        let output = sluice_with_input(
            &broker,
            &["produce", "seek-me", "-p", partition],
            Some(input.as_bytes()),
        );
        ok(output, &["produce"], &broker);
    }
    let all = kcat_group_read(&kcat_path, &broker, "kcat-group", "seek-me");
    assert_eq!(all.len(), 20, "{all:?}");

    // The group is Empty with both partitions committed at 10.
    let described = run_ok(&broker, &["group", "describe", "kcat-group"]);
    let rows = table(&described, "GROUP");
    assert_eq!(rows.len(), 3, "{described}");
    assert!(
        rows[1..].iter().all(|row| row[3] == "10" && row[4] == "10"),
        "{described}"
    );
    let listed = run_json(&broker, &["group", "list"]);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|group| group["group_id"] == "kcat-group"),
        "{listed}"
    );

    // Dry run: the plan, nothing committed.
    let plan = run_ok(
        &broker,
        &["group", "seek", "kcat-group", "--to-earliest", "--dry-run"],
    );
    assert!(plan.contains("dry run, nothing committed"), "{plan}");
    assert_eq!(
        table(&plan, "GROUP")[1..],
        [
            vec!["kcat-group", "seek-me", "0", "10", "0"],
            vec!["kcat-group", "seek-me", "1", "10", "0"]
        ]
    );
    let rows = table(
        &run_ok(&broker, &["group", "describe", "kcat-group"]),
        "GROUP",
    );
    assert!(rows[1..].iter().all(|row| row[3] == "10"), "{rows:?}");

    // Shift back by 3: kcat resumes at offset 7 of each partition.
    let json = run_json(
        &broker,
        &["group", "seek", "kcat-group", "--shift-by", "-3"],
    );
    assert_eq!(json["partitions"][0]["new"], 7, "{json}");
    let resumed = kcat_group_read(&kcat_path, &broker, "kcat-group", "seek-me");
    let resumed: BTreeSet<&str> = resumed.iter().map(String::as_str).collect();
    assert_eq!(
        resumed,
        BTreeSet::from(["p0-7", "p0-8", "p0-9", "p1-7", "p1-8", "p1-9"])
    );

    // To an offset on one topic, clamped to the log: 4 (and 99 -> 10).
    run_ok(
        &broker,
        &[
            "group",
            "seek",
            "kcat-group",
            "-t",
            "seek-me",
            "--to-offset",
            "4",
        ],
    );
    let resumed = kcat_group_read(&kcat_path, &broker, "kcat-group", "seek-me");
    assert_eq!(resumed.len(), 12, "{resumed:?}");
    let json = run_json(
        &broker,
        &["group", "seek", "kcat-group", "--to-offset", "99"],
    );
    assert_eq!(json["partitions"][1]["new"], 10, "{json}");

    // To a timestamp: records written after it (none before 0: all).
    run_ok(
        &broker,
        &["group", "seek", "kcat-group", "--to-timestamp", "0"],
    );
    assert_eq!(
        kcat_group_read(&kcat_path, &broker, "kcat-group", "seek-me").len(),
        20
    );
    let future = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 3_600_000)
        .to_string();
    let json = run_json(
        &broker,
        &["group", "seek", "kcat-group", "--to-timestamp", &future],
    );
    assert_eq!(json["partitions"][0]["new"], 10, "{json}");
    run_ok(&broker, &["group", "seek", "kcat-group", "--to-latest"]);
    assert!(kcat_group_read(&kcat_path, &broker, "kcat-group", "seek-me").is_empty());

    // Refused while the group has a member: kcat running without -e.
    let mut member = kcat(&kcat_path, &broker);
    member
        .args(["-G", "kcat-group", "seek-me", "-q"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut member = member.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let json = run_json(&broker, &["group", "describe", "kcat-group"]);
        if json["state"] == "Stable" {
            break;
        }
        assert!(Instant::now() < deadline, "kcat never joined: {json}");
        thread::sleep(Duration::from_millis(200));
    }
    let refused = sluice(&broker, &["group", "seek", "kcat-group", "--to-earliest"]);
    assert_fails(
        &refused,
        1,
        &["has 1 active member(s)", "stop its consumers first"],
        "seek an active group",
    );
    assert_fails(
        &sluice(&broker, &["group", "delete", "kcat-group"]),
        1,
        &["not deleted"],
        "delete an active group",
    );
    // SIGTERM: kcat leaves the group.
    // SAFETY: kill(2) on the pid of a child this test spawned and has not
    // reaped yet.
    unsafe {
        libc::kill(member.id() as libc::pid_t, libc::SIGTERM);
    }
    member.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let json = run_json(&broker, &["group", "describe", "kcat-group"]);
        if json["members"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(Instant::now() < deadline, "kcat never left: {json}");
        thread::sleep(Duration::from_millis(200));
    }

    // Delete: the group is gone.
    let deleted = run_ok(&broker, &["group", "delete", "kcat-group"]);
    assert!(deleted.contains("kcat-group  deleted"), "{deleted}");
    assert_fails(
        &sluice(&broker, &["group", "describe", "kcat-group"]),
        1,
        &["does not exist"],
        "describe a deleted group",
    );
    assert_fails(
        &sluice(&broker, &["groups", "delete", "no-such-group"]),
        1,
        &["not deleted"],
        "delete an unknown group (through the groups alias)",
    );
    assert_fails(
        &sluice(
            &broker,
            &["group", "seek", "no-such-group", "--to-earliest"],
        ),
        2,
        &["has no committed offsets", "--topic"],
        "seek a group without commits and without --topic",
    );
    assert_fails(
        &sluice(&broker, &["group", "seek", "kcat-group"]),
        2,
        &["--to-earliest"],
        "seek without a target",
    );
}

#[test]
fn transactions_list_and_describe_show_an_open_transaction_then_its_commit() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    let broker = start_broker("admin_transactions");
    run_ok(&broker, &["topic", "create", "txn-admin", "-p", "3"]);
    let producer: BaseProducer = support::kafka::config(&broker.bootstrap())
        .set("transactional.id", "admin-txn")
        .create()
        .expect("creating a transactional producer");
    let limit = Duration::from_secs(60);
    producer
        .init_transactions(limit)
        .expect("init_transactions");
    producer.begin_transaction().expect("begin_transaction");
    for partition in [0, 2] {
        producer
            .send(
                BaseRecord::<(), str>::to("txn-admin")
                    .partition(partition)
                    .payload("open"),
            )
            .map_err(|(error, _)| error)
            .expect("send");
    }
    producer.flush(limit).expect("flush");

    // list: the id, Ongoing, in both formats.
    let listed = run_ok(&broker, &["transactions", "list"]);
    let rows = table(&listed, "TRANSACTIONAL-ID");
    assert_eq!(
        rows[0],
        ["TRANSACTIONAL-ID", "COORDINATOR", "PRODUCER-ID", "STATE"],
        "{listed}"
    );
    let row = rows
        .iter()
        .find(|row| row[0] == "admin-txn")
        .unwrap_or_else(|| panic!("admin-txn is not listed:\n{listed}"));
    assert_eq!(row[3], "Ongoing", "{listed}");
    let json = run_json(&broker, &["transactions", "list"]);
    let entry = json
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["transactional_id"] == "admin-txn")
        .unwrap_or_else(|| panic!("{json}"));
    assert_eq!(entry["state"], "Ongoing");
    let producer_id = entry["producer_id"].as_i64().unwrap();
    assert!(producer_id >= 0, "{json}");

    // describe: producer id and epoch, the two partitions.
    let described = run_ok(&broker, &["transactions", "describe", "admin-txn"]);
    let rows = table(&described, "TRANSACTIONAL-ID");
    assert_eq!(rows.len(), 2, "{described}");
    assert_eq!(rows[1][0], "admin-txn");
    assert_eq!(rows[1][2], producer_id.to_string(), "{described}");
    assert_eq!(rows[1][3], "0", "epoch: {described}");
    assert_eq!(rows[1][4], "Ongoing", "{described}");
    assert_eq!(rows[1][8], "txn-admin-0,txn-admin-2", "{described}");
    let json = run_json(&broker, &["txn", "describe", "admin-txn"]);
    assert_eq!(json[0]["producer_id"], producer_id);
    assert_eq!(json[0]["producer_epoch"], 0);
    assert_eq!(json[0]["state"], "Ongoing");
    assert_eq!(
        json[0]["partitions"],
        serde_json::json!([
            {"topic": "txn-admin", "partition": 0},
            {"topic": "txn-admin", "partition": 2}
        ])
    );

    // After the commit: CompleteCommit (once the markers are written), no
    // partitions.
    producer
        .commit_transaction(limit)
        .expect("commit_transaction");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let json = run_json(&broker, &["transactions", "describe", "admin-txn"]);
        if json[0]["state"] == "CompleteCommit" {
            assert_eq!(json[0]["partitions"], serde_json::json!([]), "{json}");
            break;
        }
        assert!(Instant::now() < deadline, "never CompleteCommit: {json}");
        thread::sleep(Duration::from_millis(100));
    }
    let listed = run_ok(&broker, &["transactions", "list"]);
    assert!(
        table(&listed, "TRANSACTIONAL-ID")
            .iter()
            .any(|row| row[0] == "admin-txn" && row[3] == "CompleteCommit"),
        "{listed}"
    );

    // An unknown id: a clear error, exit code 1; the known one still
    // printed beside it.
    let output = sluice(&broker, &["transactions", "describe", "no-such-txn"]);
    assert_fails(
        &output,
        1,
        &[
            "\"no-such-txn\" does not exist",
            "TRANSACTIONAL_ID_NOT_FOUND",
        ],
        "an unknown transactional id",
    );
    let output = sluice(
        &broker,
        &["transactions", "describe", "admin-txn", "no-such-txn"],
    );
    assert_fails(
        &output,
        1,
        &["\"no-such-txn\" does not exist"],
        "one unknown id of two",
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("admin-txn"));
    // No id at all: invalid arguments.
    let output = sluice(&broker, &["transactions", "describe"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}

#[test]
fn the_bootstrap_comes_from_flag_environment_or_profile_and_bad_ones_are_named() {
    let broker = start_broker("admin_bootstrap");
    let directory = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("admin-profile-{}", std::process::id()));
    std::fs::create_dir_all(directory.join("sluice")).unwrap();
    let profile = directory.join("sluice").join("profile.toml");
    std::fs::write(
        &profile,
        format!("bootstrap = \"{}\"\n", broker.bootstrap()),
    )
    .unwrap();

    let run = |configure: &dyn Fn(&mut Command)| {
        let mut command = sluice_command();
        command.args(["cluster", "info"]);
        configure(&mut command);
        run_with_timeout(command, COMMAND_TIMEOUT, "sluice cluster info")
    };
    // The profile at $XDG_CONFIG_HOME/sluice/profile.toml.
    let output = run(&|command| {
        command.env("XDG_CONFIG_HOME", &directory);
    });
    ok(output, &["cluster info (profile)"], &broker);
    // SLUICE_PROFILE.
    let output = run(&|command| {
        command.env("SLUICE_PROFILE", &profile);
    });
    ok(output, &["cluster info (SLUICE_PROFILE)"], &broker);
    // SLUICE_BOOTSTRAP beats the profile.
    let output = run(&|command| {
        command
            .env("XDG_CONFIG_HOME", &directory)
            .env("SLUICE_BOOTSTRAP", "127.0.0.1:1");
    });
    assert_fails(
        &output,
        1,
        &["cannot connect to broker 127.0.0.1:1"],
        "env beats profile",
    );
    // A list: the first that answers.
    let list = format!("127.0.0.1:1,{}", broker.bootstrap());
    let output = run(&|command| {
        command.args(["--bootstrap", &list]);
    });
    ok(output, &["cluster info (list)"], &broker);

    // Bad ones: named, with where the address comes from.
    let output = run(&|command| {
        command.args(["--bootstrap", "127.0.0.1:1"]);
    });
    assert_fails(
        &output,
        1,
        &[
            "cannot connect to broker 127.0.0.1:1",
            "--bootstrap, SLUICE_BOOTSTRAP",
        ],
        "unreachable broker",
    );
    let output = run(&|command| {
        command.args(["--bootstrap", "no-port"]);
    });
    assert_fails(&output, 2, &["\"no-port\" is not host:port"], "no port");
    let output = run(&|command| {
        command.args(["--bootstrap", "no-such-host.invalid:9092"]);
    });
    assert_fails(
        &output,
        1,
        &["cannot resolve broker address"],
        "unknown host",
    );
    std::fs::write(&profile, "bootstrap_servers = \"x:1\"\n").unwrap();
    let output = run(&|command| {
        command.env("SLUICE_PROFILE", &profile);
    });
    assert_fails(
        &output,
        2,
        &["profile file", "bootstrap_servers"],
        "a typo in the profile",
    );
    let output = run(&|command| {
        command.env("SLUICE_PROFILE", directory.join("missing.toml"));
    });
    assert_fails(&output, 1, &["reading profile file"], "a missing profile");
    let _ = std::fs::remove_dir_all(&directory);
}

#[test]
fn progress_is_drawn_on_a_terminal_only() {
    let Some(script) = require_tool("script") else {
        return;
    };
    let broker = start_broker("admin_progress");
    let topics: Vec<String> = (0..40).map(|index| format!("bulk-{index:02}")).collect();
    // Not a terminal: stderr stays empty.
    let mut args = vec!["topic", "create"];
    args.extend(topics[..20].iter().map(String::as_str));
    let output = sluice(&broker, &args);
    assert!(output.status.success(), "{output:?}");
    assert!(output.stderr.is_empty(), "{output:?}");
    // A terminal (script(1) runs the command on a pseudo-terminal): the
    // progress line is drawn on it.
    let command_line = format!(
        "{} topic create {} --bootstrap {}",
        env!("CARGO_BIN_EXE_sluice"),
        topics[20..].join(" "),
        broker.bootstrap()
    );
    let mut command = Command::new(script);
    command.args(["-q", "-e", "-c", &command_line, "/dev/null"]);
    let output = run_with_timeout(command, COMMAND_TIMEOUT, "script sluice topic create");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(text.contains("creating topics"), "{text}");
    let listed = run_json(&broker, &["topic", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 40);
}

/// A one-connection server on a free loopback port: reads what the client
/// sends, answers `reply` (nothing: just closes), closes.
fn fake_server(reply: &'static [u8]) -> (String, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0_u8; 512];
        let _ = stream.read(&mut request);
        let _ = stream.write_all(reply);
    });
    (address, server)
}

fn groups_list(address: &str) -> (bool, String) {
    let output = sluice_command()
        .args(["groups", "list", "--bootstrap", address])
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn groups_list_against_an_http_server_says_it_does_not_speak_kafka() {
    let (address, server) = fake_server(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    let (success, stderr) = groups_list(&address);
    server.join().unwrap();
    assert!(!success, "succeeded against an HTTP server");
    assert!(
        stderr.contains(&format!("{address} does not speak the Kafka protocol"))
            && stderr.contains("\"HTTP\""),
        "stderr: {stderr}"
    );
    assert!(!stderr.contains("1213486160"), "stderr: {stderr}");
}

#[test]
fn groups_list_against_a_server_that_hangs_up_says_it_does_not_speak_kafka() {
    let (address, server) = fake_server(b"");
    let (success, stderr) = groups_list(&address);
    server.join().unwrap();
    assert!(!success);
    assert!(
        stderr.contains("does not speak the Kafka protocol")
            && stderr.contains("closed the connection without answering"),
        "stderr: {stderr}"
    );
}

/// `sluice topic reassign` and `reassignments` on a single node: what can
/// be done there (a new order of one replica is nothing to do), and the
/// mistakes a user makes, each a clear message and a non-zero exit. The
/// moves themselves are tested on three brokers (tests/replication.rs).
#[test]
fn topic_reassign_on_a_single_node_and_its_errors() {
    let broker = start_broker("cli-reassign");
    run_ok(&broker, &["topic", "create", "moves", "-p", "2"]);
    let same = run_ok(
        &broker,
        &[
            "topic",
            "reassign",
            "moves",
            "--replication-factor",
            "1",
            "--wait",
        ],
    );
    let rows = table(&same, "PARTITION");
    assert_eq!(rows.len(), 3, "a row per partition: {same}");
    assert!(
        rows[1..]
            .iter()
            .all(|row| row.last().map(String::as_str) == Some("done")),
        "{same}"
    );
    // The node's id, from the replica list it kept.
    let node = rows[1][1].clone();
    assert_eq!(
        run_json(&broker, &["topic", "reassignments"]),
        serde_json::json!([]),
        "nothing in progress"
    );
    let output = sluice(
        &broker,
        &[
            "topic",
            "reassign",
            "moves",
            "--replicas",
            &format!("{node},7"),
        ],
    );
    let stderr = assert_fails(
        &output,
        1,
        &["2 of 2 partitions were not reassigned"],
        "an unknown broker",
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("INVALID_REPLICA_ASSIGNMENT")
            && stdout.contains("broker 7 is not registered"),
        "the reason per partition: {stdout} {stderr}"
    );
    let output = sluice(
        &broker,
        &[
            "topic",
            "reassign",
            "moves",
            "-p",
            "0",
            "--replicas",
            &format!("{node},{node}"),
        ],
    );
    assert_fails(&output, 1, &["1 of 1 partitions"], "a broker twice");
    assert!(String::from_utf8_lossy(&output.stdout).contains("listed twice"));
    let output = sluice(
        &broker,
        &["topic", "reassign", "moves", "-p", "0", "--cancel"],
    );
    assert_fails(&output, 1, &["1 of 1 partitions"], "cancelling nothing");
    assert!(String::from_utf8_lossy(&output.stdout).contains("NO_REASSIGNMENT_IN_PROGRESS"));
    assert_fails(
        &sluice(
            &broker,
            &["topic", "reassign", "moves", "-p", "5", "--replicas", &node],
        ),
        1,
        &["has no partition 5"],
        "an unknown partition",
    );
    assert_fails(
        &sluice(
            &broker,
            &["topic", "reassign", "nowhere", "--replicas", &node],
        ),
        1,
        &["does not exist"],
        "an unknown topic",
    );
    assert_fails(
        &sluice(
            &broker,
            &["topic", "reassign", "moves", "--replication-factor", "2"],
        ),
        2,
        &["replication factor 2 asked, the cluster has 1 brokers"],
        "more replicas than brokers",
    );
    assert_fails(
        &sluice(&broker, &["topic", "reassign", "moves"]),
        2,
        &["--replicas"],
        "no target",
    );
}
