//! The in-memory tail of a segment: page-aligned chunks that are at once the
//! O_DIRECT write source and the read cache of recent data.
//!
//! A chunk covers a contiguous range of the segment file starting on a page
//! boundary. Appends copy batch bytes into the last chunk. When a batch does
//! not fit, a new chunk starts at the page holding the current end, and the
//! partial page is copied into it, so that:
//! - every batch lies entirely inside one chunk (reads return one `Bytes`
//!   slice per run of batches, never a copy);
//! - each file page is written from exactly one chunk in a flush: a chunk
//!   owns `[start, next chunk's start)`, the last chunk owns up to the page
//!   holding the end, which is rewritten on every flush with zero padding.
//!
//! Sharing: bytes below a chunk's `filled` mark are immutable once published
//! (the log publishes by advancing its end); `Bytes` handed to readers and to
//! the kernel point at them. The shard writes only bytes at or beyond
//! `filled`, through the raw pointer, never through a reference to the whole
//! chunk.

use std::alloc::{Layout, alloc};
use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::constants::{CHUNK_POOL_BYTES_MAX, CHUNK_SIZE_BYTES, PAGE_SIZE};
use crate::io::aligned::free_returning_pages;
use crate::tail_cache::Claim;

/// Capacity of a segment's first chunk after the one page it opens with
/// (see `WriteBuffer::reset`).
const FIRST_CHUNK_SIZE_BYTES: usize = 16 * PAGE_SIZE;

/// Smallest capacity a slow partition's chunks shrink to.
const CHUNK_SIZE_MIN_BYTES: usize = 8 * PAGE_SIZE;

/// Chunk sizing by how fast the last one filled (issue 11). A chunk filled
/// in at most this many flushes belongs to a busy partition: the next one
/// doubles (up to the configured chunk size), so a busy partition flushes
/// in large pieces. One that took more than [`FLUSHES_TO_SHRINK_MIN`]
/// belongs to a slow one: the next one halves (down to
/// [`CHUNK_SIZE_MIN_BYTES`]). Chunk memory is resident once touched (the
/// allocator hands back pages other chunks used), so sizing by count alone
/// gave each of 10,000 slow partitions a 128 KiB chunk holding a few pages:
/// 1.2 GB of the broker's 1.4 GB.
const FLUSHES_TO_GROW_MAX: u32 = 4;
const FLUSHES_TO_SHRINK_MIN: u32 = 16;

/// The capacity of a chunk that must hold `needed` bytes (page aligned):
/// the pool's size class at or above it, where it has one. A batch of the
/// producers' usual 128 KiB needs 132-136 KiB with the partial page carried
/// before it; sized exactly, such chunks were outside every pool class, so
/// at 10,000 partitions nearly every chunk was a fresh allocation and every
/// freed one went back to the allocator (issue 11). The larger chunk's
/// spare pages take the partition's next appends.
fn pooled_capacity(needed: usize) -> usize {
    if needed <= CHUNK_SIZE_BYTES {
        needed.next_power_of_two()
    } else {
        needed
    }
}

/// One page-aligned allocation, left uninitialized: only bytes that were
/// written (or explicitly zeroed, the flush padding) are ever read, so no
/// time is spent zeroing and untouched pages cost no memory.
struct Chunk {
    pointer: NonNull<u8>,
    capacity: usize,
}

// SAFETY: the chunk is a plain heap allocation. Readers on other threads only
// ever access bytes that the owning shard will not write again (see the module
// docs), so sharing the pointer across threads cannot race.
unsafe impl Send for Chunk {}
// SAFETY: as above: concurrent access is to disjoint or immutable bytes.
unsafe impl Sync for Chunk {}

/// Freed chunk allocations kept for reuse, process wide. Without it every
/// flushed megabyte was an munmap and every appended page a page fault (the
/// benchmark measured ~40% of engine throughput lost to that churn).
///
/// Free allocations are kept by size class (one per power-of-two capacity
/// from a page to [`CHUNK_SIZE_BYTES`]) under one bound on the bytes held.
/// When a freed chunk would exceed the bound, the other classes give
/// allocations back to the allocator (the one holding the most bytes
/// first), so the pool follows the sizes being freed and asked for now. A
/// pool that kept whatever filled it first (951 64 KiB chunks from a
/// topic's first seconds) served none of the 1 MiB chunks 1,000 partitions
/// asked for later, and every one of those was a fresh mapping, faulted in
/// page by page and unmapped at its release: 20-25 % of the broker's CPU
/// at 1,000 partitions (issue 11).
struct ChunkPool {
    /// `free[class]` holds allocations of `PAGE_SIZE << class` bytes.
    free: [Vec<PooledAllocation>; POOL_CLASSES],
    bytes: usize,
}

