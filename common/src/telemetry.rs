//! The telemetry envelope: every record a device sends, from inference results to metrics.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::UnixMillis;

/// One telemetry record. `seq` increases strictly per device across restarts, so the fleet
/// detects both loss (a gap) and duplicates (a repeat after a redelivery).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TelemetryEnvelope {
    pub device_id: String,
    pub module: String,
    pub seq: u64,
    pub timestamp_ms: UnixMillis,
    pub kind: TelemetryKind,
    pub body: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TelemetryKind {
    /// The result of one scoring request (HTTP or MQTT input).
    Inference,
    /// A periodic measurement (latency, counters, resources).
    Metric,
    /// Something that happened (activation, rollback, dropped records).
    Event,
    /// Sampled inputs and outputs for model monitoring.
    CollectedData,
}
