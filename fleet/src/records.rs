//! What the fleet service stores: registries, model versions, devices, deployments and the
//! manifests rendered for each device. Model versions and deployment modules are stored as the
//! API shows them (`edgefleet_common::fleet_api`); the rest hold secrets or bookkeeping the API
//! does not show.

use std::collections::{BTreeMap, BTreeSet};

use edgefleet_common::UnixMillis;
pub use edgefleet_common::fleet_api::{
    DeploymentModule, DeploymentRevision, DeploymentView, ModelVersion, ModuleSource, Package,
    RolloutPolicy, StagedState,
};
use edgefleet_common::reported::ReportedState;
use edgefleet_common::sealing::SealedSecret;
use serde::{Deserialize, Serialize};

/// A container registry models are pushed to and devices pull from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registry {
    pub name: String,
    /// Host and optional port, as in image references.
    pub address: String,
    pub username: String,
    /// The password sealed to the fleet's own secrets key: encrypted at rest, opened only to
    /// push and to seal it again for each device.
    pub password: SealedSecret,
    /// Reached over plain HTTP (the fleet pushes with HTTP; devices must list it as insecure).
    #[serde(default)]
    pub insecure: bool,
}

/// A device of the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub id: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The device's age X25519 recipient (`edgefleet-agent init` prints it).
    pub public_key: String,
    pub added_ms: UnixMillis,
    /// The device's MQTT password (user name = device id), sealed to the fleet's secrets key;
    /// `edgefleet device config` reveals it to the administrator.
    pub mqtt_password: SealedSecret,
    /// The newest MQTT password sealed to the device's key, rendered into its manifest; absent
    /// until the first `edgefleet device rotate-credentials`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt_password_for_device: Option<SealedSecret>,
}

/// A new MQTT password on its way to a device (`edgefleet device rotate-credentials`). The
/// broker keeps the old one until the device reports the manifest carrying the new one, so the
/// device always holds a password the broker accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MqttRotation {
    pub device_id: String,
    /// The new password, sealed to the fleet's secrets key.
    pub password: SealedSecret,
    /// The manifest version that carries it to the device.
    pub manifest_version: u64,
    pub started_ms: UnixMillis,
}

/// What the fleet has heard from a device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceStatus {
    pub last_seen_ms: Option<UnixMillis>,
    pub reported: Option<ReportedState>,
    /// The incarnation that sent `reported` (its outbox `seq`s count in that incarnation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_incarnation: Option<String>,
}

/// A device's incarnations (random ids its agent creates with its data directory), oldest
/// first: the `n`th one's `seq` s is stored as `n·2^40 + s`, so a re-provisioned device's
/// records never collide with its earlier life's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Incarnations {
    pub ids: Vec<String>,
}

/// A deployment: modules for the devices its condition selects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub name: String,
    /// The target condition (see `condition`).
    pub target: String,
    /// Among base deployments the highest priority applies to a device (ties: the newest);
    /// layered ones apply on top in ascending priority.
    pub priority: i32,
    #[serde(default)]
    pub layered: bool,
    pub modules: BTreeMap<String, DeploymentModule>,
    /// Module -> its image pinned by digest when the deployment was saved (modules that name
    /// an image; registered models are resolved when rendering, so `:latest` follows).
    #[serde(default)]
    pub images: BTreeMap<String, String>,
    /// Increases with every save that changed the deployment.
    #[serde(default)]
    pub revision: u64,
    /// Module -> the registered model version (`name:version`) its `name:latest` resolved to
    /// when this revision was saved: a new version makes a new revision.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutPolicy>,
    /// Order of creation (newest is largest), for ties.
    pub created_seq: u64,
}

impl Deployment {
    pub fn view(&self) -> DeploymentView {
        DeploymentView {
            name: self.name.clone(),
            target: self.target.clone(),
            priority: self.priority,
            layered: self.layered,
            modules: self.modules.clone(),
            rollout: self.rollout.clone(),
            revision: self.revision,
            images: self.images.clone(),
            models: self.models.clone(),
        }
    }

    /// A revision from the history, as the deployment it was (its age: `created_seq`).
    pub fn from_view(view: DeploymentView, created_seq: u64) -> Self {
        Self {
            name: view.name,
            target: view.target,
            priority: view.priority,
            layered: view.layered,
            modules: view.modules,
            images: view.images,
            models: view.models,
            revision: view.revision,
            rollout: view.rollout,
            created_seq,
        }
    }

