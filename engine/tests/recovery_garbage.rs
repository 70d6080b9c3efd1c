//! Recovery on damaged segment files (the stable-Rust twin of the
//! `recovery_scan` fuzz target): seeded mutations of a real segment, plus
//! pure noise, must never make recovery panic or return an invalid batch.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;

use sluice_engine::io::sim::{CrashMode, SimIo};
use sluice_engine::recovery::Checkpoint;
use sluice_engine::testing::check_recovery_of;
use sluice_engine::{Committer, LeaderEpoch, Log, LogConfig, Offset};
use support::{Rng, block_on, tagged_batch};

trait BelowUsize {
    fn below_usize(&mut self, bound: usize) -> usize;
}

impl BelowUsize for Rng {
    fn below_usize(&mut self, bound: usize) -> usize {
        self.below(bound as u64) as usize
    }
}

/// The bytes of a segment holding `count` batches of assorted sizes.
fn real_segment(count: u64) -> Vec<u8> {
    let io = SimIo::new(1);
    let dir = Path::new("/data/t-0");
    let committer = Committer::new(io.clone());
    let log = block_on(Log::open(io.clone(), dir, LogConfig::default(), &committer)).unwrap();
    for tag in 0..count {
        let batch = tagged_batch(
            tag,
            1 + (tag % 7) as usize,
            (tag * 37 % 900) as usize,
            1_000 + tag as i64,
        );
        let _ = log.append(&batch, LeaderEpoch(0)).unwrap();
    }
    block_on(committer.flush_all());
    let size = log.size_bytes() as usize;
    let mut bytes = io
        .durable_content(&dir.join("00000000000000000000.log"))
        .unwrap();
    bytes.truncate(size);
    bytes
}

fn mutate(rng: &mut Rng, original: &[u8]) -> Vec<u8> {
    let mut bytes = original.to_vec();
    for _ in 0..1 + rng.below_usize(4) {
        let length = bytes.len();
        match rng.below_usize(6) {
            0 => {
                let at = rng.below_usize(length);
                bytes[at] ^= 1 << rng.below_usize(8);
            }
            1 => bytes.truncate(rng.below_usize(length)),
            2 => {
                let at = rng.below_usize(length);
                let end = (at + rng.below_usize(600)).min(length);
                bytes[at..end].fill(0);
            }
            3 => {
                // A length field: the 4 bytes after a batch's base offset.
                let at = rng.below_usize(length.saturating_sub(12));
                let value = (rng.next() as u32).to_be_bytes();
                bytes[at + 8..at + 12].copy_from_slice(&value);
            }
            4 => {
                let at = rng.below_usize(length);
                let end = (at + rng.below_usize(300)).min(length);
                let copy = bytes[at..end].to_vec();
                let to = rng.below_usize(length);
                let end = (to + copy.len()).min(length);
                bytes[to..end].copy_from_slice(&copy[..end - to]);
            }
            _ => {
                let at = rng.below_usize(length);
                let end = (at + rng.below_usize(64)).min(length);
                for byte in &mut bytes[at..end] {
                    *byte = rng.next() as u8;
                }
            }
        }
        if bytes.is_empty() {
            break;
        }
    }
    bytes
}

#[test]
fn damaged_segments_recover_to_a_valid_prefix_without_panicking() {
    let original = real_segment(60);
    let full = check_recovery_of(&original, None).expect("an undamaged segment opens");
    assert!(
        full > Offset(200),
        "the undamaged segment holds {full} records"
    );
    let mut opened = 0;
    let iterations = std::env::var("SLUICE_GARBAGE_ITERATIONS")
        .ok()
        .and_then(|count| count.parse().ok())
        .unwrap_or(1500);
    let mut rng = Rng(42);
    for iteration in 0..iterations {
        let damaged = mutate(&mut rng, &original);
        let checkpoint = match rng.below_usize(4) {
            0 => Some(
                Checkpoint {
                    log_start: Offset(rng.below_usize(200) as i64),
                    recovery_base: Offset(rng.below_usize(3) as i64 * 100),
                    recovery_position: rng.below_usize(original.len() * 2) as u64,
                }
                .encode(),
            ),
            1 => Some((0..36).map(|_| rng.next() as u8).collect()),
            _ => None,
        };
        let outcome =
            std::panic::catch_unwind(|| check_recovery_of(&damaged, checkpoint.as_deref()));
        match outcome {
            Ok(Some(end)) => {
                assert!(end <= full, "recovery invented records: {end} > {full}");
                opened += 1;
            }
            Ok(None) => {}
            Err(_) => panic!("iteration {iteration} (seed 42) made recovery fail its checks"),
        }
    }
    // Damage is repaired by truncation, not refused: nearly all must open.
    assert!(
        opened * 10 >= iterations * 9,
        "only {opened} of {iterations} damaged logs opened"
    );
}

