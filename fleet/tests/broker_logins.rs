//! Device logins the fleet manages on a real mosquitto with the dynamic security plugin
//! (`edgefleet serve --broker-admin-user`): `device add` creates a login that may use only the
//! device's own topics, `device remove` disconnects the device and refuses its login, and
//! `device rotate-credentials` moves the real agent to a new password while the old one is
//! refused (on the embedded broker too).

use std::process::{Command, Stdio};
use std::time::Duration;

use edgefleet_common::agent_config::AgentConfig;
use edgefleet_common::sealing::DeviceIdentity;
use edgefleet_tests::{
    AgentProcess, FleetProcess, FleetWorld, Mosquitto, Subscriber, require_program, wait_for,
    workspace_binary,
};
use serde_json::Value;

/// A mosquitto with dynamic security, the fleet's own login, and the fleet `plant` managing
/// device logins.
fn dynsec_fleet() -> (Mosquitto, FleetProcess) {
    let broker = Mosquitto::new()
        .with_dynamic_security("broker-admin", "broker-admin-pass")
        .start();
    broker.dynsec_fleet_login("plant", "fleet", "fleet-pass");
    let fleet = FleetProcess::start_managing_logins(
        workspace_binary("edgefleet"),
        &broker,
        ("fleet", "fleet-pass"),
        "plant",
    );
    (broker, fleet)
}

fn add_device(fleet: &FleetProcess, id: &str) -> String {
    let key = DeviceIdentity::generate().public_key().to_string();
    fleet.ok(&["device", "add", id, "--public-key", &key]);
    let config: AgentConfig =
        toml::from_str(&fleet.ok(&["device", "config", id])).expect("the agent configuration");
    config.mqtt.password
}

/// `mosquitto_pub` of one QoS 1 message as `user` with MQTT client id `client_id`; returns
/// whether the broker took the connection, and what the client printed.
fn publish_as(
    broker: &Mosquitto,
    (user, password, client_id): (&str, &str, &str),
    topic: &str,
    payload: &str,
) -> (bool, String) {
    let out = Command::new(require_program("mosquitto_pub", "mosquitto-clients"))
        .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
        .args(["-u", user, "-P", password, "-i", client_id])
        .args(["-q", "1", "-t", topic, "-m", payload])
        .output()
        .expect("run mosquitto_pub");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_device_added_to_the_fleet_logs_in_and_publishes_only_its_own_topics() {
    let (broker, fleet) = dynsec_fleet();
    let password = add_device(&fleet, "dev-a");
    add_device(&fleet, "dev-b");
    let dev_a = ("dev-a", password.as_str(), "edgefleet-dev-a");

    // The fleet's view of every device's telemetry.
    let watcher = Subscriber::connect(
        broker.port(),
        "fleet",
        "fleet-pass",
        "watcher",
        &["edgefleet/plant/devices/+/telemetry/#"],
    );
    wait_for("the fleet's subscriber", Duration::from_secs(20), || {
        let probe = "edgefleet/plant/devices/probe/telemetry/probe";
        broker.publish("fleet", "fleet-pass", probe, "probe", false);
        (!watcher.payloads(probe).is_empty()).then_some(())
    });

    // Another device's topic first, then its own: mosquitto routes one client's messages in
    // order, so had the first been let through, it would arrive before the second.
    let forged = "edgefleet/plant/devices/dev-b/telemetry/m";
    let own = "edgefleet/plant/devices/dev-a/telemetry/m";
    let (connected, stderr) = publish_as(&broker, dev_a, forged, "forged");
    assert!(connected, "dev-a's login was refused: {stderr}");
    let (connected, stderr) = publish_as(&broker, dev_a, own, "own");
    assert!(connected, "dev-a's login was refused: {stderr}");
    wait_for("dev-a's own telemetry", Duration::from_secs(20), || {
        (!watcher.payloads(own).is_empty()).then_some(())
    });
    assert_eq!(watcher.payloads(forged), Vec::<String>::new());

    // Nor may it read another device's topics: the subscription is refused.
    let out = Command::new(require_program("mosquitto_sub", "mosquitto-clients"))
        .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
        .args(["-u", "dev-a", "-P", &password, "-i", "edgefleet-dev-a"])
        .args(["-t", "edgefleet/plant/devices/dev-b/desired", "-C", "1"])
        .output()
        .expect("run mosquitto_sub");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("All subscription requests were denied"),
        "{stderr}"
    );

    // The login is the device's alone: another client id, or a wrong password, is refused.
    let (connected, _) = publish_as(&broker, ("dev-a", &password, "intruder"), own, "x");
    assert!(!connected, "dev-a's login worked with another client id");
    let (connected, _) = publish_as(
        &broker,
        ("dev-a", "not-the-password", "edgefleet-dev-a"),
        own,
        "x",
    );
    assert!(!connected, "a wrong password was accepted");
}

