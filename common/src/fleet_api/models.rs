//! The model registry (`/v1/models`): registering an ONNX file, its versions and details,
//! profiling a version and packaging it as a model module image.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::UnixMillis;
use crate::model_profile::ModelProfile;
use crate::module_image::IoSpec;

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
