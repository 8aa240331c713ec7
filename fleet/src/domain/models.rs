//! The model registry: versions of ONNX models, checked with ONNX Runtime when registered,
//! packaged as model module images and pushed to a registry. Images are built and pushed
//! without holding the store's write lock; only recording where they went takes it.

use std::collections::BTreeMap;

use edgefleet_common::fleet_api::{
    Deleted, ModelDetails, ModelModule, ModelVersion, Package, PackageRequest, ProfileRequest,
    RegisterModelQuery,
};
use edgefleet_common::model_profile::ModelProfile;
use edgefleet_common::topics::check_name;
use edgefleet_onnx::canary::{find_sample, metadata_from_model};
use edgefleet_onnx::profile::ProfileSettings;
use edgefleet_transport::now_ms;
use sha2::{Digest as _, Sha256};

use super::rendering::models_by_name;
use super::{Affected, Fleet};
use crate::error::FleetError;
use crate::package;
use crate::records::{Deployment, DeploymentModule};
use crate::render::resolve_model;
use crate::store::{Batch, kind};

fn model_key(name: &str, version: u32) -> String {
    format!("{name}/{version:010}")
}

impl Fleet {
    /// Registers `bytes` as the next version of model `query.name`. A model whose previous
    /// version was packaged is packaged to the same place at once, so deployments that follow
    /// `name:latest` roll it out (continuous deployment).
    pub async fn register_model(
        &self,
        query: RegisterModelQuery,
        bytes: Vec<u8>,
    ) -> Result<ModelVersion, FleetError> {
        let name = query.name;
        check_name("model name", &name)?;
        let tags: BTreeMap<String, String> = match &query.tags {
            Some(t) => {
                serde_json::from_str(t).map_err(|e| FleetError::invalid(format!("tags: {e}")))?
            }
            None => BTreeMap::new(),
        };
        let sample_input: Option<serde_json::Value> = match &query.sample {
            Some(s) => Some(
                serde_json::from_str(s)
                    .map_err(|e| FleetError::invalid(format!("sample input is not JSON: {e}")))?,
            ),
            None => None,
        };
        let onnx = self.onnx;
        let (checked_name, checked_sample) = (name.clone(), sample_input.clone());
        let bytes = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, FleetError> {
            let model = onnx.model(&bytes).map_err(|e| {
                FleetError::invalid(format!("not a model ONNX Runtime can load: {e}"))
            })?;
            match &checked_sample {
                Some(sample) => {
                    model.score(sample).map_err(|e| {
                        FleetError::invalid(format!("the sample input does not fit the model: {e}"))
                    })?;
                }
                // Packaging synthesizes the sample the same way: refuse now, where
                // --sample-input can be given, rather than at `model package`.
                None => {
                    find_sample(&model, &metadata_from_model(&checked_name, &model))
                        .map_err(|e| FleetError::invalid(e.to_string()))?;
                }
            }
            Ok(bytes)
        })
        .await??;

