//! The process allocator: the system allocator, except that very large
//! allocations are lazily backed anonymous mappings.
//!
//! Why: the kafka-protocol decoder reserves `Vec::with_capacity(count)` for
//! an array from the count on the wire, before reading any element. A
//! hostile 30-byte frame claiming 2^31 elements asks for hundreds of GB; the
//! system allocator refuses, and a refused allocation aborts the process.
//! Mapped with MAP_NORESERVE, such a reservation costs address space only:
//! decoding then fails at the first missing element and the mapping is
//! dropped untouched. Legitimate allocations never come near the threshold
//! (requests are capped at `request_bytes_max`, 100 MiB by default).
//!
//! Assumes the kernel's default overcommit policy (vm.overcommit_memory 0 or
//! 1); under strict accounting (2) the mapping fails and the allocation
//! error aborts as before.
//!
//! Returning memory ([`release_free_memory_soon`]): glibc's malloc keeps
//! what is freed for reuse. Its arenas give memory back to the kernel only
//! from the top of a heap, and past the first frees it serves even
//! megabyte blocks (write chunks) from the heaps instead of mappings (its
//! dynamic mmap threshold). Deleting a topic of 10,000 written partitions
//! freed ~3 GB that way and the resident set did not move: 2.5-3.0 GB
//! after each create / produce / delete cycle, 78 MB of it in use. So
//! after a large removal the chunk pool is emptied and `malloc_trim(0)`
//! hands every free page of every arena back (`MADV_DONTNEED`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Allocations at least this large are mapped lazily.
const LAZY_BYTES_MIN: usize = 1 << 30;
/// mmap returns page-aligned memory; larger alignments go to the system.
const LAZY_ALIGN_MAX: usize = 4096;

pub struct Allocator;

fn is_lazy(size: usize, align: usize) -> bool {
    size >= LAZY_BYTES_MIN && align <= LAZY_ALIGN_MAX
}

// SAFETY: every method either forwards to `System` with the caller's
// arguments, or manages a private anonymous mapping of exactly `size` bytes
// (page aligned, zero filled); `dealloc` and `realloc` tell the two apart by
// the layout size, which Rust guarantees equals the one used to allocate.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_lazy(layout.size(), layout.align()) {
            return map(layout.size());
        }
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_lazy(layout.size(), layout.align()) {
            // Anonymous mappings are zero filled.
            return map(layout.size());
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        if is_lazy(layout.size(), layout.align()) {
            // SAFETY: `pointer` came from `map(layout.size())`.
            unsafe { libc::munmap(pointer.cast(), layout.size()) };
            return;
        }
        // SAFETY: forwarded unchanged; `pointer` came from `System`.
        unsafe { System.dealloc(pointer, layout) }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !is_lazy(layout.size(), layout.align()) && !is_lazy(new_size, layout.align()) {
            // SAFETY: forwarded unchanged; both sides are system allocations.
            return unsafe { System.realloc(pointer, layout, new_size) };
        }
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        // SAFETY: `new_layout` has a non-zero size (realloc's contract).
        let new_pointer = unsafe { self.alloc(new_layout) };
        if !new_pointer.is_null() {
            // SAFETY: both blocks are valid for the copied length and
            // distinct allocations, so they do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(pointer, new_pointer, layout.size().min(new_size))
            };
            // SAFETY: `pointer` was allocated by `self` with `layout`.
            unsafe { self.dealloc(pointer, layout) };
        }
        new_pointer
    }
}

/// How long [`release_free_memory_soon`] waits before releasing: what a
/// removal frees is freed when the last holder of a replica or of its
/// buffers lets go (a fetch being answered, a long poll re-checking), a
/// little after the removal itself.
const RELEASE_DELAY: Duration = Duration::from_secs(1);

/// A release is scheduled and has not started yet.
static RELEASE_PENDING: AtomicBool = AtomicBool::new(false);

