//! Deployments (modules for the devices a target condition selects, with priorities), the
//! manifests they render, and their rollout status.

use std::collections::BTreeMap;

use edgefleet_common::fleet_api::{
    Deleted, DeploymentRequest, DeploymentSaved, DeploymentView, ManifestView, RolloutStatus,
};
use edgefleet_common::topics::check_name;
use edgefleet_transport::now_ms;

use super::rendering::models_by_name;
use super::{Affected, Fleet};
use crate::condition::Condition;
use crate::error::FleetError;
use crate::records::{Deployment, DeviceStatus, RenderedManifest};
use crate::render::resolve_model;
use crate::rollout;
use crate::store::{Batch, kind};

impl Fleet {
    /// Creates or replaces deployment `name` and re-renders the devices it targeted before or
    /// targets now.
    pub async fn put_deployment(
        &self,
        name: &str,
        request: DeploymentRequest,
    ) -> Result<DeploymentSaved, FleetError> {
        check_name("deployment name", name)?;
        let condition: Condition = request.target.parse()?;
        if request.modules.is_empty() {
            return Err(FleetError::invalid(
                "a deployment needs at least one module (--model)",
            ));
        }
        let _guard = self.writes.lock().await;
        let models = models_by_name(&self.store)?;
        for (module, spec) in &request.modules {
            check_name("module name", module)?;
            resolve_model(&models, &spec.model)?;
        }
        let old: Option<Deployment> = self.store.get(kind::DEPLOYMENT, name)?;
        let deployment = Deployment {
            name: name.to_owned(),
            target: request.target,
            priority: request.priority,
            modules: request.modules,
            created_seq: self.store.next("deployment")?,
        };
        self.store.put(kind::DEPLOYMENT, name, &deployment)?;
        let mut conditions = vec![condition];
        if let Some(old) = old.and_then(|o| o.target.parse::<Condition>().ok()) {
            conditions.push(old);
        }
        let affected = self.devices_matching(&conditions)?;
        let targeted = affected.len();
        self.rerender(Affected::Devices(affected)).await?;
        Ok(DeploymentSaved {
            name: name.to_owned(),
            targeted,
        })
    }

    pub fn deployments(&self) -> Result<Vec<DeploymentView>, FleetError> {
        Ok(self
            .store
            .list::<Deployment>(kind::DEPLOYMENT)?
            .into_iter()
            .map(|(_, d)| DeploymentView {
                name: d.name,
                target: d.target,
                priority: d.priority,
                modules: d.modules,
            })
            .collect())
    }

    pub async fn delete_deployment(&self, name: &str) -> Result<Deleted, FleetError> {
        let _guard = self.writes.lock().await;
        let old = self.deployment(name)?;
        let mut batch = Batch::default();
        batch.delete(kind::DEPLOYMENT, name);
        self.store.commit(batch)?;
        let affected = match old.target.parse::<Condition>() {
            Ok(c) => Affected::Devices(self.devices_matching(&[c])?),
            Err(_) => Affected::All,
        };
        self.rerender(affected).await?;
        Ok(Deleted {
            deleted: name.to_owned(),
        })
    }

    fn deployment(&self, name: &str) -> Result<Deployment, FleetError> {
        self.store
            .get(kind::DEPLOYMENT, name)?
            .ok_or_else(|| FleetError::not_found(format!("deployment {name:?} does not exist")))
    }

    /// The manifest rendered for device `id`.
    pub fn manifest(&self, id: &str) -> Result<ManifestView, FleetError> {
        self.device_record(id)?;
        let rendered: RenderedManifest = self.store.get(kind::MANIFEST, id)?.ok_or_else(|| {
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

    pub fn rollout(&self, deployment: &str) -> Result<RolloutStatus, FleetError> {
        self.deployment(deployment)?;
        let manifests: Vec<RenderedManifest> = self
            .store
            .list(kind::MANIFEST)?
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        let statuses: BTreeMap<String, DeviceStatus> =
            self.store.list(kind::STATUS)?.into_iter().collect();
        Ok(rollout::status(deployment, &manifests, &statuses, now_ms()))
    }
}
