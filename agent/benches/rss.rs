//! Resident memory of the real agent binary, idle: connected to a broker with no model, then
//! with the diabetes model loaded and served. Prints one JSON line per state.
//!
//! cargo bench -p edgefleet-agent --bench rss   (needs Debian's mosquitto and docker-registry)

use std::time::Duration;

use edgefleet_common::manifest::{Manifest, ModelServing, ModelSpec, Module, RegistryCredential};
use edgefleet_common::signing::FleetSigningKey;
use edgefleet_common::topics::DeviceTopics;
use edgefleet_tests::{
    AgentProcess, AgentSetup, Mosquitto, OciLayout, QUICKSTART_REQUEST, Registry, free_port,
    model_dir, ort_library, score, skopeo_push, wait_for,
};
use serde_json::json;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The largest mappings by resident size (`EDGEFLEET_RSS_DETAIL=1`), to see where memory goes.
fn print_top_mappings(pid: u32) {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut mapping = String::new();
    let mut sizes: Vec<(u64, String)> = Vec::new();
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // A mapping's header: "start-end perms offset dev inode [path]".
        if fields.len() >= 5 && fields[0].contains('-') && fields[1].len() == 4 {
            mapping = fields.get(5..).map(|p| p.join(" ")).unwrap_or_default();
        } else if fields.first() == Some(&"Rss:") {
            sizes.push((
                fields.get(1).and_then(|v| v.parse().ok()).unwrap_or(0),
                mapping.clone(),
            ));
        }
    }
    sizes.sort_by_key(|s| std::cmp::Reverse(s.0));
    for (kib, name) in sizes.iter().take(10) {
        eprintln!("{kib:>8} kB  {name}");
    }
}

/// The manifest that serves the diabetes model pushed as `layout` on `port`.
fn diabetes_manifest(
    registry: &Registry,
    layout: &OciLayout,
    public_key: &str,
    port: u16,
) -> Manifest {
    let mut manifest = Manifest::new("gw", 1);
    manifest.registry_credentials.insert(
        "local".into(),
        RegistryCredential {
            address: registry.address(),
            username: "edge".into(),
            password: public_key
                .parse::<edgefleet_common::sealing::DevicePublicKey>()
                .expect("key")
                .seal("edge-pass")
                .expect("seal"),
        },
    );
    manifest.modules.insert(
        "diabetes".into(),
        Module::Model(ModelSpec {
            image: format!(
                "{}/models/diabetes@{}",
                registry.address(),
                layout.manifest_digest
            ),
            status: Default::default(),
            serving: Some(ModelServing {
                http_port: port,
                bind_address: "127.0.0.1".into(),
                auth_key_sha256: vec![],
                mqtt_input: true,
                data_collection_ppm: 0,
            }),
            session: Default::default(),
            batch: None,
        }),
    );
    manifest
}

fn main() {
    let broker = Mosquitto::new()
        .add_user("gw", "pw")
        .add_user("fleet", "pw")
        .start();
    let registry = Registry::start("edge", "edge-pass");
    let key = FleetSigningKey::generate();
    let mut agent = AgentProcess::init(
        AgentSetup {
            binary: env!("CARGO_BIN_EXE_edgefleet-agent").into(),
            device_id: "gw".into(),
            fleet: "bench".into(),
            fleet_public_key: key.public_key().to_string(),
            mqtt_username: "gw".into(),
            mqtt_password: "pw".into(),
            insecure_registries: vec![registry.address()],
            onnx_runtime_library: ort_library(),
            mqtt_ca_file: None,
            mqtt_client_cert: None,
            registry_ca_file: None,
        },
        &broker,
    );
    agent.start();
    std::thread::sleep(Duration::from_secs(3));
    let pid = agent.pid().expect("running");
    println!(
        "{}",
        json!({"state": "idle, no model", "rss_mib": rss_kib(pid) as f64 / 1024.0})
    );

    let model = std::fs::read(model_dir("diabetes").join("model.onnx")).expect("model");
    let layout = OciLayout::model_module(&model, None, &[]);
    skopeo_push(
        &layout,
        &registry,
        "models/diabetes",
        "1",
        "edge",
        "edge-pass",
    )
    .expect("push");
    let port = free_port();
    let manifest = diabetes_manifest(&registry, &layout, &agent.public_key, port);
    let topics = DeviceTopics::new("bench", "gw").expect("topics");
    let wire = String::from_utf8(key.sign(&manifest)).expect("utf-8");
    assert!(broker.publish("fleet", "pw", &topics.desired(), &wire, true));
    wait_for("the model to be applied", Duration::from_secs(60), || {
        let line = broker
            .subscribe("fleet", "pw", &topics.reported(), 1, 2)
            .into_iter()
            .next()?;
        line.contains("\"status\":200").then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    println!(
        "{}",
        json!({"state": "idle, diabetes model served", "rss_mib": rss_kib(pid) as f64 / 1024.0})
    );
    if std::env::var_os("EDGEFLEET_RSS_DETAIL").is_some() {
        print_top_mappings(pid);
    }

    // A restart serves the model from the cache, without a pull in this process.
    agent.stop();
    agent.start();
    wait_for("the model served again", Duration::from_secs(60), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    std::thread::sleep(Duration::from_secs(3));
    let pid = agent.pid().expect("running");
    println!(
        "{}",
        json!({"state": "idle, diabetes model served after a restart (from the cache)", "rss_mib": rss_kib(pid) as f64 / 1024.0})
    );

    // Serving pages back the code it runs: measured after 20,000 requests on 4 connections.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..5_000 {
                    assert_eq!(score(port, QUICKSTART_REQUEST).0, 200);
                }
            });
        }
    });
    println!(
        "{}",
        json!({"state": "serving, just after 20,000 requests", "rss_mib": rss_kib(pid) as f64 / 1024.0})
    );
    if std::env::var_os("EDGEFLEET_RSS_DETAIL").is_some() {
        print_top_mappings(pid);
    }
    agent.stop();
}
