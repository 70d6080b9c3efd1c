//! A broker whose log stops after an I/O error halts (exit status 74), as
//! Kafka halts a broker whose only log directory failed: serving on, it
//! kept leading partitions it could no longer write, every produce
//! answered KAFKA_STORAGE_ERROR, and the cluster never moved them to the
//! healthy replicas (engine failure.rs, main.rs `storage_failure`). The
//! failure here: the partition's directory removed under the running
//! broker, so the next segment roll cannot create its file (ENOENT).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use support::Broker;
use support::kafka::{self, Record};

const TOPIC: &str = "doomed";

#[test]
fn a_log_stopped_by_an_io_error_halts_the_broker() {
    let mut broker = Broker::start("storage_failure");
    let bootstrap = broker.bootstrap();
    kafka::create_topic(&bootstrap, TOPIC, 1, &[("segment.bytes", "1048576")]);
    let record = |index: usize| Record {
        key: None,
        value: Some(vec![b'x'; 10_000 + index % 7]),
        headers: Vec::new(),
    };
    let first: Vec<Record> = (0..10).map(record).collect();
    kafka::produce_all(&bootstrap, TOPIC, Some(0), &first, &[("acks", "all")]);
    broker.assert_running();

    std::fs::remove_dir_all(broker.data_dir().join(format!("{TOPIC}-0"))).unwrap();
    // Past a segment's 1 MiB: the roll creates a file in the directory
    // that is gone.
    let (producer, _reports) = kafka::producer(
        &bootstrap,
        &[("acks", "all"), ("message.timeout.ms", "20000")],
    );
    for index in 0..300 {
        kafka::send(&producer, TOPIC, Some(0), index, &record(index));
        producer.poll(Duration::ZERO);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        producer.poll(Duration::from_millis(100));
        if let Some(status) = broker.exited() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the broker still runs with a stopped log:\n{}",
            broker.stderr_tail()
        );
    };
    let stderr = broker.stderr_all();
    assert_eq!(status.code(), Some(74), "{stderr}");
    assert!(
        stderr.contains("storage failure: halting"),
        "the reason is logged:\n{stderr}"
    );
    assert!(stderr.contains(&format!("{TOPIC}-0")), "{stderr}");
}

/// The broker raises its soft limit on open files to the hard one: a host's
/// default soft limit (often 1,024) is reached at a few hundred partitions,
/// and a segment roll failing with EMFILE stops a log (and, above, halts
/// the broker). Started here with a soft limit of 512 (inherited).
#[test]
fn the_broker_raises_its_open_file_limit_to_the_hard_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(got, 0);
    let hard = limit.rlim_max;
    assert!(hard > 512, "the hard limit here is {hard}");
    let lowered = libc::rlimit {
        rlim_cur: 512,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads the struct it is given; the children started
    // from now on inherit it (this test's process keeps 512, plenty).
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) }, 0);
    let broker = Broker::start("open_file_limit");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", broker.pid())).unwrap();
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[3], hard.to_string(), "soft limit: {line}");
    assert_eq!(fields[4], hard.to_string(), "hard limit: {line}");
}
