//! Durability under kill -9: an rdkafka producer (acks=all, idempotent)
//! writes as fast as it can while the broker is killed with SIGKILL at a
//! random moment; after each restart every record whose delivery was
//! acknowledged must be there, at the offset the acknowledgement gave, in
//! the order it was sent, exactly once. Records never acknowledged may be
//! there or not, but never twice. Several kill cycles on the same data.
//!
//! `SLUICE_DURABILITY_SEED=n` replays a run's kill timings (printed first).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseProducer, Producer};
use support::kafka::{self, Record};
use support::{Broker, Rng};

const TOPIC: &str = "durability";
const PARTITION_COUNT: i32 = 3;
const KILL_CYCLES: u32 = 3;
const KILL_DELAY_MS_MIN: u64 = 300;
const KILL_DELAY_MS_MAX: u64 = 1500;
/// Records each cycle must have acknowledged before the kill, or the test
/// proves nothing.
const ACKNOWLEDGED_PER_CYCLE_MIN: usize = 100;

/// The value of record `index` of cycle `cycle`: both can be read back.
fn value_of(cycle: u32, index: usize) -> String {
    format!("cycle {cycle} record {index:09}")
}

fn parse_value(value: &[u8]) -> (u32, usize) {
    let text = std::str::from_utf8(value).expect("a value this test wrote");
    let mut words = text.split(' ');
    let (Some("cycle"), Some(cycle), Some("record"), Some(index)) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        panic!("a value this test did not write: {text:?}");
    };
    (cycle.parse().expect("cycle"), index.parse().expect("index"))
}

/// Produce until `stop`, then give up on whatever is unacknowledged.
fn produce_until_stopped(producer: BaseProducer<kafka::Reports>, cycle: u32, stop: &AtomicBool) {
    let mut index = 0;
    while !stop.load(Ordering::Relaxed) {
        let record = Record {
            key: Some(format!("key-{}", index % 40).into_bytes()),
            value: Some(value_of(cycle, index).into_bytes()),
            headers: Vec::new(),
        };
        kafka::send(&producer, TOPIC, None, index, &record);
        producer.poll(Duration::ZERO);
        index += 1;
        if index % 100 == 0 {
            // At most ~20k records a second: plenty of batches in flight at
            // the kill, without hundreds of thousands of records to check.
            producer.poll(Duration::from_millis(5));
        }
    }
    // The broker is dead: everything not yet acknowledged fails within
    // message.timeout.ms.
    let _ = producer.flush(Duration::from_secs(30));
}

/// Read every partition and check the promises for all acknowledged records
/// so far.
fn check(broker: &Broker, acknowledged: &BTreeMap<(u32, usize), (i32, i64)>, after_cycle: u32) {
    let bootstrap = broker.bootstrap();
    let mut found: BTreeMap<(u32, usize), (i32, i64)> = BTreeMap::new();
    for partition in 0..PARTITION_COUNT {
        let records = kafka::consume_all(&bootstrap, TOPIC, partition);
        let mut last_of_cycle: HashMap<u32, usize> = HashMap::new();
        let mut previous_offset: Option<i64> = None;
        for consumed in &records {
            if let Some(previous) = previous_offset {
                assert_eq!(
                    consumed.offset,
                    previous + 1,
                    "after cycle {after_cycle}: partition {partition} has a gap in offsets"
                );
            }
            previous_offset = Some(consumed.offset);
            let (cycle, index) = parse_value(
                consumed
                    .record
                    .value
                    .as_deref()
                    .expect("every record has a value"),
            );
            if let Some(first) = found.insert((cycle, index), (partition, consumed.offset)) {
                panic!(
                    "after cycle {after_cycle}: cycle {cycle} record {index} is stored twice, \
                     at {first:?} and at ({partition}, {})",
                    consumed.offset
                );
            }
            if let Some(last) = last_of_cycle.insert(cycle, index) {
                assert!(
                    last < index,
                    "after cycle {after_cycle}: partition {partition} holds cycle {cycle} \
                     record {index} after record {last} (out of send order)"
                );
            }
        }
    }
    for (record, placed) in acknowledged {
        match found.get(record) {
            Some(stored) => assert_eq!(
                stored, placed,
                "after cycle {after_cycle}: acknowledged record {record:?} moved"
            ),
            None => panic!(
                "after cycle {after_cycle}: acknowledged record {record:?} at {placed:?} is lost\n{}",
                broker.stderr_tail()
            ),
        }
    }
    println!(
        "after cycle {after_cycle}: {} acknowledged records all present; {} stored in all",
        acknowledged.len(),
        found.len()
    );
}

