//! Devices (`/v1/devices`, `/v1/device-imports`): adding, importing and removing them, how the
//! API shows one, and commands sent to one of its modules.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::UnixMillis;
use crate::commands::DeviceCommand;
use crate::reported::ReportedState;

/// `PUT /v1/devices/{id}`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRequest {
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The device's age X25519 recipient (`edgefleet-agent init` prints it).
    pub public_key: String,
}

/// One device of `POST /v1/device-imports` (one line of `edgefleet device import`'s file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceImport {
    pub id: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The device's age X25519 recipient (`edgefleet-agent init` prints it).
    pub public_key: String,
}

/// What `POST /v1/device-imports` did: every device was added or updated in one change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DevicesImported {
    pub added: usize,
    pub updated: usize,
    /// Devices whose manifest changed (a deployment targets them now).
    pub manifests_changed: usize,
}

/// `DELETE /v1/devices/{id}`: what removing a device did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRemoved {
    pub removed: String,
    /// The version of the empty manifest published (retained) to the device, which stops and
    /// removes its modules; absent when the device never had a manifest.
    pub retraction_version: Option<u64>,
    /// The fleet's embedded broker refuses the device's login from now on. With an external
    /// broker the administrator removes the device's user there.
    pub mqtt_login_revoked: bool,
}

/// A device as the API shows it (`GET /v1/devices`, `GET /v1/devices/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceView {
    pub id: String,
    pub tags: BTreeMap<String, String>,
    pub public_key: String,
    /// The version of the manifest rendered for it, if any.
    pub manifest_version: Option<u64>,
    pub last_seen_ms: Option<UnixMillis>,
    /// Not heard from for longer than the fleet's staleness limit.
    pub stale: bool,
    /// What the device last reported.
    pub reported: Option<ReportedState>,
}

/// `POST /v1/devices/{id}/commands`: a command for one module of the device; the answer is
/// the device's [`crate::commands::CommandResult`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleCommandRequest {
    pub module: String,
    #[serde(flatten)]
    pub command: DeviceCommand,
}
