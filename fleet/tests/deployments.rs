//! Deployments as module sets, end to end: the real `edgefleet serve`, real agents, the real
//! Docker engine and a registry with authentication. Deployments are written as files and
//! applied with the CLI; no manifest is signed outside the fleet.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use edgefleet_tests::{
    FleetWorld, docker, free_port, http_client, model_dir, require_program, wait_for,
};
use serde_json::Value;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the deployment file");
    path.display().to_string()
}

#[test]
fn a_yaml_deployment_of_a_sensor_container_and_a_model_reaches_two_agents_and_its_readings_are_scored()
 {
    let pid = std::process::id();
    let image_tag = format!("edgefleet-test/sensor-sim-set:{pid}");
    let _cleanup = docker::DockerCleanup {
        containers: vec![
            "edgefleet-set-1-sensor".into(),
            "edgefleet-set-2-sensor".into(),
        ],
        images: vec![image_tag.clone()],
    };
    docker::build_sensor_sim_image(&image_tag);
    let mut world = FleetWorld::new();
    docker::push_docker_image(&image_tag, &world.registry, "modules/sensor-sim");
    world.fleet.register("diabetes", "diabetes");
    world.fleet.package("diabetes:1", "models/diabetes");
    let mut agents = [
        world.device("set-1", &["site=plant1"], "127.0.0.2"),
        world.device("set-2", &["site=plant1"], "127.0.0.3"),
    ];
    let port = free_port();
    let dir = tempfile::tempdir().expect("dir");
    // The image by tag: the fleet pins it to its digest when the deployment is saved.
    let file = write(
        dir.path(),
        "line.yaml",
        &format!(
            r#"name: line
target: "tags.site = 'plant1'"
modules:
  diabetes:
    model: diabetes:latest
    port: {port}
  sensor:
    kind: container
    image: {registry}/modules/sensor-sim:1
    startupOrder: 1
    env:
      MQTT_PORT: "{broker}"
      MQTT_USERNAME: sensors
      MQTT_PASSWORD: sensors-pass
      MODEL_MODULE: diabetes
      INTERVAL_MS: "300"
    createOptions:
      HostConfig:
        NetworkMode: host
"#,
            registry = world.registry.address(),
            broker = world.broker().port(),
        ),
    );
    world.fleet.ok(&["deployment", "apply", "-f", &file]);
    let status = world.wait_rollout("line");
    assert_eq!(
        (status["targeted"].as_u64(), status["succeeded"].as_u64()),
        (Some(2), Some(2))
    );

    let shown = world
        .fleet
        .ok(&["deployment", "show", "line", "--output", "yaml"]);
    assert!(shown.contains("revision: 1"), "{shown}");
    assert!(
        shown.contains("/modules/sensor-sim:1@sha256:"),
        "pinned: {shown}"
    );
    // What `show` prints applies as it is, and the same content makes no new revision.
    let shown_file = write(dir.path(), "shown.yaml", &shown);
    let again = world.fleet.cli(&["deployment", "apply", "-f", &shown_file]);
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(
        again.status.success() && said.contains("unchanged at revision 1"),
        "{said}"
    );
    let diff = world.fleet.ok(&["deployment", "diff", "-f", &file]);
    assert!(diff.is_empty(), "{diff}");

    for device in ["set-1", "set-2"] {
        let manifest = world.manifest(device);
        assert_eq!(manifest["sources"]["sensor"]["deployment"], "line");
        let container = format!("edgefleet-{device}-sensor");
        let running = wait_for("the sensor container", Duration::from_secs(60), || {
            docker::inspect_container(&container).filter(|c| c["State"]["Running"] == true)
        });
        assert_eq!(running["Config"]["Labels"]["org.edgefleet.device"], device);
        // Its readings are scored on the device, and the predictions arrive at the fleet.
        let predictions = wait_for(
            "predictions from the sensor's readings",
            Duration::from_secs(60),
            || {
                let out = world.fleet.ok(&[
                    "telemetry",
                    "query",
                    device,
                    "--module",
                    "diabetes",
                    "--kind",
                    "inference",
                    "--output",
                    "json",
                ]);
                let records: Vec<Value> = serde_json::from_str(&out).ok()?;
                let mqtt: Vec<Value> = records
                    .into_iter()
                    .filter(|r| r["body"]["source"] == "mqtt")
                    .collect();
                (!mqtt.is_empty()).then_some(mqtt)
            },
        );
        assert!(predictions[0]["body"]["outputs"]["variable"].is_array());
    }

    // Removing the container from the file removes it from both devices.
    let without_sensor = write(
        dir.path(),
        "model-only.yaml",
        &format!(
            "name: line\ntarget: \"tags.site = 'plant1'\"\nmodules:\n  diabetes:\n    model: diabetes:latest\n    port: {port}\n"
        ),
    );
    let diff = world
        .fleet
        .ok(&["deployment", "diff", "-f", &without_sensor]);
    assert!(diff.contains("-  sensor:"), "{diff}");
    world
        .fleet
        .ok(&["deployment", "apply", "-f", &without_sensor]);
    for device in ["set-1", "set-2"] {
        let container = format!("edgefleet-{device}-sensor");
        wait_for(
            "the sensor container to be removed",
            Duration::from_secs(60),
            || {
                docker::inspect_container(&container)
                    .is_none()
                    .then_some(())
            },
        );
    }
    let history: Vec<Value> = serde_json::from_str(&world.fleet.ok(&[
        "deployment",
        "history",
        "line",
        "--output",
        "json",
    ]))
    .expect("history JSON");
    assert_eq!(history.len(), 2);
    for agent in &mut agents {
        agent.stop();
    }
}

