//! What can go wrong in the fleet's domain layer. Each variant says whose fault it is; the
//! HTTP API maps them to status codes in one place (`routes::status`).

use crate::condition::ConditionError;
use crate::package::PackageError;
use crate::render::RenderError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The request is wrong; the message says what to change.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with what the fleet holds (a model a deployment uses).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Condition(#[from] ConditionError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Name(#[from] edgefleet_common::topics::TopicNameError),
    /// Building or pushing a model module image failed (the message names the registry).
    #[error(transparent)]
    Package(#[from] PackageError),
    /// The device answered a command with a failure.
    #[error("device {device}: {error}")]
    DeviceRefused { device: String, error: String },
    #[error(
        "device {device} did not answer within {seconds} s: is it online? (edgefleet device show {device})"
    )]
    DeviceTimeout { device: String, seconds: u64 },
    /// The fleet's broker session cannot take the message.
    #[error("the fleet's MQTT session is not running: {0}")]
    Broker(String),
    /// The broker did not take a change to a device's login (see `broker_logins`).
    #[error("the broker's device logins: {0}")]
    BrokerLogin(#[from] crate::broker_logins::LoginError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the fleet's secrets key cannot open a stored secret: {0}")]
    Secrets(#[from] edgefleet_common::sealing::SealingError),
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("a background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl FleetError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(message.into())
    }
}
