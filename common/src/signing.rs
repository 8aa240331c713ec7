//! Manifest signing: ed25519 over the manifest's canonical serialization.
//!
//! Canonical form: JSON with object keys sorted by their UTF-8 bytes, no insignificant
//! whitespace, strings and numbers as serde_json writes them (the JCS subset for the integers
//! and strings a manifest holds). It is written by our own small writer rather than relying on
//! serde_json's map order, which a feature flag anywhere in a build can change.
//!
//! The wire form is a [`SignedManifest`] envelope, itself written canonically:
//! `{"manifest":{...},"signature":{"algorithm":"ed25519","keyId":"...","value":"<base64>"}}`.
//! Verification checks the signature over the manifest exactly as received, before the
//! manifest is interpreted, so nothing unsigned is ever acted upon.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::manifest::{MANIFEST_SCHEMA_VERSION, Manifest};
use crate::reported::ApplyStatus;

pub const SIGNATURE_ALGORITHM: &str = "ed25519";

/// The envelope published on a device's desired topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignedManifest {
    pub manifest: Value,
    pub signature: ManifestSignature,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManifestSignature {
    pub algorithm: String,
    /// Which fleet key signed: [`FleetPublicKey::key_id`].
    pub key_id: String,
    /// The 64-byte ed25519 signature, base64.
    pub value: String,
}

/// Why a manifest was refused. Each variant maps to the status code the device reports.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("manifest is not a signed manifest envelope: {0}")]
    Malformed(String),
    #[error(
        "manifest schemaVersion {found:?} is not supported (this agent reads {MANIFEST_SCHEMA_VERSION:?}); upgrade the agent or render for this schema"
    )]
    UnknownSchemaVersion { found: String },
    #[error("manifest is missing required field `{field}`")]
    MissingField { field: String },
    #[error("manifest is invalid: {0}")]
    Invalid(String),
    #[error(
        "manifest signature is not valid for fleet key {key_id}: the manifest was changed after signing or signed by another key"
    )]
    BadSignature { key_id: String },
    #[error(
        "manifest was signed by key {found}, but this device trusts fleet key {expected}; check fleetPublicKey in the agent config"
    )]
    UnknownKey { found: String, expected: String },
    #[error("manifest signature algorithm {0:?} is not supported (expected \"ed25519\")")]
    UnsupportedAlgorithm(String),
}

impl ManifestError {
    /// The status code a device reports for this refusal.
    pub fn status(&self) -> ApplyStatus {
        match self {
            Self::BadSignature { .. } | Self::UnknownKey { .. } | Self::UnsupportedAlgorithm(_) => {
                ApplyStatus::SignatureInvalid
            }
            _ => ApplyStatus::Invalid,
        }
    }
}

/// The fleet's private signing key. `Debug` never prints it.
pub struct FleetSigningKey(SigningKey);

impl fmt::Debug for FleetSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FleetSigningKey(public: {})", self.public_key())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid {what}: {reason} (expected 32 bytes, base64)")]
pub struct KeyParseError {
    what: &'static str,
    reason: String,
}

fn decode_key(what: &'static str, s: &str) -> Result<[u8; 32], KeyParseError> {
    let bytes = BASE64.decode(s.trim()).map_err(|e| KeyParseError {
        what,
        reason: e.to_string(),
    })?;
    bytes.try_into().map_err(|b: Vec<u8>| KeyParseError {
        what,
        reason: format!("{} bytes", b.len()),
    })
}

