//! The fleet service at scale, measured with simulated devices (`edgefleet-sim`) on a real
//! mosquitto, registry and PostgreSQL, the release binaries:
//! - convergence: DEVICES simulated devices connected; the time from `deployment create` to
//!   every device reporting the manifest applied (the fleet's rollout status), with one and
//!   with two replicas on one PostgreSQL;
//! - ingestion: telemetry records stored and acknowledged per second at the fleet, one
//!   service, the embedded store and PostgreSQL, the devices sending more than it stores;
//! - render: 100,000 devices (no connections) under 50 deployments, rendered, signed, stored
//!   and published (retained, acknowledged by the broker) through the service's API, on
//!   PostgreSQL and on the embedded store: the import, the 50 deployments created, changed and
//!   saved unchanged (one call each), one changed, and a new version of the model they all
//!   follow (one job re-rendering every device).
//!
//! cargo build --release --bins -p edgefleet-fleet -p edgefleet-sim
//! cargo bench -p edgefleet-fleet --bench scale [-- DEVICES] [convergence|ingestion|render]

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgefleet_tests::{
    FleetProcess, Mosquitto, Postgres, Registry, http_client, wait_for, wait_for_explained,
    workspace_binary,
};
use std::collections::BTreeMap;

use edgefleet_common::fleet_api::{DeploymentModule, DeploymentRequest, DeviceImport};
use edgefleet_common::sealing::DeviceIdentity;
use serde_json::Value;

/// Devices of the ingestion runs, and what they send together.
const INGESTION_DEVICES: usize = 1000;
const INGESTION_OFFERED: u32 = 30_000;
const INGESTION_SECONDS: u64 = 20;

/// A running `edgefleet-sim` and the last line it printed.
struct Sim {
    child: Child,
    last: Arc<Mutex<String>>,
}

