//! Deployments as module sets, end to end: the real `edgefleet serve`, real agents, the real
//! Docker engine and a registry with authentication. Deployments are written as files and
//! applied with the CLI; no manifest is signed outside the fleet.

#![allow(
    clippy::too_many_lines,
    reason = "an end-to-end test is one scenario, read from top to bottom"
)]

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

#[test]
fn an_imported_iot_edge_layer_adds_containers_to_one_device_and_removing_it_removes_exactly_those()
{
    let pid = std::process::id();
    let local_image = format!("edgefleet-test/sensor-sim-layer:{pid}");
    let _cleanup = docker::DockerCleanup {
        containers: vec![
            "edgefleet-lay-1-clock".into(),
            "edgefleet-lay-2-clock".into(),
            "edgefleet-lay-1-sensor".into(),
            "edgefleet-lay-1-local".into(),
        ],
        images: vec![local_image.clone()],
    };
    docker::build_sensor_sim_image(&local_image);
    let mut world = FleetWorld::new();
    docker::push_docker_image(&local_image, &world.registry, "modules/sensor-sim-layer");
    let address = world.registry.address().to_owned();
    let broker = world.broker().port();
    let mut agents = [
        world.device("lay-1", &["site=plant1", "line=a"], "127.0.0.5"),
        world.device("lay-2", &["site=plant1", "line=b"], "127.0.0.6"),
    ];
    let dir = tempfile::tempdir().expect("dir");
    let base = write(
        dir.path(),
        "base.yaml",
        &format!(
            r#"name: base
target: "tags.site = 'plant1'"
modules:
  clock:
    kind: container
    image: {address}/modules/sensor-sim-layer:1
    env: {{MQTT_PORT: "{broker}", MQTT_USERNAME: sensors, MQTT_PASSWORD: sensors-pass, MODEL_MODULE: none, INTERVAL_MS: "1000"}}
    createOptions: {{HostConfig: {{NetworkMode: host}}}}
"#
        ),
    );
    world.fleet.ok(&["deployment", "apply", "-f", &base]);
    world.wait_rollout("base");
    let clock = wait_for("the base's container", Duration::from_secs(60), || {
        docker::inspect_container("edgefleet-lay-1-clock").filter(|c| c["State"]["Running"] == true)
    });

    // An IoT Hub layered configuration with template placeholders, a numeric env value, a
    // stringified createOptions, an image already on the device and a route.
    let sensor_env = r#""env": {
        "MQTT_PORT": {"value": <BrokerPort>},
        "MQTT_USERNAME": {"value": "sensors"},
        "MQTT_PASSWORD": {"value": "<SensorPassword>"},
        "MODEL_MODULE": {"value": "none"},
        "INTERVAL_MS": {"value": 500}
    }"#
    .replace("<BrokerPort>", &broker.to_string());
    let layer = write(
        dir.path(),
        "sensor-layer.json",
        &format!(
            r#"{{
  "id": "sensor-layer",
  "targetCondition": "tags.line='a'",
  "priority": 10,
  "content": {{"modulesContent": {{
    "$edgeAgent": {{
      "properties.desired.runtime.settings.registryCredentials.lab": {{
        "address": "$REGISTRY", "username": "<user>", "password": "<password>"
      }},
      "properties.desired.modules.sensor": {{
        "type": "docker", "status": "running", "restartPolicy": "always", "startupOrder": 1,
        "settings": {{
          "image": "$REGISTRY/modules/sensor-sim-layer:1",
          "createOptions": "{{\"HostConfig\":{{\"NetworkMode\":\"host\"}}}}"
        }},
        {sensor_env}
      }},
      "properties.desired.modules.local": {{
        "type": "docker", "status": "running", "restartPolicy": "on-failure",
        "imagePullPolicy": "never",
        "settings": {{"image": "{local_image}", "createOptions": {{"HostConfig": {{"NetworkMode": "host"}}}}}},
        {sensor_env}
      }}
    }},
    "$edgeHub": {{
      "properties.desired.routes.toModel": "FROM /messages/modules/sensor/* INTO BrokeredEndpoint(\"/modules/diabetes/inputs/readings\")"
    }}
  }}}}
}}"#
        ),
    );

    // Unresolved placeholders: listed, exit 1, nothing saved.
    let refused = world
        .fleet
        .cli(&["deployment", "import", &layer, "--dry-run"]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{said}");
    assert!(
        said.contains("cannot map: placeholder REGISTRY: not set")
            && said.contains("cannot map: placeholder SensorPassword: not set")
            && said.contains("nothing was saved"),
        "{said}"
    );
    let set = [
        "--set",
        &format!("REGISTRY={address}"),
        "--set",
        "SensorPassword=sensors-pass",
    ];
    // The dry run prints the deployment module by module, images as written (no registry asked).
    let mut args = vec![
        "deployment",
        "import",
        &layer,
        "--dry-run",
        "--output",
        "json",
    ];
    args.extend(set);
    let dry: Value = serde_json::from_str(&world.fleet.ok(&args)).expect("dry-run JSON");
    assert_eq!(dry["name"], "sensor-layer");
    assert_eq!(dry["layered"], true);
    assert_eq!(dry["priority"], 10);
    assert_eq!(
        dry["modules"]["sensor"]["image"],
        format!("{address}/modules/sensor-sim-layer:1")
    );
    assert_eq!(
        dry["modules"]["sensor"]["env"]["MQTT_PORT"],
        broker.to_string()
    );
    assert_eq!(dry["modules"]["local"]["imagePullPolicy"], "never");
    assert!(dry.get("images").is_none(), "{dry}");
    assert!(
        world
            .fleet
            .cli(&["deployment", "show", "sensor-layer"])
            .status
            .code()
            == Some(1)
    );

    let mut args = vec!["deployment", "import", &layer];
    args.extend(set);
    let imported = world.fleet.cli(&args);
    let said = String::from_utf8_lossy(&imported.stderr);
    assert!(
        imported.status.success() && said.contains("saved as revision 1"),
        "{said}"
    );
    assert!(said.contains("note: route toModel:"), "{said}");
    world.wait_rollout("sensor-layer");

    let manifest = world.manifest("lay-1");
    assert_eq!(
        manifest["sources"]["sensor"],
        serde_json::json!({"deployment": "sensor-layer", "revision": 1, "layered": true})
    );
    assert_eq!(manifest["sources"]["clock"]["deployment"], "base");
    assert!(world.manifest("lay-2")["sources"].get("sensor").is_none());
    for container in ["edgefleet-lay-1-sensor", "edgefleet-lay-1-local"] {
        wait_for(container, Duration::from_secs(60), || {
            docker::inspect_container(container).filter(|c| c["State"]["Running"] == true)
        });
    }
    let local = docker::inspect_container("edgefleet-lay-1-local").expect("local");
    assert_eq!(local["Config"]["Image"], local_image.as_str());
    assert!(docker::inspect_container("edgefleet-lay-2-sensor").is_none());

    // The same file again makes no new revision.
    let again = world.fleet.cli(&args);
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(
        again.status.success() && said.contains("unchanged at revision 1"),
        "{said}"
    );

    // Removing the layer removes exactly its modules; the base's container is untouched.
    world.fleet.ok(&["deployment", "remove", "sensor-layer"]);
    for container in ["edgefleet-lay-1-sensor", "edgefleet-lay-1-local"] {
        wait_for(
            &format!("{container} to be removed"),
            Duration::from_secs(60),
            || docker::inspect_container(container).is_none().then_some(()),
        );
    }
    let manifest = world.manifest("lay-1");
    assert_eq!(
        manifest["sources"]
            .as_object()
            .map(|s| s.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["clock".to_owned()])
    );
    let still = docker::inspect_container("edgefleet-lay-1-clock").expect("clock");
    assert_eq!(still["Id"], clock["Id"]);
    for agent in &mut agents {
        agent.stop();
    }
}

#[test]
fn every_iot_edge_sample_imports_or_exits_1_listing_what_cannot_be_mapped() {
    let samples = edgefleet_tests::repo_root().join("../shared/iotedge-samples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&samples).expect("../shared/iotedge-samples") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let out = Command::new(edgefleet_tests::workspace_binary("edgefleet"))
            .args(["deployment", "import", "--dry-run", "--output", "json"])
            .arg(&path)
            .args(["--target", "tags.site = 'plant1'"])
            .env_remove("EDGEFLEET_SERVER")
            .env_remove("EDGEFLEET_TOKEN")
            .output()
            .expect("edgefleet");
        let said = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => {
                let deployment: Value = serde_json::from_slice(&out.stdout).expect("JSON");
                assert!(
                    deployment["modules"]
                        .as_object()
                        .is_some_and(|m| !m.is_empty())
                );
            }
            Some(1) => assert!(
                said.contains("cannot map: ") && said.contains("nothing was saved"),
                "{}: {said}",
                path.display()
            ),
            other => panic!("{}: exit {other:?}: {said}", path.display()),
        }
        checked += 1;
    }
    assert!(checked >= 6, "{checked} samples");
}
