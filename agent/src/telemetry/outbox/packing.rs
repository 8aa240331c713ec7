//! Packing outbox records into the messages the link publishes: consecutive records of one
//! module per message, within the message limits the fleet accepts.

use edgefleet_common::telemetry::{MAX_MESSAGE_BYTES, MAX_MESSAGE_RECORDS, telemetry_message};

use super::record::{OutboxRecord, unframe};

/// One telemetry message to publish: consecutive outbox records of one module.
#[derive(Debug, PartialEq, Eq)]
pub struct PackedMessage {
    pub module: String,
    /// The highest `seq` it carries.
    pub last_seq: u64,
    pub payload: Vec<u8>,
}

/// Packs outbox records (in `seq` order) into at most `max_messages` telemetry messages of
/// consecutive records of one module, each within [`MAX_MESSAGE_RECORDS`] and
/// [`MAX_MESSAGE_BYTES`]. Also returns the highest `seq` it consumed, counting records that
/// are not valid outbox payloads (skipped: they can never be sent).
pub fn pack(records: &[OutboxRecord], max_messages: usize) -> (Vec<PackedMessage>, u64) {
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

fn finish((module, last_seq, jsons, _): (&str, u64, Vec<&[u8]>, usize)) -> PackedMessage {
    PackedMessage {
        module: module.to_owned(),
        last_seq,
        payload: telemetry_message(jsons),
    }
}