impl Sim {
    fn start(fleet: &FleetProcess, broker: &Mosquitto, devices: usize, rate: u32) -> Self {
        let mut child = Command::new(workspace_binary("edgefleet-sim"))
            .args(["--server", &fleet.url(), "--mqtt-url", &broker.url()])
            .args([
                "--mqtt-username",
                "fleet",
                "--devices",
                &devices.to_string(),
            ])
            .args(["--add", "--tag", "site=sim"])
            .arg("--identity")
            .arg(std::env::temp_dir().join(format!("edgefleet-sim-{}.key", std::process::id())))
            .args(["--records-per-second", &rate.to_string()])
            .env("EDGEFLEET_TOKEN", &fleet.token)
            .env("EDGEFLEET_MQTT_PASSWORD", "fleet-pass")
            .stdout(Stdio::piped())
            .spawn()
            .expect("run edgefleet-sim");
        let last = Arc::new(Mutex::new(String::new()));
        let sink = last.clone();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(mut l) = sink.lock() {
                    *l = line;
                }
            }
        });
        Self { child, last }
    }

    fn line(&self) -> String {
        self.last.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Devices whose last applied manifest is `version`.
    fn applied(&self, version: u64) -> u64 {
        let line = self.line();
        let key = format!("v{version}=");
        line.split(|c: char| c.is_whitespace() || c == '[' || c == ']')
            .find_map(|w| w.strip_prefix(key.as_str()))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// A number the last line gives after `word`.
    fn counter(&self, word: &str) -> u64 {
        let line = self.line();
        let mut words = line.split_whitespace();
        words
            .by_ref()
            .find(|w| *w == word)
            .and_then(|_| words.next())
            .and_then(|n| n.split('/').next().and_then(|n| n.parse().ok()))
            .unwrap_or(0)
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A registry and the diabetes model packaged into it, through `fleet`.
fn packaged_model(fleet: &FleetProcess) -> Registry {
    let registry = Registry::start("edge", "edge-pass");
    fleet.add_registry(&registry, "edge-pass");
    fleet.register("diabetes", "diabetes");
    fleet.package("diabetes:1", "models/diabetes");
    registry
}

fn rollout(fleet: &FleetProcess) -> Value {
    http_client()
        .get(format!("{}/v1/rollouts/line", fleet.url()))
        .bearer_auth(&fleet.token)
        .send()
        .and_then(|r| r.json())
        .unwrap_or_default()
}

fn converge(devices: usize, replicas: usize) {
    let postgres = Postgres::start();
    let broker = Mosquitto::new().add_user("fleet", "fleet-pass").start();
    let fleets: Vec<FleetProcess> = (0..replicas)
        .map(|i| {
            FleetProcess::start_replica(
                workspace_binary("edgefleet"),
                &broker,
                ("fleet", "fleet-pass"),
                "plant",
                &postgres.url(),
                &format!("r{i}"),
            )
        })
        .collect();
    let a = &fleets[0];
    let _registry = packaged_model(a);
    let sim = Sim::start(a, &broker, devices, 0);
    wait_for("every device connected", Duration::from_secs(600), || {
        (sim.counter("connected") == devices as u64).then_some(())
    });
    let started = Instant::now();
    a.ok(&[
        "deployment",
        "create",
        "line",
        "--target",
        "tags.site = 'sim'",
        "--model",
        "diabetes:latest",
        "--module",
        "scorer",
        "--port",
        "9000",
    ]);
    let created = started.elapsed();
    // The devices' side (cheap to watch): every simulated device applied and reported it.
    wait_for_explained(
        "every device applied",
        Duration::from_secs(300),
        || (sim.applied(1) == devices as u64).then_some(()),
        || format!("sim: {}", sim.line()),
    );
    let reported = started.elapsed();
    // The fleet's side: its rollout status counts every report (read once a second: the
    // status of 10,000 devices is itself work for the service).
    wait_for_explained(
        "the fleet counting every device applied",
        Duration::from_secs(300),
        || {
            let status = rollout(a);
            let done = status["succeeded"].as_u64() == Some(devices as u64);
            if !done {
                std::thread::sleep(Duration::from_secs(1));
            }
            done.then_some(())
        },
        || {
            let status = rollout(a);
            format!(
                "rollout: succeeded {} pending {} failed {}; sim: {}",
                status["succeeded"],
                status["pending"],
                status["failed"],
                sim.line()
            )
        },
    );
    let converged = started.elapsed();
    println!(
        "{}",
        serde_json::json!({
            "benchmark": "convergence",
            "devices": devices,
            "replicas": replicas,
            "deployment_create_s": created.as_secs_f64(),
            "all_devices_reported_applied_s": reported.as_secs_f64(),
            "fleet_counts_all_applied_s": converged.as_secs_f64(),
            "sim": sim.line(),
        })
    );
}

/// One fleet service: on `postgres`, or on the embedded store.
fn one_service(postgres: Option<&Postgres>, broker: &Mosquitto) -> FleetProcess {
    match postgres {
        Some(postgres) => FleetProcess::start_replica(
            workspace_binary("edgefleet"),
            broker,
            ("fleet", "fleet-pass"),
            "plant",
            &postgres.url(),
            "r0",
        ),
        None => FleetProcess::start(
            workspace_binary("edgefleet"),
            broker,
            "fleet",
            "fleet-pass",
            "plant",
        ),
    }
}

fn ingestion(on_postgres: bool) {
    let postgres = on_postgres.then(Postgres::start);
    let broker = Mosquitto::new().add_user("fleet", "fleet-pass").start();
    let fleet = one_service(postgres.as_ref(), &broker);
    let sim = Sim::start(&fleet, &broker, INGESTION_DEVICES, INGESTION_OFFERED);
    wait_for("every device connected", Duration::from_secs(600), || {
        (sim.counter("connected") == INGESTION_DEVICES as u64).then_some(())
    });
    // Warm up, then count what the fleet acknowledged over the window.
    std::thread::sleep(Duration::from_secs(5));
    let (from, t0) = (sim.counter("acknowledged"), Instant::now());
    std::thread::sleep(Duration::from_secs(INGESTION_SECONDS));
    let (to, elapsed) = (sim.counter("acknowledged"), t0.elapsed());
    println!(
        "{}",
        serde_json::json!({
            "benchmark": "ingestion",
            "store": if on_postgres { "postgres" } else { "embedded" },
            "devices": INGESTION_DEVICES,
            "offered_records_per_s": INGESTION_OFFERED,
            "stored_records_per_s": (to - from) as f64 / elapsed.as_secs_f64(),
            "sim": sim.line(),
        })
    );
}

/// Devices and deployments of the render runs: 25 sites x 2 lines, as `benches/render.rs`.
const RENDER_DEVICES: usize = 100_000;
const RENDER_DEPLOYMENTS: usize = 50;
const SITES: usize = 25;

/// Deployment `i` (as `benches/render.rs`): one site (every fifth, one line of it at a higher
/// priority); two in three are layered; module m0, m1 or m2 serving the packaged model.
fn render_deployment(i: usize, port: u16) -> DeploymentRequest {
    let site = i % SITES;
    let (target, priority) = if i % 5 == 4 {
        (format!("tags.site = 's{site}' AND tags.line = 'b'"), 20)
    } else {
        (format!("tags.site = 's{site}'"), 10)
    };
    let module = i % 3;
    DeploymentRequest {
        target,
        priority,
        layered: module != 0,
        modules: BTreeMap::from([(
            format!("m{module}"),
            DeploymentModule::registered_model("diabetes:latest", port + module as u16),
        )]),
        rollout: None,
    }
}

/// Seconds to PUT each deployment (every call returns once its devices are rendered, stored
/// and acknowledged by the broker).
fn put_deployments(fleet: &FleetProcess, which: &[usize], port: u16) -> f64 {
    let http = http_client();
    let started = Instant::now();
    for &i in which {
        http.put(format!("{}/v1/deployments/d{i}", fleet.url()))
            .bearer_auth(&fleet.token)
            .json(&render_deployment(i, port))
            .send()
            .and_then(reqwest::blocking::Response::error_for_status)
            .expect("deployment");
    }
    started.elapsed().as_secs_f64()
}

fn render(on_postgres: bool) {
    let postgres = on_postgres.then(Postgres::start);
    let broker = Mosquitto::new().add_user("fleet", "fleet-pass").start();
    let fleet = one_service(postgres.as_ref(), &broker);
    let _registry = packaged_model(&fleet);
    let key = DeviceIdentity::generate().public_key().to_string();
    let devices: Vec<DeviceImport> = (0..RENDER_DEVICES)
        .map(|n| DeviceImport {
            id: format!("gw-{n:06}"),
            tags: BTreeMap::from([
                ("site".to_owned(), format!("s{}", n % SITES)),
                (
                    "line".to_owned(),
                    if n % 2 == 0 { "a" } else { "b" }.to_owned(),
                ),
            ]),
            public_key: key.clone(),
        })
        .collect();
    let started = Instant::now();
    http_client()
        .post(format!("{}/v1/device-imports", fleet.url()))
        .bearer_auth(&fleet.token)
        .json(&devices)
        .send()
        .and_then(reqwest::blocking::Response::error_for_status)
        .expect("import");
    let imported = started.elapsed().as_secs_f64();
    let all: Vec<usize> = (0..RENDER_DEPLOYMENTS).collect();
    let first = put_deployments(&fleet, &all, 9000);
    let every = put_deployments(&fleet, &all, 9100);
    let unchanged = put_deployments(&fleet, &all, 9100);
    let one = put_deployments(&fleet, &[0], 9200);
    // Every deployment follows diabetes:latest: packaging version 2 gives each a revision and
    // re-renders every device in one job (the call includes the push, ~0.1 s).
    fleet.register("diabetes", "diabetes");
    let started = Instant::now();
    fleet.package("diabetes:2", "models/diabetes");
    let new_version = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "benchmark": "render",
            "store": if on_postgres { "postgres" } else { "embedded" },
            "devices": RENDER_DEVICES,
            "deployments": RENDER_DEPLOYMENTS,
            "import_s": imported,
            "first_render_s": first,
            "every_deployment_changed_s": every,
            "one_deployment_changed_s": one,
            "new_model_version_one_job_s": new_version,
            "nothing_changed_s": unchanged,
        })
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let devices: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(10_000);
    let only = |part: &str| {
        !args
            .iter()
            .any(|a| a == "convergence" || a == "ingestion" || a == "render")
            || args.iter().any(|a| a == part)
    };
    if only("convergence") {
        converge(devices, 1);
        converge(devices, 2);
    }
    if only("ingestion") {
        ingestion(false);
        ingestion(true);
    }
    if only("render") {
        render(true);
        render(false);
    }
}