#[test]
fn a_model_image_built_with_docker_build_and_pushed_with_docker_push_is_deployed_by_reference() {
    let mut world = FleetWorld::new();
    let image = format!("{}/models/digits-docker:1", world.registry.address());
    let _cleanup = docker::DockerCleanup {
        containers: vec![],
        images: vec![image.clone()],
    };
    // The recipe of images/model-module/Dockerfile, from the directory holding model.onnx.
    let context = tempfile::tempdir().expect("dir");
    std::fs::copy(
        model_dir("digits").join("model.onnx"),
        context.path().join("model.onnx"),
    )
    .expect("model");
    let docker_config = tempfile::tempdir().expect("docker config dir");
    let docker = |args: &[&str], stdin: Option<&str>| {
        use std::io::Write as _;
        let mut child = Command::new(require_program("docker", "docker.io"))
            .env("DOCKER_CONFIG", docker_config.path())
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("docker");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("stdin");
        }
        let out = child.wait_with_output().expect("docker");
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let dockerfile = edgefleet_tests::repo_root().join("images/model-module/Dockerfile");
    docker(
        &[
            "build",
            "-q",
            "-t",
            &image,
            "-f",
            &dockerfile.display().to_string(),
            &context.path().display().to_string(),
        ],
        None,
    );
    let address = world.registry.address().to_owned();
    docker(
        &["login", &address, "-u", "edge", "--password-stdin"],
        Some("edge-pass"),
    );
    docker(&["push", &image], None);

    let mut agent = world.device("docker-1", &["site=lab"], "127.0.0.4");
    let port = free_port();
    let dir = tempfile::tempdir().expect("dir");
    let file = write(
        dir.path(),
        "digits.json",
        &format!(
            r#"{{"name": "digits", "target": "deviceId = 'docker-1'",
                "modules": {{"digits": {{"image": "{image}", "port": {port}}}}}}}"#
        ),
    );
    world.fleet.ok(&["deployment", "apply", "-f", &file]);
    world.wait_rollout("digits");
    let sample = std::fs::read_to_string(model_dir("digits").join("sample.json")).expect("sample");
    let response: Value = http_client()
        .post(format!("http://127.0.0.4:{port}/score"))
        .body(sample)
        .send()
        .expect("POST /score")
        .json()
        .expect("JSON");
    assert!(
        response.as_object().is_some_and(|o| !o.is_empty()),
        "{response}"
    );

    // An image that is not in the registry is refused when the deployment is saved, naming it.
    let missing = write(
        dir.path(),
        "missing.yaml",
        &format!(
            "name: missing\ntarget: \"deviceId = 'docker-1'\"\nmodules:\n  m:\n    image: {address}/models/nope:1\n"
        ),
    );
    let refused = world.fleet.cli(&["deployment", "apply", "-f", &missing]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{said}");
    assert!(
        said.contains("models/nope:1") && said.contains("no such image"),
        "{said}"
    );
    agent.stop();
}
