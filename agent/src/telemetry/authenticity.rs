//! What the device trusts of what reaches it through the broker, and how it proves what it
//! sends (see `edgefleet_common::authenticity`): every message the device publishes carries a
//! MAC under its own message key and its incarnation; it takes a telemetry acknowledgement or
//! a command only when the fleet key signed it for this device's topic, an acknowledgement
//! only for its own incarnation (and a sync answer only for the sync request it sent last),
//! and a command only once, within [`COMMAND_WINDOW_MS`] of when the fleet issued it.
//!
//! The incarnation is a random id created with the store: a device whose data directory was
//! wiped starts a new one, so the fleet keeps its new `seq`s apart from the old ones.

use std::collections::BTreeMap;

use edgefleet_common::UnixMillis;
use edgefleet_common::authenticity::{DeviceMessageKey, Refusal, new_incarnation};
use edgefleet_common::commands::COMMAND_WINDOW_MS;
use edgefleet_common::delivery::TelemetryAck;
use edgefleet_common::sealing::{DeviceIdentity, SealingError};
use edgefleet_common::signing::FleetPublicKey;

use crate::store::{Store, StoreError};

/// The store's key of the incarnation.
const INCARNATION: &str = "incarnation";
/// The store's key of the commands carried out lately (request id → issued at).
const COMMANDS_SEEN: &str = "commands_seen";

/// The device's keys for what crosses the broker.
#[derive(Debug, Clone)]
pub struct Authenticity {
    key: DeviceMessageKey,
    fleet_key: FleetPublicKey,
    incarnation: String,
}

impl Authenticity {
    /// The device's message key, agreed from its identity and the fleet key, and its
    /// incarnation (created with the store on first use).
    pub fn new(
        identity: &DeviceIdentity,
        fleet_key: FleetPublicKey,
        fleet: &str,
        device_id: &str,
        store: &Store,
    ) -> Result<Self, AuthenticityError> {
        let key = DeviceMessageKey::for_device(identity, &fleet_key, fleet, device_id)?;
        let incarnation = match store
            .get_meta(INCARNATION)?
            .map(|id| String::from_utf8_lossy(&id).into_owned())
        {
            Some(id) => id,
            None => {
                let id = new_incarnation();
                store.put_meta(INCARNATION, id.as_bytes())?;
                tracing::info!(incarnation = %id, "a new device incarnation begins with this data directory");
                id
            }
        };
        Ok(Self {
            key,
            fleet_key,
            incarnation,
        })
    }

    pub fn incarnation(&self) -> &str {
        &self.incarnation
    }

    /// The wire bytes of `body` (JSON) published on `topic`.
    pub fn seal(&self, topic: &str, body: &[u8]) -> Vec<u8> {
        self.key.seal(topic, &self.incarnation, body)
    }

    /// A telemetry acknowledgement received on `topic`, if the fleet signed it for this
    /// incarnation (and, answering a sync request, for the request with `sync_nonce`).
    pub fn open_ack(
        &self,
        topic: &str,
        payload: &[u8],
        sync_nonce: &str,
    ) -> Result<TelemetryAck, Refusal> {
        let body = self.fleet_key.open_message(topic, payload)?;
        let ack: TelemetryAck =
            serde_json::from_slice(body).map_err(|e| Refusal::Malformed(e.to_string()))?;
        if ack.incarnation != self.incarnation {
            return Err(Refusal::Replayed(format!(
                "acknowledges incarnation {}, this device is {}",
                ack.incarnation, self.incarnation
            )));
        }
        if ack.synced && ack.nonce.as_deref() != Some(sync_nonce) {
            return Err(Refusal::Replayed(
                "answers a sync request this device no longer waits for".into(),
            ));
        }
        Ok(ack)
    }

    /// A command's body received on `topic`, if the fleet signed it for this topic.
    pub fn open_command<'a>(&self, topic: &str, payload: &'a [u8]) -> Result<&'a [u8], Refusal> {
        self.fleet_key.open_message(topic, payload)
    }
}

/// The incarnation stored with the data directory (`None` before the agent first ran).
pub fn stored_incarnation(store: &Store) -> Option<String> {
    store
        .get_meta(INCARNATION)
        .ok()
        .flatten()
        .map(|id| String::from_utf8_lossy(&id).into_owned())
}

/// What becomes of a signed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Carry it out (it is remembered as seen).
    Carry,
    /// Carried out before: a replay, refused without an answer.
    Repeat,
    /// Issued too far from the device's clock: refused, and the fleet is told why.
    OutOfWindow(String),
}

/// Whether a signed command may be carried out now: not seen before, issued within the window
/// around the device's clock. Remembers it as seen (in the store, so a restart forgets nothing).
pub fn admit_command(
    store: &Store,
    request_id: &str,
    issued_at_ms: UnixMillis,
    now_ms: UnixMillis,
) -> Result<Admission, StoreError> {
    if issued_at_ms.abs_diff(now_ms) > COMMAND_WINDOW_MS {
        return Ok(Admission::OutOfWindow(format!(
            "the command was issued at {issued_at_ms} ms and the device's clock says {now_ms} ms: more than {} s apart, so it is refused as a possible replay; check the device's clock",
            COMMAND_WINDOW_MS / 1000
        )));
    }
    let mut seen: BTreeMap<String, UnixMillis> = store
        .get_meta(COMMANDS_SEEN)?
        .and_then(|json| serde_json::from_slice(&json).ok())
        .unwrap_or_default();
    seen.retain(|_, at| at.abs_diff(now_ms) <= COMMAND_WINDOW_MS);
    if seen.insert(request_id.to_owned(), issued_at_ms).is_some() {
        return Ok(Admission::Repeat);
    }
    let json = serde_json::to_vec(&seen).map_err(|source| StoreError::Encode {
        what: "the commands seen",
        source,
    })?;
    store.put_meta(COMMANDS_SEEN, &json)?;
    Ok(Admission::Carry)
}

