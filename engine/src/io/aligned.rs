//! Page-aligned owned buffers: the only memory handed to O_DIRECT I/O.
//!
//! O_DIRECT needs the buffer address, the file position and the length aligned
//! to the device's logical block size (see [`PAGE_SIZE`]). An [`AlignedBuf`]
//! owns a heap allocation that starts on a page boundary and whose capacity is
//! a whole number of pages. All of the capacity is zero-initialized when
//! allocated, so any prefix of it may be declared initialized at any time:
//! that is what lets it be the target of a completion-based read (compio's
//! [`IoBufMut`]) without any uninitialized memory reaching safe code.
//!
//! Read buffers are recycled ([`AlignedBuf::for_read`]): when the last
//! `Bytes` of one is dropped (on whichever thread sent it), its allocation
//! goes back to a process-wide pool bounded by [`READ_POOL_BYTES_MAX`], and
//! the next read takes it without zeroing it again. Its bytes stay
//! initialized (zeroed once, then only ever overwritten), so the invariant
//! holds; they hold an earlier read's data, which only a read's own count
//! ever declares content. Without the pool every catch-up fetch allocated,
//! zeroed, faulted in and unmapped about 1 MiB per partition (issue 11).
//!
//! Invariants: `ptr` is aligned to [`PAGE_SIZE`], `capacity` is a nonzero
//! multiple of [`PAGE_SIZE`], `len <= capacity`, and all `capacity` bytes are
//! initialized.
//!
//! A buffer is used by one shard thread; once frozen with
//! [`AlignedBuf::into_bytes`] the bytes may cross threads.

use std::alloc::{self, Layout};
use std::fmt;
use std::mem::MaybeUninit;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use compio::buf::{IoBuf, IoBufMut, SetLen};

use crate::constants::{PAGE_SIZE, READ_POOL_BYTES_MAX};

/// Read buffers at least this large are recycled; smaller ones are cheap to
/// allocate (the allocator keeps them on its heap) and would crowd the pool.
const RECYCLED_BYTES_MIN: usize = 64 << 10;

/// Recycled buffers are allocated in multiples of this, so that one freed
/// after a read of N bytes serves the next read of a few pages more.
const RECYCLED_GRANULE_BYTES: usize = 64 << 10;

/// Freed allocations at least this large give their pages back to the
/// kernel before the allocator gets them ([`free_returning_pages`]).
const RETURNED_BYTES_MIN: usize = 32 << 10;

/// Free a page-aligned allocation made with `layout`, first giving its
/// pages back to the kernel (`MADV_DONTNEED`) when it is at least
/// [`RETURNED_BYTES_MIN`] large.
///
/// Why (issue 11, 10,000 partitions): glibc's malloc keeps what is freed
/// and serves even megabyte blocks from its heaps, where a freed block
/// stays resident. Write chunks and read buffers of many sizes, freed in
/// any order, left the heaps fragmented: a broker whose live chunks and
/// buffers took 300 MiB had a resident set of 620-700 MiB, the rest free
/// blocks malloc could not reuse for the next, larger ones, and the set
/// only grew. With the pages given back, a freed block costs address
/// space only, and the resident set follows what is in use; a block used
/// again is faulted in afresh (zero-filled pages), which the pools in
/// front of this (write chunks, read buffers) keep rare.
///
/// # Safety
/// `pointer` was returned by the global allocator for `layout`, is page
/// aligned, is not used after this call, and nothing else (no I/O in
/// flight) refers to its bytes.
pub(crate) unsafe fn free_returning_pages(pointer: NonNull<u8>, layout: Layout) {
    if layout.size() >= RETURNED_BYTES_MIN {
        // SAFETY: the caller's promise covers the whole allocation.
        unsafe { return_pages(pointer, layout.size()) };
    }
    // SAFETY: made by the global allocator with `layout` (the caller's
    // promise), freed once, here.
    unsafe { alloc::dealloc(pointer.as_ptr(), layout) }
}

