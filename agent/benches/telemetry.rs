//! Telemetry delivered end to end: records accepted into devices' durable outboxes (fsync'd
//! group commits), sent over a real mosquitto to the real `edgefleet serve`, stored in its
//! store and acknowledged back (`TelemetryAck`) until every outbox is empty — against rumqttc
//! clients publishing the same payloads QoS 1 to the same broker with no persistence and no
//! fleet (acknowledged by the broker). One device, then 100 devices in one process. Prints one
//! JSON line per variant.
//!
//! cargo build --release --bins && cargo bench -p edgefleet-agent --bench telemetry
//! (needs Debian's mosquitto)

use std::time::{Duration, Instant};

use edgefleet_agent::config::AgentConfig;
use edgefleet_agent::store::Store;
use edgefleet_agent::telemetry::authenticity::Authenticity;
use edgefleet_agent::telemetry::outbox::{Outbox, OutboxError};
use edgefleet_common::fleet_api::{DeviceImport, FleetInfo};
use edgefleet_common::sealing::DeviceIdentity;
use edgefleet_common::signing::FleetPublicKey;
use edgefleet_common::telemetry::{
    InferenceRecord, InputSource, TelemetryEnvelope, TelemetryRecord,
};
use edgefleet_tests::{FleetProcess, Mosquitto, workspace_binary};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;
use tokio::sync::{mpsc, watch};

const RECORDS: usize = 50_000;

fn record() -> TelemetryRecord {
    TelemetryRecord::Inference(InferenceRecord {
        source: InputSource::Http,
        latency_us: 212,
        outputs: json!({"variable": [[4952.81494140625], [3830.043701171875]]}),
    })
}

/// `devices` rumqttc clients each publishing `RECORDS / devices` records QoS 1; records
/// acknowledged by the broker per second.
async fn plain_rumqttc(port: u16, devices: usize) -> f64 {
    let per_device = RECORDS / devices;
    let payload = serde_json::to_vec(&TelemetryEnvelope {
        device_id: "bench".into(),
        module: "m".into(),
        seq: 1,
        timestamp_ms: 1,
        record: record(),
    })
    .expect("payload");
    let mut clients = Vec::new();
    let mut done = Vec::new();
    for d in 0..devices {
        let mut options = MqttOptions::new(format!("bench-plain-{devices}-{d}"), "127.0.0.1", port);
        options
            .set_credentials("bench", "bench")
            .set_inflight(264)
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut acked = 0;
            let mut done = Some(done_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        acked += 1;
                        if acked == per_device
                            && let Some(tx) = done.take()
                        {
                            let _ = tx.send(());
                        }
                    }
                    Ok(_) => {}
                    Err(e) => panic!("plain rumqttc: {e}"),
                }
            }
        });
        clients.push(client);
        done.push(done_rx);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let publishers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(d, client)| {
            let payload = payload.clone();
            tokio::spawn(async move {
                for _ in 0..per_device {
                    client
                        .publish(
                            format!("bench/plain/{d}/telemetry/m"),
                            QoS::AtLeastOnce,
                            false,
                            payload.clone(),
                        )
                        .await
                        .expect("publish");
                }
            })
        })
        .collect();
    for p in publishers {
        p.await.expect("publisher");
    }
    for d in done {
        d.await.expect("all acknowledged");
    }
    (per_device * devices) as f64 / started.elapsed().as_secs_f64()
}

/// The fleet's devices `bench-<devices>-<n>`, added with one identity they all use.
struct Devices {
    identity: DeviceIdentity,
    fleet_key: FleetPublicKey,
}

impl Devices {
    fn add(fleet: &FleetProcess, devices: usize) -> Self {
        let http = edgefleet_tests::http_client();
        let info: FleetInfo = http
            .get(format!("{}/v1/fleet", fleet.url()))
            .bearer_auth(&fleet.token)
            .send()
            .and_then(|r| r.json())
            .expect("the fleet's key");
        let identity = DeviceIdentity::generate();
        let imports: Vec<DeviceImport> = (0..devices)
            .map(|d| DeviceImport {
                id: format!("bench-{devices}-{d}"),
                tags: Default::default(),
                public_key: identity.public_key().to_string(),
            })
            .collect();
        let added = http
            .post(format!("{}/v1/device-imports", fleet.url()))
            .bearer_auth(&fleet.token)
            .json(&imports)
            .send()
            .expect("add the devices");
        assert!(added.status().is_success(), "{:?}", added.text());
        Self {
            identity,
            fleet_key: info.public_key.parse().expect("the fleet's key"),
        }
    }
}