/// Size classes of the pool: capacities `PAGE_SIZE << class` up to
/// [`CHUNK_SIZE_BYTES`].
const POOL_CLASSES: usize = (CHUNK_SIZE_BYTES / PAGE_SIZE).trailing_zeros() as usize + 1;

/// The pool class of a capacity, if it has one: a power of two from a page
/// to [`CHUNK_SIZE_BYTES`] (an oversized batch's chunk has none).
fn pool_class(capacity: usize) -> Option<usize> {
    (capacity.is_power_of_two() && (PAGE_SIZE..=CHUNK_SIZE_BYTES).contains(&capacity))
        .then(|| (capacity / PAGE_SIZE).trailing_zeros() as usize)
}

impl ChunkPool {
    fn take(&mut self, capacity: usize) -> Option<PooledAllocation> {
        let taken = self.free[pool_class(capacity)?].pop()?;
        self.bytes -= taken.capacity;
        Some(taken)
    }

    /// Keep `freed` for reuse, making room under `bound` by evicting from
    /// the other classes, the one holding the most bytes first; returns
    /// what the caller gives back to the allocator (outside the lock):
    /// evicted allocations, or `freed` itself when the pool holds only its
    /// own class.
    fn put(&mut self, freed: PooledAllocation, bound: usize) -> Vec<PooledAllocation> {
        let mut evicted = Vec::new();
        let Some(class) = pool_class(freed.capacity) else {
            evicted.push(freed);
            return evicted;
        };
        while self.bytes + freed.capacity > bound {
            let fullest = (0..POOL_CLASSES)
                .filter(|&index| index != class && !self.free[index].is_empty())
                .max_by_key(|&index| self.free[index].len() << index);
            let Some(fullest) = fullest else {
                evicted.push(freed);
                return evicted;
            };
            if let Some(victim) = self.free[fullest].pop() {
                self.bytes -= victim.capacity;
                evicted.push(victim);
            }
        }
        self.bytes += freed.capacity;
        self.free[class].push(freed);
        self.check();
        evicted
    }

    fn take_all(&mut self) -> Vec<PooledAllocation> {
        self.bytes = 0;
        self.free.iter_mut().flat_map(std::mem::take).collect()
    }

    fn check(&self) {
        debug_assert_eq!(
            self.bytes,
            self.free
                .iter()
                .enumerate()
                .map(|(class, free)| free.len() * (PAGE_SIZE << class))
                .sum::<usize>(),
            "the pool's byte count is the sum of its classes"
        );
    }
}

struct PooledAllocation {
    pointer: NonNull<u8>,
    capacity: usize,
}

impl PooledAllocation {
    /// Give the allocation back to the allocator.
    fn release(self) {
        // SAFETY: pooled allocations were made by `Chunk::new` with this
        // page-aligned layout, and the pool (or the caller it handed them
        // to) was their only owner: no `Bytes` or write refers to them.
        unsafe { free_returning_pages(self.pointer, Chunk::layout(self.capacity)) }
    }
}

// SAFETY: a pooled allocation is owned by the pool alone; nothing else holds
// its pointer until `Chunk::new` takes it out again.
unsafe impl Send for PooledAllocation {}

static CHUNK_POOL: Mutex<ChunkPool> = Mutex::new(ChunkPool {
    free: [const { Vec::new() }; POOL_CLASSES],
    bytes: 0,
});

/// Give every pooled chunk allocation back to the allocator; returns the
/// bytes released. The pool is sized for steady appends; after a large
/// removal (a topic of many partitions deleted) the working set shrank and
/// the pool would otherwise hold up to [`CHUNK_POOL_BYTES_MAX`] for good.
/// Any thread may call it; the next appends refill the pool as they free
/// chunks. The pooled O_DIRECT read buffers (io/aligned.rs) are released
/// with them and counted in the result.
pub fn release_pooled_chunks() -> usize {
    let free = match CHUNK_POOL.lock() {
        Ok(mut pool) => pool.take_all(),
        Err(_) => return 0,
    };
    let mut released = crate::io::aligned::release_pooled_read_buffers();
    for allocation in free {
        released += allocation.capacity;
        allocation.release();
    }
    released
}

/// Bytes held by the chunk pool (for tests and metrics).
pub fn pooled_chunk_bytes() -> usize {
    CHUNK_POOL.lock().map_or(0, |pool| pool.bytes)
}

