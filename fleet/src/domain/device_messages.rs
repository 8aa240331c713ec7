//! What devices publish, authenticated before anything in it is believed: each message's MAC
//! must verify under the message key of the device its topic names (derived from the public
//! key the fleet holds for that device, see `edgefleet_common::authenticity`). A message that
//! does not verify changes nothing; it is logged with its topic and counted in
//! `edgefleet_fleet_messages_refused_total{what,reason}`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use edgefleet_common::authenticity::{DeviceMessage, DeviceMessageKey, Refusal};
use edgefleet_common::commands::CommandResult;
use edgefleet_common::delivery::SyncRequest;
use edgefleet_common::reported::ReportedState;
use edgefleet_common::sealing::DevicePublicKey;
use edgefleet_common::telemetry::{TelemetryEnvelope, message_envelopes};
use edgefleet_transport::now_ms;

use super::telemetry::in_incarnation;
use super::{Arrived, Fleet, Heard, Publication};
use crate::error::FleetError;
use crate::records::Device;

/// How often a device's key is read again from the store when a message does not verify
/// (another replica may have re-added the device with a new key): at most once per period,
/// so forgeries cannot turn into a stream of store reads.
const KEY_REFRESH: Duration = Duration::from_secs(5);

/// What a device published on one of the fleet's subscriptions, not yet authenticated.
#[derive(Debug, Clone)]
pub struct Received {
    pub device_id: String,
    pub what: Published,
    pub topic: String,
    pub payload: Vec<u8>,
}

/// Which of a device's topics a message came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    Reported,
    Telemetry,
    CommandResult,
    Sync,
}

impl Published {
    fn name(self) -> &'static str {
        match self {
            Self::Reported => "reported",
            Self::Telemetry => "telemetry",
            Self::CommandResult => "command-result",
            Self::Sync => "sync",
        }
    }
}

/// The message keys of the devices this process has heard from, with the public key each
/// was derived from and when it was read.
#[derive(Debug, Default)]
pub(crate) struct DeviceKeys(Mutex<HashMap<String, (String, DeviceMessageKey, Instant)>>);

impl DeviceKeys {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (String, DeviceMessageKey, Instant)>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets `device`'s key (it was added again, with a new key perhaps, or removed).
    pub(crate) fn forget(&self, device: &str) {
        self.lock().remove(device);
    }
}

/// Logs and counts a message that was not taken.
pub(crate) fn refused(topic: &str, what: &'static str, refusal: &Refusal) {
    tracing::warn!(%topic, what, reason = refusal.reason(), error = %refusal, "device message refused");
    metrics::counter!("edgefleet_fleet_messages_refused_total", "what" => what, "reason" => refusal.reason())
        .increment(1);
}

/// A device's reported state or telemetry, authenticated.
struct Taken {
    heard: BTreeMap<String, Heard>,
    /// Telemetry records: device, incarnation, the envelope's seq and JSON.
    envelopes: Vec<(String, String, u64, Vec<u8>)>,
}