#[test]
fn pure_noise_never_panics_recovery() {
    let mut rng = Rng(7);
    for _ in 0..300 {
        let length = rng.below_usize(20_000);
        let noise: Vec<u8> = (0..length).map(|_| rng.next() as u8).collect();
        assert_eq!(
            check_recovery_of(&noise, None),
            Some(Offset(0)),
            "noise holds no valid batch"
        );
    }
}

/// A trusted segment may end before its successor's base only within the
/// checkpointed prefix (compaction removed its last records). When the
/// segment at the checkpoint's recovery base is missing and a later one
/// exists, the offsets between are gone: recovery ends the log there
/// instead of jumping over the gap (a reader at the gap would find nothing
/// forever).
#[test]
fn a_missing_segment_at_the_recovery_base_ends_the_log_there() {
    use sluice_engine::io::Io;
    let io = SimIo::new(3);
    let dir = Path::new("/data/t-1");
    let config = LogConfig {
        segment_bytes: 4096,
        ..LogConfig::default()
    };
    let committer = Committer::new(io.clone());
    let log = block_on(Log::open(io.clone(), dir, config.clone(), &committer)).unwrap();
    let mut checkpoints = Vec::new();
    for tag in 0..6 {
        // Each batch fills most of a segment: one segment per batch.
        let _ = log
            .append(&tagged_batch(tag, 1, 3000, 1_000), LeaderEpoch(0))
            .unwrap();
        block_on(committer.flush_all());
        checkpoints.push(io.read_file(&dir.join("checkpoint")).ok());
    }
    // A new log writes its checkpoint at its first seal, not before.
    assert!(checkpoints[0].is_none());
    let checkpoints: Vec<Vec<u8>> = checkpoints[1..].iter().flatten().cloned().collect();
    block_on(log.close()).unwrap();
    drop(log);
    // The state of a crash in which segment 3 and the checkpoint naming a
    // later base were lost, while segments 4 and 5 survived.
    let old = Checkpoint::decode(&checkpoints[2]).unwrap();
    assert_eq!(old.recovery_base, Offset(3));
    block_on(io.write_file_atomic(&dir.join("checkpoint"), checkpoints[2].clone())).unwrap();
    io.remove_file(&dir.join("00000000000000000003.log"))
        .unwrap();
    let log = block_on(Log::open(io.clone(), dir, config, &committer)).unwrap();
    assert_eq!(log.log_end_offset(), Offset(3), "the log ends at the gap");
    assert!(
        !io.file_names(dir)
            .contains(&"00000000000000000004.log".to_owned()),
        "segments past the gap are removed"
    );
    // Appends continue from the gap.
    let appended = log
        .append(&tagged_batch(9, 1, 10, 1_000), LeaderEpoch(0))
        .unwrap();
    assert_eq!(appended.base_offset, Offset(3));
}

/// A new log writes neither its checkpoint nor its leader-epoch checkpoint
/// (a missing file reads as what it would hold); its first flush writes the
/// epoch file before the data it covers. A crash before or after that flush
/// reopens the log with everything acknowledged and the epoch known.
#[test]
fn a_new_log_writes_its_checkpoints_only_when_they_say_something() {
    let io = SimIo::new(7);
    let dir = Path::new("/data/n-0");
    let config = LogConfig::default();
    let committer = Committer::new(io.clone());
    let log = block_on(Log::open(io.clone(), dir, config.clone(), &committer)).unwrap();
    assert!(
        io.file_names(dir).is_empty(),
        "a new log created {:?}",
        io.file_names(dir)
    );
    drop(log);
    // A crash before any append: the log reopens empty, still writing nothing.
    let io = io.crash();
    let committer = Committer::new(io.clone());
    let log = block_on(Log::open(io.clone(), dir, config.clone(), &committer)).unwrap();
    assert_eq!(log.log_end_offset(), Offset(0));
    assert!(io.file_names(dir).is_empty());
    let appended = log
        .append(&tagged_batch(1, 2, 100, 1_000), LeaderEpoch(3))
        .unwrap();
    block_on(committer.flush_all());
    assert!(block_on(appended.completion).is_ok());
    let names = io.file_names(dir);
    assert!(
        names.contains(&"leader-epoch-checkpoint".to_owned()),
        "the first entry is persisted with the first flush: {names:?}"
    );
    assert!(
        io.durable_content(&dir.join("leader-epoch-checkpoint"))
            .is_some(),
        "and durably"
    );
    drop(log);
    // A crash after it: everything acknowledged is there, with its epoch.
    let io = io.crash();
    let committer = Committer::new(io.clone());
    let log = block_on(Log::open(io.clone(), dir, config, &committer)).unwrap();
    assert_eq!(log.log_end_offset(), Offset(2));
    assert_eq!(
        log.leader_epoch_entries(),
        vec![(LeaderEpoch(3), Offset(0))]
    );
}

