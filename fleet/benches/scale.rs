//! The fleet service at scale, measured with simulated devices (`edgefleet-sim`) on a real
//! mosquitto, registry and PostgreSQL, the release binaries:
//! - convergence: DEVICES simulated devices connected; the time from `deployment create` to
//!   every device reporting the manifest applied (the fleet's rollout status), with one and
//!   with two replicas on one PostgreSQL;
//! - ingestion: telemetry records stored and acknowledged per second at the fleet, one
//!   service, the embedded store and PostgreSQL, the devices sending more than it stores.
//!
//! cargo build --release --bins -p edgefleet-fleet -p edgefleet-sim
//! cargo bench -p edgefleet-fleet --bench scale [-- DEVICES] [convergence|ingestion]

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgefleet_tests::{
    FleetProcess, Mosquitto, Postgres, Registry, http_client, wait_for, workspace_binary,
};
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
    wait_for("every device applied", Duration::from_secs(600), || {
        let status = rollout(a);
        (status["succeeded"].as_u64() == Some(devices as u64)).then_some(())
    });
    let converged = started.elapsed();
    println!(
        "{}",
        serde_json::json!({
            "benchmark": "convergence",
            "devices": devices,
            "replicas": replicas,
            "deployment_create_s": created.as_secs_f64(),
            "all_applied_s": converged.as_secs_f64(),
            "sim": sim.line(),
        })
    );
}

fn ingestion(on_postgres: bool) {
    let postgres = on_postgres.then(Postgres::start);
    let broker = Mosquitto::new().add_user("fleet", "fleet-pass").start();
    let fleet = match &postgres {
        Some(postgres) => FleetProcess::start_replica(
            workspace_binary("edgefleet"),
            &broker,
            ("fleet", "fleet-pass"),
            "plant",
            &postgres.url(),
            "r0",
        ),
        None => FleetProcess::start(
            workspace_binary("edgefleet"),
            &broker,
            "fleet",
            "fleet-pass",
            "plant",
        ),
    };
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

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let devices: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(10_000);
    let only = |part: &str| {
        !args.iter().any(|a| a == "convergence" || a == "ingestion")
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
}
