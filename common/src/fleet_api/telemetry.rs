//! Reading a device's telemetry (`/v1/telemetry`): the query that pages through its records.

use serde::{Deserialize, Serialize};

use crate::UnixMillis;

/// `GET /v1/telemetry/{device}`: without filters, the newest `limit` records; with any of
/// `after`, `sinceMs`, `untilMs`, `module`, `kind`, the matching records oldest first from
/// `after` on (page on with the last `seq` seen). Records come oldest first either way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TelemetryQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<UnixMillis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<UnixMillis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<crate::telemetry::TelemetryKind>,
}

impl TelemetryQuery {
    /// Whether the query only asks for the newest records.
    pub fn is_tail(&self) -> bool {
        self.after.is_none()
            && self.since_ms.is_none()
            && self.until_ms.is_none()
            && self.module.is_none()
            && self.kind.is_none()
    }
}
