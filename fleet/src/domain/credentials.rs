//! Rotating a device's MQTT password (`edgefleet device rotate-credentials`). The order keeps
//! the device able to connect at every step:
//!
//! 1. The fleet makes a new password, seals it to the device's key into the device's next
//!    manifest (published retained, as registry passwords travel) and keeps the rotation
//!    (`MqttRotation`). The broker still accepts only the old password.
//! 2. The agent verifies the manifest, keeps the new password in its store, and reports the
//!    manifest's version; it stays connected with the old password.
//! 3. Seeing that report, the fleet sets the new password at the broker (mosquitto's dynamic
//!    security then disconnects the device) and makes it the device's password of record.
//! 4. The agent reconnects with the newest password it holds, falling back to the configured
//!    one when the broker refuses it (a rotation not completed yet).

use std::collections::BTreeSet;
use std::time::Duration;

use edgefleet_common::fleet_api::CredentialsRotation;
use edgefleet_common::reported::{ApplyStatus, ReportedState};
use edgefleet_common::sealing::DevicePublicKey;
use edgefleet_transport::now_ms;

use super::{Affected, Fleet};
use crate::error::FleetError;
use crate::records::{DeviceStatus, MqttRotation, RenderedManifest};
use crate::store::{Batch, kind};

/// How often pending rotations are checked against what devices reported.
pub const ROTATIONS_EVERY: Duration = Duration::from_secs(1);

impl Fleet {
    /// Starts giving device `id` a new MQTT password (see the module's documentation).
    /// A rotation already under way is replaced by this one.
    pub async fn rotate_credentials(&self, id: &str) -> Result<CredentialsRotation, FleetError> {
        let _writes = self.store.lock_writes().await?;
        let mut device = self.device_record(id).await?;
        let password = hex::encode(rand::random::<[u8; 18]>());
        let key: DevicePublicKey = device
            .public_key
            .parse()
            .map_err(|e| FleetError::invalid(format!("device {id:?}: {e}")))?;
        device.mqtt_password_for_device = Some(key.seal(&password)?);
        // The sealed copy is new, so the content changes and the version is the next one.
        let previous: Option<RenderedManifest> = self.store.get(kind::MANIFEST, id).await?;
        let manifest_version = previous.map_or(1, |p| p.version + 1);
        let rotation = MqttRotation {
            device_id: id.to_owned(),
            password: self.secrets.public_key().seal(&password)?,
            manifest_version,
            started_ms: now_ms(),
        };
        let mut batch = Batch::default();
        batch.put(kind::DEVICE, id, &device)?;
        batch.put(kind::MQTT_ROTATION, id, &rotation)?;
        self.commit_and_render(batch, Affected::Devices(BTreeSet::from([id.to_owned()])))
            .await?;
        tracing::info!(
            device = id,
            manifest_version,
            "new MQTT password sent to the device; the broker switches once the device reports it"
        );
        Ok(CredentialsRotation {
            device: id.to_owned(),
            manifest_version,
            broker_managed: self.logins.managed(),
        })
    }

    /// Completes the rotations whose device reported the manifest carrying the new password.
    pub async fn complete_rotations(&self) -> Result<(), FleetError> {
        let rotations: Vec<(String, MqttRotation)> = self.store.list(kind::MQTT_ROTATION).await?;
        for (id, rotation) in rotations {
            let status: Option<DeviceStatus> = self.store.get(kind::STATUS, &id).await?;
            let reported = status.and_then(|s| s.reported);
            if reported.is_some_and(|r| has_manifest(&r, rotation.manifest_version)) {
                self.complete_rotation(&id, &rotation).await?;
            }
        }
        Ok(())
    }

    async fn complete_rotation(&self, id: &str, rotation: &MqttRotation) -> Result<(), FleetError> {
        let _writes = self.store.lock_writes().await?;
        // Replaced or completed meanwhile (another replica, a newer rotation).
        let current: Option<MqttRotation> = self.store.get(kind::MQTT_ROTATION, id).await?;
        if current.as_ref() != Some(rotation) {
            return Ok(());
        }
        let mut batch = Batch::default();
        batch.delete(kind::MQTT_ROTATION, id);
        let Ok(mut device) = self.device_record(id).await else {
            return Ok(self.store.commit(batch).await?);
        };
        let password = self.secrets.unseal(&rotation.password)?;
        let broker_changed = self.logins.set_password(id, &password).await?;
        device.mqtt_password = rotation.password.clone();
        batch.put(kind::DEVICE, id, &device)?;
        self.store.commit(batch).await?;
        tracing::info!(
            device = id,
            broker_changed,
            "the device has its new MQTT password; the broker accepts only that one now"
        );
        Ok(())
    }
}

/// Whether `reported` shows the device verified and kept manifest `version` (or a later one):
/// applied, or refused only for what its modules did.
fn has_manifest(reported: &ReportedState, version: u64) -> bool {
    reported.applied_version.is_some_and(|v| v >= version)
        || reported.last_desired.as_ref().is_some_and(|o| {
            o.version.is_some_and(|v| v >= version)
                && matches!(
                    o.status,
                    ApplyStatus::Applied | ApplyStatus::ActivationFailed
                )
        })
}

#[cfg(test)]
mod tests {
    use edgefleet_common::reported::{DesiredOutcome, REPORTED_SCHEMA_VERSION};

    use super::*;

    fn reported(applied: Option<u64>, last: Option<(u64, ApplyStatus)>) -> ReportedState {
        ReportedState {
            schema_version: REPORTED_SCHEMA_VERSION.into(),
            device_id: "d".into(),
            agent_version: "0".into(),
            applied_version: applied,
            last_desired: last.map(|(version, status)| DesiredOutcome {
                version: Some(version),
                status,
                message: String::new(),
                source: Default::default(),
            }),
            modules: Default::default(),
            outbox: Default::default(),
            reported_at_ms: 0,
            fleet_silent_since_ms: None,
        }
    }

    #[test]
    fn a_rotation_completes_only_once_the_device_kept_the_manifest_carrying_the_password() {
        assert!(!has_manifest(&reported(Some(3), None), 4));
        assert!(has_manifest(&reported(Some(4), None), 4));
        assert!(has_manifest(&reported(Some(5), None), 4));
        assert!(has_manifest(
            &reported(Some(3), Some((4, ApplyStatus::ActivationFailed))),
            4
        ));
        // A manifest refused before it was kept did not deliver the password.
        for refused in [
            ApplyStatus::SignatureInvalid,
            ApplyStatus::Invalid,
            ApplyStatus::AgentError,
        ] {
            assert!(!has_manifest(&reported(Some(3), Some((4, refused))), 4));
        }
    }
}
