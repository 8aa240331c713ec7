//! Deployments (`/v1/deployments`): a deployment as an administrator writes it, what saving
//! one answers, how the API shows it and its revision history. Its modules
//! ([`DeploymentModule`]) and rollout policy ([`RolloutPolicy`]) have files of their own.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::deployment_modules::DeploymentModule;
use super::is_default;
use super::rollout_policy::RolloutPolicy;
use crate::UnixMillis;

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
