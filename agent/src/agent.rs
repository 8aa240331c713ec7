//! The agent: opens the store, the outbox, the puller and the Docker engine, starts the link,
//! the reporter, the status socket and the image clean-up as tasks of their own, restores what
//! ran before, and hands over to the [`Supervisor`]'s routing loop until shutdown.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;

use edgefleet_common::agent_config::AgentConfig;
use edgefleet_common::sealing::{DeviceIdentity, SealingError};
use edgefleet_common::topics::DeviceTopics;
use tokio::sync::{mpsc, watch};

use crate::images::container_runtime::{ContainerRuntime, OwnedContainer};
use crate::images::disk_budget::DiskBudget;
use crate::images::puller::{Puller, PullerSettings};
use crate::images::registry::RegistryAccess;
use crate::local::control_socket;
use crate::local::status_socket;
use crate::modules::image_cleanup;
use crate::modules::module_task::Services;
use crate::modules::status_board::StatusBoard;
use crate::modules::supervisor::Supervisor;
use crate::offline::bundle_import::BundleImporter;
use crate::store::Store;
use crate::telemetry::authenticity::{Authenticity, AuthenticityError};
use crate::telemetry::link;
use crate::telemetry::outbox::Outbox;
use crate::telemetry::reporter::Reporter;

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("device identity {path}: {reason} (run `edgefleet-agent init` first)")]
    Identity { path: String, reason: String },
    #[error(transparent)]
    Config(#[from] edgefleet_common::agent_config::ConfigError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Topics(#[from] edgefleet_common::topics::TopicNameError),
    #[error(transparent)]
    RegistryCa(#[from] crate::images::registry::CaFileError),
    #[error(transparent)]
    Authenticity(#[from] AuthenticityError),
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
}

/// Reads the device identity written by `edgefleet-agent init`.
pub fn load_identity(config: &AgentConfig) -> Result<DeviceIdentity, AgentError> {
    let path = config.identity_path();
    let fail = |reason: String| AgentError::Identity {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| fail(e.to_string()))?;
    text.parse().map_err(|e: SealingError| fail(e.to_string()))
}

/// The puller of model images, with the registry settings and the disk budget of `config`.
fn open_puller(config: &AgentConfig, store: &Store) -> Result<Puller, AgentError> {
    Ok(Puller::new(
        PullerSettings {
            blobs_dir: config.blobs_dir(),
            registries: RegistryAccess::from_config(config)?,
            budget: DiskBudget {
                budget_bytes: config.storage.budget_bytes,
                min_free_bytes: config.storage.min_free_bytes,
            },
        },
        store.clone(),
    ))
}

/// The Docker engine, when it answers, and the containers of the agent's it runs (adopted by
/// their modules' tasks).
async fn connect_engine(
    config: &AgentConfig,
    topics: &DeviceTopics,
) -> (Option<ContainerRuntime>, BTreeMap<String, OwnedContainer>) {
    let runtime =
        match ContainerRuntime::connect(&config.docker.socket, &config.device_id, topics).await {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::warn!(error = %e, "container modules cannot run");
                return (None, BTreeMap::new());
            }
        };
    let owned = runtime.owned().await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "the agent's containers could not be listed");
        Default::default()
    });
    (Some(runtime), owned)
}

/// Runs the agent until `shutdown` resolves.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let fleet_key = config.fleet_key()?;
    // Installed before anything counts, so every handle reaches the recorder.
    let metrics = match config.metrics.listen.parse() {
        Ok(listen) => crate::metrics::install().map(|handle| (listen, handle)),
        Err(_) => None,
    };
    let identity = load_identity(&config)?;
    let topics = DeviceTopics::new(&config.fleet, &config.device_id)?;
    std::fs::create_dir_all(config.blobs_dir()).map_err(|source| AgentError::File {
        what: "the model cache",
        path: config.blobs_dir().display().to_string(),
        source,
    })?;
    let store = Store::open_waiting(&config.store_path(), std::time::Duration::from_secs(10))?;
    let auth = Authenticity::new(
        &identity,
        fleet_key,
        &config.fleet,
        &config.device_id,
        &store,
    )?;
    let outbox = Outbox::start(
        store.clone(),
        config.device_id.clone(),
        config.telemetry.outbox_max_bytes,
    );
    let puller = open_puller(&config, &store)?;
    let (containers, owned) = connect_engine(&config, &topics).await;

    let board = StatusBoard::default();
    let (events_tx, events) = mpsc::unbounded_channel();
    let (inbound_tx, inbound) = mpsc::channel(1024);
    let (outgoing_tx, outgoing) = mpsc::channel(64);
    let services = Arc::new(Services {
        config: config.clone(),
        topics,
        store: store.clone(),
        outbox: outbox.clone(),
        puller,
        onnx_library: config.onnx_runtime_library.clone(),
        identity,
        containers,
        board: board.clone(),
        events: events_tx,
        outgoing: outgoing_tx,
    });
    let (telemetry_tx, telemetry) = watch::channel(Default::default());
    let (wanted_images_tx, wanted_images) = watch::channel(BTreeSet::new());
    let importer = BundleImporter {
        services: services.clone(),
        fleet_key,
        inbound: inbound_tx.clone(),
        one_at_a_time: Default::default(),
    };
    let mut supervisor =
        Supervisor::new(services.clone(), fleet_key, telemetry_tx, wanted_images_tx);
    supervisor.restore(owned)?;

    let (reported_tx, reported) = watch::channel(Vec::new());
    let (fleet_silent_tx, fleet_silent) = watch::channel(None);
    let reporter = Reporter {
        device_id: config.device_id.clone(),
        board,
        store: store.clone(),
        outbox: outbox.clone(),
        reported: reported_tx,
        telemetry,
        fleet_silent,
    };
    let background = [
        tokio::spawn(reporter.run()),
        tokio::spawn(status_socket::serve(
            config.status_socket_path(),
            reported.clone(),
        )),
        tokio::spawn(image_cleanup::run(services, wanted_images)),
        tokio::spawn(control_socket::serve(
            config.control_socket_path(),
            importer.clone(),
            reported.clone(),
        )),
        tokio::spawn(importer.watch(config.drop_dir())),
        tokio::spawn(async move {
            if let Some((listen, handle)) = metrics {
                crate::metrics::serve(listen, handle).await;
            }
        }),
    ];
    let (stop_link, link_stop) = watch::channel(false);
    let link = tokio::spawn(link::run(
        config.clone(),
        auth,
        store,
        outbox.clone(),
        reported,
        inbound_tx,
        outgoing,
        fleet_silent_tx,
        link_stop,
    ));

    supervisor.run(inbound, events, shutdown).await;
    tracing::info!("shutting down");
    // The scoring APIs have stopped; what they handed the outbox is committed before exit.
    outbox.flush().await;
    for task in background {
        task.abort();
    }
    let _ = std::fs::remove_file(config.status_socket_path());
    let _ = std::fs::remove_file(config.control_socket_path());
    let _ = stop_link.send(true);
    let _ = link.await;
    Ok(())
}