    pub fn source(&self) -> ModuleSource {
        ModuleSource {
            deployment: self.name.clone(),
            revision: self.revision,
            layered: self.layered,
        }
    }
}

/// A staged rollout of a deployment from one revision to the next (kept after it ends, until
/// the next one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    pub deployment: String,
    /// The revision devices keep until they move (0: the deployment is new).
    pub from_revision: u64,
    pub to_revision: u64,
    pub policy: RolloutPolicy,
    pub state: StagedState,
    pub reason: Option<String>,
    pub phases: Vec<Phase>,
    /// The phase in progress.
    pub current: usize,
}

/// Inference counters of a device's model modules when its phase started (module -> count,
/// errors), so the error rate is judged on what the new revision served.
pub type Baseline = BTreeMap<String, (u64, u64)>;

/// One phase of a staged rollout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Phase {
    pub devices: Vec<String>,
    /// Devices moved to the new revision, with their model modules' inference counters then.
    pub moved: BTreeMap<String, Baseline>,
    pub started_ms: Option<UnixMillis>,
    /// Since when every device of the phase has been healthy.
    pub healthy_since_ms: Option<UnixMillis>,
    /// What the phase waits for, as last judged (`done` once passed).
    pub gate: String,
}

impl Rollout {
    /// Whether `device` has been moved to the new revision.
    pub fn moved(&self, device: &str) -> bool {
        self.state != StagedState::RolledBack
            && self.phases.iter().any(|p| p.moved.contains_key(device))
    }

    /// Every device moved to the new revision so far.
    pub fn moved_devices(&self) -> BTreeSet<String> {
        self.phases
            .iter()
            .flat_map(|p| p.moved.keys().cloned())
            .collect()
    }

    /// Whether devices may still be held back on the previous revision.
    pub fn holds_back(&self) -> bool {
        self.state != StagedState::Completed
    }
}

/// The manifest last rendered for a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RenderedManifest {
    pub device_id: String,
    pub version: u64,
    /// SHA-256 of the content (version 0, as serde_json writes it): when it does not change,
    /// neither does the version.
    pub fingerprint: String,
    /// For each module, the deployment it came from.
    #[serde(deserialize_with = "sources")]
    pub sources: BTreeMap<String, ModuleSource>,
    /// Registry name -> the password as sealed to this device, reused by later renders.
    #[serde(default)]
    pub sealed_passwords: BTreeMap<String, SealedPassword>,
    /// The signed wire bytes, as published.
    pub wire: String,
}

/// A registry password sealed to one device. Sealing is randomized and costs a key agreement,
/// so a device keeps the same ciphertext (and its manifest the same content) until the password
/// or the device's key changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SealedPassword {
    /// The device key it was sealed to.
    pub device_key: String,
    /// Which password it holds (see `render::RegistryAccess::password_id`).
    pub password_id: String,
    pub sealed: SealedSecret,
}

/// Sources as stored: a module's deployment and revision, or (stored before revisions) the
/// deployment's name alone.
fn sources<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, ModuleSource>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Source(ModuleSource),
        Name(String),
    }
    Ok(BTreeMap::<String, Stored>::deserialize(deserializer)?
        .into_iter()
        .map(|(module, stored)| {
            let source = match stored {
                Stored::Source(source) => source,
                Stored::Name(deployment) => ModuleSource {
                    deployment,
                    revision: 0,
                    layered: false,
                },
            };
            (module, source)
        })
        .collect())
}

/// An API token (kind `token`, by name). The token itself is never stored: a token is 256
/// random bits, so its SHA-256 is enough to recognise it and useless to guess it from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Token {
    pub name: String,
    pub role: edgefleet_common::fleet_api::Role,
    /// SHA-256 of the token, hex: the name of its [`TokenHolder`] record.
    pub sha256: String,
    pub created_ms: UnixMillis,
    /// The name of the token that created it.
    pub created_by: String,
}

/// Who holds a token (kind `token-hash`, by the token's SHA-256): read on every request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenHolder {
    pub name: String,
    pub role: edgefleet_common::fleet_api::Role,
}
