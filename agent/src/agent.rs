//! The agent: wires the store, the outbox, the MQTT link and the served model modules, and
//! executes the reconciler's plan whenever a verified manifest arrives.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgefleet_common::manifest::{
    DesiredStatus, Manifest, ModelServing, Module, ModuleKind, RegistryCredential, RestartPolicy,
};
use edgefleet_common::reported::{
    ApplyStatus, DesiredOutcome, ModuleState, REPORTED_SCHEMA_VERSION, ReportedState, RuntimeStatus,
};
use edgefleet_common::sealing::DeviceIdentity;
use edgefleet_common::signing::FleetPublicKey;
use edgefleet_common::telemetry::TelemetryKind;
use edgefleet_common::topics::DeviceTopics;
use edgefleet_onnx::OnnxRuntime;
use edgefleet_onnx::canary::{canary, metadata_from_model};
use edgefleet_transport::now_ms;
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::Config;
use crate::container_runtime::{ContainerRuntime, OwnedContainer, spec_digest};
use crate::create_options;
use crate::link::{self, Inbound};
use crate::model_module::{ActiveModel, ModelModule};
use crate::outbox::Outbox;
use crate::puller::{Puller, PullerSettings};
use crate::reconciler::{ActualContainer, ContainerOperation, plan_containers};
use crate::reconciler::{ActualModule, Operation, plan};
use crate::restart_policy::{Decision, Observed, RestartState};
use crate::scoring_api;
use crate::status_socket;
use crate::store::{ModuleRecord, Store};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("device identity {path}: {reason} (run `edgefleet-agent init` first)")]
    Identity { path: String, reason: String },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Runtime(#[from] edgefleet_onnx::runtime::RuntimeError),
    #[error(transparent)]
    Link(#[from] crate::link::LinkError),
    #[error("{0}")]
    Io(String),
}

/// First retry of a manifest that did not fully apply; doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_secs(15);
const RETRY_MAX: Duration = Duration::from_secs(600);

/// Most bytes of logs one command result carries.
const COMMAND_RESULT_MAX_BYTES: usize = 64 * 1024;

/// The HTTP server of one model module.
#[derive(Debug)]
struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
}

#[derive(Debug)]
struct Served {
    module: Arc<ModelModule>,
    server: Option<Server>,
}

/// Reads the device identity written by `edgefleet-agent init`.
pub fn load_identity(config: &Config) -> Result<DeviceIdentity, AgentError> {
    let path = config.identity_path();
    let fail = |reason: String| AgentError::Identity {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| fail(e.to_string()))?;
    text.parse()
        .map_err(|e: edgefleet_common::sealing::SealingError| fail(e.to_string()))
}

struct Agent {
    config: Config,
    store: Store,
    outbox: Outbox,
    puller: Puller,
    runtime: OnnxRuntime,
    identity: DeviceIdentity,
    fleet_key: FleetPublicKey,
    modules: BTreeMap<String, Served>,
    /// Modules the desired manifest wants but that are not serving what it asks, and why.
    failures: BTreeMap<String, String>,
    desired: Option<(Manifest, Vec<u8>)>,
    applied_version: Option<u64>,
    outcome: Option<DesiredOutcome>,
    reported: watch::Sender<Vec<u8>>,
    /// Inference count at the last report, to report changed counters without a flood.
    reported_inferences: u64,
    /// The Docker engine, when it is reachable.
    containers: Option<ContainerRuntime>,
    /// The agent's containers as last seen, by module.
    containers_seen: BTreeMap<String, OwnedContainer>,
    container_restarts: BTreeMap<String, RestartState>,
    /// A container module's last error (a pull that failed while an older image runs, a
    /// failed start).
    container_errors: BTreeMap<String, String>,
    /// Messages for the link to publish (command results).
    outgoing: Option<mpsc::Sender<link::OutgoingMessage>>,
    retry_at: Option<Instant>,
    retry_backoff: Duration,
}

