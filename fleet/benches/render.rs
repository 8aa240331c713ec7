//! Rendering and signing manifests for a large fleet, on one core: 100,000 devices under 50
//! deployments (every manifest sealed to its device and signed), then the re-render after one
//! deployment changes (only its devices), then a re-render of every device with nothing
//! changed. Prints one JSON line per phase and the peak resident memory.
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
use edgefleet_fleet::render::{Catalog, render_device};
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
    }
}

/// 25 sites x 2 lines; deployment i targets one site (and, for every fifth, one line only at a
/// higher priority), so each device gets one to three modules.
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
        modules: BTreeMap::from([(
            module,
            DeploymentModule {
                model: format!("model{}:latest", i % 10),
                port: 5001,
                auth_key_sha256: vec![],
                data_collection_ppm: 0,
            },
        )]),
        created_seq: i as u64,
    };
    (d, target.parse().expect("condition"))
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
        })
        .collect();
    let models: BTreeMap<String, Vec<ModelVersion>> = (0..10)
        .map(|i| (format!("model{i}"), vec![model(&format!("model{i}"))]))
        .collect();
    let mut catalog = Catalog {
        registries: BTreeMap::from([(
            "acr".to_owned(),
            (
                "127.0.0.1:5000".to_owned(),
                "edge".to_owned(),
                "pw".to_owned(),
            ),
        )]),
        models,
        deployments: (0..DEPLOYMENTS).map(deployment).collect(),
    };

    // Where a full render's time goes: sealing a password to a device and signing a manifest.
    let sample = render_device(&devices[0], &catalog, None, &key).expect("render");
    let manifest = key
        .public_key()
        .verify(sample.wire.as_bytes())
        .expect("manifest");
    let started = Instant::now();
    for _ in 0..10_000 {
        std::hint::black_box(identity.public_key().seal("pw").expect("seal"));
    }
    let seal_us = started.elapsed().as_secs_f64() * 100.0;
    let started = Instant::now();
    for _ in 0..10_000 {
        std::hint::black_box(key.sign(&manifest));
    }
    let sign_us = started.elapsed().as_secs_f64() * 100.0;
    println!(
        "{}",
        json!({"phase": "cost per device", "seal_password_us": seal_us, "sign_manifest_us": sign_us})
    );

    let started = Instant::now();
    let rendered: Vec<RenderedManifest> = devices
        .iter()
        .map(|d| render_device(d, &catalog, None, &key).expect("render"))
        .collect();
    let full = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"phase": "render, seal and sign every device", "devices": DEVICES, "deployments": DEPLOYMENTS, "seconds": full})
    );

    // One deployment changes its model: only the devices it targets are rendered again.
    let changed = 7;
    let (old, condition) = catalog.deployments[changed].clone();
    let mut new = old.clone();
    for m in new.modules.values_mut() {
        m.model = "model9:latest".into();
    }
    catalog.deployments[changed] = (new, condition.clone());
    let started = Instant::now();
    let mut touched = 0;
    let mut new_versions = 0;
    for (device, previous) in devices.iter().zip(&rendered) {
        if !condition.matches(&device.id, &device.tags) {
            continue;
        }
        touched += 1;
        let next = render_device(device, &catalog, Some(previous), &key).expect("render");
        if next.version != previous.version {
            new_versions += 1;
        }
    }
    let partial = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"phase": "re-render after one deployment changed", "devices_rendered": touched, "new_versions": new_versions, "seconds": partial})
    );

    catalog.deployments[changed] = (old, condition);
    let started = Instant::now();
    let unchanged = devices
        .iter()
        .zip(&rendered)
        .filter(|(d, p)| {
            render_device(d, &catalog, Some(p), &key)
                .expect("render")
                .version
                == p.version
        })
        .count();
    let noop = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"phase": "re-render every device, nothing changed", "devices": DEVICES, "unchanged": unchanged, "seconds": noop})
    );
    println!("{}", json!({"peak_rss_mib": vm_hwm_mib()}));
}
