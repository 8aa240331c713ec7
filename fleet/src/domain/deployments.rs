//! Deployments (modules for the devices a target condition selects, with priorities), the
//! manifests they render, and their rollout status.

use std::collections::BTreeMap;

use edgefleet_common::create_options;
use edgefleet_common::fleet_api::{
    Deleted, DeploymentModule, DeploymentRequest, DeploymentRevision, DeploymentSaved,
    DeploymentView, ManifestView, ModelVersion, RolloutStatus,
};
use edgefleet_common::manifest::ImagePullPolicy;
use edgefleet_common::module_image::ImageReference;
use edgefleet_common::topics::check_name;
use edgefleet_transport::now_ms;

use super::rendering::models_by_name;
use super::{Affected, Fleet};
use crate::condition::Condition;
use crate::error::FleetError;
use crate::image_pin;
use crate::records::{Deployment, DeviceStatus, Registry, RenderedManifest};
use crate::render::resolve_model;
use crate::rollouts::status as rollout;
use crate::store::{Batch, kind};

impl Fleet {
    /// Creates or replaces deployment `name`: checks every module, pins the images it names
    /// to digests, and when the content differs from the stored one saves it as a new
    /// revision and re-renders the devices it targeted before or targets now.
    pub async fn put_deployment(
        &self,
        name: &str,
        request: DeploymentRequest,
    ) -> Result<DeploymentSaved, FleetError> {
        check_name("deployment name", name)?;
        let condition: Condition = request.target.parse()?;
        if request.modules.is_empty() {
            return Err(FleetError::invalid(format!(
                "deployment {name}: a deployment needs at least one module"
            )));
        }
        let models = models_by_name(&self.store).await?;
        for (module, spec) in &request.modules {
            check_name("module name", module)?;
            self.check_module(spec, &models).await.map_err(|e| {
                FleetError::invalid(format!("deployment {name}, module {module}: {e}"))
            })?;
        }
        if let Some(target) = request
            .rollout
            .as_ref()
            .and_then(|r| r.canary_target.as_ref())
        {
            target.parse::<Condition>().map_err(|e| {
                FleetError::invalid(format!("deployment {name}, rollout.canaryTarget: {e}"))
            })?;
        }
        // Registries are asked before the write lock is taken: a slow one delays only this save.
        let images = self.pin_images(name, &request.modules).await?;
        let resolved = resolved_models(&request.modules, &models);
        let _writes = self.store.lock_writes().await?;
        let old: Option<Deployment> = self.store.get(kind::DEPLOYMENT, name).await?;
        if let Some(old) = &old
            && (
                &old.target,
                old.priority,
                old.layered,
                &old.modules,
                &old.images,
                &old.models,
                &old.rollout,
            ) == (
                &request.target,
                request.priority,
                request.layered,
                &request.modules,
                &images,
                &resolved,
                &request.rollout,
            )
        {
            return Ok(DeploymentSaved {
                name: name.to_owned(),
                targeted: self.devices_matching(&[condition]).await?.len(),
                revision: old.revision,
                changed: false,
            });
        }
        let deployment = Deployment {
            name: name.to_owned(),
            target: request.target,
            priority: request.priority,
            layered: request.layered,
            modules: request.modules,
            images,
            models: resolved,
            rollout: request.rollout,
            revision: old.as_ref().map_or(0, |o| o.revision) + 1,
            created_seq: match &old {
                Some(old) => old.created_seq,
                None => self.store.next("deployment").await?,
            },
        };
        let targeted = self.save_revision(&deployment, old.as_ref()).await?;
        Ok(DeploymentSaved {
            name: name.to_owned(),
            targeted,
            revision: deployment.revision,
            changed: true,
        })
    }

    /// Stores `deployment` as its new revision (after `old`), starts its staged rollout if its
    /// policy asks for one, and re-renders the devices it targeted before or targets now;
    /// returns how many those are. The caller holds the write lock.
    async fn save_revision(
        &self,
        deployment: &Deployment,
        old: Option<&Deployment>,
    ) -> Result<usize, FleetError> {
        let mut batch = Batch::default();
        let conditions = self.add_revision(&mut batch, deployment, old).await?;
        let affected = self.devices_matching(&conditions).await?;
        let targeted = affected.len();
        self.commit_and_render(batch, Affected::Devices(affected))
            .await?;
        Ok(targeted)
    }

