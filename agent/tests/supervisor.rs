//! The supervisor never stalls: while one module's image pulls slowly, the agent keeps
//! answering the fleet's commands for other modules, scoring MQTT inputs and reporting its
//! state. The real agent binary, a real mosquitto, a real registry behind a throttling proxy
//! and the real Docker engine.

#![allow(
    clippy::too_many_lines,
    reason = "an end-to-end test is one scenario, read from top to bottom"
)]

use std::time::{Duration, Instant};

use edgefleet_common::commands::{CommandOutcome, CommandRequest, CommandResult, DeviceCommand};
use edgefleet_common::manifest::{
    ModelServing, ModelSpec, Module, RegistryCredential, RestartPolicy,
};
use edgefleet_common::sealing::DevicePublicKey;
use edgefleet_tests::{
    DeviceWorld, OciLayout, REGISTRY_PASSWORD, REGISTRY_USER, Subscriber, ThrottledProxy,
    diabetes_module_json, docker, free_port, model_dir, sensor_module, skopeo_push,
    telemetry_envelopes, wait_for_or_log,
};
use serde_json::Value;

/// Incompressible bytes in the slow module's layer, and the rate the proxy answers at: a pull
/// of about 30 s.
const PADDING_BYTES: usize = 8 << 20;
const PROXY_BYTES_PER_SECOND: usize = 280 << 10;

/// The longest an answer may take while the pull goes on.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

