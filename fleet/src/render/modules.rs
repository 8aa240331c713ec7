//! A deployment's module as a device's manifest carries it: a model reference (`name:latest`,
//! `name:<n>`) resolved to its packaged image, an image as pinned when the deployment was
//! saved, and the configured registry whose credentials pull it.

use std::collections::BTreeMap;

use edgefleet_common::fleet_api::{ContainerModule, ModelModule};
use edgefleet_common::manifest::{ContainerSpec, ModelServing, ModelSpec, Module};
use edgefleet_common::module_image::ImageReference;

use super::RenderError;
use super::catalog::Catalog;
use crate::records::{Deployment, DeploymentModule, ModelVersion};

/// The packaged model version a deployment's `name:latest` / `name:<n>` refers to.
pub fn resolve_model<'a>(
    models: &'a BTreeMap<String, Vec<ModelVersion>>,
    reference: &str,
) -> Result<&'a ModelVersion, RenderError> {
    let (name, version) = reference
        .split_once(':')
        .ok_or_else(|| RenderError::BadModelReference(reference.to_owned()))?;
    let versions = models
        .get(name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| RenderError::UnknownModel(name.to_owned()))?;
    let chosen = if version == "latest" {
        versions
            .iter()
            .rev()
            .find(|v| v.package.is_some())
            .ok_or_else(|| RenderError::NotPackaged(format!("{name}:latest")))?
    } else {
        let n: u32 = version
            .parse()
            .map_err(|_| RenderError::BadModelReference(reference.to_owned()))?;
        let v = versions
            .iter()
            .find(|v| v.version == n)
            .ok_or_else(|| RenderError::UnknownModel(reference.to_owned()))?;
        if v.package.is_none() {
            return Err(RenderError::NotPackaged(reference.to_owned()));
        }
        v
    };
    Ok(chosen)
}

/// A module of a deployment as the device's manifest carries it, and the registry (by name)
/// whose credentials pull its image, if any.
pub(crate) fn module_for(
    name: &str,
    deployment: &Deployment,
    catalog: &Catalog,
) -> Result<(Module, Option<String>), RenderError> {
    let spec = &deployment.modules[name];
    // A pinned image (saved with the deployment) or the reference as written.
    let image = |written: &str| {
        deployment
            .images
            .get(name)
            .cloned()
            .unwrap_or_else(|| written.to_owned())
    };
    let registry_of = |image: &str, named: Option<&str>| -> Result<Option<String>, RenderError> {
        if let Some(named) = named {
            return match catalog.registries.contains_key(named) {
                true => Ok(Some(named.to_owned())),
                false => Err(RenderError::UnknownRegistry(named.to_owned())),
            };
        }
        let host = image.parse::<ImageReference>().ok().map(|r| r.registry);
        Ok(catalog
            .registries
            .iter()
            .find(|(_, r)| Some(&r.address) == host.as_ref())
            .map(|(name, _)| name.clone()))
    };
    match spec {
        DeploymentModule::Model(m) => {
            let (image, registry) = match (&m.model, &m.image) {
                (Some(written), _) => {
                    // `name:latest` as resolved when the revision was saved.
                    let reference = deployment.models.get(name).unwrap_or(written);
                    let model = resolve_model(&catalog.models, reference)?;
                    let package = model
                        .package
                        .as_ref()
                        .ok_or_else(|| RenderError::NotPackaged(model.reference()))?;
                    if !catalog.registries.contains_key(&package.registry) {
                        return Err(RenderError::UnknownRegistry(package.registry.clone()));
                    }
                    (package.image.clone(), Some(package.registry.clone()))
                }
                (None, Some(written)) => {
                    let image = image(written);
                    let registry = registry_of(&image, m.registry.as_deref())?;
                    (image, registry)
                }
                (None, None) => {
                    return Err(RenderError::Module {
                        module: name.to_owned(),
                        reason: "a model module needs `model` or `image`".to_owned(),
                    });
                }
            };
            Ok((Module::Model(model_spec(m, image)), registry))
        }
        DeploymentModule::Container(c) => {
            let image = image(&c.image);
            let registry = registry_of(&image, c.registry.as_deref())?;
            Ok((Module::Container(container_spec(c, image)), registry))
        }
    }
}

fn model_spec(m: &ModelModule, image: String) -> ModelSpec {
    ModelSpec {
        image,
        status: m.status,
        serving: m.port.map(|http_port| ModelServing {
            http_port,
            bind_address: "127.0.0.1".to_owned(),
            auth_key_sha256: m.auth_key_sha256.clone(),
            mqtt_input: true,
            data_collection_ppm: m.data_collection_ppm,
        }),
        session: m.session.clone(),
        batch: m.batch.clone(),
    }
}

fn container_spec(c: &ContainerModule, image: String) -> ContainerSpec {
    ContainerSpec {
        image,
        status: c.status,
        restart_policy: c.restart_policy,
        env: c.env.clone(),
        create_options: c.create_options.clone(),
        startup_order: c.startup_order,
        image_pull_policy: c.image_pull_policy,
    }
}
