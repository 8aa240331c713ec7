//! The telemetry outbox: every record is durable (in the outbox journal, then the store) before
//! it counts as accepted, and leaves only when the broker has acknowledged it (see `link`).
//!
//! Producers hand records to one writer thread that journals them in batches (group commit):
//! many records cost one fsync, and producers never wait on the network. A store thread copies
//! the journaled records into the store and checkpoints it, off the producers' path (see `Sink`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use edgefleet_common::telemetry::{
    MAX_MESSAGE_BYTES, MAX_MESSAGE_RECORDS, TelemetryEnvelope, TelemetryRecord, telemetry_message,
};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::outbox_journal::Journal;
use crate::store::{OutboxRecord, Store, StoreError};

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

/// Told the record's `seq` once it is durable, or why it was not accepted.
type Ack = oneshot::Sender<Result<u64, OutboxError>>;
/// Acknowledgements with their results, as a relay delivers them.
type Acked = Vec<(Ack, Result<u64, OutboxError>)>;

struct Pending {
    module: String,
    record: TelemetryRecord,
    accepted: Option<Ack>,
    relay: Option<AckRelay>,
}

/// Delivers the acknowledgements of one commit to the runtime waiting for them in one message.
/// Each acknowledgement sent from the writer's thread wakes its waiting task's runtime with a
/// syscall of its own; through a relay, a runtime is woken once per commit and its task there
/// completes the waits on that runtime, where a wake costs no syscall. The scoring API's
/// request threads each have one.
#[derive(Clone)]
pub struct AckRelay(mpsc::UnboundedSender<Acked>);

impl std::fmt::Debug for AckRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckRelay").finish_non_exhaustive()
    }
}

impl AckRelay {
    /// Starts the relay's task on the current runtime (it ends when the last handle is gone).
    pub fn start() -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Acked>();
        tokio::spawn(async move {
            while let Some(acks) = rx.recv().await {
                for (ack, result) in acks {
                    let _ = ack.send(result);
                }
            }
        });
        Self(tx)
    }
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
            .spawn(move || writer(store, device_id, rx, max_bytes, committed));
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
        relay: &AckRelay,
        module: &str,
        record: TelemetryRecord,
    ) -> Result<u64, OutboxError> {
        self.record_with(Some(relay.clone()), module, record).await
    }

    async fn record_with(
        &self,
        relay: Option<AckRelay>,
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

/// The writer, on its own thread: writes (and fsyncs) block it, never an async worker. It
/// runs at a lower priority than the threads answering requests, so a long write does not
/// hold a request back (records wait in the channel instead).
fn writer(
    store: Store,
    device_id: String,
    mut rx: mpsc::Receiver<Message>,
    max_bytes: Arc<AtomicU64>,
    committed: Arc<Notify>,
) {
    if let Err(e) = rustix::process::setpriority_process(None, WRITER_NICE) {
        tracing::debug!(error = %e, "the outbox writer keeps its priority");
    }
    // Only to wait for the next record with a deadline.
    let waiting = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "the telemetry outbox writer could not start");
            return;
        }
    };
    let Some(mut sink) = Sink::start(store, max_bytes, committed) else {
        return;
    };
    let device_id: Arc<str> = device_id.into();
    let mut last_write = Instant::now();
    loop {
        let first = match sink.due() {
            None => rx.blocking_recv(),
            Some(due) => {
                let due = tokio::time::Instant::from_std(due);
                match waiting.block_on(async { tokio::time::timeout_at(due, rx.recv()).await }) {
                    Ok(message) => message,
                    Err(_) => {
                        sink.move_on();
                        continue;
                    }
                }
            }
        };
        let Some(first) = first else {
            // Every producer is gone: what was accepted goes into the store for good.
            if let Err(e) = sink.checkpoint(Vec::new()) {
                tracing::error!(error = %e, "the outbox journal keeps records the store does not have yet; they are put back at the next start");
            }
            return;
        };
        let mut batch = Vec::new();
        let mut flushes = Vec::new();
        let mut next = Some(first);
        loop {
            while let Some(message) = next.take() {
                match message {
                    Message::Record(p) => batch.push(p),
                    Message::Flush(done) => flushes.push(done),
                }
                if batch.len() < MAX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            // Records nobody waits for (answers that do not wait for the disk) are written at
            // most every LINGER: the same records, far fewer fsyncs.
            let waited_for = !flushes.is_empty() || batch.iter().any(|p| p.accepted.is_some());
            let linger = LINGER.saturating_sub(last_write.elapsed());
            if waited_for || linger.is_zero() || batch.len() >= MAX_BATCH {
                break;
            }
            std::thread::sleep(linger);
            next = rx.try_recv().ok();
        }
        if !batch.is_empty() {
            last_write = Instant::now();
            write_batch(&mut sink, &device_id, batch);
        }
        if !flushes.is_empty() {
            if let Err(e) = sink.checkpoint(Vec::new()) {
                tracing::error!(error = %e, "telemetry records not yet in the store; retried");
            }
            for done in flushes {
                let _ = done.send(());
            }
        }
        sink.move_on_if_due();
    }
}

