//! Memory with many partitions, on a real broker process:
//! - one topic of 1000 partitions created by CreateTopics, one record
//!   written to each, then 128 KiB more to each, then a restart; the
//!   broker's resident set (VmRSS) must stay under a generous bound at
//!   every step;
//! - issue 11: memory is returned when topics are deleted. Cycles of
//!   create a topic of many partitions / write 64 KiB to each / delete it
//!   must bring the resident set back near the empty broker's, and not
//!   let it creep up from one cycle to the next.
//!
//! The figures are printed (`cargo test --test memory -- --nocapture`).
//! The cycles run with 2,000 partitions and 3 cycles; outside CI, the
//! issue's scale is `SLUICE_MEMORY_PARTITIONS=10000` (and
//! `SLUICE_MEMORY_CYCLES`), best with `--release`.
//!
//! The topics use 1 MiB segments: the engine preallocates a written
//! segment in 64 MiB steps capped by segment.bytes, so with the default
//! segment size 1000 written partitions would reserve 64 GB of disk.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use rdkafka::admin::AdminOptions;
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

/// Partitions of each cycle's topic (`SLUICE_MEMORY_PARTITIONS`).
const CYCLE_PARTITIONS_DEFAULT: i32 = 2000;
/// Create / write / delete cycles (`SLUICE_MEMORY_CYCLES`).
const CYCLES_DEFAULT: usize = 3;
/// Written to each partition per cycle: 8 records of 8 KiB, so every
/// partition's write buffer grows past its first 64 KiB chunk.
const RECORDS_PER_PARTITION: i32 = 8;
const RECORD_VALUE_BYTES: usize = 8 << 10;
/// segment.bytes of the cycles' topics: each partition's 64 KiB fits one
/// segment, and the disk reserved (a segment's first preallocation is
/// capped by it) stays at 500 MB for 2,000 partitions, 2.5 GB for 10,000.
const CYCLE_SEGMENT_BYTES: &str = "262144";
/// How far above the empty broker's resident set a deleted topic may leave
/// it. Before the fix, the first 2,000-partition cycle (125 MiB written)
/// left the debug broker at 191 MiB after the deletion, 167 MiB above its
/// empty 24 MiB, and 10,000 partitions (release) left 2.5-3.0 GB; with it,
/// 13-22 MiB above the empty broker. So the bound fails on memory kept, while leaving room for
/// what a used broker legitimately keeps (metadata of the deleted topics,
/// allocator bookkeeping, thread caches).
const RETAINED_BYTES_MAX: u64 = 40 << 20;
/// How much the resident set after a deletion may grow from the first
/// cycle to the last (memory kept per cycle adds up over the cycles).
const GROWTH_BYTES_MAX: u64 = 12 << 20;
/// How long after the deletion the resident set is first read: the broker
/// releases memory one second after a removal.
const RELEASE_SETTLE_MIN: Duration = Duration::from_secs(2);
/// How long the resident set may keep moving after that.
const RELEASE_WAIT_MAX: Duration = Duration::from_secs(20);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a number")),
        Err(_) => default,
    }
}