    /// Adds `deployment` to `batch` as its new revision (after `old`), with its staged rollout
    /// if its policy asks for one. Returns the conditions of the devices it targeted before or
    /// targets now.
    async fn add_revision(
        &self,
        batch: &mut Batch,
        deployment: &Deployment,
        old: Option<&Deployment>,
    ) -> Result<Vec<Condition>, FleetError> {
        let name = &deployment.name;
        let revision = DeploymentRevision {
            revision: deployment.revision,
            saved_ms: now_ms(),
            deployment: deployment.view(),
        };
        let mut conditions: Vec<Condition> = deployment.target.parse().into_iter().collect();
        if let Some(old) = old.and_then(|o| o.target.parse::<Condition>().ok()) {
            conditions.push(old);
        }
        batch.put(kind::DEPLOYMENT, name, deployment)?;
        batch.put(
            &revisions_kind(name),
            &format!("{:012}", deployment.revision),
            &revision,
        )?;
        // A policy moves the devices in phases (`advance_rollouts`); without one, all at once.
        if deployment.rollout.is_some() {
            let from_revision = old.map_or(0, |o| o.revision);
            let rollout = self
                .start_rollout(deployment, from_revision, &conditions)
                .await?;
            batch.put(kind::ROLLOUT, name, &rollout)?;
        } else {
            batch.delete(kind::ROLLOUT, name);
        }
        Ok(conditions)
    }

    /// A new version of model `name` was packaged (`models` has it): every deployment following
    /// `name:latest` gets a revision with it in `batch` (a staged rollout where the
    /// deployment's policy asks for one). The caller re-renders every device with the batch
    /// and holds the write lock.
    pub(super) async fn follow_latest(
        &self,
        name: &str,
        models: &BTreeMap<String, Vec<ModelVersion>>,
        batch: &mut Batch,
    ) -> Result<(), FleetError> {
        for (_, old) in self.store.list::<Deployment>(kind::DEPLOYMENT).await? {
            let resolved = resolved_models(&old.modules, models);
            let follows = old.modules.values().any(|m| {
                matches!(m, DeploymentModule::Model(m) if m.model.as_deref() == Some(&format!("{name}:latest")))
            });
            if !follows || resolved == old.models {
                continue;
            }
            let deployment = Deployment {
                models: resolved,
                revision: old.revision + 1,
                ..old.clone()
            };
            tracing::info!(deployment = %old.name, revision = deployment.revision, model = name, "a new model version: new revision");
            self.add_revision(batch, &deployment, Some(&old)).await?;
        }
        Ok(())
    }

    /// Refuses a module that could not be rendered, naming what is wrong.
    async fn check_module(
        &self,
        spec: &DeploymentModule,
        models: &BTreeMap<String, Vec<ModelVersion>>,
    ) -> Result<(), FleetError> {
        if let DeploymentModule::Model(m) = spec {
            match (&m.model, &m.image) {
                (Some(reference), None) => {
                    resolve_model(models, reference)?;
                }
                (None, Some(_)) => {}
                _ => {
                    return Err(FleetError::invalid(
                        "a model module needs exactly one of `model` (NAME:VERSION or NAME:latest) and `image`",
                    ));
                }
            }
            for (what, threads) in [
                ("intraOpThreads", m.session.intra_op_threads),
                ("interOpThreads", m.session.inter_op_threads),
            ] {
                if threads == Some(0) {
                    return Err(FleetError::invalid(format!(
                        "session.{what} is 0: give at least 1, or leave it out for the default"
                    )));
                }
            }
            if let Some(batch) = &m.batch
                && !batch.dir.is_empty()
                && !batch.dir.starts_with('/')
            {
                return Err(FleetError::invalid(format!(
                    "batch.dir {:?} is not an absolute path (leave it out for <data_dir>/batch/<module> on each device)",
                    batch.dir
                )));
            }
        }
        let pulled = !matches!(spec, DeploymentModule::Container(c) if c.image_pull_policy == ImagePullPolicy::Never);
        match spec.image() {
            Some("") => return Err(FleetError::invalid("the module has no image")),
            Some(image) if pulled => {
                image
                    .parse::<ImageReference>()
                    .map_err(|e| FleetError::invalid(e.to_string()))?;
            }
            _ => {}
        }
        if let Some(registry) = spec.registry() {
            self.registry_login(registry).await?;
        }
        if let DeploymentModule::Container(c) = spec {
            create_options::parse(c.create_options.as_ref())
                .map_err(|e| FleetError::invalid(e.to_string()))?;
            if let Some(var) = c.env.keys().find(|k| k.is_empty() || k.contains('=')) {
                return Err(FleetError::invalid(format!(
                    "environment variable name {var:?} is empty or contains '='"
                )));
            }
        }
        Ok(())
    }

