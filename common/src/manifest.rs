//! The per-device deployment manifest: what one device should run, rendered and signed by the
//! fleet, verified and applied by the agent. Field names follow Azure IoT Edge's `$edgeAgent`
//! where a concept exists there (registryCredentials, restartPolicy, status).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::sealing::SealedSecret;

/// The manifest schema this build reads and writes. A manifest with another value is refused
/// (status 400) instead of being half-understood.
pub const MANIFEST_SCHEMA_VERSION: &str = "1";

/// Everything one device should run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    /// Always [`MANIFEST_SCHEMA_VERSION`].
    pub schema_version: String,
    /// The device this manifest was rendered for; an agent refuses a manifest for another id.
    pub device_id: String,
    /// Increases every time the rendered content for this device changes; an agent never
    /// applies a version lower than the one it has applied.
    pub version: u64,
    /// Registry credentials by name. Passwords are sealed to the device's public key.
    #[serde(default)]
    pub registry_credentials: BTreeMap<String, RegistryCredential>,
    /// Modules by name (the name is unique on the device and appears in topics and labels).
    #[serde(default)]
    pub modules: BTreeMap<String, Module>,
    /// How telemetry is buffered while the uplink is down.
    #[serde(default)]
    pub telemetry: TelemetrySettings,
}

/// Credentials for one container registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistryCredential {
    /// Registry host and optional port, as it appears in image references (`127.0.0.1:5000`).
    pub address: String,
    pub username: String,
    /// The password, sealed to the device's X25519 key; only that device can read it.
    pub password: SealedSecret,
}

/// One module: a model served in-process by the agent, or a container on the Docker engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Module {
    pub kind: ModuleKind,
    /// Image reference pinned by digest: `registry/repository@sha256:...`
    /// (a tag may precede the digest for readability).
    pub image: String,
    #[serde(default)]
    pub status: DesiredStatus,
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// Environment for container modules.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Docker create options for container modules (a documented subset; the agent rejects
    /// options it does not know rather than dropping them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_options: Option<serde_json::Value>,
    /// How a model module is served; absent for container modules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<ModelServing>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ModuleKind {
    /// An ONNX model module image, loaded in-process with ONNX Runtime.
    Model,
    /// A container image run on the local Docker engine.
    Container,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DesiredStatus {
    #[default]
    Running,
    Stopped,
}

/// When the agent restarts a module that stopped, as in Azure IoT Edge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    Never,
    OnFailure,
    OnUnhealthy,
    #[default]
    Always,
}

/// Local serving of a model module.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelServing {
    /// TCP port of the module's scoring API (Azure ML inference server compatible).
    pub http_port: u16,
    /// Address the scoring API binds to.
    #[serde(default = "default_bind_address")]
    pub bind_address: String,
    /// SHA-256 (hex) of the accepted `Authorization: Bearer` keys. Empty: no key required.
    /// Only digests travel to the device, so a leaked manifest leaks no key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auth_key_sha256: Vec<String>,
    /// Score every message published on the module's MQTT input topic.
    #[serde(default = "default_true")]
    pub mqtt_input: bool,
    /// Share of scored requests whose inputs and outputs are sent as collected-data records,
    /// in parts per million (0 = none, 1000000 = all). An integer keeps the signed bytes exact.
    #[serde(default)]
    pub data_collection_ppm: u32,
}

fn default_bind_address() -> String {
    "127.0.0.1".to_owned()
}

fn default_true() -> bool {
    true
}

/// Telemetry buffering on the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TelemetrySettings {
    /// How often the agent publishes its metrics.
    pub interval_seconds: u32,
    /// Byte cap of the on-disk outbox; when full, the oldest records are dropped and counted.
    pub outbox_max_bytes: u64,
    /// Records older than this are dropped and counted.
    pub ttl_seconds: u64,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            interval_seconds: 60,
            outbox_max_bytes: 512 * 1024 * 1024,
            ttl_seconds: 7 * 24 * 3600,
        }
    }
}

impl Manifest {
    /// An empty manifest for `device_id` at `version`.
    pub fn new(device_id: impl Into<String>, version: u64) -> Self {
        Self {
            schema_version: MANIFEST_SCHEMA_VERSION.to_owned(),
            device_id: device_id.into(),
            version,
            registry_credentials: BTreeMap::new(),
            modules: BTreeMap::new(),
            telemetry: TelemetrySettings::default(),
        }
    }

    /// The credentials whose address matches the registry of `image`, if any.
    pub fn credential_for_image(&self, image: &str) -> Option<&RegistryCredential> {
        let registry = image.split('/').next()?;
        self.registry_credentials
            .values()
            .find(|c| c.address == registry)
    }
}
