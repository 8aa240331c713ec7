//! The MQTT session to the fleet's broker (rumqttc, TLS through rustls), a persistent session
//! so that inputs published while the agent is away wait for it at the broker.
//!
//! After every connect it subscribes the device's topics, publishes the reported state
//! (retained) and asks the fleet for its desired manifest and telemetry acknowledgement
//! ([`SyncRequest`]); it publishes the reported state again on every change. It drains the
//! telemetry outbox in `seq` order, QoS 1, packed into telemetry messages (consecutive records
//! of one module), through the [`Delivery`] window: a record leaves the
//! outbox only when the fleet's [`TelemetryAck`] covers it (the broker's PubAck only frees the
//! window), so nothing the fleet has not stored is forgotten, whatever the broker keeps.
//! Inputs are acknowledged to the broker by whoever makes their result durable
//! ([`InputAck`]). Reconnects back off exponentially between the configured bounds.
//!
//! Everything it publishes is sealed with the device's message key, and it takes an
//! acknowledgement or a command only when [`Authenticity`] finds the fleet's signature on it.

use std::time::{Duration, Instant};

use edgefleet_common::UnixMillis;
use edgefleet_common::authenticity::Refusal;
use edgefleet_common::delivery::{SyncRequest, TelemetryAck};
use edgefleet_common::reported::ReportedState;
use edgefleet_common::telemetry::MAX_MESSAGE_RECORDS;
use edgefleet_common::topics::DeviceTopics;
use edgefleet_transport::acks::{OrderedAcks, PendingAck};
use edgefleet_transport::{Login, TlsFiles, now_ms};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::{mpsc, watch};

use crate::broker_login::BrokerLogin;
use crate::config::AgentConfig as Config;
use crate::store::Store;
use crate::telemetry::authenticity::{Authenticity, refused};
use crate::telemetry::delivery::{Delivery, Tag, WINDOW};
use crate::telemetry::outbox::{Outbox, pack};

/// Most outbox records read for one refill of the window.
const MAX_READ: usize = 4096;

/// How long the fleet may take to answer a [`SyncRequest`] before the agent reports it silent.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// What the link receives for the agent.
#[derive(Debug)]
pub enum Inbound {
    /// A signed manifest from the desired topic.
    Desired(Vec<u8>),
    /// A signed manifest from a bundle, its images imported; `reply` is told its outcome.
    Bundle {
        wire: Vec<u8>,
        reply: tokio::sync::oneshot::Sender<edgefleet_common::reported::DesiredOutcome>,
    },
    /// A message for a model module's input topic; acknowledge it once its result is durable.
    Input {
        module: String,
        payload: Vec<u8>,
        ack: InputAck,
    },
    /// A command from the fleet (`commands/<name>`), its signature checked: the body.
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

/// The broker's delivery of one input message, acknowledged (so the broker forgets it) only
/// when [`InputAck::done`] is called, after the acknowledgements of the messages before it.
/// Dropped without it, the broker delivers the message again after the next connect.
#[derive(Debug)]
pub struct InputAck(PendingAck);

impl InputAck {
    pub fn done(self) {
        self.0.done();
    }
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
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_inflight(WINDOW as u16 + 8)
        .set_request_channel_capacity(WINDOW * 2 + 64);
    Ok(options)
}

/// After a connect: subscribes the device's topics, publishes its reported state and asks the
/// fleet for its desired state; returns whether the request went out.
fn announce(
    client: &AsyncClient,
    session: &Session<'_>,
    reported: &mut watch::Receiver<Vec<u8>>,
    delivery: &mut Delivery,
) -> bool {
    let topics = session.topics;
    for topic in [
        topics.desired(),
        topics.input("+"),
        topics.command("+"),
        topics.acks(),
    ] {
        let _ = client.try_subscribe(topic, QoS::AtLeastOnce);
    }
    let state = reported.borrow_and_update().clone();
    if !state.is_empty() && session.publish(client, &topics.reported(), true, &state) {
        delivery.handed(Tag::Other);
    }
    request_sync(client, session, &state, delivery)
}

/// What every publication and every received acknowledgement of one connection needs.
struct Session<'a> {
    topics: &'a DeviceTopics,
    auth: &'a Authenticity,
    /// The nonce of this connection's sync requests; the fleet's answer carries it back.
    sync_nonce: String,
}

impl Session<'_> {
    /// Publishes `body` sealed with the device's message key; whether the client took it.
    fn publish(&self, client: &AsyncClient, topic: &str, retain: bool, body: &[u8]) -> bool {
        let payload = self.auth.seal(topic, body);
        client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
            .is_ok()
    }
}

