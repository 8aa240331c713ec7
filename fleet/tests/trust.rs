//! No device, neighbour or broker can act as another: the real `edgefleet serve` and two real
//! agents, an attacker on the same broker trying each forgery on device `b`'s topics. On the
//! embedded broker (no per-topic ACLs) the attacker is device `a` with its own login and key;
//! on mosquitto with the documented ACL, which keeps `a` off `b`'s topics, it is whoever holds
//! the broker's privileged login (the broker's operator). Either way nothing forged or
//! replayed is stored, obeyed or trimmed by, and every attempt is counted.
#![allow(
    clippy::too_many_lines,
    reason = "an end-to-end test tells its scenario in one piece"
)]

use std::time::Duration;

use edgefleet_common::authenticity::{DeviceMessageKey, new_incarnation};
use edgefleet_common::sealing::DeviceIdentity;
use edgefleet_common::signing::{FleetPublicKey, FleetSigningKey};
use edgefleet_tests::{
    AgentProcess, FleetWorld, Subscriber, free_port, http_client, score_at, wait_for,
    wait_for_explained,
};
use serde_json::{Value, json};

/// Device `id`'s records of `kind` in the fleet's store.
fn stored(world: &FleetWorld, id: &str) -> Vec<Value> {
    let out = world.fleet.ok(&[
        "telemetry",
        "query",
        id,
        "--limit",
        "100000",
        "--output",
        "json",
    ]);
    serde_json::from_str(&out).expect("telemetry JSON")
}

fn inference_count(world: &FleetWorld, id: &str) -> usize {
    stored(world, id)
        .iter()
        .filter(|r| r["kind"] == "inference")
        .count()
}

