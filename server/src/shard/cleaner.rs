//! The log cleaner of one shard: applies retention (retention.ms,
//! retention.bytes) to the partitions whose cleanup.policy deletes (delete,
//! compact,delete) and compacts those whose policy compacts (compact,
//! compact,delete), user topics and `__consumer_offsets` alike.
//!
//! One task per shard (spawned next to the committer in broker.rs). Every
//! `--log-cleaner-interval-ms` it visits the shard's partitions; a compacted
//! one whose dirty ratio (engine `Log::dirty_stats`, no I/O) reaches its
//! min.cleanable.dirty.ratio, or whose oldest dirty segment is older than
//! max.compaction.lag.ms, gets one `Log::clean` pass. The pass runs on the
//! shard thread through the engine's `Io` (io_uring reads and writes, each an
//! await point) and yields between partitions, so requests keep being served;
//! the log's flush lock is taken only to swap a finished segment in.
//!
//! Transactions (KIP-98, as Kafka's LogCleaner): the pass is given the
//! partition's last stable offset and aborted transactions (txn_state.rs)
//! as an engine `TxnCleanInput`. Nothing at or above the last stable offset
//! is cleaned (an open transaction, and all after its first offset, stays
//! as written); batches of aborted transactions below it are removed;
//! committed transactional records are compacted by key. Transaction
//! markers go once their transaction has no data left and their delete
//! horizon passed: a pass reports the markers it left without data
//! (`CleanSummary::empty_markers`), the partition's state remembers when
//! it first saw each, and once delete.retention.ms has passed since, the
//! next pass (run for them even when the dirty ratio is low) is given them
//! as removable. A due marker a pass did not remove is forgotten until a
//! later pass sees it empty again, so they cost at most one pass per
//! delete.retention.ms.
//!
//! Every visit also runs the transaction state's persistence step for
//! every partition (`txn_state::persist`: index files and snapshots, so
//! that an open after a crash reads only the log's tail).
//!
//! Errors are logged and never stop the task: a failed pass leaves the
//! segment it was working on as it was (engine compact.rs), and the next
//! interval tries again. Fetches need no wake-up: cleaning adds no data and
//! moves no offsets; reads in flight finish on the file they started with.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use std::collections::HashSet;

use sluice_engine::io::Io;
use sluice_engine::{AbortedRange, DirtyStats, Offset, TxnCleanInput};

use crate::shard::txn_state::{self, TxnState};
use crate::shard::{PartitionReplica, Shard};

/// max.compaction.lag.ms: whether dirty records have waited longer than
/// `max_compaction_lag_ms`, so that the log is cleaned whatever its dirty
/// ratio (Kafka's LogCleanerManager "must clean" logs).
fn compaction_overdue(stats: &DirtyStats, max_compaction_lag_ms: i64, now_ms: i64) -> bool {
    max_compaction_lag_ms != i64::MAX
        && stats.dirty_bytes > 0
        && stats
            .oldest_dirty_timestamp_ms
            .is_some_and(|oldest| oldest <= now_ms.saturating_sub(max_compaction_lag_ms))
}

/// Run the cleaner of `shard` until the shard closes (`Shard::close_all`
/// waits for a pass in progress, which stops at the next partition).
pub async fn run(shard: Rc<Shard>) {
    let interval = Duration::from_millis(shard.config.log_cleaner_interval_ms.max(1));
    loop {
        compio::time::sleep(interval).await;
        let Some(_work) = shard.background_work() else {
            return;
        };
        clean_once(&shard).await;
    }
}