/// Runs the agent until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    let fleet_key = config.fleet_key()?;
    let identity = load_identity(&config)?;
    std::fs::create_dir_all(config.blobs_dir())
        .map_err(|e| AgentError::Io(format!("{}: {e}", config.blobs_dir().display())))?;
    let store = Store::open(&config.store_path())?;
    let runtime = OnnxRuntime::load(&config.onnx_runtime_library)?;
    let outbox = Outbox::start(
        store.clone(),
        config.device_id.clone(),
        config.telemetry.outbox_max_bytes,
    );
    let extra_ca_pem = if config.registry.ca_file.is_empty() {
        None
    } else {
        Some(std::fs::read(&config.registry.ca_file).map_err(|e| {
            AgentError::Io(format!(
                "config field `registry.ca_file` {}: {e}",
                config.registry.ca_file
            ))
        })?)
    };
    let puller = Puller::new(
        PullerSettings {
            blobs_dir: config.blobs_dir(),
            insecure_registries: config.registry.insecure.clone(),
            extra_ca_pem,
            cache_budget_bytes: config.storage.cache_budget_bytes,
            min_free_bytes: config.storage.min_free_bytes,
        },
        store.clone(),
    );
    let containers = match ContainerRuntime::connect(&config.docker.socket, &config.device_id).await
    {
        Ok(runtime) => Some(runtime),
        Err(e) => {
            tracing::warn!(error = %e, "container modules cannot run");
            None
        }
    };
    let (reported, reported_rx) = watch::channel(Vec::new());
    let mut agent = Agent {
        config: config.clone(),
        store: store.clone(),
        outbox: outbox.clone(),
        puller,
        runtime,
        identity,
        fleet_key,
        modules: BTreeMap::new(),
        failures: BTreeMap::new(),
        desired: None,
        applied_version: None,
        outcome: None,
        reported,
        reported_inferences: 0,
        containers,
        containers_seen: BTreeMap::new(),
        container_restarts: BTreeMap::new(),
        container_errors: BTreeMap::new(),
        outgoing: None,
        retry_at: None,
        retry_backoff: RETRY_MIN,
    };
    agent.restore().await?;
    agent.report();
    let status_socket = tokio::spawn(status_socket::serve(
        config.status_socket_path(),
        reported_rx.clone(),
    ));

    let (inbound_tx, mut inbound) = mpsc::channel(1024);
    let (outgoing_tx, outgoing_rx) = mpsc::channel(64);
    agent.outgoing = Some(outgoing_tx);
    let (stop_link, link_stop_rx) = watch::channel(false);
    let link = tokio::spawn(link::run(
        config.clone(),
        store,
        outbox,
        reported_rx,
        inbound_tx,
        outgoing_rx,
        link_stop_rx,
    ));

    let mut tick =
        tokio::time::interval(Duration::from_secs(u64::from(agent.telemetry_interval())));
    tick.tick().await;
    // Inference counters change with every request; they are reported at most this often.
    let mut stats_tick = tokio::time::interval(Duration::from_secs(5));
    // How often container modules are checked against their restart policy.
    let mut container_tick = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(shutdown);
    loop {
        let retry = agent.retry_at;
        tokio::select! {
            () = &mut shutdown => break,
            message = inbound.recv() => match message {
                Some(Inbound::Desired(wire)) => agent.on_desired(wire).await,
                Some(Inbound::Input { module, payload }) => agent.on_input(&module, payload),
                Some(Inbound::Command { name, payload }) => agent.on_command(&name, &payload).await,
                None => break,
            },
            () = async { if let Some(at) = retry { tokio::time::sleep_until(at.into()).await } }, if retry.is_some() => {
                agent.retry_at = None;
                if let Some((manifest, wire)) = agent.desired.clone() {
                    tracing::info!(version = manifest.version, "retrying the manifest");
                    agent.apply(manifest, wire).await;
                }
            }
            _ = tick.tick() => agent.on_tick().await,
            _ = stats_tick.tick() => agent.report_if_inferences_changed(),
            _ = container_tick.tick() => {
                agent.watch_containers().await;
                agent.remove_unused_images().await;
            }
        }
    }
    tracing::info!("shutting down");
    status_socket.abort();
    let _ = std::fs::remove_file(config.status_socket_path());
    let _ = stop_link.send(true);
    let _ = link.await;
    for (_, served) in std::mem::take(&mut agent.modules) {
        if let Some(server) = served.server {
            let _ = server.stop.send(());
        }
    }
    Ok(())
}

impl Agent {
    fn telemetry_interval(&self) -> u32 {
        self.desired
            .as_ref()
            .map_or(60, |(m, _)| m.telemetry.interval_seconds)
            .max(1)
    }

    /// Serves again what was applied before the restart, from the cache, without the network.
    async fn restore(&mut self) -> Result<(), AgentError> {
        self.outcome = self.store.outcome()?;
        let applied = self
            .store
            .applied()?
            .and_then(|wire| self.fleet_key.verify(&wire).ok().map(|m| (m, wire)));
        let records = self.store.modules()?;
        if let Some((manifest, _)) = &applied {
            self.applied_version = Some(manifest.version);
            self.outbox
                .set_max_bytes(manifest.telemetry.outbox_max_bytes);
        }
        let specs: BTreeMap<String, Module> = applied
            .as_ref()
            .map(|(m, _)| m.modules.clone())
            .unwrap_or_default();
        for (name, record) in records {
            let serving = specs.get(&name).and_then(|m| m.serving.clone());
            match self.load_cached(&name, &record) {
                Ok(active) => {
                    if let Err(e) = self.install(&name, active, serving) {
                        self.failures.insert(name, e);
                    }
                }
                Err(e) => {
                    tracing::warn!(module = %name, error = %e, "cached module could not be restored");
                    self.failures.insert(name, e);
                }
            }
        }
        let desired = self
            .store
            .desired()?
            .and_then(|wire| self.fleet_key.verify(&wire).ok().map(|m| (m, wire)));
        self.desired = desired.or(applied);
        if let Some((manifest, _)) = &self.desired
            && (Some(manifest.version) != self.applied_version || !self.failures.is_empty())
        {
            self.retry_at = Some(Instant::now());
        }
        Ok(())
    }

