//! Rendering and signing manifests for a large fleet, on one core: 100,000 devices under 50
//! deployments. First render (each device's registry password sealed to it), then a change of
//! every deployment (every device rendered and signed again, passwords reused; once signed in
//! batches as the fleet does, once with a signature per manifest as the reference), then a
//! change of one deployment (only its devices), then a re-render with nothing changed. Prints
//! one JSON line per phase, the speed-up of batch signing and the peak resident memory.
//!
//! cargo bench -p edgefleet-fleet --bench render

use std::collections::BTreeMap;
use std::time::Instant;

use edgefleet_common::sealing::{DeviceIdentity, SealedSecret};
use edgefleet_common::signing::FleetSigningKey;
use edgefleet_fleet::condition::Condition;
use edgefleet_fleet::records::{
    Deployment, DeploymentModule, Device, ModelVersion, Package, RenderedManifest,
};
use edgefleet_fleet::render::{
    Catalog, RegistryAccess, Render, SIGNING_BATCH, render_device, sign,
};
use serde_json::json;

const DEVICES: usize = 100_000;
const DEPLOYMENTS: usize = 50;
const SITES: usize = 25;

fn vm_hwm_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .map(str::to_owned)
        })
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn model(name: &str) -> ModelVersion {
    ModelVersion {
        name: name.into(),
        version: 1,
        tags: BTreeMap::new(),
        description: String::new(),
        sha256: String::new(),
        size: 0,
        registered_ms: 0,
        package: Some(Package {
            registry: "acr".into(),
            repository: format!("models/{name}"),
            image: format!("127.0.0.1:5000/models/{name}:1@sha256:{}", "a".repeat(64)),
            digest: format!("sha256:{}", "a".repeat(64)),
        }),
        sample_input: None,
        profile: None,
    }
}

/// 25 sites x 2 lines; deployment i targets one site (and, for every fifth, one line only at a
/// higher priority); two in three are layered, so each device gets its base and one or two
/// layers.
fn deployment(i: usize) -> (Deployment, Condition) {
    let site = i % SITES;
    let (target, priority) = if i % 5 == 4 {
        (format!("tags.site = 's{site}' AND tags.line = 'b'"), 20)
    } else {
        (format!("tags.site = 's{site}'"), 10)
    };
    let module = format!("m{}", i % 3);
    let d = Deployment {
        name: format!("d{i}"),
        target: target.clone(),
        priority,
        // Modules m1 and m2 come in layers on top of each device's base (m0).
        layered: !i.is_multiple_of(3),
        modules: BTreeMap::from([(
            module,
            DeploymentModule::registered_model(&format!("model{}:latest", i % 10), 5001),
        )]),
        images: BTreeMap::new(),
        models: BTreeMap::new(),
        revision: 1,
        rollout: None,
        created_seq: i as u64,
    };
    (d, target.parse().expect("condition"))
}

/// How the changed manifests of one render are signed.
#[derive(Clone, Copy)]
enum Signing {
    /// One signature per `SIGNING_BATCH` manifests, over their hash tree (what the fleet does).
    Batch,
    /// One signature per manifest (the reference).
    EachAlone,
}

/// Renders the devices `only` selects (all when `None`) against their `previous` manifests,
/// signs what changed, and returns the new manifests by device index and how many devices
/// were rendered.
fn render_fleet(
    devices: &[Device],
    catalog: &Catalog,
    previous: &[RenderedManifest],
    only: Option<&Condition>,
    key: &FleetSigningKey,
    signing: Signing,
) -> (Vec<(usize, RenderedManifest)>, usize) {
    let mut rendered = 0;
    let mut drafts = Vec::new();
    for (i, device) in devices.iter().enumerate() {
        if only.is_some_and(|c| !c.matches(&device.id, &device.tags)) {
            continue;
        }
        rendered += 1;
        if let Render::Changed(draft) =
            render_device(device, catalog, previous.get(i)).expect("render")
        {
            drafts.push((i, draft));
        }
    }
    let (indices, drafts): (Vec<usize>, Vec<_>) = drafts.into_iter().unzip();
    let signed = match signing {
        Signing::Batch => {
            let mut signed = Vec::with_capacity(drafts.len());
            let mut drafts = drafts.into_iter().peekable();
            while drafts.peek().is_some() {
                let batch = drafts.by_ref().take(SIGNING_BATCH).collect();
                signed.extend(sign(batch, key).expect("signed"));
            }
            signed
        }
        Signing::EachAlone => drafts
            .into_iter()
            .flat_map(|draft| sign(vec![draft], key).expect("signed"))
            .collect(),
    };
    (indices.into_iter().zip(signed).collect(), rendered)
}

fn apply(manifests: &mut Vec<RenderedManifest>, changed: Vec<(usize, RenderedManifest)>) {
    for (i, manifest) in changed {
        if i < manifests.len() {
            manifests[i] = manifest;
        } else {
            manifests.push(manifest);
        }
    }
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let started = Instant::now();
    let out = f();
    (out, started.elapsed().as_secs_f64())
}

