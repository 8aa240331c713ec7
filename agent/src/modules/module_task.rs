//! What module tasks share: the agent's services, the commands the supervisor sends a task,
//! the events a task answers with, and the retry backoff of a module that failed to apply.

use std::time::Duration;

use edgefleet_common::agent_config::AgentConfig;
use edgefleet_common::commands::CommandResult;
use edgefleet_common::manifest::{Module, RegistryCredential};
use edgefleet_common::sealing::DeviceIdentity;
use edgefleet_common::topics::DeviceTopics;
use edgefleet_onnx::OnnxRuntime;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::images::container_runtime::ContainerRuntime;
use crate::images::disk_budget::Usage;
use crate::images::puller::Puller;
use crate::modules::status_board::StatusBoard;
use crate::store::Store;
use crate::telemetry::link::{InputAck, OutgoingMessage};
use crate::telemetry::outbox::Outbox;

/// Why a module is not what its manifest asks. The message is for the operator: it ends up in
/// the reported state and the manifest's outcome.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ModuleError {
    #[error("registry {address}: cannot unseal the password sealed for this device: {source}")]
    Unseal {
        address: String,
        source: Box<edgefleet_common::sealing::SealingError>,
    },
    #[error(transparent)]
    Pull(Box<crate::images::pull_error::PullError>),
    #[error("the model cache: {0}")]
    Cache(Box<crate::images::pull_error::PullCause>),
    #[error("model of {image} does not load: {source}")]
    Load {
        image: String,
        source: Box<edgefleet_onnx::ModelError>,
    },
    #[error("{image} failed its canary: {source}")]
    Canary {
        image: String,
        source: Box<edgefleet_onnx::canary::CanaryError>,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid bind address {address}: {source}")]
    BindAddress {
        address: String,
        source: std::net::AddrParseError,
    },
    #[error(
        "image {0} is not on this device and the module's imagePullPolicy is never: load it into the Docker engine or set imagePullPolicy on-create"
    )]
    ImageNotOnDevice(String),
    #[error("the Docker engine at {socket} is not reachable")]
    NoEngine { socket: String },
    #[error(transparent)]
    Container(Box<crate::images::container_runtime::ContainerError>),
    #[error(transparent)]
    OverBudget(#[from] crate::images::disk_budget::OverBudget),
    #[error(transparent)]
    Runtime(#[from] edgefleet_onnx::runtime::RuntimeError),
    #[error("the manifest gave this {expected} module's task another kind of module")]
    WrongKind { expected: &'static str },
    #[error("{0} task failed: {1}")]
    Task(&'static str, #[source] tokio::task::JoinError),
}

impl From<crate::images::pull_error::PullError> for ModuleError {
    fn from(e: crate::images::pull_error::PullError) -> Self {
        Self::Pull(Box::new(e))
    }
}

impl From<crate::images::pull_error::PullCause> for ModuleError {
    fn from(e: crate::images::pull_error::PullCause) -> Self {
        Self::Cache(Box::new(e))
    }
}

impl From<crate::images::container_runtime::ContainerError> for ModuleError {
    fn from(e: crate::images::container_runtime::ContainerError) -> Self {
        Self::Container(Box::new(e))
    }
}

/// The agent's services, shared by the supervisor and every module task.
#[derive(Debug)]
pub(crate) struct Services {
    pub config: AgentConfig,
    pub topics: DeviceTopics,
    pub store: Store,
    pub outbox: Outbox,
    pub puller: Puller,
    /// Where ONNX Runtime is loaded from, the first time a model module needs it (an agent
    /// running containers only never maps the library).
    pub onnx_library: std::path::PathBuf,
    pub identity: DeviceIdentity,
    /// The Docker engine, when it was reachable at start.
    pub containers: Option<ContainerRuntime>,
    pub board: StatusBoard,
    /// Where tasks tell the supervisor what became of their module.
    pub events: mpsc::UnboundedSender<ModuleEvent>,
    /// Messages for the link to publish (command results).
    pub outgoing: mpsc::Sender<OutgoingMessage>,
}

impl Services {
    /// ONNX Runtime, loaded on first use.
    pub fn onnx(&self) -> Result<OnnxRuntime, ModuleError> {
        Ok(OnnxRuntime::load(&self.onnx_library)?)
    }

    /// The error of a container operation without an engine.
    pub fn no_engine(&self) -> ModuleError {
        ModuleError::NoEngine {
            socket: self.config.docker.socket.clone(),
        }
    }

    /// The manifest's credentials for `image`'s registry, with the password unsealed.
    pub fn registry_login(
        &self,
        credential: Option<&RegistryCredential>,
    ) -> Result<Option<(RegistryCredential, String)>, ModuleError> {
        let Some(c) = credential else {
            return Ok(None);
        };
        let password = self
            .identity
            .unseal(&c.password)
            .map_err(|source| ModuleError::Unseal {
                address: c.address.clone(),
                source: Box::new(source),
            })?;
        Ok(Some((c.clone(), password)))
    }

    /// What the agent keeps besides the model cache (the container images its containers use,
    /// the outbox's reserve), for the disk budget.
    pub async fn usage_besides_models(&self) -> Usage {
        let images = match &self.containers {
            Some(runtime) => runtime.images_bytes().await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "image sizes unknown; counted as 0");
                0
            }),
            None => 0,
        };
        Usage {
            models: 0,
            images,
            outbox_reserve: self.outbox.max_bytes(),
        }
    }

    /// Publishes a command's result without making the caller wait on the link.
    pub fn answer(&self, command: &str, result: &CommandResult) {
        let message = OutgoingMessage {
            topic: self.topics.command_result(command),
            payload: match serde_json::to_vec(result) {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::error!(error = %e, "command result not serialized");
                    return;
                }
            },
        };
        let outgoing = self.outgoing.clone();
        tokio::spawn(async move {
            let _ = outgoing.send(message).await;
        });
    }
}

