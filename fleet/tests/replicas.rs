//! Several replicas of `edgefleet serve` on one PostgreSQL behind one broker: every change is
//! rendered once, whichever replica receives it, and a render job left in the queue is taken
//! by a live replica.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use edgefleet_common::sealing::DeviceIdentity;
use edgefleet_tests::{
    FleetProcess, Mosquitto, Postgres, Registry, Subscriber, http_client, wait_for,
    workspace_binary,
};
use serde_json::{Value, json};

const DEVICES: usize = 200;

/// Replicas a and b of one fleet on one PostgreSQL behind one broker, with a registry and the
/// diabetes model registered through b and packaged through a (the model file is in the
/// database).
struct Replicas {
    postgres: Postgres,
    broker: Mosquitto,
    a: FleetProcess,
    b: FleetProcess,
    _registry: Registry,
}

impl Replicas {
    fn start() -> Self {
        let postgres = Postgres::start();
        let broker = Mosquitto::new().add_user("fleet", "fleet-pass").start();
        let registry = Registry::start("edge", "edge-pass");
        let replica = |name: &str| {
            FleetProcess::start_replica(
                workspace_binary("edgefleet"),
                &broker,
                ("fleet", "fleet-pass"),
                "plant",
                &postgres.url(),
                name,
            )
        };
        let (a, b) = (replica("a"), replica("b"));
        a.add_registry(&registry, "edge-pass");
        b.register("diabetes", "diabetes");
        a.package("diabetes:1", "models/diabetes");
        Self {
            postgres,
            broker,
            a,
            b,
            _registry: registry,
        }
    }

    /// Every manifest published from now on.
    fn subscribe(&self, client_id: &str) -> Subscriber {
        Subscriber::connect(
            self.broker.port(),
            "fleet",
            "fleet-pass",
            client_id,
            &["edgefleet/plant/devices/+/desired"],
        )
    }

    fn render_jobs_queued(&self) -> String {
        self.postgres
            .query("SELECT count(*) FROM records WHERE kind = 'render-job'")
    }
}

/// Each device's manifest versions as published (retained) on its desired topic, in order.
fn published_versions(subscriber: &Subscriber) -> BTreeMap<String, Vec<u64>> {
    let mut versions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (topic, payload) in subscriber.messages() {
        let Some(device) = topic
            .strip_prefix("edgefleet/plant/devices/")
            .and_then(|t| t.strip_suffix("/desired"))
        else {
            continue;
        };
        let wire: Value = serde_json::from_str(&payload).expect("a signed manifest");
        let version = wire["manifest"]["version"].as_u64().expect("a version");
        versions.entry(device.to_owned()).or_default().push(version);
    }
    versions
}

/// Every device has published `version` (and nothing above it).
fn all_at(subscriber: &Subscriber, version: u64) -> bool {
    let versions = published_versions(subscriber);
    versions.len() == DEVICES && versions.values().all(|v| v.iter().max() == Some(&version))
}

fn deployment(fleet: &FleetProcess, verb: &str, port: u16) {
    fleet.ok(&[
        "deployment",
        verb,
        "line",
        "--target",
        "tags.site = 'plant1'",
        "--model",
        "diabetes:latest",
        "--module",
        "scorer",
        "--port",
        &port.to_string(),
    ]);
}

#[test]
fn two_replicas_render_each_change_once_and_a_live_one_takes_a_job_left_in_the_queue() {
    let mut fleet = Replicas::start();
    // Both replicas sign with the fleet key the first one created.
    let http = http_client();
    let info = |fleet: &FleetProcess| -> Value {
        http.get(format!("{}/v1/fleet", fleet.url()))
            .bearer_auth(&fleet.token)
            .send()
            .and_then(|r| r.json())
            .expect("fleet info")
    };
    assert_eq!(info(&fleet.a)["publicKey"], info(&fleet.b)["publicKey"]);

    for i in 0..DEVICES {
        let replica = if i % 2 == 0 { &fleet.a } else { &fleet.b };
        let key = DeviceIdentity::generate().public_key().to_string();
        let response = http
            .put(format!("{}/v1/devices/dev-{i:04}", replica.url()))
            .bearer_auth(&replica.token)
            .json(&json!({"publicKey": key, "tags": {"site": "plant1"}}))
            .send()
            .expect("add a device");
        assert!(response.status().is_success(), "{}", response.status());
    }
    let subscriber = fleet.subscribe("replicas-test");

    // A change made through one replica, then one through the other: one version each.
    deployment(&fleet.a, "create", 9001);
    wait_for("every device at version 1", Duration::from_secs(60), || {
        all_at(&subscriber, 1).then_some(())
    });
    deployment(&fleet.b, "create", 9002);
    wait_for("every device at version 2", Duration::from_secs(60), || {
        all_at(&subscriber, 2).then_some(())
    });

    // Replica a dies. A render job it left queued (as a replica killed in the middle of a
    // render leaves its job: queued, claimed by nobody) is taken by b, woken by the
    // notification, which publishes every stored manifest again.
    fleet.a.kill();
    let before = subscriber.messages().len();
    fleet.postgres.query(
        "INSERT INTO records (kind, name, value) VALUES ('render-job', '0', '\"All\"'); \
         NOTIFY edgefleet_render",
    );
    wait_for("replica b took the job", Duration::from_secs(30), || {
        (fleet.render_jobs_queued() == "0" && subscriber.messages().len() >= before + DEVICES)
            .then_some(())
    });
    // b goes on alone.
    deployment(&fleet.b, "create", 9003);
    wait_for("every device at version 3", Duration::from_secs(60), || {
        all_at(&subscriber, 3).then_some(())
    });

    // No version was skipped, and no version was rendered twice: each device went 1, 2, 3.
    for (device, versions) in published_versions(&subscriber) {
        let distinct: BTreeSet<u64> = versions.iter().copied().collect();
        assert_eq!(
            distinct,
            BTreeSet::from([1, 2, 3]),
            "{device} was published {versions:?}"
        );
        let manifest: Value = serde_json::from_str(
            &fleet
                .b
                .ok(&["manifest", "show", &device, "--output", "json"]),
        )
        .expect("manifest JSON");
        assert_eq!(manifest["version"], 3, "{device}: {manifest}");
    }
    assert_eq!(fleet.render_jobs_queued(), "0", "the render queue is empty");
}

