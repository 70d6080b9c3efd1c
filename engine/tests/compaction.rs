//! Log compaction (`Log::clean`): latest record per key, offsets preserved,
//! tombstones, null keys, reads across gaps, reopen, crashes at every step of
//! a pass (simulated disk), and the real io_uring path.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use sluice_engine::batch::{self, BatchBuilder, BatchHeader, Compression, codec};
use sluice_engine::index::OffsetIndex;
use sluice_engine::io::Io;
use sluice_engine::io::sim::{CrashMode, SimIo};
use sluice_engine::io::uring::UringIo;
use sluice_engine::{
    AbortedRange, CleanOptions, Committer, LeaderEpoch, Log, LogConfig, Offset, Position,
    TimestampMs, TxnCleanInput,
};
use support::{RealDir, Rng, all, block_on, run_on_uring, spawn_committer};

const NOW: i64 = SimIo::NOW_MS_START_DEFAULT;

fn dir() -> PathBuf {
    PathBuf::from("/data/compacted-0")
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 256,
        preallocate_step_bytes: 4096,
        chunk_size_bytes: 4096,
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// One record as the test knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    offset: Offset,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    timestamp: i64,
}

/// A record to append: (key, value); `None` is null.
type KeyValue = (Option<Vec<u8>>, Option<Vec<u8>>);

/// A batch of `(key, value)` records, all with `timestamp`.
fn keyed_batch(records: &[KeyValue], timestamp: i64) -> Bytes {
    let mut builder = BatchBuilder::new();
    for (key, value) in records {
        builder.record(key.as_deref(), value.as_deref(), TimestampMs(timestamp));
    }
    builder.build()
}

/// A random workload: `batches` batches of 1 to 4 records over `keys` keys,
/// with some null keys and some tombstones.
fn workload(rng: &mut Rng, batches: usize, keys: u64) -> Vec<Vec<KeyValue>> {
    let mut serial = 0u64;
    (0..batches)
        .map(|_| {
            (0..rng.between(1, 4))
                .map(|_| {
                    serial += 1;
                    let key = if rng.chance(8) {
                        None
                    } else {
                        Some(format!("key-{}", rng.below(keys)).into_bytes())
                    };
                    let value = if key.is_some() && rng.chance(12) {
                        None
                    } else {
                        Some(
                            format!("value-{serial}-{}", "x".repeat(rng.below(40) as usize))
                                .into_bytes(),
                        )
                    };
                    (key, value)
                })
                .collect()
        })
        .collect()
}

fn open_sim(io: &SimIo) -> (Log<SimIo>, Committer<SimIo>) {
    let committer = Committer::new(io.clone());
    let log = block_on(Log::open(io.clone(), dir(), config(), &committer))
        .unwrap_or_else(|error| panic!("open failed: {error}"));
    (log, committer)
}

/// Append every batch and make it durable; returns the records appended.
fn append_all<I: Io>(
    log: &Log<I>,
    committer: &Committer<I>,
    batches: &[Vec<KeyValue>],
    timestamp: i64,
) -> Vec<Record> {
    let mut appended = Vec::new();
    for records in batches {
        let result = log
            .append(&keyed_batch(records, timestamp), LeaderEpoch(3))
            .unwrap();
        for (index, (key, value)) in records.iter().enumerate() {
            appended.push(Record {
                offset: result.base_offset.plus(index as i64),
                key: key.clone(),
                value: value.clone(),
                timestamp,
            });
        }
        drop(result.completion);
    }
    block_on(committer.flush_round());
    assert_eq!(log.durable_end_offset(), log.log_end_offset());
    appended
}

/// Every record of the log, reading from the log start in pieces of at most
/// `max_bytes`. Checks that every batch is valid (as compaction leaves them)
/// and that offsets strictly increase.
async fn read_records<I: Io>(log: &Log<I>, max_bytes: usize) -> Vec<Record> {
    let end = log.log_end_offset();
    let mut offset = log.log_start_offset();
    let mut records: Vec<Record> = Vec::new();
    while offset < end {
        let limits = sluice_engine::ReadLimits {
            max_bytes,
            min_one_batch: true,
            max_offset: end,
        };
        let result = log.read(offset, limits).await.unwrap();
        if result.records.is_empty() {
            break;
        }
        assert!(result.next_offset > offset, "no progress at {offset}");
        for run in &result.records {
            for range in batch::split_batches(run).unwrap() {
                let bytes = &run[range];
                let header = batch::validate_compacted(bytes, usize::MAX)
                    .unwrap_or_else(|error| panic!("invalid batch read back: {error}"));
                // Compaction keeps a compressed batch whole, so it reads
                // back as produced (contiguous offsets, which `recompress`
                // checks); a consumer decompresses it.
                let decompressed;
                let (bytes, header) = if header.compression() == Compression::None {
                    (bytes, header)
                } else {
                    decompressed = codec::recompress(bytes, &header, codec::Target::None)
                        .unwrap_or_else(|error| panic!("a kept compressed batch reads: {error}"));
                    let plain_header = BatchHeader::parse(&decompressed).unwrap();
                    (&decompressed[..], plain_header)
                };
                for record in batch::records(bytes, &header) {
                    let record = record.unwrap();
                    let record_offset = header.base_offset().plus(i64::from(record.offset_delta));
                    if record_offset < offset {
                        continue;
                    }
                    if let Some(last) = records.last() {
                        assert!(record_offset > last.offset, "offsets must increase");
                    }
                    records.push(Record {
                        offset: record_offset,
                        key: record.key.map(<[u8]>::to_vec),
                        value: record.value.map(<[u8]>::to_vec),
                        timestamp: header.base_timestamp().0 + record.timestamp_delta,
                    });
                }
            }
        }
        offset = result.next_offset;
    }
    records
}

/// What must remain after a complete pass whose cleanable range ends at
/// `boundary`, at time `now`.
fn expected_after_clean(
    appended: &[Record],
    boundary: Offset,
    now: i64,
    delete_retention_ms: i64,
) -> Vec<Record> {
    let mut latest: HashMap<&[u8], Offset> = HashMap::new();
    for record in appended.iter().filter(|record| record.offset < boundary) {
        if let Some(key) = &record.key {
            latest.insert(key, record.offset);
        }
    }
    appended
        .iter()
        .filter(|record| {
            if record.offset >= boundary {
                return true;
            }
            let Some(key) = &record.key else { return true };
            latest[key.as_slice()] == record.offset
                && (record.value.is_some() || record.timestamp + delete_retention_ms > now)
        })
        .cloned()
        .collect()
}

fn options(delete_retention_ms: i64) -> CleanOptions {
    CleanOptions {
        delete_retention_ms,
        min_compaction_lag_ms: 0,
    }
}

fn active_base<I: Io>(log: &Log<I>) -> Offset {
    *log.segment_bases().last().unwrap()
}

