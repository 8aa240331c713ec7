//! The fleet service's HTTP API (`/v1/...`): every request and response body, shared by the
//! service, its CLI and any other client. Errors are `{"error": "..."}` ([`ErrorBody`]) with a
//! 4xx or 5xx status.
//!
//! The bodies live in a file per resource; this file re-exports them all (every body is named
//! `fleet_api::X`) and holds the few that belong to no one resource.

mod access;
mod bundles;
mod deployment_modules;
mod deployments;
mod devices;
mod manifests;
mod models;
mod registries;
mod rollout_policy;
mod rollouts;
mod telemetry;

pub use access::{AuditEntry, AuditQuery, Role, TokenCreated, TokenRequest, TokenView};
pub use bundles::BundleQuery;
pub use deployment_modules::{ContainerModule, DeploymentModule, ModelModule};
pub use deployments::{DeploymentRequest, DeploymentRevision, DeploymentSaved, DeploymentView};
pub use devices::{
    CredentialsRotation, DeviceImport, DeviceRemoved, DeviceRequest, DeviceView, DevicesImported,
    ModuleCommandRequest,
};
pub use manifests::{ManifestView, ModuleSource};
pub use models::{
    ModelDetails, ModelVersion, Package, PackageRequest, ProfileRequest, RegisterModelQuery,
};
pub use registries::{RegistryRequest, RegistryView};
pub use rollout_policy::{Growth, PhaseSize, RolloutPolicy};
pub use rollouts::{
    DeviceProgress, DeviceRollout, PhaseView, RolloutStatus, StagedRollout, StagedState,
};
pub use telemetry::TelemetryQuery;

use serde::{Deserialize, Serialize};

/// `GET /v1/fleet`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetInfo {
    pub fleet: String,
    /// The manifest signing key devices verify with (base64).
    pub public_key: String,
    pub mqtt_url: String,
}

/// What a `DELETE` removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deleted {
    pub deleted: String,
}

/// Every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// Whether a field holds its default value (left out of what is written).
fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}
