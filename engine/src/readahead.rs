//! Read-ahead for sequential readers of a log (issue 11's read path).
//!
//! A consumer catching up, or a follower catching up from its leader's
//! disk, reads a partition front to back, one `Log::read` per fetch. Without
//! read-ahead the disk idles while each answer is sent and the next fetch
//! arrives: one read in flight per partition, and the time on the wire
//! added to every read. After a read served from disk, [`ReadAhead::issue`]
//! starts the read of the chunk that follows (same size, up to the
//! segment's durable end), and the next `Log::read` starting there takes
//! it ([`ReadAhead::take`]) instead of reading again.
//!
//! Correctness: a slot holds bytes of one segment generation below the
//! durable size it had when the read was issued (`valid_end`). Below the
//! durable size a segment's bytes never change, except by truncation
//! (`Log::truncate_to` clears the slot) and by compaction, which swaps in a
//! new generation (a slot of another generation is never taken). Bytes past
//! `valid_end` are never used, even when the segment has grown since: the
//! file's tail page may have been rewritten after the read.
//!
//! Memory: one slot per log (the newest read wins), and at most
//! [`SHARD_BUDGET_BYTES`] in slots per shard thread; past it no read-ahead
//! is issued. A slot nobody takes stays until the log's next disk read or
//! until the log is dropped.

use std::cell::{Cell, RefCell};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::LocalBoxFuture;

use crate::constants::PAGE_SIZE;
use crate::io::Io;
use crate::segment::buffer::{page_ceil, page_floor};
use crate::types::Offset;

/// Read-ahead bytes one shard thread may hold in slots.
pub const SHARD_BUDGET_BYTES: usize = 64 << 20;

/// Process-wide switch (on by default; `sluice serve --read-ahead false`
/// turns it off, to measure what it brings).
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turn read-ahead on or off for every log of the process.
pub fn set_enabled(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

thread_local! {
    /// Bytes in this thread's slots (a log lives on one shard thread).
    static IN_SLOTS: Cell<usize> = const { Cell::new(0) };
}

/// A share of [`SHARD_BUDGET_BYTES`], given back when dropped.
struct Budget(usize);

impl Budget {
    fn claim(bytes: usize) -> Option<Budget> {
        IN_SLOTS.with(|used| {
            let now = used.get();
            (now + bytes <= SHARD_BUDGET_BYTES).then(|| {
                used.set(now + bytes);
                Budget(bytes)
            })
        })
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        IN_SLOTS.with(|used| used.set(used.get().saturating_sub(self.0)));
    }
}

struct Slot {
    base: Offset,
    generation: u64,
    /// File position of the read's first byte (page aligned).
    start: u64,
    /// The segment's durable size when the read was issued: bytes at or
    /// past it are not used.
    valid_end: u64,
    read: LocalBoxFuture<'static, io::Result<Bytes>>,
    _budget: Budget,
}

/// A read issued ahead, taken by [`ReadAhead::take`].
pub struct Prefetched {
    /// [`ReadAhead::clears`] when it was taken (for [`ReadAhead::put_back`]).
    pub clears: u64,
    /// File position of `read`'s first byte.
    pub start: u64,
    /// Bytes at or past this file position are not to be used.
    pub valid_end: u64,
    pub read: LocalBoxFuture<'static, io::Result<Bytes>>,
}

/// The read-ahead slot of one log. See the module docs.
#[derive(Default)]
pub struct ReadAhead {
    slot: RefCell<Option<Slot>>,
    /// Reads served from a slot (tests and metrics).
    taken: Cell<u64>,
    /// The byte budget of the last read that returned data: the size of
    /// the reader's reads, which a short read at the end of a fetch (the
    /// rest of its budget) must not shrink.
    reader_bytes: Cell<usize>,
    /// Truncations seen ([`ReadAhead::clear`]): bytes taken before one are
    /// never put back after it.
    clears: Cell<u64>,
}

impl ReadAhead {
    /// The read issued for segment `base` at `generation` when it covers
    /// `position..position + need`.
    pub fn take(
        &self,
        base: Offset,
        generation: u64,
        position: u64,
        need: usize,
    ) -> Option<Prefetched> {
        let mut slot = self.slot.borrow_mut();
        let fits = slot.as_ref().is_some_and(|slot| {
            slot.base == base
                && slot.generation == generation
                && slot.start <= position
                && position + need as u64 <= slot.valid_end
        });
        if !fits {
            return None;
        }
        let slot = slot.take()?;
        self.taken.set(self.taken.get() + 1);
        Some(Prefetched {
            clears: self.clears.get(),
            start: slot.start,
            valid_end: slot.valid_end,
            read: slot.read,
        })
    }

    /// Start reading `length` bytes of segment `base` (`generation`, open
    /// as `file`, durable up to `durable_size`) from `position` on, for the
    /// next read. Replaces the slot. Nothing is issued past the durable
    /// size or beyond the shard's budget.
    #[allow(clippy::too_many_arguments)]
    pub async fn issue<I: Io>(
        &self,
        io: &I,
        file: &I::File,
        base: Offset,
        generation: u64,
        position: u64,
        length: usize,
        durable_size: u64,
    ) {
        // The old slot's budget is given back before claiming anew.
        self.slot.borrow_mut().take();
        if position >= durable_size || length == 0 || !ENABLED.load(Ordering::Relaxed) {
            return;
        }
        let start = page_floor(position);
        let end = page_ceil(durable_size.min(position + length as u64));
        let bytes = usize::try_from(end - start).unwrap_or(usize::MAX);
        debug_assert!(bytes.is_multiple_of(PAGE_SIZE));
        let Some(budget) = Budget::claim(bytes) else {
            return;
        };
        let mut read = io.read_at_soon(file, start, bytes);
        // Poll once so the read is submitted now, not when it is taken.
        if let std::task::Poll::Ready(done) = futures_util::poll!(&mut read) {
            read = futures_util::future::ready(done).boxed_local();
        }
        *self.slot.borrow_mut() = Some(Slot {
            base,
            generation,
            start,
            valid_end: durable_size,
            read,
            _budget: budget,
        });
    }

    /// A read of `bytes` budget returned data: later read-ahead reads at
    /// least that much.
    pub fn note_reader_bytes(&self, bytes: usize) {
        self.reader_bytes.set(bytes);
    }

    /// How much to read ahead for a reader whose current read had a
    /// budget of `bytes`.
    pub fn length_for(&self, bytes: usize) -> usize {
        bytes.max(self.reader_bytes.get())
    }

    /// Put back bytes taken from a slot by a read that returned nothing
    /// (it stopped at the first batch, past its budget): the next read
    /// starts there. `valid_end` and `start` as they were taken.
    #[allow(clippy::too_many_arguments)]
    pub fn put_back(
        &self,
        clears: u64,
        base: Offset,
        generation: u64,
        start: u64,
        valid_end: u64,
        bytes: Bytes,
    ) {
        if clears != self.clears.get() {
            return;
        }
        let Some(budget) = Budget::claim(bytes.len()) else {
            return;
        };
        *self.slot.borrow_mut() = Some(Slot {
            base,
            generation,
            start,
            valid_end,
            read: futures_util::future::ready(Ok(bytes)).boxed_local(),
            _budget: budget,
        });
    }

    /// Forget the slot (the log's bytes below the durable size changed).
    pub fn clear(&self) {
        self.slot.borrow_mut().take();
        self.clears.set(self.clears.get() + 1);
    }

    /// Reads served from a slot so far.
    pub fn taken(&self) -> u64 {
        self.taken.get()
    }
}
