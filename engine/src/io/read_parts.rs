//! Long O_DIRECT reads as parts read in parallel, and a bound on the read
//! bytes a thread keeps in flight (issue 11: a catch-up read at disk speed
//! while a producer beside it keeps its latency).
//!
//! A read longer than [`READ_OP_BYTES_MAX`] is cut into parts of at most
//! that size, page multiples, all filling one buffer; each part is its own
//! io_uring read and waits for one of the thread's
//! [`READ_PARTS_IN_FLIGHT`] slots. On this project's VM disk (fio, 16 files
//! read beside 16 KiB O_DSYNC writes at 50 MB/s): 1 MiB reads, 8 in
//! flight, read 1.4-1.7 GB/s and held the writes 71-104 ms at p99; 256 KiB
//! reads, 4-8 in flight, read 1.7-2.3 GB/s and held them 2-4 ms. A durable
//! write queues behind the read bytes already in the device, so the bound
//! is on bytes in flight: 4 x 256 KiB per shard thread while nobody
//! writes, and while a producer does ([`beside_writes`]: a durable write
//! in flight or one ended within [`WRITES_RECENT`]) one part of at most
//! [`READ_PART_BYTES_BESIDE_WRITES`] in the whole process, which on this
//! disk still reads 1.6 GB/s and keeps the writes' p99 under 0.5 ms
//! (docs/benchmarks.md, "Catch-up reads that waited for the next fetch's
//! read-ahead; reads in parts beside a producer", and the thirteenth
//! session's section after it).
//!
//! Safety argument for the shared buffer: the buffer is allocated before
//! any part starts and owned by an `Rc` that every part's operation holds,
//! so it stays allocated until the last part completes, even when the read
//! that issued them is dropped midway (compio keeps an operation alive
//! until the kernel completes it). Parts cover disjoint byte ranges, and
//! no reference to the buffer's bytes exists while parts are in flight:
//! the kernel writes through raw pointers taken from the exclusively owned
//! buffer before the first part starts, and the buffer is read again only
//! after every part completed (`Rc::try_unwrap` succeeds only then).
//!
//! Thread: the slots are per thread (a shard's reads are issued and
//! completed on its thread); an operation, and the slot it holds, is
//! dropped on the thread that submitted it.

use std::cell::{Cell, RefCell, UnsafeCell};
use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use compio::buf::{IntoInner, SetLen};
use compio::fs::File;
use futures_util::future::join_all;

use super::AlignedBuf;
use crate::constants::{PAGE_SIZE, READ_OP_BYTES_MAX};

/// Read parts one thread keeps in flight at most.
pub const READ_PARTS_IN_FLIGHT: usize = 4;

/// Read parts the whole process keeps in flight while producers write
/// ([`beside_writes`]): a durable write queues in the device behind every
/// read byte already there, so beside writes the bound is on the device's
/// read bytes, not per thread.
pub const READ_PARTS_BESIDE_WRITES: usize = 1;

/// The longest part while producers write. fio on this VM's disk, 16 files
/// read beside 16 KiB O_DSYNC writes at 50 MB/s (writes alone p50 0.08,
/// p99 1.0-1.3 ms): 128 KiB x 1 in flight read 1.6-1.75 GB/s with writes
/// p50 / p99 0.26-0.31 / 0.46-0.47 ms; 256 KiB x 1 2.3-2.6 GB/s, 0.38-0.40
/// / 0.53-0.60; 256 KiB x 2 (one per shard, the bound before) 1.6-2.9 GB/s,
/// 0.75-0.82 / 1.0-1.65; 256 KiB x 4 1.1-1.2 / 2.6-2.9
/// (`bench/scripts/read_beside_writes.sh`).
pub const READ_PART_BYTES_BESIDE_WRITES: usize = 128 << 10;

