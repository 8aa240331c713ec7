//! The fleet's domain layer: what the HTTP routes call, and what unit tests call without any
//! socket. [`Fleet`] holds the store, the fleet's keys and ONNX Runtime; one file per resource
//! adds its operations (registries, models, devices, deployments, staged rollouts, telemetry), and
//! [`rendering`] turns every change into signed per-device manifests, handed to the MQTT
//! session as [`Publication`]s.

mod bundles;
mod credentials;
mod deployments;
mod device_messages;
mod devices;
mod incarnations;
mod models;
mod registries;
pub(crate) mod rendering;
mod rollouts;
pub(crate) mod telemetry;
#[cfg(test)]
mod tests;
mod tokens;

use std::collections::BTreeMap;
use std::sync::Mutex;

use edgefleet_common::commands::CommandResult;
use edgefleet_common::fleet_api::FleetInfo;
use edgefleet_common::sealing::DeviceIdentity;
use edgefleet_common::signing::FleetSigningKey;
use edgefleet_common::topics::FleetTopics;
use edgefleet_onnx::OnnxRuntime;
use tokio::sync::{mpsc, oneshot};

use crate::broker_logins::DeviceLogins;
use crate::error::FleetError;
use crate::store::FleetStore;

pub use bundles::BundleFor;
pub use credentials::ROTATIONS_EVERY;
pub use device_messages::{Published, Received};
pub use rendering::Affected;
pub use rollouts::{ADVANCE_EVERY, RolloutAction};
pub use telemetry::{Arrived, Heard, TelemetryFilter};
pub use tokens::{BOOTSTRAP_NAME, Caller, Tokens, token_sha256};

/// A message for the fleet's MQTT session to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    pub topic: String,
    pub payload: Vec<u8>,
    /// Retained (signed manifests are).
    pub retain: bool,
}

/// A publication handed to the MQTT session, with who to tell once the broker has it.
#[derive(Debug)]
pub struct Outgoing {
    pub publication: Publication,
    /// Told when the broker acknowledged the publication (PUBACK).
    pub acknowledged: Option<oneshot::Sender<()>>,
}

/// Where the fleet is and what devices are told about it.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    /// The fleet's name, the `<fleet>` of every topic.
    pub name: String,
    /// The broker the service uses.
    pub mqtt_url: String,
    /// The broker URL written into device configurations (default: `mqtt_url`).
    pub device_mqtt_url: Option<String>,
    /// How long and how much telemetry is kept per device.
    pub retention: crate::store::TelemetryRetention,
    /// The MQTT shared-subscription group of the replicas sharing a database: each device
    /// message goes to one of them. `None` with a single service.
    pub shared_subscriptions: Option<String>,
}

#[derive(Debug)]
pub struct Fleet {
    pub(crate) settings: FleetSettings,
    pub(crate) store: FleetStore,
    key: FleetSigningKey,
    /// The fleet's own age identity: registry and MQTT passwords are sealed to it at rest.
    secrets: DeviceIdentity,
    onnx: OnnxRuntime,
    pub(crate) topics: FleetTopics,
    outgoing: mpsc::Sender<Outgoing>,
    /// Devices' logins at the broker, where the fleet manages them.
    pub(crate) logins: DeviceLogins,
    /// Serializes model profiles (two at once would measure each other).
    profiling: tokio::sync::Mutex<()>,
    /// Commands sent to devices, waiting for their result, by device and request id.
    pending_commands: Mutex<BTreeMap<(String, String), oneshot::Sender<CommandResult>>>,
    /// The message keys of the devices heard from.
    device_keys: device_messages::DeviceKeys,
    /// The incarnations of the devices heard from.
    incarnations: incarnations::IncarnationCache,
}

impl Fleet {
    /// The domain layer over `store`, publishing through `outgoing`.
    pub async fn new(
        settings: FleetSettings,
        store: FleetStore,
        key: FleetSigningKey,
        secrets: DeviceIdentity,
        onnx: OnnxRuntime,
        outgoing: mpsc::Sender<Outgoing>,
        logins: DeviceLogins,
    ) -> Result<Self, FleetError> {
        let topics = FleetTopics::new(&settings.name)?;
        let fleet = Self {
            settings,
            store,
            key,
            secrets,
            onnx,
            topics,
            outgoing,
            logins,
            profiling: tokio::sync::Mutex::new(()),
            pending_commands: Mutex::new(BTreeMap::new()),
            device_keys: Default::default(),
            incarnations: Default::default(),
        };
        fleet.refresh_broker_credentials().await?;
        Ok(fleet)
    }

    pub fn info(&self) -> FleetInfo {
        FleetInfo {
            fleet: self.settings.name.clone(),
            public_key: self.key.public_key().to_string(),
            mqtt_url: self.settings.mqtt_url.clone(),
        }
    }

    /// Hands `publication` to the MQTT session, waiting while its queue is full.
    async fn publish(&self, publication: Publication) -> Result<(), FleetError> {
        self.send(Outgoing {
            publication,
            acknowledged: None,
        })
        .await
    }

    /// Hands `publication` to the MQTT session; the receiver is told when the broker has it.
    async fn publish_acknowledged(
        &self,
        publication: Publication,
    ) -> Result<oneshot::Receiver<()>, FleetError> {
        let (acknowledged, receiver) = oneshot::channel();
        self.send(Outgoing {
            publication,
            acknowledged: Some(acknowledged),
        })
        .await?;
        Ok(receiver)
    }

    async fn send(&self, outgoing: Outgoing) -> Result<(), FleetError> {
        self.outgoing
            .send(outgoing)
            .await
            .map_err(|e| FleetError::Broker(e.to_string()))
    }
}
