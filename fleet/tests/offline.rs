//! Offline and air-gapped operation, end to end: bundles made by the real `edgefleet serve`
//! applied by a real agent that can reach neither the broker nor the registry, and its data
//! carried back by outbox export, telemetry import and trim.

#![allow(
    clippy::too_many_lines,
    reason = "an end-to-end test is one scenario, read from top to bottom"
)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use edgefleet_tests::{
    AgentProcess, FleetWorld, docker, free_port, score_at, wait_for, wait_for_explained,
};
use serde_json::Value;

const BIND: &str = "127.0.0.7";

fn agent_cli(agent: &AgentProcess, args: &[&str]) -> Output {
    agent
        .command()
        .args(args)
        .output()
        .expect("run edgefleet-agent")
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The agent's state as `edgefleet-agent status --json` prints it.
fn status(agent: &AgentProcess) -> Value {
    let out = agent_cli(agent, &["status", "--json"]);
    assert!(out.status.success(), "{}", said(&out));
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

fn deployment(dir: &Path, world: &FleetWorld, port: u16, interval_ms: u32) -> String {
    let path = dir.join(format!("line-{interval_ms}.yaml"));
    let text = format!(
        r#"name: line
target: "tags.site = 'remote'"
modules:
  diabetes:
    model: diabetes:1
    port: {port}
  sensor:
    kind: container
    image: {registry}/modules/sensor-sim:1
    env:
      INTERVAL_MS: "{interval_ms}"
    createOptions:
      HostConfig:
        NetworkMode: host
"#,
        registry = world.registry.address(),
    );
    std::fs::write(&path, text).expect("write the deployment");
    path.display().to_string()
}

fn bundle(world: &FleetWorld, dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let out = world.fleet.cli(&[
        "bundle",
        "create",
        "--device",
        "remote-1",
        "-f",
        &path.display().to_string(),
    ]);
    assert!(out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("image(s)"), "{}", said(&out));
    path
}

/// `bundle import` of `path` must fail saying `expected`, and leave the agent as it was.
fn refused(agent: &AgentProcess, path: &Path, expected: &str, before: &Value) {
    let out = agent_cli(agent, &["bundle", "import", &path.display().to_string()]);
    let text = said(&out);
    assert!(!out.status.success(), "imported: {text}");
    assert!(text.contains(expected), "{expected:?} not in {text}");
    let after = status(agent);
    assert_eq!(after["appliedVersion"], before["appliedVersion"], "{text}");
    assert_eq!(after["lastDesired"], before["lastDesired"], "{text}");
}

/// A copy of `path` with the byte at `offset` changed.
fn damaged(path: &Path, offset: usize, name: &str) -> PathBuf {
    let mut bytes = std::fs::read(path).expect("read bundle");
    bytes[offset] ^= 0x20;
    let copy = path.with_file_name(name);
    std::fs::write(&copy, bytes).expect("write copy");
    copy
}

#[test]
fn an_agent_without_broker_or_registry_applies_a_bundle_refuses_damaged_or_older_ones_and_its_data_comes_back_by_export()
 {
    let pid = std::process::id();
    let image_tag = format!("edgefleet-test/sensor-sim-offline:{pid}");
    let mut cleanup = docker::DockerCleanup {
        containers: vec!["edgefleet-remote-1-sensor".into()],
        images: vec![image_tag.clone()],
    };
    docker::build_sensor_sim_image(&image_tag);
    let mut world = FleetWorld::new();
    let metrics_port = world.fleet.serve_metrics();
    let pinned = docker::push_docker_image(&image_tag, &world.registry, "modules/sensor-sim");
    // The engine keeps what a bundle brought under a tag named after the digest.
    let loaded = edgefleet_common::bundle::loaded_image_tag(&pinned).expect("pinned");
    cleanup.images.push(loaded.clone());
    world.fleet.register("diabetes", "diabetes");
    world.fleet.package("diabetes:1", "models/diabetes");
    let mut agent = world.device("remote-1", &["site=remote"], BIND);
    // The devices are cut off before anything is deployed: no broker, and later no registry.
    agent.stop();
    world
        .device("remote-2", &["site=remote"], "127.0.0.8")
        .stop();
    let dead = free_port();
    agent.set_env("EDGEFLEET_MQTT_URL", &format!("mqtt://127.0.0.1:{dead}"));

    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    world.fleet.ok(&[
        "deployment",
        "apply",
        "-f",
        &deployment(dir.path(), &world, port, 1000),
    ]);
    let old = bundle(&world, dir.path(), "old.bundle");
    world.fleet.ok(&[
        "deployment",
        "apply",
        "-f",
        &deployment(dir.path(), &world, port, 500),
    ]);
    let new = bundle(&world, dir.path(), "new.bundle");
    // One bundle for every device of the deployment holds each image once.
    let site = dir.path().join("site.bundle");
    let out = world.fleet.cli(&[
        "bundle",
        "create",
        "--deployment",
        "line",
        "-f",
        &site.display().to_string(),
    ]);
    assert!(
        said(&out).contains("remote-1 (version") && said(&out).contains("remote-2 (version"),
        "{}",
        said(&out)
    );
    let size = |path: &Path| std::fs::metadata(path).expect("bundle").len();
    assert!(size(&site) < size(&new) + 16 * 1024, "images stored once");
    let version = world.manifest("remote-1")["version"]
        .as_u64()
        .expect("version");
    world.registry.stop();
    agent.start();

    // Dropped into the watched directory, the bundle is applied as if the fleet had sent it.
    let drop_dir = agent.data_dir().join("bundles");
    std::fs::create_dir_all(&drop_dir).expect("drop dir");
    std::fs::copy(&new, drop_dir.join("usb.bundle")).expect("copy to the drop directory");
    let state = wait_for_explained(
        "the dropped bundle to be applied",
        Duration::from_secs(90),
        || {
            let s = status(&agent);
            (s["lastDesired"]["version"] == version && s["lastDesired"]["status"] == 200)
                .then_some(s)
        },
        || agent.log(),
    );
    assert_eq!(state["lastDesired"]["source"], "bundle", "{state}");
    assert_eq!(state["appliedVersion"], version);
    let scored = score_at(BIND, port);
    assert!(scored["variable"].is_array(), "{scored}");
    let container = wait_for(
        "the sensor container to run",
        Duration::from_secs(30),
        || {
            docker::inspect_container("edgefleet-remote-1-sensor")
                .filter(|c| c["State"]["Running"] == true)
        },
    );
    let env = container["Config"]["Env"].to_string();
    assert!(env.contains("INTERVAL_MS=500"), "{env}");
    assert_eq!(container["Config"]["Image"], loaded.as_str());

    // Nothing damaged or older gets in, and the device keeps what it runs.
    let before = status(&agent);
    refused(&agent, &old, "older than the applied version", &before);
    let len = std::fs::metadata(&new).expect("bundle").len() as usize;
    for (offset, name) in [
        (600, "index.bundle"),
        (len / 2, "middle.bundle"),
        (len - 1500, "trailer.bundle"),
    ] {
        let copy = damaged(&new, offset, name);
        refused(&agent, &copy, "copy it again", &before);
    }
    let bytes = std::fs::read(&new).expect("read bundle");
    let truncated = dir.path().join("truncated.bundle");
    std::fs::write(&truncated, &bytes[..len - 4096]).expect("truncate");
    refused(&agent, &truncated, "copy it again", &before);
    // The whole bundle again changes nothing either.
    let again = agent_cli(&agent, &["bundle", "import", &new.display().to_string()]);
    assert!(
        again.status.success() && said(&again).contains("already applied"),
        "{}",
        said(&again)
    );
    assert_eq!(score_at(BIND, port), scored);

    // Data back: what the device recorded offline reaches the fleet by file, once.
    for _ in 0..5 {
        score_at(BIND, port);
    }
    let export = dir.path().join("outbox.jsonl");
    let receipt = dir.path().join("receipt.json");
    let out = agent_cli(&agent, &["outbox", "export", &export.display().to_string()]);
    assert!(out.status.success(), "{}", said(&out));
    let exported: Vec<Value> = std::fs::read_to_string(&export)
        .expect("export")
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with(r#"{"end""#))
        .map(|l| serde_json::from_str(l).expect("record"))
        .collect();
    assert!(exported.len() >= 7, "{} records", exported.len());
    let import = |receipt: &Path| {
        world.fleet.cli(&[
            "telemetry",
            "import",
            &export.display().to_string(),
            "--receipt",
            &receipt.display().to_string(),
        ])
    };
    let out = import(&receipt);
    assert!(out.status.success(), "{}", said(&out));
    // Importing the same file again stores nothing twice.
    let out = import(&dir.path().join("receipt-again.json"));
    assert!(said(&out).contains("(0 new)"), "{}", said(&out));
    let out = agent_cli(
        &agent,
        &[
            "outbox",
            "trim",
            "--receipt",
            &receipt.display().to_string(),
        ],
    );
    assert!(out.status.success(), "{}", said(&out));
    // Everything the receipt confirms is gone (the agent may have recorded more since).
    let confirmed: Value =
        serde_json::from_slice(&std::fs::read(&receipt).expect("receipt")).expect("receipt JSON");
    let committed = confirmed["receipt"]["committedSeq"]
        .as_u64()
        .expect("committedSeq");
    let last_exported = exported
        .last()
        .and_then(|r| r["seq"].as_u64())
        .expect("seq");
    assert!(committed >= last_exported, "{confirmed}");
    // The reported state catches up with the outbox at its next refresh.
    wait_for_explained(
        "the trimmed records to leave the outbox",
        Duration::from_secs(30),
        || {
            let state = status(&agent);
            let oldest = state["outbox"]["oldestSeq"].as_u64();
            oldest.is_none_or(|seq| seq > committed).then_some(())
        },
        || {
            format!(
                "records up to {committed} are still in the outbox: {}",
                status(&agent)
            )
        },
    );

    // The link returns: nothing is sent twice, and the device reports the bundle's manifest.
    agent.stop();
    agent.set_env("EDGEFLEET_MQTT_URL", &world.broker().url());
    agent.start();
    let stored = |world: &FleetWorld| -> Vec<u64> {
        let out = world.fleet.ok(&[
            "telemetry",
            "query",
            "remote-1",
            "--limit",
            "10000",
            "--output",
            "json",
        ]);
        let records: Vec<Value> = serde_json::from_str(&out).expect("records");
        records.iter().filter_map(|r| r["seq"].as_u64()).collect()
    };
    let device = wait_for(
        "the device to report again",
        Duration::from_secs(60),
        || {
            let out = world
                .fleet
                .ok(&["device", "show", "remote-1", "--output", "json"]);
            let device: Value = serde_json::from_str(&out).ok()?;
            (device["reported"]["appliedVersion"] == version).then_some(device)
        },
    );
    assert_eq!(device["reported"]["lastDesired"]["source"], "bundle");
    let seqs = stored(&world);
    let mut unique = seqs.clone();
    unique.dedup();
    assert_eq!(seqs, unique, "stored once each");
    for record in &exported {
        let seq = record["seq"].as_u64().expect("seq");
        assert!(
            seqs.contains(&seq),
            "record {seq} is missing from the fleet"
        );
    }

    // The fleet's Prometheus metrics count the devices by state and the renders.
    let text = edgefleet_tests::http_client()
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .and_then(|r| r.text())
        .expect("scrape the fleet's metrics");
    for expected in [
        r#"edgefleet_fleet_devices{state="online"}"#,
        r#"edgefleet_fleet_devices{state="stale"}"#,
        "edgefleet_fleet_rollouts_running 0",
        "edgefleet_fleet_render_seconds_count",
        "edgefleet_fleet_manifests_changed_total",
    ] {
        assert!(text.contains(expected), "{expected:?} not in\n{text}");
    }
}
