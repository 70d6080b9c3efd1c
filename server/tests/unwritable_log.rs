//! A broker whose log cannot be written keeps serving. Its stderr is often
//! a file on the data disk: when that disk fills, every log line fails with
//! ENOSPC. tracing-subscriber reported such a failure with `eprintln!`,
//! which panics when stderr fails, and a panic stops the broker: a full
//! disk (`sluice serve ... 2>>/data/sluice.log`) aborted the process
//! (status 134) at its next log line instead of answering the producers
//! with KAFKA_STORAGE_ERROR. Here stderr is /dev/full, where every write
//! fails with ENOSPC: the broker must start, take and serve acknowledged
//! writes, and stop cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;

use support::Broker;
use support::kafka::{self, Record};

const TOPIC: &str = "logged";
const PARTITIONS: i32 = 2;
const RECORDS: usize = 400;

#[test]
fn a_broker_whose_log_cannot_be_written_keeps_serving() {
    let full = Path::new("/dev/full");
    assert!(full.exists(), "/dev/full is part of every Linux system");
    let mut broker = Broker::start_with_stderr("unwritable_log", full);
    let bootstrap = broker.bootstrap();
    // Creating a topic logs (info) on every shard that opens a partition.
    kafka::create_topic(&bootstrap, TOPIC, PARTITIONS, &[]);
    let records: Vec<Record> = (0..RECORDS)
        .map(|index| Record {
            key: Some(format!("key-{index}").into_bytes()),
            value: Some(format!("value-{index}").into_bytes()),
            headers: Vec::new(),
        })
        .collect();
    let placed = kafka::produce_all(&bootstrap, TOPIC, None, &records, &[("acks", "all")]);
    broker.assert_running();
    let mut read = Vec::new();
    for partition in 0..PARTITIONS {
        for consumed in kafka::consume_all(&bootstrap, TOPIC, partition) {
            read.push(((consumed.partition, consumed.offset), consumed.record));
        }
    }
    read.sort_by_key(|(place, _)| *place);
    let mut expected: Vec<((i32, i64), Record)> = placed.into_iter().zip(records).collect();
    expected.sort_by_key(|(place, _)| *place);
    assert_eq!(
        read.len(),
        expected.len(),
        "every acknowledged record is read"
    );
    for ((read_place, read_record), (place, record)) in read.iter().zip(&expected) {
        assert_eq!(read_place, place);
        assert_eq!(read_record.value, record.value, "the record at {place:?}");
        assert_eq!(read_record.key, record.key, "the record at {place:?}");
    }
    // A clean stop logs too ("shutting down", each shard closing).
    broker.stop();
}
