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

fn replica(broker: &Mosquitto, postgres: &Postgres, name: &str) -> FleetProcess {
    FleetProcess::start_replica(
        workspace_binary("edgefleet"),
        broker,
        ("fleet", "fleet-pass"),
        "plant",
        &postgres.url(),
        name,
    )
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
    let postgres = Postgres::start();
    let broker = Mosquitto::new().add_user("fleet", "fleet-pass").start();
    let registry = Registry::start("edge", "edge-pass");
    let mut a = replica(&broker, &postgres, "a");
    let b = replica(&broker, &postgres, "b");
    // Both replicas sign with the fleet key the first one created.
    let http = http_client();
    let info = |fleet: &FleetProcess| -> Value {
        http.get(format!("{}/v1/fleet", fleet.url()))
            .bearer_auth(&fleet.token)
            .send()
            .and_then(|r| r.json())
            .expect("fleet info")
    };
    assert_eq!(info(&a)["publicKey"], info(&b)["publicKey"]);

    a.add_registry(&registry, "edge-pass");
    b.register("diabetes", "diabetes");
    // Packaged by the replica that did not register it: the model file is in the database.
    a.package("diabetes:1", "models/diabetes");

    for i in 0..DEVICES {
        let fleet = if i % 2 == 0 { &a } else { &b };
        let key = DeviceIdentity::generate().public_key().to_string();
        let response = http
            .put(format!("{}/v1/devices/dev-{i:04}", fleet.url()))
            .bearer_auth(&fleet.token)
            .json(&json!({"publicKey": key, "tags": {"site": "plant1"}}))
            .send()
            .expect("add a device");
        assert!(response.status().is_success(), "{}", response.status());
    }
    let subscriber = Subscriber::connect(
        broker.port(),
        "fleet",
        "fleet-pass",
        "replicas-test",
        &["edgefleet/plant/devices/+/desired"],
    );

    // A change made through one replica, then one through the other: one version each.
    deployment(&a, "create", 9001);
    wait_for("every device at version 1", Duration::from_secs(60), || {
        all_at(&subscriber, 1).then_some(())
    });
    deployment(&b, "create", 9002);
    wait_for("every device at version 2", Duration::from_secs(60), || {
        all_at(&subscriber, 2).then_some(())
    });

    // Replica a dies. A render job it left queued (as a replica killed in the middle of a
    // render leaves its job: queued, claimed by nobody) is taken by b, woken by the
    // notification, which publishes every stored manifest again.
    a.kill();
    let before = subscriber.messages().len();
    postgres.query(
        "INSERT INTO records (kind, name, value) VALUES ('render-job', '0', '\"All\"'); \
         NOTIFY edgefleet_render",
    );
    wait_for("replica b took the job", Duration::from_secs(30), || {
        (postgres.query("SELECT count(*) FROM records WHERE kind = 'render-job'") == "0"
            && subscriber.messages().len() >= before + DEVICES)
            .then_some(())
    });
    // b goes on alone.
    deployment(&b, "create", 9003);
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
        let manifest: Value =
            serde_json::from_str(&b.ok(&["manifest", "show", &device, "--output", "json"]))
                .expect("manifest JSON");
        assert_eq!(manifest["version"], 3, "{device}: {manifest}");
    }
    assert_eq!(
        postgres.query("SELECT count(*) FROM records WHERE kind = 'render-job'"),
        "0",
        "the render queue is empty"
    );
}

/// Devices of the interrupted render: enough that rendering them takes seconds.
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
    let postgres = Postgres::start();
    let broker = Mosquitto::new().add_user("fleet", "fleet-pass").start();
    let registry = Registry::start("edge", "edge-pass");
    let mut a = replica(&broker, &postgres, "a");
    let b = replica(&broker, &postgres, "b");
    a.add_registry(&registry, "edge-pass");
    a.register("diabetes", "diabetes");
    a.package("diabetes:1", "models/diabetes");
    // A large fleet, written straight into the database (adding 10,000 devices one call at a
    // time would be the slowest part of the test). One key serves every device here.
    let key = DeviceIdentity::generate().public_key();
    let sealed = serde_json::to_string(&key.seal("unused").expect("seal")).expect("JSON");
    postgres.query(&format!(
        "INSERT INTO records (kind, name, value) \
         SELECT 'device', d, json_build_object('id', d, 'tags', json_build_object('site', \
         'plant1'), 'publicKey', '{key}', 'addedMs', 0, 'mqttPassword', '{sealed}'::json) \
         FROM (SELECT 'dev-' || lpad(i::text, 5, '0') AS d FROM generate_series(1, {FLEET}) i) s"
    ));
    let subscriber = Subscriber::connect(
        broker.port(),
        "fleet",
        "fleet-pass",
        "kill-test",
        &["edgefleet/plant/devices/+/desired"],
    );
    deployment(&a, "create", 9001);
    assert_eq!(stored_at(&postgres, 1), FLEET);
    wait_for("every version 1 received", Duration::from_secs(120), || {
        (subscriber.messages().len() >= FLEET).then_some(())
    });

    // The second change's render is interrupted once its first manifests are out.
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
        .env("EDGEFLEET_SERVER", a.url())
        .env("EDGEFLEET_TOKEN", &a.token)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run edgefleet");
    wait_for("the render started", Duration::from_secs(120), || {
        (stored_at(&postgres, 2) > 0).then_some(())
    });
    a.kill();
    let _ = change.wait();
    let interrupted_at = stored_at(&postgres, 2);
    wait_for(
        "every device's manifest at version 2",
        Duration::from_secs(180),
        || (stored_at(&postgres, 2) == FLEET).then_some(()),
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
        b.log().contains("rendering a queued job"),
        "replica b did not take the job; a had stored {interrupted_at} of {FLEET}"
    );
    eprintln!("replica a was killed with {interrupted_at} of {FLEET} manifests at version 2");
    for (device, versions) in published_versions(&subscriber) {
        let distinct: BTreeSet<u64> = versions.iter().copied().collect();
        assert_eq!(
            distinct,
            BTreeSet::from([1, 2]),
            "{device} was published {versions:?}"
        );
    }
    assert_eq!(
        postgres.query("SELECT count(*) FROM records WHERE kind = 'render-job'"),
        "0"
    );
}
