//! End-to-end delivery of telemetry: a record leaves a device's outbox only once the fleet has
//! stored it. MQTT's PubAck says only that the broker has a record; the fleet says it has
//! committed one with a [`TelemetryAck`] on the device's `acks` topic, and a device asks for
//! its acknowledgement and its desired manifest after every connect with a [`SyncRequest`],
//! so neither depends on the broker keeping retained messages or sessions.
//!
//! Both travel authenticated (`authenticity`): an acknowledgement is signed by the fleet and
//! names the device incarnation it is for, and the answer to a sync request echoes the
//! request's nonce, so neither a forged nor a replayed one can make a device drop records.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The fleet has stored every record of the device up to `committed_seq` (or knows the device
/// dropped it): the device may forget them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TelemetryAck {
    pub committed_seq: u64,
    /// The answer to a [`SyncRequest`]: the fleet is listening and has stored exactly up to
    /// `committed_seq`, so the device sends everything after it again now (what it sent
    /// before may have reached the broker before the fleet subscribed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub synced: bool,
    /// The device incarnation whose `seq`s this counts: a device ignores acknowledgements
    /// of another incarnation (an earlier life of its data directory).
    pub incarnation: String,
    /// The nonce of the [`SyncRequest`] this answers (with `synced`): a device takes a sync
    /// answer only for the request it sent last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// A device asks for its desired manifest and its telemetry acknowledgement (sent after every
/// connect; the fleet answers on the `desired` and `acks` topics).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncRequest {
    /// The manifest version the device has applied, if any.
    #[serde(default)]
    pub applied_version: Option<u64>,
    /// Chosen afresh by the device on every connect; the fleet's answer carries it back.
    pub nonce: String,
}
