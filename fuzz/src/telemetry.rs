//! Telemetry as the fleet takes it in: MQTT telemetry messages, outbox exports brought on a
//! USB stick (`edgefleet telemetry import`), and the receipts the agent reads back
//! (`edgefleet-agent outbox trim --receipt`).

use std::sync::OnceLock;

use edgefleet_common::outbox_export::{ExportEnd, SignedReceipt};
use edgefleet_common::signing::FleetPublicKey;
use edgefleet_common::telemetry::{TelemetryEnvelope, message_envelopes, telemetry_message};
use sha2::{Digest as _, Sha256};

/// A telemetry message's payload, read as the fleet's MQTT session reads it: the envelopes'
/// JSON first, then each envelope; a message rebuilt from the envelopes reads the same.
pub fn message(data: &[u8]) {
    let Ok(envelopes) = message_envelopes(data) else {
        return;
    };
    for json in &envelopes {
        if let Ok(envelope) = serde_json::from_str::<TelemetryEnvelope>(json.get()) {
            let written = serde_json::to_vec(&envelope).unwrap_or_default();
            let reread = serde_json::from_slice::<TelemetryEnvelope>(&written);
            assert_eq!(
                reread.ok().as_ref(),
                Some(&envelope),
                "an envelope reads back different"
            );
        }
    }
    let rebuilt = telemetry_message(envelopes.iter().map(|e| e.get().as_bytes()));
    match message_envelopes(&rebuilt) {
        Ok(again) => assert_eq!(
            again.iter().map(|e| e.get()).collect::<Vec<_>>(),
            envelopes.iter().map(|e| e.get()).collect::<Vec<_>>()
        ),
        Err(e) => panic!("a rebuilt telemetry message does not read: {e}"),
    }
}

/// An outbox export, as the bytes are and with a correct end line added (so the fleet reads
/// past the checksum into the header and the records).
pub fn export(data: &[u8]) {
    check_export(data);
    let lines = data
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count() as u64;
    let mut sealed = data.to_vec();
    if !sealed.is_empty() && !sealed.ends_with(b"\n") {
        sealed.push(b'\n');
    }
    let end = ExportEnd {
        records: lines.saturating_sub(1),
        sha256: format!("sha256:{}", hex::encode(Sha256::digest(&sealed))),
    };
    let end = serde_json::json!({ "end": end });
    sealed.extend_from_slice(end.to_string().as_bytes());
    sealed.push(b'\n');
    check_export(&sealed);
}

fn check_export(data: &[u8]) {
    if let Ok((header, records)) = edgefleet_fleet::parsers::read_outbox_export(data, crate::FLEET)
    {
        assert_eq!(header.fleet, crate::FLEET);
        assert!(
            records
                .iter()
                .all(|(device, _)| *device == header.device_id)
        );
    }
}

/// A signed receipt: read, then checked against the fleet key.
pub fn receipt(data: &[u8]) {
    static KEY: OnceLock<FleetPublicKey> = OnceLock::new();
    let Ok(receipt) = serde_json::from_slice::<SignedReceipt>(data) else {
        return;
    };
    let written = serde_json::to_vec(&receipt).unwrap_or_default();
    let reread = serde_json::from_slice::<SignedReceipt>(&written);
    assert_eq!(
        reread.ok().as_ref(),
        Some(&receipt),
        "a receipt reads back different"
    );
    if let Ok(checked) = receipt.verify(KEY.get_or_init(crate::fleet_public_key)) {
        // Only the fleet key makes a signature that verifies: signing again gives the same one
        // (ed25519 signatures are deterministic).
        let again = SignedReceipt::sign(checked.clone(), &crate::fleet_key());
        assert_eq!(again.receipt, receipt.receipt);
    }
}
