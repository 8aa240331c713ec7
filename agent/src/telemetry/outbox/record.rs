//! One outbox record as the journal and the store keep it: its `seq`, when it was accepted, and
//! its payload (the module's name, for the topic, framed before the envelope's JSON).

use edgefleet_common::UnixMillis;

/// One telemetry record waiting for the fleet's acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRecord {
    pub seq: u64,
    pub accepted_ms: UnixMillis,
    pub payload: Vec<u8>,
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