/// Give the whole pages of `[pointer, pointer + size)` back to the kernel:
/// they read as zeros afterwards. A failure only leaves them resident.
///
/// # Safety
/// `pointer` is page aligned, the range lies in one allocation of the
/// caller's, and nothing reads or writes it concurrently.
unsafe fn return_pages(pointer: NonNull<u8>, size: usize) {
    debug_assert!((pointer.as_ptr() as usize).is_multiple_of(PAGE_SIZE));
    let pages = size - size % PAGE_SIZE;
    // SAFETY: the caller's promise.
    let _ = unsafe { libc::madvise(pointer.as_ptr().cast(), pages, libc::MADV_DONTNEED) };
}

/// Freed read-buffer allocations, process wide (see the module docs).
struct ReadPool {
    free: Vec<PooledAllocation>,
    bytes: usize,
}

struct PooledAllocation {
    ptr: NonNull<u8>,
    capacity: usize,
}

// SAFETY: a pooled allocation is owned by the pool alone; nothing else holds
// its pointer until `AlignedBuf::for_read` takes it out again.
unsafe impl Send for PooledAllocation {}

static READ_POOL: Mutex<ReadPool> = Mutex::new(ReadPool {
    free: Vec::new(),
    bytes: 0,
});

/// Give every pooled read buffer back to the allocator; returns the bytes
/// released (after a large removal, with the chunk pool's
/// `release_pooled_chunks`). Any thread may call it.
pub fn release_pooled_read_buffers() -> usize {
    let free = match READ_POOL.lock() {
        Ok(mut pool) => {
            pool.bytes = 0;
            std::mem::take(&mut pool.free)
        }
        Err(_) => return 0,
    };
    let mut released = 0;
    for allocation in free {
        released += allocation.capacity;
        // SAFETY: pooled allocations were made by `AlignedBuf::allocate`
        // with this layout, and the pool was their only owner.
        unsafe { free_returning_pages(allocation.ptr, AlignedBuf::layout(allocation.capacity)) }
    }
    released
}

/// Capacity of every aligned buffer alive (reads in flight or being sent,
/// read-ahead slots, write staging), process wide; pooled ones are not
/// counted.
static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Capacity of every aligned buffer alive (metrics, memory measurements).
pub fn live_buffer_bytes() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

/// Bytes held by the read-buffer pool (tests and memory measurements).
pub fn pooled_read_buffer_bytes() -> usize {
    READ_POOL.lock().map_or(0, |pool| pool.bytes)
}

/// An owned, page-aligned, fixed-capacity byte buffer.
///
/// `len` bytes are the initialized content (what [`Deref`] and
/// [`IoBuf::as_init`] expose); the capacity never changes.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    capacity: usize,
    len: usize,
    /// Returned to the read pool when dropped ([`AlignedBuf::for_read`]).
    recycle: bool,
}

// SAFETY: an `AlignedBuf` uniquely owns its allocation (no aliasing pointers
// exist outside it), like a `Vec<u8>`, so moving it to another thread is sound.
unsafe impl Send for AlignedBuf {}

