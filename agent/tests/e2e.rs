//! End to end: the real agent binary against a real mosquitto, a real registry with
//! authentication and real ONNX Runtime. Manifests are signed with the common crate and images
//! pushed with skopeo, as the fleet and users do.

#![allow(
    clippy::too_many_lines,
    reason = "an end-to-end test is one scenario, read from top to bottom"
)]

use std::collections::BTreeMap;
use std::time::Duration;

use edgefleet_common::manifest::{ImagePullPolicy, ModelSpec, Module, RestartPolicy};
use edgefleet_tests::{
    AgentProcess, DEVICE, DeviceWorld, QUICKSTART_REQUEST, REGISTRY_PASSWORD, Subscriber,
    assert_close, diabetes_module_json, free_port, http_client, model_dir, score, sensor_module,
    telemetry_envelopes, wait_for, wait_for_or_log,
};
use serde_json::{Value, json};

#[test]
fn a_signed_manifest_for_the_diabetes_model_serves_predictions_matching_python() {
    let world = DeviceWorld::new();
    let (mut agent, image, port) = world.serving_diabetes("diabetes");
    let reported = world.wait_outcome(&agent, 1, 200);
    assert_eq!(reported["appliedVersion"], 1);
    let module = &reported["modules"]["diabetes"];
    assert_eq!(module["runtimeStatus"], "running");
    assert_eq!(module["image"], image.as_str());
    assert_eq!(
        Some(module["imageDigest"].as_str().unwrap_or_default()),
        image.split('@').nth(1)
    );

    let (status, body) = score(port, QUICKSTART_REQUEST);
    assert_eq!(status, 200, "{body}");
    let reference: Value = serde_json::from_slice(
        &std::fs::read(model_dir("diabetes").join("reference.json")).expect("reference"),
    )
    .expect("json");
    for row in 0..2 {
        assert_close(
            &body["variable"][row][0],
            &reference["outputs"]["variable"][row][0],
        );
    }

    let client = http_client();
    let health = client
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .expect("GET /");
    assert_eq!(health.text().expect("body"), "Healthy");
    let swagger: Value = client
        .get(format!("http://127.0.0.1:{port}/swagger.json"))
        .send()
        .expect("GET /swagger.json")
        .json()
        .expect("json");
    assert_eq!(swagger["openapi"], "3.0.1");
    assert!(swagger["components"]["schemas"]["ServiceInput"]["example"]["data"].is_array());

    // The inference reaches the broker as telemetry: an envelope with the device, module and
    // seq. A persistent session registered first receives what is published after.
    let telemetry_topic = world.topics.telemetry("diabetes");
    let collect = |count| {
        world.broker.subscribe_session(
            "fleet",
            "fleet-pass",
            "telemetry-check",
            &telemetry_topic,
            count,
            2,
        )
    };
    collect(1);
    let (status, _) = score(port, QUICKSTART_REQUEST);
    assert_eq!(status, 200);
    let line = wait_for_or_log(
        &agent,
        "an inference record",
        Duration::from_secs(20),
        || collect(1).into_iter().next(),
    );
    let envelope = telemetry_envelopes(line.split_once(' ').expect("topic payload").1).remove(0);
    assert_eq!(envelope["deviceId"], DEVICE);
    assert_eq!(envelope["module"], "diabetes");
    assert_eq!(envelope["kind"], "inference");
    assert!(envelope["seq"].as_u64().expect("seq") >= 1);
    assert!(envelope["body"]["outputs"]["variable"].is_array());
    agent.stop();
}

#[test]
fn a_plain_digits_image_from_the_dockerfile_recipe_serves_probabilities_as_json() {
    let world = DeviceWorld::new();
    let mut agent = world.agent();
    agent.start();
    // No module.json: the layout `docker build images/model-module` gives.
    let image = world.push("models/digits", "digits-zipmap", None);
    let port = free_port();
    world.publish(&world.manifest(&agent, 1, REGISTRY_PASSWORD, &[("digits", &image, port)]));
    world.wait_outcome(&agent, 1, 200);
    let sample =
        std::fs::read_to_string(model_dir("digits-zipmap").join("sample.json")).expect("sample");
    let (status, body) = score(port, &sample);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["output_label"], json!([0]));
    let probabilities = body["output_probability"][0]
        .as_object()
        .expect("a {class: probability} object");
    assert_eq!(probabilities.len(), 10);
    assert!(probabilities["0"].as_f64().expect("number") > 0.9);
    agent.stop();
}

#[test]
fn a_wrong_registry_password_reports_417_naming_the_registry_and_the_old_model_keeps_answering() {
    let world = DeviceWorld::new();
    let (mut agent, diabetes, port) = world.serving_diabetes("m");
    let digits = world.push("models/digits", "digits", None);

    world.publish(&world.manifest(&agent, 2, "wrong-password", &[("m", &digits, port)]));
    let reported = world.wait_outcome(&agent, 2, 417);
    let message = reported["lastDesired"]["message"]
        .as_str()
        .expect("message");
    assert!(message.contains(&world.registry.address()), "{message}");
    assert!(message.contains("unauthorized"), "{message}");
    assert!(
        message.contains("\"edge\""),
        "the user name is named: {message}"
    );
    assert!(
        !message.contains("wrong-password"),
        "the password never appears: {message}"
    );
    assert_eq!(reported["appliedVersion"], 1);
    assert_eq!(reported["modules"]["m"]["image"], diabetes.as_str());

    let (status, body) = score(port, QUICKSTART_REQUEST);
    assert_eq!(status, 200, "the previous model keeps answering: {body}");
    assert!(body["variable"].is_array());
    assert!(
        !agent.log().contains("wrong-password"),
        "the password never reaches the log"
    );
    agent.stop();
}

