//! The fleet's MQTT session: publishes what the domain layer hands it (signed manifests,
//! retained, and commands), publishes every manifest again on each connect, answers devices'
//! sync requests, and ingests reported state, telemetry and command results. The loop never
//! waits for the store: reads and commits run in tasks of their own while it goes on polling.
//!
//! Every publication goes through one [`Publisher`], in order, so that the broker's
//! acknowledgement of each (PUBACK) reaches whoever waits for it: a render job is finished only
//! once the broker has all of its manifests.
//!
//! Ingestion is a group commit: what arrives while one batch is being written becomes the
//! next batch. A message is acknowledged to the broker (manual acks, persistent session) only
//! once its batch is committed, and each device of the batch is then sent its
//! acknowledgement (`TelemetryAck`), so a record leaves a device only once the fleet has it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgefleet_common::topics::DeviceTopic;
use edgefleet_transport::acks::{OrderedAcks, PendingAck};
use rumqttc::{AsyncClient, Event, EventLoop, Outgoing as Sent, Packet, Publish, QoS};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::domain::{Fleet, Outgoing, Publication, Published, Received};
use crate::error::FleetError;

/// Sync requests answered at once (each reads the store); more wait their turn, so a fleet of
/// devices reconnecting together does not take every database connection.
const SYNCS_AT_ONCE: usize = 16;

