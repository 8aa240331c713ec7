//! The MQTT session to the fleet's broker (rumqttc, TLS through rustls).
//!
//! It subscribes the device's desired topic and its model input topics, publishes the reported
//! state (retained) on every change and on every reconnect, and drains the telemetry outbox:
//! records are published QoS 1 in `seq` order, at most [`WINDOW`] at a time, and removed from
//! the store only when the broker acknowledges them. A lost connection resets the window and
//! everything unacknowledged is sent again after the reconnect (the fleet drops repeats by
//! `seq`). Reconnects back off exponentially between the configured bounds.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use edgefleet_common::topics::DeviceTopics;
use rumqttc::{
    AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, watch};

use crate::config::Config;
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
    #[error("mqtt.ca_file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("mqtt.client_cert_file / client_key_file: {0}")]
    ClientCert(String),
}

#[derive(Debug, Clone, Copy)]
enum Tag {
    Telemetry(u64),
    Reported,
    Other,
}

/// Builds the rustls configuration: the configured CA (or the system roots) and an optional
/// client certificate.
/// The rustls configuration of an MQTT client: `ca_file` (or the system roots when empty) and
/// an optional client certificate and key (both or neither). The fleet service uses it too.
pub fn tls_config(
    ca_file: &str,
    client_cert_file: &str,
    client_key_file: &str,
) -> Result<TlsConfiguration, LinkError> {
    crate::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    if ca_file.is_empty() {
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
    } else {
        let bad = |reason: String| LinkError::CaFile {
            path: ca_file.to_owned(),
            reason,
        };
        let pem = std::fs::read(ca_file).map_err(|e| bad(e.to_string()))?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots
                .add(cert.map_err(|e| bad(e.to_string()))?)
                .map_err(|e| bad(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(bad("holds no PEM certificate".into()));
        }
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let client = if client_cert_file.is_empty() {
        builder.with_no_client_auth()
    } else {
        let read =
            |p: &str| std::fs::read(p).map_err(|e| LinkError::ClientCert(format!("{p}: {e}")));
        let certs = rustls_pemfile::certs(&mut read(client_cert_file)?.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| LinkError::ClientCert(e.to_string()))?;
        let key = rustls_pemfile::private_key(&mut read(client_key_file)?.as_slice())
            .map_err(|e| LinkError::ClientCert(e.to_string()))?
            .ok_or_else(|| LinkError::ClientCert(format!("{}: no private key", client_key_file)))?;
        builder
            .with_client_auth_cert(certs, key)
            .map_err(|e| LinkError::ClientCert(e.to_string()))?
    };
    Ok(TlsConfiguration::Rustls(Arc::new(client)))
}

/// The MQTT options for this device.
pub fn mqtt_options(config: &Config) -> Result<MqttOptions, LinkError> {
    let broker = config
        .broker()
        .map_err(|e| LinkError::ClientCert(e.to_string()))?;
    let mut options = MqttOptions::new(
        format!("edgefleet-{}", config.device_id),
        broker.host,
        broker.port,
    );
    options
        .set_keep_alive(Duration::from_secs(config.mqtt.keep_alive_seconds.max(5)))
        .set_clean_session(true)
        .set_inflight(WINDOW as u16 + 8)
        .set_request_channel_capacity(WINDOW * 2 + 64)
        .set_max_packet_size(16 * 1024 * 1024, 16 * 1024 * 1024);
    if !config.mqtt.username.is_empty() {
        options.set_credentials(config.mqtt.username.clone(), config.mqtt.password.clone());
    }
    if broker.tls {
        let m = &config.mqtt;
        options.set_transport(Transport::tls_with_config(tls_config(
            &m.ca_file,
            &m.client_cert_file,
            &m.client_key_file,
        )?));
    }
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
    let topics = DeviceTopics::new(&config.fleet, &config.device_id)
        .map_err(|e| LinkError::ClientCert(e.to_string()))?;
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
