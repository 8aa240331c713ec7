//! One device's manifest: its modules from the deployments that apply to it, its registry
//! credentials with passwords sealed to the device's key (reused from its previous manifest
//! while neither changed), and a fingerprint so that unchanged content keeps its version.

use std::collections::BTreeMap;

use edgefleet_common::fleet_api::ModuleSource;
use edgefleet_common::manifest::{Manifest, RegistryCredential};
use edgefleet_common::sealing::{DevicePublicKey, SealedSecret};
use edgefleet_common::signing::CanonicalManifest;
use sha2::{Digest as _, Sha256};

use super::RenderError;
use super::catalog::Catalog;
use super::layering::winners;
use super::modules::module_for;
use crate::records::{Device, RenderedManifest, SealedPassword};

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A device's new manifest, rendered but not signed yet: see [`sign`](super::sign).
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    pub device_id: String,
    pub version: u64,
    pub manifest: CanonicalManifest,
    pub fingerprint: String,
    pub sources: BTreeMap<String, ModuleSource>,
    pub sealed_passwords: BTreeMap<String, SealedPassword>,
}

/// What rendering one device gives.
#[derive(Debug, Clone, PartialEq)]
pub enum Render {
    /// The content is what the device already has: its version and signature stay.
    Unchanged,
    /// New content under the next version.
    Changed(Draft),
}

/// Renders `device`'s manifest. The version increases only when the content differs from
/// `previous`; registry passwords sealed for `previous` are reused while neither the password
/// nor the device's key has changed (sealing costs a key agreement per device).
pub fn render_device(
    device: &Device,
    catalog: &Catalog,
    previous: Option<&RenderedManifest>,
) -> Result<Render, RenderError> {
    let mut manifest = Manifest::new(&device.id, 0);
    manifest
        .mqtt_password
        .clone_from(&device.mqtt_password_for_device);
    let mut sources = BTreeMap::new();
    let mut sealed_passwords = BTreeMap::new();
    for (module_name, deployment) in winners(device, catalog) {
        let (module, registry) = module_for(&module_name, deployment, catalog)?;
        manifest.modules.insert(module_name.clone(), module);
        sources.insert(module_name, deployment.source());
        let Some(registry_name) = registry else {
            continue;
        };
        if sealed_passwords.contains_key(&registry_name) {
            continue;
        }
        let registry = &catalog.registries[&registry_name];
        let reusable = previous
            .and_then(|p| p.sealed_passwords.get(&registry_name))
            .filter(|s| s.device_key == device.public_key && s.password_id == registry.password_id)
            .cloned();
        let sealed = match reusable {
            Some(sealed) => sealed,
            None => SealedPassword {
                sealed: seal_to(device, &registry.password)?,
                device_key: device.public_key.clone(),
                password_id: registry.password_id.clone(),
            },
        };
        manifest.registry_credentials.insert(
            registry_name.clone(),
            RegistryCredential {
                address: registry.address.clone(),
                username: registry.username.clone(),
                password: sealed.sealed.clone(),
            },
        );
        sealed_passwords.insert(registry_name, sealed);
    }
    // The fingerprint only has to be stable between renders by the same build, so it hashes
    // serde_json's plain serialization (version 0); only new content is written canonically.
    let plain = serde_json::to_vec(&manifest).map_err(|e| RenderError::Device {
        device: device.id.clone(),
        reason: format!("the manifest cannot be serialized: {e}"),
    })?;
    let fingerprint = sha256_hex(&plain);
    if previous.is_some_and(|p| p.fingerprint == fingerprint) {
        return Ok(Render::Unchanged);
    }
    manifest.version = previous.map_or(1, |p| p.version + 1);
    Ok(Render::Changed(Draft {
        device_id: device.id.clone(),
        version: manifest.version,
        manifest: CanonicalManifest::new(&manifest),
        fingerprint,
        sources,
        sealed_passwords,
    }))
}

fn seal_to(device: &Device, password: &str) -> Result<SealedSecret, RenderError> {
    let failed = |reason: String| RenderError::Device {
        device: device.id.clone(),
        reason,
    };
    let key: DevicePublicKey = device
        .public_key
        .parse()
        .map_err(|e| failed(format!("{e}")))?;
    key.seal(password).map_err(|e| failed(e.to_string()))
}
