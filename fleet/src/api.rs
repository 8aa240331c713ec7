//! Request and response bodies of the fleet service's HTTP API (`/v1/...`), shared by the
//! service and the CLI.

use std::collections::BTreeMap;

use edgefleet_common::commands::DeviceCommand;
use serde::{Deserialize, Serialize};

use crate::records::DeploymentModule;

/// `PUT /v1/registries/{name}`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryRequest {
    pub address: String,
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub insecure: bool,
}

/// `PUT /v1/devices/{id}`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRequest {
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub public_key: String,
}

/// `PUT /v1/deployments/{name}`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentRequest {
    pub target: String,
    #[serde(default)]
    pub priority: i32,
    pub modules: BTreeMap<String, DeploymentModule>,
}

/// `POST /v1/models/{name}/{version}/package`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PackageRequest {
    pub registry: String,
    pub repository: String,
}

/// `POST /v1/devices/{id}/commands`: a command for one module of the device; the answer is
/// the device's `CommandResult`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleCommandRequest {
    pub module: String,
    #[serde(flatten)]
    pub command: DeviceCommand,
}

/// Every error response: `{"error": "..."}` with a 4xx/5xx status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