/// Capacity of every chunk alive (in write buffers, or kept alive by
/// `Bytes` handed to readers and writes), process wide; pooled ones are
/// not counted.
static LIVE_CHUNK_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Capacity of every live chunk, process wide (tests, metrics, memory
/// measurements).
pub fn live_chunk_bytes() -> usize {
    LIVE_CHUNK_BYTES.load(Ordering::Relaxed)
}

impl Chunk {
    fn new(capacity: usize) -> Chunk {
        assert!(capacity > 0 && capacity.is_multiple_of(PAGE_SIZE));
        LIVE_CHUNK_BYTES.fetch_add(capacity, Ordering::Relaxed);
        if let Ok(mut pool) = CHUNK_POOL.lock()
            && let Some(reused) = pool.take(capacity)
        {
            return Chunk {
                pointer: reused.pointer,
                capacity,
            };
        }
        let layout = Self::layout(capacity);
        // SAFETY: the layout has a non-zero size.
        let pointer = unsafe { alloc(layout) };
        let Some(pointer) = NonNull::new(pointer) else {
            std::alloc::handle_alloc_error(layout);
        };
        Chunk { pointer, capacity }
    }

    fn layout(capacity: usize) -> Layout {
        match Layout::from_size_align(capacity, PAGE_SIZE) {
            Ok(layout) => layout,
            Err(_) => panic!("chunk capacity {capacity} is not a valid layout"),
        }
    }

    /// Copy `data` to `at`. The caller guarantees the range is unpublished.
    fn write(&self, at: usize, data: &[u8]) {
        assert!(at + data.len() <= self.capacity);
        // SAFETY: in bounds (asserted); the destination bytes are not
        // published, so no reader holds a reference to them; `data` cannot
        // overlap them because it is not derived from this chunk's unpublished
        // range.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.pointer.as_ptr().add(at), data.len())
        }
    }

    fn zero(&self, at: usize, count: usize) {
        assert!(at + count <= self.capacity);
        // SAFETY: in bounds (asserted) and unpublished, as for `write`.
        unsafe { std::ptr::write_bytes(self.pointer.as_ptr().add(at), 0, count) }
    }

    fn slice(&self, start: usize, end: usize) -> &[u8] {
        assert!(start <= end && end <= self.capacity);
        // SAFETY: in bounds (asserted). Callers only slice published bytes
        // (or, for the flush, bytes this thread just zeroed or filled and will
        // not touch until the write completes).
        unsafe { std::slice::from_raw_parts(self.pointer.as_ptr().add(start), end - start) }
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        LIVE_CHUNK_BYTES.fetch_sub(self.capacity, Ordering::Relaxed);
        let freed = PooledAllocation {
            pointer: self.pointer,
            capacity: self.capacity,
        };
        // Keep standard-size allocations for reuse, up to a bound.
        let released = match CHUNK_POOL.lock() {
            Ok(mut pool) => pool.put(freed, CHUNK_POOL_BYTES_MAX),
            Err(_) => vec![freed],
        };
        for allocation in released {
            allocation.release();
        }
    }
}

/// A view of a chunk range; the owner behind a `Bytes` handed out.
struct ChunkView {
    chunk: Arc<Chunk>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for ChunkView {
    fn as_ref(&self) -> &[u8] {
        self.chunk.slice(self.start, self.end)
    }
}

struct ChunkSlot {
    chunk: Arc<Chunk>,
    /// File position of the chunk's first byte (page aligned).
    file_start: u64,
    /// Bytes filled from the chunk start.
    filled: usize,
    /// Set while the chunk is retained: wholly durable, not the last one,
    /// kept only as a read cache (tail_cache.rs).
    claim: Option<Claim>,
}

impl ChunkSlot {
    fn file_end(&self) -> u64 {
        self.file_start + self.filled as u64
    }

    fn bytes(&self, start: usize, end: usize) -> Bytes {
        Bytes::from_owner(ChunkView {
            chunk: Arc::clone(&self.chunk),
            start,
            end,
        })
    }
}

/// The tail of one segment held in memory. See the module docs.
pub struct WriteBuffer {
    chunks: VecDeque<ChunkSlot>,
    chunk_size: usize,
    /// Flushes that wrote into the last chunk (sizes the next one).
    flushes_into_last: u32,
    /// Capacity the last chunk was given by the sizing rule (a one-page
    /// chunk that replaced it in `release_retained` does not reset it).
    sized_capacity: usize,
}

impl WriteBuffer {
    pub fn new(chunk_size: usize) -> WriteBuffer {
        assert!(chunk_size >= PAGE_SIZE && chunk_size.is_multiple_of(PAGE_SIZE));
        WriteBuffer {
            chunks: VecDeque::new(),
            chunk_size,
            flushes_into_last: 0,
            sized_capacity: 0,
        }
    }