#[test]
fn every_acknowledged_record_survives_kill_9_during_acks_all_produce() {
    kill_9_cycles("durability_kill9", &[]);
}

/// The same with one syncfs per shard round instead of an fdatasync per
/// partition file (`--sync-mode filesystem`): acknowledgements come only
/// after a sync that started once their writes completed.
#[test]
fn every_acknowledged_record_survives_kill_9_with_one_sync_per_shard() {
    kill_9_cycles("durability_kill9_syncfs", &["--sync-mode", "filesystem"]);
}

fn kill_9_cycles(name: &str, extra_args: &[&str]) {
    let seed = Rng::seed_from_env("SLUICE_DURABILITY_SEED");
    println!("seed {seed} (SLUICE_DURABILITY_SEED={seed} replays it)");
    let mut rng = Rng::new(seed);
    let partitions = PARTITION_COUNT.to_string();
    let mut args = vec!["--default-partitions", &partitions];
    args.extend_from_slice(extra_args);
    let mut broker = Broker::start_with_args(name, &args);
    let mut acknowledged: BTreeMap<(u32, usize), (i32, i64)> = BTreeMap::new();
    for cycle in 0..KILL_CYCLES {
        let stop = Arc::new(AtomicBool::new(false));
        let (producer, reports) = kafka::producer(
            &broker.bootstrap(),
            &[
                ("acks", "all"),
                ("enable.idempotence", "true"),
                ("linger.ms", "2"),
                ("message.timeout.ms", "5000"),
                ("queue.buffering.max.messages", "20000"),
            ],
        );
        let producing = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || produce_until_stopped(producer, cycle, &stop))
        };
        // Kill at a random moment once acknowledgements flow.
        let started = Instant::now();
        while reports.0.lock().expect("reports").len() < ACKNOWLEDGED_PER_CYCLE_MIN {
            if started.elapsed() > Duration::from_secs(60) {
                stop.store(true, Ordering::Relaxed);
                let _ = producing.join();
                let reports = reports.0.lock().expect("reports");
                panic!(
                    "cycle {cycle}: fewer than {ACKNOWLEDGED_PER_CYCLE_MIN} delivery reports \
                     in 60 s; first errors: {:?}\n{}",
                    reports
                        .iter()
                        .filter(|(_, outcome)| outcome.is_err())
                        .take(3)
                        .collect::<Vec<_>>(),
                    broker.stderr_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let delay = KILL_DELAY_MS_MIN + rng.below(KILL_DELAY_MS_MAX - KILL_DELAY_MS_MIN);
        std::thread::sleep(Duration::from_millis(delay));
        broker.kill9();
        stop.store(true, Ordering::Relaxed);
        producing.join().expect("the producer thread");
        let acked: Vec<(usize, (i32, i64))> =
            std::mem::take(&mut *reports.0.lock().expect("reports"))
                .into_iter()
                .filter_map(|(index, outcome)| outcome.ok().map(|placed| (index, placed)))
                .collect();
        println!(
            "cycle {cycle}: killed {delay} ms after the first acknowledgements; \
             {} records acknowledged",
            acked.len()
        );
        assert!(
            acked.len() >= ACKNOWLEDGED_PER_CYCLE_MIN,
            "cycle {cycle}: only {} records acknowledged in {delay} ms; the test needs \
             {ACKNOWLEDGED_PER_CYCLE_MIN}\n{}",
            acked.len(),
            broker.stderr_tail()
        );
        acknowledged.extend(
            acked
                .into_iter()
                .map(|(index, placed)| ((cycle, index), placed)),
        );
        broker.start_again();
        check(&broker, &acknowledged, cycle);
    }
    // And once more after a clean restart.
    broker.restart();
    check(&broker, &acknowledged, KILL_CYCLES);
}
