//! The MQTT session to the fleet's broker (rumqttc, TLS through rustls).
//!
//! It subscribes the device's desired topic and its model input topics, publishes the reported
//! state (retained) on every change and on every reconnect, and drains the telemetry outbox:
//! records are published QoS 1 in `seq` order, at most [`WINDOW`] at a time, and removed from
//! the store only when the broker acknowledges them. A lost connection resets the window and
//! everything unacknowledged is sent again after the reconnect (the fleet drops repeats by
//! `seq`). Reconnects back off exponentially between the configured bounds.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use edgefleet_common::topics::DeviceTopics;
use edgefleet_transport::{Login, TlsFiles};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::{mpsc, watch};

use crate::config::AgentConfig as Config;
use crate::outbox::{Outbox, unframe};
use crate::store::Store;

/// Telemetry records in flight (published, not yet acknowledged).
pub const WINDOW: usize = 256;

/// What the link receives for the agent.
#[derive(Debug)]
pub enum Inbound {
    /// A signed manifest from the desired topic.
    Desired(Vec<u8>),
    /// A message for a model module's input topic.
    Input { module: String, payload: Vec<u8> },
    /// A command from the fleet (`commands/<name>`).
    Command { name: String, payload: Vec<u8> },
}

/// A message the agent publishes besides telemetry and reported state (command results),
/// QoS 1 while connected; dropped while disconnected (the fleet's request times out).
#[derive(Debug)]
pub struct OutgoingMessage {
    pub topic: String,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("mqtt TLS: {0}")]
    Tls(#[from] edgefleet_transport::TlsError),
    #[error("device topics: {0}")]
    Topics(#[from] edgefleet_common::topics::TopicNameError),
}

#[derive(Debug, Clone, Copy)]
enum Tag {
    Telemetry(u64),
    Reported,
    Other,
}

/// The MQTT options for this device.
pub fn mqtt_options(config: &Config) -> Result<MqttOptions, LinkError> {
    let m = &config.mqtt;
    let login = Login {
        client_id: format!("edgefleet-{}", config.device_id),
        username: m.username.clone(),
        password: m.password.clone(),
        keep_alive: Duration::from_secs(m.keep_alive_seconds),
    };
    let tls = TlsFiles {
        ca_file: m.ca_file.clone(),
        client_cert_file: m.client_cert_file.clone(),
        client_key_file: m.client_key_file.clone(),
    };
    let mut options = edgefleet_transport::mqtt_options(&config.broker()?, &login, &tls)?;
    options
        .set_clean_session(true)
        .set_inflight(WINDOW as u16 + 8)
        .set_request_channel_capacity(WINDOW * 2 + 64);
    Ok(options)
}

/// Runs the session until `shutdown` resolves.
pub async fn run(
    config: Config,
    store: Store,
    outbox: Outbox,
    mut reported: watch::Receiver<Vec<u8>>,
    inbound: mpsc::Sender<Inbound>,
    mut outgoing: mpsc::Receiver<OutgoingMessage>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), LinkError> {
    let topics = DeviceTopics::new(&config.fleet, &config.device_id)?;
    let inputs_prefix = topics.input("");
    let commands_prefix = topics.command("");
    let (client, mut eventloop) = AsyncClient::new(mqtt_options(&config)?, WINDOW * 2 + 64);
    let min_backoff = Duration::from_millis(config.mqtt.reconnect_min_ms);
    let max_backoff = Duration::from_millis(config.mqtt.reconnect_max_ms);
    let mut backoff = min_backoff;
    let mut connected = false;
    // Publishes handed to rumqttc, in order, waiting for their packet id.
    let mut queued: VecDeque<Tag> = VecDeque::new();
    let mut in_flight: HashMap<u16, Tag> = HashMap::new();
    let mut cursor = 0u64;
    let mut acked: Vec<u64> = Vec::new();

    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connected = true;
                    backoff = min_backoff;
                    queued.clear();
                    in_flight.clear();
                    cursor = 0;
                    tracing::info!(broker = %config.mqtt.url, "connected to the broker");
                    let _ = client.try_subscribe(topics.desired(), QoS::AtLeastOnce);
                    let _ = client.try_subscribe(topics.input("+"), QoS::AtLeastOnce);
                    let _ = client.try_subscribe(topics.command("+"), QoS::AtLeastOnce);
                    let state = reported.borrow_and_update().clone();
                    if !state.is_empty() && client.try_publish(topics.reported(), QoS::AtLeastOnce, true, state).is_ok() {
                        queued.push_back(Tag::Reported);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let message = if p.topic == topics.desired() {
                        Some(Inbound::Desired(p.payload.to_vec()))
                    } else if let Some(name) = p.topic.strip_prefix(&commands_prefix) {
                        Some(Inbound::Command { name: name.to_owned(), payload: p.payload.to_vec() })
                    } else {
                        p.topic.strip_prefix(&inputs_prefix).map(|module| Inbound::Input {
                            module: module.to_owned(),
                            payload: p.payload.to_vec(),
                        })
                    };
                    if let Some(message) = message {
                        let _ = inbound.send(message).await;
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    if let Some(Tag::Telemetry(seq)) = in_flight.remove(&ack.pkid) {
                        acked.push(seq);
                    }
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    if let Some(tag) = queued.pop_front() {
                        in_flight.insert(pkid, tag);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if connected {
                        tracing::warn!(error = %e, "lost the broker connection; telemetry stays in the outbox");
                    } else {
                        tracing::debug!(error = %e, retry_in = ?backoff, "broker unreachable");
                    }
                    connected = false;
                    queued.clear();
                    in_flight.clear();
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => break,
                    }
                    backoff = (backoff * 2).min(max_backoff);
                }
            },
            _ = outbox.committed.notified(), if connected => {}
            Some(message) = outgoing.recv() => {
                if connected && client.try_publish(message.topic, QoS::AtLeastOnce, false, message.payload).is_ok() {
                    queued.push_back(Tag::Other);
                }
            }
            changed = reported.changed(), if connected => {
                if changed.is_ok() {
                    let state = reported.borrow_and_update().clone();
                    if client.try_publish(topics.reported(), QoS::AtLeastOnce, true, state).is_ok() {
                        queued.push_back(Tag::Reported);
                    }
                }
            }
        }

        if !acked.is_empty() {
            if let Err(e) = store.remove_outbox(&acked) {
                tracing::error!(error = %e, "cannot remove acknowledged telemetry");
            }
            acked.clear();
        }
        if connected {
            let room = WINDOW.saturating_sub(queued.len() + in_flight.len());
            if room > 0 {
                match store.outbox_after(cursor, room) {
                    Ok(records) => {
                        for record in records {
                            let Some((module, json)) = unframe(&record.payload) else {
                                cursor = record.seq;
                                continue;
                            };
                            if client
                                .try_publish(
                                    topics.telemetry(module),
                                    QoS::AtLeastOnce,
                                    false,
                                    json.to_vec(),
                                )
                                .is_err()
                            {
                                break;
                            }
                            queued.push_back(Tag::Telemetry(record.seq));
                            cursor = record.seq;
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot read the telemetry outbox"),
                }
            }
        }
    }
    let _ = client.try_disconnect();
    Ok(())
}
