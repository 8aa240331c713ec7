//! Fuzz targets: one function per parser of bytes from outside the process, each feeding the
//! bytes to the parser the way the program does and checking what is cheap to check (a parse,
//! written back and parsed again, gives the same value). A target must never panic; a parser
//! refusing the bytes with an error is the expected outcome for almost every input.
//!
//! Two callers: the libFuzzer harness (`harness/main.rs`, built by `scripts/fuzz` with
//! coverage instrumentation) runs one target picked by name, and `cargo test` (`tests/replay.rs`)
//! replays every committed corpus file (`corpus/<target>/`) and every input that once crashed
//! (`regressions/<target>/`) through its target.
//!
//! A new parser gets a target by writing its function and adding one line to [`TARGETS`]
//! (and a directory of seed inputs under `corpus/`).

mod authenticity;
mod bundle;
mod condition;
mod config;
mod iotedge;
mod journal;
mod manifest;
mod oci;
mod scoring;
mod telemetry;

use edgefleet_common::signing::{FleetPublicKey, FleetSigningKey};

/// A fuzz target: its name (also its corpus directory) and its body.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

impl Target {
    pub const fn new(name: &'static str, run: fn(&[u8])) -> Self {
        Self { name, run }
    }
}

/// Every target, one line each. A new parser of outside bytes (the authenticated MQTT
/// envelopes, say) adds a line here, its function in a file of this crate, and seed inputs in
/// `corpus/<name>/` (`tests/seeds.rs` writes them); `scripts/fuzz list` reads the names here.
pub const TARGETS: &[Target] = &[
    Target::new("manifest_envelope", manifest::envelope),
    Target::new("manifest", manifest::manifest),
    Target::new("bundle_index", bundle::index),
    Target::new("bundle_import", bundle::import),
    Target::new("iotedge_import", iotedge::import),
    Target::new("scoring_body", scoring::body),
    Target::new("telemetry_message", telemetry::message),
    Target::new("outbox_export", telemetry::export),
    Target::new("outbox_receipt", telemetry::receipt),
    Target::new("outbox_journal", journal::recover),
    Target::new("agent_config", config::agent_config),
    Target::new("oci_manifest", oci::manifest),
    Target::new("condition", condition::parse),
    Target::new("device_message", authenticity::device_message),
    Target::new("fleet_message", authenticity::fleet_message),
];

/// The target named `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

pub use authenticity::{ACKS_TOPIC, DEVICE_TOPIC, device_identity, device_key};
pub use bundle::sealed as sealed_bundle;

/// The fleet key the signed seed inputs are signed with (a fixed seed, so committed corpus
/// files stay valid).
pub fn fleet_key() -> FleetSigningKey {
    // 32 bytes of 0x2a, base64.
    match FleetSigningKey::from_base64("KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=") {
        Ok(key) => key,
        Err(e) => panic!("the fixed fuzz key: {e}"),
    }
}

/// The public half of [`fleet_key`].
pub fn fleet_public_key() -> FleetPublicKey {
    fleet_key().public_key()
}

/// The device id the seed bundles and manifests are for.
pub const DEVICE: &str = "fuzz-device";
/// The fleet name the seed exports are for.
pub const FLEET: &str = "fuzz-fleet";

/// A file under a per-process temporary directory (`TMPDIR`), for parsers that read files.
fn scratch_file(name: &str) -> std::path::PathBuf {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("a temporary directory for fuzz inputs: {e}"),
    })
    .path()
    .join(name)
}

/// Writes `bytes` to the scratch file `name` and returns its path.
fn write_scratch(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = scratch_file(name);
    if let Err(e) = std::fs::write(&path, bytes) {
        panic!("writing {}: {e}", path.display());
    }
    path
}
