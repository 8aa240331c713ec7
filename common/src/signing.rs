//! Manifest signing: ed25519 over a hash tree of manifests' canonical serializations.
//!
//! Canonical form: JSON with object keys sorted by their UTF-8 bytes, no insignificant
//! whitespace, strings and numbers as serde_json writes them (the JCS subset for the integers
//! and strings a manifest holds). It is written by our own small writer rather than relying on
//! serde_json's map order, which a feature flag anywhere in a build can change.
//!
//! The fleet renders manifests in batches (one deployment change can touch 100,000 devices)
//! and signs a batch once: each manifest's canonical bytes are a leaf of a SHA-256 hash tree
//! (leaf = H(0x00 || bytes), node = H(0x01 || left || right), an odd node out is carried up
//! unchanged), and ed25519 signs [`BATCH_SIGNATURE_CONTEXT`] followed by the 32-byte root.
//! Every manifest carries the sibling hashes from its leaf to the root, so a device checks its
//! own manifest alone: it hashes up the path and verifies the one signature. A batch of one is
//! a tree of one leaf with an empty path.
//!
//! The wire form is a [`SignedManifest`] envelope, itself written canonically:
//! `{"manifest":{...},"signature":{"algorithm":"ed25519-sha256-tree","keyId":"...","path":[{"left":"<base64>"},...],"value":"<base64>"}}`.
//! Verification checks the signature over the manifest exactly as received, before the
//! manifest is interpreted, so nothing unsigned is ever acted upon.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::manifest::{MANIFEST_SCHEMA_VERSION, Manifest};
use crate::reported::ApplyStatus;

pub const SIGNATURE_ALGORITHM: &str = "ed25519-sha256-tree";

/// What the fleet key signs before a batch's root hash, so that a signature over a root can
/// never be taken for a signature over anything else.
pub const BATCH_SIGNATURE_CONTEXT: &[u8] = b"edgefleet manifest batch v1\n";

/// The longest path accepted: a tree of 2^40 manifests.
const MAX_PATH_LEN: usize = 40;

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
    /// The sibling hashes from this manifest's leaf up to the signed root, leaf first.
    /// (Absent in envelopes of other algorithms, which are then refused by name.)
    #[serde(default)]
    pub path: Vec<PathStep>,
    /// The 64-byte ed25519 signature over the batch's root, base64.
    pub value: String,
}

/// One step up the hash tree: the sibling's hash (base64) and which side it is on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum PathStep {
    Left(String),
    Right(String),
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
    #[error(
        "manifest signature algorithm {0:?} is not supported (this agent verifies {SIGNATURE_ALGORITHM:?}); run a fleet service and agents of the same release"
    )]
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

    /// A plain ed25519 signature of `bytes`; callers put their own context first (as
    /// receipts do), so it cannot be taken for a manifest batch signature.
    pub fn sign_bytes(&self, bytes: &[u8]) -> [u8; 64] {
        self.0.sign(bytes).to_bytes()
    }

    pub fn public_key(&self) -> FleetPublicKey {
        FleetPublicKey(self.0.verifying_key())
    }

    /// The key's scalar as an X25519 secret: the fleet's half of each device's message key
    /// (`authenticity`), so devices need nothing but the fleet public key they already trust.
    pub(crate) fn x25519_secret(&self) -> [u8; 32] {
        self.0.to_scalar_bytes()
    }

    /// Signs `manifest` and returns the wire bytes of its [`SignedManifest`] envelope.
    pub fn sign(&self, manifest: &Manifest) -> Vec<u8> {
        self.sign_batch(vec![CanonicalManifest::new(manifest)])
            .pop()
            .unwrap_or_default()
    }

    /// Signs any JSON value as a manifest. The fleet signs typed manifests with [`Self::sign`];
    /// this exists so tests can sign deliberately broken manifests.
    pub fn sign_value(&self, manifest: Value) -> Vec<u8> {
        self.sign_batch(vec![CanonicalManifest::from_value(&manifest)])
            .pop()
            .unwrap_or_default()
    }

    /// Signs `manifests` with one signature over their hash tree and returns each one's wire
    /// bytes, in order.
    pub fn sign_batch(&self, manifests: Vec<CanonicalManifest>) -> Vec<Vec<u8>> {
        if manifests.is_empty() {
            return Vec::new();
        }
        let tree = HashTree::new(manifests.iter().map(|m| leaf_hash(m.bytes())).collect());
        let mut message = BATCH_SIGNATURE_CONTEXT.to_vec();
        message.extend_from_slice(&tree.root());
        let value = BASE64.encode(self.0.sign(&message).to_bytes());
        let key_id = self.public_key().key_id();
        manifests
            .into_iter()
            .enumerate()
            .map(|(i, manifest)| {
                // The rest of the envelope, written in canonical order (keys sorted, no
                // whitespace; base64 and hex need no escaping).
                let path = tree.path(i);
                let mut wire = manifest.wire;
                wire.reserve_exact(200 + 60 * path.len());
                wire.extend_from_slice(b",\"signature\":{\"algorithm\":\"");
                wire.extend_from_slice(SIGNATURE_ALGORITHM.as_bytes());
                wire.extend_from_slice(b"\",\"keyId\":\"");
                wire.extend_from_slice(key_id.as_bytes());
                wire.extend_from_slice(b"\",\"path\":[");
                for (n, step) in path.iter().enumerate() {
                    if n > 0 {
                        wire.push(b',');
                    }
                    let (side, hash) = match step {
                        PathStep::Left(hash) => ("left", hash),
                        PathStep::Right(hash) => ("right", hash),
                    };
                    wire.extend_from_slice(format!("{{\"{side}\":\"{hash}\"}}").as_bytes());
                }
                wire.extend_from_slice(b"],\"value\":\"");
                wire.extend_from_slice(value.as_bytes());
                wire.extend_from_slice(b"\"}}");
                wire
            })
            .collect()
    }
}

