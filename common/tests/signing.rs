//! Manifest signing: round trips, tamper detection, deterministic bytes and distinct refusals.

use std::collections::BTreeMap;

use edgefleet_common::manifest::*;
use edgefleet_common::reported::ApplyStatus;
use edgefleet_common::sealing::SealedSecret;
use edgefleet_common::signing::{
    CanonicalManifest, FleetSigningKey, ManifestError, canonical_json,
};
use proptest::prelude::*;
use serde_json::json;

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,11}"
}

fn module() -> impl Strategy<Value = Module> {
    (
        any::<bool>(),
        "[a-z0-9.:/-]{1,30}@sha256:[0-9a-f]{64}",
        prop_oneof![Just(DesiredStatus::Running), Just(DesiredStatus::Stopped)],
        prop_oneof![
            Just(RestartPolicy::Never),
            Just(RestartPolicy::OnFailure),
            Just(RestartPolicy::OnUnhealthy),
            Just(RestartPolicy::Always)
        ],
        prop::collection::btree_map("[A-Z_]{1,8}", "\\PC{0,12}", 0..3),
        prop::option::of(prop::collection::btree_map(name(), any::<i32>(), 0..3)),
        prop::option::of((
            any::<u16>(),
            prop::collection::vec("[0-9a-f]{64}", 0..2),
            any::<bool>(),
            any::<u32>(),
        )),
        prop::option::of(any::<u32>()),
    )
        .prop_map(
            |(container, image, status, restart_policy, env, opts, serving, startup_order)| {
                if container {
                    Module::Container(ContainerSpec {
                        image,
                        status,
                        restart_policy,
                        env,
                        create_options: opts.map(|o| json!(o)),
                        startup_order,
                        image_pull_policy: Default::default(),
                    })
                } else {
                    Module::Model(ModelSpec {
                        image,
                        status,
                        serving: serving.map(|(port, keys, mqtt, ppm)| ModelServing {
                            http_port: port,
                            bind_address: "127.0.0.1".into(),
                            auth_key_sha256: keys,
                            mqtt_input: mqtt,
                            data_collection_ppm: ppm,
                        }),
                        session: Default::default(),
                        batch: None,
                    })
                }
            },
        )
}

