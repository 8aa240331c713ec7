//! The agent's readers of bytes that come from outside the process, reachable from one place
//! so the fuzz targets (`fuzz/`, crate `edgefleet-fuzz`) feed them exactly what the agent
//! reads: an offline bundle file, the outbox journal file after a crash, and an OCI image
//! manifest or index from a registry or a bundle. Each returns what the agent would go on
//! with, or the error the operator would read; none of them may panic, whatever the bytes.

use std::io;
use std::path::Path;

use edgefleet_common::manifest::Manifest;
use edgefleet_common::signing::FleetPublicKey;

use crate::images::registry::{ManifestDocument, parse_manifest, platform_entry};
use crate::offline::bundle_import;
use crate::telemetry::outbox::journal::Journal;
use crate::telemetry::outbox::record;

/// Checks the bundle file at `path` for `device_id` as `edgefleet-agent bundle import` does
/// before anything changes on the device; the manifest it would apply, or why not.
pub fn verify_bundle(
    path: &Path,
    fleet_key: &FleetPublicKey,
    device_id: &str,
    applied: Option<u64>,
) -> Result<Manifest, String> {
    bundle_import::verify(path, fleet_key, device_id, applied)
        .map(|bundle| bundle.manifest)
        .map_err(|e| e.to_string())
}

/// One record recovered from the journal: its `seq`, acceptance time and payload, with the
/// module name and JSON the payload frames (`None` when it does not frame one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredRecord {
    pub seq: u64,
    pub accepted_ms: u64,
    pub payload: Vec<u8>,
    pub framed: Option<(String, Vec<u8>)>,
}

/// The records the agent puts back into its store at start from the journal at `path`.
pub fn recover_journal(path: &Path, from_seq: u64) -> io::Result<Vec<RecoveredRecord>> {
    Ok(Journal::recover(path, from_seq)?
        .into_iter()
        .map(|r| RecoveredRecord {
            framed: record::unframe(&r.payload).map(|(m, j)| (m.to_owned(), j.to_vec())),
            seq: r.seq,
            accepted_ms: r.accepted_ms,
            payload: r.payload,
        })
        .collect())
}

/// An OCI document as the puller and the bundle import read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OciDocument {
    /// An image manifest: the digests of its config and layers.
    Image { config: String, layers: Vec<String> },
    /// An index: the digest of the entry this machine would pull.
    Index { chosen: String },
}

/// Reads an image manifest or index the way a pull does.
pub fn read_oci_document(raw: &[u8]) -> Result<OciDocument, String> {
    match parse_manifest(raw).map_err(|e| e.to_string())? {
        ManifestDocument::Image(m) => Ok(OciDocument::Image {
            config: m.config.digest.clone(),
            layers: m.layers.iter().map(|l| l.digest.clone()).collect(),
        }),
        ManifestDocument::Index(index) => Ok(OciDocument::Index {
            chosen: platform_entry(&index)
                .map_err(|e| e.to_string())?
                .digest
                .clone(),
        }),
    }
}
