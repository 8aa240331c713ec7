//! The per-device deployment manifest: what one device should run, rendered and signed by the
//! fleet, verified and applied by the agent. Field names follow Azure IoT Edge's `$edgeAgent`
//! where a concept exists there (registryCredentials, restartPolicy, status).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::sealing::SealedSecret;

/// The manifest schema this build reads and writes. A manifest with another value is refused
/// (status 400) instead of being half-understood.
pub const MANIFEST_SCHEMA_VERSION: &str = "2";

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
    /// The device's MQTT password, sealed to its X25519 key, once the fleet has rotated it
    /// (`edgefleet device rotate-credentials`); absent before the first rotation. The agent
    /// keeps it and connects with it, falling back to its configured password when the broker
    /// refuses it (the broker switches only after the device confirmed this manifest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt_password: Option<SealedSecret>,
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
/// On the wire the variant is the member `kind` (`"model"` or `"container"`), and each kind
/// has only the fields that mean something for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Module {
    Model(ModelSpec),
    Container(ContainerSpec),
}

/// A model module: an ONNX model module image the agent loads and serves in-process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelSpec {
    /// Image reference pinned by digest: `registry/repository@sha256:...`
    /// (a tag may precede the digest for readability).
    pub image: String,
    #[serde(default)]
    pub status: DesiredStatus,
    /// How the model is served; absent: MQTT inputs only, no HTTP endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<ModelServing>,
    /// How ONNX Runtime runs the model; absent: the agent's defaults.
    #[serde(default, skip_serializing_if = "SessionOptions::is_default")]
    pub session: SessionOptions,
    /// Score the request files dropped in a directory; absent: no batch input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchInput>,
}

/// A model module's batch input: files of requests (`*.jsonl`, `*.csv`, as `edgefleet-agent
/// model batch` takes them) dropped in `dir` are scored into `NAME.scored.EXT` beside them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchInput {
    /// An absolute directory on the device; empty: `<data_dir>/batch/<module>`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dir: String,
}

/// How ONNX Runtime runs a model module. Every member is optional; the defaults suit a small
/// model on a small device: one intra-op thread, operators run one after another, every graph
/// optimization, the CPU.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionOptions {
    /// Threads one operator may use (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intra_op_threads: Option<u16>,
    /// Threads running independent branches of the graph at once (parallel execution); absent
    /// or 1: operators run one after another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inter_op_threads: Option<u16>,
    /// Graph optimizations applied when the model loads (default `all`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph_optimization: Option<GraphOptimization>,
    /// Execution providers in order of preference; the CPU always runs what they do not.
    /// One the device's ONNX Runtime does not have is skipped with a warning in the module's
    /// reported state, unless `requireExecutionProviders` is set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub execution_providers: Vec<ExecutionProvider>,
    /// Refuse the module on a device whose ONNX Runtime lacks a listed execution provider,
    /// instead of running it on the CPU.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_execution_providers: bool,
}

impl SessionOptions {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// ONNX Runtime's graph optimization levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GraphOptimization {
    Disabled,
    Basic,
    Extended,
    All,
}

/// An ONNX Runtime execution provider a model module may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    Cpu,
    Cuda,
    Tensorrt,
    Openvino,
}

impl ExecutionProvider {
    /// The name ONNX Runtime lists it under (`GetAvailableProviders`).
    pub fn runtime_name(self) -> &'static str {
        match self {
            Self::Cpu => "CPUExecutionProvider",
            Self::Cuda => "CUDAExecutionProvider",
            Self::Tensorrt => "TensorrtExecutionProvider",
            Self::Openvino => "OpenVINOExecutionProvider",
        }
    }
}

/// A container module: an image run on the device's Docker engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerSpec {
    /// Image reference, pinned by digest when the fleet rendered it.
    pub image: String,
    #[serde(default)]
    pub status: DesiredStatus,
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// The container's environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Docker create options (a documented subset; the agent rejects options it does not know
    /// rather than dropping them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_options: Option<serde_json::Value>,
    /// Containers start in ascending order, each group once the one before it has been
    /// started; containers without an order start last (IoT Edge's `startupOrder`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_order: Option<u32>,
    #[serde(default, skip_serializing_if = "ImagePullPolicy::is_on_create")]
    pub image_pull_policy: ImagePullPolicy,
}

/// Whether the agent pulls a container module's image, as in Azure IoT Edge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ImagePullPolicy {
    /// Pulled when the container is created.
    #[default]
    OnCreate,
    /// Never pulled: the image must already be on the device (loaded by other means).
    Never,
}

impl ImagePullPolicy {
    pub fn is_on_create(&self) -> bool {
        *self == Self::OnCreate
    }
}

impl Module {
    pub fn kind(&self) -> ModuleKind {
        match self {
            Self::Model(_) => ModuleKind::Model,
            Self::Container(_) => ModuleKind::Container,
        }
    }

    pub fn image(&self) -> &str {
        match self {
            Self::Model(m) => &m.image,
            Self::Container(c) => &c.image,
        }
    }

    pub fn status(&self) -> DesiredStatus {
        match self {
            Self::Model(m) => m.status,
            Self::Container(c) => c.status,
        }
    }
}

/// The kind of a module, as reported state names it.
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
            mqtt_password: None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn modules_are_tagged_by_kind_and_carry_only_their_kinds_fields() {
        let model: Module = serde_json::from_value(json!({
            "kind": "model",
            "image": "r/m@sha256:1",
            "serving": {"httpPort": 5001}
        }))
        .expect("a model module");
        assert_eq!(model.kind(), ModuleKind::Model);
        assert_eq!(model.image(), "r/m@sha256:1");
        let container: Module = serde_json::from_value(json!({
            "kind": "container",
            "image": "r/c@sha256:2",
            "restartPolicy": "on-failure",
            "startupOrder": 1
        }))
        .expect("a container module");
        let Module::Container(spec) = &container else {
            panic!("not a container: {container:?}");
        };
        assert_eq!(spec.restart_policy, RestartPolicy::OnFailure);
        assert_eq!(spec.startup_order, Some(1));
        assert_eq!(
            serde_json::to_value(&container).expect("json")["kind"],
            "container"
        );
    }

    #[test]
    fn a_field_of_the_other_kind_or_an_unknown_kind_is_refused_by_name() {
        let err = serde_json::from_value::<Module>(json!({
            "kind": "model",
            "image": "r/m@sha256:1",
            "restartPolicy": "always"
        }))
        .unwrap_err();
        assert!(err.to_string().contains("restartPolicy"), "{err}");
        let err =
            serde_json::from_value::<Module>(json!({"kind": "vm", "image": "x"})).unwrap_err();
        assert!(err.to_string().contains("vm"), "{err}");
    }
}
