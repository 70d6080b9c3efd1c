//! Group commit: one committer per shard makes the shard's logs durable.
//!
//! Appends only buffer and enqueue their log. A flush round takes every
//! queued log and flushes them concurrently: each log issues one write per
//! dirty segment and one fdatasync per file, then completes all the appends
//! its flush covered. Appends arriving during a round wait for the next one,
//! which starts as soon as the current round ends: under load a round covers
//! everything that arrived during the previous fdatasync, so the fsync rate
//! stays bounded while the batch per fsync grows with the load.
//!
//! Logs with `FlushPolicy::Interval` stay queued until they are due.
//! Single-threaded (`Rc`): a committer and its logs live on one shard.
//!
//! How a flush makes its writes durable is the committer's [`SyncMode`]:
//! an fdatasync per written file, or one syncfs per round for the whole
//! shard (docs/decisions/0010-one-sync-per-shard.md). With `Filesystem`,
//! a log whose writes completed joins the next filesystem sync not yet
//! started; at most one runs at a time and one waits behind it, so the
//! shard issues one device flush per round however many partitions it
//! writes, and a round gathers everything that completed during the
//! previous one (adaptive batching, no fixed linger).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::future::{Either, LocalBoxFuture, Shared as SharedFuture, join_all, select};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};

use crate::io::Io;
use crate::log::{LogInner, LogRef};

/// Counters of the committer's work (for benchmarks and metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Flush rounds that flushed at least one log (`flush_round`), or log
    /// flushes completed by `run`.
    pub rounds: u64,
    /// Log flushes (a log flushed in a round counts once).
    pub log_flushes: u64,
    /// fdatasync calls issued by log flushes.
    pub fsyncs: u64,
    /// Durable (RWF_DSYNC) segment writes issued by log flushes
    /// (`SyncMode::WriteThrough`): each is its own device sync.
    pub durable_writes: u64,
    /// Bytes written to segment files (whole pages, tail pages rewritten).
    pub bytes_written: u64,
    /// syncfs calls issued for flushes (`SyncMode::Filesystem`).
    pub filesystem_syncs: u64,
    /// How long each log flush waited for durability (its fdatasyncs, or
    /// its share of a syncfs), by [`SYNC_BOUNDS_NANOS`] bucket (not
    /// cumulative; the last counts the rest), and their sum.
    pub sync_duration_buckets: [u64; SYNC_BOUNDS_NANOS.len() + 1],
    pub sync_duration_nanos_sum: u64,
    /// Bytes each log flush wrote (its group-commit batch), by
    /// [`FLUSH_BYTES_BOUNDS`] bucket (not cumulative), and their sum is
    /// `bytes_written`.
    pub flush_bytes_buckets: [u64; FLUSH_BYTES_BOUNDS.len() + 1],
}

/// Upper bounds of the sync-duration histogram, in nanoseconds: 50 µs (a
/// device with a write cache that acknowledges at once) to 1 s (a stalled
/// device).
pub const SYNC_BOUNDS_NANOS: [u64; 12] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    100_000_000,
    250_000_000,
    1_000_000_000,
];

/// Upper bounds of the flush-size histogram, in bytes: one page to 16 MiB.
pub const FLUSH_BYTES_BOUNDS: [u64; 8] = [
    4096,
    16 << 10,
    64 << 10,
    256 << 10,
    1 << 20,
    4 << 20,
    8 << 20,
    16 << 20,
];

fn bucket_of(bounds: &[u64], value: u64) -> usize {
    bounds
        .iter()
        .position(|bound| value <= *bound)
        .unwrap_or(bounds.len())
}

