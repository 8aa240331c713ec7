//! Devices: their tags and keys, what they last reported, their agent configuration, and
//! commands to their modules (answered over MQTT).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use edgefleet_common::agent_config::AgentConfig;
use edgefleet_common::commands::{CommandOutcome, CommandRequest, CommandResult};
use edgefleet_common::fleet_api::{
    DeviceImport, DeviceRemoved, DeviceRequest, DeviceView, DevicesImported, ModuleCommandRequest,
};
use edgefleet_common::sealing::DevicePublicKey;
use edgefleet_common::topics::{DeviceTopics, check_name};
use edgefleet_transport::now_ms;

use super::{Affected, Fleet, Publication};
use crate::broker_logins::DeviceLogins;
use crate::error::FleetError;
use crate::records::{Device, DeviceStatus, MqttRotation, Registry, RenderedManifest};
use crate::render::{Catalog, Render, render_device};
use crate::rollouts::status::is_stale;
use crate::store::{Batch, kind};

/// How long removing a device waits for the broker to take its retraction.
const RETRACTION_WAIT: Duration = Duration::from_secs(10);

/// How long the service waits for a device to answer a command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

impl Fleet {
    pub async fn put_device(
        &self,
        id: &str,
        request: DeviceRequest,
    ) -> Result<DeviceView, FleetError> {
        let device = DeviceImport {
            id: id.to_owned(),
            tags: request.tags,
            public_key: request.public_key,
        };
        self.import_devices(vec![device]).await?;
        self.device(id).await
    }

    /// Adds or updates `devices` in one change: one transaction, one render of just them.
    /// Nothing changes when any of them is invalid; the error names it.
    pub async fn import_devices(
        &self,
        devices: Vec<DeviceImport>,
    ) -> Result<DevicesImported, FleetError> {
        if devices.is_empty() {
            return Err(FleetError::invalid(
                "no devices to import: give one JSON object per line",
            ));
        }
        let mut ids = BTreeSet::new();
        for device in &devices {
            check_name("device id", &device.id)?;
            device
                .public_key
                .parse::<DevicePublicKey>()
                .map_err(|e| FleetError::invalid(format!("device {:?}: {e}", device.id)))?;
            if !ids.insert(device.id.clone()) {
                return Err(FleetError::invalid(format!(
                    "device {:?} is given twice: give each device once",
                    device.id
                )));
            }
        }
        let _writes = self.store.lock_writes().await?;
        for id in &ids {
            self.device_keys.forget(id);
        }
        let affected = Affected::Devices(ids);
        let mut existing: BTreeMap<String, Device> =
            self.devices_of(&affected).await?.into_iter().collect();
        let mut batch = Batch::default();
        let mut new_logins = Vec::new();
        let updated = existing.len();
        for device in devices {
            // An update keeps the device's MQTT password and when it was added; a new key
            // drops the copy of the password sealed to the old one, and a rotation under way
            // (the device with the new key never got that password).
            let (mqtt_password, added_ms, for_device) = match existing.remove(&device.id) {
                Some(d) => {
                    let same_key = d.public_key == device.public_key;
                    if !same_key {
                        batch.delete(kind::MQTT_ROTATION, &device.id);
                    }
                    let for_device = d.mqtt_password_for_device.filter(|_| same_key);
                    (d.mqtt_password, d.added_ms, for_device)
                }
                None => {
                    let password = hex::encode(rand::random::<[u8; 18]>());
                    let sealed = self.secrets.public_key().seal(&password)?;
                    new_logins.push((device.id.clone(), password));
                    (sealed, now_ms(), None)
                }
            };
            let record = Device {
                tags: device.tags,
                public_key: device.public_key,
                added_ms,
                mqtt_password,
                mqtt_password_for_device: for_device,
                id: device.id,
            };
            batch.put(kind::DEVICE, &record.id, &record)?;
        }
        let added = new_logins.len();
        // The broker first: a device the API says was added can log in.
        self.logins.add(&new_logins).await?;
        let manifests_changed = self.commit_and_render(batch, affected).await?;
        Ok(DevicesImported {
            added,
            updated,
            manifests_changed,
        })
    }