#[test]
fn only_the_latest_record_per_key_survives_and_offsets_are_preserved() {
    let io = SimIo::new(1);
    let (log, committer) = open_sim(&io);
    let mut rng = Rng(11);
    let batches = workload(&mut rng, 300, 12);
    let appended = append_all(&log, &committer, &batches, NOW);
    assert!(log.segment_count() > 5, "the workload must roll segments");
    let (start, end, boundary) = (
        log.log_start_offset(),
        log.log_end_offset(),
        active_base(&log),
    );
    let size_before = log.size_bytes();
    assert_eq!(log.dirty_stats(0).ratio(), 1.0, "nothing cleaned yet");

    let summary = block_on(log.clean(&options(1 << 40))).unwrap();
    assert!(summary.segments_rewritten > 0, "{summary:?}");
    assert!(summary.records_removed > 0, "{summary:?}");

    let expected = expected_after_clean(&appended, boundary, NOW, 1 << 40);
    assert!(
        expected.len() < appended.len() / 2,
        "most records are superseded"
    );
    assert_eq!(block_on(read_records(&log, usize::MAX)), expected);
    assert_eq!(block_on(read_records(&log, 1)), expected, "batch by batch");
    assert_eq!(log.log_start_offset(), start);
    assert_eq!(log.log_end_offset(), end);
    assert!(log.size_bytes() < size_before);
    assert_eq!(log.dirty_stats(0).ratio(), 0.0, "everything cleaned");

    // A second pass finds nothing more to remove.
    let again = block_on(log.clean(&options(1 << 40))).unwrap();
    assert_eq!(again.segments_rewritten, 0, "{again:?}");
    assert_eq!(block_on(read_records(&log, usize::MAX)), expected);
}

/// A tombstone without a timestamp (-1) stays readable for
/// delete.retention.ms from its segment's last append, as Kafka counts
/// from the segment file's time; counted from -1 it was removed by the
/// first pass.
#[test]
fn a_tombstone_without_a_timestamp_stays_for_delete_retention() {
    let io = SimIo::new(3);
    let (log, committer) = open_sim(&io);
    let key = Some(b"k".to_vec());
    let mut batches = vec![
        vec![(key.clone(), Some(b"v".to_vec()))],
        vec![(key.clone(), None)],
    ];
    for filler in 0..40u32 {
        batches.push(vec![(
            Some(format!("f{filler}").into_bytes()),
            Some(vec![0; 100]),
        )]);
    }
    append_all(&log, &committer, &batches, -1);
    assert!(log.segment_count() > 2);
    let tombstone_of_k = |records: &[Record]| {
        records
            .iter()
            .any(|record| record.key == key && record.value.is_none())
    };
    block_on(log.clean(&options(60_000))).unwrap();
    let records = block_on(read_records(&log, usize::MAX));
    assert!(
        tombstone_of_k(&records),
        "the tombstone is kept: {records:?}"
    );
    assert!(
        !records
            .iter()
            .any(|record| record.key == key && record.value.is_some())
    );
    io.advance_clock(std::time::Duration::from_secs(120));
    block_on(log.clean(&options(60_000))).unwrap();
    let records = block_on(read_records(&log, usize::MAX));
    assert!(!tombstone_of_k(&records), "expired, removed: {records:?}");
}

#[test]
fn reading_at_a_compacted_offset_returns_the_next_surviving_record() {
    let io = SimIo::new(2);
    let (log, committer) = open_sim(&io);
    let mut rng = Rng(22);
    let batches = workload(&mut rng, 200, 5);
    let appended = append_all(&log, &committer, &batches, NOW);
    let boundary = active_base(&log);
    block_on(log.clean(&options(1 << 40))).unwrap();
    let expected = expected_after_clean(&appended, boundary, NOW, 1 << 40);
    let end = log.log_end_offset();
    for offset in log.log_start_offset().value()..end.value() {
        let offset = Offset(offset);
        let first_surviving = expected
            .iter()
            .find(|record| record.offset >= offset)
            .map(|record| record.offset);
        // A consumer reads from `offset` and skips records below it; a
        // returned batch may hold only such records (its lastOffsetDelta
        // reaches past `offset`), then it reads on from `next_offset`.
        let mut from = offset;
        let found = loop {
            let result = block_on(log.read(
                from,
                sluice_engine::ReadLimits {
                    max_bytes: 1,
                    min_one_batch: true,
                    max_offset: end,
                },
            ))
            .unwrap();
            if result.records.is_empty() {
                break None;
            }
            assert!(result.next_offset > from, "progress reading at {from}");
            let batch_bytes = &result.records[0];
            let header = BatchHeader::parse(batch_bytes).unwrap();
            let returned = batch::records(batch_bytes, &header)
                .map(|record| {
                    header
                        .base_offset()
                        .plus(i64::from(record.unwrap().offset_delta))
                })
                .find(|record_offset| *record_offset >= offset);
            if returned.is_some() {
                break returned;
            }
            from = result.next_offset;
        };
        assert_eq!(found, first_surviving, "reading at {offset}");
    }
}

#[test]
fn tombstones_stay_until_delete_retention_has_passed_and_then_go() {
    let io = SimIo::new(3);
    let (log, committer) = open_sim(&io);
    let value = |text: &str| Some(text.as_bytes().to_vec());
    let key = |text: &str| Some(text.as_bytes().to_vec());
    let mut batches = Vec::new();
    for round in 0..40 {
        batches.push(vec![
            (key("alive"), value(&format!("alive-{round}"))),
            (key("doomed"), value(&format!("doomed-{round}"))),
        ]);
    }
    batches.push(vec![(key("doomed"), None)]);
    // Filler so that the tombstone's segment is sealed.
    for round in 0..40 {
        batches.push(vec![(key("filler"), value(&format!("filler-{round}")))]);
    }
    let appended = append_all(&log, &committer, &batches, NOW);
    let tombstone = appended
        .iter()
        .find(|record| record.value.is_none())
        .unwrap()
        .offset;
    assert!(
        tombstone < active_base(&log),
        "the tombstone must be cleanable"
    );
    let retention_ms = 60_000;

    block_on(log.clean(&options(retention_ms))).unwrap();
    let records = block_on(read_records(&log, usize::MAX));
    let doomed: Vec<&Record> = records
        .iter()
        .filter(|record| record.key.as_deref() == Some(b"doomed".as_slice()))
        .collect();
    assert_eq!(doomed.len(), 1, "only the tombstone is left of the key");
    assert_eq!(doomed[0].offset, tombstone);
    assert_eq!(doomed[0].value, None);
    assert_eq!(log.dirty_stats(0).ratio(), 0.0);

    io.advance_clock(Duration::from_millis(retention_ms as u64 + 1));
    assert!(
        log.dirty_stats(0).dirty_bytes > 0,
        "an expired tombstone makes its segment dirty again"
    );
    let summary = block_on(log.clean(&options(retention_ms))).unwrap();
    assert_eq!(summary.tombstones_removed, 1, "{summary:?}");
    let records = block_on(read_records(&log, usize::MAX));
    assert!(
        records
            .iter()
            .all(|record| record.key.as_deref() != Some(b"doomed".as_slice())),
        "the tombstone is gone after delete.retention.ms"
    );
    let alive = records
        .iter()
        .filter(|record| record.key.as_deref() == Some(b"alive".as_slice()))
        .count();
    assert_eq!(alive, 1);
}

#[test]
fn null_key_records_are_kept_and_a_min_compaction_lag_holds_back_recent_segments() {
    let io = SimIo::new(4);
    let (log, committer) = open_sim(&io);
    let mut batches = Vec::new();
    for round in 0..60 {
        batches.push(vec![
            (None, Some(format!("anonymous-{round}").into_bytes())),
            (
                Some(b"k".to_vec()),
                Some(format!("keyed-{round}").into_bytes()),
            ),
        ]);
    }
    let appended = append_all(&log, &committer, &batches, NOW);

    // Every segment is younger than the lag: nothing is cleanable.
    let lagging = CleanOptions {
        delete_retention_ms: 0,
        min_compaction_lag_ms: 10_000,
    };
    assert_eq!(
        log.dirty_stats(lagging.min_compaction_lag_ms)
            .cleanable_bytes,
        0
    );
    let summary = block_on(log.clean(&lagging)).unwrap();
    assert_eq!(summary.segments_examined, 0);
    assert_eq!(block_on(read_records(&log, usize::MAX)), appended);

    io.advance_clock(Duration::from_secs(11));
    let boundary = active_base(&log);
    block_on(log.clean(&lagging)).unwrap();
    let records = block_on(read_records(&log, usize::MAX));
    assert_eq!(
        records,
        expected_after_clean(&appended, boundary, io.now_ms(), 0)
    );
    let anonymous = records.iter().filter(|record| record.key.is_none()).count();
    assert_eq!(anonymous, 60, "null-key records cannot be compacted");
}

