//! End to end: the real `edgefleet serve`, the real `edgefleet` CLI and real agents, with a
//! mosquitto enforcing per-device ACLs (docs/mosquitto-acl.conf) and a registry
//! with authentication.

#![allow(
    clippy::too_many_lines,
    reason = "an end-to-end test is one scenario, read from top to bottom"
)]

use std::time::Duration;

use edgefleet_common::sealing::DeviceIdentity;
use edgefleet_tests::{
    AgentProcess, AgentSetup, FleetProcess, FleetWorld, Mosquitto, Registry, free_port,
    http_client, model_dir, ort_library, score_at, wait_for, workspace_binary,
};
use serde_json::Value;

const QUICKSTART_REQUEST: &str = r#"{"data": [[1,2,3,4,5,6,7,8,9,10],[10,9,8,7,6,5,4,3,2,1]]}"#;

#[test]
fn a_deployment_reaches_exactly_its_devices_and_a_higher_priority_overrides_one_module_on_one_device()
 {
    let mut world = FleetWorld::new();
    assert_eq!(world.fleet.register("diabetes", "diabetes"), "diabetes:1");
    world.fleet.package("diabetes:1", "models/diabetes");
    assert_eq!(world.fleet.register("digits", "digits"), "digits:1");
    world.fleet.package("digits:1", "models/digits");

    let mut gw1 = world.device("gw-1", &["site=plant1", "line=a"], "127.0.0.2");
    let mut gw2 = world.device("gw-2", &["site=plant1", "line=b"], "127.0.0.3");
    let mut gw3 = world.device("gw-3", &["site=plant2"], "127.0.0.4");
    let port = free_port();
    world.fleet.ok(&[
        "deployment",
        "create",
        "plant1-diabetes",
        "--target",
        "tags.site = 'plant1'",
        "--priority",
        "10",
        "--model",
        "diabetes:latest",
        "--module",
        "scorer",
        "--port",
        &port.to_string(),
    ]);
    let status = world.wait_rollout("plant1-diabetes");
    assert_eq!(status["targeted"], 2);
    assert_eq!(status["succeeded"], 2);
    let targeted: Vec<&str> = status["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .filter_map(|d| d["deviceId"].as_str())
        .collect();
    assert_eq!(targeted, ["gw-1", "gw-2"]);
    assert!(score_at("127.0.0.2", port)["variable"].is_array());
    assert!(score_at("127.0.0.3", port)["variable"].is_array());
    let none = world.fleet.cli(&["manifest", "show", "gw-3"]);
    assert_eq!(none.status.code(), Some(1), "gw-3 is not targeted");

    // gw-2 alone gets the digits classifier as its "scorer" module.
    let gw1_version = world.manifest("gw-1")["version"].clone();
    world.fleet.ok(&[
        "deployment",
        "create",
        "gw2-digits",
        "--target",
        "deviceId = 'gw-2'",
        "--priority",
        "20",
        "--model",
        "digits:latest",
        "--module",
        "scorer",
        "--port",
        &port.to_string(),
    ]);
    world.wait_rollout("gw2-digits");
    assert_eq!(
        world.manifest("gw-1")["version"],
        gw1_version,
        "gw-1's manifest did not change"
    );
    assert_eq!(
        world.manifest("gw-2")["sources"]["scorer"]["deployment"],
        "gw2-digits"
    );
    let digits_input =
        std::fs::read_to_string(model_dir("digits").join("sample.json")).expect("sample");
    let response = http_client()
        .post(format!("http://127.0.0.3:{port}/score"))
        .body(digits_input)
        .send()
        .expect("POST");
    let body: Value = response.json().expect("JSON");
    assert!(
        body["probabilities"].is_array() || body["output_probability"].is_array(),
        "{body}"
    );
    assert!(
        score_at("127.0.0.2", port)["variable"].is_array(),
        "gw-1 still serves diabetes"
    );

    // Per-device ACLs: gw-1 cannot read gw-2's manifest, but reads its own.
    let gw1_password = std::fs::read_to_string(gw1.config_path()).expect("config");
    let gw1_password = gw1_password
        .lines()
        .find_map(|l| l.strip_prefix("password = "))
        .expect("password")
        .trim_matches('"')
        .to_owned();
    let foreign = world.broker().subscribe(
        "gw-1",
        &gw1_password,
        "edgefleet/plant/devices/gw-2/desired",
        1,
        2,
    );
    assert!(foreign.is_empty(), "gw-1 read gw-2's desired topic");
    let own = world.broker().subscribe(
        "gw-1",
        &gw1_password,
        "edgefleet/plant/devices/gw-1/desired",
        1,
        2,
    );
    assert_eq!(own.len(), 1);

    // The fleet saw the devices' reported state and their telemetry.
    let device: Value = serde_json::from_str(
        &world
            .fleet
            .ok(&["device", "show", "gw-1", "--output", "json"]),
    )
    .expect("JSON");
    assert_eq!(device["stale"], false);
    assert_eq!(
        device["reported"]["modules"]["scorer"]["runtimeStatus"],
        "running"
    );
    let telemetry = wait_for("telemetry at the fleet", Duration::from_secs(20), || {
        let v: Value = serde_json::from_str(&world.fleet.ok(&[
            "telemetry",
            "tail",
            "gw-1",
            "--output",
            "json",
        ]))
        .ok()?;
        v.as_array().filter(|a| !a.is_empty()).cloned()
    });
    assert_eq!(telemetry[0]["deviceId"], "gw-1");
    for agent in [&mut gw1, &mut gw2, &mut gw3] {
        agent.stop();
    }
}

#[test]
fn a_new_version_under_latest_rolls_out_without_failing_requests_and_a_rotated_password_fails_until_fixed()
 {
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut world = FleetWorld::new();
    world.fleet.register("diabetes", "diabetes");
    world.fleet.package("diabetes:1", "models/diabetes");
    let mut gw1 = world.device("gw-1", &["site=plant1"], "127.0.0.5");
    let port = free_port();
    world
        .fleet
        .deploy("cd", "tags.site = 'plant1'", "diabetes:latest", port);
    world.wait_rollout("cd");
    let v1_image =
        world.manifest("gw-1")["signed"]["manifest"]["modules"]["diabetes"]["image"].clone();

    // diabetes:2 is packaged to the same repository and rolled out while requests flow.
    let stop = AtomicBool::new(false);
    let failures = std::thread::scope(|scope| {
        let load = scope.spawn(|| {
            let client = http_client();
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match client
                    .post(format!("http://127.0.0.5:{port}/score"))
                    .body(QUICKSTART_REQUEST)
                    .send()
                {
                    Ok(r) if r.status() == 200 => {}
                    Ok(r) => failures.push(r.status().to_string()),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        });
        assert_eq!(world.fleet.register("diabetes", "diabetes"), "diabetes:2");
        wait_for("diabetes:2 on gw-1", Duration::from_secs(60), || {
            let image =
                world.manifest("gw-1")["signed"]["manifest"]["modules"]["diabetes"]["image"]
                    .clone();
            (image != v1_image).then_some(())
        });
        world.wait_rollout("cd");
        stop.store(true, Ordering::Relaxed);
        load.join().expect("load")
    });
    assert!(
        failures.is_empty(),
        "requests failed during the swap: {failures:?}"
    );
    let reported: Value = serde_json::from_str(
        &world
            .fleet
            .ok(&["device", "show", "gw-1", "--output", "json"]),
    )
    .expect("JSON");
    assert!(
        reported["reported"]["modules"]["diabetes"]["image"]
            .as_str()
            .unwrap_or_default()
            .contains("diabetes:2@")
    );

    // The registry's password is rotated; the fleet still has the old one. Pinning the
    // deployment to diabetes:1 makes the device pull with it, and fail.
    world.registry.set_password("rotated-pass");
    world
        .fleet
        .deploy("cd", "tags.site = 'plant1'", "diabetes:1", port);
    let out = world
        .fleet
        .cli(&["rollout", "status", "cd", "--wait", "--timeout-secs", "60"]);
    assert_eq!(out.status.code(), Some(5));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("gw-1") && stderr.contains("unauthorized"),
        "{stderr}"
    );
    assert!(
        score_at("127.0.0.5", port)["variable"].is_array(),
        "v2 keeps serving"
    );

    // Fixing the password re-renders the device's manifest and the rollout succeeds.
    world.fleet.add_registry(&world.registry, "rotated-pass");
    world.wait_rollout("cd");
    gw1.stop();
}

#[test]
fn bad_cli_input_gets_one_clear_line_and_a_nonzero_exit_and_writes_nothing() {
    let world = FleetWorld::new();
    let unknown = world.fleet.cli(&[
        "deployment",
        "create",
        "d",
        "--target",
        "tags.site = 'x'",
        "--model",
        "nope:latest",
    ]);
    assert_eq!(unknown.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("\"nope\" is not registered"), "{stderr}");

    let syntax = world.fleet.cli(&[
        "deployment",
        "create",
        "d",
        "--target",
        "tags.site == 'x'",
        "--model",
        "nope:latest",
    ]);
    assert_eq!(syntax.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&syntax.stderr);
    assert!(
        stderr.contains("column 12") && stderr.contains("expected a quoted string"),
        "{stderr}"
    );
    assert_eq!(
        world
            .fleet
            .ok(&["deployment", "list", "--output", "json"])
            .trim(),
        "[]",
        "nothing was written"
    );

    // A device import with one bad line imports nothing and names the line; a good one (on
    // standard input, with a comment and a blank line) adds every device in one change.
    let key = DeviceIdentity::generate().public_key().to_string();
    let good =
        |id: &str| format!(r#"{{"id": "{id}", "publicKey": "{key}", "tags": {{"site": "x"}}}}"#);
    let bad_line = world.fleet.cli_with(
        &["device", "import", "-"],
        Some(&format!(
            "{}\n{}\n{{\"id\": \"gw-c\", \"key\": 1}}\n",
            good("gw-a"),
            good("gw-b")
        )),
    );
    assert_eq!(bad_line.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad_line.stderr);
    assert!(
        stderr.contains("line 3") && stderr.contains("unknown field `key`"),
        "{stderr}"
    );
    let bad_key = world.fleet.cli_with(
        &["device", "import", "-"],
        Some(&format!(
            "{}\n{{\"id\": \"gw-c\", \"publicKey\": \"age1nope\"}}\n",
            good("gw-a")
        )),
    );
    assert_eq!(bad_key.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad_key.stderr);
    assert!(stderr.contains("device \"gw-c\""), "{stderr}");
    assert_eq!(
        world
            .fleet
            .ok(&["device", "list", "--output", "json"])
            .trim(),
        "[]",
        "nothing was imported"
    );
    let imported = world.fleet.cli_with(
        &["device", "import", "-"],
        Some(&format!(
            "# two gateways\n{}\n\n{}\n",
            good("gw-a"),
            good("gw-b")
        )),
    );
    let stderr = String::from_utf8_lossy(&imported.stderr);
    assert!(
        imported.status.success() && stderr.contains("2 added, 0 updated"),
        "{stderr}"
    );
    world.fleet.ok(&["device", "remove", "gw-a"]);
    world.fleet.ok(&["device", "remove", "gw-b"]);

    let not_onnx = std::env::temp_dir().join(format!("not-a-model-{}.onnx", std::process::id()));
    std::fs::write(&not_onnx, b"not a model").expect("write");
    let bad_model = world.fleet.cli(&[
        "model",
        "register",
        "--name",
        "x",
        "--path",
        not_onnx.to_str().expect("path"),
    ]);
    assert_eq!(bad_model.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad_model.stderr).contains("ONNX Runtime"),
        "{}",
        String::from_utf8_lossy(&bad_model.stderr)
    );
    assert_eq!(
        world
            .fleet
            .ok(&["model", "list", "--output", "json"])
            .trim(),
        "[]"
    );

    let no_token = std::process::Command::new(workspace_binary("edgefleet"))
        .args(["device", "list"])
        .env("EDGEFLEET_SERVER", world.fleet.url())
        .env_remove("EDGEFLEET_TOKEN")
        .output()
        .expect("run");
    assert_eq!(no_token.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("EDGEFLEET_TOKEN"));
    let wrong_token = std::process::Command::new(workspace_binary("edgefleet"))
        .args(["device", "list"])
        .env("EDGEFLEET_SERVER", world.fleet.url())
        .env("EDGEFLEET_TOKEN", "wrong")
        .output()
        .expect("run");
    assert_eq!(wrong_token.status.code(), Some(4));
    let unreachable = std::process::Command::new(workspace_binary("edgefleet"))
        .args(["device", "list"])
        .env(
            "EDGEFLEET_SERVER",
            format!("http://127.0.0.1:{}", free_port()),
        )
        .env("EDGEFLEET_TOKEN", "x")
        .output()
        .expect("run");
    assert_eq!(unreachable.status.code(), Some(3));
}

#[test]
fn a_packaged_model_is_a_standard_image_and_cannot_be_deleted_while_deployed() {
    let world = FleetWorld::new();
    world.fleet.register("diabetes", "diabetes");
    let out = world.fleet.package("diabetes:1", "models/diabetes");
    let package: Value = serde_json::from_str(&out).expect("package JSON");

    // skopeo reads it like any image: labels, the digest the fleet recorded, one layer.
    let inspect = std::process::Command::new(edgefleet_tests::require_program("skopeo", "skopeo"))
        .args([
            "--insecure-policy",
            "inspect",
            "--tls-verify=false",
            "--creds",
            "edge:edge-pass",
        ])
        .arg(format!(
            "docker://{}/models/diabetes:1",
            world.registry.address()
        ))
        .output()
        .expect("skopeo inspect");
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let image: Value = serde_json::from_slice(&inspect.stdout).expect("skopeo JSON");
    assert_eq!(image["Labels"]["org.edgefleet.model.name"], "diabetes");
    assert_eq!(image["Labels"]["org.edgefleet.model.version"], "1");
    assert_eq!(image["Digest"], package["digest"]);
    assert_eq!(image["Layers"].as_array().map(Vec::len), Some(1));

    world.fleet.ok(&[
        "deployment",
        "create",
        "d",
        "--target",
        "tags.site = 'x'",
        "--model",
        "diabetes:1",
    ]);
    let refused = world.fleet.cli(&["model", "delete", "diabetes:1"]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("used by deployment \"d\""), "{stderr}");
    world.fleet.ok(&["deployment", "delete", "d"]);
    world.fleet.ok(&["model", "delete", "diabetes:1"]);
    assert_eq!(
        world
            .fleet
            .ok(&["model", "list", "--output", "json"])
            .trim(),
        "[]"
    );
}

#[test]
fn with_its_embedded_broker_the_fleet_alone_deploys_to_an_agent_and_removing_the_device_stops_it_and_revokes_its_login()
 {
    let registry = Registry::start("edge", "edge-pass");
    let broker_port = free_port();
    let fleet = FleetProcess::start_embedded(workspace_binary("edgefleet"), broker_port, "solo");
    fleet.add_registry(&registry, "edge-pass");
    fleet.register("diabetes", "diabetes");
    fleet.package("diabetes:1", "models/diabetes");

    // The agent's configuration is exactly what `device config` prints, the broker included.
    let placeholder = Mosquitto::new();
    let mut agent = AgentProcess::init(
        AgentSetup {
            binary: workspace_binary("edgefleet-agent"),
            device_id: "gw-solo".into(),
            fleet: "solo".into(),
            fleet_public_key: String::new(),
            mqtt_username: String::new(),
            mqtt_password: String::new(),
            insecure_registries: vec![],
            onnx_runtime_library: ort_library(),
            mqtt_ca_file: None,
            mqtt_client_cert: None,
            registry_ca_file: None,
        },
        &placeholder,
    );
    fleet.ok(&[
        "device",
        "add",
        "gw-solo",
        "--tag",
        "site=lab",
        "--public-key",
        &agent.public_key,
    ]);
    let config = fleet.ok(&["device", "config", "gw-solo"]);
    assert!(
        config.contains(&format!("url = \"mqtt://127.0.0.1:{broker_port}\"")),
        "{config}"
    );
    agent.use_config(&config);
    agent.set_env("EDGEFLEET_SERVING_BIND_ADDRESS", "127.0.0.6");
    agent.start();
    let port = free_port();
    fleet.deploy("lab", "tags.site = 'lab'", "diabetes:latest", port);
    let out = fleet.cli(&["rollout", "status", "lab", "--wait", "--timeout-secs", "60"]);
    assert!(
        out.status.success(),
        "{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        agent.log()
    );
    assert!(score_at("127.0.0.6", port)["variable"].is_array());

    // The model reads back: what it takes and gives, where it is deployed, its file.
    let shown: Value =
        serde_json::from_str(&fleet.ok(&["model", "show", "diabetes:1", "--output", "json"]))
            .expect("model JSON");
    assert_eq!(shown["deployedBy"], serde_json::json!(["lab/diabetes"]));
    assert!(
        shown["inputs"].as_array().is_some_and(|i| !i.is_empty()),
        "{shown}"
    );
    let text = fleet.ok(&["model", "show", "diabetes:1"]);
    assert!(text.contains("deployed by lab/diabetes"), "{text}");
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("d.onnx").display().to_string();
    fleet.ok(&["model", "download", "diabetes:1", "--file", &file]);
    assert_eq!(
        std::fs::read(&file).expect("downloaded"),
        std::fs::read(model_dir("diabetes").join("model.onnx")).expect("original")
    );
    let again = fleet.cli(&["model", "download", "diabetes:1", "--file", &file]);
    assert_eq!(again.status.code(), Some(1), "an existing file is kept");

    // A registry a deployment pulls with cannot be removed.
    let refused = fleet.cli(&["registry", "remove", "acr"]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{said}");
    assert!(said.contains("lab/diabetes"), "{said}");

    // Removing the device: its model stops serving, and its login is refused.
    let password = config
        .lines()
        .find_map(|l| l.strip_prefix("password = "))
        .map(|p| p.trim_matches('"').to_owned())
        .expect("password");
    let publish_as_device = || {
        std::process::Command::new(edgefleet_tests::require_program(
            "mosquitto_pub",
            "mosquitto-clients",
        ))
        .args(["-h", "127.0.0.1", "-p", &broker_port.to_string()])
        .args(["-u", "gw-solo", "-P", &password, "-i", "login-check"])
        .args(["-t", "edgefleet/solo/devices/gw-solo/inputs/x", "-m", "{}"])
        .output()
        .expect("mosquitto_pub")
        .status
        .success()
    };
    assert!(publish_as_device(), "the device may log in before removal");
    let removed = fleet.cli(&["device", "remove", "gw-solo"]);
    let said = String::from_utf8_lossy(&removed.stderr);
    assert!(
        removed.status.success()
            && said.contains("manifest 2 (empty, retained) stops and removes its modules")
            && said.contains("the broker refuses its login"),
        "{said}"
    );
    wait_for("the model to stop serving", Duration::from_secs(30), || {
        http_client()
            .post(format!("http://127.0.0.6:{port}/score"))
            .body(QUICKSTART_REQUEST)
            .send()
            .is_err()
            .then_some(())
    });
    assert!(
        !publish_as_device(),
        "the removed device's login is refused"
    );
    assert_eq!(
        fleet.ok(&["device", "list", "--output", "json"]).trim(),
        "[]"
    );
    agent.stop();

    // Added again under the same id, it continues above the retraction's version.
    fleet.ok(&[
        "device",
        "add",
        "gw-solo",
        "--tag",
        "site=lab",
        "--public-key",
        &agent.public_key,
    ]);
    let device: Value =
        serde_json::from_str(&fleet.ok(&["device", "show", "gw-solo", "--output", "json"]))
            .expect("device JSON");
    assert_eq!(device["manifestVersion"], 3);

    fleet.ok(&["deployment", "remove", "lab"]);
    fleet.ok(&["registry", "remove", "acr"]);
    assert_eq!(
        fleet.ok(&["registry", "list", "--output", "json"]).trim(),
        "[]"
    );
}

#[test]
fn over_a_tls_broker_the_fleet_publishes_signed_manifests() {
    let broker = Mosquitto::new()
        .add_user("fleet", "fleet-pass")
        .with_tls(false)
        .start();
    assert!(broker.url().starts_with("mqtts://"));
    let registry = Registry::start("edge", "edge-pass");
    let fleet = FleetProcess::start(
        workspace_binary("edgefleet"),
        &broker,
        "fleet",
        "fleet-pass",
        "tls",
    );
    fleet.add_registry(&registry, "edge-pass");
    fleet.register("diabetes", "diabetes");
    fleet.package("diabetes:1", "models/diabetes");
    let device = edgefleet_common::sealing::DeviceIdentity::generate();
    fleet.ok(&[
        "device",
        "add",
        "gw-t",
        "--tag",
        "site=t",
        "--public-key",
        &device.public_key().to_string(),
    ]);
    fleet.ok(&[
        "deployment",
        "create",
        "t",
        "--target",
        "tags.site = 't'",
        "--model",
        "diabetes:1",
    ]);
    let shown: Value =
        serde_json::from_str(&fleet.ok(&["manifest", "show", "gw-t", "--output", "json"]))
            .expect("JSON");
    assert_eq!(shown["version"], 1);
    let line = wait_for("the retained manifest", Duration::from_secs(20), || {
        broker
            .subscribe(
                "fleet",
                "fleet-pass",
                "edgefleet/tls/devices/gw-t/desired",
                1,
                2,
            )
            .into_iter()
            .next()
    });
    let wire = line.split_once(' ').expect("topic payload").1;
    let manifest: Value = serde_json::from_str(wire).expect("signed manifest");
    assert_eq!(manifest["manifest"]["deviceId"], "gw-t");
    let sealed = manifest["manifest"]["registryCredentials"]["acr"]["password"]
        .as_str()
        .expect("sealed");
    let sealed = edgefleet_common::sealing::SealedSecret::from_armored(sealed.to_owned());
    assert_eq!(
        device.unseal(&sealed).expect("sealed to the device"),
        "edge-pass"
    );
}

#[test]
fn module_logs_and_restart_are_answered_by_the_agent_over_the_commands_topic() {
    use edgefleet_tests::docker;
    let mut world = FleetWorld::new();
    let image_tag = format!("edgefleet-test/sensor-sim-logs:{}", std::process::id());
    let module = format!("logs-{}", std::process::id());
    let container = format!("edgefleet-gw-logs-{module}");
    let _cleanup = docker::DockerCleanup {
        containers: vec![container.clone()],
        images: vec![image_tag.clone()],
    };
    docker::build_sensor_sim_image(&image_tag);
    let image = docker::push_docker_image(&image_tag, &world.registry, "modules/sensor-logs");
    let mut agent = world.device("gw-logs", &["site=logs"], "127.0.0.7");

    // A container module, deployed as any administrator would: a deployment file applied.
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("logs.yaml");
    std::fs::write(
        &file,
        format!(
            "name: logs\ntarget: \"tags.site = 'logs'\"\nmodules:\n  {module}:\n    kind: container\n    image: {image}\n    env: {{MQTT_PORT: \"{port}\", TOPIC: sensors/logs}}\n    createOptions: {{HostConfig: {{NetworkMode: host}}}}\n",
            port = world.broker().port()
        ),
    )
    .expect("deployment file");
    world
        .fleet
        .ok(&["deployment", "apply", "-f", &file.display().to_string()]);
    wait_for("the container", Duration::from_secs(60), || {
        docker::inspect_container(&container).filter(|c| c["State"]["Running"] == true)
    });

    let logs = wait_for("the module's logs", Duration::from_secs(30), || {
        let out = world
            .fleet
            .cli(&["module", "logs", "gw-logs", &module, "--tail", "5"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success() && text.contains("sensor-sim: publishing")).then_some(text)
    });
    assert!(logs.contains("sensors/logs"), "{logs}");

    let started =
        docker::inspect_container(&container).expect("container")["State"]["StartedAt"].clone();
    world.fleet.ok(&["module", "restart", "gw-logs", &module]);
    let after = docker::inspect_container(&container).expect("container");
    assert_eq!(after["State"]["Running"], true);
    assert_ne!(
        after["State"]["StartedAt"], started,
        "the container was restarted"
    );

    let unknown = world.fleet.cli(&["module", "logs", "gw-logs", "nope"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("not a container module"));
    agent.stop();
}