/// The fleet's refusal counter of device messages of `what`.
fn fleet_refused(metrics_port: u16, what: &str) -> u64 {
    let text = http_client()
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default();
    text.lines()
        .filter(|l| {
            l.starts_with("edgefleet_fleet_messages_refused_total")
                && l.contains(&format!("what=\"{what}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// How many times the agent's log says it refused a message of `what`.
fn agent_refused(agent: &AgentProcess, what: &str) -> usize {
    agent
        .log()
        .lines()
        .filter(|l| l.contains("message refused") && l.contains(&format!("\"{what}\"")))
        .count()
}

fn fleet_key(agent: &AgentProcess) -> FleetPublicKey {
    let config = std::fs::read_to_string(agent.config_path()).expect("agent config");
    config
        .lines()
        .find_map(|l| l.strip_prefix("fleet_public_key = "))
        .map(|k| k.trim_matches('"').parse().expect("the fleet key"))
        .expect("the config names the fleet key")
}

fn attempts_on_another_device_change_nothing(mut world: FleetWorld, attacker_is_a: bool) {
    let metrics_port = world.fleet.serve_metrics();
    let (mut agents, port) = world.deployed_diabetes(&[("a", "127.0.0.21"), ("b", "127.0.0.22")]);
    let (b, a) = (agents.pop().expect("b"), agents.pop().expect("a"));
    for _ in 0..3 {
        score_at("127.0.0.22", port);
    }
    wait_for(
        "b's first records in the fleet",
        Duration::from_secs(30),
        || (inference_count(&world, "b") == 3).then_some(()),
    );
    let show_b = || -> Value {
        serde_json::from_str(&world.fleet.ok(&["device", "show", "b", "--output", "json"]))
            .expect("device JSON")
    };
    let applied = show_b()["reported"]["appliedVersion"].clone();
    assert!(applied.is_u64(), "b applied its manifest");
    let password_a = world.device_password("a");
    let login = if attacker_is_a {
        ("a", password_a.as_str())
    } else {
        ("fleet", "fleet-pass")
    };
    let topic = |rest: &str| format!("edgefleet/plant/devices/b/{rest}");
    // The attacker listens to b's commands, to replay what the fleet sends.
    let commands = Subscriber::connect(
        world.mqtt_port(),
        login.0,
        login.1,
        "attacker-listens",
        &[&topic("commands/#")],
    );

    // Device a writes as b, with its own valid key, and without any.
    let fleet_public = fleet_key(&a);
    let identity_a: DeviceIdentity = std::fs::read_to_string(a.data_dir().join("device.key"))
        .expect("a's key")
        .parse()
        .expect("an identity");
    let key_a =
        DeviceMessageKey::for_device(&identity_a, &fleet_public, "plant", "a").expect("a's key");
    let incarnation = new_incarnation();
    let forged_records: Vec<Value> = [1u64, 2, 1_000_000]
        .iter()
        .map(|seq| {
            json!({"deviceId": "b", "module": "diabetes", "seq": seq, "timestampMs": 1,
                   "kind": "event", "body": {"error": "forged"}})
        })
        .collect();
    let records = serde_json::to_vec(&forged_records).expect("json");
    let telemetry = topic("telemetry/diabetes");
    let reported_state = json!({"schemaVersion": "1", "deviceId": "b", "agentVersion": "forged",
        "appliedVersion": 99, "modules": {}, "outbox": {"depth": 0, "bytes": 0, "dropped": 0,
        "nextSeq": 1_000_000}, "reportedAtMs": u64::MAX / 2});
    let reported = serde_json::to_vec(&reported_state).expect("json");
    let result = br#"{"requestId":"r","module":"diabetes","outcome":"restarted"}"#;
    let device_forgeries: Vec<(String, Vec<u8>)> = vec![
        (
            telemetry.clone(),
            key_a.seal(&telemetry, &incarnation, &records),
        ),
        (telemetry.clone(), records.clone()),
        (
            topic("reported"),
            key_a.seal(&topic("reported"), &incarnation, &reported),
        ),
        (
            topic("commands/restart/result"),
            key_a.seal(&topic("commands/restart/result"), &incarnation, result),
        ),
        (
            topic("sync"),
            key_a.seal(&topic("sync"), &incarnation, br#"{"nonce":"n"}"#),
        ),
    ];
    for (topic, payload) in &device_forgeries {
        assert!(world.publish_as(login, topic, payload, false), "{topic}");
    }

    // The fleet's word forged to b: acknowledgements (retained, as the fleet's are),
    // commands and a manifest, unsigned or signed by a key b does not trust.
    let forger = FleetSigningKey::generate();
    let ack = br#"{"committedSeq":1000000000,"incarnation":"x"}"#;
    let restart = format!(
        r#"{{"requestId":"forged","module":"diabetes","issuedAtMs":{},"command":"restart"}}"#,
        edgefleet_transport::now_ms()
    );
    let fleet_forgeries: Vec<(String, Vec<u8>, bool)> = vec![
        (
            topic("acks"),
            br#"{"committedSeq":1000000000}"#.to_vec(),
            true,
        ),
        (
            topic("acks"),
            forger.sign_message(&topic("acks"), ack),
            true,
        ),
        (
            topic("commands/restart"),
            restart.clone().into_bytes(),
            false,
        ),
        (
            topic("commands/restart"),
            forger.sign_message(&topic("commands/restart"), restart.as_bytes()),
            false,
        ),
    ];
    for (topic, payload, retain) in &fleet_forgeries {
        assert!(world.publish_as(login, topic, payload, *retain), "{topic}");
    }

    // A command the fleet really sent b, replayed: carried out once.
    let logs = world.fleet.cli(&["module", "logs", "b", "diabetes"]);
    assert!(
        String::from_utf8_lossy(&logs.stderr).contains("not a container module"),
        "the real command is answered: {}",
        String::from_utf8_lossy(&logs.stderr)
    );
    let sent = wait_for("the fleet's command to b", Duration::from_secs(10), || {
        commands
            .payloads(&topic("commands/logs"))
            .into_iter()
            .next()
    });
    assert!(world.publish_as(login, &topic("commands/logs"), sent.as_bytes(), false));

    // Each attempt is counted where it was refused.
    let fleet_counts = || -> Vec<u64> {
        ["telemetry", "reported", "command-result", "sync"]
            .iter()
            .map(|what| fleet_refused(metrics_port, what))
            .collect()
    };
    wait_for_explained(
        "the fleet to count every forged device message",
        Duration::from_secs(30),
        || {
            let counts = fleet_counts();
            (counts[0] >= 2 && counts[1..].iter().all(|&c| c >= 1)).then_some(())
        },
        || {
            format!(
                "refused (telemetry, reported, result, sync): {:?}\n{}",
                fleet_counts(),
                world.fleet.log()
            )
        },
    );
    wait_for_explained(
        "b to refuse every forged acknowledgement and command and the replay",
        Duration::from_secs(30),
        || {
            (agent_refused(&b, "acknowledgement") >= 2 && agent_refused(&b, "command") >= 3)
                .then_some(())
        },
        || b.log(),
    );
    assert!(
        b.log().contains("carried out before"),
        "the replayed command is refused as a replay"
    );

    // b keeps everything it produces: ten more answers all reach the fleet.
    for _ in 0..10 {
        score_at("127.0.0.22", port);
    }
    wait_for_explained(
        "b's 13 inference records in the fleet",
        Duration::from_secs(60),
        || (inference_count(&world, "b") == 13).then_some(()),
        || format!("{} stored\n{}", inference_count(&world, "b"), b.log()),
    );
    let records = stored(&world, "b");
    assert!(
        records
            .iter()
            .all(|r| r["body"]["error"] != "forged" && r["seq"].as_u64() < Some(1_000_000)),
        "no forged record is stored as b's"
    );
    let shown = show_b();
    assert_eq!(shown["reported"]["appliedVersion"], applied, "{shown}");
    assert_ne!(shown["reported"]["agentVersion"], "forged");
    assert!(
        !commands
            .payloads(&topic("commands/restart/result"))
            .iter()
            .any(|p| p.contains(r#""requestId":"forged""#)),
        "no forged restart was carried out"
    );
    let log = world.fleet.log();
    assert!(
        log.contains("device message refused") && log.contains("edgefleet/plant/devices/b/"),
        "refusals are logged with their topic"
    );

    // After the whole run, neither side keeps the registry password or the admin token in
    // clear: not in a log, a store file, an outbox or a journal.
    let fleet_dir = world.fleet.data_dir();
    let fleet_log = fleet_dir
        .parent()
        .expect("the fleet's directory")
        .join("fleet.log");
    for dir in [fleet_dir.as_path(), a.dir(), b.dir()] {
        for file in files_under(dir) {
            let bytes = std::fs::read(&file).unwrap_or_default();
            for secret in ["edge-pass", "fleet-admin-token"] {
                assert!(
                    !contains(&bytes, secret.as_bytes()),
                    "{} holds {secret:?} in clear",
                    file.display()
                );
            }
        }
    }
    assert!(!contains(
        &std::fs::read(fleet_log).unwrap_or_default(),
        b"edge-pass"
    ));
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn on_the_embedded_broker_a_device_cannot_write_as_another_nor_make_it_drop_or_obey_anything() {
    attempts_on_another_device_change_nothing(FleetWorld::embedded(free_port()), true);
}

#[test]
fn on_mosquitto_even_the_brokers_operator_cannot_write_as_a_device_nor_speak_for_the_fleet() {
    attempts_on_another_device_change_nothing(FleetWorld::new(), false);
}

#[test]
fn a_device_whose_data_directory_was_wiped_and_that_was_added_again_has_every_new_record_stored() {
    let mut world = FleetWorld::embedded(free_port());
    let (mut agents, port) = world.deployed_diabetes(&[("gw", "127.0.0.23")]);
    let mut agent = agents.pop().expect("gw");
    for _ in 0..5 {
        score_at("127.0.0.23", port);
    }
    wait_for("the first life's records", Duration::from_secs(30), || {
        (inference_count(&world, "gw") == 5).then_some(())
    });

    // Re-provisioned: a new data directory (a new key, seqs from 1 again), added again.
    agent.stop();
    std::fs::remove_dir_all(agent.data_dir()).expect("wipe the data directory");
    let init = agent.command().arg("init").output().expect("init");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let public_key = String::from_utf8_lossy(&init.stdout).trim().to_owned();
    world.fleet.ok(&[
        "device",
        "add",
        "gw",
        "--public-key",
        &public_key,
        "--tag",
        "site=plant1",
    ]);
    agent.start();
    for _ in 0..5 {
        wait_for("the model to answer again", Duration::from_secs(60), || {
            http_client()
                .post(format!("http://127.0.0.23:{port}/score"))
                .header("content-type", "application/json")
                .body(r#"{"data": [[1,2,3,4,5,6,7,8,9,10]]}"#)
                .send()
                .ok()
                .filter(|r| r.status().is_success())
        });
    }
    wait_for_explained(
        "every record of the second life stored",
        Duration::from_secs(60),
        || (inference_count(&world, "gw") == 10).then_some(()),
        || format!("{} stored\n{}", inference_count(&world, "gw"), agent.log()),
    );
    let records = stored(&world, "gw");
    let second_life = records
        .iter()
        .filter(|r| r["kind"] == "inference" && r["seq"].as_u64() > Some(1 << 40))
        .count();
    assert_eq!(
        second_life, 5,
        "the new records count in the second incarnation"
    );
    wait_for_explained(
        "the device to be told its records are stored",
        Duration::from_secs(30),
        || {
            let out = agent.command().args(["status", "--json"]).output().ok()?;
            let status: Value = serde_json::from_slice(&out.stdout).ok()?;
            (status["outbox"]["depth"] == 0).then_some(())
        },
        || agent.log(),
    );
}
