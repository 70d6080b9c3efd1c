//! The admin HTTP port of a real `sluice` process (`--admin-listen`):
//! `/metrics` counts what real clients did (parsed by Prometheus's own
//! Python parser, `prometheus_client`, from the test venv), the health
//! endpoints say live and ready, malformed or slow HTTP clients are refused
//! without disturbing anyone, and a taken admin port stops the broker at
//! startup with a clear message.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::kafka::{Record, consume_partition, produce_all};
use support::{
    Broker, answers_api_versions, missing_tool, require_python, reserve_port, run_with_input,
    run_with_timeout,
};

const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// One request on a new connection: the status code and the body.
fn http(address: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&address, HTTP_TIMEOUT)
        .unwrap_or_else(|error| panic!("connecting to the admin port {address}: {error}"));
    stream.set_read_timeout(Some(HTTP_TIMEOUT)).unwrap();
    stream.write_all(request).unwrap();
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .unwrap_or_else(|error| panic!("reading the admin answer: {error}"));
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {answer:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_string())
}

fn get(address: SocketAddr, path: &str) -> (u16, String) {
    http(
        address,
        format!("GET {path} HTTP/1.1\r\nHost: sluice\r\n\r\n").as_bytes(),
    )
}

/// One sample: its name and labels.
type Key = (String, BTreeMap<String, String>);