/// `devices` outboxes and links (one process), each accepting `RECORDS / devices` records;
/// returns (records accepted per second, records acknowledged by the fleet per second).
async fn end_to_end(port: u16, devices: usize, keys: &Devices) -> (f64, f64) {
    let per_device = RECORDS / devices;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut outboxes = Vec::new();
    for d in 0..devices {
        let id = format!("bench-{devices}-{d}");
        let data = dir.path().join(&id);
        std::fs::create_dir_all(&data).expect("data dir");
        let store = Store::open(&data.join("agent.redb")).expect("store");
        let outbox = Outbox::start(store.clone(), id.clone(), 1 << 30);
        let auth = Authenticity::new(&keys.identity, keys.fleet_key, "bench", &id, &store)
            .expect("the device's keys");
        let mut config = AgentConfig {
            device_id: id,
            fleet: "bench".into(),
            ..AgentConfig::default()
        };
        config.mqtt.url = format!("mqtt://127.0.0.1:{port}");
        config.mqtt.username = "bench".into();
        config.mqtt.password = "bench".into();
        let (reported_tx, reported_rx) = watch::channel(Vec::new());
        let (inbound_tx, inbound_rx) = mpsc::channel(16);
        let (outgoing_tx, outgoing_rx) = mpsc::channel(16);
        let (stop_tx, stop_rx) = watch::channel(false);
        let (fleet_silent_tx, _fleet_silent) = watch::channel(None);
        tokio::spawn(edgefleet_agent::telemetry::link::run(
            config,
            auth,
            store.clone(),
            outbox.clone(),
            reported_rx,
            inbound_tx,
            outgoing_rx,
            fleet_silent_tx,
            stop_rx,
        ));
        // Kept alive for the whole run.
        std::mem::forget((reported_tx, inbound_rx, outgoing_tx, stop_tx));
        outboxes.push((outbox, store));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let started = Instant::now();
    for _ in 0..per_device {
        for (outbox, _) in &outboxes {
            loop {
                match outbox.submit("m", record()) {
                    Ok(()) => break,
                    Err(OutboxError::Busy) => tokio::time::sleep(Duration::from_micros(200)).await,
                    Err(e) => panic!("outbox: {e}"),
                }
            }
        }
    }
    for (outbox, _) in &outboxes {
        outbox.flush().await;
    }
    let accepted = (per_device * devices) as f64 / started.elapsed().as_secs_f64();
    for (_, store) in &outboxes {
        while store.outbox_state().expect("state").depth > 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let acknowledged = (per_device * devices) as f64 / started.elapsed().as_secs_f64();
    (accepted, acknowledged)
}

fn main() {
    let mut broker = Mosquitto::new()
        .add_user("bench", "bench")
        .add_user("fleet", "fleet-pass");
    broker = broker.with_max_inflight(1000).start();
    let fleet = FleetProcess::start(
        workspace_binary("edgefleet"),
        &broker,
        "fleet",
        "fleet-pass",
        "bench",
    );
    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    for devices in [1, 100] {
        let keys = Devices::add(&fleet, devices);
        let plain = runtime.block_on(plain_rumqttc(broker.port(), devices));
        let (accepted, acknowledged) = runtime.block_on(end_to_end(broker.port(), devices, &keys));
        println!(
            "{}",
            json!({"variant": "rumqttc QoS1, no persistence, acknowledged by the broker", "devices": devices, "records": RECORDS, "acknowledged_per_s": plain.round()})
        );
        println!(
            "{}",
            json!({"variant": "edgefleet outbox -> broker -> fleet store -> TelemetryAck", "devices": devices, "records": RECORDS, "accepted_per_s": accepted.round(), "acknowledged_per_s": acknowledged.round(), "ratio_vs_plain": (acknowledged / plain * 100.0).round() / 100.0})
        );
    }
}