/// How a log flush makes its completed writes durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncMode {
    /// One fdatasync per written file: a device cache flush per partition
    /// per flush, whatever else shares the filesystem.
    #[default]
    PerFile,
    /// Every segment write is durable when it completes (O_DIRECT with
    /// RWF_DSYNC, [`Io::write_durable_at`]): one operation per write and
    /// no fdatasync after it. The kernel does the same device flush, from
    /// its I/O completion rather than from an io-wq worker the shard hands
    /// an fdatasync to, and the write no longer waits for a second round
    /// trip (docs/decisions/0016-write-through-flushes.md).
    ///
    /// [`Io::write_durable_at`]: crate::io::Io::write_durable_at
    WriteThrough,
    /// One syncfs per round for every log of the shard that wrote: one
    /// device cache flush per round. It also writes back whatever other
    /// programs left dirty on the same filesystem, so it suits a data
    /// directory on its own filesystem.
    Filesystem,
}

/// A filesystem sync shared by every log that joined it before it started.
/// The error is a string: every joined flush poisons its log with it.
type SharedSync = SharedFuture<LocalBoxFuture<'static, Result<(), Rc<str>>>>;

#[derive(Default)]
struct SyncRounds {
    /// The sync whose syscall has started (its joiners' writes are covered).
    running: Option<(u64, SharedSync)>,
    /// The sync that starts when `running` ends; flushes whose writes
    /// completed join it.
    next: Option<SharedSync>,
    started: u64,
}

pub struct Committer<I: Io> {
    shared: Rc<Shared<I>>,
}

impl<I: Io> Clone for Committer<I> {
    fn clone(&self) -> Self {
        Committer {
            shared: Rc::clone(&self.shared),
        }
    }
}

struct Shared<I: Io> {
    io: I,
    sync_mode: SyncMode,
    queue: RefCell<Vec<LogRef<I>>>,
    waker: RefCell<Option<Waker>>,
    stats: Cell<CommitStats>,
    syncs: Rc<RefCell<SyncRounds>>,
}

impl<I: Io> Committer<I> {
    pub fn new(io: I) -> Committer<I> {
        Committer::with_sync_mode(io, SyncMode::PerFile)
    }

    pub fn with_sync_mode(io: I, sync_mode: SyncMode) -> Committer<I> {
        Committer {
            shared: Rc::new(Shared {
                io,
                sync_mode,
                queue: RefCell::new(Vec::new()),
                waker: RefCell::new(None),
                stats: Cell::new(CommitStats::default()),
                syncs: Rc::new(RefCell::new(SyncRounds::default())),
            }),
        }
    }

    pub fn stats(&self) -> CommitStats {
        self.shared.stats.get()
    }

    pub fn sync_mode(&self) -> SyncMode {
        self.shared.sync_mode
    }

    /// Make durable every write of the caller that completed before this
    /// call, for `SyncMode::Filesystem`: joins the next filesystem sync
    /// that has not started (starting one when none is pending). `file` is
    /// any file on the filesystem. Ok means durable; an error must poison.
    pub(crate) async fn sync_filesystem(&self, file: &I::File) -> Result<(), Rc<str>> {
        let round = {
            let mut rounds = self.shared.syncs.borrow_mut();
            match &rounds.next {
                Some(next) => next.clone(),
                None => {
                    let previous = rounds.running.as_ref().map(|(_, sync)| sync.clone());
                    let round = self.new_sync_round(previous, file.clone());
                    rounds.next = Some(round.clone());
                    round
                }
            }
        };
        round.await
    }

