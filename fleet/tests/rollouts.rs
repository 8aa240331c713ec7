//! Staged rollouts end to end: the real `edgefleet serve`, six real agents, the real registry.
//! A deployment's new revision moves in phases gated on the devices' health; a failing one
//! rolls back after its canary.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use edgefleet_tests::{AgentProcess, FleetWorld, docker, free_port, wait_for};
use serde_json::Value;

const DEVICES: usize = 6;

/// Six devices tagged `site=plant1` serving on `127.0.<net>.1..6`.
fn six_devices(world: &mut FleetWorld, prefix: &str, net: u8) -> Vec<AgentProcess> {
    (1..=DEVICES)
        .map(|i| {
            world.device(
                &format!("{prefix}-{i}"),
                &["site=plant1"],
                &format!("127.0.{net}.{i}"),
            )
        })
        .collect()
}

/// Applies a deployment file of the diabetes module as `model` (or `image`), with `rollout`.
fn apply(world: &FleetWorld, dir: &Path, module: &str, port: u16, rollout: &str) {
    let path = dir.join("d.yaml");
    std::fs::write(
        &path,
        format!(
            "name: line\ntarget: \"tags.site = 'plant1'\"\nmodules:\n  diabetes:\n    {module}\n    port: {port}\n{rollout}"
        ),
    )
    .expect("deployment file");
    world
        .fleet
        .ok(&["deployment", "apply", "-f", &path.display().to_string()]);
}

fn status(world: &FleetWorld) -> Value {
    serde_json::from_str(
        &world
            .fleet
            .ok(&["rollout", "status", "line", "--output", "json"]),
    )
    .expect("rollout JSON")
}

/// How many devices a staged rollout's phases up to the current one hold.
fn allowed(status: &Value) -> usize {
    let staged = &status["staged"];
    let current = staged["currentPhase"].as_u64().unwrap_or(0) as usize;
    staged["phases"]
        .as_array()
        .map(|phases| {
            phases
                .iter()
                .take(current + 1)
                .map(|p| p["devices"].as_array().map_or(0, Vec::len))
                .sum()
        })
        .unwrap_or(0)
}

/// Device -> the revision of `line` its rendered manifest carries.
fn revisions(world: &FleetWorld, prefix: &str) -> BTreeMap<String, u64> {
    (1..=DEVICES)
        .map(|i| {
            let id = format!("{prefix}-{i}");
            let revision = world.manifest(&id)["sources"]["diabetes"]["revision"]
                .as_u64()
                .unwrap_or(0);
            (id, revision)
        })
        .collect()
}

