//! Authenticity of what crosses the broker, whatever the broker is: neither a broker, nor a
//! gateway relaying for it, nor another device can speak for the fleet or for a device.
//!
//! - **Fleet → device** (telemetry acknowledgements, commands): the fleet signs each message
//!   with its ed25519 key, over the topic it is published on and its body
//!   ([`FleetSigningKey::sign_message`]); the device checks it against the fleet public key it
//!   already trusts for manifests ([`FleetPublicKey::open_message`]). The topic names the
//!   device, so a message signed for one device is refused by every other.
//! - **Device → fleet** (telemetry, reported state, sync requests, command results): the device
//!   authenticates each message with HMAC-SHA256 under its [`DeviceMessageKey`], a key only it
//!   and the fleet can compute: HKDF-SHA256 of the X25519 agreement between the device's
//!   identity (the age key its registry passwords are sealed to) and the fleet key read as an
//!   X25519 key, bound to the fleet's name and the device id. The fleet derives the key from
//!   the public key of the device the topic names, so a device's key never verifies a message
//!   on another device's topics. Each message also carries the device's incarnation (a random
//!   id created with its data directory), so the fleet keeps `seq`s per incarnation.
//!
//! Both wire forms are a small JSON object around the body exactly as it was authenticated:
//! `{"body":{...},"incarnation":"<hex>","mac":"<base64>"}` from a device and
//! `{"body":{...},"keyId":"<hex>","signature":"<base64>"}` from the fleet. Replays are the
//! reader's to refuse, by what the body says (a telemetry `seq` counts once, an acknowledgement
//! answers the device's own sync nonce and never moves back, a command's id is used once, a
//! reported state never goes back in time).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use curve25519_dalek::montgomery::MontgomeryPoint;
use hmac::{Hmac, Mac as _};
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::Sha256;

use crate::sealing::{DeviceIdentity, DevicePublicKey, SealingError};
use crate::signing::{FleetPublicKey, FleetSigningKey};

/// What a device's MAC covers before the topic: its messages can never be taken for anything
/// else the same key might authenticate.
pub const DEVICE_MESSAGE_CONTEXT: &[u8] = b"edgefleet device message v1\n";

/// What the fleet key signs before a message's topic, so that a message signature can never
/// be taken for a manifest batch or a receipt signature.
pub const FLEET_MESSAGE_CONTEXT: &[u8] = b"edgefleet fleet message v1\n";

/// Why a message was not accepted. Nothing in a refused message is acted upon.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("not an authenticated message: {0}")]
    Malformed(String),
    #[error(
        "the message's MAC does not verify with the key of the device its topic names: forged, altered or sent by another device"
    )]
    BadMac,
    #[error(
        "the message's signature does not verify with fleet key {key_id}: forged or altered on the way"
    )]
    BadSignature { key_id: String },
    #[error("the message was signed by key {found}, but this device trusts fleet key {expected}")]
    UnknownKey { found: String, expected: String },
    #[error("replayed: {0}")]
    Replayed(String),
    #[error("from a device the fleet does not know: {0}")]
    UnknownDevice(String),
}

impl Refusal {
    /// The label the refusal is counted under (`reason` of the refused-messages counters).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::BadMac | Self::BadSignature { .. } | Self::UnknownKey { .. } => "forged",
            Self::Replayed(_) => "replayed",
            Self::UnknownDevice(_) => "unknown-device",
        }
    }
}

/// The key a device authenticates its messages with. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceMessageKey([u8; 32]);

impl fmt::Debug for DeviceMessageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceMessageKey(..)")
    }
}

/// A device message whose MAC verified: the device's incarnation and the body as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceMessage<'a> {
    pub incarnation: String,
    pub body: &'a [u8],
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceWire<'a> {
    #[serde(borrow)]
    body: &'a RawValue,
    incarnation: String,
    mac: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FleetWire<'a> {
    #[serde(borrow)]
    body: &'a RawValue,
    key_id: String,
    signature: String,
}

impl DeviceMessageKey {
    /// The device's side of the agreement: its identity with the fleet's public key.
    pub fn for_device(
        identity: &DeviceIdentity,
        fleet: &FleetPublicKey,
        fleet_name: &str,
        device_id: &str,
    ) -> Result<Self, SealingError> {
        let shared = MontgomeryPoint(fleet.x25519_public()).mul_clamped(identity.x25519_secret()?);
        Self::derive(shared, fleet_name, device_id)
            .ok_or_else(|| SealingError::InvalidIdentity("the fleet key agrees on nothing".into()))
    }

    /// The fleet's side: its key with the public key it holds for the device.
    pub fn for_fleet(
        fleet: &FleetSigningKey,
        device: &DevicePublicKey,
        fleet_name: &str,
        device_id: &str,
    ) -> Result<Self, SealingError> {
        let shared = MontgomeryPoint(device.x25519_public()?).mul_clamped(fleet.x25519_secret());
        Self::derive(shared, fleet_name, device_id).ok_or_else(|| SealingError::InvalidPublicKey {
            key: device.to_string(),
            reason: "a low-order point agrees on nothing".into(),
        })
    }

