//! Retention through a real broker and a real client (rdkafka): the shard's
//! cleaner deletes the oldest segments of cleanup.policy=delete topics past
//! retention.bytes or retention.ms, the log start moves forward, and what is
//! left is the newest records, contiguous, readable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use support::Broker;
use support::kafka::{self, Record};

const DEADLINE: Duration = Duration::from_secs(60);

fn records(count: usize, size: usize) -> Vec<Record> {
    (0..count)
        .map(|index| Record {
            key: Some(format!("key-{index}").into_bytes()),
            value: Some(format!("{index:0size$}").into_bytes()),
            headers: Vec::new(),
        })
        .collect()
}

/// One record per batch, so segments of a few KiB roll often.
fn produce(bootstrap: &str, topic: &str, records: &[Record]) -> Vec<i64> {
    kafka::produce_one_per_batch(bootstrap, topic, records)
}

/// Poll the watermarks until `done(low, high)`, or fail with what was seen.
fn wait_for_watermarks(
    bootstrap: &str,
    topic: &str,
    what: &str,
    done: impl Fn(i64, i64) -> bool,
) -> (i64, i64) {
    let start = Instant::now();
    loop {
        let (low, high) = kafka::watermarks(bootstrap, topic, 0);
        if done(low, high) {
            return (low, high);
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{topic}: {what} did not happen within {DEADLINE:?}: watermarks are ({low}, {high})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn retention_bytes_deletes_the_oldest_segments() {
    let broker = Broker::start_with_args("retention-bytes", &["--log-cleaner-interval-ms", "200"]);
    let bootstrap = broker.bootstrap();
    let topic = "retained-by-size";
    kafka::create_topic(
        &bootstrap,
        topic,
        1,
        &[("segment.bytes", "4096"), ("retention.bytes", "16384")],
    );
    let sent = records(400, 200);
    let offsets = produce(&bootstrap, topic, &sent);
    assert_eq!(offsets, (0..400).collect::<Vec<i64>>());
    // Record size on disk is about 250 bytes (200-byte value, key, framing,
    // one record per batch). Passes delete what is finalized; wait until the
    // log is within a few segments of retention.bytes.
    const RECORD_BYTES: i64 = 250;
    let (mut low, mut high) =
        wait_for_watermarks(&bootstrap, topic, "size retention", |low, high| {
            low > 0 && (high - low) * RECORD_BYTES < 64 * 1024
        });
    // Later passes may delete more: read once the log start stays put for
    // several cleaner intervals, or the records read can start above `low`.
    loop {
        std::thread::sleep(Duration::from_millis(1000));
        let now = kafka::watermarks(&bootstrap, topic, 0);
        if now == (low, high) {
            break;
        }
        (low, high) = now;
    }
    assert_eq!(high, 400, "retention must not touch the log end");
    let kept = kafka::consume_all(&bootstrap, topic, 0);
    assert_eq!(
        kept.len() as i64,
        high - low,
        "records below the high watermark"
    );
    for (consumed, offset) in kept.iter().zip(low..) {
        assert_eq!(consumed.offset, offset, "kept records are contiguous");
        assert_eq!(
            consumed.record, sent[offset as usize],
            "record {offset} intact"
        );
    }
    // Whole segments go, never more than retention.bytes allows: at least
    // retention.bytes minus one segment stays.
    let kept_bytes = kept.len() as i64 * RECORD_BYTES;
    assert!(
        kept_bytes >= 16384 - 4096,
        "only about {kept_bytes} bytes kept, retention.bytes is 16384"
    );
}

#[test]
fn retention_ms_deletes_everything_that_expired() {
    let broker = Broker::start_with_args("retention-ms", &["--log-cleaner-interval-ms", "200"]);
    let bootstrap = broker.bootstrap();
    let topic = "retained-by-time";
    kafka::create_topic(
        &bootstrap,
        topic,
        1,
        &[("segment.bytes", "4096"), ("retention.ms", "1500")],
    );
    let first = produce(&bootstrap, topic, &records(100, 100));
    assert_eq!(first.len(), 100);
    // Every segment expires, the active one is rolled, then deleted.
    let (low, high) =
        wait_for_watermarks(&bootstrap, topic, "time retention", |low, high| low == high);
    assert_eq!((low, high), (100, 100));
    // The topic keeps working after its log emptied: offsets continue.
    let later = produce(&bootstrap, topic, &records(3, 100));
    assert_eq!(later, vec![100, 101, 102]);
    let kept = kafka::consume_partition(&bootstrap, topic, 0, 100, 103);
    assert_eq!(kept.len(), 3);
}

#[test]
fn compacted_topics_are_not_shortened_by_retention() {
    let broker =
        Broker::start_with_args("retention-compact", &["--log-cleaner-interval-ms", "200"]);
    let bootstrap = broker.bootstrap();
    let topic = "compact-not-retained";
    kafka::create_topic(
        &bootstrap,
        topic,
        1,
        &[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "4096"),
            ("retention.ms", "500"),
        ],
    );
    produce(&bootstrap, topic, &records(60, 100));
    // Several cleaner passes later the log still starts at 0 (keys are
    // unique, so compaction removes nothing either).
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(kafka::watermarks(&bootstrap, topic, 0), (0, 60));
}