/// Makes a batch durable with consecutive `seq`s and tells its producers.
fn write_batch(sink: &mut Sink, device_id: &Arc<str>, batch: Vec<Pending>) {
    let now = edgefleet_transport::now_ms();
    let (acks, items): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|p| ((p.accepted, p.relay), (p.module, p.record)))
        .unzip();
    let written = sink.next_seq().and_then(|first_seq| {
        let records = (first_seq..)
            .zip(items)
            .map(|(seq, (module, record))| {
                let envelope = TelemetryEnvelope {
                    device_id: device_id.to_string(),
                    module,
                    seq,
                    timestamp_ms: now,
                    record,
                };
                OutboxRecord {
                    seq,
                    accepted_ms: now,
                    // An envelope of serde types always serializes; an empty record would be
                    // refused by the fleet as malformed rather than pass unnoticed.
                    payload: frame(
                        &envelope.module,
                        &serde_json::to_vec(&envelope).unwrap_or_default(),
                    ),
                }
            })
            .collect();
        sink.write(records).map(|()| first_seq)
    });
    match written {
        Ok(first_seq) => acknowledge(acks, |i| Ok(first_seq + i as u64)),
        Err(e) => {
            tracing::error!(error = %e, "telemetry records not accepted");
            acknowledge(acks, |_| Err(e.clone()));
        }
    }
}

