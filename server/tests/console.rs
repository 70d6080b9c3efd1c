//! The web console on the admin HTTP port of a real `sluice` process,
//! in a real headless browser: a topic with three partitions is filled by
//! rdkafka, two consumer groups commit offsets that leave a known lag (one
//! with a live member, one whose id holds HTML), and
//! `python/console_browser.py` drives Debian's Chromium through
//! chromedriver (WebDriver over HTTP) over every page while a producer
//! keeps some traffic going for the charts. The pages must load without an
//! error in the browser's log and show the expected partitions and lags.
//! Screenshots and the browser's log go to
//! `<target>/test-artifacts/console/`.
//!
//! Needs `chromium` and `chromedriver` on PATH (Debian packages `chromium`
//! and `chromium-driver`, which `.ci/test` installs) and the test venv's
//! Python; without them the test skips loudly, under CI it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use support::kafka::{Record, config, create_topic, produce_all, producer, send};
use support::{Broker, missing_tool, require_python, reserve_port, run_with_timeout};

const TOPIC: &str = "console-orders";
/// Records produced to each partition of [`TOPIC`].
const RECORDS_PER_PARTITION: [i64; 3] = [30, 20, 10];
/// A group with one live member; its commits per partition.
const READERS: &str = "console-readers";
const READERS_COMMITTED: [i64; 3] = [10, 5, 0];
/// A group without members whose id is HTML: the page must show it as text.
const HOSTILE: &str = "<img src=x onerror=alert(1)><b>bold</b> & \"quoted\" 'group'";
const HOSTILE_COMMITTED: i64 = 25;
/// The topic a background producer writes to while the browser looks.
const TRAFFIC_TOPIC: &str = "console-traffic";
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

fn get(address: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(10)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: sluice\r\n\r\n").as_bytes())
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// Commit `offsets` (partition, offset) of [`TOPIC`] for `consumer`'s group.
fn commit(consumer: &BaseConsumer, offsets: &[(i32, i64)]) {
    let mut list = TopicPartitionList::new();
    for (partition, offset) in offsets {
        list.add_partition_offset(TOPIC, *partition, Offset::Offset(*offset))
            .unwrap();
    }
    consumer
        .commit(&list, CommitMode::Sync)
        .unwrap_or_else(|error| panic!("committing {offsets:?}: {error}"));
}

/// The executable `name` (from the Debian package `package`) on PATH, or
/// `None` (skip) / panic (CI).
fn browser_tool(name: &str, package: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|directory| directory.join(name))
        .find(|candidate| candidate.is_file())
        .or_else(|| {
            missing_tool(
                name,
                &format!(
                    "not on PATH; the console test drives headless Chromium: apt-get install \
                     chromium chromium-driver (Debian package {package})"
                ),
            )
        })
}

fn artifacts_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is <target>/tmp.
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .to_path_buf();
    target.join("test-artifacts").join("console")
}