    /// A sync that first waits for `previous` (its writes may have
    /// completed after `previous` started), then moves itself from `next`
    /// to `running` and calls syncfs once.
    fn new_sync_round(&self, previous: Option<SharedSync>, file: I::File) -> SharedSync {
        let io = self.shared.io.clone();
        let syncs = Rc::clone(&self.shared.syncs);
        // Weak: a round waiting in `next` must not keep the committer alive.
        let shared = Rc::downgrade(&self.shared);
        let round = async move {
            if let Some(previous) = previous {
                // Its outcome belongs to its own joiners.
                let _ = previous.await;
            }
            let number = {
                let mut rounds = syncs.borrow_mut();
                let Some(this) = rounds.next.take() else {
                    unreachable!("a sync round starts from `next`");
                };
                rounds.started += 1;
                let number = rounds.started;
                rounds.running = Some((number, this));
                number
            };
            let result = io.sync_filesystem(&file).await;
            {
                let mut rounds = syncs.borrow_mut();
                if rounds.running.as_ref().map(|(running, _)| *running) == Some(number) {
                    rounds.running = None;
                }
            }
            if let Some(shared) = shared.upgrade() {
                let mut stats = shared.stats.get();
                stats.filesystem_syncs += 1;
                shared.stats.set(stats);
            }
            result.map_err(|error| Rc::from(error.to_string()))
        };
        let round: LocalBoxFuture<'static, Result<(), Rc<str>>> = Box::pin(round);
        round.shared()
    }

    /// Logs waiting for a flush.
    pub fn queued(&self) -> usize {
        self.shared.queue.borrow().len()
    }

    pub(crate) fn enqueue(&self, log: LogRef<I>) {
        self.shared.queue.borrow_mut().push(log);
        if let Some(waker) = self.shared.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// One log flush done: its fdatasyncs, bytes written, and how long
    /// it waited for durability.
    pub(crate) fn note_flush(
        &self,
        fsyncs: u64,
        durable_writes: u64,
        bytes_written: u64,
        sync_nanos: u64,
    ) {
        let mut stats = self.shared.stats.get();
        stats.log_flushes += 1;
        stats.fsyncs += fsyncs;
        stats.durable_writes += durable_writes;
        stats.bytes_written += bytes_written;
        stats.sync_duration_buckets[bucket_of(&SYNC_BOUNDS_NANOS, sync_nanos)] += 1;
        stats.sync_duration_nanos_sum += sync_nanos;
        stats.flush_bytes_buckets[bucket_of(&FLUSH_BYTES_BOUNDS, bytes_written)] += 1;
        self.shared.stats.set(stats);
    }

    /// One group-commit round over every queued log that is due. Returns the
    /// number of logs flushed and, if some queued logs are not due yet, the
    /// earliest time one will be.
    pub async fn flush_round(&self) -> (usize, Option<i64>) {
        let queued = std::mem::take(&mut *self.shared.queue.borrow_mut());
        let now = self.shared.io.now_ms();
        let mut due = Vec::new();
        let mut not_due = Vec::new();
        let mut next_due: Option<i64> = None;
        for weak in queued {
            let Some(log) = weak.upgrade() else { continue };
            match log.flush_due(now) {
                Ok(()) => due.push(log),
                Err(at) => {
                    next_due = Some(next_due.map_or(at, |earliest| earliest.min(at)));
                    not_due.push(weak);
                }
            }
        }
        self.shared.queue.borrow_mut().extend(not_due);
        if due.is_empty() {
            return (0, next_due);
        }
        let results = join_all(due.iter().map(|log| log.flush())).await;
        for (log, result) in due.iter().zip(results) {
            if let Err(error) = result {
                tracing::debug!(dir = %log.dir().display(), %error, "flush failed");
            }
            if log.take_requeue() {
                self.shared.queue.borrow_mut().push(Rc::downgrade(log));
            } else {
                log.mark_unqueued();
            }
        }
        let mut stats = self.shared.stats.get();
        stats.rounds += 1;
        self.shared.stats.set(stats);
        (due.len(), next_due)
    }

    /// Flush rounds until nothing is queued (tests, shutdown).
    pub async fn flush_all(&self) {
        loop {
            let (flushed, _) = self.flush_round().await;
            if flushed == 0 && self.queued() == 0 {
                return;
            }
            if flushed == 0 {
                // Only interval logs remain, not due: flush them anyway.
                let queued = std::mem::take(&mut *self.shared.queue.borrow_mut());
                for weak in queued {
                    if let Some(log) = weak.upgrade() {
                        let _ = log.flush().await;
                        log.mark_unqueued();
                    }
                }
                return;
            }
        }
    }

    /// Flush queued logs forever: spawn this once per shard on the shard's
    /// runtime. Unlike `flush_round`, logs are not held to a common barrier:
    /// each queued log gets a flush as soon as it is due and not already
    /// flushing, and a log still dirty when its flush ends starts the next
    /// one at once. An append thus waits for at most the flush in progress
    /// on its own log plus one more, whatever the other logs do.
    pub async fn run(&self) {
        let mut in_flight = FuturesUnordered::new();
        loop {
            let now = self.shared.io.now_ms();
            let queued = std::mem::take(&mut *self.shared.queue.borrow_mut());
            let mut next_due: Option<i64> = None;
            for weak in queued {
                let Some(log) = weak.upgrade() else { continue };
                match log.flush_due(now) {
                    Ok(()) => in_flight.push(flush_owned(log)),
                    Err(at) => {
                        next_due = Some(next_due.map_or(at, |earliest| earliest.min(at)));
                        self.shared.queue.borrow_mut().push(weak);
                    }
                }
            }
            let baseline = self.queued();
            let woken = Woken {
                shared: &self.shared,
                baseline,
            };
            let wait_ms = next_due.map(|at| (at - now).max(1) as u64);
            let finished = if in_flight.is_empty() {
                match wait_ms {
                    Some(wait_ms) => {
                        let sleep =
                            std::pin::pin!(self.shared.io.sleep(Duration::from_millis(wait_ms)));
                        let _ = select(woken, sleep).await;
                    }
                    None => woken.await,
                }
                None
            } else {
                match select(in_flight.next(), woken).await {
                    Either::Left((finished, _)) => finished,
                    Either::Right(_) => None,
                }
            };
            if let Some(log) = finished {
                let mut stats = self.shared.stats.get();
                stats.rounds += 1;
                self.shared.stats.set(stats);
                if log.take_requeue() {
                    self.shared.queue.borrow_mut().push(Rc::downgrade(&log));
                }
            }
        }
    }
}

/// One log flush as an owned future yielding the log back.
fn flush_owned<I: Io>(log: Rc<LogInner<I>>) -> LocalBoxFuture<'static, Rc<LogInner<I>>> {
    Box::pin(async move {
        if let Err(error) = log.flush().await {
            tracing::debug!(dir = %log.dir().display(), %error, "flush failed");
        }
        log
    })
}