/// Where the writer makes records durable: the journal, whose records the store thread copies
/// into the store, or, when the journal cannot be written or its halves are full, the store
/// itself (through the store thread, after every record before). When the writer moves on to
/// the journal's other half (at least every CHECKPOINT_EVERY while records arrive, and when a
/// half is full) the store thread checkpoints the records of the half left behind, while new
/// batches go on into the other half; a start after a crash has at most two halves to put back.
struct Sink {
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

/// The outcome of a checkpoint.
type Checkpointed = Result<(), OutboxError>;

/// Work for the store thread, in the order the records were made durable.
enum StoreWork {
    /// Journaled records, for the store within LINGER (without waiting for the disk).
    Journaled(Vec<OutboxRecord>),
    /// Commit every record so far and `records` (not journaled) durably; then tell `done`.
    /// When the commit fails, `records` are dropped (their producers are told).
    Checkpoint {
        records: Vec<OutboxRecord>,
        done: std_mpsc::Sender<Checkpointed>,
    },
}

impl Sink {
    /// Opens the journal and starts the store thread.
    fn start(store: Store, max_bytes: Arc<AtomicU64>, committed: Arc<Notify>) -> Option<Self> {
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

    fn next_seq(&mut self) -> Result<u64, OutboxError> {
        match self.next_seq {
            Some(seq) => Ok(seq),
            None => self.store.next_outbox_seq().map_err(OutboxError::from),
        }
    }

    /// Makes `records` (consecutive `seq`s from [`Sink::next_seq`], at least one) durable.
    fn write(&mut self, records: Vec<OutboxRecord>) -> Result<(), OutboxError> {
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
    fn checkpoint(&mut self, records: Vec<OutboxRecord>) -> Checkpointed {
        let (done, outcome) = std_mpsc::channel();
        self.to_store
            .send(StoreWork::Checkpoint { records, done })
            .map_err(|_| OutboxError::Stopped)?;
        outcome.recv().map_err(|_| OutboxError::Stopped)?
    }

    /// When the writer must act without a new record: the half being written has frames.
    fn due(&self) -> Option<Instant> {
        let written = self.journal.as_ref().is_some_and(|j| !j.is_empty());
        written.then_some(self.half_started + CHECKPOINT_EVERY)
    }

    /// Moves on to the other half once CHECKPOINT_EVERY has passed since the half being
    /// written got its first frame, if the other half is free by then.
    fn move_on_if_due(&mut self) {
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
    fn move_on(&mut self) {
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

/// The store thread: copies journaled records into the store at most every LINGER without
/// waiting for the disk (the link reads them there), and checkpoints when told to.
fn store_thread(
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

/// Tells each waiting producer of a batch its result (`result(i)` for the batch's `i`th record):
/// directly, or in one message per relay.
fn acknowledge(
    acks: Vec<(Option<Ack>, Option<AckRelay>)>,
    result: impl Fn(usize) -> Result<u64, OutboxError>,
) {
    let mut relayed: Vec<(AckRelay, Acked)> = Vec::new();
    for (i, (ack, relay)) in acks.into_iter().enumerate() {
        let Some(ack) = ack else { continue };
        match relay {
            None => {
                let _ = ack.send(result(i));
            }
            Some(relay) => match relayed.iter_mut().find(|(r, _)| r.0.same_channel(&relay.0)) {
                Some((_, acks)) => acks.push((ack, result(i))),
                None => relayed.push((relay, vec![(ack, result(i))])),
            },
        }
    }
    for (relay, acks) in relayed {
        // A relay whose runtime is gone drops the acknowledgements: its waiters see `Stopped`.
        let _ = relay.0.send(acks);
    }
}

/// An outbox payload: the module name (for the topic) and the envelope's JSON.
pub fn frame(module: &str, json: &[u8]) -> Vec<u8> {
    let name = module.as_bytes();
    let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(2 + name.len() + json.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&name[..len as usize]);
    out.extend_from_slice(json);
    out
}

/// The module name and the envelope's JSON of an outbox payload.
pub fn unframe(payload: &[u8]) -> Option<(&str, &[u8])> {
    let len = u16::from_be_bytes(payload.get(..2)?.try_into().ok()?) as usize;
    let name = std::str::from_utf8(payload.get(2..2 + len)?).ok()?;
    Some((name, payload.get(2 + len..)?))
}

/// One telemetry message to publish: consecutive outbox records of one module.
#[derive(Debug, PartialEq, Eq)]
pub struct TelemetryMessage {
    pub module: String,
    /// The highest `seq` it carries.
    pub last_seq: u64,
    pub payload: Vec<u8>,
}

/// Packs outbox records (in `seq` order) into at most `max_messages` telemetry messages of
/// consecutive records of one module, each within [`MAX_MESSAGE_RECORDS`] and
/// [`MAX_MESSAGE_BYTES`]. Also returns the highest `seq` it consumed, counting records that
/// are not valid outbox payloads (skipped: they can never be sent).
pub fn pack(records: &[OutboxRecord], max_messages: usize) -> (Vec<TelemetryMessage>, u64) {
    let mut messages = Vec::new();
    let mut through = 0;
    let mut current: Option<(&str, u64, Vec<&[u8]>, usize)> = None;
    for record in records {
        let Some((module, json)) = unframe(&record.payload) else {
            through = record.seq;
            continue;
        };
        let fits = current.as_ref().is_some_and(|(m, _, jsons, bytes)| {
            *m == module
                && jsons.len() < MAX_MESSAGE_RECORDS
                && bytes + json.len() <= MAX_MESSAGE_BYTES
        });
        if !fits {
            if let Some(done) = current.take() {
                messages.push(finish(done));
            }
            if messages.len() == max_messages {
                return (messages, through);
            }
            current = Some((module, 0, Vec::new(), 0));
        }
        if let Some((_, last_seq, jsons, bytes)) = current.as_mut() {
            *last_seq = record.seq;
            jsons.push(json);
            *bytes += json.len();
        }
        through = record.seq;
    }
    messages.extend(current.map(finish));
    (messages, through)
}

fn finish((module, last_seq, jsons, _): (&str, u64, Vec<&[u8]>, usize)) -> TelemetryMessage {
    TelemetryMessage {
        module: module.to_owned(),
        last_seq,
        payload: telemetry_message(jsons),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_common::telemetry::EventRecord;

    fn event(error: &str) -> TelemetryRecord {
        TelemetryRecord::Event(EventRecord {
            source: None,
            error: error.to_owned(),
        })
    }

    #[tokio::test]
    async fn records_get_consecutive_seqs_and_reach_the_store_in_order_across_a_restart() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("agent.redb");
        let store = Store::open(&path).expect("open");
        let outbox = Outbox::start(store.clone(), "device".into(), u64::MAX);
        let relay = AckRelay::start();
        let committed = outbox.committed.clone();
        assert_eq!(outbox.record("m", event("a")).await.expect("a"), 1);
        assert_eq!(
            outbox
                .record_through(&relay, "m", event("b"))
                .await
                .expect("b"),
            2
        );
        outbox.submit("n", event("c")).expect("c");
        // Acknowledged records reach the store (where the link reads them) without a flush.
        tokio::time::timeout(Duration::from_secs(10), committed.notified())
            .await
            .expect("the store has the acknowledged records");
        outbox.flush().await;
        drop(outbox);
        drop(store);

        // A new outbox on the reopened store (once the writer has let it go) continues the
        // sequence.
        let store = Store::open_waiting(&path, Duration::from_secs(10)).expect("reopen");
        let outbox = Outbox::start(store.clone(), "device".into(), u64::MAX);
        assert_eq!(outbox.record("m", event("d")).await.expect("d"), 4);
        outbox.flush().await;
        let records = store.outbox_after(0, 10).expect("read");
        let summary: Vec<_> = records
            .iter()
            .map(|r| {
                let (module, json) = unframe(&r.payload).expect("framed");
                let envelope: serde_json::Value = serde_json::from_slice(json).expect("json");
                (
                    r.seq,
                    module.to_owned(),
                    envelope["seq"].as_u64(),
                    envelope["body"]["error"].clone(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (1, "m".to_owned(), Some(1), "a".into()),
                (2, "m".to_owned(), Some(2), "b".into()),
                (3, "n".to_owned(), Some(3), "c".into()),
                (4, "m".to_owned(), Some(4), "d".into()),
            ]
        );
    }

    #[tokio::test]
    async fn records_that_fill_the_journals_halves_or_do_not_fit_one_reach_the_store_in_order() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(&dir.path().join("agent.redb")).expect("open");
        let outbox = Outbox::start(store.clone(), "device".into(), u64::MAX);
        // 40 records of 512 KiB fill each 8 MiB half more than once; the 9 MiB one fits no
        // half and is committed to the store instead.
        let sizes: Vec<usize> = (0..40)
            .map(|i| if i == 25 { 9 << 20 } else { 512 << 10 })
            .collect();
        for (i, size) in sizes.iter().enumerate() {
            let seq = outbox
                .record("m", event(&"x".repeat(*size)))
                .await
                .expect("recorded");
            assert_eq!(seq, i as u64 + 1);
        }
        outbox.flush().await;
        let stored: Vec<_> = store
            .outbox_after(0, 100)
            .expect("read")
            .iter()
            .map(|r| {
                let (_, json) = unframe(&r.payload).expect("framed");
                let envelope: serde_json::Value = serde_json::from_slice(json).expect("json");
                (
                    r.seq,
                    envelope["body"]["error"].as_str().map_or(0, str::len),
                )
            })
            .collect();
        let expected: Vec<_> = (1..).zip(sizes).collect();
        assert_eq!(stored, expected);
    }

    #[test]
    fn frames_round_trip() {
        let f = frame("diabetes", b"{\"a\":1}");
        assert_eq!(unframe(&f), Some(("diabetes", &b"{\"a\":1}"[..])));
        assert_eq!(unframe(&[0]), None);
    }

    fn record(seq: u64, module: &str, json: &str) -> OutboxRecord {
        OutboxRecord {
            seq,
            accepted_ms: 0,
            payload: frame(module, json.as_bytes()),
        }
    }

    #[test]
    fn consecutive_records_of_a_module_share_a_message() {
        let mut records = vec![
            record(1, "a", "1"),
            record(2, "a", "2"),
            OutboxRecord {
                seq: 3,
                accepted_ms: 0,
                payload: vec![9],
            },
            record(4, "b", "4"),
            record(5, "a", "5"),
        ];
        let (messages, through) = pack(&records, 10);
        let summary: Vec<_> = messages
            .iter()
            .map(|m| {
                (
                    m.module.as_str(),
                    m.last_seq,
                    String::from_utf8_lossy(&m.payload).into_owned(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("a", 2, "[1,2]".to_owned()),
                ("b", 4, "[4]".to_owned()),
                ("a", 5, "[5]".to_owned())
            ]
        );
        assert_eq!(through, 5);
        // A message limit stops before the next message begins.
        let (messages, through) = pack(&records, 2);
        assert_eq!(messages.len(), 2);
        assert_eq!(through, 4);
        // A full message starts the next one.
        records = (1..=MAX_MESSAGE_RECORDS as u64 + 1)
            .map(|s| record(s, "a", "0"))
            .collect();
        let (messages, _) = pack(&records, 10);
        assert_eq!(
            messages.iter().map(|m| m.last_seq).collect::<Vec<_>>(),
            [MAX_MESSAGE_RECORDS as u64, MAX_MESSAGE_RECORDS as u64 + 1]
        );
        // A trailing record that cannot be sent is consumed.
        let (messages, through) = pack(
            &[OutboxRecord {
                seq: 9,
                accepted_ms: 0,
                payload: vec![],
            }],
            10,
        );
        assert!(messages.is_empty());
        assert_eq!(through, 9);
    }
}
