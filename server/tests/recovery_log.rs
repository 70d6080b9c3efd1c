//! What the broker says at info about recovery: after kill -9, the start
//! logs, for each partition that needed recovery, what the scan found past
//! the checkpoint and how long it took; after a clean stop it logs none.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;

use support::Broker;
use support::kafka::{self, Record};

const TOPIC: &str = "recovered";

fn stderr_of_start(broker: &Broker, start: usize) -> String {
    let path: PathBuf = broker
        .data_dir()
        .parent()
        .expect("the data directory has a parent")
        .join("logs")
        .join(format!("stderr-{start}.log"));
    std::fs::read_to_string(&path).expect("reading the broker's stderr")
}

/// The "recovered log" lines of the partitions of [`TOPIC`].
fn recovery_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|line| line.contains("recovered log") && line.contains(&format!("{TOPIC}-")))
        .collect()
}

#[test]
fn a_start_after_kill_9_logs_what_recovery_scanned_and_a_clean_start_logs_nothing() {
    let mut broker = Broker::start("recovery-log");
    kafka::create_topic(&broker.bootstrap(), TOPIC, 2, &[]);
    let records: Vec<Record> = (0..50)
        .map(|index| Record {
            key: None,
            value: Some(format!("record {index}").into_bytes()),
            headers: Vec::new(),
        })
        .collect();
    kafka::produce_all(&broker.bootstrap(), TOPIC, Some(0), &records, &[]);

    broker.restart();
    let clean = stderr_of_start(&broker, 1);
    assert_eq!(
        recovery_lines(&clean),
        Vec::<&str>::new(),
        "a start after a clean stop recovers nothing"
    );

    kafka::produce_all(&broker.bootstrap(), TOPIC, Some(0), &records, &[]);
    broker.kill9();
    broker.start_again();
    let after_crash = stderr_of_start(&broker, 2);
    let lines = recovery_lines(&after_crash);
    assert_eq!(
        lines.len(),
        1,
        "one partition held data written after its checkpoint:\n{after_crash}"
    );
    let line = lines[0];
    assert!(line.contains(" INFO "), "{line}");
    assert!(line.contains(&format!("{TOPIC}-0")), "{line}");
    assert!(line.contains("past the checkpoint"), "{line}");
    assert!(line.contains(" ms"), "{line}");
    assert_eq!(
        kafka::watermarks(&broker.bootstrap(), TOPIC, 0),
        (0, 100),
        "every acknowledged record survived"
    );
}
