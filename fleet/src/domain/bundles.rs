//! What an offline bundle holds: the signed manifests of the devices it is for and the images
//! they reference, with the logins of their registries (`crate::bundle` writes it).

use edgefleet_common::manifest::{Manifest, Module};
use edgefleet_common::module_image::ImageReference;
use edgefleet_common::signing::SignedManifest;

use super::Fleet;
use crate::bundle::BundleContents;
use crate::error::FleetError;
use crate::records::{Registry, RenderedManifest};
use crate::store::kind;

/// The devices a bundle is made for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleFor {
    Device(String),
    /// Every device the deployment's modules reach.
    Deployment(String),
}

impl Fleet {
    pub async fn bundle_contents(&self, target: &BundleFor) -> Result<BundleContents, FleetError> {
        let rendered: Vec<RenderedManifest> = match target {
            BundleFor::Device(id) => {
                self.device_record(id).await?;
                let manifest = self.store.get(kind::MANIFEST, id).await?.ok_or_else(|| {
                    FleetError::not_found(format!(
                        "no manifest rendered for {id:?}: no deployment targets it"
                    ))
                })?;
                vec![manifest]
            }
            BundleFor::Deployment(name) => {
                self.deployment_view(name).await?;
                let manifests: Vec<RenderedManifest> = self
                    .store
                    .list::<RenderedManifest>(kind::MANIFEST)
                    .await?
                    .into_iter()
                    .map(|(_, m)| m)
                    .filter(|m| m.sources.values().any(|s| s.deployment == *name))
                    .collect();
                if manifests.is_empty() {
                    return Err(FleetError::not_found(format!(
                        "deployment {name:?} reaches no device yet"
                    )));
                }
                manifests
            }
        };
        let registries: Vec<Registry> = self
            .store
            .list::<Registry>(kind::REGISTRY)
            .await?
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        let mut contents = BundleContents {
            fleet: self.settings.name.clone(),
            ..BundleContents::default()
        };
        for m in rendered {
            let manifest = parse_wire(&m)?;
            for module in manifest.modules.values() {
                let wanted = match module {
                    Module::Model(_) => true,
                    // An image the devices must already have is not the bundle's to carry.
                    Module::Container(c) => c.image_pull_policy.is_on_create(),
                };
                if !wanted || contents.images.contains_key(module.image()) {
                    continue;
                }
                let host = module
                    .image()
                    .parse::<ImageReference>()
                    .ok()
                    .map(|r| r.registry);
                let login = registries
                    .iter()
                    .find(|r| Some(&r.address) == host.as_ref())
                    .map(|r| self.login(r))
                    .transpose()?;
                contents.images.insert(module.image().to_owned(), login);
            }
            contents
                .manifests
                .insert(m.device_id.clone(), (m.version, m.wire));
        }
        Ok(contents)
    }
}

/// The manifest inside a rendered manifest's signed wire bytes.
fn parse_wire(rendered: &RenderedManifest) -> Result<Manifest, FleetError> {
    let bad = |e: serde_json::Error| {
        FleetError::invalid(format!(
            "the stored manifest of {:?} cannot be read: {e}",
            rendered.device_id
        ))
    };
    let signed: SignedManifest = serde_json::from_str(&rendered.wire).map_err(bad)?;
    serde_json::from_value(signed.manifest).map_err(bad)
}
