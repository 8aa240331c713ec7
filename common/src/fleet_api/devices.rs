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
    /// The broker refuses the device's login from now on (the embedded broker, or mosquitto
    /// with dynamic security, which also disconnected it). With another external broker the
    /// administrator removes the device's user there.
    pub mqtt_login_revoked: bool,
}

/// `POST /v1/devices/{id}/rotate-credentials`: a new MQTT password on its way to the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsRotation {
    pub device: String,
    /// The manifest carrying the new password, sealed to the device's key. The broker switches
    /// to the new password once the device reports this version (or a later one), and the
    /// old password is refused from then on.
    pub manifest_version: u64,
    /// Whether the broker's login is changed by the fleet (embedded broker, mosquitto with
    /// dynamic security); otherwise the administrator sets the new password at the broker.
    pub broker_managed: bool,
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
    /// The manifest version carrying a new MQTT password the device has not confirmed yet
    /// (`edgefleet device rotate-credentials`); absent when no rotation is under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt_rotation_version: Option<u64>,
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