/// Runs the session until `shutdown` turns true, then commits and acknowledges what arrived.
pub async fn run(
    fleet: Arc<Fleet>,
    client: AsyncClient,
    mut eventloop: EventLoop,
    outgoing: mpsc::Receiver<Outgoing>,
    mut shutdown: watch::Receiver<bool>,
) {
    let publisher = Publisher::new(client.clone());
    let mut in_flight = InFlight::default();
    // Publishing waits while the client's queue is full, which only polling the event loop
    // empties: it runs beside the loop.
    let forwarding = tokio::spawn(forward(publisher.clone(), outgoing));
    let acks = OrderedAcks::new(client.clone());
    let syncs = Arc::new(Semaphore::new(SYNCS_AT_ONCE));
    let mut batch = Batch::default();
    let mut committing: Option<JoinHandle<Committed>> = None;
    let mut backoff = Duration::from_millis(200);
    loop {
        // Acknowledgements that found the client's queue full go out as it empties.
        acks.flush();
        if committing.is_none() && !batch.is_empty() {
            committing = Some(batch.commit(&fleet));
        }
        tokio::select! {
            _ = shutdown.changed() => break,
            done = async { committing.as_mut().expect("guarded by is_some").await }, if committing.is_some() => {
                committing = None;
                if let Ok(done) = done {
                    done.acknowledge(&publisher);
                }
            }
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff = Duration::from_millis(200);
                    acks.connected();
                    tracing::info!(broker = %fleet.settings.mqtt_url, "connected to the broker");
                    // Replicas share what devices send; a command's result goes to every
                    // replica, as the one that sent the command waits for it.
                    let shared = |topic: String| match &fleet.settings.shared_subscriptions {
                        Some(group) => format!("$share/{group}/{topic}"),
                        None => topic,
                    };
                    for topic in [
                        shared(fleet.topics.all_reported()),
                        shared(fleet.topics.all_telemetry()),
                        fleet.topics.all_command_results(),
                        shared(fleet.topics.all_sync()),
                    ] {
                        let _ = client.try_subscribe(topic, QoS::AtLeastOnce);
                    }
                    republish_manifests(&fleet, &publisher);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => batch.receive(&fleet, &publisher, &syncs, &acks, p),
                Ok(Event::Outgoing(Sent::Publish(pkid))) => publisher.written(pkid, &mut in_flight),
                Ok(Event::Incoming(Packet::PubAck(ack))) => in_flight.acknowledged(ack.pkid),
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
        }
    }
    // What arrived is stored before the service stops; its acknowledgements go out while the
    // event loop is still polled.
    if let Some(done) = committing.take()
        && let Ok(done) = done.await
    {
        done.acknowledge(&publisher);
    }
    if !batch.is_empty()
        && let Ok(done) = batch.commit(&fleet).await
    {
        done.acknowledge(&publisher);
    }
    let drain = async {
        let _ = client.disconnect().await;
        while eventloop.poll().await.is_ok() {}
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    forwarding.abort();
}

/// Publishes QoS 1 messages in one order and tells whoever asked when the broker acknowledged
/// one. The event loop numbers publications (packet ids) in the order they were handed to the
/// client, so a queue in that order pairs each waiter with its packet id.
#[derive(Debug, Clone)]
struct Publisher {
    client: AsyncClient,
    /// Held while a publication is queued and handed to the client: one order for both.
    order: Arc<tokio::sync::Mutex<()>>,
    /// Who waits for each publication handed to the client and not yet written, in order.
    queued: Arc<Mutex<VecDeque<Option<oneshot::Sender<()>>>>>,
}

/// Publications written and not yet acknowledged, by packet id, with who waits for each.
#[derive(Debug, Default)]
struct InFlight(HashMap<u16, Option<oneshot::Sender<()>>>);

impl InFlight {
    fn acknowledged(&mut self, pkid: u16) {
        if let Some(Some(waiter)) = self.0.remove(&pkid) {
            let _ = waiter.send(());
        }
    }
}

impl Publisher {
    fn new(client: AsyncClient) -> Self {
        Self {
            client,
            order: Arc::default(),
            queued: Arc::default(),
        }
    }

    fn queued(&self) -> std::sync::MutexGuard<'_, VecDeque<Option<oneshot::Sender<()>>>> {
        self.queued
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn publish(
        &self,
        p: Publication,
        acknowledged: Option<oneshot::Sender<()>>,
    ) -> Result<(), rumqttc::ClientError> {
        let _order = self.order.lock().await;
        self.queued().push_back(acknowledged);
        let sent = self
            .client
            .publish(p.topic, QoS::AtLeastOnce, p.retain, p.payload)
            .await;
        if sent.is_err() {
            self.queued().pop_back();
        }
        sent
    }

    /// The event loop wrote publication `pkid`: the oldest queued one, unless it is one
    /// written before and sent again after a reconnect.
    fn written(&self, pkid: u16, in_flight: &mut InFlight) {
        if in_flight.0.contains_key(&pkid) {
            return;
        }
        let waiter = self.queued().pop_front().flatten();
        in_flight.0.insert(pkid, waiter);
    }
}

async fn forward(publisher: Publisher, mut outgoing: mpsc::Receiver<Outgoing>) {
    while let Some(o) = outgoing.recv().await {
        if let Err(e) = publisher.publish(o.publication, o.acknowledged).await {
            tracing::warn!(error = %e, "not published; manifests are published again on reconnect");
        }
    }
}

/// Publishes `publications` in a task of its own (a large fleet has many).
fn publish_all(publisher: &Publisher, publications: Vec<Publication>) {
    if publications.is_empty() {
        return;
    }
    let publisher = publisher.clone();
    tokio::spawn(async move {
        for p in publications {
            if publisher.publish(p, None).await.is_err() {
                return;
            }
        }
    });
}

/// Publishes every manifest again (after a connect), read in a task of its own.
fn republish_manifests(fleet: &Arc<Fleet>, publisher: &Publisher) {
    let (fleet, publisher) = (fleet.clone(), publisher.clone());
    tokio::spawn(async move {
        match fleet.all_manifests().await {
            Ok(manifests) => publish_all(&publisher, manifests),
            Err(e) => tracing::error!(error = %e, "manifests not published again"),
        }
    });
}

/// Answers a device's sync request in a task of its own; the request is acknowledged to the
/// broker once its answer is queued (or could not be made).
fn answer_sync(
    fleet: &Arc<Fleet>,
    publisher: &Publisher,
    syncs: &Arc<Semaphore>,
    received: Received,
    request: PendingAck,
) {
    let (fleet, publisher, syncs) = (fleet.clone(), publisher.clone(), syncs.clone());
    tokio::spawn(async move {
        let _turn = syncs.acquire().await;
        match fleet.answer_sync(&received).await {
            Ok(answer) => publish_all(&publisher, answer),
            Err(e) => {
                tracing::error!(device = %received.device_id, error = %e, "sync request not answered")
            }
        }
        request.done();
    });
}

/// What arrived since the last commit began.
#[derive(Debug, Default)]
struct Batch {
    /// Reported states and telemetry, authenticated and stored by the commit.
    received: Vec<Received>,
    /// The messages to acknowledge to the broker once the batch is stored.
    messages: Vec<PendingAck>,
}

/// A stored batch: its messages to acknowledge and the devices' acknowledgements to publish.
#[derive(Debug)]
struct Committed {
    messages: Vec<PendingAck>,
    acks: Result<Vec<Publication>, FleetError>,
}

impl Committed {
    fn acknowledge(self, publisher: &Publisher) {
        match self.acks {
            Ok(acks) => {
                for message in self.messages {
                    message.done();
                }
                publish_all(publisher, acks);
            }
            // Not acknowledged: the broker delivers the messages again after a reconnect, and
            // the devices keep the records and send them again.
            Err(e) => tracing::error!(error = %e, "reported state and telemetry not stored"),
        }
    }
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Authenticates and writes the batch in its own task; the session goes on receiving
    /// meanwhile.
    fn commit(&mut self, fleet: &Arc<Fleet>) -> JoinHandle<Committed> {
        let Batch { received, messages } = std::mem::take(self);
        let fleet = fleet.clone();
        tokio::spawn(async move {
            Committed {
                acks: fleet.take_in(received).await,
                messages,
            }
        })
    }

    /// Takes in one message. Nothing is believed and no store work is awaited here: reported
    /// state and telemetry wait for the batch's commit, a sync request and a command result
    /// are handled by tasks of their own, each authenticated first.
    fn receive(
        &mut self,
        fleet: &Arc<Fleet>,
        publisher: &Publisher,
        syncs: &Arc<Semaphore>,
        acks: &OrderedAcks,
        p: Publish,
    ) {
        let (device_id, what) = match fleet.topics.parse(&p.topic) {
            Some(DeviceTopic::Reported { device_id }) => (device_id, Published::Reported),
            Some(DeviceTopic::Telemetry { device_id, .. }) => (device_id, Published::Telemetry),
            Some(DeviceTopic::CommandResult { device_id, .. }) => {
                (device_id, Published::CommandResult)
            }
            Some(DeviceTopic::Sync { device_id }) => (device_id, Published::Sync),
            None => {
                acks.done_now(&p);
                return;
            }
        };
        let received = Received {
            device_id: device_id.to_owned(),
            what,
            topic: p.topic.clone(),
            payload: p.payload.to_vec(),
        };
        match what {
            Published::Reported | Published::Telemetry => {
                self.received.push(received);
                self.messages.push(acks.received(&p));
            }
            Published::Sync => answer_sync(fleet, publisher, syncs, received, acks.received(&p)),
            Published::CommandResult => {
                let fleet = fleet.clone();
                tokio::spawn(async move { fleet.take_command_result(&received).await });
                acks.done_now(&p);
            }
        }
    }
}