    pub async fn devices(&self) -> Result<Vec<DeviceView>, FleetError> {
        let mut statuses: BTreeMap<String, DeviceStatus> =
            self.store.list(kind::STATUS).await?.into_iter().collect();
        let mut versions: BTreeMap<String, u64> = self
            .store
            .list::<RenderedManifest>(kind::MANIFEST)
            .await?
            .into_iter()
            .map(|(id, m)| (id, m.version))
            .collect();
        let mut rotations: BTreeMap<String, MqttRotation> = self
            .store
            .list(kind::MQTT_ROTATION)
            .await?
            .into_iter()
            .collect();
        Ok(self
            .store
            .list::<Device>(kind::DEVICE)
            .await?
            .into_iter()
            .map(|(id, d)| {
                let status = statuses.remove(&id).unwrap_or_default();
                let rotation = rotations.remove(&id).map(|r| r.manifest_version);
                view(d, status, versions.remove(&id), rotation)
            })
            .collect())
    }

    pub async fn device(&self, id: &str) -> Result<DeviceView, FleetError> {
        let device = self.device_record(id).await?;
        let status: DeviceStatus = self.store.get(kind::STATUS, id).await?.unwrap_or_default();
        let manifest: Option<RenderedManifest> = self.store.get(kind::MANIFEST, id).await?;
        let rotation: Option<MqttRotation> = self.store.get(kind::MQTT_ROTATION, id).await?;
        Ok(view(
            device,
            status,
            manifest.map(|m| m.version),
            rotation.map(|r| r.manifest_version),
        ))
    }

    pub(crate) async fn device_record(&self, id: &str) -> Result<Device, FleetError> {
        self.store.get(kind::DEVICE, id).await?.ok_or_else(|| {
            FleetError::not_found(format!(
                "device {id:?} is not in the fleet (see `edgefleet device list`)"
            ))
        })
    }

    /// Removes device `id`: an empty manifest (the next version, signed, retained) stops and
    /// removes its modules, its record and status go, and the broker refuses its login (the
    /// embedded broker, or mosquitto with dynamic security, which also disconnects it). The
    /// login goes once the broker has the retraction, so a connected device receives it first.
    /// The retraction stays stored, so a device added again under the same id gets versions
    /// above it (an agent never applies a lower one). Its telemetry stays until the retention
    /// drops it.
    pub async fn remove_device(&self, id: &str) -> Result<DeviceRemoved, FleetError> {
        let _writes = self.store.lock_writes().await?;
        let device = self.device_record(id).await?;
        let previous: Option<RenderedManifest> = self.store.get(kind::MANIFEST, id).await?;
        let mut retraction_version = previous.as_ref().map(|p| p.version);
        let mut published = Vec::new();
        if let Some(previous) = &previous
            && let Render::Changed(draft) =
                render_device(&device, &Catalog::default(), Some(previous))
                    .map_err(|e| FleetError::invalid(e.to_string()))?
        {
            retraction_version = Some(draft.version);
            // A removed device has no render job: its retraction is published, and awaited at
            // the broker (for a while: the session may be reconnecting) before the login goes.
            self.sign_store_publish(vec![draft], &mut published).await?;
        }
        let mut batch = Batch::default();
        batch.delete(kind::DEVICE, id);
        batch.delete(kind::STATUS, id);
        batch.delete(kind::MQTT_ROTATION, id);
        self.store.commit(batch).await?;
        self.device_keys.forget(id);
        for acknowledged in published {
            if tokio::time::timeout(RETRACTION_WAIT, acknowledged)
                .await
                .is_err()
            {
                tracing::warn!(
                    device = id,
                    "the broker has not acknowledged the retraction; removing the login anyway"
                );
            }
        }
        let mqtt_login_revoked = self.logins.remove(id).await?;
        Ok(DeviceRemoved {
            removed: id.to_owned(),
            retraction_version,
            mqtt_login_revoked,
        })
    }

    /// The device's agent configuration file (TOML), with its MQTT password.
    pub async fn device_config(&self, id: &str) -> Result<String, FleetError> {
        let device = self.device_record(id).await?;
        let mut config = AgentConfig {
            device_id: id.to_owned(),
            fleet: self.settings.name.clone(),
            fleet_public_key: self.key.public_key().to_string(),
            ..AgentConfig::default()
        };
        config.mqtt.url = self
            .settings
            .device_mqtt_url
            .clone()
            .unwrap_or_else(|| self.settings.mqtt_url.clone());
        config.mqtt.username = id.to_owned();
        config.mqtt.password = self.secrets.unseal(&device.mqtt_password)?;
        config.registry.insecure = self
            .store
            .list::<Registry>(kind::REGISTRY)
            .await?
            .into_iter()
            .filter(|(_, r)| r.insecure)
            .map(|(_, r)| r.address)
            .collect();
        let toml = toml::to_string(&config)
            .map_err(|e| FleetError::invalid(format!("the agent configuration: {e}")))?;
        Ok(format!(
            "# edgefleet-agent configuration for device {id}, written by `edgefleet device config`.\n\
             # It holds the device's MQTT password: keep it 0600. Every setting is explained by\n\
             # `edgefleet-agent print-default-config`.\n{toml}"
        ))
    }

