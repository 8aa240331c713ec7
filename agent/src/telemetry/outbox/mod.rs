//! The telemetry outbox: every record is durable (in the outbox [`journal`], then the store)
//! before it counts as accepted, and leaves only when the fleet has acknowledged storing it
//! (its `TelemetryAck`; see `telemetry::delivery`), not when the broker has it.
//!
//! Producers hand records to one [`writer`] thread that makes them durable in batches (group
//! commit: many records cost one flush), and producers never wait on the network; each is told
//! its `seq` ([`acceptance`]). The [`sink`] decides where a batch goes (the journal's half
//! being written, or the store); the [`store_thread`] copies journaled records into the store
//! and checkpoints it, off the producers' path. A [`record`] is framed with its module's name;
//! the link publishes records [`packing`] them into messages.

mod acceptance;
pub(crate) mod journal;
mod packing;
pub(crate) mod record;
mod sink;
mod store_thread;
#[cfg(test)]
mod tests;
mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use edgefleet_common::telemetry::TelemetryRecord;
use tokio::sync::{Notify, mpsc, oneshot};

pub use acceptance::AcceptanceRelay;
use acceptance::Accepted;
pub use packing::{PackedMessage, pack};
pub use record::{OutboxRecord, frame, unframe};

use crate::store::{Store, StoreError};

/// Most records the writer writes in one batch.
const MAX_BATCH: usize = 4096;
/// Records waiting for the writer before producers are told to retry.
const QUEUE: usize = 65_536;
/// The writer thread's nice value (the agent's other threads keep 0).
const WRITER_NICE: i32 = 10;
/// Longest time a record nobody waits for stays in memory before its commit starts.
const LINGER: Duration = Duration::from_millis(5);
/// Longest time between checkpoints (durable store commits) while records arrive.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, thiserror::Error)]
pub enum OutboxError {
    #[error(
        "telemetry outbox is full in memory (the disk is too slow or stalled); record not accepted"
    )]
    Busy,
    #[error("telemetry outbox stopped")]
    Stopped,
    /// The batch the record was in could not be committed (every producer of the batch gets
    /// the same error).
    #[error(transparent)]
    Store(Arc<StoreError>),
}

impl From<StoreError> for OutboxError {
    fn from(e: StoreError) -> Self {
        Self::Store(Arc::new(e))
    }
}

struct Pending {
    module: String,
    record: TelemetryRecord,
    accepted: Option<Accepted>,
    relay: Option<AcceptanceRelay>,
}

/// What the writer receives: a record, or a request to be told once everything before it is
/// committed.
enum Message {
    Record(Pending),
    Flush(oneshot::Sender<()>),
}

/// A handle to the outbox; cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Message>,
    max_bytes: Arc<AtomicU64>,
    /// Woken after each commit so the link publishes new records at once.
    pub committed: Arc<Notify>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").finish_non_exhaustive()
    }
}

impl Outbox {
    /// Starts the writer task.
    pub fn start(store: Store, device_id: String, max_bytes: u64) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let outbox = Self {
            tx,
            max_bytes: Arc::new(AtomicU64::new(max_bytes)),
            committed: Arc::new(Notify::new()),
        };
        let (max_bytes, committed) = (outbox.max_bytes.clone(), outbox.committed.clone());
        let started = std::thread::Builder::new()
            .name("outbox-writer".into())
            .spawn(move || writer::writer(store, device_id, rx, max_bytes, committed));
        if let Err(e) = started {
            // Every record is then refused (the channel is closed), never silently dropped.
            tracing::error!(error = %e, "the telemetry outbox writer could not start");
        }
        outbox
    }

    /// An outbox whose writer has stopped, as one whose thread could not start: every record
    /// is refused.
    #[cfg(test)]
    pub fn stopped() -> Self {
        let (tx, _) = mpsc::channel(1);
        Self {
            tx,
            max_bytes: Arc::new(AtomicU64::new(0)),
            committed: Arc::new(Notify::new()),
        }
    }

    pub fn set_max_bytes(&self, max_bytes: u64) {
        self.max_bytes.store(max_bytes, Ordering::Relaxed);
    }

    /// The byte cap the outbox may grow to.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes.load(Ordering::Relaxed)
    }

    /// Records a telemetry record and returns its `seq` once it is durable.
    pub async fn record(&self, module: &str, record: TelemetryRecord) -> Result<u64, OutboxError> {
        self.record_with(None, module, record).await
    }

    /// [`Outbox::record`], told through `relay` (which must run on the caller's runtime).
    pub async fn record_through(
        &self,
        relay: &AcceptanceRelay,
        module: &str,
        record: TelemetryRecord,
    ) -> Result<u64, OutboxError> {
        self.record_with(Some(relay.clone()), module, record).await
    }

    async fn record_with(
        &self,
        relay: Option<AcceptanceRelay>,
        module: &str,
        record: TelemetryRecord,
    ) -> Result<u64, OutboxError> {
        let (accepted, rx) = oneshot::channel();
        self.tx
            .send(Message::Record(Pending {
                module: module.to_owned(),
                record,
                accepted: Some(accepted),
                relay,
            }))
            .await
            .map_err(|_| OutboxError::Stopped)?;
        rx.await.map_err(|_| OutboxError::Stopped)?
    }

    /// Waits until every record handed over before this call is committed (or refused).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Queues a record without waiting for it to be durable (for request handlers that must
    /// not wait on the disk). Fails at once when the writer is saturated.
    pub fn submit(&self, module: &str, record: TelemetryRecord) -> Result<(), OutboxError> {
        self.tx
            .try_send(Message::Record(Pending {
                module: module.to_owned(),
                record,
                accepted: None,
                relay: None,
            }))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => OutboxError::Busy,
                mpsc::error::TrySendError::Closed(_) => OutboxError::Stopped,
            })
    }
}
