//! The fleet service's HTTP API (`/v1/...`): every request and response body, shared by the
//! service, its CLI and any other client. Errors are `{"error": "..."}` ([`ErrorBody`]) with a
//! 4xx or 5xx status.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::UnixMillis;
use crate::commands::DeviceCommand;
use crate::manifest::{BatchInput, DesiredStatus, ImagePullPolicy, RestartPolicy, SessionOptions};
use crate::model_profile::ModelProfile;
use crate::module_image::IoSpec;
use crate::reported::ReportedState;

/// `GET /v1/fleet`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetInfo {
    pub fleet: String,
    /// The manifest signing key devices verify with (base64).
    pub public_key: String,
    pub mqtt_url: String,
}

/// `PUT /v1/registries/{name}`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryRequest {
    /// Host and optional port, as in image references.
    pub address: String,
    pub username: String,
    pub password: String,
    /// Reached over plain HTTP.
    #[serde(default)]
    pub insecure: bool,
}

/// A registry as the API shows it: never its password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryView {
    pub name: String,
    pub address: String,
    pub username: String,
    pub insecure: bool,
}

/// `POST /v1/models?name=...` (the body is the ONNX file).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterModelQuery {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Tags as a JSON object of strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<String>,
    /// A sample request body (JSON) the model must score; packaged as the canary's input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<String>,
}

/// One registered version of a model (`GET /v1/models` lists them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelVersion {
    pub name: String,
    pub version: u32,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub description: String,
    /// SHA-256 of the ONNX file.
    pub sha256: String,
    pub size: u64,
    pub registered_ms: UnixMillis,
    /// Where the model was pushed as a model module image, once packaged.
    #[serde(default)]
    pub package: Option<Package>,
    /// A sample request given at registration (otherwise one is synthesized when packaging).
    #[serde(default)]
    pub sample_input: Option<serde_json::Value>,
    /// The last `edgefleet model profile` of this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<ModelProfile>,
}

/// `POST /v1/models/{name}/{version}/profile` (every member optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileRequest {
    /// Default 1, 8, 32 (only 1 for a model without a dynamic batch dimension).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batch_sizes: Vec<usize>,
    /// Default 1, 2 and the fleet machine's core count.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub intra_op_threads: Vec<u16>,
}

impl ModelVersion {
    /// `name:version`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.name, self.version)
    }
}

/// `GET /v1/models/{name}/{version}`: one version, what it takes and gives, and where it is
/// deployed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelDetails {
    #[serde(flatten)]
    pub model: ModelVersion,
    pub inputs: Vec<IoSpec>,
    pub outputs: Vec<IoSpec>,
    /// Deployments with a module that resolves to this version (`deployment/module`).
    pub deployed_by: Vec<String>,
}

/// Where a model version was pushed (`POST /v1/models/{name}/{version}/package` answers it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Package {
    pub registry: String,
    pub repository: String,
    /// `address/repository:version@sha256:...`
    pub image: String,
    pub digest: String,
}

/// `POST /v1/models/{name}/{version}/package`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PackageRequest {
    pub registry: String,
    pub repository: String,
}

/// What a `DELETE` removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deleted {
    pub deleted: String,
}

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

/// `PUT /v1/deployments/{name}`: a deployment as an administrator writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentRequest {
    /// The target condition (`tags.site = 'plant1'`).
    pub target: String,
    /// Among base deployments, the highest priority applies to a device (ties: the newest);
    /// layered deployments apply on top in ascending priority.
    #[serde(default)]
    pub priority: i32,
    /// A layered deployment adds or overrides modules on top of the device's base deployment
    /// (Azure IoT Edge's layered deployments).
    #[serde(default, skip_serializing_if = "is_default")]
    pub layered: bool,
    pub modules: BTreeMap<String, DeploymentModule>,
    /// How a new revision reaches the devices; absent: all at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutPolicy>,
}

/// Whether a field holds its default value (left out of what is written).
fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// One module of a deployment. On the wire the member `kind` names the variant (`model`, the
/// default when absent, or `container`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum DeploymentModule {
    Model(ModelModule),
    Container(ContainerModule),
}

/// A model module: from the model registry (`model: name:version` or `name:latest`) or any
/// model module image (`image: registry/repository:tag`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelModule {
    /// `name:latest` (follows new versions) or `name:<version>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// A model module image, resolved to its digest when the deployment is saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The registry (by name) whose credentials pull `image`; default: the registry whose
    /// address the image names, if one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    /// Port of the module's scoring API on the device; absent: MQTT inputs only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auth_key_sha256: Vec<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub data_collection_ppm: u32,
    #[serde(default, skip_serializing_if = "is_default")]
    pub status: DesiredStatus,
    /// How ONNX Runtime runs the model on the devices (threads, optimization, providers).
    #[serde(default, skip_serializing_if = "is_default")]
    pub session: SessionOptions,
    /// Score request files dropped in a directory of each device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchInput>,
}