/// A flush that created a segment file and stopped before its directory
/// sync (here: no space to preallocate) leaves an empty file whose entry
/// is not durable. A process killed then and restarted finds the file; the
/// first flush after the restart must still make the entry durable before
/// acknowledging, or a machine crash afterwards loses the file with
/// acknowledged records (recovery used to count every file it found as
/// synced).
#[test]
fn an_empty_segment_found_after_a_kill_gets_its_directory_entry_synced_before_an_ack() {
    let io = SimIo::new(13);
    io.set_crash_mode(CrashMode::LoseUnsynced);
    let dir = Path::new("/data/k-0");
    let config = LogConfig::default();
    let committer = Committer::new(io.clone());
    let log = block_on(Log::open(io.clone(), dir, config.clone(), &committer)).unwrap();
    // Room for the leader-epoch checkpoint, not for a segment's first
    // preallocation.
    io.set_space_limit(Some(4096));
    let refused = log
        .append(&tagged_batch(1, 2, 100, 1_000), LeaderEpoch(3))
        .unwrap();
    block_on(committer.flush_all());
    assert!(
        block_on(refused.completion).is_err(),
        "no space: not acknowledged"
    );
    assert!(
        io.file_names(dir)
            .contains(&"00000000000000000000.log".to_owned()),
        "the flush created the segment file before it failed: {:?}",
        io.file_names(dir)
    );
    io.set_space_limit(None);
    // kill -9: the process goes, the kernel keeps the file.
    drop(log);
    let committer = Committer::new(io.clone());
    let log = block_on(Log::open(io.clone(), dir, config.clone(), &committer)).unwrap();
    let appended = log
        .append(&tagged_batch(1, 2, 100, 1_000), LeaderEpoch(3))
        .unwrap();
    block_on(committer.flush_all());
    assert!(block_on(appended.completion).is_ok());
    drop(log);
    // Then the machine crashes: the acknowledged records are there.
    let io = io.crash();
    let committer = Committer::new(io.clone());
    let log = block_on(Log::open(io.clone(), dir, config, &committer)).unwrap();
    assert_eq!(log.log_end_offset(), Offset(2));
}

/// A batch header damaged on disk inside the part the checkpoint trusts
/// (recovery scans only past it; reads check no CRC): a read reaching it
/// ends there instead of failing an assertion on its offsets, which
/// aborted the broker at every read of that offset, restart after restart.
#[test]
fn a_damaged_header_in_trusted_data_ends_a_read_without_a_panic() {
    let io = SimIo::new(4);
    let dir = Path::new("/data/t-2");
    let config = LogConfig::default();
    let committer = Committer::new(io.clone());
    let log = block_on(Log::open(io.clone(), dir, config.clone(), &committer)).unwrap();
    let batch = tagged_batch(1, 3, 200, 1_000);
    for _ in 0..20 {
        let _ = log.append(&batch, LeaderEpoch(0)).unwrap();
    }
    block_on(committer.flush_all());
    block_on(log.close()).unwrap();
    drop(log);
    let path = dir.join("00000000000000000000.log");
    // The first byte of batch 5's lastOffsetDelta (header bytes 23..27):
    // flipped, the delta is negative. Then batch 8's baseOffset's first
    // byte: flipped, its base is negative.
    for position in [5 * batch.len() as u64 + 23, 8 * batch.len() as u64] {
        io.corrupt_byte(&path, position);
    }
    let log = block_on(Log::open(io.clone(), dir, config, &committer)).unwrap();
    assert_eq!(
        log.log_end_offset(),
        Offset(60),
        "recovery trusted the file"
    );
    let end = log.log_end_offset();
    let limits = sluice_engine::ReadLimits {
        max_bytes: 1 << 20,
        min_one_batch: true,
        max_offset: end,
    };
    let read = block_on(log.read(Offset::ZERO, limits)).unwrap();
    assert_eq!(read.next_offset, Offset(15), "the five batches before it");
    for offset in [15, 16, 20, 24, 30, 59] {
        let _ = block_on(log.read(Offset(offset), limits));
        let _ = block_on(log.offset_for_timestamp(sluice_engine::TimestampMs(0), end));
    }
}
