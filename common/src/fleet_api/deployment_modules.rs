//! The modules of a deployment: a model module (a registered model or a model module image)
//! or a container module, told apart on the wire by `kind` (`model` when absent).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::is_default;
use crate::manifest::{BatchInput, DesiredStatus, ImagePullPolicy, RestartPolicy, SessionOptions};

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
