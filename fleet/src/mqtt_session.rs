//! The fleet's MQTT session: publishes what the domain layer hands it (signed manifests,
//! retained, and commands), publishes every manifest again on each connect, and ingests
//! reported state, telemetry and command results, writing state and telemetry in batches.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use edgefleet_common::commands::CommandResult;
use edgefleet_common::reported::ReportedState;
use edgefleet_common::telemetry::TelemetryEnvelope;
use edgefleet_common::topics::DeviceTopic;
use edgefleet_transport::now_ms;
use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS};
use tokio::sync::{mpsc, watch};

use crate::domain::{Fleet, Publication};
use crate::records::DeviceStatus;

/// How often what arrived is written to the store.
const FLUSH_INTERVAL: Duration = Duration::from_millis(200);

/// Runs the session until `shutdown` turns true, then writes what arrived last.
pub async fn run(
    fleet: Arc<Fleet>,
    client: AsyncClient,
    mut eventloop: EventLoop,
    outgoing: mpsc::Receiver<Publication>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Publishing waits while the client's queue is full, which only polling the event loop
    // empties: it runs beside the loop.
    let publisher = tokio::spawn(forward(client.clone(), outgoing));
    let mut batch = Ingested::default();
    let mut flush = tokio::time::interval(FLUSH_INTERVAL);
    let mut backoff = Duration::from_millis(200);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff = Duration::from_millis(200);
                    tracing::info!(broker = %fleet.settings.mqtt_url, "connected to the broker");
                    for topic in [
                        fleet.topics.all_reported(),
                        fleet.topics.all_telemetry(),
                        fleet.topics.all_command_results(),
                    ] {
                        let _ = client.try_subscribe(topic, QoS::AtLeastOnce);
                    }
                    republish(&fleet, &client);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => batch.receive(&fleet, &p.topic, &p.payload),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "broker connection");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            },
            _ = flush.tick() => batch.flush(&fleet),
        }
    }
    batch.flush(&fleet);
    publisher.abort();
    let _ = client.try_disconnect();
}

async fn forward(client: AsyncClient, mut outgoing: mpsc::Receiver<Publication>) {
    while let Some(p) = outgoing.recv().await {
        if let Err(e) = client
            .publish(p.topic, QoS::AtLeastOnce, p.retain, p.payload)
            .await
        {
            tracing::warn!(error = %e, "not published; manifests are published again on reconnect");
        }
    }
}

/// Publishes every stored manifest again (in a task of its own: a large fleet has many).
fn republish(fleet: &Arc<Fleet>, client: &AsyncClient) {
    let manifests = match fleet.all_manifests() {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "manifests not published again");
            return;
        }
    };
    let client = client.clone();
    tokio::spawn(async move {
        for p in manifests {
            if client
                .publish(p.topic, QoS::AtLeastOnce, p.retain, p.payload)
                .await
                .is_err()
            {
                return;
            }
        }
    });
}

/// What arrived since the last flush.
#[derive(Debug, Default)]
struct Ingested {
    statuses: BTreeMap<String, DeviceStatus>,
    telemetry: Vec<(String, u64, Vec<u8>)>,
}

impl Ingested {
    fn receive(&mut self, fleet: &Fleet, topic: &str, payload: &[u8]) {
        match fleet.topics.parse(topic) {
            Some(DeviceTopic::Reported { device_id }) => {
                match serde_json::from_slice::<ReportedState>(payload) {
                    Ok(reported) => {
                        let status = self.status(fleet, device_id);
                        status.last_seen_ms = Some(now_ms());
                        status.reported = Some(reported);
                    }
                    Err(e) => {
                        tracing::warn!(device = %device_id, error = %e, "reported state not understood")
                    }
                }
            }
            Some(DeviceTopic::Telemetry { device_id, .. }) => {
                match serde_json::from_slice::<TelemetryEnvelope>(payload) {
                    Ok(envelope) => {
                        self.telemetry
                            .push((device_id.to_owned(), envelope.seq, payload.to_vec()));
                        self.status(fleet, device_id).last_seen_ms = Some(now_ms());
                    }
                    Err(e) => {
                        tracing::warn!(device = %device_id, error = %e, "telemetry record not understood")
                    }
                }
            }
            Some(DeviceTopic::CommandResult { device_id, .. }) => {
                match serde_json::from_slice::<CommandResult>(payload) {
                    Ok(result) => fleet.command_answered(result),
                    Err(e) => {
                        tracing::warn!(device = %device_id, error = %e, "command result not understood")
                    }
                }
            }
            _ => {}
        }
    }

    fn status(&mut self, fleet: &Fleet, device_id: &str) -> &mut DeviceStatus {
        self.statuses
            .entry(device_id.to_owned())
            .or_insert_with(|| fleet.status(device_id).unwrap_or_default())
    }

    fn flush(&mut self, fleet: &Fleet) {
        let statuses = std::mem::take(&mut self.statuses);
        let telemetry = std::mem::take(&mut self.telemetry);
        if let Err(e) = fleet.ingest(statuses, &telemetry) {
            tracing::error!(error = %e, "reported state and telemetry not stored");
        }
    }
}
