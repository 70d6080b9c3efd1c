//! Wake-ups for fetches waiting for a partition's high watermark to move
//! (long poll).
//!
//! Each [`PartitionReplica`](super::PartitionReplica) owns a
//! [`HighWatermarkWatch`]. [`HighWatermarkWatch::notify`] wakes every fetch
//! waiting on the partition; the produce path triggers it through
//! `PartitionReplica::append`'s completion (or
//! `PartitionReplica::notify_high_watermark`) once the high watermark
//! covers an append. With replication factor 1 the high watermark is the
//! log's durable end (`PartitionReplica::high_watermark`), so that is when
//! the append is durable; part 2 notifies when the ISR's acknowledgements
//! move it.
//!
//! Waiters never rely on the notification alone: they re-check the high
//! watermark every [`HighWatermarkWatch::fallback_poll_interval`] too,
//! because the engine has no hook for "durable end advanced"
//! (FlushPolicy::Interval flushes, appends that bypass the wrapper). The interval is short until some append on this
//! process went through the notifying wrapper, then long (a safety net).
//!
//! Shard-local (`Cell`/`RefCell`): a watch and its waiters live on the shard
//! that owns the partition.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Set once an append completion notified a watch: from then on the produce
/// path is known to notify, and waiters poll only as a safety net.
static NOTIFYING_PRODUCE_SEEN: AtomicBool = AtomicBool::new(false);

/// Re-check interval while no notifying append has been seen.
const POLL_INTERVAL_UNNOTIFIED: Duration = Duration::from_millis(10);
/// Re-check interval once appends are known to notify.
const POLL_INTERVAL_NOTIFIED: Duration = Duration::from_millis(100);

/// A generation counter plus the wakers of the futures waiting for it to
/// move. Registrations are removed when their future is dropped, so an idle
/// partition polled by many consumers keeps no garbage.
#[derive(Default)]
pub struct HighWatermarkWatch {
    generation: Cell<u64>,
    next_key: Cell<u64>,
    wakers: RefCell<HashMap<u64, Waker>>,
    /// The offset an interval-flush poller waits for, while one runs
    /// (`PartitionReplica::append` under FlushPolicy::Interval).
    poll_target: Cell<Option<i64>>,
}

impl HighWatermarkWatch {
    pub fn new() -> HighWatermarkWatch {
        HighWatermarkWatch::default()
    }

    /// Wake every waiter (the high watermark moved, or anything else a
    /// waiting fetch must re-read for: truncation, deletion).
    pub fn notify(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for (_, waker) in wakers {
            waker.wake();
        }
    }

    /// Like [`notify`](Self::notify), from an append completion: also records
    /// that the produce path notifies (see the module docs).
    pub fn notify_from_append(&self) {
        NOTIFYING_PRODUCE_SEEN.store(true, Ordering::Relaxed);
        self.notify();
    }

    /// A future that resolves at the next `notify` after this call.
    pub fn changed(&self) -> Changed<'_> {
        Changed {
            watch: self,
            generation: self.generation.get(),
            key: None,
        }
    }

    /// How often a waiter re-checks the log without a notification.
    pub fn fallback_poll_interval() -> Duration {
        if NOTIFYING_PRODUCE_SEEN.load(Ordering::Relaxed) {
            POLL_INTERVAL_NOTIFIED
        } else {
            POLL_INTERVAL_UNNOTIFIED
        }
    }

    /// Ask for a notification once the high watermark reaches `end`. Returns
    /// true when no poller runs yet and the caller must start one.
    pub fn raise_poll_target(&self, end: i64) -> bool {
        match self.poll_target.get() {
            Some(target) => {
                self.poll_target.set(Some(target.max(end)));
                false
            }
            None => {
                self.poll_target.set(Some(end));
                true
            }
        }
    }

    /// The offset the running poller waits for.
    pub fn poll_target(&self) -> i64 {
        self.poll_target.get().unwrap_or(i64::MIN)
    }

    /// The poller stops.
    pub fn finish_polling(&self) {
        self.poll_target.set(None);
    }

    /// Registered waiters (tests).
    pub fn waiter_count(&self) -> usize {
        self.wakers.borrow().len()
    }
}

/// See [`HighWatermarkWatch::changed`].
pub struct Changed<'a> {
    watch: &'a HighWatermarkWatch,
    generation: u64,
    key: Option<u64>,
}

impl Future for Changed<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        if self.watch.generation.get() != self.generation {
            // `notify` drained our registration already.
            self.key = None;
            return Poll::Ready(());
        }
        let key = match self.key {
            Some(key) => key,
            None => {
                let key = self.watch.next_key.get();
                self.watch.next_key.set(key.wrapping_add(1));
                self.key = Some(key);
                key
            }
        };
        let mut wakers = self.watch.wakers.borrow_mut();
        match wakers.get_mut(&key) {
            Some(waker) if waker.will_wake(context.waker()) => {}
            Some(waker) => waker.clone_from(context.waker()),
            None => {
                wakers.insert(key, context.waker().clone());
            }
        }
        Poll::Pending
    }
}

impl Drop for Changed<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.watch.wakers.borrow_mut().remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::*;

    #[test]
    fn a_waiter_resolves_after_notify_and_leaves_no_registration() {
        let watch = HighWatermarkWatch::new();
        let mut context = Context::from_waker(Waker::noop());
        let mut changed = pin!(watch.changed());
        assert_eq!(changed.as_mut().poll(&mut context), Poll::Pending);
        assert_eq!(changed.as_mut().poll(&mut context), Poll::Pending);
        assert_eq!(
            watch.waiter_count(),
            1,
            "re-polling does not register twice"
        );
        watch.notify();
        assert_eq!(watch.waiter_count(), 0);
        assert_eq!(changed.as_mut().poll(&mut context), Poll::Ready(()));
    }

    #[test]
    fn a_dropped_waiter_unregisters() {
        let watch = HighWatermarkWatch::new();
        let mut context = Context::from_waker(Waker::noop());
        {
            let mut changed = pin!(watch.changed());
            assert_eq!(changed.as_mut().poll(&mut context), Poll::Pending);
            assert_eq!(watch.waiter_count(), 1);
        }
        assert_eq!(watch.waiter_count(), 0);
    }

    #[test]
    fn a_notify_before_the_first_poll_counts() {
        let watch = HighWatermarkWatch::new();
        let mut context = Context::from_waker(Waker::noop());
        let mut changed = pin!(watch.changed());
        watch.notify();
        assert_eq!(changed.as_mut().poll(&mut context), Poll::Ready(()));
    }
}
