//! The outbox's store thread: copies journaled records into the store without waiting for the
//! disk (the link reads them there) and checkpoints (commits durably) when the writer asks, so
//! the store's slower commit stays off the producers' path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::Instant;

use tokio::sync::Notify;

use super::record::OutboxRecord;
use super::{LINGER, OutboxError};
use crate::store::{Store, StoreError};

/// The outcome of a checkpoint.
pub(super) type Checkpointed = Result<(), OutboxError>;

/// Work for the store thread, in the order the records were made durable.
pub(super) enum StoreWork {
    /// Journaled records, for the store within LINGER (without waiting for the disk).
    Journaled(Vec<OutboxRecord>),
    /// Commit every record so far and `records` (not journaled) durably; then tell `done`.
    /// When the commit fails, `records` are dropped (their producers are told).
    Checkpoint {
        records: Vec<OutboxRecord>,
        done: std_mpsc::Sender<Checkpointed>,
    },
}

/// The store thread: copies journaled records into the store at most every LINGER without
/// waiting for the disk (the link reads them there), and checkpoints when told to.
pub(super) fn store_thread(
    store: &Store,
    work: &std_mpsc::Receiver<StoreWork>,
    max_bytes: &AtomicU64,
    committed: &Notify,
) {
    let mut unstored: Vec<OutboxRecord> = Vec::new();
    let mut stored_at = Instant::now();
    loop {
        let next = if unstored.is_empty() {
            work.recv()
                .map_err(|_| std_mpsc::RecvTimeoutError::Disconnected)
        } else {
            work.recv_timeout((stored_at + LINGER).saturating_duration_since(Instant::now()))
        };
        let cap = max_bytes.load(Ordering::Relaxed);
        match next {
            Ok(StoreWork::Journaled(records)) => unstored.extend(records),
            Ok(StoreWork::Checkpoint { records, done }) => {
                let count = records.len();
                unstored.extend(records);
                let outcome = put(store, &unstored, cap, true, committed);
                if outcome.is_ok() {
                    unstored.clear();
                } else {
                    unstored.truncate(unstored.len() - count);
                }
                stored_at = Instant::now();
                let _ = done.send(outcome.map_err(OutboxError::from));
                continue;
            }
            Err(std_mpsc::RecvTimeoutError::Timeout) => {}
            Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                // The writer is gone; it checkpointed what it could (the journal has the rest).
                return;
            }
        }
        if !unstored.is_empty() && stored_at.elapsed() >= LINGER {
            stored_at = Instant::now();
            match put(store, &unstored, cap, false, committed) {
                Ok(()) => unstored.clear(),
                Err(e) => {
                    tracing::error!(error = %e, "telemetry records not yet in the store; retried")
                }
            }
        }
    }
}

/// Puts `records` into the store and wakes the link.
fn put(
    store: &Store,
    records: &[OutboxRecord],
    cap: u64,
    durable: bool,
    committed: &Notify,
) -> Result<(), StoreError> {
    let appended = store.put_outbox(records, cap, durable)?;
    report_dropped(appended.dropped);
    if !records.is_empty() {
        committed.notify_one();
    }
    Ok(())
}

fn report_dropped(dropped: u64) {
    if dropped > 0 {
        tracing::warn!(
            dropped,
            "telemetry outbox over its byte cap: dropped the oldest records"
        );
    }
}