#[test]
fn a_manifest_with_one_byte_changed_is_rejected_with_412_and_changes_nothing() {
    let world = DeviceWorld::new();
    let (mut agent, diabetes, port) = world.serving_diabetes("m");

    let other_port = free_port();
    let wire = world.fleet_key.sign(&world.manifest(
        &agent,
        2,
        REGISTRY_PASSWORD,
        &[("m", &diabetes, other_port)],
    ));
    let text = String::from_utf8(wire).expect("utf-8");
    let tampered = text.replacen(
        &format!("\"httpPort\":{other_port}"),
        &format!("\"httpPort\":{}", other_port ^ 1),
        1,
    );
    assert_eq!(tampered.len(), text.len());
    world.publish_wire(tampered.as_bytes());
    let reported = wait_for("the 412", Duration::from_secs(30), || {
        world
            .reported()
            .filter(|r| r["lastDesired"]["status"] == 412)
    });
    assert!(
        reported["lastDesired"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("signature")
    );
    assert_eq!(reported["appliedVersion"], 1);
    let (status, _) = score(port, QUICKSTART_REQUEST);
    assert_eq!(status, 200, "still serving on the old port");
    agent.stop();
}

#[test]
fn a_model_that_fails_its_canary_is_rolled_back_automatically() {
    let world = DeviceWorld::new();
    let mut agent = world.agent();
    agent.start();
    let good = world.push_diabetes();
    let bad = world.push(
        "models/diabetes-bad",
        "diabetes",
        Some(diabetes_module_json(true)),
    );
    let port = free_port();
    world.publish(&world.manifest(&agent, 1, REGISTRY_PASSWORD, &[("m", &good, port)]));
    world.wait_outcome(&agent, 1, 200);
    let (_, before) = score(port, QUICKSTART_REQUEST);

    world.publish(&world.manifest(&agent, 2, REGISTRY_PASSWORD, &[("m", &bad, port)]));
    let reported = world.wait_outcome(&agent, 2, 417);
    let message = reported["lastDesired"]["message"]
        .as_str()
        .expect("message");
    assert!(message.contains("canary"), "{message}");
    assert_eq!(
        reported["modules"]["m"]["image"],
        good.as_str(),
        "still the previous version"
    );
    let (status, after) = score(port, QUICKSTART_REQUEST);
    assert_eq!(status, 200);
    assert_eq!(after, before);
    agent.stop();
}

#[test]
fn session_options_reach_onnx_runtime_and_a_missing_execution_provider_warns_or_refuses_as_asked() {
    let world = DeviceWorld::new();
    let mut agent = world.agent();
    agent.start();
    let image = world.push_diabetes();
    let port = free_port();
    let with_session = |version: u64, session: Value| {
        let mut manifest =
            world.manifest(&agent, version, REGISTRY_PASSWORD, &[("m", &image, port)]);
        if let Some(Module::Model(spec)) = manifest.modules.get_mut("m") {
            spec.session = serde_json::from_value(session).expect("session options");
        }
        manifest
    };

    // The stock ONNX Runtime has no CUDA: the model runs on the CPU and the state says so.
    world.publish(&with_session(
        1,
        json!({"intraOpThreads": 2, "interOpThreads": 2, "graphOptimization": "basic",
               "executionProviders": ["cuda", "cpu"]}),
    ));
    let reported = world.wait_outcome(&agent, 1, 200);
    let warnings = reported["modules"]["m"]["warnings"].to_string();
    assert!(
        warnings.contains("CUDAExecutionProvider is not in this device's ONNX Runtime"),
        "{warnings}"
    );
    let (status, before) = score(port, QUICKSTART_REQUEST);
    assert_eq!(status, 200);

    // Required, it is refused naming the provider, and the loaded version keeps answering.
    world.publish(&with_session(
        2,
        json!({"executionProviders": ["tensorrt"], "requireExecutionProviders": true}),
    ));
    let reported = world.wait_outcome(&agent, 2, 417);
    let message = reported["lastDesired"]["message"]
        .as_str()
        .expect("message");
    assert!(
        message.contains("requires execution provider TensorrtExecutionProvider"),
        "{message}"
    );
    assert_eq!(score(port, QUICKSTART_REQUEST), (200, before.clone()));

    // Back to the defaults: a new session, no warning.
    world.publish(&with_session(3, json!({})));
    let reported = world.wait_outcome(&agent, 3, 200);
    assert_eq!(reported["modules"]["m"].get("warnings"), None, "{reported}");
    assert_eq!(score(port, QUICKSTART_REQUEST), (200, before));
    agent.stop();
}

#[test]
fn request_files_dropped_in_a_model_modules_batch_directory_are_scored_beside_them() {
    let world = DeviceWorld::new();
    let mut agent = world.agent();
    agent.start();
    let image = world.push_diabetes();
    let port = free_port();
    let dir = tempfile::tempdir().expect("batch dir");
    let mut manifest = world.manifest(&agent, 1, REGISTRY_PASSWORD, &[("m", &image, port)]);
    if let Some(Module::Model(spec)) = manifest.modules.get_mut("m") {
        spec.batch = Some(edgefleet_common::manifest::BatchInput {
            dir: dir.path().display().to_string(),
        });
    }
    world.publish(&manifest);
    world.wait_outcome(&agent, 1, 200);

    let reference: Value = serde_json::from_slice(
        &std::fs::read(model_dir("diabetes").join("reference.json")).expect("reference"),
    )
    .expect("JSON");
    let rows = reference["inputs"]["X"].as_array().expect("rows");
    let mut csv = (0..10)
        .map(|i| format!("x{i}"))
        .collect::<Vec<_>>()
        .join(",")
        + "\n";
    for row in rows {
        let cells: Vec<String> = row
            .as_array()
            .expect("row")
            .iter()
            .map(Value::to_string)
            .collect();
        csv.push_str(&(cells.join(",") + "\n"));
    }
    std::fs::write(dir.path().join("shift-1.csv"), csv).expect("drop a CSV");
    std::fs::write(
        dir.path().join("requests.jsonl"),
        format!("{QUICKSTART_REQUEST}\n{{\"data\": [[1]]}}\n"),
    )
    .expect("drop JSON Lines");

    let scored = wait_for_or_log(&agent, "the CSV scored", Duration::from_secs(30), || {
        std::fs::read_to_string(dir.path().join("shift-1.scored.csv")).ok()
    });
    let mut lines = scored.lines();
    assert_eq!(lines.next(), Some("variable,error"));
    let expected = reference["outputs"]["variable"]
        .as_array()
        .expect("outputs");
    let values: Vec<&str> = lines.collect();
    assert_eq!(values.len(), expected.len(), "{scored}");
    for (got, want) in values.iter().zip(expected) {
        let value: f64 = got.trim_end_matches(',').parse().expect("a number");
        assert_close(&json!(value), &want[0]);
    }
    let answers = wait_for_or_log(
        &agent,
        "the JSON Lines scored",
        Duration::from_secs(30),
        || std::fs::read_to_string(dir.path().join("requests.scored.jsonl")).ok(),
    );
    let answers: Vec<Value> = answers
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(answers[0], score(port, QUICKSTART_REQUEST).1);
    assert!(
        answers[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("float32[N,10]")),
        "{answers:?}"
    );
    assert!(!dir.path().join("shift-1.scored.part.csv").exists());
    agent.stop();
}

#[test]
fn malformed_score_bodies_get_400s_and_oversized_ones_413_naming_the_problem_and_the_agent_stays_up()
 {
    let world = DeviceWorld::new();
    let (mut agent, _, port) = world.serving_diabetes("m");

    let nested = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let huge = format!("{{\"data\": [[{}]]}}", vec!["1.0"; 1_200_000].join(","));
    let cases: Vec<(&str, String, &str)> = vec![
        ("not JSON", "{\"data\": [[1,2".into(), "not valid JSON"),
        ("empty", String::new(), "not valid JSON"),
        ("an array", "[[1,2,3]]".into(), "JSON object"),
        (
            "wrong width",
            "{\"data\": [[1,2,3]]}".into(),
            "float32[N,10]",
        ),
        (
            "ragged rows",
            "{\"data\": [[1,2,3,4,5,6,7,8,9,10],[1]]}".into(),
            "equal-length",
        ),
        (
            "a string value",
            "{\"data\": [[1,2,3,4,5,6,7,8,9,\"x\"]]}".into(),
            "\"X\"",
        ),
        (
            "an unknown member",
            "{\"data\": [[1,2,3,4,5,6,7,8,9,10]], \"extra\": 1}".into(),
            "extra",
        ),
        (
            "deep nesting",
            format!("{{\"data\": {nested}}}"),
            "not valid JSON",
        ),
        ("an oversized body", huge, "larger than"),
    ];
    for (what, body, expected) in cases {
        let (status, response) = score(port, &body);
        let want = if what == "an oversized body" {
            413
        } else {
            400
        };
        assert_eq!(status, want, "{what}: {response}");
        let message = response["error"].as_str().unwrap_or_default();
        assert!(
            message.contains(expected),
            "{what}: {message:?} should mention {expected:?}"
        );
    }
    assert!(agent.is_running(), "the agent survived: {}", agent.log());
    let (status, _) = score(port, QUICKSTART_REQUEST);
    assert_eq!(status, 200);
    agent.stop();
}

#[test]
fn telemetry_produced_while_the_broker_is_down_survives_sigkill_and_arrives_without_gaps() {
    const TOTAL: usize = 10_000;
    let mut world = DeviceWorld::new();
    let (mut agent, _, port) = world.serving_diabetes("m");

    // A persistent subscriber: the broker keeps its queue across its own restart.
    let topic = world.topics.telemetry("+");
    let sink = Subscriber::connect(
        world.broker.port(),
        "fleet",
        "fleet-pass",
        "telemetry-sink",
        &[&topic],
    );
    std::thread::sleep(Duration::from_millis(500));

    world.broker.stop();
    let client = http_client();
    let send = |n: usize| {
        for _ in 0..n {
            let response = client
                .post(format!("http://127.0.0.1:{port}/score"))
                .body(QUICKSTART_REQUEST)
                .send()
                .expect("POST /score while the uplink is down");
            assert_eq!(response.status(), 200);
        }
    };
    send(TOTAL / 2);
    // An answer waits for its record to be durable: kill the agent right after the last one,
    // without any chance to flush (the last records are in the outbox journal only).
    agent.kill();
    agent.start();
    wait_for(
        "the agent to serve again from its cache",
        Duration::from_secs(30),
        || {
            client
                .get(format!("http://127.0.0.1:{port}/"))
                .send()
                .ok()
                .filter(|r| r.status() == 200)
        },
    );
    send(TOTAL / 2);
    std::thread::sleep(Duration::from_secs(2));
    world.broker.restart();

    let mut seqs: BTreeMap<u64, String> = BTreeMap::new();
    let mut inference = std::collections::BTreeSet::new();
    wait_for("every record to arrive", Duration::from_secs(120), || {
        seqs.clear();
        inference.clear();
        for envelope in sink
            .messages()
            .iter()
            .flat_map(|(_, payload)| telemetry_envelopes(payload))
        {
            let seq = envelope["seq"].as_u64().expect("seq");
            if envelope["kind"] == "inference" {
                inference.insert(seq);
            }
            seqs.insert(
                seq,
                envelope["module"].as_str().unwrap_or_default().to_owned(),
            );
        }
        (inference.len() >= TOTAL).then_some(())
    });
    assert_eq!(
        inference.len(),
        TOTAL,
        "every accepted inference record arrived once (by seq)"
    );
    let first = *seqs.keys().next().expect("records");
    let last = *seqs.keys().next_back().expect("records");
    assert_eq!(
        seqs.len() as u64,
        last - first + 1,
        "seq has no gaps from {first} to {last}"
    );
    agent.stop();
}

#[test]
fn over_a_tls_broker_with_a_client_certificate_and_a_tls_registry_the_agent_applies_and_serves() {
    let world = DeviceWorld::with_tls(true);
    let (mut agent, _, port) = world.serving_diabetes("diabetes");
    let reported = world.wait_outcome(&agent, 1, 200);
    assert_eq!(reported["modules"]["diabetes"]["runtimeStatus"], "running");
    let (status, _) = score(port, QUICKSTART_REQUEST);
    assert_eq!(status, 200);
    agent.stop();
}

#[test]
fn bearer_keys_are_enforced_and_mqtt_inputs_and_sampled_data_arrive_as_telemetry() {
    use sha2::Digest as _;
    let world = DeviceWorld::new();
    let mut agent = world.agent();
    agent.start();
    let image = world.push_diabetes();
    let port = free_port();
    let mut manifest = world.manifest(&agent, 1, REGISTRY_PASSWORD, &[("m", &image, port)]);
    if let Some(Module::Model(ModelSpec {
        serving: Some(serving),
        ..
    })) = manifest.modules.get_mut("m")
    {
        serving.auth_key_sha256 = vec![hex::encode(sha2::Sha256::digest(b"key-1"))];
        serving.data_collection_ppm = 1_000_000;
    }
    world.publish(&manifest);
    world.wait_outcome(&agent, 1, 200);

    let telemetry = world.topics.telemetry("m");
    let collect = |count| {
        world
            .broker
            .subscribe_session("fleet", "fleet-pass", "sink", &telemetry, count, 2)
    };
    collect(1);

    let client = http_client();
    let url = format!("http://127.0.0.1:{port}/score");
    let post = |key: Option<&str>| {
        let mut request = client.post(&url).body(QUICKSTART_REQUEST);
        if let Some(key) = key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        request.send().expect("POST /score").status().as_u16()
    };
    assert_eq!(post(None), 401);
    assert_eq!(post(Some("wrong")), 401);
    assert_eq!(post(Some("key-1")), 200);
    let swagger: Value = client
        .get(format!("http://127.0.0.1:{port}/swagger.json"))
        .send()
        .expect("swagger")
        .json()
        .expect("json");
    assert_eq!(swagger["security"], json!([{"Bearer": []}]));

    let input = world.topics.input("m");
    assert!(world.broker.publish(
        "fleet",
        "fleet-pass",
        &input,
        r#"{"data": [[1,2,3,4,5,6,7,8,9,10]]}"#,
        false
    ));

    let mut kinds = std::collections::BTreeMap::<String, Vec<Value>>::new();
    wait_for(
        "http, mqtt and collected-data records",
        Duration::from_secs(30),
        || {
            for envelope in collect(10)
                .iter()
                .flat_map(|line| line.split_once(' ').map(|(_, p)| telemetry_envelopes(p)))
                .flatten()
            {
                let key = format!(
                    "{}/{}",
                    envelope["kind"].as_str()?,
                    envelope["body"]["source"].as_str().unwrap_or("-")
                );
                kinds.entry(key).or_default().push(envelope);
            }
            (kinds.contains_key("inference/http")
                && kinds.contains_key("inference/mqtt")
                && kinds.contains_key("collected-data/-"))
            .then_some(())
        },
    );
    let mqtt = &kinds["inference/mqtt"][0];
    assert_eq!(
        mqtt["body"]["outputs"]["variable"].as_array().map(Vec::len),
        Some(1)
    );
    let collected = &kinds["collected-data/-"][0];
    assert_eq!(collected["body"]["inputs"]["data"][0][0], 1);
    agent.stop();
}

fn status_json(agent: &AgentProcess) -> Value {
    let status = agent
        .command()
        .args(["status", "--json"])
        .output()
        .expect("status");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    serde_json::from_slice(&status.stdout).expect("status JSON")
}

#[test]
fn restarted_without_its_registry_the_agent_serves_from_its_cache_and_status_reads_it_running_or_stopped()
 {
    let world = DeviceWorld::new();
    let (mut agent, image, port) = world.serving_diabetes("m");
    let (status, _) = score(port, QUICKSTART_REQUEST);
    assert_eq!(status, 200);

    // Running: the agent answers on its status socket, counters included.
    let doc = wait_for(
        "status with the request counted",
        Duration::from_secs(15),
        || {
            let doc = status_json(&agent);
            (doc["modules"]["m"]["inference"]["count"] == 1).then_some(doc)
        },
    );
    assert_eq!(doc["running"], true);
    assert_eq!(doc["appliedVersion"], 1);
    assert_eq!(doc["modules"]["m"]["runtimeStatus"], "running");
    assert_eq!(doc["modules"]["m"]["image"], image.as_str());
    assert_eq!(doc["lastDesired"]["status"], 200);

    // Stopped: read from the store.
    agent.stop();
    let doc = status_json(&agent);
    assert_eq!(doc["running"], false);
    assert_eq!(doc["appliedVersion"], 1);
    assert_eq!(doc["modules"]["m"]["runtimeStatus"], "stopped");
    assert_eq!(doc["modules"]["m"]["image"], image.as_str());
    assert_eq!(doc["lastDesired"]["status"], 200);

    let DeviceWorld {
        broker, registry, ..
    } = world;
    drop(registry);
    agent.start();
    wait_for("serving from the cache", Duration::from_secs(30), || {
        http_client()
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .ok()
            .filter(|r| r.status() == 200)
    });
    let (status, body) = score(port, QUICKSTART_REQUEST);
    assert_eq!(status, 200, "{body}");
    agent.stop();
    drop(broker);
}

#[test]
fn a_bad_configuration_exits_78_naming_the_field_and_init_keeps_the_key_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let world = DeviceWorld::new();
    let agent = world.agent();
    let key = agent.data_dir().join("device.key");
    let mode = std::fs::metadata(&key)
        .expect("device.key")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let again = agent.command().arg("init").output().expect("init again");
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).trim(),
        agent.public_key,
        "init keeps the existing key"
    );

    let out = agent
        .command()
        .arg("run")
        .env("EDGEFLEET_MQTT_URL", "http://broker")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("config field `mqtt.url`"), "{stderr}");
}