/// The fleet's acknowledgement of the telemetry it stored (`TelemetryAck`): the records through
/// its `committedSeq` leave the outbox when it moves the delivery window on.
fn on_telemetry_ack(
    session: &Session<'_>,
    p: &rumqttc::Publish,
    delivery: &mut Delivery,
    store: &Store,
) -> bool {
    let topic = session.topics.acks();
    let ack: TelemetryAck = match session
        .auth
        .open_ack(&topic, &p.payload, &session.sync_nonce)
    {
        Ok(ack) => ack,
        // The broker's retained acknowledgement of an earlier incarnation, sent on subscribe.
        Err(Refusal::Replayed(why)) if p.retain => {
            tracing::debug!(%why, "retained acknowledgement not taken");
            return false;
        }
        Err(refusal) => {
            refused(&topic, "acknowledgement", &refusal);
            return false;
        }
    };
    let moved = if ack.synced {
        delivery.fleet_synced(ack.committed_seq, Instant::now())
    } else {
        delivery.fleet_acked(ack.committed_seq, Instant::now())
    };
    if moved && let Err(e) = store.remove_outbox_through(ack.committed_seq) {
        tracing::error!(error = %e, "cannot remove telemetry the fleet stored");
    }
    true
}

/// Runs the session until `shutdown` resolves. `fleet_silent` says since when the fleet has
/// not answered a [`SyncRequest`] (`None` while it answers).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    config: Config,
    auth: Authenticity,
    store: Store,
    outbox: Outbox,
    mut reported: watch::Receiver<Vec<u8>>,
    inbound: mpsc::Sender<Inbound>,
    mut outgoing: mpsc::Receiver<OutgoingMessage>,
    fleet_silent: watch::Sender<Option<UnixMillis>>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), LinkError> {
    let topics = DeviceTopics::new(&config.fleet, &config.device_id)?;
    let mut login = BrokerLogin::new(&config.mqtt.username, &config.mqtt.password, store.clone());
    let options = login.applied(mqtt_options(&config)?);
    let (client, mut eventloop) = AsyncClient::new(options, WINDOW * 2 + 64);
    let acks = OrderedAcks::new(client.clone());
    let min_backoff = Duration::from_millis(config.mqtt.reconnect_min_ms);
    let max_backoff = Duration::from_millis(config.mqtt.reconnect_max_ms);
    let mut backoff = min_backoff;
    let mut connected = false;
    let mut delivery = Delivery::new(Instant::now());
    // When the last SyncRequest went out, until the fleet answers it.
    let mut sync_sent: Option<Instant> = None;
    // When the SyncRequest was last (re)sent; it is sent again every SYNC_TIMEOUT until answered.
    let mut sync_retry = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut session = Session {
        topics: &topics,
        auth: &auth,
        sync_nonce: String::new(),
    };

    loop {
        // Acknowledgements that found the client's queue full go out as it empties.
        acks.flush();
        tokio::select! {
            _ = shutdown.changed() => break,
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    metrics::counter!("edgefleet_agent_mqtt_connects_total").increment(1);
                    connected = true;
                    backoff = min_backoff;
                    acks.connected();
                    delivery.connected(Instant::now());
                    tracing::info!(broker = %config.mqtt.url, "connected to the broker");
                    session.sync_nonce = edgefleet_common::authenticity::new_incarnation();
                    if announce(&client, &session, &mut reported, &mut delivery) {
                        sync_sent.get_or_insert_with(Instant::now);
                        sync_retry = Instant::now();
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if p.topic == topics.acks() {
                        if on_telemetry_ack(&session, &p, &mut delivery, &store) {
                            fleet_answered(&mut sync_sent, &fleet_silent);
                        }
                        acks.done_now(&p);
                        continue;
                    }
                    if p.topic == topics.desired() {
                        fleet_answered(&mut sync_sent, &fleet_silent);
                    }
                    let message = received_message(&session, &acks, &p);
                    // An input is acknowledged once its result is durable, the rest now.
                    let held = matches!(message, Some(Inbound::Input { .. }));
                    if let Some(message) = message {
                        let _ = inbound.send(message).await;
                    }
                    if !held {
                        acks.done_now(&p);
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => delivery.broker_acked(ack.pkid),
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => delivery.published(pkid),
                Ok(_) => {}
                Err(e) => {
                    login.connection_ended(&e, &mut eventloop.mqtt_options);
                    if connected {
                        tracing::warn!(error = %e, "lost the broker connection; telemetry stays in the outbox");
                    } else {
                        tracing::debug!(error = %e, retry_in = ?backoff, "broker unreachable");
                    }
                    connected = false;
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => break,
                    }
                    backoff = (backoff * 2).min(max_backoff);
                }
            },
            _ = outbox.committed.notified(), if connected => {}
            _ = tick.tick() => {
                let now = Instant::now();
                if connected && delivery.resend_due(now) {
                    tracing::info!(from_seq = delivery.cursor() + 1, "the fleet has not acknowledged telemetry; sending it again");
                }
                if let Some(sent) = sync_sent
                    && now.duration_since(sync_retry) >= SYNC_TIMEOUT
                {
                    if fleet_silent.borrow().is_none() {
                        tracing::warn!("the fleet has not answered the sync request; the desired state may be out of date");
                        let since = now_ms().saturating_sub(now.duration_since(sent).as_millis() as u64);
                        fleet_silent.send_replace(Some(since));
                    }
                    // The request may have reached the broker before the fleet subscribed: ask again.
                    if connected {
                        request_sync(&client, &session, &reported.borrow(), &mut delivery);
                    }
                    sync_retry = now;
                }
            }
            Some(message) = outgoing.recv() => {
                if connected && session.publish(&client, &message.topic, false, &message.payload) {
                    delivery.handed(Tag::Other);
                }
            }
            changed = reported.changed(), if connected => {
                if changed.is_ok() {
                    let state = reported.borrow_and_update().clone();
                    if session.publish(&client, &topics.reported(), true, &state) {
                        delivery.handed(Tag::Other);
                    }
                }
            }
        }

        if connected {
            send_telemetry(&client, &session, &store, &mut delivery);
        }
    }
    let _ = client.try_disconnect();
    Ok(())
}