/// The start of the wire envelope; "manifest" sorts before "signature".
const ENVELOPE_START: &[u8] = b"{\"manifest\":";

/// A manifest in canonical form, ready for [`FleetSigningKey::sign_batch`]. It holds the start
/// of its wire envelope so that signing appends the signature in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalManifest {
    wire: Vec<u8>,
}

impl CanonicalManifest {
    pub fn new(manifest: &Manifest) -> Self {
        // A Manifest holds only strings, integers, booleans, maps and lists: it always
        // converts to a JSON value.
        Self::from_value(&serde_json::to_value(manifest).unwrap_or(Value::Null))
    }

    fn from_value(manifest: &Value) -> Self {
        let mut wire = Vec::with_capacity(2048);
        wire.extend_from_slice(ENVELOPE_START);
        write_canonical(manifest, &mut wire);
        Self { wire }
    }

    /// The canonical bytes the signature covers.
    pub fn bytes(&self) -> &[u8] {
        &self.wire[ENVELOPE_START.len()..]
    }
}

type Hash = [u8; 32];

fn leaf_hash(canonical_manifest: &[u8]) -> Hash {
    Sha256::new()
        .chain_update([0u8])
        .chain_update(canonical_manifest)
        .finalize()
        .into()
}

fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Sha256::new()
        .chain_update([1u8])
        .chain_update(left)
        .chain_update(right)
        .finalize()
        .into()
}

/// A batch's hash tree, level by level from the leaves up to the root.
struct HashTree {
    levels: Vec<Vec<Hash>>,
}

impl HashTree {
    fn new(leaves: Vec<Hash>) -> Self {
        let mut levels = vec![leaves];
        while let Some(level) = levels.last().filter(|l| l.len() > 1) {
            let up = level
                .chunks(2)
                .map(|pair| match pair {
                    [left, right] => node_hash(left, right),
                    // An odd node out is carried up unchanged.
                    _ => pair[0],
                })
                .collect();
            levels.push(up);
        }
        Self { levels }
    }

    fn root(&self) -> Hash {
        self.levels
            .last()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or_default()
    }

    /// The siblings of leaf `index` on its way to the root.
    fn path(&self, mut index: usize) -> Vec<PathStep> {
        let mut path = Vec::new();
        for level in &self.levels[..self.levels.len() - 1] {
            let sibling = index ^ 1;
            if let Some(hash) = level.get(sibling) {
                let hash = BASE64.encode(hash);
                path.push(if sibling < index {
                    PathStep::Left(hash)
                } else {
                    PathStep::Right(hash)
                });
            }
            index /= 2;
        }
        path
    }
}

/// The root a manifest's path leads to, or `None` when a step is not a 32-byte hash.
fn root_from_path(canonical_manifest: &[u8], path: &[PathStep]) -> Option<Hash> {
    path.iter()
        .try_fold(leaf_hash(canonical_manifest), |hash, step| {
            let sibling = |b64: &str| -> Option<Hash> { BASE64.decode(b64).ok()?.try_into().ok() };
            Some(match step {
                PathStep::Left(left) => node_hash(&sibling(left)?, &hash),
                PathStep::Right(right) => node_hash(&hash, &sibling(right)?),
            })
        })
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
    /// The key as an X25519 public point (the birational map of its Edwards point).
    pub(crate) fn x25519_public(&self) -> [u8; 32] {
        self.0.to_montgomery().to_bytes()
    }

    /// A short, stable name for the key: hex of its first 8 bytes.
    pub fn key_id(&self) -> String {
        self.0.as_bytes()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Whether `signature` is a plain ed25519 signature of `bytes` made by
    /// [`FleetSigningKey::sign_bytes`].
    pub fn signed(&self, bytes: &[u8], signature: &[u8]) -> bool {
        ed25519_dalek::Signature::from_slice(signature)
            .is_ok_and(|signature| self.0.verify(bytes, &signature).is_ok())
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
        if signature.path.len() > MAX_PATH_LEN {
            return Err(bad_signature());
        }
        let root = root_from_path(&canonical_json(&envelope.manifest), &signature.path)
            .ok_or_else(bad_signature)?;
        let mut message = BATCH_SIGNATURE_CONTEXT.to_vec();
        message.extend_from_slice(&root);
        self.0
            .verify(&message, &ed25519_dalek::Signature::from_bytes(&bytes))
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
                write_string(key, out);
                out.push(b':');
                write_canonical(item, out);
            }
            out.push(b'}');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn write_scalar(value: &Value, out: &mut Vec<u8>) {
    // Writing a scalar JSON value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}