/// A container module, run on the device's Docker engine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerModule {
    /// Any image reference, resolved to its digest when the deployment is saved.
    pub image: String,
    /// The registry (by name) whose credentials pull the image; default: the registry whose
    /// address the image names, if one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub status: DesiredStatus,
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Docker create options, in Docker's JSON shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_options: Option<serde_json::Value>,
    /// Containers start in ascending order; those without one start last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_order: Option<u32>,
    /// `never`: the image is already on the devices; the fleet does not resolve it and the
    /// agent does not pull it.
    #[serde(default, skip_serializing_if = "is_default")]
    pub image_pull_policy: ImagePullPolicy,
}

impl<'de> Deserialize<'de> for DeploymentModule {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(tag = "kind", rename_all = "camelCase")]
        enum Tagged {
            Model(ModelModule),
            Container(ContainerModule),
        }
        let mut value = serde_json::Value::deserialize(deserializer)?;
        if let Some(object) = value.as_object_mut() {
            object.entry("kind").or_insert_with(|| "model".into());
        }
        match Tagged::deserialize(value).map_err(serde::de::Error::custom)? {
            Tagged::Model(m) => Ok(Self::Model(m)),
            Tagged::Container(c) => Ok(Self::Container(c)),
        }
    }
}

impl DeploymentModule {
    /// A registered model (`name:version` or `name:latest`) served on `port`: what
    /// `deployment create --model` makes.
    pub fn registered_model(reference: &str, port: u16) -> Self {
        Self::Model(ModelModule {
            model: Some(reference.to_owned()),
            port: Some(port),
            ..ModelModule::default()
        })
    }

    /// The image reference as written, if the module names one (not a registered model).
    pub fn image(&self) -> Option<&str> {
        match self {
            Self::Model(m) => m.image.as_deref(),
            Self::Container(c) => Some(&c.image),
        }
    }

    /// The registry named for the module's image, if any.
    pub fn registry(&self) -> Option<&str> {
        match self {
            Self::Model(m) => m.registry.as_deref(),
            Self::Container(c) => c.registry.as_deref(),
        }
    }
}

/// How a deployment's new revision reaches its devices: a canary phase, then batches, each
/// phase gated on the health of the devices already moved (Greengrass' rollout rate and abort
/// thresholds, hawkBit's rollout groups). Absent: every targeted device at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutPolicy {
    /// Devices of the first phase: a count (`2`) or a share (`"10%"`), chosen by a hash of the
    /// deployment and device names, so every rollout of the deployment picks the same ones.
    #[serde(default = "PhaseSize::one")]
    pub canary: PhaseSize,
    /// Only devices this condition selects are canaries (default: any targeted device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_target: Option<String>,
    /// Devices of the phase after the canary.
    #[serde(default = "PhaseSize::one")]
    pub batch: PhaseSize,
    /// Whether later phases keep the batch size or double it.
    #[serde(default, skip_serializing_if = "is_default")]
    pub growth: Growth,
    /// At most this many devices start the new revision per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_minute: Option<u32>,
    /// How long a phase's devices must stay healthy before the next phase starts.
    #[serde(default = "default_soak_seconds")]
    pub soak_seconds: u64,
    /// Failed devices in one phase that abort the rollout and roll it back.
    #[serde(default = "PhaseSize::one")]
    pub max_failures: PhaseSize,
    /// A model module whose inference error rate over the soak exceeds this fails its device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_percent: Option<f64>,
    /// A model module whose p99 latency exceeds this fails its device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99_ms: Option<u64>,
    /// A device silent this long after its phase started no longer holds the phase; it is
    /// reported as timed out and moves when it returns.
    #[serde(default = "default_offline_timeout_seconds")]
    pub offline_timeout_seconds: u64,
}

fn default_soak_seconds() -> u64 {
    30
}

fn default_offline_timeout_seconds() -> u64 {
    600
}

/// A number of devices, or a share of the targeted ones (`"25%"`, rounded up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseSize {
    Devices(u32),
    Percent(u32),
}

impl PhaseSize {
    fn one() -> Self {
        Self::Devices(1)
    }

    /// How many of `total` devices.
    pub fn of(self, total: usize) -> usize {
        match self {
            Self::Devices(n) => n as usize,
            Self::Percent(p) => (total * p as usize).div_ceil(100),
        }
    }
}

impl Serialize for PhaseSize {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Devices(n) => serializer.serialize_u32(*n),
            Self::Percent(p) => serializer.serialize_str(&format!("{p}%")),
        }
    }
}

impl<'de> Deserialize<'de> for PhaseSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Devices(u32),
            Text(String),
        }
        let invalid = |text: &str| {
            serde::de::Error::custom(format!(
                "{text:?} is not a device count (2) or a percentage (\"10%\")"
            ))
        };
        match Written::deserialize(deserializer)? {
            Written::Devices(n) => Ok(Self::Devices(n)),
            Written::Text(text) => match text.trim().strip_suffix('%') {
                Some(p) => p
                    .trim()
                    .parse()
                    .ok()
                    .filter(|p| *p <= 100)
                    .map(Self::Percent)
                    .ok_or_else(|| invalid(&text)),
                None => text
                    .trim()
                    .parse()
                    .map(Self::Devices)
                    .map_err(|_| invalid(&text)),
            },
        }
    }
}

