//! Container registries models are pushed to and devices pull from. Passwords are sealed to
//! the fleet's secrets key at rest and never shown.

use edgefleet_common::fleet_api::{RegistryRequest, RegistryView};
use edgefleet_common::topics::check_name;

use super::{Affected, Fleet};
use crate::error::FleetError;
use crate::records::Registry;
use crate::store::kind;

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
        let _guard = self.writes.lock().await;
        self.store.put(kind::REGISTRY, name, &registry)?;
        self.rerender(Affected::All).await?;
        Ok(view(registry))
    }

    pub fn registries(&self) -> Result<Vec<RegistryView>, FleetError> {
        Ok(self
            .store
            .list::<Registry>(kind::REGISTRY)?
            .into_iter()
            .map(|(_, r)| view(r))
            .collect())
    }

    /// A registry by name, with its password opened.
    pub(crate) fn registry_login(&self, name: &str) -> Result<(Registry, String), FleetError> {
        let registry: Registry = self.store.get(kind::REGISTRY, name)?.ok_or_else(|| {
            FleetError::invalid(format!(
                "registry {name:?} is not configured (see `edgefleet registry add`)"
            ))
        })?;
        let password = self.secrets.unseal(&registry.password)?;
        Ok((registry, password))
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