#[test]
fn a_cleaned_log_reopens_with_the_same_records_after_a_close_and_after_a_crash() {
    let io = SimIo::new(5);
    let (log, committer) = open_sim(&io);
    let mut rng = Rng(55);
    let batches = workload(&mut rng, 250, 8);
    let appended = append_all(&log, &committer, &batches, NOW);
    let (start, end, boundary) = (
        log.log_start_offset(),
        log.log_end_offset(),
        active_base(&log),
    );
    block_on(log.clean(&options(1 << 40))).unwrap();
    let expected = expected_after_clean(&appended, boundary, NOW, 1 << 40);
    block_on(log.close()).unwrap();
    drop(log);

    let (log, committer) = open_sim(&io);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (start, end));
    assert_eq!(block_on(read_records(&log, usize::MAX)), expected);
    let names = io.file_names(&dir());
    assert!(
        names.iter().all(|name| !name.ends_with(".tmp")),
        "no temporary file remains: {names:?}"
    );
    // Appends continue at the old end, and a crash loses nothing durable.
    let more = append_all(&log, &committer, &workload(&mut rng, 30, 8), NOW);
    assert_eq!(more[0].offset, end);
    drop(log);
    io.set_crash_mode(CrashMode::Torn);
    let io = io.crash();
    let (log, _committer) = open_sim(&io);
    let mut all_expected = expected.clone();
    all_expected.extend(more);
    assert_eq!(block_on(read_records(&log, usize::MAX)), all_expected);
}

/// A power loss at every step of a pass: halt the disk after `steps`
/// changing operations, crash, reopen. The log must hold only records that
/// were appended, at their offsets, and every record a complete pass keeps;
/// a pass after the reopen must then give exactly the complete result.
#[test]
fn a_crash_at_any_step_of_cleaning_never_loses_a_surviving_record() {
    let seeds: u64 = std::env::var("SLUICE_SIM_SEEDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .map_or(150, |seeds: u64| seeds.min(2000));
    for seed in 0..seeds {
        let outcome = std::panic::catch_unwind(|| crash_during_cleaning(seed));
        if let Err(panic) = outcome {
            eprintln!("seed {seed} failed");
            std::panic::resume_unwind(panic);
        }
    }
}

fn crash_during_cleaning(seed: u64) {
    let io = SimIo::new(seed);
    let (log, committer) = open_sim(&io);
    let mut rng = Rng(seed);
    let (count, keys) = (120 + rng.below(120) as usize, 2 + rng.below(10));
    let batches = workload(&mut rng, count, keys);
    let appended = append_all(&log, &committer, &batches, NOW - 5_000);
    let (start, end, boundary) = (
        log.log_start_offset(),
        log.log_end_offset(),
        active_base(&log),
    );
    // Some tombstones expire (retention 1 s, records 5 s old) so that the
    // pass removes them too.
    let retention_ms = if rng.chance(50) { 1_000 } else { 1 << 40 };
    let must_survive = expected_after_clean(&appended, boundary, NOW, retention_ms);
    let by_offset: BTreeMap<Offset, &Record> = appended
        .iter()
        .map(|record| (record.offset, record))
        .collect();

    let steps = rng.below(80);
    io.halt_after(Some(steps));
    let _ = block_on(log.clean(&options(retention_ms)));
    drop(log);
    io.set_crash_mode(rng.pick(&[
        CrashMode::Torn,
        CrashMode::LoseUnsynced,
        CrashMode::KeepUnsynced,
    ]));
    let io = io.crash();

    let (log, _committer) = open_sim(&io);
    assert_eq!(
        (log.log_start_offset(), log.log_end_offset()),
        (start, end),
        "seed {seed}"
    );
    let records = block_on(read_records(&log, usize::MAX));
    for record in &records {
        assert_eq!(
            by_offset.get(&record.offset).copied(),
            Some(record),
            "seed {seed}: a record that was never appended at {}",
            record.offset
        );
    }
    let present: BTreeMap<Offset, &Record> = records
        .iter()
        .map(|record| (record.offset, record))
        .collect();
    for record in &must_survive {
        assert!(
            present.contains_key(&record.offset),
            "seed {seed} (halted after {steps} steps): surviving record {} is lost",
            record.offset
        );
    }
    block_on(log.clean(&options(retention_ms))).unwrap();
    assert_eq!(
        block_on(read_records(&log, usize::MAX)),
        must_survive,
        "seed {seed}"
    );
}

#[test]
fn cleaning_on_the_real_disk_keeps_the_latest_per_key_and_survives_a_reopen() {
    let directory = RealDir::new("compaction");
    let log_dir = directory.log_dir();
    let mut rng = Rng(77);
    let batches = workload(&mut rng, 400, 10);
    let config = LogConfig {
        segment_bytes: 8192,
        ..config()
    };
    let (expected, start, end) = run_on_uring(async {
        let io = UringIo::new();
        let committer = Committer::new(io);
        let log = Log::open(io, &log_dir, config.clone(), &committer)
            .await
            .unwrap();
        let task = spawn_committer(&committer);
        let now = io.now_ms();
        let mut appended = Vec::new();
        for records in &batches {
            let result = log
                .append(&keyed_batch(records, now), LeaderEpoch(1))
                .unwrap();
            for (index, (key, value)) in records.iter().enumerate() {
                appended.push(Record {
                    offset: result.base_offset.plus(index as i64),
                    key: key.clone(),
                    value: value.clone(),
                    timestamp: now,
                });
            }
            result.completion.await.unwrap();
        }
        let boundary = active_base(&log);
        let summary = log.clean(&options(1 << 40)).await.unwrap();
        assert!(summary.segments_rewritten > 0, "{summary:?}");
        let expected = expected_after_clean(&appended, boundary, now, 1 << 40);
        assert_eq!(read_records(&log, usize::MAX).await, expected);
        assert_eq!(read_records(&log, 100).await, expected);
        let (start, end) = (log.log_start_offset(), log.log_end_offset());
        drop(task);
        (expected, start, end)
    });
    // Dropped without close: the reopen recovers.
    run_on_uring(async {
        let io = UringIo::new();
        let committer = Committer::new(io);
        let log = Log::open(io, &log_dir, config.clone(), &committer)
            .await
            .unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (start, end));
        assert_eq!(read_records(&log, usize::MAX).await, expected);
        let names: Vec<String> = std::fs::read_dir(&log_dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|name| !name.ends_with(".tmp")),
            "{names:?}"
        );
        let _ = all(end);
    });
}

/// A transactional data batch of `producer_id` (epoch 5, sequence
/// `sequence`) with `(key, value)` records.
fn transactional_batch(producer_id: i64, sequence: i32, records: &[(&str, &str)]) -> Bytes {
    let mut builder = BatchBuilder::new();
    builder
        .producer(producer_id, 5, sequence)
        .transactional(true);
    for (key, value) in records {
        builder.record(
            Some(key.as_bytes()),
            Some(value.as_bytes()),
            TimestampMs(NOW),
        );
    }
    builder.build()
}

