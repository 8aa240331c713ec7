//! Rendering without a store: model references, base and layered deployments, pinned images
//! and registry credentials, and versions that change only with the content.

use std::collections::BTreeMap;

use edgefleet_common::fleet_api::{ContainerModule, ModelModule};
use edgefleet_common::manifest::{Manifest, Module};
use edgefleet_common::sealing::{DeviceIdentity, SealedSecret};
use edgefleet_common::signing::FleetSigningKey;

use super::*;
use crate::condition::Condition;
use crate::records::{
    Deployment, DeploymentModule, Device, ModelVersion, Package, RenderedManifest,
};

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
        mqtt_password_for_device: None,
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
    let render =
        |c: &Catalog, previous: Option<&RenderedManifest>| match render_device(&gw, c, previous)
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
