//! Telemetry throughput to a real mosquitto: records accepted into the durable outbox (fsync'd
//! group commits) and acknowledged by the broker, against rumqttc publishing the same payloads
//! QoS 1 with no persistence at all. Prints one JSON line per variant.
//!
//! cargo bench -p edgefleet-agent --bench telemetry   (needs Debian's mosquitto)

use std::time::{Duration, Instant};

use edgefleet_agent::config::AgentConfig;
use edgefleet_agent::outbox::{Outbox, OutboxError};
use edgefleet_agent::store::Store;
use edgefleet_common::telemetry::{
    InferenceRecord, InputSource, TelemetryEnvelope, TelemetryRecord,
};
use edgefleet_tests::Mosquitto;
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

async fn plain_rumqttc(port: u16) -> f64 {
    let mut options = MqttOptions::new("bench-plain", "127.0.0.1", port);
    options
        .set_credentials("bench", "bench")
        .set_inflight(264)
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    let payload = serde_json::to_vec(&TelemetryEnvelope {
        device_id: "bench".into(),
        module: "m".into(),
        seq: 1,
        timestamp_ms: 1,
        record: record(),
    })
    .expect("payload");
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut acked = 0;
        let mut done = Some(done_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    acked += 1;
                    if acked == RECORDS
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
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    for _ in 0..RECORDS {
        client
            .publish(
                "bench/plain/telemetry/m",
                QoS::AtLeastOnce,
                false,
                payload.clone(),
            )
            .await
            .expect("publish");
    }
    done_rx.await.expect("all acknowledged");
    RECORDS as f64 / started.elapsed().as_secs_f64()
}

async fn outbox_and_link(port: u16) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("agent.redb")).expect("store");
    let outbox = Outbox::start(store.clone(), "bench".into(), 1 << 30);
    let mut config = AgentConfig {
        device_id: "bench".into(),
        ..AgentConfig::default()
    };
    config.mqtt.url = format!("mqtt://127.0.0.1:{port}");
    config.mqtt.username = "bench".into();
    config.mqtt.password = "bench".into();
    let (_reported_tx, reported_rx) = watch::channel(Vec::new());
    let (inbound_tx, _inbound_rx) = mpsc::channel(16);
    let (_outgoing_tx, outgoing_rx) = mpsc::channel(16);
    let (_stop_tx, stop_rx) = watch::channel(false);
    let (fleet_silent_tx, _fleet_silent) = watch::channel(None);
    tokio::spawn(edgefleet_agent::link::run(
        config,
        store.clone(),
        outbox.clone(),
        reported_rx,
        inbound_tx,
        outgoing_rx,
        fleet_silent_tx,
        stop_rx,
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    for _ in 0..RECORDS - 1 {
        loop {
            match outbox.submit("m", record()) {
                Ok(()) => break,
                Err(OutboxError::Busy) => tokio::time::sleep(Duration::from_micros(200)).await,
                Err(e) => panic!("outbox: {e}"),
            }
        }
    }
    // Committed in order: once the last record is durable, all are.
    outbox.record("m", record()).await.expect("last record");
    let accepted = RECORDS as f64 / started.elapsed().as_secs_f64();
    while store.outbox_state().expect("state").depth > 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let acknowledged = RECORDS as f64 / started.elapsed().as_secs_f64();
    (accepted, acknowledged)
}

fn main() {
    let broker = Mosquitto::new().add_user("bench", "bench").start();
    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    let plain = runtime.block_on(plain_rumqttc(broker.port()));
    let (accepted, acknowledged) = runtime.block_on(outbox_and_link(broker.port()));
    println!(
        "{}",
        json!({"variant": "rumqttc QoS1, no persistence", "records": RECORDS, "acknowledged_per_s": plain})
    );
    println!(
        "{}",
        json!({"variant": "edgefleet durable outbox + link", "records": RECORDS, "accepted_per_s": accepted, "acknowledged_per_s": acknowledged, "ratio_vs_plain": acknowledged / plain})
    );
}
