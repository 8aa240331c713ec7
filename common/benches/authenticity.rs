//! What authenticity costs per message: a device sealing a telemetry message of 64 records and
//! the fleet opening it (HMAC-SHA256 under the agreed key), the fleet signing an
//! acknowledgement and the device checking it (ed25519), and deriving a device's key (X25519 +
//! HKDF, once per device and process). Prints one line per operation: microseconds each,
//! median of 5 rounds.
//!
//! cargo bench -p edgefleet-common --bench authenticity

use std::time::Instant;

use edgefleet_common::authenticity::{DeviceMessageKey, new_incarnation};
use edgefleet_common::sealing::DeviceIdentity;
use edgefleet_common::signing::FleetSigningKey;

/// Microseconds per call of `f`, the median of 5 rounds of `n` calls.
fn per_call(n: u32, mut f: impl FnMut()) -> f64 {
    let mut rounds: Vec<f64> = (0..5)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..n {
                f();
            }
            started.elapsed().as_secs_f64() * 1e6 / f64::from(n)
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[2]
}

fn main() {
    let fleet = FleetSigningKey::generate();
    let identity = DeviceIdentity::generate();
    let public = identity.public_key();
    let topic = "edgefleet/plant/devices/gw-01/telemetry/diabetes";
    let record = r#"{"deviceId":"gw-01","module":"diabetes","seq":1,"timestampMs":1765000000000,"kind":"inference","body":{"source":"http","latencyUs":180,"outputs":{"variable":[[206.1]]}}}"#;
    let message = format!("[{}]", vec![record; 64].join(","));
    let key = DeviceMessageKey::for_device(&identity, &fleet.public_key(), "plant", "gw-01")
        .expect("device key");
    let incarnation = new_incarnation();
    let sealed = key.seal(topic, &incarnation, message.as_bytes());
    let acks = "edgefleet/plant/devices/gw-01/acks";
    let ack = br#"{"committedSeq":123456,"incarnation":"0123456789abcdef0123456789abcdef"}"#;
    let signed = fleet.sign_message(acks, ack);
    let fleet_public = fleet.public_key();
    println!(
        "telemetry message: {} records, {} bytes ({} sealed)",
        64,
        message.len(),
        sealed.len()
    );
    let rows = [
        (
            "device seals a telemetry message",
            per_call(20_000, || {
                std::hint::black_box(key.seal(topic, &incarnation, message.as_bytes()));
            }),
        ),
        (
            "fleet opens a telemetry message",
            per_call(20_000, || {
                std::hint::black_box(key.open(topic, &sealed).expect("opens"));
            }),
        ),
        (
            "fleet signs an acknowledgement",
            per_call(5_000, || {
                std::hint::black_box(fleet.sign_message(acks, ack));
            }),
        ),
        (
            "device checks an acknowledgement",
            per_call(5_000, || {
                std::hint::black_box(fleet_public.open_message(acks, &signed).expect("opens"));
            }),
        ),
        (
            "fleet derives a device's key",
            per_call(2_000, || {
                std::hint::black_box(
                    DeviceMessageKey::for_fleet(&fleet, &public, "plant", "gw-01").expect("key"),
                );
            }),
        ),
    ];
    for (what, us) in rows {
        println!("{what}: {us:.2} µs");
    }
}