/// Device -> the image its diabetes module reports running.
fn running_images(world: &FleetWorld) -> BTreeMap<String, String> {
    let devices: Vec<Value> =
        serde_json::from_str(&world.fleet.ok(&["device", "list", "--output", "json"]))
            .expect("devices JSON");
    devices
        .iter()
        .map(|d| {
            let image = d["reported"]["modules"]["diabetes"]["image"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            (d["id"].as_str().unwrap_or_default().to_owned(), image)
        })
        .collect()
}

/// The first revision, everywhere at once, then `diabetes:2` registered and packaged.
fn on_v1(world: &mut FleetWorld, prefix: &str, net: u8) -> (Vec<AgentProcess>, u16) {
    world.fleet.register("diabetes", "diabetes");
    world.fleet.package("diabetes:1", "models/diabetes");
    let agents = six_devices(world, prefix, net);
    let port = free_port();
    let dir = tempfile::tempdir().expect("dir");
    apply(world, dir.path(), "model: diabetes:1", port, "");
    world.wait_rollout("line");
    world.fleet.register("diabetes", "diabetes");
    world.fleet.package("diabetes:2", "models/diabetes");
    (agents, port)
}

const STAGED: &str = "rollout:\n  canary: 2\n  batch: 2\n  soakSeconds: 1\n  maxFailures: 1\n";

/// Samples the devices until the staged rollout to `revision` completes, asserting that no
/// more devices run `image` (or have it rendered) than its phases up to the current one hold.
fn watch_healthy_rollout(world: &FleetWorld, revision: u64, image: &str) {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut most = 0;
    loop {
        let on_new = running_images(world)
            .values()
            .filter(|i| i.contains(image))
            .count();
        let rendered = revisions(world, "st")
            .values()
            .filter(|r| **r == revision)
            .count();
        let status = status(world);
        let allowed = if status["staged"]["toRevision"] == revision {
            allowed(&status)
        } else {
            0
        };
        assert!(
            on_new <= allowed && rendered <= allowed,
            "{on_new} devices run {image} and {rendered} have revision {revision}, but the phases allow {allowed}: {status}"
        );
        most = most.max(on_new);
        if status["staged"]["toRevision"] == revision && status["staged"]["state"] == "completed" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rollout did not complete: {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        status(world)["staged"]["phases"].as_array().map(|p| p
            .iter()
            .map(|p| p["devices"].as_array().map_or(0, Vec::len))
            .collect::<Vec<_>>()),
        Some(vec![2, 2, 2])
    );
    let done = world
        .fleet
        .cli(&["rollout", "status", "line", "--wait", "--timeout-secs", "5"]);
    assert_eq!(done.status.code(), Some(0));
    wait_for(
        &format!("every device on {image}"),
        Duration::from_secs(60),
        || {
            running_images(world)
                .values()
                .all(|i| i.contains(image))
                .then_some(())
        },
    );
    assert!(most >= 2, "the canaries ran {image} before the batches");
}

#[test]
fn a_healthy_revision_moves_through_a_canary_and_batches_never_ahead_of_its_phase() {
    let mut world = FleetWorld::new();
    let (mut agents, port) = on_v1(&mut world, "st", 1);
    let dir = tempfile::tempdir().expect("dir");
    // Revision 2 follows diabetes:latest (version 2 now), staged.
    apply(&world, dir.path(), "model: diabetes:latest", port, STAGED);
    watch_healthy_rollout(&world, 2, "/models/diabetes:2@");
    // A new version under latest is a new revision of the deployment, staged the same way.
    world.fleet.register("diabetes", "diabetes");
    world.fleet.package("diabetes:3", "models/diabetes");
    watch_healthy_rollout(&world, 3, "/models/diabetes:3@");
    let history: Vec<Value> = serde_json::from_str(&world.fleet.ok(&[
        "deployment",
        "history",
        "line",
        "--output",
        "json",
    ]))
    .expect("history");
    assert_eq!(history.len(), 3);
    assert_eq!(history[2]["deployment"]["models"]["diabetes"], "diabetes:3");
    for agent in &mut agents {
        agent.stop();
    }
}

#[test]
fn a_revision_that_fails_on_its_canaries_is_rolled_back_and_reaches_no_other_device() {
    let mut world = FleetWorld::new();
    let pid = std::process::id();
    let not_a_model = format!("edgefleet-test/sensor-sim-rollout:{pid}");
    let _cleanup = docker::DockerCleanup {
        containers: vec![],
        images: vec![not_a_model.clone()],
    };
    docker::build_sensor_sim_image(&not_a_model);
    let image = docker::push_docker_image(&not_a_model, &world.registry, "modules/not-a-model");
    let (mut agents, port) = on_v1(&mut world, "fl", 2);
    let dir = tempfile::tempdir().expect("dir");
    // v2 everywhere at once, then v3: an image that is no model module, staged.
    apply(&world, dir.path(), "model: diabetes:2", port, "");
    world.wait_rollout("line");
    apply(&world, dir.path(), &format!("image: {image}"), port, STAGED);

    let deadline = Instant::now() + Duration::from_secs(180);
    let mut ever_on_v3 = std::collections::BTreeSet::new();
    let status = loop {
        for (device, revision) in revisions(&world, "fl") {
            if revision == 3 {
                ever_on_v3.insert(device);
            }
        }
        let status = status(&world);
        if status["staged"]["state"] == "rolledBack" {
            break status;
        }
        assert!(Instant::now() < deadline, "no rollback: {status}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let canaries: std::collections::BTreeSet<String> = status["staged"]["phases"][0]["devices"]
        .as_array()
        .expect("canary phase")
        .iter()
        .filter_map(|d| d.as_str().map(str::to_owned))
        .collect();
    assert_eq!(canaries.len(), 2);
    assert!(
        ever_on_v3.is_subset(&canaries),
        "only canaries received v3: {ever_on_v3:?} vs {canaries:?}"
    );
    let reason = status["staged"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("phase 0 (canary)") && canaries.iter().any(|c| reason.contains(c.as_str())),
        "{reason}"
    );
    // Every device is rendered v2 again (the renders follow the state) and serves it.
    wait_for(
        "every device rendered v2 again",
        Duration::from_secs(30),
        || {
            revisions(&world, "fl")
                .values()
                .all(|r| *r == 2)
                .then_some(())
        },
    );
    wait_for("every device serving v2", Duration::from_secs(60), || {
        running_images(&world)
            .values()
            .all(|i| i.contains("/models/diabetes:2@"))
            .then_some(())
    });
    let waited = world
        .fleet
        .cli(&["rollout", "status", "line", "--wait", "--timeout-secs", "5"]);
    assert_eq!(
        waited.status.code(),
        Some(5),
        "a rolled back rollout exits 5"
    );
    for agent in &mut agents {
        agent.stop();
    }
}

#[test]
fn a_paused_rollout_moves_no_device_and_an_offline_device_holds_its_phase_only_until_its_timeout() {
    let mut world = FleetWorld::new();
    let (mut agents, port) = on_v1(&mut world, "pa", 3);
    let dir = tempfile::tempdir().expect("dir");
    // A soak of 3 s leaves the pause ample time to land before the batch could start.
    let policy =
        "rollout:\n  canary: 2\n  batch: 4\n  soakSeconds: 3\n  offlineTimeoutSeconds: 8\n";
    let refused = world.fleet.cli(&["rollout", "pause", "line"]);
    assert_eq!(
        refused.status.code(),
        Some(1),
        "no staged rollout to pause yet"
    );
    apply(&world, dir.path(), "model: diabetes:2", port, policy);
    world.fleet.ok(&["rollout", "pause", "line"]);
    std::thread::sleep(Duration::from_secs(3));
    let paused = status(&world);
    assert_eq!(paused["staged"]["state"], "paused");
    let moved: u64 = paused["staged"]["phases"]
        .as_array()
        .map(|p| p.iter().filter_map(|p| p["moved"].as_u64()).sum())
        .unwrap_or(0);
    assert!(moved <= 2, "paused at the canary at most: {paused}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        status(&world)["staged"]["phases"],
        paused["staged"]["phases"]
    );

    // One device of the batch goes offline; the rollout waits for it at most its timeout.
    let batch: Vec<String> = paused["staged"]["phases"][1]["devices"]
        .as_array()
        .expect("batch")
        .iter()
        .filter_map(|d| d.as_str().map(str::to_owned))
        .collect();
    let offline: usize = batch[0]
        .strip_prefix("pa-")
        .and_then(|n| n.parse().ok())
        .expect("pa-N");
    agents[offline - 1].stop();
    world.fleet.ok(&["rollout", "resume", "line"]);
    let resumed = Instant::now();
    let done = wait_for("the rollout to complete", Duration::from_secs(120), || {
        let s = status(&world);
        (s["staged"]["state"] == "completed").then_some(s)
    });
    assert!(
        done["staged"]["phases"][1]["gate"]
            .as_str()
            .is_some_and(|g| g.contains("timed out")),
        "{done}"
    );
    assert!(
        resumed.elapsed() >= Duration::from_secs(8),
        "it waited for the offline device"
    );
    for agent in &mut agents {
        agent.stop();
    }
}