/// What a publication on the desired, commands or inputs topics brings the agent: `None` for
/// a command the fleet did not sign for this device (refused and counted) or another topic.
fn received_message(
    session: &Session<'_>,
    acks: &OrderedAcks,
    p: &rumqttc::Publish,
) -> Option<Inbound> {
    let topics = session.topics;
    if p.topic == topics.desired() {
        return Some(Inbound::Desired(p.payload.to_vec()));
    }
    if let Some(name) = p.topic.strip_prefix(&topics.command("")) {
        return match session.auth.open_command(&p.topic, &p.payload) {
            Ok(body) => Some(Inbound::Command {
                name: name.to_owned(),
                payload: body.to_vec(),
            }),
            Err(refusal) => {
                refused(&p.topic, "command", &refusal);
                None
            }
        };
    }
    let module = p.topic.strip_prefix(&topics.input(""))?;
    Some(Inbound::Input {
        module: module.to_owned(),
        payload: p.payload.to_vec(),
        ack: InputAck(acks.received(p)),
    })
}

/// Publishes a [`SyncRequest`] carrying the applied version of the reported `state`; returns
/// whether it was handed to the client.
fn request_sync(
    client: &AsyncClient,
    session: &Session<'_>,
    state: &[u8],
    delivery: &mut Delivery,
) -> bool {
    let applied_version = serde_json::from_slice::<ReportedState>(state)
        .ok()
        .and_then(|s| s.applied_version);
    let request = serde_json::to_vec(&SyncRequest {
        applied_version,
        nonce: session.sync_nonce.clone(),
    })
    .unwrap_or_default();
    let handed = session.publish(client, &session.topics.sync(), false, &request);
    if handed {
        delivery.handed(Tag::Other);
    }
    handed
}

/// The fleet answered (a manifest or an acknowledgement arrived): it is not silent.
fn fleet_answered(
    sync_sent: &mut Option<Instant>,
    fleet_silent: &watch::Sender<Option<UnixMillis>>,
) {
    *sync_sent = None;
    fleet_silent.send_if_modified(|silent| silent.take().is_some());
}

/// Hands outbox records to the client, packed into telemetry messages, while the window has
/// room.
fn send_telemetry(
    client: &AsyncClient,
    session: &Session<'_>,
    store: &Store,
    delivery: &mut Delivery,
) {
    // Refills come a quarter window at a time (one store read each), not one read per PubAck.
    let room = delivery.room();
    if room < WINDOW / 4 {
        return;
    }
    let limit = (room * MAX_MESSAGE_RECORDS).min(MAX_READ);
    let records = match store.outbox_after(delivery.cursor(), limit) {
        Ok(records) => records,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the telemetry outbox");
            return;
        }
    };
    let (messages, through) = pack(&records, room);
    for message in messages {
        let topic = session.topics.telemetry(&message.module);
        if !session.publish(client, &topic, false, &message.payload) {
            return;
        }
        delivery.handed(Tag::Telemetry(message.last_seq));
    }
    delivery.skipped(through);
}