/// Parse an exposition with `prometheus_client`'s text parser (the
/// reference for the 0.0.4 format); `None` when the venv lacks it (skip).
fn parse_exposition(python: &Path, text: &str) -> Option<BTreeMap<Key, f64>> {
    let check = Command::new(python)
        .args(["-c", "import prometheus_client"])
        .output()
        .expect("running the venv's python");
    if !check.status.success() {
        return missing_tool(
            "prometheus_client",
            "the Python package in the test venv (.ci/test installs it)",
        );
    }
    let script = "\
import json, sys
from prometheus_client.parser import text_string_to_metric_families
samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        samples.append([sample.name, sample.labels, sample.value])
print(json.dumps(samples))
";
    let mut command = Command::new(python);
    command.args(["-c", script]);
    let output = run_with_input(
        command,
        Some(text.as_bytes().to_vec()),
        HTTP_TIMEOUT,
        "prometheus_client's parser",
    );
    assert!(
        output.status.success(),
        "prometheus_client refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let samples: Vec<(String, BTreeMap<String, String>, f64)> =
        serde_json::from_slice(&output.stdout).expect("the parser's JSON");
    Some(
        samples
            .into_iter()
            .map(|(name, labels, value)| ((name, labels), value))
            .collect(),
    )
}

fn value(samples: &BTreeMap<Key, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let key = (
        name.to_string(),
        labels
            .iter()
            .map(|(label, value)| (label.to_string(), value.to_string()))
            .collect(),
    );
    *samples
        .get(&key)
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
}

/// Sum of every sample named `name`, whatever its labels.
fn total(samples: &BTreeMap<Key, f64>, name: &str) -> f64 {
    samples
        .iter()
        .filter(|((sample, _), _)| sample == name)
        .map(|(_, value)| value)
        .sum()
}

#[test]
fn metrics_count_the_records_a_client_produced_and_consumed() {
    let Some(python) = require_python() else {
        return;
    };
    let broker = Broker::start("metrics_counts");
    let topic = "metered";
    let count = 500;
    let records: Vec<Record> = (0..count)
        .map(|index| Record {
            key: Some(format!("key-{index}").into_bytes()),
            value: Some(vec![b'v'; 100 + index % 50]),
            headers: Vec::new(),
        })
        .collect();
    produce_all(
        &broker.bootstrap(),
        topic,
        Some(0),
        &records,
        &[("acks", "all"), ("linger.ms", "5")],
    );
    let consumed = consume_partition(&broker.bootstrap(), topic, 0, 0, count as i64);
    assert_eq!(consumed.len(), count);
    // A group that committed offset 120 of the 500: lag 380.
    commit_offset(&broker.bootstrap(), "metered-group", topic, 120);

    let (status, text) = get(broker.admin_address(), "/metrics");
    assert_eq!(status, 200, "{text}");
    let Some(samples) = parse_exposition(&python, &text) else {
        return;
    };
    let requests = |api: &str| value(&samples, "sluice_kafka_requests_total", &[("api", api)]);
    for api in ["ApiVersions", "Metadata", "Produce", "Fetch"] {
        assert!(requests(api) >= 1.0, "{api}: {}\n{text}", requests(api));
        assert_eq!(
            value(
                &samples,
                "sluice_kafka_request_errors_total",
                &[("api", api)]
            ),
            0.0,
            "{api}"
        );
        // Every request read was answered and timed, but for a long-poll
        // fetch of the consumer that may still be waiting.
        let timed = value(
            &samples,
            "sluice_kafka_request_duration_seconds_count",
            &[("api", api)],
        );
        let in_flight_max = if api == "Fetch" { 2.0 } else { 0.0 };
        assert!(
            timed <= requests(api) && timed >= requests(api) - in_flight_max,
            "{api}: {timed} timed of {} read",
            requests(api)
        );
    }
    assert_eq!(
        value(&samples, "sluice_produce_records_total", &[]),
        count as f64
    );
    assert_eq!(
        value(&samples, "sluice_produce_partition_errors_total", &[]),
        0.0
    );
    let partition = [("topic", topic), ("partition", "0")];
    let size_bytes = value(&samples, "sluice_partition_log_size_bytes", &partition);
    assert_eq!(
        value(&samples, "sluice_produce_bytes_total", &[]),
        size_bytes,
        "every produced batch byte is in the log, once"
    );
    assert!(
        value(
            &samples,
            "sluice_kafka_response_bytes_total",
            &[("api", "Fetch")]
        ) >= size_bytes,
        "the consumer fetched every batch"
    );
    assert!(
        value(
            &samples,
            "sluice_kafka_request_bytes_total",
            &[("api", "Produce")]
        ) >= size_bytes
    );
    for gauge in [
        "sluice_partition_log_end_offset",
        "sluice_partition_high_watermark",
    ] {
        assert_eq!(value(&samples, gauge, &partition), count as f64, "{gauge}");
    }
    assert_eq!(
        value(&samples, "sluice_partition_isr_size", &partition),
        1.0
    );
    assert!(total(&samples, "sluice_commit_rounds_total") >= 1.0);
    // The default sync mode (write-through) makes each segment write
    // durable by itself instead of calling fdatasync.
    assert!(total(&samples, "sluice_commit_durable_writes_total") >= 1.0);
    assert_eq!(total(&samples, "sluice_commit_fsyncs_total"), 0.0);
    assert!(total(&samples, "sluice_commit_write_bytes_total") >= size_bytes);
    // One sync duration and one flush size per log flush; the sizes add
    // up to the bytes written.
    assert_eq!(
        total(&samples, "sluice_commit_sync_duration_seconds_count"),
        total(&samples, "sluice_commit_log_flushes_total")
    );
    assert!(total(&samples, "sluice_commit_sync_duration_seconds_sum") > 0.0);
    assert_eq!(
        total(&samples, "sluice_commit_flush_bytes_sum"),
        total(&samples, "sluice_commit_write_bytes_total")
    );
    assert_eq!(
        total(&samples, "sluice_commit_flush_bytes_count"),
        total(&samples, "sluice_commit_log_flushes_total")
    );
    assert!(
        value(
            &samples,
            "sluice_connections_accepted_total",
            &[("listener", "PLAINTEXT")]
        ) >= 2.0
    );
    assert_eq!(value(&samples, "sluice_broker_ready", &[]), 1.0);
    assert_eq!(value(&samples, "sluice_controller_active", &[]), 1.0);
    assert!(value(&samples, "sluice_controller_metadata_offset", &[]) >= 1.0);
    assert!(value(&samples, "sluice_partitions_leader", &[]) >= 1.0);
    assert_eq!(value(&samples, "sluice_partitions_offline", &[]), 0.0);
    assert_eq!(
        value(&samples, "sluice_partitions_under_replicated", &[]),
        0.0
    );
    assert_eq!(value(&samples, "sluice_scrape_shards_missing", &[]), 0.0);
    // Records were produced: their partitions' tails hold write chunks.
    let chunks = value(&samples, "sluice_memory_write_chunk_bytes", &[]);
    assert!(chunks >= 4096.0, "{chunks}");
    assert!(value(&samples, "sluice_memory_write_chunk_retained_bytes", &[]) <= chunks);
    assert!(value(&samples, "sluice_memory_malloc_in_use_bytes", &[]) >= chunks);
    let group = [
        ("group", "metered-group"),
        ("topic", topic),
        ("partition", "0"),
    ];
    assert_eq!(
        value(&samples, "sluice_consumer_group_committed_offset", &group),
        120.0
    );
    assert_eq!(
        value(&samples, "sluice_consumer_group_lag", &group),
        (count - 120) as f64
    );
    assert_eq!(
        value(
            &samples,
            "sluice_consumer_group_members",
            &[("group", "metered-group")]
        ),
        0.0
    );
}

/// Commit `offset` for `group` on partition 0 of `topic` (no member).
fn commit_offset(bootstrap: &str, group: &str, topic: &str, offset: i64) {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    let consumer: BaseConsumer = support::kafka::config(bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut offsets = rdkafka::TopicPartitionList::new();
    offsets
        .add_partition_offset(topic, 0, rdkafka::Offset::Offset(offset))
        .unwrap();
    consumer.commit(&offsets, CommitMode::Sync).unwrap();
}

#[test]
fn a_serving_broker_is_live_and_ready_and_bad_http_is_refused_while_it_keeps_serving() {
    let mut broker = Broker::start("metrics_health");
    let admin = broker.admin_address();
    assert_eq!(get(admin, "/v1/status/live"), (200, "live\n".to_string()));
    assert_eq!(get(admin, "/v1/status/ready"), (200, "ready\n".to_string()));
    assert_eq!(get(admin, "/v1/status/nothing").0, 404);
    assert_eq!(
        http(
            admin,
            b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
        )
        .0,
        405
    );
    // A TLS ClientHello, and a line that is not HTTP at all.
    let (status, body) = http(
        admin,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = http(admin, b"hello there\r\n\r\n");
    assert_eq!(status, 400, "{body}");
    assert!(body.starts_with("bad request"), "{body}");
    let oversized = [b"GET /metrics HTTP/1.1\r\nX: ".to_vec(), vec![b'x'; 20_000]].concat();
    assert_eq!(http(admin, &oversized).0, 431);

    // Clients that connect and say nothing hold a thread each, not the
    // server: others are answered at once.
    let silent: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(admin).unwrap()).collect();
    let started = Instant::now();
    assert_eq!(get(admin, "/v1/status/live").0, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a live probe waited {:?} behind silent clients",
        started.elapsed()
    );
    drop(silent);

    assert!(answers_api_versions(broker.address()));
    assert_eq!(get(admin, "/metrics").0, 200);
    broker.assert_running();
}

#[test]
fn a_broker_waiting_for_its_controller_quorum_is_live_but_not_ready() {
    // Node 1 of three voters, started alone: it waits for a quorum.
    let controller_ports: Vec<u16> = (0..3).map(|_| reserve_port()).collect();
    let voters = (1..=3)
        .map(|node| format!("{node}@127.0.0.1:{}", controller_ports[node - 1]))
        .collect::<Vec<_>>()
        .join(",");
    let args = [
        "--node-id".to_string(),
        "1".to_string(),
        "--controller-voters".to_string(),
        voters,
        "--controller-listen".to_string(),
        format!("127.0.0.1:{}", controller_ports[0]),
    ];
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("metrics")
        .join(format!("not-ready-{}", std::process::id()));
    let mut broker = Broker::spawn_in("metrics_not_ready", &root, reserve_port(), &args);
    let admin = broker.admin_address();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(admin).is_err() {
        broker.assert_running();
        assert!(Instant::now() < deadline, "the admin port never opened");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get(admin, "/v1/status/live"), (200, "live\n".to_string()));
    let (status, body) = get(admin, "/v1/status/ready");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("not ready: waiting for the controller"),
        "{body}"
    );
    let (status, text) = get(admin, "/metrics");
    assert_eq!(status, 200);
    assert!(text.contains("\nsluice_broker_ready 0\n"), "{text}");
    assert!(!answers_api_versions(broker.address()));
    broker.assert_running();
}

#[test]
fn a_broker_whose_admin_port_is_taken_refuses_to_start_and_says_why() {
    let holder = TcpListener::bind(("127.0.0.1", reserve_port())).unwrap();
    let admin = holder.local_addr().unwrap();
    let data_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("metrics")
        .join(format!("admin-taken-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    std::fs::create_dir_all(&data_dir).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--cores", "1", "--listen"])
        .arg(format!("127.0.0.1:{}", reserve_port()))
        .arg("--admin-listen")
        .arg(admin.to_string())
        .env("NO_COLOR", "1");
    let output = run_with_timeout(
        command,
        Duration::from_secs(30),
        "sluice on a taken admin port",
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&admin.to_string())
            && stderr.contains("--admin-listen")
            && stderr.contains("address in use"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let _ = std::fs::remove_dir_all(&data_dir);
}
