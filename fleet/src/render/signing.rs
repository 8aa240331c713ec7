//! Signing rendered manifests: one signature over a batch of drafts, a bounded number at a
//! time, each device's manifest carrying the path to the signed root.

use edgefleet_common::signing::FleetSigningKey;

use super::RenderError;
use super::device::Draft;
use crate::records::RenderedManifest;

/// New manifests are signed (and the service stores and publishes them) this many at a time:
/// a change that touches the whole fleet holds a bounded number of them in memory, and a path
/// to the signed root has at most 12 steps.
pub const SIGNING_BATCH: usize = 4096;

/// Signs drafts with one signature over the batch (see `edgefleet_common::signing`).
pub fn sign(
    drafts: Vec<Draft>,
    key: &FleetSigningKey,
) -> Result<Vec<RenderedManifest>, RenderError> {
    let mut manifests = Vec::with_capacity(drafts.len());
    let mut rendered = Vec::with_capacity(drafts.len());
    for draft in drafts {
        manifests.push(draft.manifest);
        rendered.push(RenderedManifest {
            device_id: draft.device_id,
            version: draft.version,
            fingerprint: draft.fingerprint,
            sources: draft.sources,
            sealed_passwords: draft.sealed_passwords,
            wire: String::new(),
        });
    }
    for (rendered, wire) in rendered.iter_mut().zip(key.sign_batch(manifests)) {
        rendered.wire = String::from_utf8(wire).map_err(|e| RenderError::Device {
            device: rendered.device_id.clone(),
            reason: format!("the signed manifest is not UTF-8: {e}"),
        })?;
    }
    Ok(rendered)
}