/// A transaction marker (control batch) of `producer_id`: `commit` or abort.
fn marker_batch(producer_id: i64, commit: bool) -> Bytes {
    let control_type: u8 = if commit { 1 } else { 0 };
    let built = BatchBuilder::new()
        .producer(producer_id, 5, -1)
        .transactional(true)
        .record(
            Some(&[0, 0, 0, control_type][..]),
            Some(&[0, 0, 0, 0, 0, 0][..]),
            TimestampMs(NOW),
        )
        .build();
    let mut bytes = built.to_vec();
    let at = batch::layout::ATTRIBUTES_AT;
    let attributes = i16::from_be_bytes([bytes[at], bytes[at + 1]]) | 0x20;
    bytes[at..at + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[batch::layout::CRC_COVERED_FROM..]);
    bytes[batch::layout::CRC_AT..batch::layout::CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(bytes)
}

/// The header fields of a batch that producer state is rebuilt from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ProducerFields {
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    transactional: bool,
    control: bool,
    last_offset: Offset,
}

/// Every batch of the log: its base offset, producer fields and records
/// (key, value) by offset.
async fn read_batches<I: Io>(
    log: &Log<I>,
) -> BTreeMap<Offset, (ProducerFields, Vec<(Offset, Vec<u8>, Vec<u8>)>)> {
    let end = log.log_end_offset();
    let mut offset = log.log_start_offset();
    let mut batches = BTreeMap::new();
    while offset < end {
        let limits = sluice_engine::ReadLimits {
            max_bytes: usize::MAX,
            min_one_batch: true,
            max_offset: end,
        };
        let result = log.read(offset, limits).await.unwrap();
        if result.records.is_empty() {
            break;
        }
        for run in &result.records {
            for range in batch::split_batches(run).unwrap() {
                let bytes = &run[range];
                let header: BatchHeader = batch::validate_compacted(bytes, usize::MAX).unwrap();
                let records = batch::records(bytes, &header)
                    .map(|record| {
                        let record = record.unwrap();
                        (
                            header.base_offset().plus(i64::from(record.offset_delta)),
                            record.key.unwrap_or_default().to_vec(),
                            record.value.unwrap_or_default().to_vec(),
                        )
                    })
                    .collect();
                let fields = ProducerFields {
                    producer_id: header.producer_id(),
                    producer_epoch: header.producer_epoch(),
                    base_sequence: header.base_sequence(),
                    transactional: header.is_transactional(),
                    control: header.is_control(),
                    last_offset: header.last_offset(),
                };
                batches.insert(header.base_offset(), (fields, records));
            }
        }
        offset = result.next_offset;
    }
    batches
}

#[test]
fn aborted_transactions_go_committed_ones_compact_by_key_and_markers_and_open_transactions_stay() {
    let io = SimIo::new(7);
    let (log, committer) = open_sim(&io);
    let append = |bytes: Bytes| -> Offset {
        let result = log.append(&bytes, LeaderEpoch(3)).unwrap();
        drop(result.completion);
        result.base_offset
    };
    let plain = |key: &str, value: &str| {
        keyed_batch(
            &[(
                Some(key.as_bytes().to_vec()),
                Some(value.as_bytes().to_vec()),
            )],
            NOW,
        )
    };
    // Committed producer 1 and aborted producer 2 interleave, with plain
    // records around them.
    append(plain("k7", "plain-7"));
    let aborted_first = append(transactional_batch(
        2,
        0,
        &[
            ("k1", "aborted-1"),
            ("k9", "aborted-9"),
            ("k7", "aborted-7"),
        ],
    ));
    append(transactional_batch(
        1,
        0,
        &[("k1", "committed-1"), ("k2", "committed-2")],
    ));
    append(plain("k3", "plain-3-old"));
    append(transactional_batch(2, 2, &[("k3", "aborted-3")]));
    append(transactional_batch(
        1,
        2,
        &[("k3", "committed-3"), ("k4", "committed-4")],
    ));
    let aborted_marker = append(marker_batch(2, false));
    append(marker_batch(1, true));
    // A plain record supersedes committed k1.
    append(plain("k1", "plain-1-new"));
    for round in 0..60 {
        append(plain(
            "filler",
            &format!("filler-{round}-{}", "x".repeat(40)),
        ));
    }
    // Producer 3 opens a transaction: the last stable offset stops here.
    let open_first = append(transactional_batch(
        3,
        0,
        &[("k2", "open-2"), ("k4", "open-4")],
    ));
    for round in 0..60 {
        append(plain("k2", &format!("late-{round}-{}", "x".repeat(40))));
    }
    append(transactional_batch(3, 2, &[("k5", "open-5")]));
    block_on(committer.flush_round());
    assert_eq!(log.durable_end_offset(), log.log_end_offset());
    assert!(log.segment_count() > 4, "the workload must roll segments");
    let before = block_on(read_batches(&log));

    // Without transaction input nothing transactional is touched.
    let summary = block_on(log.clean(&options(1 << 40))).unwrap();
    assert_eq!(summary.aborted_batches_removed, 0);
    let conservative = block_on(read_batches(&log));
    for (base, (fields, _)) in &before {
        if fields.transactional {
            assert_eq!(conservative.get(base), before.get(base), "batch {base}");
        }
    }
    // Plain records did compact; compare with what that pass left.
    let before = conservative;

    // An aborted list that misses the transaction: the abort marker in the
    // range keeps its batches whole, and they supersede nothing.
    let incomplete = TxnCleanInput {
        stable_bound: open_first,
        aborted: Vec::new(),
    };
    let summary = block_on(log.clean_transactions(&options(1 << 40), &incomplete)).unwrap();
    assert_eq!(summary.aborted_batches_removed, 0);
    let kept = block_on(read_batches(&log));
    for (base, (fields, _)) in &before {
        if fields.producer_id == 2 {
            assert_eq!(kept.get(base), before.get(base), "batch {base}");
        }
    }
    let before = kept;

    let input = TxnCleanInput {
        stable_bound: open_first,
        aborted: vec![AbortedRange {
            producer_id: 2,
            first_offset: aborted_first,
            last_offset: aborted_marker,
        }],
    };
    let bound_segment = *log
        .segment_bases()
        .iter()
        .rev()
        .find(|&&base| base <= open_first)
        .unwrap();
    assert!(
        log.dirty_stats_below(0, open_first).cleanable_bytes < log.dirty_stats(0).cleanable_bytes,
        "the bound shortens the cleanable range"
    );
    let summary = block_on(log.clean_transactions(&options(1 << 40), &input)).unwrap();
    assert_eq!(summary.aborted_batches_removed, 2, "{summary:?}");
    let after = block_on(read_batches(&log));

    let values: Vec<(Offset, String)> = after
        .values()
        .filter(|(fields, _)| !fields.control)
        .flat_map(|(_, records)| records.iter())
        .map(|(offset, _, value)| (*offset, String::from_utf8_lossy(value).into_owned()))
        .collect();
    let has = |text: &str| values.iter().any(|(_, value)| value == text);
    // Aborted records are gone, whatever their keys (k9 has no newer record).
    assert!(!has("aborted-1") && !has("aborted-3") && !has("aborted-9") && !has("aborted-7"));
    // ... and supersede nothing.
    assert!(has("plain-7"));
    // Committed records are compacted by key like plain ones: k1 and k3
    // have newer records, k2 and k4 do not in the cleanable range.
    assert!(!has("committed-1") && has("plain-1-new"));
    assert!(has("committed-2") && has("committed-4"));
    assert!(has("committed-3") && !has("plain-3-old"));
    // Markers stay.
    let markers_before: Vec<&Offset> = before
        .iter()
        .filter(|(_, (fields, _))| fields.control)
        .map(|(base, _)| base)
        .collect();
    let markers_after: Vec<&Offset> = after
        .iter()
        .filter(|(_, (fields, _))| fields.control)
        .map(|(base, _)| base)
        .collect();
    assert_eq!(markers_before, markers_after);
    assert_eq!(markers_after.len(), 2);
    // Kept batches keep their producer fields (rewritten ones too).
    for (base, (fields, _)) in &after {
        assert_eq!(&before[base].0, fields, "batch {base}");
    }
    // Nothing in the segment holding the bound, nor after it, changed: the
    // open transaction, and the newer k2 records that would otherwise
    // supersede committed-2.
    for (base, batch) in before.range(bound_segment..) {
        assert_eq!(after.get(base), Some(batch), "batch {base} past the bound");
    }
    assert!(has("open-2") && has("open-4") && has("open-5"));
    assert_eq!(
        log.log_end_offset(),
        before.values().last().unwrap().0.last_offset.plus(1)
    );

    // The result survives a reopen.
    drop(log);
    block_on(committer.flush_round());
    let (reopened, _committer) = open_sim(&io);
    assert_eq!(block_on(read_batches(&reopened)), after);
}