/// Devices of the interrupted render: three signing batches.
const FLEET: usize = 10_000;

/// The count of devices whose stored manifest has `version`.
fn stored_at(postgres: &Postgres, version: u64) -> usize {
    postgres
        .query(&format!(
            "SELECT count(*) FROM records WHERE kind = 'manifest' \
             AND (value->>'version')::bigint = {version}"
        ))
        .parse()
        .expect("a count")
}

#[test]
fn a_replica_killed_in_the_middle_of_rendering_ten_thousand_devices_leaves_the_rest_to_the_other() {
    let mut fleet = Replicas::start();
    let postgres = &fleet.postgres;
    // A large fleet, written straight into the database. One key serves every device here.
    let key = DeviceIdentity::generate().public_key();
    let sealed = serde_json::to_string(&key.seal("unused").expect("seal")).expect("JSON");
    postgres.query(&format!(
        "INSERT INTO records (kind, name, value) \
         SELECT 'device', d, json_build_object('id', d, 'tags', json_build_object('site', \
         'plant1'), 'publicKey', '{key}', 'addedMs', 0, 'mqttPassword', '{sealed}'::json) \
         FROM (SELECT 'dev-' || lpad(i::text, 5, '0') AS d FROM generate_series(1, {FLEET}) i) s"
    ));
    let subscriber = fleet.subscribe("kill-test");
    deployment(&fleet.a, "create", 9001);
    assert_eq!(stored_at(postgres, 1), FLEET);
    wait_for("every version 1 received", Duration::from_secs(120), || {
        (subscriber.messages().len() >= FLEET).then_some(())
    });

    // The second change's render is interrupted at its last batch: the last device's
    // manifest row is locked, so replica a waits there, and is killed while it waits.
    let last = postgres.open_transaction(&format!(
        "SELECT 1 FROM records WHERE kind = 'manifest' AND name = 'dev-{FLEET:05}' FOR UPDATE"
    ));
    let mut change = std::process::Command::new(workspace_binary("edgefleet"))
        .args([
            "deployment",
            "create",
            "line",
            "--target",
            "tags.site = 'plant1'",
        ])
        .args([
            "--model",
            "diabetes:latest",
            "--module",
            "scorer",
            "--port",
            "9002",
        ])
        .env("EDGEFLEET_SERVER", fleet.a.url())
        .env("EDGEFLEET_TOKEN", &fleet.a.token)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run edgefleet");
    wait_for(
        "replica a waits for the locked manifest",
        Duration::from_secs(120),
        || {
            (postgres.query(
                // (Replica b waits for the write lock meanwhile: an advisory lock.)
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype <> 'advisory'",
            ) != "0")
                .then_some(())
        },
    );
    let interrupted_at = stored_at(postgres, 2);
    fleet.a.kill();
    let _ = change.wait();
    last.commit();
    wait_for(
        "every device's manifest at version 2",
        Duration::from_secs(180),
        || (stored_at(postgres, 2) == FLEET).then_some(()),
    );
    wait_for(
        "every device's version 2 published",
        Duration::from_secs(120),
        || {
            let versions = published_versions(&subscriber);
            (versions.len() == FLEET && versions.values().all(|v| v.contains(&2))).then_some(())
        },
    );
    assert!(
        fleet.b.log().contains("rendering a queued job"),
        "replica b did not take the job; a had stored {interrupted_at} of {FLEET}"
    );
    assert!(interrupted_at < FLEET, "{interrupted_at}");
    eprintln!("replica a was killed with {interrupted_at} of {FLEET} manifests at version 2");
    for (device, versions) in published_versions(&subscriber) {
        let distinct: BTreeSet<u64> = versions.iter().copied().collect();
        assert_eq!(
            distinct,
            BTreeSet::from([1, 2]),
            "{device} was published {versions:?}"
        );
    }
    assert_eq!(fleet.render_jobs_queued(), "0");
}
