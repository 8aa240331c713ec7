//! Nothing accepted is lost between a device and the fleet's store: the real `edgefleet serve`
//! restarted and killed, real agents under `/score` traffic and MQTT inputs, a real mosquitto
//! with persistence (or the fleet's embedded broker), the fleet's store read through the CLI.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use edgefleet_tests::{
    AgentProcess, FleetWorld, InputPublisher, free_port, http_client, score_at, wait_for,
    wait_for_explained,
};
use serde_json::Value;

const INPUT: &str = r#"{"data": [[1,2,3,4,5,6,7,8,9,10]]}"#;

/// `edgefleet-agent status --json` of a device.
fn status(agent: &AgentProcess) -> Value {
    let out = agent
        .command()
        .args(["status", "--json"])
        .output()
        .expect("edgefleet-agent status");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// Every `seq` of `device` in the fleet's store, in order, and the envelopes.
fn stored(world: &FleetWorld, device: &str, filter: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "telemetry",
        "query",
        device,
        "--limit",
        "1000000",
        "--output",
        "json",
    ];
    args.extend(filter);
    serde_json::from_str(&world.fleet.ok(&args)).expect("telemetry JSON")
}

fn seqs(records: &[Value]) -> Vec<u64> {
    records.iter().filter_map(|r| r["seq"].as_u64()).collect()
}