#[test]
fn the_console_shows_topics_groups_with_their_lag_and_charts_in_a_headless_browser() {
    let Some(python) = require_python() else {
        return;
    };
    let Some(chromium) = browser_tool("chromium", "chromium") else {
        return;
    };
    let Some(chromedriver) = browser_tool("chromedriver", "chromium-driver") else {
        return;
    };
    let started = Instant::now();
    let broker = Broker::start_with_args("console", &["--group-initial-rebalance-delay-ms", "0"]);
    let bootstrap = broker.bootstrap();
    let admin = broker.admin_address();

    create_topic(&bootstrap, TOPIC, 3, &[("retention.ms", "86400000")]);
    create_topic(&bootstrap, TRAFFIC_TOPIC, 1, &[]);
    for (partition, count) in (0..).zip(RECORDS_PER_PARTITION) {
        let records: Vec<Record> = (0..count)
            .map(|index| Record {
                key: Some(format!("order-{index}").into_bytes()),
                value: Some(vec![b'o'; 200]),
                headers: Vec::new(),
            })
            .collect();
        produce_all(&bootstrap, TOPIC, Some(partition), &records, &[]);
    }

    // The readers: one member, subscribed (so the group is Stable with an
    // assignment), committing explicitly (no auto commit, so the lag stays).
    // It also reads the traffic topic, for the fetch chart.
    let readers: BaseConsumer = config(&bootstrap)
        .set("group.id", READERS)
        .set("client.id", "console-reader")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("creating the readers' consumer");
    readers.subscribe(&[TOPIC, TRAFFIC_TOPIC]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while readers.assignment().unwrap().count() < RECORDS_PER_PARTITION.len() + 1 {
        assert!(Instant::now() < deadline, "the readers got no assignment");
        readers.poll(Duration::from_millis(100));
    }
    let committed: Vec<(i32, i64)> = (0..).zip(READERS_COMMITTED).collect();
    commit(&readers, &committed);

    // The hostile group: a standalone commit, no member.
    let hostile: BaseConsumer = config(&bootstrap)
        .set("group.id", HOSTILE)
        .set("enable.auto.commit", "false")
        .create()
        .expect("creating the hostile group's consumer");
    commit(&hostile, &[(0, HOSTILE_COMMITTED)]);
    drop(hostile);

    // The JSON the page polls says the same as the page must.
    let (status, groups) = get(admin, "/v1/groups");
    assert_eq!(status, 200, "{groups}");
    let groups: serde_json::Value = serde_json::from_str(&groups).unwrap();
    let listed: Vec<&str> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|group| group["group_id"].as_str().unwrap())
        .collect();
    let mut wanted = vec![READERS, HOSTILE];
    wanted.sort_unstable();
    assert_eq!(listed, wanted, "groups by id");
    let (_, cluster) = get(admin, "/v1/cluster");
    let cluster: serde_json::Value = serde_json::from_str(&cluster).unwrap();
    let node_id = cluster["node_id"].as_i64().unwrap();

    // Keep a member alive and traffic flowing while the browser looks.
    let stop = Arc::new(AtomicBool::new(false));
    let background = {
        let stop = Arc::clone(&stop);
        let bootstrap = bootstrap.clone();
        std::thread::spawn(move || {
            let (traffic, _reports) = producer(&bootstrap, &[("linger.ms", "0")]);
            let record = Record {
                key: None,
                value: Some(vec![b't'; 1000]),
                headers: Vec::new(),
            };
            let mut index = 0;
            while !stop.load(Ordering::Relaxed) {
                send(&traffic, TRAFFIC_TOPIC, Some(0), index, &record);
                index += 1;
                traffic.poll(Duration::ZERO);
                readers.poll(Duration::from_millis(50));
            }
            let _ = traffic.flush(Duration::from_secs(10));
            drop(readers);
        })
    };

    let lags = |committed: &[i64]| -> serde_json::Value {
        (0..)
            .zip(committed)
            .map(|(partition, offset): (usize, &i64)| {
                (
                    partition.to_string(),
                    serde_json::json!(RECORDS_PER_PARTITION[partition] - offset),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let readers_lag: i64 = (0..3)
        .map(|partition| RECORDS_PER_PARTITION[partition] - READERS_COMMITTED[partition])
        .sum();
    let expect = serde_json::json!({
        "node_id": node_id,
        "topic": TOPIC,
        "end_offsets": RECORDS_PER_PARTITION,
        "config": ["retention.ms", "86400000"],
        "groups": [
            {
                "id": READERS,
                "state": "Stable",
                "members": 1,
                "lags": lags(&READERS_COMMITTED),
                "total_lag": readers_lag,
            },
            {
                "id": HOSTILE,
                "state": "Empty",
                "members": 0,
                "lags": lags(&[HOSTILE_COMMITTED]),
                "total_lag": RECORDS_PER_PARTITION[0] - HOSTILE_COMMITTED,
            },
        ],
    });
    let artifacts = artifacts_dir();
    std::fs::create_dir_all(&artifacts).expect("creating the artifacts directory");
    let script = support::repo_root().join("server/tests/python/console_browser.py");
    let mut command = Command::new(&python);
    command
        .arg(&script)
        .arg("--admin")
        .arg(format!("http://{admin}"))
        .arg("--chromedriver")
        .arg(&chromedriver)
        .arg("--chromium")
        .arg(&chromium)
        .arg("--driver-port")
        .arg(reserve_port().to_string())
        .arg("--artifacts")
        .arg(&artifacts)
        .arg("--expect")
        .arg(expect.to_string())
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let output = run_with_timeout(command, SCRIPT_TIMEOUT, "console_browser.py");
    stop.store(true, Ordering::Relaxed);
    background.join().expect("the background clients");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "console_browser.py failed ({}); artifacts in {}\nstdout:\n{stdout}\nstderr:\n{stderr}\n\
         broker stderr:\n{}",
        output.status,
        artifacts.display(),
        broker.stderr_tail()
    );
    eprintln!(
        "{stdout}console test took {:?}; screenshots in {}",
        started.elapsed(),
        artifacts.display()
    );
}

#[test]
fn the_console_page_and_its_assets_are_served_with_a_content_security_policy() {
    let broker = Broker::start("console_assets");
    let admin = broker.admin_address();
    for (path, kind) in [
        ("/", "text/html"),
        ("/console/", "text/html"),
        ("/console/console.js", "text/javascript"),
        ("/console/console.css", "text/css"),
    ] {
        let mut stream = TcpStream::connect(admin).unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes())
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 "), "{path}: {answer}");
        assert!(answer.contains(&format!("Content-Type: {kind}")), "{path}");
        assert!(
            answer.contains("Content-Security-Policy: default-src 'none'; script-src 'self'"),
            "{path}"
        );
    }
    for path in ["/v1/cluster", "/v1/topics", "/v1/groups", "/v1/counters"] {
        let (status, body) = get(admin, path);
        assert_eq!(status, 200, "{path}: {body}");
        let _: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|error| panic!("{path}: {error}: {body}"));
    }
    let (_, cluster) = get(admin, "/v1/cluster");
    let cluster: serde_json::Value = serde_json::from_str(&cluster).unwrap();
    assert_eq!(cluster["brokers"].as_array().unwrap().len(), 1, "{cluster}");
    assert_eq!(cluster["brokers"][0]["state"], "live", "{cluster}");
    let (status, _) = get(admin, "/console/missing.js");
    assert_eq!(status, 404);
}

/// In a cluster, every broker's console lists every group, described by
/// its coordinator (whichever broker that is), with the lag from the
/// partitions' leaders on other brokers: `/v1/groups` of each of the three
/// brokers shows twelve groups coordinated by several brokers, each with its
/// exact lag.
#[test]
fn in_a_cluster_every_brokers_console_lists_every_group_with_its_lag() {
    let cluster = support::cluster::Cluster::start(
        "console-cluster",
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
    let bootstrap = cluster.bootstrap();
    support::kafka::create_topic_replicated(&bootstrap, TOPIC, 3, 1, &[]);
    for (partition, count) in (0..).zip(RECORDS_PER_PARTITION) {
        let records: Vec<Record> = (0..count)
            .map(|index| Record {
                key: None,
                value: Some(format!("record-{index}").into_bytes()),
                headers: Vec::new(),
            })
            .collect();
        produce_all(&bootstrap, TOPIC, Some(partition), &records, &[]);
    }
    let groups: Vec<String> = (0..12)
        .map(|index| format!("console-group-{index}"))
        .collect();
    for group in &groups {
        let consumer: BaseConsumer = config(&bootstrap)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("creating a group's consumer");
        commit(&consumer, &[(0, 10), (1, 5), (2, 0)]);
    }
    let expected_lag: i64 = RECORDS_PER_PARTITION
        .iter()
        .zip([10, 5, 0])
        .map(|(end, committed)| end - committed)
        .sum();
    for node in cluster.nodes() {
        let (status, body) = get(cluster.broker(node).admin_address(), "/v1/groups");
        assert_eq!(status, 200, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["coordinated_here_only"], false, "{json}");
        let listed: Vec<&serde_json::Value> = json["groups"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|group| groups.iter().any(|id| group["group_id"] == id.as_str()))
            .collect();
        assert_eq!(listed.len(), groups.len(), "node {node}: {json}");
        for group in &listed {
            assert_eq!(group["total_lag"], expected_lag, "node {node}: {group}");
        }
        let coordinators: std::collections::BTreeSet<i64> = listed
            .iter()
            .map(|group| group["coordinator"].as_i64().unwrap())
            .collect();
        assert!(
            coordinators.len() >= 2,
            "groups coordinated by several brokers: {coordinators:?}"
        );
    }
}
