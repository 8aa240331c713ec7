//! Rendered manifests (`/v1/manifests`): the signed manifest of one device and which
//! deployment revision each of its modules came from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::is_default;

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