fn manifest() -> impl Strategy<Value = Manifest> {
    (
        name(),
        any::<u64>(),
        prop::collection::btree_map(name(), (name(), name(), "\\PC{0,40}"), 0..3),
        prop::collection::btree_map(name(), module(), 0..4),
        (any::<u32>(), any::<u64>(), any::<u64>()),
    )
        .prop_map(|(device, version, regs, modules, (interval, cap, ttl))| {
            let mut m = Manifest::new(device, version);
            m.registry_credentials = regs
                .into_iter()
                .map(|(k, (address, username, sealed))| {
                    let password = SealedSecret::from_armored(sealed);
                    (
                        k,
                        RegistryCredential {
                            address,
                            username,
                            password,
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>();
            m.modules = modules;
            m.telemetry = TelemetrySettings {
                interval_seconds: interval,
                outbox_max_bytes: cap,
                ttl_seconds: ttl,
            };
            m
        })
}

fn fleet_key() -> FleetSigningKey {
    FleetSigningKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").expect("test key")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn a_signed_manifest_verifies_to_the_same_manifest(m in manifest()) {
        let key = fleet_key();
        let wire = key.sign(&m);
        prop_assert_eq!(key.public_key().verify(&wire), Ok(m));
    }

    #[test]
    fn any_single_byte_change_fails_verification(
        m in manifest(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let key = fleet_key();
        let mut wire = key.sign(&m);
        let i = at.index(wire.len());
        prop_assume!(wire[i] != byte);
        wire[i] = byte;
        prop_assert!(key.public_key().verify(&wire).is_err());
    }

    #[test]
    fn the_same_manifest_always_serializes_to_the_same_bytes(m in manifest()) {
        let key = fleet_key();
        let wire = key.sign(&m);
        prop_assert_eq!(&key.sign(&m.clone()), &wire);
        let again = key.public_key().verify(&wire).expect("verifies");
        prop_assert_eq!(key.sign(&again), wire);
    }
}

#[test]
fn an_unknown_schema_version_is_refused_as_invalid_and_named() {
    let key = fleet_key();
    let mut value = serde_json::to_value(Manifest::new("gw-01", 1)).expect("value");
    // Version 1 (modules as one struct with a `kind` flag) and a future version alike.
    for old_or_new in ["1", "3"] {
        value["schemaVersion"] = json!(old_or_new);
        let err = key
            .public_key()
            .verify(&key.sign_value(value.clone()))
            .unwrap_err();
        assert_eq!(
            err,
            ManifestError::UnknownSchemaVersion {
                found: old_or_new.into()
            }
        );
        assert_eq!(err.status(), ApplyStatus::Invalid);
        assert!(err.to_string().contains(old_or_new), "{err}");
        assert!(
            err.to_string().contains("\"2\""),
            "names the one it reads: {err}"
        );
    }
}

#[test]
fn a_missing_field_is_refused_with_its_name() {
    let key = fleet_key();
    let mut value = serde_json::to_value(Manifest::new("gw-01", 1)).expect("value");
    value.as_object_mut().expect("object").remove("deviceId");
    let err = key.public_key().verify(&key.sign_value(value)).unwrap_err();
    assert_eq!(
        err,
        ManifestError::MissingField {
            field: "deviceId".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "manifest is missing required field `deviceId`"
    );
    assert_eq!(err.status(), ApplyStatus::Invalid);
}

#[test]
fn a_changed_manifest_is_refused_as_a_bad_signature() {
    let key = fleet_key();
    let wire = String::from_utf8(key.sign(&Manifest::new("gw-01", 7))).expect("utf-8");
    let tampered = wire.replace("\"version\":7", "\"version\":8");
    assert_ne!(tampered, wire);
    let err = key.public_key().verify(tampered.as_bytes()).unwrap_err();
    assert!(matches!(err, ManifestError::BadSignature { .. }), "{err}");
    assert_eq!(err.status(), ApplyStatus::SignatureInvalid);
    assert_eq!(u16::from(err.status()), 412);
}

fn envelope(wire: &[u8]) -> serde_json::Value {
    serde_json::from_slice(wire).expect("envelope")
}

fn refused_as_bad_signature(value: &serde_json::Value) -> bool {
    let wire = serde_json::to_vec(value).expect("json");
    matches!(
        fleet_key().public_key().verify(&wire),
        Err(ManifestError::BadSignature { .. })
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn every_manifest_of_a_batch_verifies_alone(batch in prop::collection::vec(manifest(), 1..12)) {
        let key = fleet_key();
        let wires = key.sign_batch(batch.iter().map(CanonicalManifest::new).collect());
        prop_assert_eq!(wires.len(), batch.len());
        for (wire, m) in wires.iter().zip(&batch) {
            prop_assert_eq!(key.public_key().verify(wire), Ok(m.clone()));
            let parsed: serde_json::Value = serde_json::from_slice(wire).expect("json");
            prop_assert_eq!(&canonical_json(&parsed), wire, "the wire form is canonical");
        }
    }
}

#[test]
fn a_manifest_under_another_manifests_path_is_refused() {
    let key = fleet_key();
    let batch: Vec<Manifest> = (0..5)
        .map(|i| Manifest::new(format!("gw-{i}"), 1))
        .collect();
    let wires = key.sign_batch(batch.iter().map(CanonicalManifest::new).collect());
    let (first, second) = (envelope(&wires[0]), envelope(&wires[1]));
    assert_eq!(first["signature"]["value"], second["signature"]["value"]);

    let mut swapped = first.clone();
    swapped["manifest"] = second["manifest"].clone();
    assert!(refused_as_bad_signature(&swapped));

    // The same sibling on the other side leads to another root.
    let mut flipped = first.clone();
    let step = flipped["signature"]["path"][0]
        .as_object_mut()
        .expect("step")
        .remove("right")
        .expect("the first leaf's sibling is on its right");
    flipped["signature"]["path"][0] = json!({ "left": step });
    assert!(refused_as_bad_signature(&flipped));

    let mut truncated = first.clone();
    truncated["signature"]["path"]
        .as_array_mut()
        .expect("path")
        .pop();
    assert!(refused_as_bad_signature(&truncated));

    let mut not_a_hash = first;
    not_a_hash["signature"]["path"][0] = json!({ "right": "c2hvcnQ=" });
    assert!(refused_as_bad_signature(&not_a_hash));
}

#[test]
fn an_envelope_of_another_signature_algorithm_is_refused_by_name() {
    let key = fleet_key();
    let mut old = envelope(&key.sign(&Manifest::new("gw-01", 1)));
    old["signature"]["algorithm"] = json!("ed25519");
    old["signature"]
        .as_object_mut()
        .expect("signature")
        .remove("path");
    let wire = serde_json::to_vec(&old).expect("json");
    let err = key.public_key().verify(&wire).unwrap_err();
    assert_eq!(err, ManifestError::UnsupportedAlgorithm("ed25519".into()));
    assert!(err.to_string().contains("ed25519-sha256-tree"), "{err}");
    assert_eq!(err.status(), ApplyStatus::SignatureInvalid);
}

#[test]
fn a_manifest_signed_by_another_fleet_names_both_keys() {
    let other = FleetSigningKey::generate();
    let wire = other.sign(&Manifest::new("gw-01", 1));
    let err = fleet_key().public_key().verify(&wire).unwrap_err();
    assert_eq!(
        err,
        ManifestError::UnknownKey {
            found: other.public_key().key_id(),
            expected: fleet_key().public_key().key_id(),
        }
    );
    assert_eq!(err.status(), ApplyStatus::SignatureInvalid);
}

#[test]
fn garbage_is_refused_as_malformed() {
    let err = fleet_key().public_key().verify(b"not json").unwrap_err();
    assert!(matches!(err, ManifestError::Malformed(_)), "{err}");
}

#[test]
fn the_wire_form_is_canonical_json() {
    let wire = fleet_key().sign(&Manifest::new("gw-01", 1));
    let text = String::from_utf8(wire).expect("utf-8");
    assert!(
        text.starts_with("{\"manifest\":{\"deviceId\":\"gw-01\",\"modules\":{},"),
        "{text}"
    );
    assert!(!text.contains(' ') && !text.contains('\n'));
}

#[test]
fn keys_round_trip_through_base64() {
    let key = FleetSigningKey::generate();
    let again = FleetSigningKey::from_base64(&key.to_base64()).expect("seed");
    assert_eq!(again.public_key(), key.public_key());
    let public: edgefleet_common::signing::FleetPublicKey =
        key.public_key().to_string().parse().expect("public key");
    assert_eq!(public, key.public_key());
    assert!(
        "short"
            .parse::<edgefleet_common::signing::FleetPublicKey>()
            .is_err()
    );
}

/// Found by `scripts/fuzz manifest` (fuzz/regressions/manifest/ keeps the input): serde_json's
/// default float parsing is not correctly rounded, so a number in a container's createOptions
/// such as 550555555555555555555550 (beyond u64, read as a float) came back on the device as a
/// neighbouring float, its canonical bytes differed from what the fleet signed, and the device
/// refused the fleet's own manifest. The workspace turns on serde_json's `float_roundtrip`.
#[test]
fn a_manifest_holding_a_float_the_fleet_wrote_verifies_on_the_device() {
    let text = r#"{"schemaVersion": "2", "deviceId": "gw-01", "version": 1, "modules": {
        "sensor": {"kind": "container", "image": "127.0.0.1:5000/sensor@sha256:0000000000000000000000000000000000000000000000000000000000000000",
                   "createOptions": {"HostConfig": {"NanoCpus": 550555555555555555555550, "Ratio": 0.30000000000000004}}}}}"#;
    let m: Manifest = serde_json::from_str(text).expect("manifest");
    let key = fleet_key();
    assert_eq!(key.public_key().verify(&key.sign(&m)), Ok(m));
    let value: serde_json::Value =
        serde_json::from_str("550555555555555555555550").expect("number");
    let canonical = edgefleet_common::signing::canonical_json(&value);
    let reread: serde_json::Value = serde_json::from_slice(&canonical).expect("canonical");
    assert_eq!(
        edgefleet_common::signing::canonical_json(&reread),
        canonical
    );
}