/// One visit of every compacted partition of the shard; returns how many
/// partitions were cleaned successfully.
pub async fn clean_once(shard: &Shard) -> usize {
    let replicas: Vec<Rc<PartitionReplica>> = shard.partitions.values();
    let mut cleaned = 0;
    for replica in replicas {
        if shard.partitions.is_closing() {
            break;
        }
        let (compacts, deletes, compaction) = {
            let config = replica.config.borrow();
            (
                config.cleanup_policy.compacts(),
                config.cleanup_policy.deletes(),
                config.compaction,
            )
        };
        // Poisoned, or closed since the pass began (its partition removed:
        // nothing of it may touch its directory again).
        if replica.log.is_poisoned() || replica.log.is_closed() {
            continue;
        }
        replica.persist_txn_state().await;
        if deletes {
            match replica.log.apply_retention(replica.high_watermark()).await {
                Ok(0) => {}
                Ok(deleted) => tracing::debug!(
                    partition = %replica.topic_partition,
                    deleted,
                    log_start = %replica.log.log_start_offset(),
                    "retention deleted segments"
                ),
                Err(sluice_engine::LogError::Closed { .. }) => {}
                Err(error) => {
                    tracing::warn!(partition = %replica.topic_partition, %error, "retention failed; will retry");
                }
            }
        }
        if !compacts {
            continue;
        }
        let stable_bound = replica.last_stable_offset();
        let stats = replica
            .log
            .dirty_stats_below(compaction.clean.min_compaction_lag_ms, stable_bound);
        let now_ms = shard.io.now_ms();
        let markers_due = replica
            .txns
            .borrow()
            .markers_due(now_ms, compaction.clean.delete_retention_ms);
        if (stats.dirty_bytes == 0 || stats.ratio() < compaction.min_cleanable_dirty_ratio)
            && markers_due.is_empty()
            && !compaction_overdue(&stats, compaction.max_compaction_lag_ms, now_ms)
        {
            continue;
        }
        let txns = txn_clean_input(&replica, stable_bound);
        let removable: HashSet<Offset> = markers_due.iter().copied().collect();
        let forget = async |markers: Vec<Offset>| {
            txn_state::forget_removed_markers(&replica.log, &replica.txns, &markers).await
        };
        match replica
            .log
            .clean_transactions_with_markers(&compaction.clean, &txns, &removable, forget)
            .await
        {
            Ok(summary) => {
                cleaned += 1;
                note_markers(
                    &mut replica.txns.borrow_mut(),
                    &summary,
                    &markers_due,
                    now_ms,
                );
                tracing::debug!(
                    partition = %replica.topic_partition,
                    rewritten = summary.segments_rewritten,
                    records_removed = summary.records_removed,
                    tombstones_removed = summary.tombstones_removed,
                    aborted_batches_removed = summary.aborted_batches_removed,
                    markers_removed = ?summary.markers_removed,
                    bytes_before = summary.bytes_before,
                    bytes_after = summary.bytes_after,
                    "compacted"
                );
            }
            Err(sluice_engine::LogError::Closed { .. }) => {}
            Err(error) => {
                tracing::warn!(partition = %replica.topic_partition, %error, "compaction failed; will retry");
            }
        }
        YieldNow(false).await;
    }
    cleaned
}

/// What the engine needs to know of the partition's transactions for a
/// pass bounded by `stable_bound` (its last stable offset): every aborted
/// transaction that may still have data below the bound. Below the last
/// stable offset no transaction is open, and the aborted list holds every
/// aborted transaction whose marker is at or above the log start (the
/// list is rebuilt from the whole log at open), so a transactional batch
/// there that no entry covers belongs to a committed transaction.
fn txn_clean_input(replica: &PartitionReplica, stable_bound: Offset) -> TxnCleanInput {
    let aborted = replica
        .aborted_transactions(Offset(0), stable_bound)
        .into_iter()
        .map(|aborted| AbortedRange {
            producer_id: aborted.producer_id.0,
            first_offset: aborted.first_offset,
            last_offset: aborted.last_offset,
        })
        .collect();
    TxnCleanInput {
        stable_bound,
        aborted,
    }
}

/// Record what a pass did to markers in the partition's transaction state
/// (module docs). Markers seen empty by a pass that skipped a segment are
/// not noted: that segment's data may still be there.
fn note_markers(
    txns: &mut TxnState,
    summary: &sluice_engine::CleanSummary,
    markers_due: &[Offset],
    now_ms: i64,
) {
    for removed in &summary.markers_removed {
        txns.marker_removed(removed.offset);
    }
    for marker in markers_due {
        txns.forget_empty_marker(*marker);
    }
    if summary.segments_skipped == 0 {
        // Not those just removed: they are gone, not waiting for a horizon.
        let empty: Vec<Offset> = summary
            .empty_markers
            .iter()
            .copied()
            .filter(|marker| {
                !summary
                    .markers_removed
                    .iter()
                    .any(|removed| removed.offset == *marker)
            })
            .collect();
        txns.note_empty_markers(&empty, now_ms);
    }
}

/// Let the shard's other tasks run once before continuing.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        context.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A marker the pass removed is gone, not waiting for its horizon: it
    /// was noted as empty again, which made a later pass run below
    /// min.cleanable.dirty.ratio for nothing.
    #[test]
    fn markers_a_pass_removed_are_not_noted_as_waiting() {
        let mut txns = TxnState::new();
        let summary = sluice_engine::CleanSummary {
            empty_markers: vec![Offset(4), Offset(9)],
            markers_removed: vec![sluice_engine::compact::RemovedMarker {
                producer_id: 1,
                offset: Offset(4),
                commit: Some(false),
            }],
            ..Default::default()
        };
        note_markers(&mut txns, &summary, &[Offset(4)], 1_000);
        assert_eq!(txns.markers_due(1_000, 0), vec![Offset(9)]);
    }

    #[test]
    fn a_log_is_overdue_once_its_oldest_dirty_segment_passes_the_max_lag() {
        let stats = DirtyStats {
            dirty_bytes: 10,
            cleanable_bytes: 1000,
            oldest_dirty_timestamp_ms: Some(1_000),
        };
        assert!(!compaction_overdue(&stats, i64::MAX, i64::MAX));
        assert!(!compaction_overdue(&stats, 500, 1_499));
        assert!(compaction_overdue(&stats, 500, 1_500));
        let clean = DirtyStats {
            dirty_bytes: 0,
            ..stats
        };
        assert!(!compaction_overdue(&clean, 500, 10_000));
        let untimed = DirtyStats {
            oldest_dirty_timestamp_ms: None,
            ..stats
        };
        assert!(!compaction_overdue(&untimed, 500, 10_000));
    }
}