    /// Sends a command (`logs`, `restart`) to one module of a device and waits for its result.
    pub async fn command(
        &self,
        id: &str,
        request: ModuleCommandRequest,
    ) -> Result<CommandResult, FleetError> {
        self.device_record(id).await?;
        let request_id = hex::encode(rand::random::<[u8; 8]>());
        let name = request.command.name();
        let request = CommandRequest {
            request_id: request_id.clone(),
            module: request.module,
            issued_at_ms: now_ms(),
            command: request.command,
        };
        let body = serde_json::to_vec(&request)
            .map_err(|e| FleetError::invalid(format!("the command cannot be sent: {e}")))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let waiting = (id.to_owned(), request_id);
        self.pending().insert(waiting.clone(), tx);
        let topic = DeviceTopics::new(&self.settings.name, id)?.command(name);
        let published = self
            .publish(Publication {
                payload: self.key.sign_message(&topic, &body),
                topic,
                retain: false,
            })
            .await;
        let answer = match published {
            Ok(()) => tokio::time::timeout(COMMAND_TIMEOUT, rx).await,
            Err(e) => {
                self.pending().remove(&waiting);
                return Err(e);
            }
        };
        self.pending().remove(&waiting);
        match answer {
            Ok(Ok(CommandResult {
                outcome: CommandOutcome::Failed { error },
                ..
            })) => Err(FleetError::DeviceRefused {
                device: id.to_owned(),
                error,
            }),
            Ok(Ok(result)) => Ok(result),
            _ => Err(FleetError::DeviceTimeout {
                device: id.to_owned(),
                seconds: COMMAND_TIMEOUT.as_secs(),
            }),
        }
    }

    /// Device `id` answered a command; the request waiting for it (if any, and only one sent
    /// to that device) gets the result.
    pub(crate) fn command_answered(&self, id: &str, result: CommandResult) {
        let waiting = (id.to_owned(), result.request_id.clone());
        if let Some(waiter) = self.pending().remove(&waiting) {
            let _ = waiter.send(result);
        }
    }

    fn pending(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::BTreeMap<(String, String), tokio::sync::oneshot::Sender<CommandResult>>,
    > {
        // A waiter map left by a panicking thread is still consistent (inserts and removes).
        self.pending_commands
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Lets every device of the store connect to the embedded broker with its password (it
    /// keeps no users of its own across restarts). mosquitto keeps its logins itself.
    pub(crate) async fn refresh_broker_credentials(&self) -> Result<(), FleetError> {
        if !matches!(self.logins, DeviceLogins::Embedded(_)) {
            return Ok(());
        }
        let mut passwords = Vec::new();
        for (id, device) in self.store.list::<Device>(kind::DEVICE).await? {
            passwords.push((id, self.secrets.unseal(&device.mqtt_password)?));
        }
        self.logins.add(&passwords).await?;
        Ok(())
    }
}

impl Fleet {
    /// Sets the gauges counted when metrics are scraped: devices by state, running rollouts.
    pub async fn count_for_metrics(&self) -> Result<(), FleetError> {
        let now = now_ms();
        let (mut online, mut stale, mut never) = (0u64, 0u64, 0u64);
        for (id, _) in self.store.list::<Device>(kind::DEVICE).await? {
            let status = self.status(&id).await?;
            match (status.last_seen_ms, is_stale(&status, now)) {
                (None, _) => never += 1,
                (Some(_), true) => stale += 1,
                (Some(_), false) => online += 1,
            }
        }
        for (state, count) in [("online", online), ("stale", stale), ("never_seen", never)] {
            metrics::gauge!("edgefleet_fleet_devices", "state" => state).set(count as f64);
        }
        let running = self
            .store
            .list::<crate::records::Rollout>(kind::ROLLOUT)
            .await?
            .into_iter()
            .filter(|(_, r)| r.state == edgefleet_common::fleet_api::StagedState::Running)
            .count();
        metrics::gauge!("edgefleet_fleet_rollouts_running").set(running as f64);
        Ok(())
    }
}

fn view(
    device: Device,
    status: DeviceStatus,
    manifest_version: Option<u64>,
    mqtt_rotation_version: Option<u64>,
) -> DeviceView {
    DeviceView {
        stale: is_stale(&status, now_ms()),
        id: device.id,
        tags: device.tags,
        public_key: device.public_key,
        manifest_version,
        last_seen_ms: status.last_seen_ms,
        reported: status.reported,
        mqtt_rotation_version,
    }
}
