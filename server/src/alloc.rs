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

use std::alloc::{GlobalAlloc, Layout, System};

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