/// One module's part of a manifest.
#[derive(Debug, Clone)]
pub(crate) struct Assignment {
    pub version: u64,
    pub module: Module,
    /// The manifest's credentials for the module's registry (password still sealed).
    pub credential: Option<RegistryCredential>,
}

/// What the supervisor asks of a module task.
#[derive(Debug)]
pub(crate) enum ModuleCommand {
    /// Make the module what the manifest says; answered with [`ModuleEvent::Applied`].
    Apply(Assignment),
    /// Stop the module, forget it and end the task; answered with [`ModuleEvent::Removed`].
    Remove,
    /// Restart a container module (the fleet's `restart` command); answered on the link.
    Restart { request_id: String },
    /// Score a message from the module's MQTT input topic (model modules).
    Input { payload: Vec<u8>, ack: InputAck },
}

/// What a module task tells the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ModuleEvent {
    /// The module is what manifest `version` asks, or (`failure`, the message for the
    /// operator) could not be made so; the task then retries with backoff and reports again.
    Applied {
        module: String,
        version: u64,
        failure: Option<String>,
    },
    Removed {
        module: String,
    },
}

/// A running module task. Dropping the handle's sender ends the task without touching the
/// module (the agent is shutting down); [`ModuleCommand::Remove`] removes the module.
#[derive(Debug)]
pub(crate) struct ModuleHandle {
    pub kind: edgefleet_common::manifest::ModuleKind,
    pub commands: mpsc::UnboundedSender<ModuleCommand>,
    pub task: JoinHandle<()>,
}

/// First retry of a module that did not apply; doubles up to [`RETRY_MAX`].
pub(crate) const RETRY_MIN: Duration = Duration::from_secs(15);
pub(crate) const RETRY_MAX: Duration = Duration::from_secs(600);

/// The retry schedule of one module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: RETRY_MIN }
    }
}

impl Backoff {
    /// The delay before the next attempt; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(RETRY_MAX);
        delay
    }

    pub fn reset(&mut self) {
        self.next = RETRY_MIN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_from_fifteen_seconds_to_ten_minutes_and_reset() {
        let mut b = Backoff::default();
        let delays: Vec<u64> = (0..8).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(delays, vec![15, 30, 60, 120, 240, 480, 600, 600]);
        b.reset();
        assert_eq!(b.next_delay(), RETRY_MIN);
    }
}
