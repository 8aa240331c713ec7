//! Where the outbox writer makes records durable: the journal's half being written (the store
//! thread copies its records into the store), or the store itself when the journal cannot take
//! a batch; and when to move on to the journal's other half.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc as std_mpsc;
use std::time::Instant;

use tokio::sync::Notify;

use super::journal::Journal;
use super::record::OutboxRecord;
use super::store_thread::{Checkpointed, StoreWork, store_thread};
use super::{CHECKPOINT_EVERY, OutboxError};
use crate::store::Store;

/// Where the writer makes records durable: the journal, whose records the store thread copies
/// into the store, or, when the journal cannot be written or its halves are full, the store
/// itself (through the store thread, after every record before). When the writer moves on to
/// the journal's other half (at least every CHECKPOINT_EVERY while records arrive, and when a
/// half is full) the store thread checkpoints the records of the half left behind, while new
/// batches go on into the other half; a start after a crash has at most two halves to put back.
pub(super) struct Sink {
    journal: Option<Journal>,
    store: Store,
    /// The `seq` of the next record, once read from the store.
    next_seq: Option<u64>,
    /// Where the journaled records go, in order.
    to_store: std_mpsc::Sender<StoreWork>,
    /// Whether the half not being written may be written again.
    other_half: OtherHalf,
    /// When the half being written got its first frame.
    half_started: Instant,
}

enum OtherHalf {
    /// Its records are durable in the store.
    Free,
    /// Its checkpoint runs.
    Freeing(std_mpsc::Receiver<Checkpointed>),
    /// Its checkpoint failed.
    NotFreed,
}

impl Sink {
    /// Opens the journal and starts the store thread.
    pub(super) fn start(
        store: Store,
        max_bytes: Arc<AtomicU64>,
        committed: Arc<Notify>,
    ) -> Option<Self> {
        let journal = match Journal::open(store.outbox_journal_path()) {
            Ok(journal) => Some(journal),
            Err(e) => {
                tracing::warn!(path = %store.outbox_journal_path().display(), error = %e,
                    "the outbox journal cannot be used; each batch is committed to the store instead (slower)");
                None
            }
        };
        let (to_store, work) = std_mpsc::channel();
        let stored = store.clone();
        let started = std::thread::Builder::new()
            .name("outbox-store".into())
            .spawn(move || store_thread(&stored, &work, &max_bytes, &committed));
        if let Err(e) = started {
            tracing::error!(error = %e, "the telemetry outbox writer could not start");
            return None;
        }
        Some(Self {
            journal,
            store,
            next_seq: None,
            to_store,
            other_half: OtherHalf::Free,
            half_started: Instant::now(),
        })
    }

    pub(super) fn next_seq(&mut self) -> Result<u64, OutboxError> {
        match self.next_seq {
            Some(seq) => Ok(seq),
            None => self.store.next_outbox_seq().map_err(OutboxError::from),
        }
    }

    /// Makes `records` (consecutive `seq`s from [`Sink::next_seq`], at least one) durable.
    pub(super) fn write(&mut self, records: Vec<OutboxRecord>) -> Result<(), OutboxError> {
        let (Some(first), Some(last)) = (
            records.first().map(|r| r.seq),
            records.last().map(|r| r.seq),
        ) else {
            return Ok(());
        };
        if self.journal.as_ref().is_some_and(|j| !j.fits(&records)) {
            self.move_on();
        }
        if let Some(journal) = self.journal.as_mut().filter(|j| j.fits(&records)) {
            let was_empty = journal.is_empty();
            match journal.append(&records) {
                Ok(()) => {
                    if was_empty {
                        self.half_started = Instant::now();
                    }
                    self.next_seq = Some(last + 1);
                    // A store thread that is gone leaves the records to the journal.
                    let _ = self.to_store.send(StoreWork::Journaled(records));
                    return Ok(());
                }
                Err(e) => tracing::warn!(error = %e,
                    "the outbox journal cannot be written; the batch is committed to the store instead"),
            }
        }
        match self.checkpoint(records) {
            Ok(()) => {
                self.next_seq = Some(last + 1);
                Ok(())
            }
            Err(e) => {
                // This batch was refused; its `seq`s go to the next one.
                self.next_seq = Some(first);
                Err(e)
            }
        }
    }

    /// Commits every record so far, and `records`, durably in the store, and waits for it.
    pub(super) fn checkpoint(&mut self, records: Vec<OutboxRecord>) -> Checkpointed {
        let (done, outcome) = std_mpsc::channel();
        self.to_store
            .send(StoreWork::Checkpoint { records, done })
            .map_err(|_| OutboxError::Stopped)?;
        outcome.recv().map_err(|_| OutboxError::Stopped)?
    }

    /// When the writer must act without a new record: the half being written has frames.
    pub(super) fn due(&self) -> Option<Instant> {
        let written = self.journal.as_ref().is_some_and(|j| !j.is_empty());
        written.then_some(self.half_started + CHECKPOINT_EVERY)
    }

    /// Moves on to the other half once CHECKPOINT_EVERY has passed since the half being
    /// written got its first frame, if the other half is free by then.
    pub(super) fn move_on_if_due(&mut self) {
        if let OtherHalf::Freeing(freeing) = &self.other_half {
            self.other_half = match freeing.try_recv() {
                Err(std_mpsc::TryRecvError::Empty) => return,
                Ok(Ok(())) => OtherHalf::Free,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "telemetry records not yet durable in the store; retried");
                    OtherHalf::NotFreed
                }
                Err(std_mpsc::TryRecvError::Disconnected) => OtherHalf::NotFreed,
            };
        }
        if self.due().is_some_and(|due| due <= Instant::now()) {
            self.move_on();
        }
    }

    /// Moves on to the other half of the journal (waiting for its checkpoint, when it runs)
    /// and has the store thread checkpoint the half left behind. Without a free half, the
    /// writer stays where it is (its batches then go to the store when the half is full).
    pub(super) fn move_on(&mut self) {
        if self.journal.as_ref().is_none_or(Journal::is_empty) {
            return;
        }
        // Tried again a CHECKPOINT_EVERY later when the half cannot be left now.
        self.half_started = Instant::now();
        let freed = match std::mem::replace(&mut self.other_half, OtherHalf::NotFreed) {
            OtherHalf::Free => Ok(()),
            OtherHalf::Freeing(freeing) => freeing
                .recv()
                .unwrap_or(Err(OutboxError::Stopped))
                .or_else(|_| self.checkpoint(Vec::new())),
            OtherHalf::NotFreed => self.checkpoint(Vec::new()),
        };
        if let Err(e) = freed {
            tracing::error!(error = %e, "telemetry records not yet durable in the store; retried");
            return;
        }
        let (done, freeing) = std_mpsc::channel();
        let work = StoreWork::Checkpoint {
            records: Vec::new(),
            done,
        };
        self.other_half = OtherHalf::Free;
        if let (Ok(()), Some(journal)) = (self.to_store.send(work), self.journal.as_mut()) {
            journal.switch();
            self.other_half = OtherHalf::Freeing(freeing);
        }
    }
}