fn main() {
    let key = FleetSigningKey::generate();
    let identity = DeviceIdentity::generate();
    let devices: Vec<Device> = (0..DEVICES)
        .map(|i| Device {
            id: format!("gw-{i:06}"),
            tags: BTreeMap::from([
                ("site".to_owned(), format!("s{}", i % SITES)),
                (
                    "line".to_owned(),
                    if i % 2 == 0 {
                        "a".to_owned()
                    } else {
                        "b".to_owned()
                    },
                ),
            ]),
            // One recipient for all: sealing costs the same whatever the key.
            public_key: identity.public_key().to_string(),
            added_ms: 0,
            mqtt_password: SealedSecret::from_armored(String::new()),
            mqtt_password_for_device: None,
        })
        .collect();
    let models: BTreeMap<String, Vec<ModelVersion>> = (0..10)
        .map(|i| (format!("model{i}"), vec![model(&format!("model{i}"))]))
        .collect();
    let mut catalog = Catalog {
        registries: BTreeMap::from([(
            "acr".to_owned(),
            RegistryAccess {
                address: "127.0.0.1:5000".to_owned(),
                username: "edge".to_owned(),
                password: "pw".to_owned(),
                password_id: "1".to_owned(),
            },
        )]),
        models,
        deployments: (0..DEPLOYMENTS).map(deployment).collect(),
        held_back: BTreeMap::new(),
    };

    // What a device costs where nothing is shared: sealing a password to it, and signing its
    // manifest alone.
    let (first, _) = render_fleet(&devices[..1], &catalog, &[], None, &key, Signing::Batch);
    let first = &first[0].1;
    let manifest = key
        .public_key()
        .verify(first.wire.as_bytes())
        .expect("manifest");
    let ((), seal) = timed(|| {
        for _ in 0..10_000 {
            std::hint::black_box(identity.public_key().seal("pw").expect("seal"));
        }
    });
    let ((), sign_alone) = timed(|| {
        for _ in 0..10_000 {
            std::hint::black_box(key.sign(&manifest));
        }
    });
    println!(
        "{}",
        json!({"phase": "cost per device", "seal_password_us": seal * 100.0, "sign_one_manifest_alone_us": sign_alone * 100.0, "manifest_bytes": first.wire.len()})
    );

    let mut manifests = Vec::new();
    let ((changed, rendered), seconds) =
        timed(|| render_fleet(&devices, &catalog, &manifests, None, &key, Signing::Batch));
    println!(
        "{}",
        json!({"phase": "first render: every password sealed to its device", "devices": rendered, "new_versions": changed.len(), "deployments": DEPLOYMENTS, "seconds": seconds})
    );
    apply(&mut manifests, changed);

    // Every deployment moves its modules to another port: every device gets new content.
    // Once with the batch signature, once more with a signature per manifest (the reference).
    let mut seconds_by_signing = Vec::new();
    for (signing, name) in [
        (Signing::Batch, "one signature per 4,096 manifests"),
        (Signing::EachAlone, "one signature per manifest"),
    ] {
        for (deployment, _) in &mut catalog.deployments {
            for m in deployment.modules.values_mut() {
                if let DeploymentModule::Model(m) = m {
                    m.port = m.port.map(|p| p + 1);
                }
            }
        }
        let ((changed, rendered), seconds) =
            timed(|| render_fleet(&devices, &catalog, &manifests, None, &key, signing));
        println!(
            "{}",
            json!({"phase": "every deployment changed: render and sign every device", "signing": name, "devices": rendered, "new_versions": changed.len(), "deployments": DEPLOYMENTS, "seconds": seconds, "mean_manifest_bytes": changed.iter().map(|(_, m)| m.wire.len()).sum::<usize>() / changed.len().max(1)})
        );
        apply(&mut manifests, changed);
        seconds_by_signing.push(seconds);
    }
    println!(
        "{}",
        json!({"speedup_batch_vs_per_manifest_signing": seconds_by_signing[1] / seconds_by_signing[0]})
    );

    // One deployment changes its model: only the devices it targets are rendered again.
    let (deployment, condition) = &mut catalog.deployments[7];
    for m in deployment.modules.values_mut() {
        *m = DeploymentModule::registered_model("model9:latest", 5001);
    }
    let condition = condition.clone();
    let ((changed, rendered), seconds) = timed(|| {
        render_fleet(
            &devices,
            &catalog,
            &manifests,
            Some(&condition),
            &key,
            Signing::Batch,
        )
    });
    println!(
        "{}",
        json!({"phase": "one deployment changed: only its devices", "devices_rendered": rendered, "new_versions": changed.len(), "seconds": seconds})
    );
    apply(&mut manifests, changed);

    let ((changed, rendered), seconds) =
        timed(|| render_fleet(&devices, &catalog, &manifests, None, &key, Signing::Batch));
    println!(
        "{}",
        json!({"phase": "nothing changed: every device rendered", "devices": rendered, "new_versions": changed.len(), "seconds": seconds})
    );
    println!("{}", json!({"peak_rss_mib": vm_hwm_mib()}));
}
