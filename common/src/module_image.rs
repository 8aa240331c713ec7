//! The model module image format: a standard OCI image whose single layer holds
//! `model/model.onnx` and, for images made by the fleet, `model/module.json`
//! ([`ModuleMetadata`]). Plain images built from `images/model-module/Dockerfile` carry the
//! model only; the agent then reads inputs and outputs from the model itself.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const MODULE_SCHEMA_VERSION: &str = "1";

/// Path of the model inside the layer (no leading slash, as tar entries are written).
pub const MODEL_PATH: &str = "model/model.onnx";
/// Path of the module metadata inside the layer.
pub const MODULE_JSON_PATH: &str = "model/module.json";

pub const LABEL_MODEL_NAME: &str = "org.edgefleet.model.name";
pub const LABEL_MODEL_VERSION: &str = "org.edgefleet.model.version";

/// Media types the agent accepts and the fleet writes.
pub mod media_type {
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER_TAR_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
}

/// `model/module.json`: what a model expects and returns, with a sample for the OpenAPI
/// document and the activation canary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModuleMetadata {
    pub schema_version: String,
    pub name: String,
    pub version: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub inputs: Vec<IoSpec>,
    pub outputs: Vec<IoSpec>,
    /// A sample request and the output the model gave for it when it was packaged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<Sample>,
}

/// One named input or output of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IoSpec {
    pub name: String,
    #[serde(flatten)]
    pub value: ValueSpec,
}

/// The ONNX value kinds a model module can take or give.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ValueSpec {
    /// A tensor; `-1` marks a dimension fixed only at run time (usually the batch).
    Tensor { dtype: ElementType, shape: Vec<i64> },
    /// A sequence of maps, one per row, as scikit-learn classifiers' ZipMap output gives.
    SequenceOfMaps {
        key: ElementType,
        value: ElementType,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ElementType {
    Float32,
    Float64,
    Int8,
    Int16,
    Int32,
    Int64,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Bool,
    String,
}

/// A request body as `POST /score` takes it, and what the model answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    pub input: serde_json::Value,
    pub output: serde_json::Value,
}