#[test]
fn a_removed_device_is_disconnected_and_its_login_refused() {
    let (broker, fleet) = dynsec_fleet();
    let password = add_device(&fleet, "dev-a");
    // The device, connected and subscribed to its model inputs.
    let inputs = "edgefleet/plant/devices/dev-a/inputs/+";
    let mut device = Command::new(require_program("mosquitto_sub", "mosquitto-clients"))
        .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
        .args(["-u", "dev-a", "-P", &password, "-i", "edgefleet-dev-a"])
        .args(["-q", "1", "-t", inputs])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mosquitto_sub");
    let stdout = device.stdout.take().expect("mosquitto_sub's output");
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    wait_for("the device subscribed", Duration::from_secs(20), || {
        let probe = "edgefleet/plant/devices/dev-a/inputs/probe";
        broker.publish("fleet", "fleet-pass", probe, "probe", false);
        lines
            .recv_timeout(Duration::from_millis(200))
            .ok()
            .filter(|l| l == "probe")
    });

    let removed = fleet.cli(&["device", "remove", "dev-a"]);
    let said = String::from_utf8_lossy(&removed.stderr);
    assert!(removed.status.success(), "{said}");
    assert!(said.contains("the broker refuses its login"), "{said}");
    // Disconnected by the broker, and not let back in: mosquitto_sub ends.
    let status = wait_for("the device disconnected", Duration::from_secs(20), || {
        device.try_wait().ok().flatten()
    });
    let mut stderr = String::new();
    if let Some(mut err) = device.stderr.take() {
        use std::io::Read as _;
        let _ = err.read_to_string(&mut stderr);
    }
    assert!(!status.success(), "mosquitto_sub ended well: {stderr}");
    let (connected, stderr) = publish_as(
        &broker,
        ("dev-a", &password, "edgefleet-dev-a"),
        "edgefleet/plant/devices/dev-a/reported",
        "{}",
    );
    assert!(!connected, "the removed device's login still works");
    assert!(stderr.contains("not authorised"), "{stderr}");
}

fn device_json(fleet: &FleetProcess, id: &str) -> Value {
    serde_json::from_str(&fleet.ok(&["device", "show", id, "--output", "json"]))
        .expect("device JSON")
}