/// `keyed_batch` with its records section compressed with lz4, as a
/// client with compression.type=lz4 sends it (the engine stores it as is).
fn lz4_batch(records: &[KeyValue], timestamp: i64) -> Bytes {
    let plain = keyed_batch(records, timestamp);
    let header = batch::validate(&plain, plain.len()).unwrap();
    Bytes::from(codec::recompress(&plain, &header, codec::Target::Lz4).unwrap())
}

/// `(key, value)` for a test record; `None` is a tombstone.
fn put(key: &str, value: Option<&str>) -> KeyValue {
    (
        Some(key.as_bytes().to_vec()),
        value.map(|value| value.as_bytes().to_vec()),
    )
}

/// Append `bytes` (not yet durable); returns its base offset.
fn append_one<I: Io>(log: &Log<I>, bytes: &Bytes) -> Offset {
    let result = log.append(bytes, LeaderEpoch(3)).unwrap();
    drop(result.completion);
    result.base_offset
}

/// Records of distinct keys, enough to roll the segments holding what was
/// appended before them, so that it becomes cleanable.
fn append_filler<I: Io>(log: &Log<I>, round: &str) {
    for index in 0..40 {
        let key = format!("filler-{round}-{index}");
        append_one(log, &keyed_batch(&[put(&key, Some(&"x".repeat(100)))], NOW));
    }
}

/// What a consumer replaying `records` from the start ends with for `key`:
/// its last value, `None` if the key is absent or deleted.
fn replayed(records: &[Record], key: &str) -> Option<String> {
    records
        .iter()
        .rev()
        .find(|record| record.key.as_deref() == Some(key.as_bytes()))
        .and_then(|record| record.value.as_deref())
        .map(|value| String::from_utf8_lossy(value).into_owned())
}

/// The records of `key` (for failure messages).
fn of_key<'a>(records: &'a [Record], key: &str) -> Vec<&'a Record> {
    records
        .iter()
        .filter(|record| record.key.as_deref() == Some(key.as_bytes()))
        .collect()
}

/// The offsets of the tombstones of `key` in `records`.
fn tombstones_of(records: &[Record], key: &str) -> Vec<Offset> {
    records
        .iter()
        .filter(|record| record.key.as_deref() == Some(key.as_bytes()) && record.value.is_none())
        .map(|record| record.offset)
        .collect()
}

/// A key written plainly, then in a compressed batch (kept whole: its
/// records are not compacted), then deleted. Once the tombstone expires it
/// must not go while the compressed value it hides stays, or a consumer
/// replaying the log gets the deleted key back. (Kafka decompresses and
/// compacts every record, so the compressed value goes before the
/// tombstone does.)
#[test]
fn a_deleted_key_stays_deleted_when_an_older_value_of_it_is_in_a_compressed_batch() {
    let io = SimIo::new(8);
    let (log, committer) = open_sim(&io);
    append_one(&log, &keyed_batch(&[put("k", Some("v1"))], NOW));
    append_one(
        &log,
        &lz4_batch(&[put("k", Some("v2")), put("other", Some("o"))], NOW),
    );
    let tombstone = append_one(&log, &keyed_batch(&[put("k", None)], NOW));
    append_filler(&log, "a");
    block_on(committer.flush_round());
    assert!(tombstone < active_base(&log), "the tombstone is cleanable");
    assert_eq!(
        replayed(&block_on(read_records(&log, usize::MAX)), "k"),
        None
    );

    // delete.retention.ms 0: the tombstone has expired at the first pass.
    let summary = block_on(log.clean(&options(0))).unwrap();
    let records = block_on(read_records(&log, usize::MAX));
    assert_eq!(replayed(&records, "k"), None, "{:?}", of_key(&records, "k"));
    assert_eq!(tombstones_of(&records, "k"), vec![tombstone]);
    assert_eq!(summary.tombstones_removed, 0, "{summary:?}");
    assert_eq!(replayed(&records, "other").as_deref(), Some("o"));
    assert!(
        !records
            .iter()
            .any(|record| record.value.as_deref() == Some(b"v1".as_slice())),
        "the plain value older than the tombstone goes"
    );
    // The kept tombstone waits for its compressed value, not for a clock:
    // it does not make its segment dirty again (which would make the
    // cleaner repeat passes that change nothing).
    assert_eq!(log.dirty_stats(0).dirty_bytes, 0);

    // The same after a later pass and a reopen.
    let again = block_on(log.clean(&options(0))).unwrap();
    assert_eq!(again.segments_rewritten, 0, "{again:?}");
    block_on(log.close()).unwrap();
    drop(log);
    let (log, _committer) = open_sim(&io);
    block_on(log.clean(&options(0))).unwrap();
    let records = block_on(read_records(&log, usize::MAX));
    assert_eq!(replayed(&records, "k"), None, "{:?}", of_key(&records, "k"));
}

