//! Signed manifests as a device receives them (over MQTT, in a bundle, from the drop
//! directory) and the manifest document inside.

use std::sync::OnceLock;

use edgefleet_common::manifest::Manifest;
use edgefleet_common::signing::{FleetPublicKey, FleetSigningKey, canonical_json};
use serde_json::Value;

fn keys() -> &'static (FleetSigningKey, FleetPublicKey) {
    static KEYS: OnceLock<(FleetSigningKey, FleetPublicKey)> = OnceLock::new();
    KEYS.get_or_init(|| (crate::fleet_key(), crate::fleet_public_key()))
}

/// A signed manifest envelope, checked against the fleet key: whatever it holds, the answer is
/// a manifest or a [`ManifestError`](edgefleet_common::signing::ManifestError).
pub fn envelope(data: &[u8]) {
    if let Ok(manifest) = keys().1.verify(data) {
        // Only a manifest the key signed gets through; signing it again gives one that verifies.
        let wire = keys().0.sign(&manifest);
        assert_eq!(keys().1.verify(&wire).as_ref(), Ok(&manifest));
    }
}

/// A manifest document: its canonical JSON (what is signed) is stable, and a manifest the
/// fleet signs reads back on the device as the same manifest.
pub fn manifest(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let canonical = canonical_json(&value);
    let reread: Value = match serde_json::from_slice(&canonical) {
        Ok(v) => v,
        Err(e) => panic!("canonical JSON does not parse: {e}"),
    };
    assert_eq!(
        canonical_json(&reread),
        canonical,
        "canonical JSON is not stable"
    );
    if let Ok(manifest) = serde_json::from_value::<Manifest>(value) {
        let wire = keys().0.sign(&manifest);
        match keys().1.verify(&wire) {
            Ok(back) => assert_eq!(back, manifest, "a signed manifest reads back different"),
            // A schema version other than ours is refused before the signature is checked.
            Err(e) => assert!(
                manifest.schema_version != edgefleet_common::manifest::MANIFEST_SCHEMA_VERSION,
                "a manifest the fleet signed is refused: {e}"
            ),
        }
    }
}