// SAFETY: through `&AlignedBuf` the bytes can only be read; every mutation
// needs `&mut AlignedBuf`. Shared reads from several threads are sound.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A zero-filled buffer of at least `bytes` capacity (rounded up to whole
    /// pages, at least one page) and length 0.
    ///
    /// Panics when the allocation fails or the size overflows (both mean the
    /// process cannot continue).
    pub fn with_capacity(bytes: usize) -> Self {
        let capacity = bytes
            .max(1)
            .checked_next_multiple_of(PAGE_SIZE)
            .expect("AlignedBuf capacity overflows usize");
        Self::allocate(capacity, false)
    }

    /// A buffer of at least `bytes` capacity and length 0 for an O_DIRECT
    /// read, recycled: taken from the read pool when a free one fits (its
    /// spare bytes hold an earlier read's data, initialized but not
    /// zeroed), and given back to it when dropped. Large reads only; small
    /// ones get a fresh zeroed buffer as from [`AlignedBuf::with_capacity`].
    pub fn for_read(bytes: usize) -> Self {
        if bytes < RECYCLED_BYTES_MIN {
            return Self::with_capacity(bytes);
        }
        let capacity = bytes
            .checked_next_multiple_of(RECYCLED_GRANULE_BYTES)
            .expect("AlignedBuf capacity overflows usize");
        // Accept a free buffer up to a quarter larger than needed: reads of
        // a fetch's budget differ by a few pages from one to the next.
        let fits = |free: usize| free >= capacity && free <= capacity + capacity / 4;
        if let Ok(mut pool) = READ_POOL.lock()
            && let Some(index) = pool
                .free
                .iter()
                .enumerate()
                .filter(|(_, free)| fits(free.capacity))
                .min_by_key(|(_, free)| free.capacity)
                .map(|(index, _)| index)
        {
            let reused = pool.free.swap_remove(index);
            pool.bytes -= reused.capacity;
            LIVE_BYTES.fetch_add(reused.capacity, Ordering::Relaxed);
            return Self {
                ptr: reused.ptr,
                capacity: reused.capacity,
                len: 0,
                recycle: true,
            };
        }
        Self::allocate(capacity, true)
    }

    /// A fresh zero-filled allocation of `capacity` bytes (a nonzero
    /// multiple of [`PAGE_SIZE`]).
    fn allocate(capacity: usize, recycle: bool) -> Self {
        let layout = Self::layout(capacity);
        // SAFETY: `layout` has a nonzero size (capacity >= PAGE_SIZE).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        assert!((ptr.as_ptr() as usize).is_multiple_of(PAGE_SIZE));
        LIVE_BYTES.fetch_add(capacity, Ordering::Relaxed);
        Self {
            ptr,
            capacity,
            len: 0,
            recycle,
        }
    }

    fn layout(capacity: usize) -> Layout {
        Layout::from_size_align(capacity, PAGE_SIZE).expect("AlignedBuf layout is valid")
    }

    /// Number of initialized (content) bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the buffer holds no content.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Allocated size in bytes: a multiple of [`PAGE_SIZE`].
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Append `data` after the content. Panics when it does not fit: the
    /// capacity is fixed, and overflowing it is a caller bug.
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        assert!(
            data.len() <= self.capacity - self.len,
            "AlignedBuf overflow: len {} + {} > capacity {}",
            self.len,
            data.len(),
            self.capacity
        );
        let start = self.len;
        let end = start + data.len();
        self.full_mut()[start..end].copy_from_slice(data);
        self.len = end;
    }

    /// Shorten the content to `len` bytes (no effect when already shorter).
    /// The bytes past it keep their values and stay initialized.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// The whole capacity, content and spare bytes alike.
    fn full(&self) -> &[u8] {
        // SAFETY: `ptr` points to an allocation of `capacity` bytes owned by
        // `self`, all initialized (alloc_zeroed, then only overwritten with
        // initialized bytes, also across recycling), and the borrow of `self`
        // prevents mutation for the slice's lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.capacity) }
    }

    /// The whole capacity, mutable.
    fn full_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `full`, and `&mut self` makes this the only reference
        // to the allocation for the slice's lifetime.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.capacity) }
    }

    /// Freeze the buffer into [`Bytes`] without copying. The allocation is
    /// freed when the last clone of the `Bytes` is dropped; the `Bytes` start
    /// on a page boundary.
    pub fn into_bytes(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        LIVE_BYTES.fetch_sub(self.capacity, Ordering::Relaxed);
        if self.recycle
            && let Ok(mut pool) = READ_POOL.lock()
            && pool.bytes + self.capacity <= READ_POOL_BYTES_MAX
        {
            pool.bytes += self.capacity;
            pool.free.push(PooledAllocation {
                ptr: self.ptr,
                capacity: self.capacity,
            });
            return;
        }
        // SAFETY: `ptr` was returned by `alloc_zeroed` with exactly this
        // layout (capacity never changes), page aligned, and is freed only
        // here, once (a pooled allocation is freed by the pool instead);
        // the last `Bytes` of it is gone and no read targets it.
        unsafe { free_returning_pages(self.ptr, Self::layout(self.capacity)) }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.full()[..self.len]
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.full_mut()[..len]
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl AsMut<[u8]> for AlignedBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl IoBuf for AlignedBuf {
    fn as_init(&self) -> &[u8] {
        self
    }
}

impl SetLen for AlignedBuf {
    /// Declare the first `len` bytes content. Every byte of the capacity is
    /// initialized, so the only requirement left is `len <= capacity`, which
    /// is asserted.
    unsafe fn set_len(&mut self, len: usize) {
        assert!(len <= self.capacity, "AlignedBuf::set_len past capacity");
        self.len = len;
    }
}

impl IoBufMut for AlignedBuf {
    fn as_uninit(&mut self) -> &mut [MaybeUninit<u8>] {
        let full = self.full_mut();
        // SAFETY: `MaybeUninit<u8>` has the same layout as `u8`, and the
        // slice covers the same owned, exclusively borrowed memory.
        // Callers can only de-initialize bytes through it by writing
        // `MaybeUninit::uninit()`, and `SetLen` forbids declaring such bytes
        // content.
        unsafe { std::slice::from_raw_parts_mut(full.as_mut_ptr().cast(), full.len()) }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Pages of `[pointer, pointer + size)` resident in memory.
    fn resident_pages(pointer: NonNull<u8>, size: usize) -> usize {
        let mut vector = vec![0_u8; size / PAGE_SIZE];
        // SAFETY: the range is one live, page-aligned allocation of the
        // test's; mincore only reports on it.
        let result = unsafe { libc::mincore(pointer.as_ptr().cast(), size, vector.as_mut_ptr()) };
        assert_eq!(result, 0, "{}", std::io::Error::last_os_error());
        vector.iter().filter(|&&page| page & 1 == 1).count()
    }

    #[test]
    fn a_freed_buffer_gives_its_pages_back_to_the_kernel() {
        let size = 64 * PAGE_SIZE;
        let layout = Layout::from_size_align(size, PAGE_SIZE).unwrap();
        // SAFETY: nonzero size.
        let pointer = NonNull::new(unsafe { alloc::alloc(layout) }).unwrap();
        // SAFETY: the allocation is `size` bytes, owned here.
        unsafe { std::ptr::write_bytes(pointer.as_ptr(), 0xA5, size) };
        assert_eq!(resident_pages(pointer, size), 64);
        // SAFETY: page aligned, owned here, nothing else uses it.
        unsafe { return_pages(pointer, size) };
        assert_eq!(resident_pages(pointer, size), 0);
        // It reads as zeros afterwards (and faults back in when touched).
        // SAFETY: still allocated.
        let bytes = unsafe { std::slice::from_raw_parts(pointer.as_ptr(), size) };
        assert!(bytes.iter().all(|&byte| byte == 0));
        // SAFETY: allocated above with `layout`, freed once.
        unsafe { free_returning_pages(pointer, layout) };
    }

    #[test]
    fn buffers_are_page_aligned_and_rounded_up() {
        for requested in [0, 1, 100, PAGE_SIZE, PAGE_SIZE + 1, 3 * PAGE_SIZE] {
            let buf = AlignedBuf::with_capacity(requested);
            assert!((buf.as_ptr() as usize).is_multiple_of(PAGE_SIZE));
            assert!(buf.capacity().is_multiple_of(PAGE_SIZE));
            assert!(buf.capacity() >= requested.max(1));
            assert!(buf.capacity() < requested.max(1) + PAGE_SIZE);
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn spare_capacity_is_zeroed() {
        let mut buf = AlignedBuf::with_capacity(2 * PAGE_SIZE);
        assert!(buf.as_uninit().len() == 2 * PAGE_SIZE);
        assert!(buf.ensure_init().iter().all(|&byte| byte == 0));
    }

    #[test]
    fn extend_truncate_and_set_len() {
        let mut buf = AlignedBuf::with_capacity(PAGE_SIZE);
        buf.extend_from_slice(b"hello");
        buf.extend_from_slice(b" world");
        assert_eq!(&buf[..], b"hello world");
        buf.truncate(5);
        assert_eq!(&buf[..], b"hello");
        // SAFETY: within capacity; all bytes are initialized.
        unsafe { SetLen::set_len(&mut buf, PAGE_SIZE) };
        assert_eq!(buf.len(), PAGE_SIZE);
        assert_eq!(&buf[..11], b"hello world");
        assert!(buf[11..].iter().all(|&byte| byte == 0));
    }

    #[test]
    #[should_panic(expected = "AlignedBuf overflow")]
    fn extend_past_capacity_panics() {
        let mut buf = AlignedBuf::with_capacity(PAGE_SIZE);
        buf.extend_from_slice(&[1; PAGE_SIZE + 1]);
    }

    #[test]
    fn into_bytes_keeps_content_and_address() {
        let mut buf = AlignedBuf::with_capacity(PAGE_SIZE);
        buf.extend_from_slice(b"record batch bytes");
        let address = buf.as_ptr();
        let bytes = buf.into_bytes();
        assert_eq!(&bytes[..], b"record batch bytes");
        assert_eq!(bytes.as_ptr(), address, "into_bytes must not copy");
        // `Bytes::slice` spelled out: with `IoBuf` in scope, `bytes.slice(..)`
        // resolves to `IoBuf::slice`, which consumes the `Bytes`.
        let tail = Bytes::slice(&bytes, 7..);
        drop(bytes);
        assert_eq!(&tail[..], b"batch bytes");
    }

    #[test]
    fn read_buffers_are_recycled_without_zeroing_and_stay_in_bounds() {
        // An odd size no other test reads, so the pool's entry is ours.
        let size = (3 << 20) + 5 * PAGE_SIZE;
        let mut first = AlignedBuf::for_read(size);
        assert!(first.capacity() >= size && first.capacity().is_multiple_of(PAGE_SIZE));
        first.extend_from_slice(&[9; 100]);
        let address = first.as_ptr();
        let bytes = first.into_bytes();
        // Dropped on another thread, as a fetch answer is after its send.
        std::thread::spawn(move || drop(bytes)).join().unwrap();
        let mut second = AlignedBuf::for_read(size - PAGE_SIZE);
        assert_eq!(second.as_ptr(), address, "the freed buffer is reused");
        assert!(second.is_empty());
        // The spare bytes are the earlier content: initialized, not zeroed.
        // SAFETY: within capacity; all bytes are initialized.
        unsafe { SetLen::set_len(&mut second, 100) };
        assert_eq!(&second[..], &[9; 100]);
        drop(second);
        // Far larger reads never take it: at most a quarter is wasted.
        let third = AlignedBuf::for_read(size * 2);
        assert_ne!(third.as_ptr(), address);
        assert!(pooled_read_buffer_bytes() <= READ_POOL_BYTES_MAX);
    }

    #[test]
    fn into_bytes_crosses_threads() {
        let mut buf = AlignedBuf::with_capacity(PAGE_SIZE);
        buf.extend_from_slice(&[7; 100]);
        let bytes = buf.into_bytes();
        let handle =
            std::thread::spawn(move || bytes.iter().map(|&byte| u32::from(byte)).sum::<u32>());
        assert_eq!(handle.join().unwrap(), 700_u32);
    }
}