    /// The images the modules name, pinned to digests (module -> pinned reference).
    async fn pin_images(
        &self,
        deployment: &str,
        modules: &BTreeMap<String, DeploymentModule>,
    ) -> Result<BTreeMap<String, String>, FleetError> {
        let registries = self.store.list::<Registry>(kind::REGISTRY).await?;
        let mut pinned = BTreeMap::new();
        for (module, spec) in modules {
            let Some(image) = spec.image() else {
                continue;
            };
            if let DeploymentModule::Container(c) = spec
                && c.image_pull_policy == ImagePullPolicy::Never
            {
                // Already on the devices, by this name: no registry has a say.
                pinned.insert(module.clone(), image.to_owned());
                continue;
            }
            let host = image.parse::<ImageReference>().ok().map(|r| r.registry);
            let registry = match spec.registry() {
                Some(name) => registries.iter().find(|(n, _)| n == name),
                None => registries
                    .iter()
                    .find(|(_, r)| Some(&r.address) == host.as_ref()),
            };
            let login = registry.map(|(_, r)| self.login(r)).transpose()?;
            let image = image_pin::pin(image, login.as_ref()).await.map_err(|e| {
                FleetError::invalid(format!(
                    "deployment {deployment}, module {module}: cannot resolve {e}"
                ))
            })?;
            pinned.insert(module.clone(), image);
        }
        Ok(pinned)
    }

    pub async fn deployments(&self) -> Result<Vec<DeploymentView>, FleetError> {
        Ok(self
            .store
            .list::<Deployment>(kind::DEPLOYMENT)
            .await?
            .into_iter()
            .map(|(_, d)| d.view())
            .collect())
    }

    pub async fn deployment_view(&self, name: &str) -> Result<DeploymentView, FleetError> {
        Ok(self.deployment(name).await?.view())
    }

    /// Every revision of deployment `name`, oldest first (kept after it is deleted).
    pub async fn deployment_history(
        &self,
        name: &str,
    ) -> Result<Vec<DeploymentRevision>, FleetError> {
        let revisions: Vec<DeploymentRevision> = self
            .store
            .list(&revisions_kind(name))
            .await?
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        if revisions.is_empty() {
            return Err(FleetError::not_found(format!(
                "deployment {name:?} has no history: it never existed"
            )));
        }
        Ok(revisions)
    }

    pub async fn delete_deployment(&self, name: &str) -> Result<Deleted, FleetError> {
        let _writes = self.store.lock_writes().await?;
        let old = self.deployment(name).await?;
        let mut batch = Batch::default();
        batch.delete(kind::DEPLOYMENT, name);
        batch.delete(kind::ROLLOUT, name);
        let affected = match old.target.parse::<Condition>() {
            Ok(c) => Affected::Devices(self.devices_matching(&[c]).await?),
            Err(_) => Affected::All,
        };
        self.commit_and_render(batch, affected).await?;
        Ok(Deleted {
            deleted: name.to_owned(),
        })
    }

    async fn deployment(&self, name: &str) -> Result<Deployment, FleetError> {
        self.store
            .get(kind::DEPLOYMENT, name)
            .await?
            .ok_or_else(|| FleetError::not_found(format!("deployment {name:?} does not exist")))
    }

    /// The manifest rendered for device `id`.
    pub async fn manifest(&self, id: &str) -> Result<ManifestView, FleetError> {
        self.device_record(id).await?;
        let rendered: RenderedManifest =
            self.store.get(kind::MANIFEST, id).await?.ok_or_else(|| {
                FleetError::not_found(format!(
                    "no manifest rendered for {id:?} yet: no deployment targets it"
                ))
            })?;
        let signed = serde_json::from_str(&rendered.wire).map_err(|e| {
            FleetError::invalid(format!("the stored manifest of {id:?} is not JSON: {e}"))
        })?;
        Ok(ManifestView {
            version: rendered.version,
            sources: rendered.sources,
            signed,
        })
    }

    pub async fn rollout(&self, deployment: &str) -> Result<RolloutStatus, FleetError> {
        self.deployment(deployment).await?;
        let manifests: Vec<RenderedManifest> = self
            .store
            .list(kind::MANIFEST)
            .await?
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        let statuses: BTreeMap<String, DeviceStatus> =
            self.store.list(kind::STATUS).await?.into_iter().collect();
        let mut status = rollout::status(deployment, &manifests, &statuses, now_ms());
        status.staged = self.staged_view(deployment).await?;
        Ok(status)
    }
}

/// The record kind of deployment `name`'s revisions (kept by revision number).
fn revisions_kind(name: &str) -> String {
    format!("{}/{name}", kind::DEPLOYMENT_REVISION)
}

/// Module -> the `name:version` each `name:latest` reference resolves to now.
fn resolved_models(
    modules: &BTreeMap<String, DeploymentModule>,
    models: &BTreeMap<String, Vec<ModelVersion>>,
) -> BTreeMap<String, String> {
    modules
        .iter()
        .filter_map(|(module, spec)| match spec {
            DeploymentModule::Model(m) => m
                .model
                .as_deref()
                .filter(|r| r.ends_with(":latest"))
                .and_then(|r| resolve_model(models, r).ok())
                .map(|v| (module.clone(), v.reference())),
            DeploymentModule::Container(_) => None,
        })
        .collect()
}
