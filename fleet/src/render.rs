//! Rendering: from deployments, models and registries to one signed manifest per device.
//! Pure: no I/O, so the fleet service, the benchmark and the tests share it.

use std::collections::BTreeMap;

use edgefleet_common::fleet_api::{ContainerModule, ModelModule, ModuleSource};
use edgefleet_common::manifest::{
    ContainerSpec, Manifest, ModelServing, ModelSpec, Module, RegistryCredential,
};
use edgefleet_common::module_image::ImageReference;
use edgefleet_common::sealing::{DevicePublicKey, SealedSecret};
use edgefleet_common::signing::{CanonicalManifest, FleetSigningKey};
use sha2::{Digest as _, Sha256};

use crate::condition::Condition;
use crate::records::{
    Deployment, DeploymentModule, Device, ModelVersion, RenderedManifest, Rollout, SealedPassword,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    #[error("model {0:?} is not registered (see `edgefleet model list`)")]
    UnknownModel(String),
    #[error("model reference {0:?} is not name:latest or name:<version>")]
    BadModelReference(String),
    #[error(
        "model {0} has not been packaged yet (run `edgefleet model package {0} --registry ...`)"
    )]
    NotPackaged(String),
    #[error("registry {0:?} is not configured (see `edgefleet registry list`)")]
    UnknownRegistry(String),
    #[error("module {module}: {reason}")]
    Module { module: String, reason: String },
    #[error("device {device}: {reason}")]
    Device { device: String, reason: String },
}

/// Everything rendering reads, with deployment conditions parsed and registry passwords
/// opened once for a whole batch of devices.
#[derive(Debug, Default)]
pub struct Catalog {
    pub registries: BTreeMap<String, RegistryAccess>,
    /// Model name -> versions, ascending.
    pub models: BTreeMap<String, Vec<ModelVersion>>,
    pub deployments: Vec<(Deployment, Condition)>,
    /// Deployments whose staged rollout still holds devices on the previous revision.
    pub held_back: BTreeMap<String, HeldBack>,
}

/// A deployment's rollout and the revision devices not moved yet keep.
#[derive(Debug)]
pub struct HeldBack {
    pub rollout: Rollout,
    /// The previous revision (`None`: the deployment is new, so it gives them nothing).
    pub previous: Option<(Deployment, Condition)>,
}

/// A registry as devices see it.
#[derive(Debug, Clone)]
pub struct RegistryAccess {
    pub address: String,
    pub username: String,
    pub password: String,
    /// Names this password without revealing it (a digest of the fleet's sealed-at-rest copy,
    /// which changes whenever the password is set), so a device's sealed copy is reused until
    /// the password changes.
    pub password_id: String,
}

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

/// The deployments that apply to `device`, in the order they apply: its base deployment (the
/// highest priority among base deployments whose condition selects it, ties to the newest),
/// then its layered deployments in ascending priority (then age), each adding or overriding
/// modules — Azure IoT Edge's semantics.
pub fn applicable<'a>(device: &Device, catalog: &'a Catalog) -> Vec<&'a Deployment> {
    let selecting = catalog
        .deployments
        .iter()
        .filter_map(|current| match catalog.held_back.get(&current.0.name) {
            Some(held) if !held.rollout.moved(&device.id) => held.previous.as_ref(),
            _ => Some(current),
        })
        .filter(|(_, condition)| condition.matches(&device.id, &device.tags))
        .map(|(deployment, _)| deployment);
    let order = |d: &&Deployment| (d.priority, d.created_seq);
    let base = selecting.clone().filter(|d| !d.layered).max_by_key(order);
    let mut layers: Vec<&Deployment> = selecting.filter(|d| d.layered).collect();
    layers.sort_by_key(order);
    base.into_iter().chain(layers).collect()
}

/// For each module name, the deployment it comes from on `device` (see [`applicable`]).
pub fn winners<'a>(device: &Device, catalog: &'a Catalog) -> BTreeMap<String, &'a Deployment> {
    let mut won = BTreeMap::new();
    for deployment in applicable(device, catalog) {
        for module in deployment.modules.keys() {
            won.insert(module.clone(), deployment);
        }
    }
    won
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
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

/// A device's new manifest, rendered but not signed yet: see [`sign`].
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

/// New manifests are signed (and the service stores and publishes them) this many at a time:
/// a change that touches the whole fleet holds a bounded number of them in memory, and a path
/// to the signed root has at most 12 steps.
pub const SIGNING_BATCH: usize = 4096;

