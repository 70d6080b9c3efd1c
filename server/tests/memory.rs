//! Memory with many partitions: one topic of 1000 partitions created by
//! CreateTopics, one record written to each, then 128 KiB more to each,
//! then a restart; the broker's
//! resident set (VmRSS) must stay under a generous bound at every step, and
//! the figures are printed (`cargo test --test memory -- --nocapture`).
//!
//! The topic uses 1 MiB segments: the engine preallocates a written
//! segment in 64 MiB steps capped by segment.bytes, so with the default
//! segment size 1000 written partitions would reserve 64 GB of disk.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use rdkafka::producer::Producer;
use support::Broker;
use support::kafka::{self, Record};

const PARTITION_COUNT: i32 = 1000;
const RSS_BYTES_MAX: u64 = 1 << 30;

fn mebibytes(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn check_rss(broker: &Broker, step: &str) -> u64 {
    let rss = broker.rss_bytes();
    println!(
        "RSS with {PARTITION_COUNT} partitions, {step}: {:.1} MiB",
        mebibytes(rss)
    );
    assert!(
        rss < RSS_BYTES_MAX,
        "{step}: RSS {:.1} MiB exceeds {:.0} MiB",
        mebibytes(rss),
        mebibytes(RSS_BYTES_MAX)
    );
    rss
}

#[test]
fn a_thousand_partitions_fit_in_a_gibibyte_of_memory() {
    let mut broker = Broker::start("memory_1000_partitions");
    let bootstrap = broker.bootstrap();
    check_rss(&broker, "empty broker");

    let started = Instant::now();
    kafka::create_topic(
        &bootstrap,
        "thousand",
        PARTITION_COUNT,
        &[("segment.bytes", "1048576")],
    );
    println!(
        "CreateTopics of {PARTITION_COUNT} partitions: {:?}",
        started.elapsed()
    );
    let partitions = kafka::topic_partition_counts(&bootstrap).expect("metadata");
    assert_eq!(
        partitions.get("thousand"),
        Some(&(PARTITION_COUNT as usize)),
        "metadata lists every partition"
    );
    check_rss(&broker, "after CreateTopics");

    let started = Instant::now();
    let (producer, reports) = kafka::producer(&bootstrap, &[("acks", "all"), ("linger.ms", "50")]);
    for partition in 0..PARTITION_COUNT {
        let record = Record {
            key: Some(format!("key-{partition}").into_bytes()),
            value: Some(vec![b'm'; 1000]),
            headers: Vec::new(),
        };
        kafka::send(
            &producer,
            "thousand",
            Some(partition),
            partition as usize,
            &record,
        );
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(120)).expect("flushing");
    let reports = reports.0.lock().expect("reports");
    assert_eq!(
        reports.len(),
        PARTITION_COUNT as usize,
        "one report per record"
    );
    for (index, outcome) in reports.iter() {
        let (partition, offset) = outcome
            .as_ref()
            .unwrap_or_else(|error| panic!("record for partition {index}: {error}"));
        assert_eq!(
            (*partition, *offset),
            (*index as i32, 0),
            "one record per partition"
        );
    }
    println!("one record into each partition: {:?}", started.elapsed());
    check_rss(&broker, "after one record per partition");

    // Then 128 KiB more into each (128 MiB in all): every partition's write
    // buffer grows past its first chunk.
    let started = Instant::now();
    let (producer, reports) = kafka::producer(&bootstrap, &[("acks", "all"), ("linger.ms", "20")]);
    let record = Record {
        key: None,
        value: Some(vec![b'n'; 8 << 10]),
        headers: Vec::new(),
    };
    for round in 0..16 {
        for partition in 0..PARTITION_COUNT {
            let index = (round * PARTITION_COUNT + partition) as usize;
            kafka::send(&producer, "thousand", Some(partition), index, &record);
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flushing");
    let reports = reports.0.lock().expect("reports");
    assert_eq!(
        reports.len(),
        16 * PARTITION_COUNT as usize,
        "one report per record"
    );
    if let Some((index, Err(error))) = reports.iter().find(|(_, outcome)| outcome.is_err()) {
        panic!("record {index}: {error}");
    }
    println!("128 KiB more into each partition: {:?}", started.elapsed());
    check_rss(&broker, "after 128 KiB more per partition");

    let started = Instant::now();
    broker.restart();
    println!(
        "clean restart with {PARTITION_COUNT} partitions: {:?}",
        started.elapsed()
    );
    check_rss(&broker, "after a restart");
    for partition in [0, 1, 499, 998, 999] {
        assert_eq!(
            kafka::watermarks(&bootstrap, "thousand", partition),
            (0, 17),
            "partition {partition} after the restart"
        );
    }
}