/// How phases after the first batch grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Growth {
    /// Every batch has the batch size.
    #[default]
    Fixed,
    /// Each batch is twice the one before.
    Exponential,
}

/// `PUT /v1/deployments/{name}` answers how many devices the deployment targets and its
/// revision (unchanged when the deployment was saved with the same content).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentSaved {
    pub name: String,
    pub targeted: usize,
    pub revision: u64,
    /// Whether this save made a new revision.
    pub changed: bool,
}

/// A deployment (`GET /v1/deployments`, `GET /v1/deployments/{name}`): what `deployment apply
/// -f` reads (YAML or JSON) and `deployment show --output yaml` prints. `revision` and
/// `images` are what the fleet made of it; apply ignores them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentView {
    pub name: String,
    pub target: String,
    #[serde(default)]
    pub priority: i32,
    #[serde(default, skip_serializing_if = "is_default")]
    pub layered: bool,
    pub modules: BTreeMap<String, DeploymentModule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutPolicy>,
    /// Increases with every save that changed the deployment (`deployment history`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub revision: u64,
    /// Module -> the image reference pinned by digest when the deployment was saved.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
    /// Module -> the model version (`name:version`) its `name:latest` resolved to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, String>,
}

impl DeploymentView {
    /// The request that saves this deployment (what the fleet made of it left out).
    pub fn request(&self) -> DeploymentRequest {
        DeploymentRequest {
            target: self.target.clone(),
            priority: self.priority,
            layered: self.layered,
            modules: self.modules.clone(),
            rollout: self.rollout.clone(),
        }
    }
}

/// One revision of a deployment (`GET /v1/deployments/{name}/history`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentRevision {
    pub revision: u64,
    pub saved_ms: UnixMillis,
    pub deployment: DeploymentView,
}

/// Where a module of a device's manifest came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleSource {
    pub deployment: String,
    pub revision: u64,
    #[serde(default, skip_serializing_if = "is_default")]
    pub layered: bool,
}

/// `GET /v1/manifests/{device}`: the manifest rendered for a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestView {
    pub version: u64,
    /// For each module, the deployment (and revision) it came from.
    pub sources: BTreeMap<String, ModuleSource>,
    /// The signed envelope as published (manifest and signature).
    pub signed: serde_json::Value,
}

/// `GET /v1/rollouts/{deployment}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    pub deployment: String,
    pub targeted: usize,
    /// Devices that answered the manifest (succeeded or failed).
    pub applied: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub pending: usize,
    pub stale: usize,
    pub devices: Vec<DeviceProgress>,
    /// The staged rollout of the latest revision, when the deployment's policy asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged: Option<StagedRollout>,
}

/// A staged rollout: its phases and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StagedRollout {
    pub from_revision: u64,
    pub to_revision: u64,
    pub state: StagedState,
    /// Why it stopped (aborted, rolled back), with the devices' messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The phase in progress (0 is the canary phase).
    pub current_phase: usize,
    pub phases: Vec<PhaseView>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StagedState {
    Running,
    Paused,
    Completed,
    /// Stopped: no more devices move; those moved keep the new revision.
    Aborted,
    /// Every device has the previous revision again.
    RolledBack,
}

/// One phase of a staged rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseView {
    pub devices: Vec<String>,
    /// Devices moved to the new revision so far.
    pub moved: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<UnixMillis>,
    /// What the phase waits for, or `done`.
    pub gate: String,
}

impl RolloutStatus {
    /// Every targeted device succeeded.
    pub fn complete(&self) -> bool {
        self.targeted > 0 && self.succeeded == self.targeted
    }

    /// Every targeted device answered.
    pub fn finished(&self) -> bool {
        self.targeted > 0 && self.succeeded + self.failed >= self.targeted
    }

    /// A staged rollout that will move no more devices (completed, aborted, rolled back).
    pub fn stopped(&self) -> Option<StagedState> {
        self.staged
            .as_ref()
            .map(|s| s.state)
            .filter(|s| !matches!(s, StagedState::Running | StagedState::Paused))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceProgress {
    pub device_id: String,
    pub manifest_version: u64,
    pub state: DeviceRollout,
    pub stale: bool,
    /// The device's message for the manifest (the reason, when failed).
    pub message: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DeviceRollout {
    /// The device has not answered the manifest yet.
    Pending,
    /// Applied: every module runs as asked.
    Succeeded,
    /// The device refused the manifest or could not activate it.
    Failed,
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

/// Every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// `GET /v1/bundle`: an offline bundle (see [`crate::bundle`]) for one device or for every
/// device a deployment reaches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
}
