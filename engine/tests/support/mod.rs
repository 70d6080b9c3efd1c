//! Shared helpers for the engine's crate tests: a minimal executor for the
//! simulated disk (whose futures complete when polled) and batch helpers.
#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use sluice_engine::batch::{self, BatchBuilder};
use sluice_engine::{Offset, ReadLimits, TimestampMs};

pub use sluice_engine::testing::block_on;

/// Poll once: `Some` if ready.
pub fn poll_once<F: Future + Unpin>(future: &mut F) -> Option<F::Output> {
    let mut context = Context::from_waker(Waker::noop());
    match std::pin::Pin::new(future).poll(&mut context) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

/// A batch of `count` records whose values are derived from `tag`, so that
/// every batch in a test is distinguishable.
pub fn tagged_batch(tag: u64, count: usize, value_size: usize, timestamp: i64) -> Bytes {
    let mut builder = BatchBuilder::new();
    for index in 0..count {
        let value: Vec<u8> = (0..value_size)
            .map(|position| {
                (tag as usize)
                    .wrapping_mul(31)
                    .wrapping_add(index * 7 + position) as u8
            })
            .collect();
        let key = format!("key-{tag}-{index}");
        builder.record(
            Some(key.as_bytes()),
            Some(&value),
            TimestampMs(timestamp + index as i64),
        );
    }
    builder.build()
}

/// The batch as the log stores it: base offset and leader epoch patched.
pub fn as_stored(batch_bytes: &Bytes, base: Offset, epoch: i32) -> Vec<u8> {
    let mut stored = batch_bytes.to_vec();
    batch::patch_base_offset(&mut stored, base);
    batch::patch_leader_epoch(&mut stored, sluice_engine::LeaderEpoch(epoch));
    stored
}

pub fn all(max_offset: Offset) -> ReadLimits {
    ReadLimits {
        max_bytes: usize::MAX,
        min_one_batch: true,
        max_offset,
    }
}

/// Split read results into individual batches (copies: tests only).
pub fn batches_of(records: &[Bytes]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for run in records {
        for range in batch::split_batches(run).unwrap() {
            out.push(run[range].to_vec());
        }
    }
    out
}
