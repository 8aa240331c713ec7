//! The telemetry outbox: every record is committed to the store (fsync'd) before it counts as
//! accepted, and leaves only when the broker has acknowledged it (see `link`).
//!
//! Producers hand records to one writer task that commits them in batches (group commit):
//! many records cost one fsync, and producers never wait on the network.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use edgefleet_common::telemetry::{
    MAX_MESSAGE_BYTES, MAX_MESSAGE_RECORDS, TelemetryEnvelope, TelemetryRecord, telemetry_message,
};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::store::{NewRecord, OutboxRecord, Store, StoreError};

/// Most records the writer commits in one transaction.
const MAX_BATCH: usize = 4096;
/// Records waiting for the writer before producers are told to retry.
const QUEUE: usize = 65_536;
/// The writer thread's nice value (the agent's other threads keep 0).
const WRITER_NICE: i32 = 10;
/// Longest time a record nobody waits for stays in memory before its commit starts.
const LINGER: Duration = Duration::from_millis(5);

#[derive(Debug, thiserror::Error)]
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

/// The writer, on its own thread: commits (and fsyncs) block it, never an async worker. It
/// runs at a lower priority than the threads answering requests, so a long commit does not
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
    let device_id: Arc<str> = device_id.into();
    let mut last_commit = Instant::now();
    while let Some(first) = rx.blocking_recv() {
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
            // Records nobody waits for (answers that do not wait for the disk) are committed
            // at most every LINGER: the same records, far fewer fsyncs.
            let waited_for = !flushes.is_empty() || batch.iter().any(|p| p.accepted.is_some());
            let linger = LINGER.saturating_sub(last_commit.elapsed());
            if waited_for || linger.is_zero() || batch.len() >= MAX_BATCH {
                break;
            }
            std::thread::sleep(linger);
            next = rx.try_recv().ok();
        }
        if batch.is_empty() {
            for done in flushes {
                let _ = done.send(());
            }
            continue;
        }
        let now = edgefleet_transport::now_ms();
        let mut acks = Vec::with_capacity(batch.len());
        let mut records: Vec<NewRecord> = Vec::with_capacity(batch.len());
        for p in batch {
            acks.push((p.accepted, p.relay));
            let device_id = device_id.clone();
            records.push(Box::new(move |seq| {
                let envelope = TelemetryEnvelope {
                    device_id: device_id.to_string(),
                    module: p.module,
                    seq,
                    timestamp_ms: now,
                    record: p.record,
                };
                // An envelope of serde types always serializes; an empty record would be
                // refused by the fleet as malformed rather than pass unnoticed.
                frame(
                    &envelope.module,
                    &serde_json::to_vec(&envelope).unwrap_or_default(),
                )
            }));
        }
        let cap = max_bytes.load(Ordering::Relaxed);
        last_commit = Instant::now();
        match store.append_outbox(now, records, cap).map_err(Arc::new) {
            Ok(appended) => {
                if appended.dropped > 0 {
                    tracing::warn!(
                        dropped = appended.dropped,
                        "telemetry outbox over its byte cap: dropped the oldest records"
                    );
                }
                acknowledge(acks, |i| Ok(appended.first_seq + i as u64));
                committed.notify_one();
            }
            Err(e) => {
                tracing::error!(error = %e, "telemetry records not accepted");
                acknowledge(acks, |_| Err(OutboxError::Store(e.clone())));
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
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