#[test]
fn while_one_module_pulls_slowly_commands_inputs_and_reports_of_the_others_go_on() {
    let world = DeviceWorld::with(false, "gw-slow-pull");
    let pid = std::process::id();
    let image_tag = format!("edgefleet-test/sensor-sim-slow:{pid}");
    let sensor = format!("sensor-slow-{pid}");
    let _cleanup = docker::DockerCleanup {
        containers: vec![format!("edgefleet-{}-{sensor}", world.device)],
        images: vec![image_tag.clone()],
    };
    docker::build_sensor_sim_image(&image_tag);
    let sensor_image =
        docker::push_docker_image(&image_tag, &world.registry, "modules/sensor-slow");
    let proxy = ThrottledProxy::start(
        world.registry.address().parse().expect("registry address"),
        PROXY_BYTES_PER_SECOND,
    );
    let slow_image = push_padded_diabetes(&world, &proxy);

    let mut agent = world.agent();
    let insecure = format!("{},{}", world.registry.address(), proxy.address());
    agent.set_env("EDGEFLEET_REGISTRY_INSECURE", &insecure);
    agent.start();
    let diabetes = world.push_diabetes();
    let mut manifest = world.manifest(
        &agent,
        1,
        REGISTRY_PASSWORD,
        &[("scorer", &diabetes, free_port())],
    );
    let sensor_spec = sensor_module(&sensor_image, &world, "sensors/slow", RestartPolicy::Always);
    manifest
        .modules
        .insert(sensor.clone(), Module::Container(sensor_spec));
    world.publish(&manifest);
    world.wait_outcome(&agent, 1, 200);

    let topics = &world.topics;
    let sink = Subscriber::connect(
        world.broker.port(),
        "fleet",
        "fleet-pass",
        "slow-pull-sink",
        &[
            &topics.reported(),
            &topics.command_result("logs"),
            &topics.command_result("restart"),
            &topics.telemetry("scorer"),
        ],
    );

    // Version 2 adds a model module whose image comes through the slow proxy.
    let device_key: DevicePublicKey = agent.public_key.parse().expect("device key");
    let mut next = manifest.clone();
    next.version = 2;
    next.registry_credentials.insert(
        "slow".into(),
        RegistryCredential {
            address: proxy.address(),
            username: REGISTRY_USER.into(),
            password: device_key.seal(REGISTRY_PASSWORD).expect("seal"),
        },
    );
    next.modules.insert(
        "slow".into(),
        Module::Model(ModelSpec {
            image: slow_image,
            status: Default::default(),
            serving: Some(ModelServing {
                http_port: free_port(),
                bind_address: "127.0.0.1".into(),
                auth_key_sha256: vec![],
                mqtt_input: true,
                data_collection_ppm: 0,
            }),
            session: Default::default(),
            batch: None,
        }),
    );
    world.publish(&next);
    let slow_status = |r: &Value| {
        r["modules"]["slow"]["runtimeStatus"]
            .as_str()
            .map(str::to_owned)
    };
    wait_for_or_log(
        &agent,
        "the slow module to be pulling",
        Duration::from_secs(30),
        || {
            world
                .reported()
                .filter(|r| slow_status(r).as_deref() == Some("pulling"))
        },
    );

    // The fleet asks for the sensor's logs, then restarts it.
    let ask = |request_id: &str, command: DeviceCommand| -> (Duration, CommandResult) {
        let topic = topics.command_result(command.name());
        let request = CommandRequest {
            request_id: request_id.into(),
            module: sensor.clone(),
            issued_at_ms: edgefleet_transport::now_ms(),
            command: command.clone(),
        };
        let body = serde_json::to_vec(&request).expect("request");
        let command_topic = topics.command(command.name());
        let payload = world.fleet_key.sign_message(&command_topic, &body);
        let sent = Instant::now();
        assert!(world.broker.publish(
            "fleet",
            "fleet-pass",
            &command_topic,
            std::str::from_utf8(&payload).expect("JSON"),
            false
        ));
        let result = wait_for_or_log(&agent, request_id, Duration::from_secs(30), || {
            sink.payloads(&topic)
                .iter()
                .filter_map(|p| serde_json::from_str::<CommandResult>(p).ok())
                .find(|r| r.request_id == request_id)
        });
        (sent.elapsed(), result)
    };
    let (logs_took, logs) = ask("logs-1", DeviceCommand::Logs { tail: 5, since: 0 });
    match &logs.outcome {
        CommandOutcome::Logs { logs } => assert!(logs.contains("sensor-sim: publishing"), "{logs}"),
        other => panic!("logs were not answered: {other:?}"),
    }
    let (restart_took, restart) = ask("restart-1", DeviceCommand::Restart);
    assert_eq!(restart.outcome, CommandOutcome::Restarted);

    // MQTT inputs of the served model are scored meanwhile.
    let input = r#"{"data": [[1,2,3,4,5,6,7,8,9,10]]}"#;
    for _ in 0..3 {
        assert!(
            world
                .broker
                .publish("fleet", "fleet-pass", &topics.input("scorer"), input, false)
        );
    }
    let inputs_started = Instant::now();
    wait_for_or_log(
        &agent,
        "three inputs scored",
        Duration::from_secs(30),
        || {
            let scored = sink
                .payloads(&topics.telemetry("scorer"))
                .iter()
                .flat_map(|p| telemetry_envelopes(p))
                .filter(|e| e["body"]["source"] == "mqtt")
                .count();
            (scored >= 3).then_some(())
        },
    );
    let inputs_took = inputs_started.elapsed();

    // The reported state kept moving: the restart is counted while the pull goes on.
    let reported = wait_for_or_log(
        &agent,
        "the restart to be reported",
        Duration::from_secs(30),
        || {
            sink.payloads(&topics.reported())
                .iter()
                .filter_map(|p| serde_json::from_str::<Value>(p).ok())
                .find(|r| r["modules"][&sensor]["restartCount"] == 1)
        },
    );
    assert_eq!(slow_status(&reported).as_deref(), Some("pulling"));
    assert_eq!(
        slow_status(&world.reported().expect("reported state")).as_deref(),
        Some("pulling"),
        "everything above was answered while the pull was still going on"
    );
    eprintln!(
        "while pulling: logs answered in {logs_took:?}, restart in {restart_took:?}, three inputs scored in {inputs_took:?}"
    );
    assert!(logs_took <= ANSWER_WITHIN, "logs took {logs_took:?}");
    assert!(
        restart_took <= ANSWER_WITHIN,
        "restart took {restart_took:?}"
    );
    assert!(inputs_took <= ANSWER_WITHIN, "inputs took {inputs_took:?}");

    // The slow module arrives in the end, and the manifest applies.
    let applied = wait_for_or_log(
        &agent,
        "version 2 applied",
        Duration::from_secs(120),
        || {
            world
                .reported()
                .filter(|r| r["lastDesired"]["version"] == 2 && r["lastDesired"]["status"] == 200)
        },
    );
    assert_eq!(slow_status(&applied).as_deref(), Some("running"));
    agent.stop();
}

/// The diabetes model module with incompressible padding in its layer, pushed to the registry
/// and named through `proxy`.
fn push_padded_diabetes(world: &DeviceWorld, proxy: &ThrottledProxy) -> String {
    let model = std::fs::read(model_dir("diabetes").join("model.onnx")).expect("model");
    let module_json = serde_json::to_vec(&diabetes_module_json(false)).expect("module.json");
    let padding: Vec<u8> = (0..PADDING_BYTES).map(|_| rand_byte()).collect();
    let layout = OciLayout::with_files(
        &[
            ("model/model.onnx", &model),
            ("model/module.json", &module_json),
            ("model/padding.bin", &padding),
        ],
        &[("org.edgefleet.model.name", "diabetes")],
    );
    skopeo_push(
        &layout,
        &world.registry,
        "models/slow",
        "1",
        REGISTRY_USER,
        REGISTRY_PASSWORD,
    )
    .expect("push");
    format!("{}/models/slow@{}", proxy.address(), layout.manifest_digest)
}

/// A byte of a xorshift sequence: incompressible enough that gzip keeps the layer large.
fn rand_byte() -> u8 {
    use std::cell::Cell;
    thread_local!(static STATE: Cell<u64> = const { Cell::new(0x9e37_79b9_7f4a_7c15) });
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (x >> 24) as u8
    })
}
