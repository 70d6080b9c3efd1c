//! Who may still use a log's directory by its path.
//!
//! A partition directory is named `<topic>-<partition>`. When the topic is
//! deleted its log is closed and the directory renamed away
//! (server/src/shard/partition.rs), and a topic created again under the
//! same name gets a fresh directory at the same path. Anything the old log
//! does by path after that (a checkpoint, a segment removal, compaction's
//! temporary file, the server's transaction snapshots) lands in the new
//! topic's directory: a retention pass that started before the deletion
//! removed the new topic's first segment file and wrote the old log's start
//! offset into its checkpoint.
//!
//! Invariant: once a close of the log has returned, nothing of this log
//! touches its directory by path again. Two mechanisms hold it:
//!
//! - Every operation that uses the directory by path holds a [`DirUse`]
//!   from this gate for its whole run: retention, DeleteRecords, truncation,
//!   a start-over, a compaction pass (engine), the transaction files, the
//!   clean-stop snapshots and a follower's rebuild after a start-over
//!   (server). A close first shuts the gate (no new use starts) and waits
//!   until every use has ended; a compaction pass looks at
//!   [`DirGate::is_shut`] between segments and stops early.
//! - The flush, which a close runs itself after shutting the gate, checks
//!   `LogState::closed` after taking the flush lock and does nothing on a
//!   closed log; a close sets `closed` while holding that lock, and fails
//!   the appends still waiting.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

/// Counts the uses of a directory in progress; see the module docs.
#[derive(Default)]
pub(crate) struct DirGate {
    shut: Cell<bool>,
    uses: Cell<usize>,
    /// Closes waiting for the uses to end.
    waiting: RefCell<Vec<Waker>>,
}

/// One use of the directory; the gate counts it until it is dropped.
#[must_use = "the directory may be used only while this is held"]
pub struct DirUse {
    gate: Rc<DirGate>,
}

impl DirGate {
    /// Start a use, unless a close has begun.
    pub(crate) fn enter(self: &Rc<Self>) -> Option<DirUse> {
        if self.shut.get() {
            return None;
        }
        self.uses.set(self.uses.get() + 1);
        Some(DirUse {
            gate: Rc::clone(self),
        })
    }

    /// Whether a close has begun: a long use should stop at its next step.
    pub(crate) fn is_shut(&self) -> bool {
        self.shut.get()
    }

    /// Refuse new uses and wait until those in progress have ended.
    pub(crate) async fn shut(&self) {
        self.shut.set(true);
        poll_fn(|context| {
            if self.uses.get() == 0 {
                Poll::Ready(())
            } else {
                self.waiting.borrow_mut().push(context.waker().clone());
                Poll::Pending
            }
        })
        .await;
    }
}

impl Drop for DirUse {
    fn drop(&mut self) {
        let left = self.gate.uses.get() - 1;
        self.gate.uses.set(left);
        if left == 0 {
            for waker in self.gate.waiting.take() {
                waker.wake();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::Context;

    #[test]
    fn a_shut_waits_for_the_uses_in_progress_and_refuses_new_ones() {
        let gate = Rc::new(DirGate::default());
        let first = gate.enter().expect("open");
        let second = gate.enter().expect("open");
        let mut shut = pin!(gate.shut());
        let mut context = Context::from_waker(Waker::noop());
        assert!(shut.as_mut().poll(&mut context).is_pending());
        assert!(gate.is_shut());
        assert!(gate.enter().is_none(), "no use starts once a close began");
        drop(first);
        assert!(
            shut.as_mut().poll(&mut context).is_pending(),
            "one use left"
        );
        drop(second);
        assert!(shut.as_mut().poll(&mut context).is_ready());
        // A second close finds nothing to wait for.
        assert!(pin!(gate.shut()).poll(&mut context).is_ready());
    }
}
