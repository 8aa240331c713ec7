//! The outbox's writer thread: takes records from producers in batches (group commit: many
//! records, one flush), gives them consecutive `seq`s and makes each batch durable through the
//! [`Sink`], then tells each waiting producer its `seq`.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use edgefleet_common::telemetry::TelemetryEnvelope;
use tokio::sync::{Notify, mpsc};

use super::acceptance::tell_producers;
use super::record::{OutboxRecord, frame};
use super::sink::Sink;
use super::{LINGER, MAX_BATCH, Message, Pending, WRITER_NICE};
use crate::store::Store;

/// The writer, on its own thread: writes (and fsyncs) block it, never an async worker. It
/// runs at a lower priority than the threads answering requests, so a long write does not
/// hold a request back (records wait in the channel instead).
pub(super) fn writer(
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
        Ok(first_seq) => tell_producers(acks, |i| Ok(first_seq + i as u64)),
        Err(e) => {
            tracing::error!(error = %e, "telemetry records not accepted");
            tell_producers(acks, |_| Err(e.clone()));
        }
    }
}
