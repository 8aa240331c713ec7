//! Rollout status of a deployment, from the manifests rendered for its devices and what the
//! devices reported.

use std::collections::BTreeMap;

use edgefleet_common::UnixMillis;
use edgefleet_common::fleet_api::{DeviceProgress, DeviceRollout, RolloutStatus};
use edgefleet_common::reported::ApplyStatus;

use crate::records::{DeviceStatus, RenderedManifest};

/// A device is stale when it has not been heard from for this long.
pub const STALE_AFTER_MS: u64 = 5 * 60 * 1000;

/// Whether a device was last heard from longer than [`STALE_AFTER_MS`] before `now_ms`.
pub fn is_stale(status: &DeviceStatus, now_ms: UnixMillis) -> bool {
    status
        .last_seen_ms
        .is_none_or(|seen| now_ms.saturating_sub(seen) > STALE_AFTER_MS)
}

/// The status of `deployment`: its devices are those whose manifest holds one of its modules.
pub fn status(
    deployment: &str,
    manifests: &[RenderedManifest],
    statuses: &BTreeMap<String, DeviceStatus>,
    now_ms: UnixMillis,
) -> RolloutStatus {
    let mut devices = Vec::new();
    for manifest in manifests
        .iter()
        .filter(|m| m.sources.values().any(|s| s.deployment == deployment))
    {
        let status = statuses.get(&manifest.device_id);
        let reported = status.and_then(|s| s.reported.as_ref());
        let outcome = reported.and_then(|r| r.last_desired.as_ref());
        let (state, message) = match outcome {
            Some(o) if o.version == Some(manifest.version) && o.status == ApplyStatus::Applied => {
                (DeviceRollout::Succeeded, Some(o.message.clone()))
            }
            Some(o) if o.version == Some(manifest.version) => {
                (DeviceRollout::Failed, Some(o.message.clone()))
            }
            // A manifest the device refused before reading its version (412): it is about
            // this manifest when the device has not applied it.
            Some(o)
                if o.version.is_none()
                    && reported.and_then(|r| r.applied_version) != Some(manifest.version) =>
            {
                (DeviceRollout::Failed, Some(o.message.clone()))
            }
            _ => (DeviceRollout::Pending, None),
        };
        let stale = status.is_none_or(|s| is_stale(s, now_ms));
        devices.push(DeviceProgress {
            device_id: manifest.device_id.clone(),
            manifest_version: manifest.version,
            state,
            stale,
            message,
        });
    }
    let count = |s: DeviceRollout| devices.iter().filter(|d| d.state == s).count();
    RolloutStatus {
        deployment: deployment.to_owned(),
        targeted: devices.len(),
        applied: count(DeviceRollout::Succeeded) + count(DeviceRollout::Failed),
        succeeded: count(DeviceRollout::Succeeded),
        failed: count(DeviceRollout::Failed),
        pending: count(DeviceRollout::Pending),
        stale: devices.iter().filter(|d| d.stale).count(),
        devices,
        staged: None,
    }
}