/// Write `RECORDS_PER_PARTITION` records of `RECORD_VALUE_BYTES` to every
/// partition of `topic` (acks=all); panics unless all are delivered.
fn write_every_partition(bootstrap: &str, topic: &str, partitions: i32) {
    let (producer, reports) = kafka::producer(
        bootstrap,
        &[
            ("acks", "all"),
            ("linger.ms", "20"),
            ("queue.buffering.max.kbytes", "262144"),
        ],
    );
    let record = Record {
        key: None,
        value: Some(vec![b'c'; RECORD_VALUE_BYTES]),
        headers: Vec::new(),
    };
    for round in 0..RECORDS_PER_PARTITION {
        for partition in 0..partitions {
            let index = (round * partitions + partition) as usize;
            kafka::send(&producer, topic, Some(partition), index, &record);
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(300)).expect("flushing");
    let reports = reports.0.lock().expect("reports");
    assert_eq!(
        reports.len(),
        (RECORDS_PER_PARTITION * partitions) as usize,
        "one report per record"
    );
    if let Some((index, Err(error))) = reports.iter().find(|(_, outcome)| outcome.is_err()) {
        panic!("record {index}: {error}");
    }
}

/// DeleteTopics, then wait until the metadata no longer lists `topic` and
/// none of its partition directories is left.
fn delete_and_wait(broker: &Broker, topic: &str) {
    let bootstrap = broker.bootstrap();
    let admin = kafka::admin(&bootstrap);
    let options = AdminOptions::new()
        .request_timeout(Some(Duration::from_secs(300)))
        .operation_timeout(Some(Duration::from_secs(300)));
    let results = kafka::block_on(admin.delete_topics(&[topic], &options))
        .unwrap_or_else(|error| panic!("DeleteTopics {topic}: {error}"));
    for result in results {
        if let Err((topic, code)) = result {
            panic!("DeleteTopics {topic}: {code:?}");
        }
    }
    let prefix = format!("{topic}-");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let listed = kafka::topic_partition_counts(&bootstrap)
            .expect("metadata")
            .contains_key(topic);
        let left = std::fs::read_dir(broker.data_dir())
            .expect("listing the data directory")
            .filter(|entry| {
                entry
                    .as_ref()
                    .is_ok_and(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
            })
            .count();
        if !listed && left == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{topic}: still listed ({listed}) or {left} directories left"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The resident set once it stopped moving: the broker releases memory a
/// second after a removal, so first [`RELEASE_SETTLE_MIN`], then until two
/// readings half a second apart differ by less than 1 MiB (at most
/// [`RELEASE_WAIT_MAX`]).
fn settled_rss(broker: &Broker) -> u64 {
    std::thread::sleep(RELEASE_SETTLE_MIN);
    let deadline = Instant::now() + RELEASE_WAIT_MAX;
    let mut previous = broker.rss_bytes();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let rss = broker.rss_bytes();
        if rss.abs_diff(previous) < 1 << 20 || Instant::now() >= deadline {
            return rss;
        }
        previous = rss;
    }
}

#[test]
fn deleted_topics_give_their_memory_back() {
    let partitions = env_or("SLUICE_MEMORY_PARTITIONS", CYCLE_PARTITIONS_DEFAULT);
    let cycles = env_or("SLUICE_MEMORY_CYCLES", CYCLES_DEFAULT);
    let written_bytes =
        partitions as u64 * RECORDS_PER_PARTITION as u64 * RECORD_VALUE_BYTES as u64;
    // The test means something only if keeping what was written would
    // break the bound.
    assert!(
        written_bytes > 2 * RETAINED_BYTES_MAX,
        "write more than twice RETAINED_BYTES_MAX per cycle"
    );
    let broker = Broker::start("memory_cycles");
    let bootstrap = broker.bootstrap();
    // Let the broker finish starting (controller, internal state) first.
    std::thread::sleep(Duration::from_secs(1));
    let baseline = broker.rss_bytes();
    println!(
        "cycles of {partitions} partitions, {:.0} MiB written each: empty broker RSS {:.1} MiB",
        mebibytes(written_bytes),
        mebibytes(baseline)
    );
    let mut after = Vec::with_capacity(cycles);
    for cycle in 1..=cycles {
        let topic = format!("cycle-{cycle}");
        let started = Instant::now();
        kafka::create_topic(
            &bootstrap,
            &topic,
            partitions,
            &[("segment.bytes", CYCLE_SEGMENT_BYTES)],
        );
        let created = started.elapsed();
        write_every_partition(&bootstrap, &topic, partitions);
        let written = started.elapsed();
        let peak = broker.rss_bytes();
        delete_and_wait(&broker, &topic);
        let deleted = started.elapsed();
        let rss = settled_rss(&broker);
        println!(
            "cycle {cycle}: written RSS {:.1} MiB, after the deletion {:.1} MiB \
             (created {created:.1?}, written {written:.1?}, deleted {deleted:.1?}, \
             settled {:.1?})",
            mebibytes(peak),
            mebibytes(rss),
            started.elapsed()
        );
        assert!(
            peak > baseline + RETAINED_BYTES_MAX,
            "cycle {cycle}: the written topic raised RSS only to {:.1} MiB: \
             nothing to give back, the test measures nothing",
            mebibytes(peak)
        );
        assert!(
            rss <= baseline + RETAINED_BYTES_MAX,
            "cycle {cycle}: RSS {:.1} MiB after deleting the topic, more than \
             {:.0} MiB above the empty broker's {:.1} MiB",
            mebibytes(rss),
            mebibytes(RETAINED_BYTES_MAX),
            mebibytes(baseline)
        );
        after.push(rss);
    }
    let (first, last) = (after[0], after[after.len() - 1]);
    assert!(
        last <= first + GROWTH_BYTES_MAX,
        "RSS after each deletion grew from {:.1} to {:.1} MiB over {cycles} cycles",
        mebibytes(first),
        mebibytes(last)
    );
}