    /// Start the buffer at `file_end` (the segment's current size), seeding
    /// the partial page before it with `tail_page` (the file's bytes from the
    /// page boundary to `file_end`), so the next flush rewrites that page
    /// whole.
    pub fn reset(&mut self, file_end: u64, tail_page: &[u8]) {
        let page_start = page_floor(file_end);
        assert_eq!(tail_page.len() as u64, file_end - page_start);
        self.chunks.clear();
        self.flushes_into_last = 0;
        // One page holds the partial tail page: a log that is opened and
        // not appended to costs a page, not a first chunk (10,000 of them
        // were 640 MiB at a topic's creation, most of it freed unused when
        // the first 128 KiB batch did not fit). The first append that does
        // not fit starts a chunk of FIRST_CHUNK_SIZE_BYTES (the doubling
        // rule applied to half of it); chunks double up to `chunk_size` as
        // data arrives fast enough (FLUSHES_TO_GROW_MAX).
        let chunk = Chunk::new(PAGE_SIZE);
        self.sized_capacity = (self.chunk_size.min(FIRST_CHUNK_SIZE_BYTES) / 2).max(PAGE_SIZE);
        chunk.write(0, tail_page);
        self.chunks.push_back(ChunkSlot {
            chunk: Arc::new(chunk),
            file_start: page_start,
            filled: tail_page.len(),
            claim: None,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// File position where the buffered bytes end.
    pub fn end(&self) -> Option<u64> {
        self.chunks.back().map(ChunkSlot::file_end)
    }

    /// First file position still held in memory.
    pub fn start(&self) -> Option<u64> {
        self.chunks.front().map(|slot| slot.file_start)
    }

    /// Append `parts` (one batch, possibly split as header + body) at the
    /// end; returns the file position of its first byte. The buffer must have
    /// been `reset` to the segment's end first.
    pub fn append(&mut self, parts: &[&[u8]]) -> u64 {
        let size: usize = parts.iter().map(|part| part.len()).sum();
        let Some(last) = self.chunks.back() else {
            panic!("append to a write buffer that was never reset");
        };
        let end = last.file_end();
        if last.filled + size > last.chunk.capacity {
            let page_start = page_floor(end);
            let carried = (end - page_start) as usize;
            let previous = self.sized_capacity.next_power_of_two();
            let sized = if self.flushes_into_last <= FLUSHES_TO_GROW_MAX {
                previous * 2
            } else if self.flushes_into_last > FLUSHES_TO_SHRINK_MIN {
                previous / 2
            } else {
                previous
            };
            let sized = sized.clamp(CHUNK_SIZE_MIN_BYTES.min(self.chunk_size), self.chunk_size);
            let capacity = sized.max(pooled_capacity(page_ceil_usize(carried + size)));
            self.flushes_into_last = 0;
            self.sized_capacity = capacity;
            let chunk = Chunk::new(capacity);
            let carry_from = (page_start - last.file_start) as usize;
            chunk.write(0, last.chunk.slice(carry_from, last.filled));
            self.chunks.push_back(ChunkSlot {
                chunk: Arc::new(chunk),
                file_start: page_start,
                filled: carried,
                claim: None,
            });
        }
        let Some(last) = self.chunks.back_mut() else {
            unreachable!("a chunk was just ensured");
        };
        // Written into again: no longer wholly durable, so not retained.
        last.claim = None;
        for part in parts {
            last.chunk.write(last.filled, part);
            last.filled += part.len();
        }
        end
    }

    /// The page-aligned writes that make `[from, end)` durable, where `from`
    /// is the durable size: each covers whole pages, the last ends on the
    /// page holding the end and is zero padded. One write per chunk touched.
    pub fn flush_writes(&mut self, from: u64) -> Vec<(u64, Bytes)> {
        let Some(end) = self.end() else {
            return Vec::new();
        };
        if from >= end {
            return Vec::new();
        }
        let write_start = page_floor(from);
        self.flushes_into_last = self.flushes_into_last.saturating_add(1);
        let count = self.chunks.len();
        let mut writes = Vec::new();
        for index in 0..count {
            let slot = &self.chunks[index];
            let own_end = match self.chunks.get(index + 1) {
                Some(next) => next.file_start,
                None => page_ceil(slot.file_end()),
            };
            if own_end <= write_start {
                continue;
            }
            let start = write_start.max(slot.file_start);
            if index + 1 == count {
                // Zero the padding of the tail page: it may hold stale bytes
                // of an earlier append that was rolled back.
                let padding = (own_end - slot.file_end()) as usize;
                slot.chunk.zero(slot.filled, padding);
            }
            let start_in_chunk = (start - slot.file_start) as usize;
            let end_in_chunk = (own_end - slot.file_start) as usize;
            if start_in_chunk < end_in_chunk {
                writes.push((start, slot.bytes(start_in_chunk, end_in_chunk)));
            }
        }
        writes
    }

    /// Bytes `[start, end)` if held in memory: the range must lie inside one
    /// chunk, which holds for any run of batches appended to one chunk.
    pub fn read(&self, start: u64, end: u64) -> Option<Bytes> {
        let index = self.chunks.partition_point(|slot| slot.file_start <= start);
        let slot = self.chunks.get(index.checked_sub(1)?)?;
        if end > slot.file_end() {
            return None;
        }
        Some(slot.bytes(
            (start - slot.file_start) as usize,
            (end - slot.file_start) as usize,
        ))
    }

    /// The whole run of contiguous bytes starting at `start` that one chunk
    /// holds (for scanning batch headers in memory).
    pub fn read_run(&self, start: u64) -> Option<Bytes> {
        let index = self.chunks.partition_point(|slot| slot.file_start <= start);
        let slot = self.chunks.get(index.checked_sub(1)?)?;
        if start > slot.file_end() {
            return None;
        }
        Some(slot.bytes((start - slot.file_start) as usize, slot.filled))
    }

    /// Forget bytes beyond `end` (rollback after a failed flush).
    pub fn truncate(&mut self, end: u64) {
        while let Some(last) = self.chunks.back() {
            if last.file_start < end || self.chunks.len() == 1 {
                break;
            }
            self.chunks.pop_back();
        }
        if let Some(last) = self.chunks.back_mut() {
            assert!(end >= last.file_start, "rollback below the buffered tail");
            last.filled = last.filled.min((end - last.file_start) as usize);
            // Appends go into the last chunk again: it is no longer retained.
            last.claim = None;
        }
    }

    /// Drop chunks that are durable (wholly below `durable`), keeping the
    /// `keep` most recent ones for reads.
    pub fn release_durable(&mut self, durable: u64, keep: usize) {
        while self.chunks.len() > keep.max(1) {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let Some(next) = self.chunks.get(1) else {
                break;
            };
            if next.file_start > page_floor(durable) || front.file_end() > durable {
                break;
            }
            self.chunks.pop_front();
        }
    }

    /// Claim a share of the shard's tail-cache budget for every chunk that
    /// is now retained: wholly below `durable` (the segment's durable size),
    /// so no write in flight reads from it. The last chunk counts too when
    /// it is wholly durable and larger than a page: what it holds below its
    /// partial tail page is then only a read cache. Returns the bytes
    /// retained, old and new.
    pub fn retain_durable(&mut self, durable: u64) -> usize {
        let count = self.chunks.len();
        let mut retained = 0;
        for (index, slot) in self.chunks.iter_mut().enumerate() {
            if slot.file_end() > durable || (index + 1 == count && slot.chunk.capacity <= PAGE_SIZE)
            {
                break;
            }
            let capacity = slot.chunk.capacity;
            slot.claim.get_or_insert_with(|| Claim::new(capacity));
            retained += capacity;
        }
        retained
    }

    /// Bytes of the retained chunks (see [`WriteBuffer::retain_durable`]).
    pub fn retained_bytes(&self) -> usize {
        self.chunks
            .iter()
            .filter(|slot| slot.claim.is_some())
            .map(|slot| slot.chunk.capacity)
            .sum()
    }

    /// Drop every retained chunk (the shard's budget wants its bytes back);
    /// returns the bytes released. A retained last chunk, the one appends
    /// go into, is replaced by a one-page chunk holding its partial tail
    /// page, which the next flush rewrites. Reads of the range they held
    /// then go to the file. `durable` is the segment's durable size: a
    /// retained chunk lies wholly below it, so no write in flight still
    /// needs it.
    pub fn release_retained(&mut self, durable: u64) -> usize {
        let mut released = 0;
        while self.chunks.len() > 1
            && let Some(front) = self.chunks.front()
            && front.claim.is_some()
        {
            assert!(
                front.file_end() <= durable,
                "a retained chunk lies wholly below the durable size"
            );
            released += front.chunk.capacity;
            self.chunks.pop_front();
        }
        if let Some(last) = self.chunks.back()
            && last.claim.is_some()
        {
            let end = last.file_end();
            assert!(
                end <= durable,
                "a retained chunk lies wholly below the durable size"
            );
            assert!(
                last.chunk.capacity > PAGE_SIZE,
                "a one-page chunk is never retained"
            );
            let page_start = page_floor(end);
            let carried = (end - page_start) as usize;
            let chunk = Chunk::new(PAGE_SIZE);
            chunk.write(
                0,
                last.chunk
                    .slice((page_start - last.file_start) as usize, last.filled),
            );
            released += last.chunk.capacity - PAGE_SIZE;
            // The budget took this chunk back before appends filled it: the
            // partition's chunks are larger than what it appends between
            // two releases, and a larger one is only more fresh memory to
            // map. The next one is sized by what this one held, and the
            // flushes into it and into the one-page chunk are no sign of a
            // busy partition.
            self.sized_capacity = page_ceil_usize(last.filled)
                .next_power_of_two()
                .clamp(CHUNK_SIZE_MIN_BYTES.min(self.chunk_size), self.chunk_size);
            self.flushes_into_last = FLUSHES_TO_GROW_MAX + 1;
            self.chunks.pop_back();
            self.chunks.push_back(ChunkSlot {
                chunk: Arc::new(chunk),
                file_start: page_start,
                filled: carried,
                claim: None,
            });
        }
        assert!(
            self.chunks.iter().all(|slot| slot.claim.is_none()),
            "retained chunks form a prefix of the buffer"
        );
        released
    }

    /// Drop everything (sealed segment whose data is durable).
    pub fn clear(&mut self) {
        self.chunks.clear();
    }
}

pub fn page_floor(position: u64) -> u64 {
    position - position % PAGE_SIZE as u64
}

pub fn page_ceil(position: u64) -> u64 {
    page_floor(position + PAGE_SIZE as u64 - 1)
}

fn page_ceil_usize(size: usize) -> usize {
    size.div_ceil(PAGE_SIZE) * PAGE_SIZE
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pattern(seed: u8, size: usize) -> Vec<u8> {
        (0..size)
            .map(|index| seed.wrapping_add(index as u8))
            .collect()
    }

    #[test]
    fn batches_never_straddle_chunks_and_writes_cover_each_page_once() {
        let mut buffer = WriteBuffer::new(2 * PAGE_SIZE);
        buffer.reset(0, &[]);
        let mut expected = Vec::new();
        let mut positions = Vec::new();
        for seed in 0..20u8 {
            let data = pattern(seed, 700 + usize::from(seed) * 37);
            positions.push((buffer.append(&[&data]), data.len()));
            expected.extend_from_slice(&data);
        }
        for (index, &(position, size)) in positions.iter().enumerate() {
            let bytes = buffer.read(position, position + size as u64).unwrap();
            assert_eq!(
                &bytes[..],
                &expected[position as usize..][..size],
                "batch {index}"
            );
        }
        // Rebuild the file image from the flush writes.
        let writes = buffer.flush_writes(0);
        let mut image = vec![0xAAu8; page_ceil(expected.len() as u64) as usize];
        let mut covered = vec![0u8; image.len() / PAGE_SIZE];
        for (position, bytes) in &writes {
            assert_eq!(position % PAGE_SIZE as u64, 0);
            assert_eq!(bytes.len() % PAGE_SIZE, 0);
            assert_eq!(bytes.as_ptr() as usize % PAGE_SIZE, 0);
            image[*position as usize..][..bytes.len()].copy_from_slice(bytes);
            for page in 0..bytes.len() / PAGE_SIZE {
                covered[*position as usize / PAGE_SIZE + page] += 1;
            }
        }
        assert!(covered.iter().all(|&count| count == 1));
        assert_eq!(&image[..expected.len()], &expected[..]);
        assert!(image[expected.len()..].iter().all(|&byte| byte == 0));
    }

    #[test]
    fn flush_from_the_durable_size_rewrites_only_the_tail_page() {
        let mut buffer = WriteBuffer::new(16 * PAGE_SIZE);
        buffer.reset(0, &[]);
        buffer.append(&[&pattern(1, 5000)]);
        let durable = 5000;
        buffer.append(&[&pattern(2, 100)]);
        let writes = buffer.flush_writes(durable);
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].0, 4096);
        assert_eq!(writes[0].1.len(), 4096);
    }

    #[test]
    fn reset_seeds_the_partial_tail_page() {
        let mut buffer = WriteBuffer::new(PAGE_SIZE * 4);
        let tail = pattern(9, 100);
        buffer.reset(8192 + 100, &tail);
        let position = buffer.append(&[b"abc"]);
        assert_eq!(position, 8292);
        let writes = buffer.flush_writes(8292);
        assert_eq!(writes[0].0, 8192);
        assert_eq!(&writes[0].1[..100], &tail[..]);
        assert_eq!(&writes[0].1[100..103], b"abc");
    }

    #[test]
    fn only_wholly_durable_chunks_other_than_the_last_are_retained_and_released() {
        let mut buffer = WriteBuffer::new(2 * PAGE_SIZE);
        buffer.reset(0, &[]);
        let mut expected = Vec::new();
        for seed in 0..6u8 {
            let data = pattern(seed, 3000);
            buffer.append(&[&data]);
            expected.extend_from_slice(&data);
        }
        let end = buffer.end().unwrap();
        // The flush of everything is in flight: its writes hold the chunks.
        let in_flight = buffer.flush_writes(0);
        // Durable up to the middle: only chunks wholly below it are claimed.
        let durable = 7000;
        let retained = buffer.retain_durable(durable);
        assert!(retained > 0);
        assert_eq!(retained, buffer.retained_bytes());
        let released = buffer.release_retained(durable);
        assert_eq!(released, retained);
        assert_eq!(buffer.retained_bytes(), 0);
        let start = buffer.start().unwrap();
        assert!(start <= durable, "what is not in memory is durable");
        // What the buffer still holds reads back; the writes in flight still
        // carry the bytes appended.
        let bytes = buffer.read_run(start).unwrap();
        assert_eq!(&bytes[..], &expected[start as usize..][..bytes.len()]);
        for (position, bytes) in &in_flight {
            let at = *position as usize;
            let valid = bytes.len().min(expected.len().saturating_sub(at));
            assert_eq!(&bytes[..valid], &expected[at..at + valid]);
        }
        // Everything durable: every chunk is retained.
        buffer.retain_durable(end);
        buffer.release_retained(end);
        // The last chunk was replaced by one page holding the partial tail.
        assert_eq!(buffer.chunks.len(), 1);
        assert_eq!(buffer.start(), Some(page_floor(end)));
        let tail = buffer.read_run(page_floor(end)).unwrap();
        assert_eq!(&tail[..], &expected[page_floor(end) as usize..]);
        assert_eq!(buffer.retain_durable(end), 0);
        assert_eq!(buffer.release_retained(end), 0);
        assert_eq!(buffer.append(&[b"more"]), end);
    }

    #[test]
    fn a_chunk_written_into_again_after_a_rollback_is_no_longer_retained() {
        let mut buffer = WriteBuffer::new(PAGE_SIZE);
        buffer.reset(0, &[]);
        // Exactly one page: the next batch starts a chunk at the boundary.
        buffer.append(&[&pattern(1, PAGE_SIZE)]);
        buffer.append(&[&pattern(2, 100)]);
        assert_eq!(buffer.chunks.len(), 2);
        assert_eq!(buffer.retain_durable(PAGE_SIZE as u64), PAGE_SIZE);
        // The unflushed batch is rolled back: the retained chunk is last
        // again and takes the next appends.
        buffer.truncate(PAGE_SIZE as u64);
        assert_eq!(buffer.chunks.len(), 1);
        assert_eq!(buffer.retained_bytes(), 0);
        assert_eq!(buffer.release_retained(PAGE_SIZE as u64), 0);
        assert_eq!(buffer.append(&[b"next"]), PAGE_SIZE as u64);
    }

    #[test]
    fn a_chunk_for_a_producer_s_full_batch_has_a_pool_class() {
        let mut buffer = WriteBuffer::new(CHUNK_SIZE_BYTES);
        buffer.reset(0, &[]);
        let capacity = |buffer: &WriteBuffer| buffer.chunks.back().unwrap().chunk.capacity;
        // A partial page, then a full 128 KiB batch: 132 KiB needed.
        buffer.append(&[&pattern(1, 100)]);
        buffer.append(&[&pattern(2, 128 << 10)]);
        assert_eq!(capacity(&buffer), 256 << 10);
        assert!(pool_class(capacity(&buffer)).is_some());
        // Beyond the largest class, a chunk is sized to its batch.
        buffer.append(&[&pattern(3, CHUNK_SIZE_BYTES + 1)]);
        assert_eq!(
            capacity(&buffer),
            page_ceil_usize(CHUNK_SIZE_BYTES + 1 + (100 + (128 << 10)) % PAGE_SIZE)
        );
    }

    #[test]
    fn chunks_grow_for_busy_partitions_and_shrink_for_slow_ones() {
        let mut buffer = WriteBuffer::new(CHUNK_SIZE_BYTES);
        buffer.reset(0, &[]);
        let capacity = |buffer: &WriteBuffer| buffer.chunks.back().unwrap().chunk.capacity;
        // An opened log holds one page until its first append.
        assert_eq!(capacity(&buffer), PAGE_SIZE);
        // Busy: each chunk filled by one flush; sizes double to the maximum.
        let mut durable = 0;
        let mut sizes = Vec::new();
        while sizes.last() != Some(&CHUNK_SIZE_BYTES) {
            let start = capacity(&buffer);
            while capacity(&buffer) == start && buffer.chunks.len() < 64 {
                buffer.append(&[&pattern(1, 8000)]);
            }
            sizes.push(capacity(&buffer));
            buffer.flush_writes(durable);
            durable = buffer.end().unwrap();
            buffer.release_durable(durable, 1);
        }
        assert_eq!(
            sizes,
            [
                FIRST_CHUNK_SIZE_BYTES,
                128 << 10,
                256 << 10,
                512 << 10,
                1 << 20
            ]
        );
        // Slow: a flush after every small append; sizes halve to the least.
        let mut sizes = Vec::new();
        while sizes.last() != Some(&CHUNK_SIZE_MIN_BYTES) {
            let start = buffer.chunks.len();
            while buffer.chunks.len() == start {
                buffer.append(&[&pattern(2, 3000)]);
                buffer.flush_writes(durable);
                durable = buffer.end().unwrap();
            }
            buffer.release_durable(durable, 1);
            sizes.push(capacity(&buffer));
        }
        assert_eq!(sizes, [512 << 10, 256 << 10, 128 << 10, 64 << 10, 32 << 10]);
    }

    #[test]
    fn a_chunk_the_tail_cache_takes_back_before_it_fills_sizes_the_next_one_down() {
        let mut buffer = WriteBuffer::new(CHUNK_SIZE_BYTES);
        buffer.reset(0, &[]);
        let capacity = |buffer: &WriteBuffer| buffer.chunks.back().unwrap().chunk.capacity;
        // Grow to the largest chunk, as a busy partition does.
        let mut durable = 0;
        while capacity(&buffer) < CHUNK_SIZE_BYTES {
            buffer.append(&[&pattern(1, 8000)]);
            if buffer.chunks.len() > 1 {
                buffer.flush_writes(durable);
                durable = buffer.end().unwrap();
                buffer.release_durable(durable, 1);
            }
        }
        // Now each chunk holds ~40 KiB when the shard's budget takes it back
        // (many partitions share the tail cache): chunks shrink to what is
        // used instead of staying at 1 MiB.
        let mut sizes = Vec::new();
        for _ in 0..4 {
            for _ in 0..5 {
                buffer.append(&[&pattern(2, 8000)]);
                buffer.flush_writes(durable);
                durable = buffer.end().unwrap();
            }
            assert!(buffer.retain_durable(durable) > 0);
            buffer.release_retained(durable);
            assert_eq!(capacity(&buffer), PAGE_SIZE);
            buffer.append(&[&pattern(3, 8000)]);
            sizes.push(capacity(&buffer));
            buffer.flush_writes(durable);
            durable = buffer.end().unwrap();
        }
        assert_eq!(sizes, [64 << 10; 4], "sized by the ~48 KiB each one held");
    }

    /// A pool of its own (the process-wide one is shared with the other
    /// tests running at the same time).
    fn allocation(capacity: usize) -> PooledAllocation {
        let chunk = std::mem::ManuallyDrop::new(Chunk::new(capacity));
        LIVE_CHUNK_BYTES.fetch_sub(capacity, Ordering::Relaxed);
        PooledAllocation {
            pointer: chunk.pointer,
            capacity,
        }
    }

    #[test]
    fn the_pool_follows_the_sizes_asked_for_now() {
        let small = 16 * PAGE_SIZE;
        let large = 256 * PAGE_SIZE;
        let bound = 4 * large;
        let mut pool = ChunkPool {
            free: [const { Vec::new() }; POOL_CLASSES],
            bytes: 0,
        };
        // The pool fills with small chunks first...
        for _ in 0..bound / small {
            assert!(pool.put(allocation(small), bound).is_empty());
        }
        assert_eq!(pool.bytes, bound);
        // ...then large ones are freed: each evicts small ones to fit.
        for index in 0..4 {
            let evicted = pool.put(allocation(large), bound);
            assert_eq!(evicted.len(), large / small, "free {index}");
            assert!(evicted.iter().all(|victim| victim.capacity == small));
            evicted.into_iter().for_each(PooledAllocation::release);
        }
        assert_eq!(pool.bytes, bound);
        assert_eq!(pool.free[pool_class(large).unwrap()].len(), 4);
        assert!(pool.take(small).is_none(), "no small ones left");
        // When the pool holds only its own class, a freed chunk goes back.
        let back = pool.put(allocation(large), bound);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].capacity, large);
        back.into_iter().for_each(PooledAllocation::release);
        // A chunk of no class (an oversized batch's) is never kept.
        let odd = pool.put(allocation(3 * PAGE_SIZE), bound);
        assert_eq!(odd.len(), 1);
        odd.into_iter().for_each(PooledAllocation::release);
        let taken = pool.take(large).unwrap();
        assert_eq!(taken.capacity, large);
        assert_eq!(pool.bytes, 3 * large);
        taken.release();
        pool.take_all()
            .into_iter()
            .for_each(PooledAllocation::release);
        assert_eq!(pool.bytes, 0);
    }

    #[test]
    fn rollback_and_release_keep_the_buffer_consistent() {
        let mut buffer = WriteBuffer::new(PAGE_SIZE);
        buffer.reset(0, &[]);
        for seed in 0..10u8 {
            buffer.append(&[&pattern(seed, 3000)]);
        }
        buffer.truncate(9000);
        assert_eq!(buffer.end(), Some(9000));
        buffer.release_durable(9000, 1);
        assert!(buffer.start().unwrap() <= 8192);
        let position = buffer.append(&[&pattern(7, 10)]);
        assert_eq!(position, 9000);
        let oversized = pattern(3, 3 * PAGE_SIZE);
        let position = buffer.append(&[&oversized]);
        assert_eq!(
            &buffer
                .read(position, position + oversized.len() as u64)
                .unwrap()[..],
            &oversized[..]
        );
    }
}