    /// HKDF-SHA256 over the shared point, bound to the fleet and the device; `None` for a
    /// low-order point (an all-zero agreement any party could compute).
    fn derive(shared: MontgomeryPoint, fleet_name: &str, device_id: &str) -> Option<Self> {
        if shared.to_bytes() == [0; 32] {
            return None;
        }
        let info = format!("edgefleet device message key v1\n{fleet_name}\n{device_id}");
        let mut key = [0; 32];
        hkdf::Hkdf::<Sha256>::new(None, shared.as_bytes())
            .expand(info.as_bytes(), &mut key)
            .ok()?;
        Some(Self(key))
    }

    fn mac(&self, topic: &str, incarnation: &str, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        for part in [
            DEVICE_MESSAGE_CONTEXT,
            topic.as_bytes(),
            b"\n",
            incarnation.as_bytes(),
            b"\n",
            body,
        ] {
            mac.update(part);
        }
        mac
    }

    /// The wire bytes of `body` (JSON) published on `topic` by incarnation `incarnation`.
    pub fn seal(&self, topic: &str, incarnation: &str, body: &[u8]) -> Vec<u8> {
        let tag = self.mac(topic, incarnation, body).finalize().into_bytes();
        let mut out = Vec::with_capacity(body.len() + incarnation.len() + 80);
        out.extend_from_slice(br#"{"body":"#);
        out.extend_from_slice(body);
        out.extend_from_slice(br#","incarnation":"#);
        out.extend_from_slice(json_string(incarnation).as_bytes());
        out.extend_from_slice(br#","mac":""#);
        out.extend_from_slice(BASE64.encode(tag).as_bytes());
        out.extend_from_slice(br#""}"#);
        out
    }

    /// Checks a message received on `topic`; its body only if the MAC verifies.
    pub fn open<'a>(&self, topic: &str, payload: &'a [u8]) -> Result<DeviceMessage<'a>, Refusal> {
        let wire: DeviceWire<'a> =
            serde_json::from_slice(payload).map_err(|e| Refusal::Malformed(e.to_string()))?;
        let tag = BASE64
            .decode(&wire.mac)
            .map_err(|e| Refusal::Malformed(format!("mac: {e}")))?;
        let body = wire.body.get().as_bytes();
        self.mac(topic, &wire.incarnation, body)
            .verify_slice(&tag)
            .map_err(|_| Refusal::BadMac)?;
        Ok(DeviceMessage {
            incarnation: wire.incarnation,
            body,
        })
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn fleet_signed_bytes(topic: &str, body: &[u8]) -> Vec<u8> {
    let mut signed = Vec::with_capacity(FLEET_MESSAGE_CONTEXT.len() + topic.len() + 1 + body.len());
    signed.extend_from_slice(FLEET_MESSAGE_CONTEXT);
    signed.extend_from_slice(topic.as_bytes());
    signed.push(b'\n');
    signed.extend_from_slice(body);
    signed
}

impl FleetSigningKey {
    /// The wire bytes of `body` (JSON), signed for `topic`.
    pub fn sign_message(&self, topic: &str, body: &[u8]) -> Vec<u8> {
        let signature = self.sign_bytes(&fleet_signed_bytes(topic, body));
        let mut out = Vec::with_capacity(body.len() + 140);
        out.extend_from_slice(br#"{"body":"#);
        out.extend_from_slice(body);
        out.extend_from_slice(br#","keyId":""#);
        out.extend_from_slice(self.public_key().key_id().as_bytes());
        out.extend_from_slice(br#"","signature":""#);
        out.extend_from_slice(BASE64.encode(signature).as_bytes());
        out.extend_from_slice(br#""}"#);
        out
    }
}

impl FleetPublicKey {
    /// Checks a message received on `topic`; its body only if the fleet signed it for `topic`.
    pub fn open_message<'a>(&self, topic: &str, payload: &'a [u8]) -> Result<&'a [u8], Refusal> {
        let wire: FleetWire<'a> =
            serde_json::from_slice(payload).map_err(|e| Refusal::Malformed(e.to_string()))?;
        let expected = self.key_id();
        if wire.key_id != expected {
            return Err(Refusal::UnknownKey {
                found: wire.key_id,
                expected,
            });
        }
        let signature = BASE64
            .decode(&wire.signature)
            .map_err(|e| Refusal::Malformed(format!("signature: {e}")))?;
        let body = wire.body.get().as_bytes();
        if !self.signed(&fleet_signed_bytes(topic, body), &signature) {
            return Err(Refusal::BadSignature { key_id: expected });
        }
        Ok(body)
    }
}

/// A new device incarnation: 128 random bits, hex.
pub fn new_incarnation() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