impl FleetSigningKey {
    pub fn generate() -> Self {
        Self(SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// The 32-byte seed, base64: the form the fleet keeps in its 0600 key file.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0.to_bytes())
    }

    pub fn from_base64(s: &str) -> Result<Self, KeyParseError> {
        Ok(Self(SigningKey::from_bytes(&decode_key(
            "fleet signing key",
            s,
        )?)))
    }

    pub fn public_key(&self) -> FleetPublicKey {
        FleetPublicKey(self.0.verifying_key())
    }

    /// Signs `manifest` and returns the wire bytes of its [`SignedManifest`] envelope.
    pub fn sign(&self, manifest: &Manifest) -> Vec<u8> {
        // A Manifest holds only strings, integers, booleans, maps and lists: it always
        // converts to a JSON value.
        let value = serde_json::to_value(manifest).unwrap_or(Value::Null);
        self.sign_value(value)
    }

    /// Signs any JSON value as a manifest. The fleet signs typed manifests with [`Self::sign`];
    /// this exists so tests can sign deliberately broken manifests.
    pub fn sign_value(&self, manifest: Value) -> Vec<u8> {
        let signature = self.0.sign(&canonical_json(&manifest));
        let envelope = SignedManifest {
            manifest,
            signature: ManifestSignature {
                algorithm: SIGNATURE_ALGORITHM.to_owned(),
                key_id: self.public_key().key_id(),
                value: BASE64.encode(signature.to_bytes()),
            },
        };
        canonical_json(&serde_json::to_value(envelope).unwrap_or(Value::Null))
    }
}

/// The fleet's public key, as configured on every device (base64 of 32 bytes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FleetPublicKey(VerifyingKey);

impl fmt::Debug for FleetPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FleetPublicKey({})", self.key_id())
    }
}

impl fmt::Display for FleetPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE64.encode(self.0.as_bytes()))
    }
}

impl FromStr for FleetPublicKey {
    type Err = KeyParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = decode_key("fleet public key", s)?;
        VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|e| KeyParseError {
                what: "fleet public key",
                reason: e.to_string(),
            })
    }
}

impl FleetPublicKey {
    /// A short, stable name for the key: hex of its first 8 bytes.
    pub fn key_id(&self) -> String {
        self.0.as_bytes()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Checks a signed manifest's envelope, schema version and signature, then reads it.
    /// Nothing in the manifest is interpreted before its signature has been checked, except
    /// `schemaVersion`, which decides how the rest would be read.
    pub fn verify(&self, wire: &[u8]) -> Result<Manifest, ManifestError> {
        let envelope: SignedManifest =
            serde_json::from_slice(wire).map_err(|e| ManifestError::Malformed(e.to_string()))?;

        match envelope.manifest.get("schemaVersion") {
            None => {
                return Err(ManifestError::MissingField {
                    field: "schemaVersion".to_owned(),
                });
            }
            Some(Value::String(v)) if v == MANIFEST_SCHEMA_VERSION => {}
            Some(other) => {
                return Err(ManifestError::UnknownSchemaVersion {
                    found: match other {
                        Value::String(s) => s.clone(),
                        v => v.to_string(),
                    },
                });
            }
        }

        let signature = &envelope.signature;
        if signature.algorithm != SIGNATURE_ALGORITHM {
            return Err(ManifestError::UnsupportedAlgorithm(
                signature.algorithm.clone(),
            ));
        }
        if signature.key_id != self.key_id() {
            return Err(ManifestError::UnknownKey {
                found: signature.key_id.clone(),
                expected: self.key_id(),
            });
        }
        let bad_signature = || ManifestError::BadSignature {
            key_id: self.key_id(),
        };
        let bytes: [u8; 64] = BASE64
            .decode(&signature.value)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(bad_signature)?;
        self.0
            .verify(
                &canonical_json(&envelope.manifest),
                &ed25519_dalek::Signature::from_bytes(&bytes),
            )
            .map_err(|_| bad_signature())?;

        parse_manifest(envelope.manifest)
    }
}

/// Reads a manifest whose signature has been checked, naming a missing field distinctly.
fn parse_manifest(value: Value) -> Result<Manifest, ManifestError> {
    serde_json::from_value(value).map_err(|e| {
        let message = e.to_string();
        match message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
        {
            Some(field) => ManifestError::MissingField {
                field: field.to_owned(),
            },
            None => ManifestError::Invalid(message),
        }
    })
}

/// The canonical bytes of a JSON value: sorted keys, no whitespace.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(&Value::String(key.clone()), out);
                out.push(b':');
                write_canonical(item, out);
            }
            out.push(b'}');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(value: &Value, out: &mut Vec<u8>) {
    // Writing a scalar JSON value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}