    fn load_cached(&self, name: &str, record: &ModuleRecord) -> Result<ActiveModel, String> {
        let (bytes, metadata) = self
            .puller
            .load_cached(&record.blobs)
            .map_err(|e| e.to_string())?;
        let model = self.runtime.model(&bytes).map_err(|e| e.to_string())?;
        let metadata = metadata.unwrap_or_else(|| metadata_from_model(name, &model));
        Ok(ActiveModel {
            model,
            metadata,
            image: record.image.clone(),
            digest: record.digest.clone(),
            blobs: record.blobs.clone(),
        })
    }

    async fn on_desired(&mut self, wire: Vec<u8>) {
        let manifest = match self.fleet_key.verify(&wire) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "manifest refused");
                self.set_outcome(None, e.status(), e.to_string());
                return;
            }
        };
        if manifest.device_id != self.config.device_id {
            let message = format!(
                "manifest is for device {:?}, this is {:?}",
                manifest.device_id, self.config.device_id
            );
            self.set_outcome(Some(manifest.version), ApplyStatus::Invalid, message);
            return;
        }
        if let Some(applied) = self.applied_version
            && manifest.version < applied
        {
            tracing::info!(
                version = manifest.version,
                applied,
                "ignoring an older manifest"
            );
            return;
        }
        if self.desired.as_ref().is_some_and(|(_, w)| *w == wire)
            && self.applied_version == Some(manifest.version)
            && self.failures.is_empty()
        {
            self.report();
            return;
        }
        if let Err(e) = self.store.put_desired(&wire) {
            self.set_outcome(
                Some(manifest.version),
                ApplyStatus::AgentError,
                e.to_string(),
            );
            return;
        }
        self.retry_backoff = RETRY_MIN;
        self.apply(manifest, wire).await;
    }

    fn actual(&self) -> BTreeMap<String, ActualModule> {
        self.modules
            .iter()
            .filter(|(name, _)| !self.failures.contains_key(*name))
            .map(|(name, s)| {
                let active = s.module.active();
                let serving = s.server.as_ref().map(|_| (*s.module.serving()).clone());
                (
                    name.clone(),
                    ActualModule {
                        image: active.image.clone(),
                        serving,
                    },
                )
            })
            .collect()
    }

    async fn apply(&mut self, manifest: Manifest, wire: Vec<u8>) {
        // A container module the engine would not accept refuses the whole manifest before
        // anything changes.
        for (name, module) in manifest
            .modules
            .iter()
            .filter(|(_, m)| m.kind == ModuleKind::Container)
        {
            if let Err(e) = create_options::parse(module.create_options.as_ref()) {
                self.set_outcome(
                    Some(manifest.version),
                    ApplyStatus::Invalid,
                    format!("module {name}: {e}"),
                );
                return;
            }
        }
        self.desired = Some((manifest.clone(), wire.clone()));
        self.outbox
            .set_max_bytes(manifest.telemetry.outbox_max_bytes);
        self.failures
            .retain(|name, _| manifest.modules.contains_key(name));
        let mut errors = Vec::new();
        for op in plan(&manifest, &self.actual()) {
            match op {
                Operation::Remove(name) => {
                    self.remove(&name);
                    self.failures.remove(&name);
                }
                Operation::Reconfigure(name) => {
                    let serving = manifest.modules.get(&name).and_then(|m| m.serving.clone());
                    match self.reconfigure(&name, serving) {
                        Ok(()) => {
                            self.failures.remove(&name);
                        }
                        Err(e) => {
                            errors.push(format!("module {name}: {e}"));
                            self.failures.insert(name, e);
                        }
                    }
                }
                Operation::Activate(name) => {
                    let Some(module) = manifest.modules.get(&name) else {
                        continue;
                    };
                    let result = match self.activate(&manifest, &name, module).await {
                        Ok(active) => self.install(&name, active, module.serving.clone()),
                        Err(e) => Err(e),
                    };
                    match result {
                        Ok(()) => {
                            self.failures.remove(&name);
                        }
                        Err(e) => {
                            let e = match self.modules.get(&name) {
                                Some(s) => {
                                    format!("{e}; still serving {}", s.module.active().image)
                                }
                                None => e,
                            };
                            tracing::warn!(module = %name, error = %e, "activation failed");
                            errors.push(format!("module {name}: {e}"));
                            self.failures.insert(name, e);
                        }
                    }
                }
            }
        }
        errors.extend(self.apply_containers(&manifest).await);
        let records = self.records();
        let version = manifest.version;
        if errors.is_empty() {
            if let Err(e) = self.store.put_applied(Some(&wire), &records) {
                self.set_outcome(Some(version), ApplyStatus::AgentError, e.to_string());
                return;
            }
            self.applied_version = Some(version);
            self.retry_backoff = RETRY_MIN;
            let keep: Vec<String> = records.values().flat_map(|r| r.blobs.clone()).collect();
            if let Err(e) = self.puller.collect_garbage(&keep) {
                tracing::warn!(error = %e, "cache clean-up failed");
            }
            let message = format!("applied {} module(s)", self.modules.len());
            self.set_outcome(Some(version), ApplyStatus::Applied, message);
        } else {
            let _ = self.store.put_applied(None, &records);
            self.retry_at = Some(Instant::now() + self.retry_backoff);
            self.retry_backoff = (self.retry_backoff * 2).min(RETRY_MAX);
            self.set_outcome(
                Some(version),
                ApplyStatus::ActivationFailed,
                errors.join("; "),
            );
        }
    }

    /// Runs the container half of `manifest`; returns the errors that keep it from applying.
    async fn apply_containers(&mut self, manifest: &Manifest) -> Vec<String> {
        let names: Vec<String> = manifest
            .modules
            .iter()
            .filter(|(_, m)| m.kind == ModuleKind::Container)
            .map(|(n, _)| n.clone())
            .collect();
        self.container_errors.retain(|name, _| names.contains(name));
        self.container_restarts
            .retain(|name, _| names.contains(name));
        let Some(runtime) = self.containers.clone() else {
            return names
                .iter()
                .map(|name| {
                    let e = format!(
                        "the Docker engine at {} is not reachable",
                        self.config.docker.socket
                    );
                    self.container_errors.insert(name.clone(), e.clone());
                    format!("module {name}: {e}")
                })
                .collect();
        };
        let owned = match runtime.owned().await {
            Ok(owned) => owned,
            Err(e) => return vec![e.to_string()],
        };
        let actual = owned
            .iter()
            .map(|(name, c)| {
                (
                    name.clone(),
                    ActualContainer {
                        spec: c.spec.clone(),
                        running: c.running,
                    },
                )
            })
            .collect();
        let wanted_images: Vec<&str> = manifest
            .modules
            .values()
            .filter(|m| m.kind == ModuleKind::Container)
            .map(|m| m.image.as_str())
            .collect();
        let mut unused = self.store.unused_images().unwrap_or_default();
        let mut errors = Vec::new();
        for op in plan_containers(manifest, &actual, spec_digest) {
            // An image a removed or recreated container leaves behind waits out its grace
            // period before it is removed.
            if let ContainerOperation::Remove(name) | ContainerOperation::Recreate(name) = &op
                && let Some(old) = owned.get(name)
                && !wanted_images.contains(&old.image.as_str())
            {
                unused.entry(old.image.clone()).or_insert_with(now_ms);
            }
            let (name, result) = match op {
                ContainerOperation::Remove(name) => {
                    let r = runtime.remove(&name).await.map_err(|e| e.to_string());
                    (name, r.map(|()| None))
                }
                ContainerOperation::Stop(name) => {
                    let r = runtime.stop(&name).await.map_err(|e| e.to_string());
                    (name, r.map(|()| None))
                }
                ContainerOperation::Start(name) => {
                    let r = runtime.start(&name).await.map_err(|e| e.to_string());
                    (name, r.map(|()| None))
                }
                ContainerOperation::Create(name) => {
                    let r = self
                        .create_container(&runtime, manifest, &name, false)
                        .await;
                    (name, r)
                }
                ContainerOperation::Recreate(name) => {
                    let r = self.create_container(&runtime, manifest, &name, true).await;
                    (name, r)
                }
            };
            match result {
                Ok(Some(warning)) => {
                    self.container_errors.insert(name, warning);
                }
                Ok(None) => {
                    self.container_errors.remove(&name);
                }
                Err(e) => {
                    errors.push(format!("module {name}: {e}"));
                    self.container_errors.insert(name, e);
                }
            }
        }
        unused.retain(|image, _| !wanted_images.contains(&image.as_str()));
        if let Err(e) = self.store.put_unused_images(&unused) {
            tracing::warn!(error = %e, "cannot record unused images");
        }
        self.containers_seen = runtime.owned().await.unwrap_or_default();
        errors
    }

    /// Pulls a container module's image and creates (and starts) its container. A pull that
    /// fails while the image is already on the device is not fatal: the module runs and the
    /// error is returned as a warning to report.
    async fn create_container(
        &self,
        runtime: &ContainerRuntime,
        manifest: &Manifest,
        name: &str,
        recreate: bool,
    ) -> Result<Option<String>, String> {
        let Some(module) = manifest.modules.get(name) else {
            return Ok(None);
        };
        let (credential, password) = self.registry_login(manifest, &module.image)?;
        // The registry is asked first (the engine does not go back to it for a digest it
        // has): a refused or unreachable registry is reported even when the image is here.
        let credentials = credential.zip(password.as_deref());
        let pulled = match self.puller.check_access(&module.image, credentials).await {
            Ok(()) => runtime
                .pull(&module.image, credentials)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let mut warning = None;
        if let Err(e) = pulled {
            if runtime.image_present(&module.image).await {
                warning = Some(format!("{e}; running the image already on this device"));
            } else {
                return Err(e);
            }
        }
        if recreate {
            runtime.remove(name).await.map_err(|e| e.to_string())?;
        }
        runtime
            .create(name, module, manifest.version)
            .await
            .map_err(|e| e.to_string())?;
        if module.status == DesiredStatus::Running {
            runtime.start(name).await.map_err(|e| e.to_string())?;
        }
        tracing::info!(module = %name, image = %module.image, "container created");
        Ok(warning)
    }

    /// Applies the restart policies of running container modules.
    async fn watch_containers(&mut self) {
        let (Some(runtime), Some((manifest, _))) = (self.containers.clone(), self.desired.as_ref())
        else {
            return;
        };
        let wanted: Vec<(String, RestartPolicy)> = manifest
            .modules
            .iter()
            .filter(|(_, m)| m.kind == ModuleKind::Container && m.status == DesiredStatus::Running)
            .map(|(n, m)| (n.clone(), m.restart_policy))
            .collect();
        if wanted.is_empty() {
            return;
        }
        let Ok(owned) = runtime.owned().await else {
            return;
        };
        let now = Instant::now();
        let mut changed = owned != self.containers_seen;
        for (name, policy) in wanted {
            let Some(c) = owned.get(&name) else { continue };
            let observed = Observed {
                running: c.running,
                exit_code: c.exit_code,
                unhealthy: c.unhealthy,
            };
            let state = self.container_restarts.entry(name.clone()).or_default();
            let before = state.status(policy, observed);
            if state.decide(policy, observed, now) == Decision::Restart {
                tracing::info!(module = %name, restarts = state.restart_count, "restarting container");
                if c.running {
                    let _ = runtime.stop(&name).await;
                }
                if let Err(e) = runtime.start(&name).await {
                    self.container_errors.insert(name.clone(), e.to_string());
                }
                changed = true;
            }
            changed |= state.status(policy, observed) != before;
        }
        self.containers_seen = owned;
        if changed {
            self.report();
        }
    }

    /// Answers a fleet command: `logs` (a container module's recent output, capped) or
    /// `restart` (one container module). The result goes to `commands/<name>/result`.
    async fn on_command(&mut self, name: &str, payload: &[u8]) {
        let request: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
        let module = request["module"].as_str().unwrap_or_default().to_owned();
        let is_container = self.desired.as_ref().is_some_and(|(m, _)| {
            m.modules
                .get(&module)
                .is_some_and(|m| m.kind == ModuleKind::Container)
        });
        let result = match (name, self.containers.clone()) {
            _ if !is_container => Err(format!(
                "{module:?} is not a container module of this device"
            )),
            (_, None) => Err(format!(
                "the Docker engine at {} is not reachable",
                self.config.docker.socket
            )),
            ("logs", Some(runtime)) => {
                let tail = request["tail"].as_u64().unwrap_or(100);
                let since = request["since"].as_i64().unwrap_or(0);
                runtime
                    .logs(&module, tail, since, COMMAND_RESULT_MAX_BYTES)
                    .await
                    .map(|logs| json!({"logs": logs}))
                    .map_err(|e| e.to_string())
            }
            ("restart", Some(runtime)) => {
                let stopped = runtime.stop(&module).await;
                match stopped.and(runtime.start(&module).await) {
                    Ok(()) => {
                        if let Some(state) = self.container_restarts.get_mut(&module) {
                            state.restart_count += 1;
                        }
                        Ok(json!({"restarted": module}))
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            (other, _) => Err(format!(
                "unknown command {other:?} (commands: logs, restart)"
            )),
        };
        let mut body = match result {
            Ok(mut ok) => {
                ok["status"] = json!(200);
                ok
            }
            Err(error) => json!({"status": 400, "error": error}),
        };
        body["requestId"] = request["requestId"].clone();
        body["module"] = json!(module);
        let (Some(outgoing), Ok(topics)) = (
            &self.outgoing,
            DeviceTopics::new(&self.config.fleet, &self.config.device_id),
        ) else {
            return;
        };
        let _ = outgoing
            .send(link::OutgoingMessage {
                topic: topics.command_result(name),
                payload: body.to_string().into_bytes(),
            })
            .await;
    }

    /// Removes images unused for longer than the grace period, unless a container of the
    /// engine still uses them.
    async fn remove_unused_images(&mut self) {
        let Some(runtime) = self.containers.clone() else {
            return;
        };
        let Ok(mut unused) = self.store.unused_images() else {
            return;
        };
        let grace_ms = self.config.docker.image_grace_seconds.saturating_mul(1000);
        let due: Vec<String> = unused
            .iter()
            .filter(|(_, since)| now_ms().saturating_sub(**since) >= grace_ms)
            .map(|(image, _)| image.clone())
            .collect();
        if due.is_empty() {
            return;
        }
        for image in due {
            match runtime.image_in_use(&image).await {
                Ok(false) => match runtime.remove_image(&image).await {
                    Ok(()) => {
                        tracing::info!(%image, "removed an image no manifest uses");
                        unused.remove(&image);
                    }
                    Err(e) => tracing::warn!(%image, error = %e, "unused image not removed"),
                },
                // Still used by a container (ours or not): forget it; it is never removed.
                Ok(true) => {
                    unused.remove(&image);
                }
                Err(e) => tracing::warn!(error = %e, "cannot list containers"),
            }
        }
        if let Err(e) = self.store.put_unused_images(&unused) {
            tracing::warn!(error = %e, "cannot record unused images");
        }
    }

    fn container_states(&self) -> BTreeMap<String, ModuleState> {
        let Some((manifest, _)) = &self.desired else {
            return BTreeMap::new();
        };
        manifest
            .modules
            .iter()
            .filter(|(_, m)| m.kind == ModuleKind::Container)
            .map(|(name, module)| {
                let seen = self.containers_seen.get(name);
                let restarts = self
                    .container_restarts
                    .get(name)
                    .cloned()
                    .unwrap_or_default();
                let runtime_status = match seen {
                    Some(c) => {
                        let observed = Observed {
                            running: c.running,
                            exit_code: c.exit_code,
                            unhealthy: c.unhealthy,
                        };
                        restarts.status(module.restart_policy, observed)
                    }
                    None if self.container_errors.contains_key(name) => RuntimeStatus::Failed,
                    None => RuntimeStatus::Pulling,
                };
                let state = ModuleState {
                    kind: ModuleKind::Container,
                    runtime_status,
                    image: module.image.clone(),
                    image_digest: module.image.split_once('@').map(|(_, d)| d.to_owned()),
                    restart_count: restarts.restart_count,
                    exit_code: seen
                        .and_then(|c| c.exit_code)
                        .filter(|_| seen.is_some_and(|c| !c.running)),
                    last_start_ms: seen
                        .and_then(|c| c.started_at.as_deref())
                        .and_then(unix_millis),
                    last_error: self.container_errors.get(name).cloned(),
                    inference: None,
                };
                (name.clone(), state)
            })
            .collect()
    }

    fn records(&self) -> BTreeMap<String, ModuleRecord> {
        self.modules
            .iter()
            .map(|(name, s)| {
                let a = s.module.active();
                (
                    name.clone(),
                    ModuleRecord {
                        image: a.image.clone(),
                        digest: a.digest.clone(),
                        blobs: a.blobs.clone(),
                    },
                )
            })
            .collect()
    }

    /// The manifest's credentials for `image`'s registry, with the password unsealed.
    fn registry_login<'m>(
        &self,
        manifest: &'m Manifest,
        image: &str,
    ) -> Result<(Option<&'m RegistryCredential>, Option<String>), String> {
        let credential = manifest.credential_for_image(image);
        let password = match credential {
            Some(c) => Some(self.identity.unseal(&c.password).map_err(|e| {
                format!(
                    "registry {}: cannot unseal the password sealed for this device: {e}",
                    c.address
                )
            })?),
            None => None,
        };
        Ok((credential, password))
    }

    /// Pull, load and canary a module's image. Nothing changes for the running modules.
    async fn activate(
        &self,
        manifest: &Manifest,
        name: &str,
        module: &Module,
    ) -> Result<ActiveModel, String> {
        let (credential, password) = self.registry_login(manifest, &module.image)?;
        let pulled = self
            .puller
            .pull_model(&module.image, credential.zip(password.as_deref()))
            .await
            .map_err(|e| e.to_string())?;
        let runtime = self.runtime;
        let name = name.to_owned();
        let image = module.image.clone();
        tokio::task::spawn_blocking(move || {
            let model = runtime
                .model(&pulled.model)
                .map_err(|e| format!("model of {image} does not load: {e}"))?;
            let metadata = pulled
                .metadata
                .unwrap_or_else(|| metadata_from_model(&name, &model));
            canary(&model, &metadata).map_err(|e| format!("{image} failed its canary: {e}"))?;
            Ok(ActiveModel {
                model,
                metadata,
                image,
                digest: pulled.digest,
                blobs: pulled.blobs,
            })
        })
        .await
        .map_err(|e| format!("activation task failed: {e}"))?
    }

    /// Makes `active` the serving version of `name`, starting its server when needed.
    fn install(
        &mut self,
        name: &str,
        active: ActiveModel,
        serving: Option<ModelServing>,
    ) -> Result<(), String> {
        if let Some(served) = self.modules.get(name) {
            served.module.swap(active);
            return self.reconfigure(name, serving);
        }
        let module = Arc::new(ModelModule::new(
            name,
            active,
            serving.clone().unwrap_or_else(no_http),
        ));
        let server = match &serving {
            Some(s) => Some(self.start_server(module.clone(), s)?),
            None => None,
        };
        tracing::info!(module = %name, image = %module.active().image, "serving");
        self.modules
            .insert(name.to_owned(), Served { module, server });
        Ok(())
    }

    fn reconfigure(&mut self, name: &str, serving: Option<ModelServing>) -> Result<(), String> {
        let Some(served) = self.modules.get(name) else {
            return Err("module is not running".into());
        };
        let module = served.module.clone();
        let want: Option<SocketAddr> = serving.as_ref().and_then(|s| addr(&self.config, s).ok());
        let have = served.server.as_ref().map(|s| s.addr);
        module.set_serving(serving.clone().unwrap_or_else(no_http));
        if want == have && serving.is_some() == have.is_some() {
            return Ok(());
        }
        if let Some(served) = self.modules.get_mut(name)
            && let Some(old) = served.server.take()
        {
            let _ = old.stop.send(());
        }
        let server = match &serving {
            Some(s) => Some(self.start_server(module, s)?),
            None => None,
        };
        if let Some(served) = self.modules.get_mut(name) {
            served.server = server;
        }
        Ok(())
    }

    fn start_server(
        &self,
        module: Arc<ModelModule>,
        serving: &ModelServing,
    ) -> Result<Server, String> {
        let addr = addr(&self.config, serving)?;
        let std_listener = std::net::TcpListener::bind(addr)
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let listener = tokio::net::TcpListener::from_std(std_listener)
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let router = scoring_api::router(
            module,
            self.outbox.clone(),
            self.config.telemetry.max_request_bytes,
        );
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(%addr, error = %e, "scoring API stopped");
            }
        });
        Ok(Server { addr, stop })
    }

    fn remove(&mut self, name: &str) {
        if let Some(served) = self.modules.remove(name) {
            tracing::info!(module = %name, "removed");
            if let Some(server) = served.server {
                let _ = server.stop.send(());
            }
        }
    }

    /// Scores a message from a model module's MQTT input topic; the result is telemetry.
    fn on_input(&self, name: &str, payload: Vec<u8>) {
        let Some(served) = self.modules.get(name) else {
            tracing::debug!(module = %name, "input for a module that is not running");
            return;
        };
        if !served.module.serving().mqtt_input {
            return;
        }
        let module = served.module.clone();
        let outbox = self.outbox.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let scored = tokio::task::spawn_blocking({
                let module = module.clone();
                move || {
                    let request: serde_json::Value = serde_json::from_slice(&payload)
                        .map_err(|e| format!("input is not valid JSON: {e}"))?;
                    module
                        .active()
                        .model
                        .score(&request)
                        .map_err(|e| e.to_string())
                }
            })
            .await
            .unwrap_or_else(|e| Err(format!("inference task failed: {e}")));
            let latency_us = started.elapsed().as_micros() as u64;
            module.observe(latency_us, scored.is_ok());
            let (kind, body) = match scored {
                Ok(outputs) => (
                    TelemetryKind::Inference,
                    json!({"source": "mqtt", "latencyUs": latency_us, "outputs": outputs}),
                ),
                Err(error) => (
                    TelemetryKind::Event,
                    json!({"source": "mqtt", "error": error}),
                ),
            };
            if let Err(e) = outbox.record(&module.name, kind, body).await {
                tracing::warn!(module = %module.name, error = %e, "inference record not accepted");
            }
        });
    }

    fn report_if_inferences_changed(&mut self) {
        let count: u64 = self.modules.values().map(|s| s.module.stats().count).sum();
        if count != self.reported_inferences {
            self.reported_inferences = count;
            self.report();
        }
    }

    async fn on_tick(&mut self) {
        if let Some((manifest, _)) = &self.desired {
            let cutoff =
                now_ms().saturating_sub(manifest.telemetry.ttl_seconds.saturating_mul(1000));
            match self.store.expire_outbox(cutoff) {
                Ok(0) => {}
                Ok(n) => tracing::warn!(expired = n, "telemetry older than its TTL dropped"),
                Err(e) => tracing::error!(error = %e, "outbox expiry failed"),
            }
        }
        let state = self.reported_state();
        let body = json!({"modules": state.modules, "outbox": state.outbox});
        let _ = self.outbox.submit("_agent", TelemetryKind::Metric, body);
        self.report();
    }

    fn set_outcome(&mut self, version: Option<u64>, status: ApplyStatus, message: String) {
        let outcome = DesiredOutcome {
            version,
            status,
            message,
        };
        if let Err(e) = self.store.put_outcome(&outcome) {
            tracing::error!(error = %e, "cannot store the manifest outcome");
        }
        self.outcome = Some(outcome);
        self.report();
    }

    fn reported_state(&self) -> ReportedState {
        let mut modules = BTreeMap::new();
        for (name, served) in &self.modules {
            let active = served.module.active();
            modules.insert(
                name.clone(),
                ModuleState {
                    kind: ModuleKind::Model,
                    runtime_status: RuntimeStatus::Running,
                    image: active.image.clone(),
                    image_digest: Some(active.digest.clone()),
                    restart_count: 0,
                    exit_code: None,
                    last_start_ms: None,
                    last_error: self.failures.get(name).cloned(),
                    inference: Some(served.module.stats()),
                },
            );
        }
        if let Some((manifest, _)) = &self.desired {
            for (name, error) in &self.failures {
                if self.modules.contains_key(name) {
                    continue;
                }
                let (kind, image) = manifest
                    .modules
                    .get(name)
                    .map_or((ModuleKind::Model, String::new()), |m| {
                        (m.kind, m.image.clone())
                    });
                modules.insert(
                    name.clone(),
                    ModuleState {
                        kind,
                        runtime_status: RuntimeStatus::Failed,
                        image,
                        image_digest: None,
                        restart_count: 0,
                        exit_code: None,
                        last_start_ms: None,
                        last_error: Some(error.clone()),
                        inference: None,
                    },
                );
            }
        }
        modules.extend(self.container_states());
        ReportedState {
            schema_version: REPORTED_SCHEMA_VERSION.to_owned(),
            device_id: self.config.device_id.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            applied_version: self.applied_version,
            last_desired: self.outcome.clone(),
            modules,
            outbox: self.store.outbox_state().unwrap_or_default(),
            reported_at_ms: now_ms(),
        }
    }

    fn report(&self) {
        let state = self.reported_state();
        if let Ok(bytes) = serde_json::to_vec(&state) {
            self.reported.send_replace(bytes);
        }
    }
}