/// Sends `/score` requests to every device and, every fifth round, an MQTT input to each,
/// until `stop`; counts the inputs it published.
fn traffic(
    publisher: InputPublisher,
    devices: Vec<(String, String)>,
    port: u16,
    stop: Arc<AtomicBool>,
    inputs: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let client = http_client();
        let mut round = 0u64;
        while !stop.load(Ordering::Relaxed) {
            for (id, bind) in &devices {
                let response = client
                    .post(format!("http://{bind}:{port}/score"))
                    .body(INPUT)
                    .send();
                assert!(
                    response.is_ok_and(|r| r.status() == 200),
                    "{id} stopped scoring"
                );
                if round.is_multiple_of(5) && publisher.publish(id, "diabetes", INPUT) {
                    inputs.fetch_add(1, Ordering::Relaxed);
                }
            }
            round += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

/// Restarts the fleet service three times (SIGTERM) and kills it once (SIGKILL) while the
/// traffic runs, then checks that each device's records are all in the fleet's store,
/// gap-free, each once, and that the devices were told so (their outboxes emptied).
fn explain(world: &FleetWorld, agent: &AgentProcess) -> String {
    format!(
        "agent status: {}\nagent log:\n{}\nfleet log:\n{}",
        status(agent),
        agent.log(),
        world.fleet.log()
    )
}

fn restarts_lose_nothing(mut world: FleetWorld) {
    let devices = [("gw-1", "127.0.0.2"), ("gw-2", "127.0.0.3")];
    let (agents, port) = world.deployed_diabetes(&devices);
    let stop = Arc::new(AtomicBool::new(false));
    let inputs = Arc::new(AtomicU64::new(0));
    let ids: Vec<(String, String)> = devices
        .iter()
        .map(|(id, bind)| ((*id).to_owned(), (*bind).to_owned()))
        .collect();
    let sender = traffic(
        world.input_publisher(),
        ids,
        port,
        stop.clone(),
        inputs.clone(),
    );
    for _ in 0..3 {
        std::thread::sleep(Duration::from_secs(2));
        world.fleet.stop();
        std::thread::sleep(Duration::from_secs(1));
        world.fleet.launch();
    }
    std::thread::sleep(Duration::from_secs(2));
    world.fleet.kill();
    std::thread::sleep(Duration::from_secs(1));
    world.fleet.launch();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    sender.join().expect("traffic");
    assert!(inputs.load(Ordering::Relaxed) > 0, "inputs were published");

    for (agent, (id, _)) in agents.iter().zip(devices) {
        let (produced, records) = wait_for_explained(
            &format!("every record of {id} in the fleet's store"),
            Duration::from_secs(90),
            || {
                let state = status(agent);
                let next = state["outbox"]["nextSeq"].as_u64()?;
                let records = stored(&world, id, &[]);
                (seqs(&records) == (1..next).collect::<Vec<_>>()).then_some((next - 1, records))
            },
            || explain(&world, agent),
        );
        assert!(produced > 100, "{id} produced {produced} records");
        let mqtt = records
            .iter()
            .filter(|r| r["kind"] == "inference" && r["body"]["source"] == "mqtt")
            .count();
        assert!(mqtt > 0, "{id}: inputs were scored and stored");
        assert_eq!(
            status(agent)["outbox"]["dropped"],
            0,
            "{id} dropped nothing"
        );
        wait_for_explained(
            &format!("{id} to hear that the fleet has everything"),
            Duration::from_secs(60),
            || (status(agent)["outbox"]["depth"] == 0).then_some(()),
            || explain(&world, agent),
        );
    }
}

#[test]
fn the_fleet_restarted_three_times_and_killed_once_loses_no_record_of_two_devices_on_mosquitto() {
    restarts_lose_nothing(FleetWorld::new());
}

#[test]
fn the_fleet_restarted_three_times_and_killed_once_loses_no_record_with_its_embedded_broker() {
    restarts_lose_nothing(FleetWorld::embedded(free_port()));
}

#[test]
fn inputs_published_while_the_agent_is_stopped_are_all_scored_when_it_returns() {
    let mut world = FleetWorld::new();
    let (mut agents, _) = world.deployed_diabetes(&[("gw-in", "127.0.0.4")]);
    let agent = &mut agents[0];
    agent.stop();
    for _ in 0..100 {
        assert!(world.publish_input("gw-in", "diabetes", INPUT));
    }
    agent.start();
    let scored = wait_for("100 inputs scored", Duration::from_secs(90), || {
        let mqtt: Vec<Value> = stored(
            &world,
            "gw-in",
            &["--kind", "inference", "--module", "diabetes"],
        )
        .into_iter()
        .filter(|r| r["body"]["source"] == "mqtt")
        .collect();
        (mqtt.len() >= 100).then_some(mqtt)
    });
    assert_eq!(scored.len(), 100, "each input once");
    assert!(
        scored
            .iter()
            .all(|r| r["body"]["outputs"]["variable"].is_array())
    );
    // Exported for other tools: one CSV row or JSON line per record.
    let csv = world.fleet.ok(&[
        "telemetry",
        "export",
        "gw-in",
        "--kind",
        "inference",
        "--format",
        "csv",
    ]);
    let mut rows = csv.lines();
    assert_eq!(
        rows.next(),
        Some("deviceId,module,seq,timestampMs,kind,body")
    );
    assert!(
        rows.filter(|r| r.starts_with("gw-in,diabetes,")).count() >= 100,
        "{csv}"
    );
    let jsonl = world
        .fleet
        .ok(&["telemetry", "export", "--format", "jsonl"]);
    let lines: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!(lines.iter().filter(|r| r["kind"] == "inference").count() >= 100);
    // A malformed input is recorded as an event naming the problem, and not retried.
    assert!(world.publish_input("gw-in", "diabetes", "{\"data\": [[1,2"));
    let event = wait_for(
        "the malformed input's event",
        Duration::from_secs(30),
        || {
            stored(&world, "gw-in", &["--kind", "event"])
                .into_iter()
                .next()
        },
    );
    assert!(
        event["body"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("not valid JSON"),
        "{event}"
    );
    agent.stop();
}

#[test]
fn with_the_fleet_down_past_the_outbox_cap_the_oldest_records_are_dropped_counted_and_the_rest_arrive_in_order()
 {
    // The embedded broker goes down with the fleet, so the device holds what it produces.
    let mut world = FleetWorld::embedded(free_port());
    assert_eq!(world.fleet.register("diabetes", "diabetes"), "diabetes:1");
    world.fleet.package("diabetes:1", "models/diabetes");
    let mut agent = world.device("gw-cap", &["site=plant1"], "127.0.0.5");
    let port = free_port();
    world
        .fleet
        .deploy("d", "tags.site = 'plant1'", "diabetes:latest", port);
    world.wait_rollout("d");
    // The device caps its outbox far below the fleet's default.
    agent.stop();
    agent.set_env("EDGEFLEET_TELEMETRY_OUTBOX_MAX_BYTES", "40000");
    agent.start();
    wait_for("the model served again", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.5", port)).ok()
    });
    let before = wait_for(
        "the fleet to have what the device sent",
        Duration::from_secs(60),
        || {
            let next = status(&agent)["outbox"]["nextSeq"].as_u64()?;
            let records = stored(&world, "gw-cap", &[]);
            (seqs(&records) == (1..next).collect::<Vec<_>>()).then_some(next - 1)
        },
    );

    world.fleet.stop();
    for _ in 0..400 {
        score_at("127.0.0.5", port);
    }
    let state = wait_for(
        "records dropped by the cap",
        Duration::from_secs(30),
        || {
            let state = status(&agent);
            (state["outbox"]["dropped"].as_u64()? > 0).then_some(state)
        },
    );
    let oldest = state["outbox"]["oldestSeq"].as_u64().unwrap_or_default();
    assert!(oldest > before + 1, "the oldest records went first");

    world.fleet.launch();
    // Once the fleet has acknowledged everything the device held, its store and the device's
    // count of dropped records agree (the device's status is its last report, seconds old).
    wait_for(
        "the device's outbox to empty",
        Duration::from_secs(90),
        || (status(&agent)["outbox"]["depth"] == 0).then_some(()),
    );
    let (got, missing, dropped) = wait_for(
        "the store and the count to agree",
        Duration::from_secs(30),
        || {
            let state = status(&agent);
            let next = state["outbox"]["nextSeq"].as_u64()?;
            let dropped = state["outbox"]["dropped"].as_u64()?;
            let got = seqs(&stored(&world, "gw-cap", &[]));
            let missing: Vec<u64> = (1..next)
                .filter(|s| got.binary_search(s).is_err())
                .collect();
            (missing.len() as u64 == dropped).then_some((got, missing, dropped))
        },
    );
    assert!(dropped > 0);
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order, each once");
    assert!(
        missing.first() > Some(&before),
        "none the fleet already had"
    );
    assert_eq!(
        missing.last().map(|l| l - missing[0] + 1),
        Some(dropped),
        "one block: the oldest records the device held"
    );
    agent.stop();
}

#[test]
fn with_the_broker_down_an_agent_killed_and_restarted_ten_times_under_traffic_loses_no_record() {
    let mut world = FleetWorld::new();
    let (mut agents, port) = world.deployed_diabetes(&[("gw-off", "127.0.0.7")]);
    let agent = &mut agents[0];
    let broker = world.broker.as_mut().expect("mosquitto");
    broker.stop();
    for _ in 0..10 {
        for _ in 0..20 {
            score_at("127.0.0.7", port);
        }
        agent.kill();
        agent.start();
        wait_for(
            "the model served from the cache",
            Duration::from_secs(30),
            || std::net::TcpStream::connect(("127.0.0.7", port)).ok(),
        );
    }
    for _ in 0..20 {
        score_at("127.0.0.7", port);
    }
    // The running agent's status is its last report (at most a few seconds old).
    wait_for(
        "every /score answer recorded",
        Duration::from_secs(30),
        || {
            let produced = status(agent)["outbox"]["nextSeq"].as_u64()? - 1;
            (produced >= 220).then_some(())
        },
    );
    world.broker.as_mut().expect("mosquitto").restart();
    wait_for(
        "every record in the fleet's store",
        Duration::from_secs(90),
        || {
            let next = status(agent)["outbox"]["nextSeq"].as_u64()?;
            (seqs(&stored(&world, "gw-off", &[])) == (1..next).collect::<Vec<_>>()).then_some(())
        },
    );
    wait_for(
        "the device's outbox to empty",
        Duration::from_secs(60),
        || (status(agent)["outbox"]["depth"] == 0).then_some(()),
    );
    agent.stop();
}