impl Fleet {
    /// `received`'s body, if its MAC verifies under the key of the device its topic names.
    pub(crate) async fn open_device_message<'a>(
        &self,
        received: &'a Received,
    ) -> Result<DeviceMessage<'a>, Refusal> {
        let id = &received.device_id;
        let refresh = match self.device_keys.lock().get(id) {
            Some((_, key, read)) => match key.open(&received.topic, &received.payload) {
                Ok(message) => return Ok(message),
                Err(refusal) if read.elapsed() < KEY_REFRESH => return Err(refusal),
                Err(_) => true,
            },
            None => false,
        };
        let key = self
            .read_device_key(id)
            .await
            .map_err(|e| Refusal::UnknownDevice(format!("{id}: {e}")))?;
        if refresh {
            tracing::debug!(device = %id, "device key read again after a message did not verify");
        }
        key.open(&received.topic, &received.payload)
    }

    async fn read_device_key(&self, id: &str) -> Result<DeviceMessageKey, FleetError> {
        let device: Device = self.device_record(id).await?;
        let public: DevicePublicKey = device.public_key.parse()?;
        let key = DeviceMessageKey::for_fleet(&self.key, &public, &self.settings.name, id)?;
        self.device_keys.lock().insert(
            id.to_owned(),
            (device.public_key, key.clone(), Instant::now()),
        );
        Ok(key)
    }

    /// Authenticates and stores what devices published since the last call (reported state
    /// and telemetry) in one transaction; returns the devices' acknowledgements.
    pub(crate) async fn take_in(
        &self,
        received: Vec<Received>,
    ) -> Result<Vec<Publication>, FleetError> {
        let taken = self.authenticate(&received).await;
        let mut telemetry: Vec<Arrived> = Vec::with_capacity(taken.envelopes.len());
        // A message's records share their device and incarnation: one lookup per run of them.
        let mut last: Option<(String, String, u64)> = None;
        for (device, incarnation, seq, json) in taken.envelopes {
            let index = match &last {
                Some((d, i, index)) if *d == device && *i == incarnation => *index,
                _ => {
                    let index = self.incarnation_index(&device, &incarnation).await?;
                    last = Some((device.clone(), incarnation, index));
                    index
                }
            };
            match in_incarnation(index, device, seq, json) {
                Ok(arrived) => telemetry.push(arrived),
                Err(e) => refused("telemetry", "telemetry", &Refusal::Malformed(e.to_string())),
            }
        }
        for (device, heard) in &taken.heard {
            if let Some(incarnation) = &heard.incarnation {
                self.incarnation_index(device, incarnation).await?;
            }
        }
        self.ingest(taken.heard, &telemetry).await
    }

    async fn authenticate(&self, received: &[Received]) -> Taken {
        let mut taken = Taken {
            heard: BTreeMap::new(),
            envelopes: Vec::new(),
        };
        for r in received {
            let what = r.what.name();
            let message = match self.open_device_message(r).await {
                Ok(message) => message,
                Err(refusal) => {
                    refused(&r.topic, what, &refusal);
                    continue;
                }
            };
            let refusal = match r.what {
                Published::Reported => take_reported(&mut taken, r, &message),
                Published::Telemetry => take_telemetry(&mut taken, r, &message),
                Published::CommandResult | Published::Sync => None,
            };
            if let Some(refusal) = refusal {
                refused(&r.topic, what, &refusal);
            }
        }
        taken
    }

    /// Answers a device's sync request (its manifest and acknowledgement), if it is the
    /// device's own.
    pub(crate) async fn answer_sync(
        &self,
        received: &Received,
    ) -> Result<Vec<Publication>, FleetError> {
        let message = match self.open_device_message(received).await {
            Ok(message) => message,
            Err(refusal) => {
                refused(&received.topic, "sync", &refusal);
                return Ok(Vec::new());
            }
        };
        match serde_json::from_slice::<SyncRequest>(message.body) {
            Ok(request) => {
                self.sync(&received.device_id, &message.incarnation, request.nonce)
                    .await
            }
            Err(e) => {
                refused(&received.topic, "sync", &Refusal::Malformed(e.to_string()));
                Ok(Vec::new())
            }
        }
    }

    /// Hands a device's command result to the request waiting for it, if it is the device's own.
    pub(crate) async fn take_command_result(&self, received: &Received) {
        let refusal = match self.open_device_message(received).await {
            Ok(message) => match serde_json::from_slice::<CommandResult>(message.body) {
                Ok(result) => {
                    self.command_answered(&received.device_id, result);
                    return;
                }
                Err(e) => Refusal::Malformed(e.to_string()),
            },
            Err(refusal) => refusal,
        };
        refused(&received.topic, "command-result", &refusal);
    }
}

fn heard<'a>(taken: &'a mut Taken, device_id: &str, incarnation: &str) -> &'a mut Heard {
    let heard = taken.heard.entry(device_id.to_owned()).or_default();
    heard.last_seen_ms = now_ms();
    heard.incarnation = Some(incarnation.to_owned());
    heard
}

fn take_reported(taken: &mut Taken, r: &Received, message: &DeviceMessage<'_>) -> Option<Refusal> {
    let reported: ReportedState = match serde_json::from_slice(message.body) {
        Ok(reported) => reported,
        Err(e) => return Some(Refusal::Malformed(e.to_string())),
    };
    if reported.device_id != r.device_id {
        return Some(Refusal::Malformed(format!(
            "reports device {:?} on {:?}'s topic",
            reported.device_id, r.device_id
        )));
    }
    heard(taken, &r.device_id, &message.incarnation).reported = Some(reported);
    None
}

fn take_telemetry(taken: &mut Taken, r: &Received, message: &DeviceMessage<'_>) -> Option<Refusal> {
    let envelopes = match message_envelopes(message.body) {
        Ok(envelopes) => envelopes,
        Err(e) => return Some(Refusal::Malformed(e.to_string())),
    };
    let (before, mut newest, mut refusal) = (taken.envelopes.len(), None, None);
    for json in envelopes {
        match serde_json::from_str::<TelemetryEnvelope>(json.get()) {
            Ok(envelope) if envelope.device_id == r.device_id => {
                newest = newest.max(Some(envelope.timestamp_ms));
                taken.envelopes.push((
                    r.device_id.clone(),
                    message.incarnation.clone(),
                    envelope.seq,
                    json.get().as_bytes().to_vec(),
                ));
            }
            Ok(envelope) => {
                refusal = Some(Refusal::Malformed(format!(
                    "a record of device {:?} on {:?}'s topic",
                    envelope.device_id, r.device_id
                )));
            }
            Err(e) => refusal = Some(Refusal::Malformed(e.to_string())),
        }
    }
    metrics::counter!("edgefleet_fleet_telemetry_records_total")
        .increment((taken.envelopes.len() - before) as u64);
    if let Some(newest) = newest {
        let lag_ms = now_ms().saturating_sub(newest);
        metrics::histogram!("edgefleet_fleet_telemetry_lag_seconds").record(lag_ms as f64 / 1000.0);
    }
    heard(taken, &r.device_id, &message.incarnation);
    refusal
}