/// How long after a durable write ended the reads stay in their
/// beside-writes bound (measured from its end: a write slower than this
/// window must not leave the reads unbounded the moment it completes). A
/// producer's writes come and go far faster than this (at 50 MB/s,
/// thousands a second, each in flight ~0.1-0.3 ms): a bound that lifted
/// between two writes let the reads fill the device again, and the next
/// write waited behind all of it.
pub const WRITES_RECENT: Duration = Duration::from_millis(10);

/// Durable writes (`Io::write_durable_at`) in flight in the process.
static DURABLE_WRITES: AtomicUsize = AtomicUsize::new(0);

/// When a durable write last started or ended: nanoseconds since
/// [`EPOCH`], plus one (0: none yet).
static LAST_WRITE_SEEN: AtomicU64 = AtomicU64::new(0);

static EPOCH: OnceLock<Instant> = OnceLock::new();

fn nanos_now() -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Read parts in flight in the process, over all threads.
static PROCESS_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// The most parts in flight in the process since
/// [`take_process_parts_in_flight_max`] (tests).
static PROCESS_IN_FLIGHT_MAX: AtomicUsize = AtomicUsize::new(0);

/// Reads of any thread held back by [`READ_PARTS_BESIDE_WRITES`], woken
/// whenever a part of any thread completes. Pushed to and taken from under
/// the lock, and a read checks the count under it too, so a completion
/// cannot fall between a read's check and its registration.
static BESIDE_WRITES: Mutex<Vec<Waker>> = Mutex::new(Vec::new());

fn beside_waiters() -> std::sync::MutexGuard<'static, Vec<Waker>> {
    BESIDE_WRITES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A durable write in flight, for the read bound; ends when dropped.
pub struct DurableWrite(());

impl DurableWrite {
    pub fn start() -> DurableWrite {
        DURABLE_WRITES.fetch_add(1, Ordering::AcqRel);
        write_seen();
        DurableWrite(())
    }
}

