//! The state a device reports (retained, on its reported topic) on every change and reconnect.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::UnixMillis;
use crate::manifest::ModuleKind;

pub const REPORTED_SCHEMA_VERSION: &str = "1";

/// Outcome of the last manifest the device received, as an HTTP-like code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(into = "u16", try_from = "u16")]
#[schemars(with = "u16")]
pub enum ApplyStatus {
    /// 200: applied; every module is in its desired state.
    Applied,
    /// 400: the manifest could not be read (schema version, missing or bad field).
    Invalid,
    /// 412: the signature did not verify against the configured fleet key.
    SignatureInvalid,
    /// 417: a pull or an activation (load, canary) failed; the previous modules keep running.
    ActivationFailed,
    /// 500: the agent itself failed.
    AgentError,
}

impl From<ApplyStatus> for u16 {
    fn from(s: ApplyStatus) -> u16 {
        match s {
            ApplyStatus::Applied => 200,
            ApplyStatus::Invalid => 400,
            ApplyStatus::SignatureInvalid => 412,
            ApplyStatus::ActivationFailed => 417,
            ApplyStatus::AgentError => 500,
        }
    }
}

/// A status code that is not one of [`ApplyStatus`]'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown status code {0} (known: 200, 400, 412, 417, 500)")]
pub struct UnknownStatusCode(pub u16);

impl TryFrom<u16> for ApplyStatus {
    type Error = UnknownStatusCode;
    fn try_from(code: u16) -> Result<Self, UnknownStatusCode> {
        Ok(match code {
            200 => Self::Applied,
            400 => Self::Invalid,
            412 => Self::SignatureInvalid,
            417 => Self::ActivationFailed,
            500 => Self::AgentError,
            other => return Err(UnknownStatusCode(other)),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReportedState {
    pub schema_version: String,
    pub device_id: String,
    pub agent_version: String,
    /// Version of the manifest currently applied (absent before the first one).
    pub applied_version: Option<u64>,
    /// What happened to the last manifest received (it may be newer than the applied one).
    pub last_desired: Option<DesiredOutcome>,
    pub modules: BTreeMap<String, ModuleState>,
    pub outbox: OutboxState,
    /// When the device produced this report.
    pub reported_at_ms: UnixMillis,
    /// Since when the fleet has not answered the device's request for its desired state
    /// (absent while it answers): the device may be running an out-of-date manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet_silent_since_ms: Option<UnixMillis>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DesiredOutcome {
    pub version: Option<u64>,
    pub status: ApplyStatus,
    pub message: String,
    /// Where the manifest came from.
    #[serde(default)]
    pub source: ManifestSource,
}

/// Where a device got a manifest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ManifestSource {
    /// From the fleet, over MQTT.
    #[default]
    Fleet,
    /// From an offline bundle (`edgefleet-agent bundle import`, or the drop directory).
    Bundle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RuntimeStatus {
    Pulling,
    Running,
    Stopped,
    Backoff,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModuleState {
    pub kind: ModuleKind,
    pub runtime_status: RuntimeStatus,
    /// The image reference the module runs.
    pub image: String,
    /// Manifest digest of the running image.
    pub image_digest: Option<String>,
    pub restart_count: u32,
    pub exit_code: Option<i64>,
    pub last_start_ms: Option<UnixMillis>,
    pub last_error: Option<String>,
    /// What runs otherwise than the manifest asked, and why (an execution provider the
    /// device's ONNX Runtime lacks, say).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Inference counters of a model module.
    pub inference: Option<InferenceStats>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InferenceStats {
    pub count: u64,
    pub errors: u64,
    pub latency_p50_us: u64,
    pub latency_p99_us: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutboxState {
    /// Records accepted but not yet acknowledged by the broker.
    pub depth: u64,
    pub bytes: u64,
    /// Records dropped by the byte cap or the TTL since the device started counting.
    pub dropped: u64,
    /// The `seq` the next record will get.
    #[serde(default)]
    pub next_seq: u64,
    /// The oldest record the device still holds. Records before it that the fleet does not
    /// have were dropped (and counted in `dropped`): the fleet acknowledges past them.
    #[serde(default)]
    pub oldest_seq: Option<u64>,
}