/// Signs drafts with one signature over the batch (see `edgefleet_common::signing`).
pub fn sign(
    drafts: Vec<Draft>,
    key: &FleetSigningKey,
) -> Result<Vec<RenderedManifest>, RenderError> {
    let mut manifests = Vec::with_capacity(drafts.len());
    let mut rendered = Vec::with_capacity(drafts.len());
    for draft in drafts {
        manifests.push(draft.manifest);
        rendered.push(RenderedManifest {
            device_id: draft.device_id,
            version: draft.version,
            fingerprint: draft.fingerprint,
            sources: draft.sources,
            sealed_passwords: draft.sealed_passwords,
            wire: String::new(),
        });
    }
    for (rendered, wire) in rendered.iter_mut().zip(key.sign_batch(manifests)) {
        rendered.wire = String::from_utf8(wire).map_err(|e| RenderError::Device {
            device: rendered.device_id.clone(),
            reason: format!("the signed manifest is not UTF-8: {e}"),
        })?;
    }
    Ok(rendered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Package;
    use edgefleet_common::sealing::DeviceIdentity;

    fn model(name: &str, version: u32, packaged: bool) -> ModelVersion {
        ModelVersion {
            name: name.into(),
            version,
            tags: BTreeMap::new(),
            description: String::new(),
            sha256: String::new(),
            size: 0,
            registered_ms: 0,
            package: packaged.then(|| Package {
                registry: "acr".into(),
                repository: format!("models/{name}"),
                image: format!(
                    "127.0.0.1:5000/models/{name}:{version}@sha256:{}",
                    "a".repeat(64)
                ),
                digest: format!("sha256:{}", "a".repeat(64)),
            }),
            sample_input: None,
            profile: None,
        }
    }

    fn deployment(
        name: &str,
        target: &str,
        priority: i32,
        seq: u64,
        modules: &[(&str, &str)],
    ) -> (Deployment, Condition) {
        let d = Deployment {
            name: name.into(),
            target: target.into(),
            priority,
            layered: false,
            modules: modules
                .iter()
                .map(|(m, model)| {
                    (
                        (*m).to_owned(),
                        DeploymentModule::registered_model(model, 8001),
                    )
                })
                .collect(),
            images: BTreeMap::new(),
            models: BTreeMap::new(),
            revision: 1,
            rollout: None,
            created_seq: seq,
        };
        let c = target.parse().expect("condition");
        (d, c)
    }

    fn layer(
        name: &str,
        target: &str,
        priority: i32,
        seq: u64,
        modules: &[(&str, &str)],
    ) -> (Deployment, Condition) {
        let (mut d, c) = deployment(name, target, priority, seq, modules);
        d.layered = true;
        (d, c)
    }

    fn device(id: &str, tags: &[(&str, &str)], identity: &DeviceIdentity) -> Device {
        Device {
            id: id.into(),
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            public_key: identity.public_key().to_string(),
            added_ms: 0,
            mqtt_password: SealedSecret::from_armored(String::new()),
        }
    }

    fn catalog(deployments: Vec<(Deployment, Condition)>, models: Vec<ModelVersion>) -> Catalog {
        let mut by_name: BTreeMap<String, Vec<ModelVersion>> = BTreeMap::new();
        for m in models {
            by_name.entry(m.name.clone()).or_default().push(m);
        }
        Catalog {
            registries: BTreeMap::from([(
                "acr".to_owned(),
                RegistryAccess {
                    address: "127.0.0.1:5000".to_owned(),
                    username: "edge".to_owned(),
                    password: "pw".to_owned(),
                    password_id: "1".to_owned(),
                },
            )]),
            models: by_name,
            deployments,
            held_back: BTreeMap::new(),
        }
    }

    #[test]
    fn latest_follows_the_newest_packaged_version() {
        let c = catalog(
            vec![],
            vec![
                model("d", 1, true),
                model("d", 2, true),
                model("d", 3, false),
            ],
        );
        assert_eq!(
            resolve_model(&c.models, "d:latest")
                .expect("resolves")
                .version,
            2
        );
        assert_eq!(
            resolve_model(&c.models, "d:1").expect("resolves").version,
            1
        );
        assert_eq!(
            resolve_model(&c.models, "d:3"),
            Err(RenderError::NotPackaged("d:3".into()))
        );
        assert_eq!(
            resolve_model(&c.models, "x:latest"),
            Err(RenderError::UnknownModel("x".into()))
        );
    }

    #[test]
    fn one_base_applies_by_priority_then_age_and_layers_add_or_override_on_top() {
        let c = catalog(
            vec![
                deployment(
                    "base",
                    "tags.site = 'p1'",
                    10,
                    1,
                    &[("a", "d:1"), ("b", "d:1")],
                ),
                deployment("override", "deviceId = 'gw-2'", 20, 2, &[("a", "d:2")]),
                deployment("tie", "tags.site = 'p1'", 10, 3, &[("b", "d:2")]),
                layer("high", "tags.site = 'p1'", 9, 4, &[("c", "d:1")]),
                layer(
                    "low",
                    "tags.site = 'p1'",
                    1,
                    5,
                    &[("b", "d:1"), ("c", "d:2")],
                ),
            ],
            vec![model("d", 1, true), model("d", 2, true)],
        );
        let id = DeviceIdentity::generate();
        let names = |w: BTreeMap<String, &Deployment>| {
            w.into_iter()
                .map(|(m, d)| format!("{m}={}", d.name))
                .collect::<Vec<_>>()
        };
        let gw1 = device("gw-1", &[("site", "p1")], &id);
        assert_eq!(
            names(winners(&gw1, &c)),
            ["b=low", "c=high"],
            "base 'tie' (newest of priority 10) alone, then layers low and high"
        );
        let gw2 = device("gw-2", &[("site", "p1")], &id);
        assert_eq!(names(winners(&gw2, &c)), ["a=override", "b=low", "c=high"]);
        assert!(winners(&device("gw-3", &[("site", "p2")], &id), &c).is_empty());
    }

    #[test]
    fn container_and_image_modules_carry_their_pinned_image_and_their_registrys_credentials() {
        let id = DeviceIdentity::generate();
        let pinned = format!("127.0.0.1:5000/tools/sensor:1@sha256:{}", "b".repeat(64));
        let (mut d, cond) = deployment("set", "tags.site = 'p1'", 0, 1, &[]);
        d.modules.insert(
            "sensor".into(),
            DeploymentModule::Container(ContainerModule {
                image: "127.0.0.1:5000/tools/sensor:1".into(),
                env: BTreeMap::from([("RATE".to_owned(), "5".to_owned())]),
                startup_order: Some(1),
                ..ContainerModule::default()
            }),
        );
        d.images.insert("sensor".into(), pinned.clone());
        d.modules.insert(
            "public".into(),
            DeploymentModule::Model(ModelModule {
                image: Some(format!("10.0.0.9:5000/m/x@sha256:{}", "c".repeat(64))),
                ..ModelModule::default()
            }),
        );
        let c = catalog(vec![(d, cond)], vec![]);
        let Render::Changed(draft) =
            render_device(&device("gw-1", &[("site", "p1")], &id), &c, None).expect("render")
        else {
            panic!("a first manifest");
        };
        let manifest: Manifest = serde_json::from_slice(draft.manifest.bytes()).expect("json");
        let Module::Container(sensor) = &manifest.modules["sensor"] else {
            panic!("a container");
        };
        assert_eq!(
            (sensor.image.as_str(), sensor.startup_order),
            (pinned.as_str(), Some(1))
        );
        assert_eq!(sensor.env["RATE"], "5");
        let Module::Model(public) = &manifest.modules["public"] else {
            panic!("a model");
        };
        assert!(public.serving.is_none(), "no port: MQTT inputs only");
        assert_eq!(
            manifest.registry_credentials.keys().collect::<Vec<_>>(),
            ["acr"],
            "the sensor's registry by address; none for an unknown host"
        );
        assert_eq!(draft.sources["sensor"].revision, 1);
    }

    #[test]
    fn the_version_increases_only_when_the_content_changes() {
        let id = DeviceIdentity::generate();
        let key = FleetSigningKey::generate();
        let gw = device("gw-1", &[("site", "p1")], &id);
        let c1 = catalog(
            vec![deployment(
                "base",
                "tags.site = 'p1'",
                10,
                1,
                &[("a", "d:latest")],
            )],
            vec![model("d", 1, true)],
        );
        let render = |c: &Catalog, previous: Option<&RenderedManifest>| match render_device(
            &gw, c, previous,
        )
        .expect("render")
        {
            Render::Changed(draft) => Some(sign(vec![draft], &key).expect("signed").remove(0)),
            Render::Unchanged => None,
        };
        let first = render(&c1, None).expect("a first manifest");
        assert_eq!(first.version, 1);
        assert_eq!(
            render(&c1, Some(&first)),
            None,
            "same content, same manifest"
        );

        let c2 = catalog(
            c1.deployments.clone(),
            vec![model("d", 1, true), model("d", 2, true)],
        );
        let second = render(&c2, Some(&first)).expect("new content");
        assert_eq!(second.version, 2);
        assert_eq!(
            second.sealed_passwords, first.sealed_passwords,
            "the password did not change, so it is not sealed again"
        );
        let manifest = key
            .public_key()
            .verify(second.wire.as_bytes())
            .expect("signed");
        assert!(manifest.modules["a"].image().contains("models/d:2@"));
        let sealed = &manifest.registry_credentials["acr"].password;
        assert_eq!(id.unseal(sealed).expect("sealed to the device"), "pw");

        let mut c3 = catalog(
            c2.deployments.clone(),
            c2.models.values().flatten().cloned().collect(),
        );
        let acr = c3.registries.get_mut("acr").expect("acr");
        acr.password = "rotated".into();
        acr.password_id = "2".into();
        let third = render(&c3, Some(&second)).expect("a new password is new content");
        assert_eq!(third.version, 3);
        let manifest = key
            .public_key()
            .verify(third.wire.as_bytes())
            .expect("signed");
        let sealed = &manifest.registry_credentials["acr"].password;
        assert_eq!(id.unseal(sealed).expect("sealed to the device"), "rotated");
    }
}