/// The same with the older value in a committed transaction whose marker
/// is past the cleanable range (its batch is kept whole until the marker
/// is cleanable); once it is, the value is compacted and the tombstone goes
/// too.
#[test]
fn a_deleted_key_stays_deleted_when_an_older_value_of_it_is_in_a_transaction_not_cleanable_yet() {
    let io = SimIo::new(9);
    let (log, committer) = open_sim(&io);
    append_one(&log, &keyed_batch(&[put("k", Some("v1"))], NOW));
    let committed = append_one(
        &log,
        &transactional_batch(1, 0, &[("k", "v2"), ("other", "o")]),
    );
    let tombstone = append_one(&log, &keyed_batch(&[put("k", None)], NOW));
    append_filler(&log, "a");
    let marker = append_one(&log, &marker_batch(1, true));
    block_on(committer.flush_round());
    assert!(tombstone < active_base(&log), "the tombstone is cleanable");
    assert!(marker >= active_base(&log), "the marker is not");
    let input = TxnCleanInput {
        stable_bound: log.log_end_offset(),
        aborted: Vec::new(),
    };

    let summary = block_on(log.clean_transactions(&options(0), &input)).unwrap();
    let records = block_on(read_records(&log, usize::MAX));
    assert_eq!(replayed(&records, "k"), None, "{:?}", of_key(&records, "k"));
    assert_eq!(tombstones_of(&records, "k"), vec![tombstone]);
    assert_eq!(summary.tombstones_removed, 0, "{summary:?}");
    assert!(records.iter().any(|record| record.offset == committed));
    // Without transaction input every transactional batch is kept whole.
    block_on(log.clean(&options(0))).unwrap();
    let records = block_on(read_records(&log, usize::MAX));
    assert_eq!(replayed(&records, "k"), None, "{:?}", of_key(&records, "k"));
    assert_eq!(tombstones_of(&records, "k"), vec![tombstone]);

    // The marker becomes cleanable: the committed value is compacted (the
    // tombstone supersedes it), and nothing older of the key is left for
    // the expired tombstone to hide.
    append_filler(&log, "b");
    block_on(committer.flush_round());
    assert!(marker < active_base(&log));
    let input = TxnCleanInput {
        stable_bound: log.log_end_offset(),
        aborted: Vec::new(),
    };
    let summary = block_on(log.clean_transactions(&options(0), &input)).unwrap();
    assert_eq!(summary.tombstones_removed, 1, "{summary:?}");
    let records = block_on(read_records(&log, usize::MAX));
    assert!(
        records
            .iter()
            .all(|record| record.key.as_deref() != Some(b"k".as_slice())),
        "{:?}",
        of_key(&records, "k")
    );
    assert_eq!(replayed(&records, "other").as_deref(), Some("o"));
}

/// Kept-whole batches hold back only the tombstones they must: one with no
/// older whole-kept record of its key still goes when it expires, also when
/// a compressed record of its key follows it. Plain and compressed values
/// of one key replay to the last of them.
#[test]
fn an_expired_tombstone_with_no_older_compressed_value_of_its_key_still_goes() {
    let io = SimIo::new(10);
    let (log, committer) = open_sim(&io);
    append_one(&log, &keyed_batch(&[put("k", Some("k1"))], NOW));
    append_one(&log, &keyed_batch(&[put("later", Some("later-1"))], NOW));
    append_one(&log, &keyed_batch(&[put("plain-last", Some("p1"))], NOW));
    append_one(
        &log,
        &lz4_batch(
            &[
                put("unrelated", Some("u")),
                put("plain-last", Some("p2")),
                put("compressed-last", Some("c2")),
            ],
            NOW,
        ),
    );
    append_one(
        &log,
        &keyed_batch(&[put("compressed-last", Some("c1"))], NOW),
    );
    append_one(&log, &keyed_batch(&[put("k", None)], NOW));
    append_one(&log, &keyed_batch(&[put("later", None)], NOW));
    append_one(&log, &keyed_batch(&[put("plain-last", Some("p3"))], NOW));
    append_one(&log, &lz4_batch(&[put("later", Some("later-3"))], NOW));
    append_filler(&log, "a");
    block_on(committer.flush_round());

    let summary = block_on(log.clean(&options(0))).unwrap();
    assert_eq!(summary.tombstones_removed, 2, "{summary:?}");
    let records = block_on(read_records(&log, usize::MAX));
    assert!(
        records
            .iter()
            .all(|record| record.key.as_deref() != Some(b"k".as_slice())),
        "{:?}",
        of_key(&records, "k")
    );
    assert_eq!(replayed(&records, "later").as_deref(), Some("later-3"));
    assert!(tombstones_of(&records, "later").is_empty());
    assert_eq!(replayed(&records, "plain-last").as_deref(), Some("p3"));
    assert_eq!(replayed(&records, "unrelated").as_deref(), Some("u"));
    // c1 is the latest plain record of its key: kept, and replayed last
    // (its offset is after the compressed c2).
    assert_eq!(replayed(&records, "compressed-last").as_deref(), Some("c1"));
}

