//! What crosses the broker, authenticated: a device's message as the fleet opens it (MAC under
//! the key agreed with the device, then the telemetry it carries) and the fleet's message as
//! a device opens it (signature for its topic, then the acknowledgement or command inside).

use std::sync::OnceLock;

use edgefleet_common::authenticity::DeviceMessageKey;
use edgefleet_common::commands::CommandRequest;
use edgefleet_common::delivery::TelemetryAck;
use edgefleet_common::sealing::DeviceIdentity;

use crate::{DEVICE, fleet_key, fleet_public_key};

/// The topics the seeds were sealed or signed for.
pub const DEVICE_TOPIC: &str = "edgefleet/fuzz/devices/fuzz-device/telemetry/m";
pub const ACKS_TOPIC: &str = "edgefleet/fuzz/devices/fuzz-device/acks";

/// The fixed device identity the seeds are sealed with (32 bytes of 0x2a, in age's form).
pub fn device_identity() -> DeviceIdentity {
    use bech32::ToBase32 as _;
    let text = bech32::encode(
        "age-secret-key-",
        [0x2a_u8; 32].to_base32(),
        bech32::Variant::Bech32,
    )
    .map(|t| t.to_uppercase())
    .unwrap_or_default();
    match text.parse() {
        Ok(identity) => identity,
        Err(e) => panic!("the fixed fuzz identity: {e}"),
    }
}

/// The device's message key (the fleet's side of the agreement).
pub fn device_key() -> &'static DeviceMessageKey {
    static KEY: OnceLock<DeviceMessageKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let identity = device_identity();
        match DeviceMessageKey::for_fleet(&fleet_key(), &identity.public_key(), "fuzz", DEVICE) {
            Ok(key) => key,
            Err(e) => panic!("the fuzz device's key: {e}"),
        }
    })
}

/// A device message as the fleet's session takes it in.
pub fn device_message(data: &[u8]) {
    if let Ok(message) = device_key().open(DEVICE_TOPIC, data) {
        crate::telemetry::message(message.body);
    }
}

/// A fleet message as a device's link takes it in.
pub fn fleet_message(data: &[u8]) {
    if let Ok(body) = fleet_public_key().open_message(ACKS_TOPIC, data) {
        let _ = serde_json::from_slice::<TelemetryAck>(body);
        let _ = serde_json::from_slice::<CommandRequest>(body);
    }
}
