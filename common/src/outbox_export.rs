//! Bringing a device's data back without a link: `edgefleet-agent outbox export FILE` writes
//! what the fleet has not acknowledged, `edgefleet telemetry import FILE` stores it (with the
//! usual deduplication by device and `seq`) and writes a [`SignedReceipt`], and
//! `edgefleet-agent outbox trim --receipt FILE` drops what the receipt confirms.
//!
//! An export is JSON Lines: an [`ExportHeader`] line, one line per record (its
//! [`TelemetryEnvelope`](crate::telemetry::TelemetryEnvelope), as the outbox holds it), and an
//! [`ExportEnd`] line (`{"end": ...}`) with the SHA-256 of every line before it, so a
//! truncated or damaged file is refused. Receipts are signed with the fleet key that signs
//! manifests, which every device already trusts, under their own context, so a receipt can
//! never be taken for a manifest nor the other way round.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use crate::UnixMillis;
use crate::reported::ReportedState;
use crate::signing::{FleetPublicKey, FleetSigningKey, canonical_json};

/// The value of [`ExportHeader::format`] this version writes and reads.
pub const EXPORT_FORMAT: &str = "edgefleet-outbox/1";

/// What the fleet key signs before a receipt's canonical JSON.
pub const RECEIPT_SIGNATURE_CONTEXT: &[u8] = b"edgefleet telemetry receipt v1\n";

/// The first line of an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportHeader {
    pub format: String,
    pub fleet: String,
    pub device_id: String,
    pub exported_at_ms: UnixMillis,
    /// The device incarnation whose `seq`s the records carry (absent in exports of agents
    /// that predate incarnations: the fleet takes the device's current one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<String>,
    /// The device's reported state when it exported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported: Option<ReportedState>,
}

/// The last line of an export, as `{"end": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportEnd {
    pub records: u64,
    /// `sha256:<hex>` of every byte before this line.
    pub sha256: String,
}

/// The fleet's word that it stored a device's records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TelemetryReceipt {
    pub fleet: String,
    pub device_id: String,
    /// Records in the imported file, and how many of them the fleet did not have yet.
    pub records: u64,
    pub new_records: u64,
    /// Every record up to this `seq` is stored: the device may forget them.
    pub committed_seq: u64,
    /// The incarnation `committed_seq` counts in (a device trims nothing by a receipt for
    /// another incarnation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<String>,
    pub imported_at_ms: UnixMillis,
}

/// A receipt with the fleet's signature (base64 ed25519 over [`RECEIPT_SIGNATURE_CONTEXT`]
/// and the receipt's canonical JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignedReceipt {
    pub receipt: TelemetryReceipt,
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the receipt's signature does not verify against the fleet key {key_id} (a receipt of another fleet, or altered)"
)]
pub struct ReceiptSignatureError {
    pub key_id: String,
}

fn signed_bytes(receipt: &TelemetryReceipt) -> Vec<u8> {
    let value = serde_json::to_value(receipt).unwrap_or_default();
    [RECEIPT_SIGNATURE_CONTEXT, &canonical_json(&value)].concat()
}

impl SignedReceipt {
    pub fn sign(receipt: TelemetryReceipt, key: &FleetSigningKey) -> Self {
        let signature = BASE64.encode(key.sign_bytes(&signed_bytes(&receipt)));
        Self { receipt, signature }
    }

    /// The receipt, once its signature verifies against `key`.
    pub fn verify(&self, key: &FleetPublicKey) -> Result<&TelemetryReceipt, ReceiptSignatureError> {
        let fail = || ReceiptSignatureError {
            key_id: key.key_id(),
        };
        let signature = BASE64.decode(&self.signature).map_err(|_| fail())?;
        if !key.signed(&signed_bytes(&self.receipt), &signature) {
            return Err(fail());
        }
        Ok(&self.receipt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt() -> TelemetryReceipt {
        TelemetryReceipt {
            fleet: "plant".into(),
            device_id: "gw-1".into(),
            records: 10,
            new_records: 7,
            committed_seq: 42,
            incarnation: Some("0f".into()),
            imported_at_ms: 1,
        }
    }

    #[test]
    fn a_receipt_verifies_only_against_its_fleet_key_and_unaltered() {
        let key = FleetSigningKey::generate();
        let signed = SignedReceipt::sign(receipt(), &key);
        assert_eq!(signed.verify(&key.public_key()), Ok(&receipt()));
        let other = FleetSigningKey::generate().public_key();
        assert!(signed.verify(&other).is_err());
        let mut altered = signed.clone();
        altered.receipt.committed_seq = 1_000;
        assert!(altered.verify(&key.public_key()).is_err());
    }
}
