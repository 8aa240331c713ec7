use super::*;

fn keys() -> (FleetSigningKey, DeviceIdentity, DeviceIdentity) {
    (
        FleetSigningKey::generate(),
        DeviceIdentity::generate(),
        DeviceIdentity::generate(),
    )
}

const TOPIC: &str = "edgefleet/plant/devices/a/telemetry/m";

#[test]
fn device_and_fleet_agree_on_the_device_key_and_nobody_else_does() {
    let (fleet, a, b) = keys();
    let on_device =
        DeviceMessageKey::for_device(&a, &fleet.public_key(), "plant", "a").expect("device side");
    let at_fleet =
        DeviceMessageKey::for_fleet(&fleet, &a.public_key(), "plant", "a").expect("fleet side");
    assert_eq!(on_device, at_fleet);
    let b_key = DeviceMessageKey::for_fleet(&fleet, &b.public_key(), "plant", "a").expect("b");
    assert_ne!(on_device, b_key, "another device's key");
    let renamed = DeviceMessageKey::for_fleet(&fleet, &a.public_key(), "plant", "b").expect("b");
    assert_ne!(on_device, renamed, "the same key under another device id");
    let other_fleet =
        DeviceMessageKey::for_device(&a, &fleet.public_key(), "other", "a").expect("other fleet");
    assert_ne!(on_device, other_fleet);
}

#[test]
fn a_sealed_device_message_opens_with_its_body_and_incarnation() {
    let (fleet, a, _) = keys();
    let key = DeviceMessageKey::for_device(&a, &fleet.public_key(), "plant", "a").expect("key");
    let body = br#"[{"seq":1,"x":"\u00e9"}]"#;
    let wire = key.seal(TOPIC, "0f", body);
    let opened = key.open(TOPIC, &wire).expect("opens");
    assert_eq!(opened.body, body);
    assert_eq!(opened.incarnation, "0f");
    let value: serde_json::Value = serde_json::from_slice(&wire).expect("the wire is JSON");
    assert_eq!(value["body"][0]["seq"], 1);
}

#[test]
fn another_device_topic_key_or_altered_byte_is_refused() {
    let (fleet, a, b) = keys();
    let a_key = DeviceMessageKey::for_device(&a, &fleet.public_key(), "plant", "a").expect("a");
    let b_key = DeviceMessageKey::for_device(&b, &fleet.public_key(), "plant", "b").expect("b");
    let wire = a_key.seal(TOPIC, "01", br#"{"seq":1}"#);
    let other_topic = "edgefleet/plant/devices/a/reported";
    assert_eq!(a_key.open(other_topic, &wire), Err(Refusal::BadMac));
    assert_eq!(b_key.open(TOPIC, &wire), Err(Refusal::BadMac));
    let forged = b_key.seal(TOPIC, "01", br#"{"seq":1}"#);
    assert_eq!(a_key.open(TOPIC, &forged), Err(Refusal::BadMac));
    let altered = String::from_utf8(wire.clone())
        .expect("utf8")
        .replace(r#""seq":1"#, r#""seq":2"#);
    assert_eq!(a_key.open(TOPIC, altered.as_bytes()), Err(Refusal::BadMac));
    let reincarnated = String::from_utf8(wire)
        .expect("utf8")
        .replace(r#""incarnation":"01""#, r#""incarnation":"02""#);
    assert_eq!(
        a_key.open(TOPIC, reincarnated.as_bytes()),
        Err(Refusal::BadMac)
    );
    for bad in [
        &b"{"[..],
        br#"{"seq":1}"#,
        b"",
        br#"{"body":1,"incarnation":"","mac":"!"}"#,
    ] {
        assert!(matches!(a_key.open(TOPIC, bad), Err(Refusal::Malformed(_))));
    }
}

#[test]
fn fleet_messages_verify_only_for_their_topic_and_key() {
    let (fleet, _, _) = keys();
    let other = FleetSigningKey::generate();
    let acks = "edgefleet/plant/devices/a/acks";
    let wire = fleet.sign_message(acks, br#"{"committedSeq":3}"#);
    assert_eq!(
        fleet.public_key().open_message(acks, &wire),
        Ok(&br#"{"committedSeq":3}"#[..])
    );
    assert!(matches!(
        fleet
            .public_key()
            .open_message("edgefleet/plant/devices/b/acks", &wire),
        Err(Refusal::BadSignature { .. })
    ));
    assert!(matches!(
        other.public_key().open_message(acks, &wire),
        Err(Refusal::UnknownKey { .. })
    ));
    let altered = String::from_utf8(wire)
        .expect("utf8")
        .replace("3}", "3000000}");
    assert!(matches!(
        fleet.public_key().open_message(acks, altered.as_bytes()),
        Err(Refusal::BadSignature { .. })
    ));
    assert!(matches!(
        fleet
            .public_key()
            .open_message(acks, br#"{"committedSeq":1000000000}"#),
        Err(Refusal::Malformed(_))
    ));
}

#[test]
fn incarnations_are_fresh() {
    let (a, b) = (new_incarnation(), new_incarnation());
    assert_eq!(a.len(), 32);
    assert_ne!(a, b);
}
