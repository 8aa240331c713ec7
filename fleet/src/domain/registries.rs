//! Container registries models are pushed to and devices pull from. Passwords are sealed to
//! the fleet's secrets key at rest and never shown.

use edgefleet_common::fleet_api::{Deleted, RegistryRequest, RegistryView};
use edgefleet_common::topics::check_name;

use super::{Affected, Fleet};
use crate::error::FleetError;
use crate::image_pin::RegistryLogin;
use crate::records::Registry;
use crate::render::module_for;
use crate::store::{Batch, kind};

impl Fleet {
    pub async fn put_registry(
        &self,
        name: &str,
        request: RegistryRequest,
    ) -> Result<RegistryView, FleetError> {
        check_name("registry name", name)?;
        if request.address.is_empty() || request.address.contains('/') {
            return Err(FleetError::invalid(format!(
                "registry address {:?} must be host[:port]",
                request.address
            )));
        }
        let password = self.secrets.public_key().seal(&request.password)?;
        let registry = Registry {
            name: name.to_owned(),
            address: request.address,
            username: request.username,
            password,
            insecure: request.insecure,
        };
        let _writes = self.store.lock_writes().await?;
        let mut batch = Batch::default();
        batch.put(kind::REGISTRY, name, &registry)?;
        self.commit_and_render(batch, Affected::All).await?;
        Ok(view(registry))
    }

    pub async fn registries(&self) -> Result<Vec<RegistryView>, FleetError> {
        Ok(self
            .store
            .list::<Registry>(kind::REGISTRY)
            .await?
            .into_iter()
            .map(|(_, r)| view(r))
            .collect())
    }

    /// Removes registry `name`, refused while a deployment pulls an image with its credentials.
    pub async fn delete_registry(&self, name: &str) -> Result<Deleted, FleetError> {
        let _writes = self.store.lock_writes().await?;
        if self
            .store
            .get::<Registry>(kind::REGISTRY, name)
            .await?
            .is_none()
        {
            return Err(FleetError::not_found(format!(
                "registry {name:?} does not exist (see `edgefleet registry list`)"
            )));
        }
        let catalog = self.catalog().await?;
        let users: Vec<String> = catalog
            .deployments
            .iter()
            .flat_map(|(d, _)| d.modules.keys().map(move |m| (d, m)))
            .filter(|(d, m)| {
                module_for(m, d, &catalog).is_ok_and(|(_, r)| r.as_deref() == Some(name))
            })
            .map(|(d, m)| format!("{}/{m}", d.name))
            .collect();
        if !users.is_empty() {
            return Err(FleetError::Conflict(format!(
                "registry {name:?} is used by {} (deployment/module); change or remove those deployments first",
                users.join(", ")
            )));
        }
        let mut batch = Batch::default();
        batch.delete(kind::REGISTRY, name);
        self.commit_and_render(batch, Affected::All).await?;
        Ok(Deleted {
            deleted: name.to_owned(),
        })
    }

    /// A registry by name, with its password opened.
    pub(crate) async fn registry_login(
        &self,
        name: &str,
    ) -> Result<(Registry, String), FleetError> {
        let registry: Registry = self.store.get(kind::REGISTRY, name).await?.ok_or_else(|| {
            FleetError::invalid(format!(
                "registry {name:?} is not configured (see `edgefleet registry add`)"
            ))
        })?;
        let password = self.secrets.unseal(&registry.password)?;
        Ok((registry, password))
    }

    /// How the fleet logs in to `registry`.
    pub(crate) fn login(&self, registry: &Registry) -> Result<RegistryLogin, FleetError> {
        Ok(RegistryLogin {
            name: registry.name.clone(),
            username: registry.username.clone(),
            password: self.secrets.unseal(&registry.password)?,
            insecure: registry.insecure,
        })
    }
}

fn view(r: Registry) -> RegistryView {
    RegistryView {
        name: r.name,
        address: r.address,
        username: r.username,
        insecure: r.insecure,
    }
}