#[test]
fn requests_sent_while_a_new_version_is_activated_all_succeed() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let world = DeviceWorld::new();
    let mut agent = world.agent();
    agent.start();
    let v1 = world.push_diabetes();
    let mut v2_json = diabetes_module_json(false);
    v2_json["version"] = json!(2);
    let v2 = world.push("models/diabetes", "diabetes", Some(v2_json));
    assert_ne!(v1, v2);
    let port = free_port();
    world.publish(&world.manifest(&agent, 1, REGISTRY_PASSWORD, &[("m", &v1, port)]));
    world.wait_outcome(&agent, 1, 200);

    let stop = AtomicBool::new(false);
    let sending = std::sync::atomic::AtomicU32::new(0);
    let (sent, failures) = std::thread::scope(|scope| {
        let load = scope.spawn(|| {
            let client = http_client();
            let (mut sent, mut failures) = (0u32, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let response = client
                    .post(format!("http://127.0.0.1:{port}/score"))
                    .body(QUICKSTART_REQUEST)
                    .send();
                sent += 1;
                sending.store(sent, Ordering::Relaxed);
                match response {
                    Ok(r) if r.status() == 200 => {}
                    Ok(r) => failures.push(format!("status {}", r.status())),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            (sent, failures)
        });
        world.publish(&world.manifest(&agent, 2, REGISTRY_PASSWORD, &[("m", &v2, port)]));
        let reported = world.wait_outcome(&agent, 2, 200);
        assert_eq!(reported["modules"]["m"]["image"], v2.as_str());
        // The load goes on a while after the swap, however slow the machine is.
        let swapped_at = sending.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(300));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while sending.load(Ordering::Relaxed) < swapped_at + 10
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
        load.join().expect("load thread")
    });
    assert!(sent > 10, "the load ran during the swap ({sent} requests)");
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    agent.stop();
}