impl Drop for DurableWrite {
    fn drop(&mut self) {
        // Stamped before the count drops, so a read that sees no write in
        // flight sees this write's end.
        write_seen();
        DURABLE_WRITES.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Stamp now as the last durable write seen; never moves the stamp back (a
/// thread descheduled between reading the clock and stamping must not
/// undo a later write's stamp).
fn write_seen() {
    LAST_WRITE_SEEN.fetch_max(nanos_now().saturating_add(1), Ordering::AcqRel);
}

/// Whether a producer is writing: a durable write is in flight or ended
/// within [`WRITES_RECENT`]. The reads then keep to
/// [`READ_PARTS_BESIDE_WRITES`] parts of at most
/// [`READ_PART_BYTES_BESIDE_WRITES`] in the whole process.
pub fn beside_writes() -> bool {
    if DURABLE_WRITES.load(Ordering::Acquire) > 0 {
        return true;
    }
    let seen = LAST_WRITE_SEEN.load(Ordering::Acquire);
    seen != 0 && nanos_now().saturating_sub(seen - 1) < WRITES_RECENT.as_nanos() as u64
}

thread_local! {
    static IN_FLIGHT: Cell<usize> = const { Cell::new(0) };
    /// The most parts in flight since [`take_parts_in_flight_max`] (tests).
    static IN_FLIGHT_MAX: Cell<usize> = const { Cell::new(0) };
    /// The longest part since [`take_part_bytes_max`] (tests).
    static PART_BYTES_MAX: Cell<usize> = const { Cell::new(0) };
    /// Reads waiting for a slot; all are woken when one frees (a woken read
    /// that was dropped meanwhile then cannot strand the others).
    static WAITING: RefCell<Vec<Waker>> = const { RefCell::new(Vec::new()) };
}

/// One of the thread's read slots, given back when dropped.
struct Slot {
    /// Not `Send`: dropped on the thread whose count it holds.
    _thread: std::marker::PhantomData<*const ()>,
}

impl Slot {
    async fn acquire() -> Slot {
        std::future::poll_fn(|context| {
            IN_FLIGHT.with(|count| {
                if count.get() >= READ_PARTS_IN_FLIGHT {
                    WAITING.with(|waiting| waiting.borrow_mut().push(context.waker().clone()));
                    return Poll::Pending;
                }
                let process = if beside_writes() {
                    let mut waiting = beside_waiters();
                    let taken = PROCESS_IN_FLIGHT.fetch_update(
                        Ordering::AcqRel,
                        Ordering::Acquire,
                        |parts| (parts < READ_PARTS_BESIDE_WRITES).then_some(parts + 1),
                    );
                    match taken {
                        Ok(before) => before + 1,
                        Err(_) => {
                            waiting.push(context.waker().clone());
                            return Poll::Pending;
                        }
                    }
                } else {
                    PROCESS_IN_FLIGHT.fetch_add(1, Ordering::AcqRel) + 1
                };
                PROCESS_IN_FLIGHT_MAX.fetch_max(process, Ordering::AcqRel);
                count.set(count.get() + 1);
                IN_FLIGHT_MAX.with(|max| max.set(max.get().max(count.get())));
                Poll::Ready(Slot {
                    _thread: std::marker::PhantomData,
                })
            })
        })
        .await
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        IN_FLIGHT.with(|count| {
            debug_assert!(count.get() > 0, "a read slot given back twice");
            count.set(count.get().saturating_sub(1));
        });
        let before = PROCESS_IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "a read part counted out twice");
        let waiting = WAITING.with(|waiting| std::mem::take(&mut *waiting.borrow_mut()));
        for waker in waiting {
            waker.wake();
        }
        let waiting = std::mem::take(&mut *beside_waiters());
        for waker in waiting {
            waker.wake();
        }
    }
}

/// Read parts in flight on this thread (tests).
pub fn parts_in_flight() -> usize {
    IN_FLIGHT.with(Cell::get)
}

/// The most read parts this thread had in flight since the last call
/// (tests).
pub fn take_parts_in_flight_max() -> usize {
    IN_FLIGHT_MAX.with(|max| max.replace(0))
}

/// Read parts in flight in the process (tests).
pub fn process_parts_in_flight() -> usize {
    PROCESS_IN_FLIGHT.load(Ordering::Acquire)
}

/// The most read parts the process had in flight since the last call
/// (tests).
pub fn take_process_parts_in_flight_max() -> usize {
    PROCESS_IN_FLIGHT_MAX.swap(0, Ordering::AcqRel)
}

/// The longest part this thread issued since the last call (tests).
pub fn take_part_bytes_max() -> usize {
    PART_BYTES_MAX.with(|max| max.replace(0))
}

/// The buffer the parts of one read fill.
struct Shared(UnsafeCell<AlignedBuf>);

/// One part: `len` bytes at file position `offset` into `target`.
struct ReadPart {
    file: File,
    offset: u64,
    target: *mut u8,
    len: usize,
    /// Keeps the buffer `target` points into allocated until completion.
    _buffer: Rc<Shared>,
    /// Held until the operation completes (compio drops the operation then).
    _slot: Slot,
}

impl IntoInner for ReadPart {
    type Inner = ();

    fn into_inner(self) {}
}

// SAFETY: the entry points at `len` bytes of the buffer `_buffer` keeps
// allocated (a range no other part covers, and that nothing references
// while the part is in flight: module docs), and at `file`'s descriptor,
// owned by the operation, which compio keeps alive until the kernel
// completes it.
unsafe impl compio::driver::OpCode for ReadPart {
    type Control = ();

    fn create_entry(&mut self, _: &mut ()) -> compio::driver::OpEntry {
        io_uring::opcode::Read::new(
            io_uring::types::Fd(self.file.as_raw_fd()),
            self.target,
            self.len as u32,
        )
        .offset(self.offset)
        .build()
        .into()
    }
}

/// The parts of a `len`-byte read: (start, length) in the buffer, as even
/// as whole pages allow, none longer than `part_max` (a page multiple).
pub fn parts(len: usize, part_max: usize) -> Vec<(usize, usize)> {
    debug_assert!(len.is_multiple_of(PAGE_SIZE));
    debug_assert!(part_max >= PAGE_SIZE && part_max.is_multiple_of(PAGE_SIZE));
    let pages = len / PAGE_SIZE;
    let count = len.div_ceil(part_max).max(1);
    let (base, extra) = (pages / count, pages % count);
    let mut start = 0;
    (0..count)
        .map(|index| {
            let part = (base + usize::from(index < extra)) * PAGE_SIZE;
            let range = (start, part);
            start += part;
            range
        })
        .filter(|(_, part)| *part > 0)
        .collect()
}

/// Read `len` bytes (page multiples) at `pos` as parallel parts: the
/// buffer holds the bytes read up to the first part that came back short
/// (the end of file). The flag is set when that part's count was a
/// nonzero page multiple, a partial read that is not necessarily the end
/// of file: the caller reads on from there one operation at a time.
pub async fn read(file: &File, pos: u64, len: usize) -> io::Result<(AlignedBuf, bool)> {
    let mut buffer = AlignedBuf::for_read(len);
    assert!(buffer.capacity() >= len);
    let base = compio::buf::IoBufMut::as_uninit(&mut buffer)
        .as_mut_ptr()
        .cast::<u8>();
    let shared = Rc::new(Shared(UnsafeCell::new(buffer)));
    // Cut when issued: parts already cut keep their size if the writes
    // start or stop meanwhile.
    let part_max = if beside_writes() {
        READ_PART_BYTES_BESIDE_WRITES
    } else {
        READ_OP_BYTES_MAX
    };
    let reads = parts(len, part_max).into_iter().map(|(start, part)| {
        let shared = Rc::clone(&shared);
        let file = file.clone();
        async move {
            let slot = Slot::acquire().await;
            PART_BYTES_MAX.with(|max| max.set(max.get().max(part)));
            let op = ReadPart {
                file,
                offset: pos + start as u64,
                // SAFETY: `start + part <= len <= capacity`: in bounds.
                target: unsafe { base.add(start) },
                len: part,
                _buffer: shared,
                _slot: slot,
            };
            let compio::BufResult(result, _) = compio::runtime::submit(op).await;
            (start, part, result)
        }
    });
    let results = join_all(reads).await;
    let mut done = 0;
    let mut short = false;
    // In order, up to the first part that came back short (the parts after
    // it are not contiguous with what was read).
    for (start, part, result) in results {
        let count = result?;
        debug_assert_eq!(start, done);
        done += count;
        if count < part {
            short = count > 0 && count.is_multiple_of(PAGE_SIZE);
            break;
        }
    }
    let Ok(shared) = Rc::try_unwrap(shared) else {
        unreachable!("every part completed, so no operation holds the buffer");
    };
    let mut buffer = shared.0.into_inner();
    // SAFETY: `SetLen` asks for `done <= capacity` (`done <= len <=
    // capacity`) and initialized bytes (every byte of an `AlignedBuf` is).
    unsafe { buffer.set_len(done) };
    Ok((buffer, short))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_read_in_page_multiples_of_at_most_the_limit() {
        for part_max in [READ_OP_BYTES_MAX, READ_PART_BYTES_BESIDE_WRITES, PAGE_SIZE] {
            for pages in [1, 2, 63, 64, 65, 128, 256, 258, 1000] {
                let len = pages * PAGE_SIZE;
                let parts = parts(len, part_max);
                let mut next = 0;
                for (start, part) in &parts {
                    assert_eq!(*start, next);
                    assert!(*part > 0 && *part <= part_max);
                    assert!(part.is_multiple_of(PAGE_SIZE));
                    next += part;
                }
                assert_eq!(next, len, "{pages} pages");
                assert_eq!(parts.len(), len.div_ceil(part_max));
            }
        }
    }
}