/// Logs and counts a message the device did not take.
pub fn refused(topic: &str, what: &'static str, refusal: &Refusal) {
    tracing::warn!(%topic, what, reason = refusal.reason(), error = %refusal, "message refused");
    metrics::counter!("edgefleet_agent_messages_refused_total", "what" => what, "reason" => refusal.reason())
        .increment(1);
}

#[derive(Debug, thiserror::Error)]
pub enum AuthenticityError {
    #[error("the device's message key: {0}")]
    Key(#[from] SealingError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_carried_out_once_and_only_near_the_device_clock() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("agent.redb")).expect("store");
        let now = 10 * COMMAND_WINDOW_MS;
        let admit = |id, at, now| admit_command(&store, id, at, now).expect("store");
        assert_eq!(admit("r1", now - 1000, now), Admission::Carry);
        assert_eq!(admit("r1", now - 1000, now), Admission::Repeat);
        let Admission::OutOfWindow(why) = admit("r2", now - COMMAND_WINDOW_MS - 1, now) else {
            panic!("a stale command is refused");
        };
        assert!(why.contains("check the device's clock"), "{why}");
        drop(store);
        let store = Store::open(&dir.path().join("agent.redb")).expect("reopened");
        assert_eq!(
            admit_command(&store, "r1", now - 1000, now + 1).expect("store"),
            Admission::Repeat,
            "a restart forgets no command"
        );
    }

    #[test]
    fn only_a_signed_acknowledgement_of_this_incarnation_and_sync_is_taken() {
        let fleet = edgefleet_common::signing::FleetSigningKey::generate();
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("agent.redb")).expect("store");
        let auth = Authenticity::new(
            &DeviceIdentity::generate(),
            fleet.public_key(),
            "plant",
            "b",
            &store,
        )
        .expect("keys");
        let topic = "edgefleet/plant/devices/b/acks";
        let ack = |incarnation: &str, synced: bool, nonce: Option<&str>| TelemetryAck {
            committed_seq: 7,
            synced,
            incarnation: incarnation.into(),
            nonce: nonce.map(str::to_owned),
        };
        let signed =
            |ack: &TelemetryAck| fleet.sign_message(topic, &serde_json::to_vec(ack).expect("json"));
        let mine = auth.incarnation().to_owned();
        let plain = ack(&mine, false, None);
        assert_eq!(
            auth.open_ack(topic, &signed(&plain), "n1"),
            Ok(plain.clone())
        );
        let unsigned = serde_json::to_vec(&plain).expect("json");
        assert!(matches!(
            auth.open_ack(topic, &unsigned, "n1"),
            Err(Refusal::Malformed(_))
        ));
        let other_device = fleet.sign_message(
            "edgefleet/plant/devices/a/acks",
            &serde_json::to_vec(&plain).expect("json"),
        );
        assert!(matches!(
            auth.open_ack(topic, &other_device, "n1"),
            Err(Refusal::BadSignature { .. })
        ));
        let earlier_life = ack("0f", false, None);
        assert!(matches!(
            auth.open_ack(topic, &signed(&earlier_life), "n1"),
            Err(Refusal::Replayed(_))
        ));
        let answer = ack(&mine, true, Some("n1"));
        assert_eq!(
            auth.open_ack(topic, &signed(&answer), "n1"),
            Ok(answer.clone())
        );
        assert!(
            matches!(
                auth.open_ack(topic, &signed(&answer), "n2"),
                Err(Refusal::Replayed(_))
            ),
            "the answer to an earlier connection's sync request"
        );
        let forger = edgefleet_common::signing::FleetSigningKey::generate();
        let forged = forger.sign_message(topic, &serde_json::to_vec(&plain).expect("json"));
        assert!(matches!(
            auth.open_ack(topic, &forged, "n1"),
            Err(Refusal::UnknownKey { .. })
        ));
    }

    #[test]
    fn the_incarnation_lives_with_the_store() {
        let identity = DeviceIdentity::generate();
        let fleet = edgefleet_common::signing::FleetSigningKey::generate().public_key();
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("agent.redb");
        let first = {
            let store = Store::open(&path).expect("store");
            Authenticity::new(&identity, fleet, "plant", "a", &store).expect("keys")
        };
        let store = Store::open(&path).expect("reopened");
        let again = Authenticity::new(&identity, fleet, "plant", "a", &store).expect("keys");
        assert_eq!(first.incarnation(), again.incarnation());
        drop(store);
        std::fs::remove_file(&path).expect("wipe");
        let store = Store::open(&path).expect("new store");
        let wiped = Authenticity::new(&identity, fleet, "plant", "a", &store).expect("keys");
        assert_ne!(first.incarnation(), wiped.incarnation());
    }
}
