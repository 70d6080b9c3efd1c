//! Helpers shared by the crate tests and the fuzz targets (not used by the
//! server): a minimal executor for the simulated disk, and the recovery check
//! that the recovery fuzz target and its stable-Rust twin both run.

use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use crate::batch;
use crate::commit::Committer;
use crate::config::LogConfig;
use crate::constants::PAGE_SIZE;
use crate::io::Io;
use crate::io::sim::SimIo;
use crate::log::{Log, ReadLimits};
use crate::types::Offset;

/// Poll `future` to completion. Every simulated operation completes when
/// polled, so a future still pending after many polls is a deadlock: panic.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut context = Context::from_waker(Waker::noop());
    for _ in 0..1_000_000 {
        crate::io::sim::next_poll_pass();
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
    }
    panic!("future never completed on the simulated disk: deadlock");
}

/// Put `segment` (arbitrary bytes) on a simulated disk as the first segment
/// of a log, optionally with a checkpoint file, open the log and check what
/// recovery made of it: the open must not panic; if it succeeds, every batch
/// read back must validate, offsets must be contiguous, and appends must work.
/// Returns the recovered log end, `None` when the open failed cleanly.
pub fn check_recovery_of(segment: &[u8], checkpoint: Option<&[u8]>) -> Option<Offset> {
    let io = SimIo::new(0);
    let dir = Path::new("/fuzz/topic-0");
    block_on(async {
        io.create_dir_all(dir).ok()?;
        let path = dir.join("00000000000000000000.log");
        let file = io.open(&path, true).await.ok()?;
        let padded = segment.len().div_ceil(PAGE_SIZE) * PAGE_SIZE;
        if padded > 0 {
            let mut image = vec![0u8; padded];
            image[..segment.len()].copy_from_slice(segment);
            io.write_at(&file, 0, Bytes::from(image)).await.ok()?;
            io.set_len(&file, segment.len() as u64).await.ok()?;
        }
        if let Some(checkpoint) = checkpoint {
            let _ = io
                .write_file_atomic(&dir.join("checkpoint"), checkpoint.to_vec())
                .await;
        }
        drop(file);
        let committer = Committer::new(io.clone());
        let config = LogConfig {
            segment_bytes: 1 << 20,
            ..LogConfig::default()
        };
        let log = Log::open(io.clone(), dir, config, &committer).await.ok()?;
        let start = log.log_start_offset();
        let end = log.log_end_offset();
        assert!(start <= end, "log start {start} beyond end {end}");
        let mut offset = start;
        let mut first = true;
        while offset < end {
            let limits = ReadLimits {
                max_bytes: 1 << 20,
                min_one_batch: true,
                max_offset: end,
            };
            let result = match log.read(offset, limits).await {
                Ok(result) => result,
                Err(error) => panic!("reading recovered data failed: {error}"),
            };
            assert!(!result.records.is_empty(), "no progress at {offset}");
            for run in &result.records {
                let Ok(ranges) = batch::split_batches(run) else {
                    panic!("recovered data does not split into batches");
                };
                for range in ranges {
                    let header = match batch::validate(&run[range], usize::MAX) {
                        Ok(header) => header,
                        Err(error) => panic!("recovered batch is invalid: {error}"),
                    };
                    if !first {
                        assert_eq!(header.base_offset(), offset, "offsets are not contiguous");
                    }
                    first = false;
                    offset = header.next_offset();
                }
            }
        }
        assert_eq!(offset.max(start), end);
        let appended = log.append(
            &batch::simple_batch(3, 10, crate::types::TimestampMs(0)),
            Default::default(),
        );
        let Ok(appended) = appended else {
            panic!("append after recovery failed")
        };
        assert_eq!(appended.base_offset, end);
        committer.flush_all().await;
        assert!(appended.completion.await.is_ok());
        assert_eq!(log.durable_end_offset(), Offset(end.value() + 3));
        Some(end)
    })
}
