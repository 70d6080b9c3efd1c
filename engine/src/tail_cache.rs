//! The shard's byte budget for retained tail chunks (issue 11).
//!
//! After a flush, a segment's write buffer (segment/buffer.rs) keeps the
//! chunk it writes into and, as a read cache of recent data, up to
//! [`TAIL_CHUNKS_RETAINED`](crate::constants::TAIL_CHUNKS_RETAINED) - 1
//! chunks that are wholly durable ("retained" chunks). Each retained chunk
//! holds a [`Claim`] on its shard's budget. When a flush takes the shard
//! over [`shard_budget_bytes`], [`enforce`] makes the least recently
//! appended-to or read logs give their retained chunks back until it fits.
//! A fetch below a log's buffered tail then reads from the segment file
//! (`Cursor::fetch` in log.rs), as for any older data.
//!
//! Why a budget and not a count per log: the count made memory grow with
//! the number of partitions, hot or not; at 10,000 partitions the retained
//! chunks alone took the broker past 1 GiB (docs/benchmarks.md, "Restart
//! time and 10,000 partitions").
//!
//! Invariants (asserted where chunks are released, buffer.rs):
//! - the chunk a segment writes into is never retained, so never released;
//! - only chunks wholly below the segment's durable size are claimed, so a
//!   chunk that an O_DIRECT write in flight still reads from is never
//!   released (durability is published only after that write and its sync
//!   completed);
//! - claimed chunks form a prefix of a buffer (durability is a prefix).
//!
//! Thread: one ledger per thread (a log and its buffers live on one shard
//! thread). Claims and ledger entries are dropped on that thread.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Weak;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::constants::TAIL_CACHE_SHARD_BYTES_DEFAULT;

/// Process-wide setting: retained-chunk bytes one shard thread may hold.
static SHARD_BUDGET_BYTES: AtomicUsize = AtomicUsize::new(TAIL_CACHE_SHARD_BYTES_DEFAULT);

/// Retained-chunk bytes held by every thread of the process (metrics).
static RETAINED_BYTES_TOTAL: AtomicUsize = AtomicUsize::new(0);

/// Set the budget of every shard thread (`sluice serve --tail-cache-bytes`).
/// Takes effect at each shard's next flush.
pub fn set_shard_budget_bytes(bytes: usize) {
    SHARD_BUDGET_BYTES.store(bytes, Ordering::Relaxed);
}

/// The budget of this shard thread, in bytes: its override if it has one,
/// else the process-wide setting.
pub fn shard_budget_bytes() -> usize {
    LEDGER
        .with(|ledger| ledger.borrow().budget_override)
        .unwrap_or_else(|| SHARD_BUDGET_BYTES.load(Ordering::Relaxed))
}

/// Give this thread its own budget (`None`: the process-wide one again).
/// For tests and simulations, which run side by side in one process.
pub fn set_thread_budget_bytes(bytes: Option<usize>) {
    LEDGER.with(|ledger| ledger.borrow_mut().budget_override = bytes);
}

/// Retained-chunk bytes held by this thread's logs.
pub fn retained_bytes() -> usize {
    LEDGER.with(|ledger| ledger.borrow().used)
}

/// Retained-chunk bytes held by all threads of the process.
pub fn retained_bytes_total() -> usize {
    RETAINED_BYTES_TOTAL.load(Ordering::Relaxed)
}

/// Times this thread's logs gave their retained chunks back to the budget.
pub fn evictions() -> u64 {
    LEDGER.with(|ledger| ledger.borrow().evictions)
}

/// A log whose retained chunks the budget can take back.
pub(crate) trait TailHolder {
    /// Drop every retained chunk; `None` if the log is busy (its state is
    /// borrowed further up the stack), else the bytes released.
    fn release_retained(&self) -> Option<usize>;
}

#[derive(Default)]
struct Ledger {
    used: usize,
    tick: u64,
    /// Logs holding retained chunks, least recently touched first.
    order: BTreeMap<u64, Weak<dyn TailHolder>>,
    evictions: u64,
    budget_override: Option<usize>,
}

thread_local! {
    static LEDGER: RefCell<Ledger> = RefCell::new(Ledger::default());
}

/// One retained chunk's share of the budget, given back when dropped.
pub(crate) struct Claim(usize);

impl Claim {
    pub(crate) fn new(bytes: usize) -> Claim {
        LEDGER.with(|ledger| ledger.borrow_mut().used += bytes);
        RETAINED_BYTES_TOTAL.fetch_add(bytes, Ordering::Relaxed);
        Claim(bytes)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // `try_with`: a log dropped while its thread exits.
        let _ = LEDGER.try_with(|ledger| {
            if let Ok(mut ledger) = ledger.try_borrow_mut() {
                ledger.used = ledger.used.saturating_sub(self.0);
            }
        });
        RETAINED_BYTES_TOTAL.fetch_sub(self.0, Ordering::Relaxed);
    }
}

/// A log's place in its shard's order of use.
#[derive(Default)]
pub(crate) struct TailEntry {
    /// Its key in `Ledger::order`, when listed.
    listed: Cell<Option<u64>>,
}

impl TailEntry {
    /// The log was appended to or read: it moves to the back of the order.
    pub(crate) fn touch(&self) {
        let Some(old) = self.listed.get() else { return };
        LEDGER.with(|ledger| {
            let mut ledger = ledger.borrow_mut();
            if let Some(holder) = ledger.order.remove(&old) {
                ledger.tick += 1;
                let tick = ledger.tick;
                ledger.order.insert(tick, holder);
                self.listed.set(Some(tick));
            } else {
                self.listed.set(None);
            }
        });
    }

    /// The log holds retained chunks: list it (at the back) if it is not.
    pub(crate) fn list(&self, holder: Weak<dyn TailHolder>) {
        if self.listed.get().is_some() {
            return;
        }
        LEDGER.with(|ledger| {
            let mut ledger = ledger.borrow_mut();
            ledger.tick += 1;
            let tick = ledger.tick;
            ledger.order.insert(tick, holder);
            self.listed.set(Some(tick));
        });
    }

    /// The log gave its retained chunks back: it leaves the order.
    pub(crate) fn unlist(&self) {
        if let Some(key) = self.listed.take() {
            remove(key);
        }
    }
}

fn remove(key: u64) {
    let _ = LEDGER.try_with(|ledger| {
        if let Ok(mut ledger) = ledger.try_borrow_mut() {
            ledger.order.remove(&key);
        }
    });
}

impl Drop for TailEntry {
    fn drop(&mut self) {
        if let Some(key) = self.listed.get() {
            remove(key);
        }
    }
}

/// Bring this thread back within its budget: the least recently touched
/// logs give back their retained chunks first. A log that is busy keeps its
/// chunks (and its place) until the next call.
pub(crate) fn enforce() {
    let budget = shard_budget_bytes();
    let mut busy = Vec::new();
    loop {
        let next = LEDGER.with(|ledger| {
            let mut ledger = ledger.borrow_mut();
            if ledger.used <= budget {
                return None;
            }
            ledger.order.pop_first()
        });
        let Some((key, holder)) = next else { break };
        // The ledger is not borrowed here: releasing drops claims.
        match holder.upgrade().map(|holder| holder.release_retained()) {
            Some(None) => busy.push((key, holder)),
            Some(Some(_)) => LEDGER.with(|ledger| ledger.borrow_mut().evictions += 1),
            None => {}
        }
    }
    if !busy.is_empty() {
        LEDGER.with(|ledger| ledger.borrow_mut().order.extend(busy));
    }
}