/// What [`release_free_memory`] gave back.
#[derive(Clone, Copy, Debug, Default)]
pub struct Released {
    /// Bytes of pooled write chunks returned to the allocator.
    pub pooled_chunk_bytes: usize,
    /// Whether the allocator returned memory to the kernel.
    pub trimmed: bool,
    /// malloc's figures before the trim (glibc only).
    pub usage: Option<MallocUsage>,
}

/// What glibc's malloc holds, over all its arenas (`mallinfo2`).
#[derive(Clone, Copy, Debug, Default)]
pub struct MallocUsage {
    /// Allocated and not freed (heap blocks and mapped ones).
    pub in_use_bytes: usize,
    /// Freed and kept by malloc for reuse.
    pub free_bytes: usize,
}

/// malloc's in-use and free figures, where glibc provides them.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn malloc_usage() -> Option<MallocUsage> {
    // SAFETY: mallinfo2 only reads malloc's own statistics.
    let info = unsafe { libc::mallinfo2() };
    Some(MallocUsage {
        in_use_bytes: info.uordblks + info.hblkhd,
        free_bytes: info.fordblks,
    })
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn malloc_usage() -> Option<MallocUsage> {
    None
}

/// Return free memory to the kernel now: the write-chunk pool, then every
/// free page malloc holds. Blocks while malloc walks its arenas (each
/// arena is locked in turn, so threads allocating from it wait): call it
/// after large removals, not on a hot path, and preferably off the shards
/// ([`release_free_memory_soon`]).
pub fn release_free_memory() -> Released {
    let pooled_chunk_bytes = sluice_engine::segment::buffer::release_pooled_chunks();
    let usage = malloc_usage();
    Released {
        pooled_chunk_bytes,
        trimmed: trim(),
        usage,
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() -> bool {
    // SAFETY: malloc_trim only inspects and madvises malloc's own free
    // memory, under its arena locks; any thread may call it.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}

/// Schedule [`release_free_memory`] on a thread of its own after
/// [`RELEASE_DELAY`] (a removal of many partitions). Calls made while one
/// is pending join it; a call made once it started schedules another, so
/// memory freed after a release began is released too.
pub fn release_free_memory_soon() {
    if RELEASE_PENDING.swap(true, Ordering::AcqRel) {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("sluice-release".to_string())
        .spawn(|| {
            std::thread::sleep(RELEASE_DELAY);
            RELEASE_PENDING.store(false, Ordering::Release);
            let started = std::time::Instant::now();
            let released = release_free_memory();
            let usage = released.usage.unwrap_or_default();
            tracing::info!(
                pooled_chunk_bytes = released.pooled_chunk_bytes,
                malloc_in_use_bytes = usage.in_use_bytes,
                malloc_free_bytes = usage.free_bytes,
                trimmed = released.trimmed,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "returned free memory to the kernel after a removal"
            );
        });
    if let Err(error) = spawned {
        RELEASE_PENDING.store(false, Ordering::Release);
        tracing::warn!(%error, "could not start the thread that returns free memory");
    }
}

fn map(size: usize) -> *mut u8 {
    // SAFETY: a fresh private anonymous mapping; no existing memory is
    // affected. MAP_NORESERVE: no swap or commit charge until touched.
    let pointer = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if pointer == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        pointer.cast()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_huge_reservation_costs_no_memory_and_can_be_dropped() {
        // 256 GiB of capacity: refused by the system allocator on this
        // machine, a lazy mapping here.
        let reserved: Vec<u64> = Vec::with_capacity(32 << 30);
        assert!(reserved.capacity() >= 32 << 30);
        drop(reserved);
        let mut grown: Vec<u8> = Vec::with_capacity(LAZY_BYTES_MIN_FOR_TEST);
        grown.extend_from_slice(&[7; 100]);
        grown.shrink_to_fit();
        assert_eq!(grown, vec![7; 100]);
    }

    const LAZY_BYTES_MIN_FOR_TEST: usize = super::LAZY_BYTES_MIN;
}