/// Where a model module's scoring API listens: the device's configured address, else the
/// manifest's.
fn addr(config: &Config, serving: &ModelServing) -> Result<SocketAddr, String> {
    let host = if config.serving.bind_address.is_empty() {
        &serving.bind_address
    } else {
        &config.serving.bind_address
    };
    format!("{host}:{}", serving.http_port)
        .parse()
        .map_err(|e| format!("invalid bind address {host}:{}: {e}", serving.http_port))
}

/// Serving options of a model module without an HTTP endpoint (MQTT input only).
fn no_http() -> ModelServing {
    ModelServing {
        http_port: 0,
        bind_address: String::new(),
        auth_key_sha256: Vec::new(),
        mqtt_input: true,
        data_collection_ppm: 0,
    }
}

/// Milliseconds since the Unix epoch of an RFC 3339 UTC time as Docker writes it
/// (`2026-11-21T20:26:15.382889Z`).
fn unix_millis(time: &str) -> Option<u64> {
    let (date, rest) = time.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let clock = rest.trim_end_matches('Z');
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, "0"));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let millis: i64 = fraction
        .get(..3.min(fraction.len()))
        .and_then(|f| format!("{f:0<3}").parse().ok())
        .unwrap_or(0);
    u64::try_from(((days * 24 + hh) * 60 + mm) * 60_000 + ss * 1000 + millis).ok()
}

#[cfg(test)]
mod tests {
    use super::unix_millis;

    #[test]
    fn docker_times_convert_to_unix_millis() {
        assert_eq!(unix_millis("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            unix_millis("2026-11-21T20:26:15.382889Z"),
            Some(1_795_292_775_382)
        );
        assert_eq!(unix_millis("garbage"), None);
    }
}