        let (record, previous) = {
            let _writes = self.store.lock_writes().await?;
            let models = models_by_name(&self.store).await?;
            let previous = models.get(&name).and_then(|v| v.last()).cloned();
            let version = previous.as_ref().map_or(1, |p| p.version + 1);
            self.store.put_model_file(&name, version, &bytes).await?;
            let record = ModelVersion {
                name: name.clone(),
                version,
                tags,
                description: query.description,
                sha256: hex::encode(Sha256::digest(&bytes)),
                size: bytes.len() as u64,
                registered_ms: now_ms(),
                package: None,
                sample_input,
                profile: None,
            };
            self.store
                .put(kind::MODEL, &model_key(&name, version), &record)
                .await?;
            (record, previous)
        };
        match previous.and_then(|p| p.package) {
            Some(p) => {
                let package = self
                    .package_and_roll_out(&record, &p.registry, &p.repository)
                    .await?;
                Ok(ModelVersion {
                    package: Some(package),
                    ..record
                })
            }
            None => Ok(record),
        }
    }

    /// Every version of every model, by name then version.
    pub async fn models(&self) -> Result<Vec<ModelVersion>, FleetError> {
        Ok(models_by_name(&self.store)
            .await?
            .into_values()
            .flatten()
            .collect())
    }

    pub async fn package_model(
        &self,
        name: &str,
        version: u32,
        request: PackageRequest,
    ) -> Result<Package, FleetError> {
        let record = self.model(name, version).await?;
        self.package_and_roll_out(&record, &request.registry, &request.repository)
            .await
    }

    /// Profiles a version with its sample (given at registration, or synthesized) on this
    /// machine, one profile at a time, and keeps the result on the version.
    pub async fn profile_model(
        &self,
        name: &str,
        version: u32,
        request: ProfileRequest,
    ) -> Result<ModelProfile, FleetError> {
        let record = self.model(name, version).await?;
        let bytes = self.model_file(name, version).await?;
        let onnx = self.onnx;
        let settings = ProfileSettings::or_defaults(request.batch_sizes, request.intra_op_threads);
        let _profiling = self.profiling.lock().await;
        let profile = tokio::task::spawn_blocking(move || -> Result<ModelProfile, FleetError> {
            let model = onnx
                .model(&bytes)
                .map_err(|e| FleetError::invalid(format!("the stored model does not load: {e}")))?;
            let sample = match record.sample_input {
                Some(sample) => sample,
                None => {
                    find_sample(&model, &metadata_from_model(&record.name, &model))
                        .map_err(|e| FleetError::invalid(e.to_string()))?
                        .input
                }
            };
            drop(model);
            edgefleet_onnx::profile::profile(onnx, &bytes, &sample, &settings, |_| {})
                .map_err(|e| FleetError::invalid(format!("profiling failed: {e}")))
        })
        .await??;
        let _writes = self.store.lock_writes().await?;
        let mut current = self.model(name, version).await.map_err(|_| {
            FleetError::Conflict(format!(
                "model {name}:{version} was deleted while it was being profiled"
            ))
        })?;
        current.profile = Some(profile.clone());
        self.store
            .put(kind::MODEL, &model_key(name, version), &current)
            .await?;
        Ok(profile)
    }

    /// One version with its inputs and outputs (read from the ONNX file) and the deployments
    /// that serve it.
    pub async fn model_details(
        &self,
        name: &str,
        version: u32,
    ) -> Result<ModelDetails, FleetError> {
        let model = self.model(name, version).await?;
        let bytes = self.model_file(name, version).await?;
        let onnx = self.onnx;
        let (inputs, outputs) = tokio::task::spawn_blocking(move || {
            onnx.model(&bytes)
                .map(|m| (m.inputs().to_vec(), m.outputs().to_vec()))
                .map_err(|e| FleetError::invalid(format!("the stored model does not load: {e}")))
        })
        .await??;
        let deployed_by = self
            .model_users(name, version)
            .await?
            .into_iter()
            .map(|(deployment, module, _)| format!("{deployment}/{module}"))
            .collect();
        Ok(ModelDetails {
            model,
            inputs,
            outputs,
            deployed_by,
        })
    }

    /// The ONNX file of a registered version, as it was registered.
    pub async fn model_file(&self, name: &str, version: u32) -> Result<Vec<u8>, FleetError> {
        self.model(name, version).await?;
        self.stored_model_file(name, version).await
    }

    async fn stored_model_file(&self, name: &str, version: u32) -> Result<Vec<u8>, FleetError> {
        self.store.model_file(name, version).await?.ok_or_else(|| {
            FleetError::not_found(format!(
                "the ONNX file of model {name}:{version} is missing from the fleet store"
            ))
        })
    }

    /// The (deployment, module, reference) of every module that resolves to this version.
    async fn model_users(
        &self,
        name: &str,
        version: u32,
    ) -> Result<Vec<(String, String, String)>, FleetError> {
        let models = models_by_name(&self.store).await?;
        let mut users = Vec::new();
        for (_, d) in self.store.list::<Deployment>(kind::DEPLOYMENT).await? {
            for (module, spec) in d.modules {
                if let DeploymentModule::Model(ModelModule {
                    model: Some(reference),
                    ..
                }) = spec
                    && resolve_model(&models, &reference)
                        .is_ok_and(|m| m.name == name && m.version == version)
                {
                    users.push((d.name.clone(), module, reference));
                }
            }
        }
        Ok(users)
    }

    pub async fn delete_model(&self, name: &str, version: u32) -> Result<Deleted, FleetError> {
        let _writes = self.store.lock_writes().await?;
        self.model(name, version).await?;
        if let Some((deployment, module, reference)) =
            self.model_users(name, version).await?.into_iter().next()
        {
            return Err(FleetError::Conflict(format!(
                "model {name}:{version} is used by deployment {deployment:?} (module {module:?}, {reference}); change or delete the deployment first"
            )));
        }
        let mut batch = Batch::default();
        batch.delete(kind::MODEL, &model_key(name, version));
        self.store.commit(batch).await?;
        self.store.delete_model_file(name, version).await?;
        Ok(Deleted {
            deleted: format!("{name}:{version}"),
        })
    }

    async fn model(&self, name: &str, version: u32) -> Result<ModelVersion, FleetError> {
        self.store
            .get(kind::MODEL, &model_key(name, version))
            .await?
            .ok_or_else(|| {
                FleetError::not_found(format!("model {name}:{version} is not registered"))
            })
    }

    /// Builds and pushes `record`'s image (no lock held), then records where it went and
    /// re-renders the devices (a deployment may follow `name:latest`).
    async fn package_and_roll_out(
        &self,
        record: &ModelVersion,
        registry: &str,
        repository: &str,
    ) -> Result<Package, FleetError> {
        let package = self.build_and_push(record, registry, repository).await?;
        let _writes = self.store.lock_writes().await?;
        let mut current = self
            .model(&record.name, record.version)
            .await
            .map_err(|_| {
                FleetError::Conflict(format!(
                    "model {} was deleted while it was being packaged",
                    record.reference()
                ))
            })?;
        current.package = Some(package.clone());
        let mut batch = Batch::default();
        batch.put(
            kind::MODEL,
            &model_key(&current.name, current.version),
            &current,
        )?;
        let mut models = models_by_name(&self.store).await?;
        if let Some(stored) = models
            .get_mut(&current.name)
            .and_then(|versions| versions.iter_mut().find(|v| v.version == current.version))
        {
            *stored = current.clone();
        }
        self.follow_latest(&current.name, &models, &mut batch)
            .await?;
        // One transaction: the package, the new revisions of the deployments following
        // `latest`, and one re-render of every device.
        let job = batch.queue_render(&Affected::All)?;
        self.store.commit(batch).await?;
        self.render_now(&job).await?;
        Ok(package)
    }

    async fn build_and_push(
        &self,
        record: &ModelVersion,
        registry_name: &str,
        repository: &str,
    ) -> Result<Package, FleetError> {
        let (registry, password) = self.registry_login(registry_name).await?;
        let bytes = self.stored_model_file(&record.name, record.version).await?;
        let onnx = self.onnx;
        let for_build = record.clone();
        let image = tokio::task::spawn_blocking(move || -> Result<package::Image, FleetError> {
            let model = onnx
                .model(&bytes)
                .map_err(|e| FleetError::invalid(e.to_string()))?;
            let metadata = package::module_metadata(&for_build, &model)?;
            Ok(package::build(&for_build, &bytes, &metadata)?)
        })
        .await??;
        let tag = record.version.to_string();
        package::push(
            &image,
            &package::Destination {
                address: &registry.address,
                repository,
                tag: tag.clone(),
                username: &registry.username,
                password: &password,
                insecure: registry.insecure,
            },
        )
        .await?;
        Ok(Package {
            registry: registry_name.to_owned(),
            repository: repository.to_owned(),
            image: format!(
                "{}/{repository}:{tag}@{}",
                registry.address, image.manifest_digest
            ),
            digest: image.manifest_digest,
        })
    }
}
