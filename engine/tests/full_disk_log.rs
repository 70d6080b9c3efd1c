//! What a log says when its disk is full: one warning per episode (until a
//! flush succeeds again), not one per flush. In a test binary of its own:
//! tracing caches each call site's interest process-wide, and a test on
//! another thread without a subscriber could make this one miss events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;

use sluice_engine::io::sim::SimIo;
use sluice_engine::{AppendError, Committer, LeaderEpoch, Log, LogConfig, Offset};
use support::{block_on, poll_once, tagged_batch};

const NOW: i64 = SimIo::NOW_MS_START_DEFAULT;

fn open(io: &SimIo) -> (Log<SimIo>, Committer<SimIo>) {
    let config = LogConfig {
        segment_bytes: 64 << 10,
        preallocate_step_bytes: 4096,
        chunk_size_bytes: 16 << 10,
        retention_ms: None,
        ..LogConfig::default()
    };
    let committer = Committer::new(io.clone());
    let log = block_on(Log::open(
        io.clone(),
        PathBuf::from("/data/full-0"),
        config,
        &committer,
    ))
    .unwrap();
    (log, committer)
}

/// Append and make durable; returns the base offset.
fn append_durable(log: &Log<SimIo>, committer: &Committer<SimIo>, batch: &bytes::Bytes) -> Offset {
    let mut appended = log.append(batch, LeaderEpoch(0)).unwrap();
    block_on(committer.flush_round());
    poll_once(&mut appended.completion)
        .expect("durable after a flush round")
        .unwrap();
    appended.base_offset
}

/// Lines a tracing subscriber wrote, for tests that check what is logged.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn count(&self, needle: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|line| line.contains(needle))
            .count()
    }
}

/// A full disk is reported once per log until a flush succeeds again, not
/// at every flush: a broker with thousands of partitions on a full disk
/// logged thousands of warnings a second. A later episode is reported
/// again.
#[test]
fn a_full_disk_is_warned_about_once_per_episode() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    const WARNING: &str = "no space left while";
    tracing::subscriber::with_default(subscriber, || {
        let io = SimIo::new(19);
        let (log, committer) = open(&io);
        append_durable(&log, &committer, &tagged_batch(1, 2, 100, NOW));
        for episode in 1..=2 {
            io.set_space_limit(Some(io.space_used_bytes()));
            for attempt in 0..5 {
                let mut refused = log
                    .append(&tagged_batch(2, 20, 400, NOW), LeaderEpoch(0))
                    .unwrap();
                block_on(committer.flush_round());
                let error = poll_once(&mut refused.completion).unwrap().err().unwrap();
                assert!(
                    matches!(error, AppendError::StorageFull { .. }),
                    "episode {episode}, attempt {attempt}: {error}"
                );
            }
            assert_eq!(captured.count(WARNING), episode, "one warning per episode");
            io.set_space_limit(None);
            append_durable(&log, &committer, &tagged_batch(3, 2, 100, NOW));
            assert_eq!(captured.count("space again"), episode);
        }
    });
}