/// A compressed batch that does not decompress may hold any key: every
/// tombstone after it stays (those before it still go).
#[test]
fn tombstones_after_a_compressed_batch_that_does_not_decompress_are_kept() {
    let io = SimIo::new(11);
    let (log, committer) = open_sim(&io);
    append_one(&log, &keyed_batch(&[put("k", Some("v1"))], NOW));
    append_one(&log, &keyed_batch(&[put("before", None)], NOW));
    let compressed = lz4_batch(&[put("k", Some("v2"))], NOW);
    let mut damaged = compressed.to_vec();
    damaged[batch::layout::RECORDS_AT..].fill(0xaa);
    let crc = crc32c::crc32c(&damaged[batch::layout::CRC_COVERED_FROM..]);
    damaged[batch::layout::CRC_AT..batch::layout::CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    append_one(&log, &Bytes::from(damaged));
    append_one(&log, &keyed_batch(&[put("k", None)], NOW));
    append_filler(&log, "a");
    block_on(committer.flush_round());

    let summary = block_on(log.clean(&options(0))).unwrap();
    // v1 and the tombstone of `before`; the tombstone of `k` stays.
    assert_eq!(summary.records_removed, 2, "{summary:?}");
    assert_eq!(summary.tombstones_removed, 1, "{summary:?}");
}

/// What happens to the `checkpoint` file of a compacted log before it is
/// opened again.
#[derive(Clone, Copy, Debug)]
enum CheckpointLoss {
    /// An operator removed it.
    Removed,
    /// Bit rot: it no longer decodes.
    Garbage,
}

fn lose_checkpoint(io: &SimIo, loss: CheckpointLoss) {
    let path = dir().join("checkpoint");
    match loss {
        CheckpointLoss::Removed => io.remove_file(&path).unwrap(),
        CheckpointLoss::Garbage => {
            let mut bytes = io.read_file(&path).unwrap();
            bytes[20] ^= 0x10;
            block_on(io.write_file_atomic(&path, bytes)).unwrap();
        }
    }
}

/// (base offset, last offset) of every batch of the log, in order.
fn batch_spans<I: Io>(log: &Log<I>) -> Vec<(Offset, Offset)> {
    block_on(read_batches(log))
        .into_iter()
        .map(|(base, (fields, _))| (base, fields.last_offset))
        .collect()
}

/// Offset gaps between batches of one segment, and segments (not the last)
/// whose last batch ends before the next segment's base: the two shapes
/// compaction leaves that the strict rules cut at.
fn compaction_gaps(spans: &[(Offset, Offset)], bases: &[Offset]) -> (usize, usize) {
    let segment_of = |offset: Offset| bases.partition_point(|base| *base <= offset);
    let inner = spans
        .windows(2)
        .filter(|pair| {
            pair[0].1.plus(1) < pair[1].0 && segment_of(pair[0].0) == segment_of(pair[1].0)
        })
        .count();
    let early_ends = bases
        .windows(2)
        .filter(|pair| {
            spans
                .iter()
                .rfind(|(base, _)| *base < pair[1])
                .is_none_or(|(_, last)| last.plus(1) < pair[1])
        })
        .count();
    (inner, early_ends)
}

/// A compacted log, closed or killed (every append and the pass durable):
/// the records a complete pass keeps, and the log's start and end.
fn compacted_log(seed: u64, killed: bool) -> (SimIo, Vec<Record>, Offset, Offset) {
    let io = SimIo::new(seed);
    let (log, committer) = open_sim(&io);
    let mut rng = Rng(seed);
    let batches = workload(&mut rng, 250, 8);
    let appended = append_all(&log, &committer, &batches, NOW);
    let (start, end, boundary) = (
        log.log_start_offset(),
        log.log_end_offset(),
        active_base(&log),
    );
    block_on(log.clean(&options(1 << 40))).unwrap();
    let expected = expected_after_clean(&appended, boundary, NOW, 1 << 40);
    let (inner, early_ends) = compaction_gaps(&batch_spans(&log), &log.segment_bases());
    assert!(
        inner > 0 && early_ends > 0,
        "offset gaps inside segments {inner}, segments ending early {early_ends}"
    );
    if killed {
        drop(log);
        drop(committer);
        io.set_crash_mode(CrashMode::LoseUnsynced);
        return (io.crash(), expected, start, end);
    }
    block_on(log.close()).unwrap();
    (io, expected, start, end)
}

/// With its checkpoint removed or damaged, recovery trusted nothing and
/// held every segment to the strict rules: the first offset gap compaction
/// left (inside a segment, or after a segment's last kept batch) ended the
/// log, and every later segment was deleted: acknowledged, durable records
/// of a compacted topic lost. Now a sealed segment valid to its exact end
/// and named by its offset index file keeps its gaps and may end early, and
/// a gap is kept wherever the batch after it confirms it.
#[test]
fn a_compacted_log_keeps_every_record_when_its_checkpoint_is_lost() {
    for loss in [CheckpointLoss::Removed, CheckpointLoss::Garbage] {
        for killed in [false, true] {
            let context = format!("{loss:?}, killed {killed}");
            let (io, expected, start, end) = compacted_log(71, killed);
            lose_checkpoint(&io, loss);
            let (log, committer) = open_sim(&io);
            let report = log.recovery().clone();
            assert!(report.checkpoint_missing, "{context}: {report}");
            assert!(
                report.compacted_batches_kept > 0 && report.segments_ending_early_kept > 0,
                "{context}: {report}"
            );
            assert_eq!(report.segments_truncated, 0, "{context}: {report}");
            assert_eq!(
                (log.log_start_offset(), log.log_end_offset()),
                (start, end),
                "{context}"
            );
            assert_eq!(
                block_on(read_records(&log, usize::MAX)),
                expected,
                "{context}"
            );
            // Appends continue at the old end; the checkpoint the open wrote
            // vouches for what it kept, so a power loss now loses nothing.
            let mut rng = Rng(72);
            let more = append_all(&log, &committer, &workload(&mut rng, 20, 8), NOW);
            assert_eq!(more[0].offset, end, "{context}");
            drop(log);
            drop(committer);
            io.set_crash_mode(CrashMode::Torn);
            let io = io.crash();
            let (log, _committer) = open_sim(&io);
            let mut all_expected = expected.clone();
            all_expected.extend(more);
            assert_eq!(
                block_on(read_records(&log, usize::MAX)),
                all_expected,
                "{context}"
            );
        }
    }
}

/// Offset index files of the log's sealed segments (every one but the
/// active, last one), by path, in order.
fn sealed_index_paths(io: &SimIo) -> Vec<PathBuf> {
    let mut names: Vec<String> = io
        .list_dir(&dir())
        .unwrap()
        .into_iter()
        .filter(|name| name.ends_with(".index"))
        .collect();
    names.sort();
    names.pop();
    names.into_iter().map(|name| dir().join(name)).collect()
}

/// Segments sealed by an earlier version have index files with the active
/// segment's magic ("SLOX"), which recovery without a checkpoint does not
/// take as the witness that a file is final: with the checkpoint lost, the
/// strict rules cut such a compacted log at its first gap. The first open
/// with a valid checkpoint, which vouches for those segments, now rewrites
/// their index files sealed, so a checkpoint lost after it loses nothing.
#[test]
fn an_open_with_its_checkpoint_reseals_the_indexes_of_segments_an_earlier_version_sealed() {
    let (io, expected, start, end) = compacted_log(73, false);
    // The earlier version's files: the same entries under the old magic.
    let paths = sealed_index_paths(&io);
    assert!(paths.len() > 2, "{paths:?}");
    for path in &paths {
        let bytes = io.read_file(path).unwrap();
        assert_eq!(&bytes[..4], b"SLOS", "{}", path.display());
        let entries = OffsetIndex::decode(&bytes, Position(u64::MAX)).unwrap();
        block_on(io.write_file_atomic(path, entries.encode())).unwrap();
    }
    // The upgrade: an open with the checkpoint, then a clean close.
    let (log, _committer) = open_sim(&io);
    assert_eq!(block_on(read_records(&log, usize::MAX)), expected);
    block_on(log.close()).unwrap();
    // (Segments compaction emptied are gone.)
    let paths = sealed_index_paths(&io);
    assert!(paths.len() > 2, "{paths:?}");
    for path in &paths {
        let bytes = io.read_file(path).unwrap();
        assert_eq!(&bytes[..4], b"SLOS", "{} not resealed", path.display());
    }
    // A second open finds them sealed and writes none of them again.
    let before: Vec<_> = paths
        .iter()
        .map(|path| io.file_number(path).unwrap())
        .collect();
    let (log, _committer) = open_sim(&io);
    block_on(log.close()).unwrap();
    let after: Vec<_> = paths
        .iter()
        .map(|path| io.file_number(path).unwrap())
        .collect();
    assert_eq!(
        before, after,
        "a sealed segment's index file was written again"
    );
    // Now the checkpoint is lost: nothing compaction kept is.
    lose_checkpoint(&io, CheckpointLoss::Removed);
    let (log, _committer) = open_sim(&io);
    let report = log.recovery().clone();
    assert!(report.checkpoint_missing, "{report}");
    assert_eq!(report.segments_truncated, 0, "{report}");
    assert_eq!(
        (log.log_start_offset(), log.log_end_offset()),
        (start, end),
        "{report}"
    );
    assert_eq!(block_on(read_records(&log, usize::MAX)), expected);
}

/// Batches of a segment file: (position, size, base offset, last offset).
fn file_batches(bytes: &[u8]) -> Vec<(usize, usize, Offset, Offset)> {
    let mut batches = Vec::new();
    let mut position = 0;
    while position + sluice_engine::constants::BATCH_HEADER_SIZE <= bytes.len() {
        let Ok(header) = BatchHeader::parse(&bytes[position..]) else {
            break;
        };
        let size = header.total_size();
        batches.push((position, size, header.base_offset(), header.last_offset()));
        position += size;
    }
    batches
}

/// A sealed segment (neither the first nor the last) and a batch of it
/// (not its first) whose predecessor continues the offsets exactly, and
/// which the segment's offset index names or is followed by a batch it
/// names: damage there ends the log at that predecessor's end. Returns the
/// segment's base, its file's bytes and the batch's index.
fn damageable_batch(io: &SimIo, bases: &[Offset]) -> (Offset, Vec<u8>, usize) {
    for &base in &bases[1..bases.len() - 1] {
        let path = dir().join(format!("{:020}.log", base.value()));
        let bytes = io.durable_content(&path).unwrap();
        let batches = file_batches(&bytes);
        let index_file = io
            .read_file(&dir().join(format!("{:020}.index", base.value())))
            .unwrap();
        // 8 bytes of header, then (relative offset u32, position u32).
        let last_indexed = index_file[8..]
            .chunks_exact(8)
            .map(|entry| u32::from_be_bytes([entry[4], entry[5], entry[6], entry[7]]) as usize)
            .max()
            .unwrap_or(0);
        for index in 1..batches.len() {
            if batches[index].0 > last_indexed {
                break;
            }
            let previous_start = if index == 1 {
                base
            } else {
                batches[index - 2].3.plus(1)
            };
            if batches[index - 1].2 == previous_start {
                return (base, bytes, index);
            }
        }
    }
    panic!("no sealed segment with a batch after a contiguous one");
}

/// What can be damaged in a sealed segment of a compacted log with no
/// checkpoint, and must still end the log there.
#[derive(Clone, Copy, Debug)]
enum SealedDamage {
    /// The batch and everything after it read as zeros: the segment was
    /// never trimmed, its tail never durable (a successor exists).
    ZerosFromBatch,
    /// The file ends where the batch starts, its index files gone: a lost
    /// tail whose old length falls on a batch boundary.
    EndsAtBatchWithoutIndex,
    /// As `EndsAtBatchWithoutIndex`, with the index file kept (it names
    /// batches the file no longer holds).
    EndsAtBatchWithStaleIndex,
    /// As `EndsAtBatchWithoutIndex`, with the index file a clean close
    /// wrote while the segment was active: it names only batches the file
    /// holds, and the segment grew after it (rolled, then a crash before
    /// it was finalized).
    EndsAtBatchWithActiveIndex,
    /// A byte of the batch (inside its CRC) flipped.
    GarbageInBatch,
    /// The batch's base offset (outside the CRC) raised: it looks like a
    /// batch after a compaction gap, but the offsets after it disagree.
    RaisedBaseOffset,
}

/// With no valid checkpoint, the strict cuts still happen in a compacted
/// log: a sealed segment with a torn or unfinished tail, or whose file
/// ends early without an index naming its batches, ends the log (every
/// later segment goes); so does a damaged batch, and a base offset the
/// batches after it do not confirm.
#[test]
fn a_compacted_log_without_its_checkpoint_is_still_cut_where_it_was_damaged() {
    for damage in [
        SealedDamage::ZerosFromBatch,
        SealedDamage::EndsAtBatchWithoutIndex,
        SealedDamage::EndsAtBatchWithStaleIndex,
        SealedDamage::EndsAtBatchWithActiveIndex,
        SealedDamage::GarbageInBatch,
        SealedDamage::RaisedBaseOffset,
    ] {
        let (io, expected, start, _end) = compacted_log(73, false);
        let bases = {
            let (log, _committer) = open_sim(&io);
            let bases = log.segment_bases();
            block_on(log.close()).unwrap();
            bases
        };
        lose_checkpoint(&io, CheckpointLoss::Removed);
        let (base, mut bytes, index) = damageable_batch(&io, &bases);
        let batches = file_batches(&bytes);
        let (position, size, batch_base, _) = batches[index];
        let path = dir().join(format!("{:020}.log", base.value()));
        let index_path = dir().join(format!("{:020}.index", base.value()));
        match damage {
            SealedDamage::ZerosFromBatch => bytes[position..].fill(0),
            SealedDamage::EndsAtBatchWithoutIndex => {
                bytes.truncate(position);
                io.remove_file(&index_path).unwrap();
            }
            SealedDamage::EndsAtBatchWithStaleIndex => bytes.truncate(position),
            SealedDamage::EndsAtBatchWithActiveIndex => {
                bytes.truncate(position);
                let index_file = io.read_file(&index_path).unwrap();
                // 8 bytes of header (magic, CRC-32C of the entries), then
                // (relative offset u32, position u32) entries.
                let body: Vec<u8> = index_file[8..]
                    .chunks_exact(8)
                    .filter(|entry| {
                        (u32::from_be_bytes([entry[4], entry[5], entry[6], entry[7]]) as usize)
                            < position
                    })
                    .flatten()
                    .copied()
                    .collect();
                let mut active_index = b"SLOX".to_vec();
                active_index.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
                active_index.extend_from_slice(&body);
                block_on(io.write_file_atomic(&index_path, active_index)).unwrap();
            }
            SealedDamage::GarbageInBatch => bytes[position + size / 2] ^= 0x40,
            SealedDamage::RaisedBaseOffset => {
                let raised = batch_base.value() + (1 << 20);
                bytes[position..position + 8].copy_from_slice(&raised.to_be_bytes());
            }
        }
        block_on(io.write_file_atomic(&path, bytes)).unwrap();
        let (log, committer) = open_sim(&io);
        let context = format!(
            "{damage:?} at {batch_base} in segment {base}: {}",
            log.recovery()
        );
        let kept_end = batches[index - 1].3.plus(1);
        assert_eq!(log.log_start_offset(), start, "{context}");
        assert_eq!(log.log_end_offset(), kept_end, "{context}");
        assert_eq!(log.segment_bases().last(), Some(&base), "{context}");
        let kept: Vec<Record> = expected
            .iter()
            .filter(|record| record.offset < kept_end)
            .cloned()
            .collect();
        assert_eq!(block_on(read_records(&log, usize::MAX)), kept, "{context}");
        let mut rng = Rng(74);
        let more = append_all(&log, &committer, &workload(&mut rng, 3, 8), NOW);
        assert_eq!(more[0].offset, kept_end, "{context}");
    }
}

/// With no valid checkpoint, a sealed segment that ends early before a
/// successor found empty (a follower's truncation to that base, then a
/// crash; or its only batch cut) stays sealed, and the log continues at
/// that successor's base in a fresh segment. Before, the early-ending
/// segment became the active one with its end raised past its last batch:
/// the next append landed after a gap nothing vouched for, and the crash
/// after it cut that append and everything after it.
#[test]
fn a_segment_ending_early_before_an_empty_successor_stays_sealed_without_a_checkpoint() {
    let (io, expected, start, _end) = compacted_log(71, false);
    let (bases, spans) = {
        let (log, _committer) = open_sim(&io);
        let found = (log.segment_bases(), batch_spans(&log));
        block_on(log.close()).unwrap();
        found
    };
    // A segment (not the first) whose predecessor's last batch ends before
    // its base: compaction removed the batches after it.
    let successor = bases[1..]
        .iter()
        .copied()
        .find(|&base| {
            spans
                .iter()
                .rfind(|(first, _)| *first < base)
                .is_some_and(|(_, last)| last.plus(1) < base)
        })
        .expect("a segment whose predecessor ends early");
    for &base in bases.iter().filter(|&&base| base >= successor) {
        for extension in ["index", "timeindex"] {
            let _ = io.remove_file(&dir().join(format!("{:020}.{extension}", base.value())));
        }
        let path = dir().join(format!("{:020}.log", base.value()));
        if base == successor {
            block_on(io.write_file_atomic(&path, Vec::new())).unwrap();
        } else {
            io.remove_file(&path).unwrap();
        }
    }
    lose_checkpoint(&io, CheckpointLoss::Removed);
    let (log, committer) = open_sim(&io);
    let context = format!("successor {successor}: {}", log.recovery());
    assert_eq!(
        (log.log_start_offset(), log.log_end_offset()),
        (start, successor),
        "{context}"
    );
    assert_eq!(log.segment_bases().last(), Some(&successor), "{context}");
    let kept: Vec<Record> = expected
        .iter()
        .filter(|record| record.offset < successor)
        .cloned()
        .collect();
    assert_eq!(block_on(read_records(&log, usize::MAX)), kept, "{context}");
    let mut rng = Rng(74);
    let more = append_all(&log, &committer, &workload(&mut rng, 5, 8), NOW);
    assert_eq!(more[0].offset, successor, "{context}");
    drop(log);
    drop(committer);
    io.set_crash_mode(CrashMode::Torn);
    let io = io.crash();
    let (log, _committer) = open_sim(&io);
    let mut all_expected = kept;
    all_expected.extend(more);
    assert_eq!(
        block_on(read_records(&log, usize::MAX)),
        all_expected,
        "{context}: after a crash, {}",
        log.recovery()
    );
}