/// Resolves once the queue holds more logs than `baseline` (something was
/// enqueued since the round ended).
struct Woken<'a, I: Io> {
    shared: &'a Shared<I>,
    baseline: usize,
}

impl<I: Io> Future for Woken<'_, I> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        if self.shared.queue.borrow().len() > self.baseline {
            return Poll::Ready(());
        }
        *self.shared.waker.borrow_mut() = Some(context.waker().clone());
        Poll::Pending
    }
}

impl<I: Io> Unpin for Woken<'_, I> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_fall_in_the_first_bucket_whose_bound_holds_them() {
        assert_eq!(bucket_of(&SYNC_BOUNDS_NANOS, 0), 0);
        assert_eq!(bucket_of(&SYNC_BOUNDS_NANOS, 50_000), 0);
        assert_eq!(bucket_of(&SYNC_BOUNDS_NANOS, 50_001), 1);
        assert_eq!(
            bucket_of(&SYNC_BOUNDS_NANOS, u64::MAX),
            SYNC_BOUNDS_NANOS.len()
        );
        assert_eq!(bucket_of(&FLUSH_BYTES_BOUNDS, 4096), 0);
        assert_eq!(bucket_of(&FLUSH_BYTES_BOUNDS, 1 << 20), 4);
        assert!(SYNC_BOUNDS_NANOS.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(FLUSH_BYTES_BOUNDS.windows(2).all(|pair| pair[0] < pair[1]));
    }
}