#[test]
fn a_rotated_password_reaches_the_agent_which_reconnects_with_it_and_the_old_one_is_refused() {
    let mut world = FleetWorld::dynamic_security();
    let mut agent = world.device("dev-a", &[], "127.0.0.41");
    let old_password: AgentConfig =
        toml::from_str(&world.fleet.ok(&["device", "config", "dev-a"])).expect("config");
    let old_password = old_password.mqtt.password;
    wait_for("the agent's first report", Duration::from_secs(30), || {
        device_json(&world.fleet, "dev-a")["lastSeenMs"].as_u64()
    });
    let connects = |agent: &AgentProcess| agent.log().matches("connected to the broker").count();
    let before = connects(&agent);

    let rotation: Value = serde_json::from_str(&world.fleet.ok(&[
        "device",
        "rotate-credentials",
        "dev-a",
        "--output",
        "json",
    ]))
    .expect("rotation JSON");
    assert_eq!(rotation["brokerManaged"], true, "{rotation}");
    // The device confirms the manifest carrying the password, then the broker switches.
    wait_for("the rotation to complete", Duration::from_secs(30), || {
        device_json(&world.fleet, "dev-a")
            .get("mqttRotationVersion")
            .is_none()
            .then_some(())
    });
    let new_password: AgentConfig =
        toml::from_str(&world.fleet.ok(&["device", "config", "dev-a"])).expect("config");
    assert_ne!(new_password.mqtt.password, old_password);
    let manifest = world.manifest("dev-a");
    assert!(
        manifest.to_string().contains("BEGIN AGE ENCRYPTED FILE"),
        "{manifest}"
    );
    assert!(!manifest.to_string().contains(&new_password.mqtt.password));

    // The broker disconnected the agent; it is back with the new password.
    wait_for("the agent to reconnect", Duration::from_secs(30), || {
        (connects(&agent) > before).then_some(())
    });
    let (connected, stderr) = publish_as(
        world.broker(),
        ("dev-a", &old_password, "edgefleet-dev-a"),
        "edgefleet/plant/devices/dev-a/reported",
        "{}",
    );
    assert!(!connected, "the old password still works");
    assert!(stderr.contains("not authorised"), "{stderr}");

    // Restarted, the agent still logs in: its configuration file holds the old password, the
    // store the new one.
    let seen = device_json(&world.fleet, "dev-a")["lastSeenMs"]
        .as_u64()
        .unwrap_or_default();
    agent.stop();
    let before = connects(&agent);
    agent.start();
    wait_for(
        "the restarted agent to connect",
        Duration::from_secs(30),
        || (connects(&agent) > before).then_some(()),
    );
    wait_for(
        "a report after the restart",
        Duration::from_secs(30),
        || {
            (device_json(&world.fleet, "dev-a")["lastSeenMs"]
                .as_u64()
                .unwrap_or_default()
                > seen)
                .then_some(())
        },
    );
    assert!(
        !agent.log().contains("the broker refused the MQTT password"),
        "the restarted agent tried the configured (old) password first:\n{}",
        agent.log()
    );

    // `edgefleet-agent check` beside the running agent is told why the broker refuses its own
    // client id; with the agent stopped it checks the login the agent uses (the rotated
    // password, the agent's client id) and passes.
    let broker_check = |agent: &AgentProcess| -> Value {
        let out = agent
            .command()
            .args(["check", "--output", "json"])
            .output()
            .expect("run check");
        let checks: Vec<Value> = serde_json::from_slice(&out.stdout).expect("check JSON");
        checks
            .into_iter()
            .find(|c| c["name"] == "broker")
            .expect("a broker check")
    };
    let beside = broker_check(&agent);
    assert_eq!(beside["verdict"], "warn", "{beside}");
    assert!(
        beside["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("agent's client id"),
        "{beside}"
    );
    agent.stop();
    let stopped = broker_check(&agent);
    assert_eq!(stopped["verdict"], "ok", "{stopped}");
}

#[test]
fn on_the_embedded_broker_a_rotated_password_replaces_the_old_one_once_the_agent_has_it() {
    let port = edgefleet_tests::free_port();
    let mut world = FleetWorld::embedded(port);
    let _agent = world.device("dev-e", &[], "127.0.0.42");
    let config = |world: &FleetWorld| -> AgentConfig {
        toml::from_str(&world.fleet.ok(&["device", "config", "dev-e"])).expect("config")
    };
    let old = config(&world).mqtt.password;
    wait_for("the agent's first report", Duration::from_secs(30), || {
        device_json(&world.fleet, "dev-e")["lastSeenMs"].as_u64()
    });
    world.fleet.ok(&["device", "rotate-credentials", "dev-e"]);
    wait_for("the rotation to complete", Duration::from_secs(30), || {
        device_json(&world.fleet, "dev-e")
            .get("mqttRotationVersion")
            .is_none()
            .then_some(())
    });
    let new = config(&world).mqtt.password;
    assert_ne!(new, old);
    // rumqttd checks logins as connections come: the old password no longer opens one.
    let login = |password: &str| {
        Command::new(require_program("mosquitto_pub", "mosquitto-clients"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-u", "dev-e", "-P", password, "-i", "probe-e"])
            .args([
                "-q",
                "1",
                "-t",
                "edgefleet/plant/devices/dev-e/telemetry/p",
                "-m",
                "[]",
            ])
            .status()
            .is_ok_and(|s| s.success())
    };
    assert!(!login(&old), "the old password still opens a connection");
    assert!(login(&new), "the new password is refused");
}