#[test]
fn a_sensor_container_feeds_the_model_and_is_restarted_adopted_and_removed_as_the_manifest_says() {
    use edgefleet_tests::docker;
    // Its own device id: the agents of the other tests share this Docker engine and only
    // look at their own device's containers.
    let world = DeviceWorld::with(false, "gw-containers");
    let image_tag = format!("edgefleet-test/sensor-sim:{}", std::process::id());
    let module = format!("sensor-{}", std::process::id());
    let container = format!("edgefleet-{}-{module}", world.device);
    let _cleanup = docker::DockerCleanup {
        containers: vec![container.clone(), format!("edgefleet-{module}")],
        images: vec![image_tag.clone()],
    };
    docker::build_sensor_sim_image(&image_tag);
    let sensor_image = docker::push_docker_image(&image_tag, &world.registry, "modules/sensor-sim");

    let mut agent = world.agent();
    agent.set_env("EDGEFLEET_DOCKER_IMAGE_GRACE_SECONDS", "2");
    agent.start();
    let diabetes = world.push_diabetes();
    let port = free_port();
    let mut manifest = world.manifest(
        &agent,
        1,
        REGISTRY_PASSWORD,
        &[("diabetes", &diabetes, port)],
    );
    let sensor = sensor_module(
        &sensor_image,
        &world,
        &world.topics.input("diabetes"),
        RestartPolicy::Always,
    );
    manifest
        .modules
        .insert(module.clone(), Module::Container(sensor.clone()));
    world.publish(&manifest);
    let reported = world.wait_outcome(&agent, 1, 200);
    assert_eq!(reported["modules"][&module]["kind"], "container");
    let first = docker::inspect_container(&container).expect("the container exists");
    assert_eq!(first["State"]["Running"], true);
    let env = first["Config"]["Env"].to_string();
    assert!(
        !env.contains(REGISTRY_PASSWORD),
        "the registry password is not in the container"
    );

    // Its readings are scored: predictions arrive as telemetry of the model module.
    let telemetry = world.topics.telemetry("diabetes");
    let line = wait_for(
        "a prediction from the sensor's readings",
        Duration::from_secs(30),
        || {
            world
                .broker
                .subscribe("fleet", "fleet-pass", &telemetry, 5, 3)
                .into_iter()
                .find(|l| l.contains("\"source\":\"mqtt\""))
        },
    );
    assert!(line.contains("\"variable\""), "{line}");

    // Killed from outside, it comes back after the backoff, and the restart is counted.
    let states = Subscriber::connect(
        world.broker.port(),
        "fleet",
        "fleet-pass",
        "reported-sink",
        &[&world.topics.reported()],
    );
    std::thread::sleep(Duration::from_millis(500));
    docker::kill_container(&container);
    let status_of = |json: &str| -> Option<(String, u64)> {
        let r: Value = serde_json::from_str(json).ok()?;
        let m = &r["modules"][&module];
        Some((
            m["runtimeStatus"].as_str()?.to_owned(),
            m["restartCount"].as_u64()?,
        ))
    };
    wait_for_or_log(
        &agent,
        "a backoff, then the restart",
        Duration::from_secs(60),
        || {
            let seen: Vec<(String, u64)> = states
                .messages()
                .iter()
                .filter_map(|(_, p)| status_of(p))
                .collect();
            let backoff = seen.iter().position(|(s, _)| s == "backoff")?;
            seen[backoff..]
                .iter()
                .find(|(s, n)| s == "running" && *n == 1)
                .map(|_| ())
        },
    );
    let restarted = world.reported().expect("reported state");
    assert_eq!(restarted["modules"][&module]["restartCount"], 1);
    let after_restart = docker::inspect_container(&container).expect("container");
    assert_eq!(after_restart["Id"], first["Id"], "restarted, not recreated");

    // A restarted agent adopts the running container: same id, same start time; one named
    // as agents before per-device names named it is renamed, not recreated.
    agent.stop();
    docker::rename_container(&container, &format!("edgefleet-{module}"));
    agent.start();
    world.publish(&manifest);
    std::thread::sleep(Duration::from_secs(3));
    let adopted = docker::inspect_container(&container).expect("container");
    assert_eq!(adopted["Id"], after_restart["Id"]);
    assert_eq!(
        adopted["State"]["StartedAt"],
        after_restart["State"]["StartedAt"]
    );

    // A create option Docker does not know (a typo) refuses the manifest with 400; the container keeps running.
    let mut bad = manifest.clone();
    bad.version = 2;
    if let Some(Module::Container(m)) = bad.modules.get_mut(&module) {
        m.create_options =
            Some(json!({"HostConfig": {"NetworkMode": "host", "PortBinding": {"80/tcp": []}}}));
    }
    world.publish(&bad);
    let refused = world.wait_outcome(&agent, 2, 400);
    assert!(
        refused["lastDesired"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("HostConfig.PortBinding")
    );
    assert_eq!(
        docker::inspect_container(&container).expect("container")["Id"],
        adopted["Id"]
    );

    // Removing the module removes its container.
    let mut without = manifest.clone();
    without.version = 3;
    without.modules.remove(&module);
    world.publish(&without);
    world.wait_outcome(&agent, 3, 200);
    assert!(
        docker::inspect_container(&container).is_none(),
        "the container is gone"
    );
    // After the grace period (2 s here) the image no manifest uses is removed too.
    wait_for(
        "the unused image to be removed",
        Duration::from_secs(30),
        || (!docker::image_exists(&sensor_image)).then_some(()),
    );
    agent.stop();
}

#[test]
fn restart_policy_never_leaves_a_killed_container_stopped_and_a_failed_pull_runs_the_present_image_and_is_reported()
 {
    use edgefleet_tests::docker;
    let world = DeviceWorld::with(false, "gw-never");
    let image_tag = format!("edgefleet-test/sensor-sim-never:{}", std::process::id());
    let module = format!("never-{}", std::process::id());
    let container = format!("edgefleet-{}-{module}", world.device);
    let _cleanup = docker::DockerCleanup {
        containers: vec![container.clone()],
        images: vec![image_tag.clone()],
    };
    docker::build_sensor_sim_image(&image_tag);
    let sensor_image =
        docker::push_docker_image(&image_tag, &world.registry, "modules/sensor-never");

    let mut agent = world.agent();
    agent.start();
    let mut manifest = world.manifest(&agent, 1, REGISTRY_PASSWORD, &[]);
    manifest.modules.insert(
        module.clone(),
        Module::Container(sensor_module(
            &sensor_image,
            &world,
            "sensors/never",
            RestartPolicy::Never,
        )),
    );
    world.publish(&manifest);
    world.wait_outcome(&agent, 1, 200);

    docker::kill_container(&container);
    let reported = wait_for("the stop to be reported", Duration::from_secs(20), || {
        world.reported().filter(|r| {
            let status = &r["modules"][&module]["runtimeStatus"];
            *status == "failed" || *status == "stopped"
        })
    });
    assert_eq!(reported["modules"][&module]["exitCode"], 137);
    std::thread::sleep(Duration::from_secs(12));
    let state = docker::inspect_container(&container).expect("container");
    assert_eq!(state["State"]["Running"], false, "never: not restarted");
    assert_eq!(
        world.reported().expect("reported")["modules"][&module]["restartCount"],
        0
    );

    // A new manifest changes the module (so its container is created again) with a wrong
    // registry password: the image is on the device, so the module runs, and the pull error
    // is reported.
    let mut next = world.manifest(&agent, 2, "wrong-password", &[]);
    let mut sensor = sensor_module(
        &sensor_image,
        &world,
        "sensors/never",
        RestartPolicy::Always,
    );
    sensor.env.insert("INTERVAL_MS".into(), "300".into());
    next.modules
        .insert(module.clone(), Module::Container(sensor));
    world.publish(&next);
    let reported = world.wait_outcome(&agent, 2, 200);
    assert_eq!(reported["modules"][&module]["runtimeStatus"], "running");
    let error = reported["modules"][&module]["lastError"]
        .as_str()
        .unwrap_or_default();
    assert!(
        error.contains("unauthorized") && error.contains(&world.registry.address()),
        "{error}"
    );
    assert!(!error.contains("wrong-password"));
    let recreated = docker::inspect_container(&container).expect("container");
    assert_eq!(recreated["State"]["Running"], true);
    assert_ne!(
        recreated["Id"], state["Id"],
        "the changed module got a new container"
    );
    assert!(
        recreated["Config"]["Env"]
            .to_string()
            .contains("INTERVAL_MS=300")
    );

    // imagePullPolicy never: the registry (still refusing) is not asked, the image on the
    // device runs and no error is reported; an image the device lacks fails naming the policy.
    let mut local = world.manifest(&agent, 3, "wrong-password", &[]);
    let mut sensor = sensor_module(
        &sensor_image,
        &world,
        "sensors/never",
        RestartPolicy::Always,
    );
    sensor.env.insert("INTERVAL_MS".into(), "400".into());
    sensor.image_pull_policy = ImagePullPolicy::Never;
    local
        .modules
        .insert(module.clone(), Module::Container(sensor.clone()));
    world.publish(&local);
    let reported = world.wait_outcome(&agent, 3, 200);
    assert_eq!(reported["modules"][&module]["runtimeStatus"], "running");
    assert!(
        reported["modules"][&module]["lastError"].is_null(),
        "{reported}"
    );
    sensor.image = format!("edgefleet-test/not-on-this-device:{}", std::process::id());
    local.version = 4;
    local
        .modules
        .insert(format!("{module}-absent"), Module::Container(sensor));
    world.publish(&local);
    let reported = world.wait_outcome(&agent, 4, 417);
    let message = reported["lastDesired"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("not-on-this-device") && message.contains("imagePullPolicy is never"),
        "{message}"
    );
    agent.stop();
}

#[test]
fn a_container_image_over_the_disk_budget_is_refused_naming_the_numbers_and_the_model_keeps_answering()
 {
    use edgefleet_tests::docker;
    let world = DeviceWorld::with(false, "gw-budget");
    let image_tag = format!("edgefleet-test/sensor-sim-budget:{}", std::process::id());
    let container = format!("edgefleet-{}-sensor", world.device);
    let _cleanup = docker::DockerCleanup {
        containers: vec![container.clone()],
        images: vec![image_tag.clone()],
    };
    docker::build_sensor_sim_image(&image_tag);
    let sensor_image =
        docker::push_docker_image(&image_tag, &world.registry, "modules/sensor-budget");

    // Room for the outbox reserve and a small model, not for a 3 MB image.
    let mut agent = world.agent();
    agent.set_env("EDGEFLEET_TELEMETRY_OUTBOX_MAX_BYTES", "1000000");
    agent.set_env("EDGEFLEET_STORAGE_BUDGET_BYTES", "1200000");
    agent.start();
    let model = world.push_diabetes();
    let port = free_port();
    world.publish(&world.manifest(&agent, 1, REGISTRY_PASSWORD, &[("diabetes", &model, port)]));
    world.wait_outcome(&agent, 1, 200);
    let (code, answer) = score(port, QUICKSTART_REQUEST);
    assert_eq!(code, 200, "{answer}");

    let mut next = world.manifest(&agent, 2, REGISTRY_PASSWORD, &[("diabetes", &model, port)]);
    next.modules.insert(
        "sensor".into(),
        Module::Container(sensor_module(
            &sensor_image,
            &world,
            "sensors/budget",
            RestartPolicy::Always,
        )),
    );
    world.publish(&next);
    let reported = world.wait_outcome(&agent, 2, 417);
    let message = reported["lastDesired"]["message"]
        .as_str()
        .unwrap_or_default();
    for part in [
        "disk budget: container image",
        "storage.budget_bytes 1200000",
        "outbox reserve 1000000",
        "storage.min_free_bytes",
    ] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }
    assert!(
        docker::inspect_container(&container).is_none(),
        "nothing created"
    );
    assert_eq!(score(port, QUICKSTART_REQUEST), (code, answer));
}

#[test]
fn check_passes_on_a_serving_device_and_fails_naming_the_fix_for_a_refused_registry_and_an_open_key()
 {
    let world = DeviceWorld::with(false, "gw-check");
    let (agent, image, port) = world.serving_diabetes("diabetes");
    let check = |agent: &AgentProcess| -> (Option<i32>, Vec<Value>) {
        let out = agent
            .command()
            .args(["check", "--output", "json"])
            .output()
            .expect("run check");
        let checks = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "check printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code(), checks)
    };
    let find = |checks: &[Value], prefix: &str| -> Value {
        checks
            .iter()
            .find(|c| c["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
            .cloned()
            .unwrap_or_else(|| panic!("no {prefix} check in {checks:?}"))
    };
    let (code, checks) = check(&agent);
    let by_name = |prefix: &str| find(&checks, prefix);
    assert_eq!(code, Some(0), "{checks:#?}");
    for name in [
        "configuration",
        "device key",
        "broker",
        "applied manifest",
        "registry ",
        "ONNX Runtime",
        "Docker engine",
        "disk",
        "clock",
    ] {
        assert_ne!(by_name(name)["verdict"], "fail", "{checks:#?}");
    }
    assert!(
        by_name("broker")["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("connected as"),
        "{checks:#?}"
    );

    // The registry stops accepting the device's password, and the key file is opened up.
    let mut next = world.manifest(&agent, 2, "wrong-password", &[("diabetes", &image, port)]);
    next.telemetry.ttl_seconds = 3600;
    world.publish(&next);
    world.wait_outcome(&agent, 2, 200);
    let key = agent.data_dir().join("device.key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod");
    let (code, checks) = check(&agent);
    let by_name = |prefix: &str| find(&checks, prefix);
    assert_eq!(code, Some(1), "{checks:#?}");
    let registry = by_name("registry ");
    assert_eq!(registry["verdict"], "fail");
    assert!(
        registry["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("unauthorized")
            && registry["fix"]
                .as_str()
                .unwrap_or_default()
                .contains("registry add"),
        "{registry}"
    );
    let key_check = by_name("device key");
    assert_eq!(key_check["verdict"], "fail");
    assert!(
        key_check["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("chmod 600"),
        "{key_check}"
    );
    assert_eq!(by_name("broker")["verdict"], "ok");
}

#[test]
fn prometheus_metrics_count_inferences_with_their_latency_the_outbox_and_connects() {
    let world = DeviceWorld::with(false, "gw-metrics");
    let mut agent = world.agent();
    let metrics_port = free_port();
    agent.set_env(
        "EDGEFLEET_METRICS_LISTEN",
        &format!("127.0.0.1:{metrics_port}"),
    );
    agent.start();
    let image = world.push_diabetes();
    let port = free_port();
    world.publish(&world.manifest(&agent, 1, REGISTRY_PASSWORD, &[("diabetes", &image, port)]));
    world.wait_outcome(&agent, 1, 200);
    for _ in 0..3 {
        assert_eq!(score(port, QUICKSTART_REQUEST).0, 200);
    }
    assert_eq!(score(port, r#"{"data": "not a tensor"}"#).0, 400);
    let scrape = || {
        http_client()
            .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default()
    };
    let text = wait_for_or_log(&agent, "the outbox gauge", Duration::from_secs(20), || {
        let text = scrape();
        text.contains("edgefleet_agent_outbox_records")
            .then_some(text)
    });
    for expected in [
        r#"edgefleet_agent_inferences_total{module="diabetes",result="ok"} 3"#,
        r#"edgefleet_agent_inferences_total{module="diabetes",result="error"} 1"#,
        r#"edgefleet_agent_inference_seconds_bucket{module="diabetes",le="0.005"}"#,
        r#"edgefleet_agent_inference_seconds_count{module="diabetes"} 4"#,
        r#"edgefleet_agent_pull_seconds_count{kind="model"} 1"#,
        "edgefleet_agent_outbox_bytes",
    ] {
        assert!(text.contains(expected), "{expected:?} not in\n{text}");
    }
    // At least the first connect (a busy machine may have reconnected since).
    let connects: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("edgefleet_agent_mqtt_connects_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(connects >= 1, "no connect counted in\n{text}");
}
