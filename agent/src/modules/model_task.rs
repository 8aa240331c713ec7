//! A model module's task: activates the image the manifest names (pull, load, canary) while
//! the version it serves keeps answering, swaps to it, serves the scoring API on the
//! manifest's port, and retries with backoff when an activation fails.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use edgefleet_common::commands::{CommandOutcome, CommandResult};
use edgefleet_common::manifest::{
    BatchInput, ModelServing, ModelSpec, Module, ModuleKind, SessionOptions,
};
use edgefleet_common::reported::{ModuleState, RuntimeStatus};
use edgefleet_onnx::canary::{canary, metadata_from_model};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::modules::module_task::{
    Assignment, Backoff, ModuleError, ModuleEvent, ModuleHandle, Services,
};
use crate::modules::mqtt_input;
use crate::modules::reconciler::{ModelOperation, ServedModel, plan_model};
use crate::modules::task_driver::{ModuleKindTask, Work, drive};
use crate::serving::model_module::{ActiveModel, ModelModule};
use crate::serving::scoring_api;
use crate::store::ModuleRecord;
use crate::telemetry::link::InputAck;

/// Inputs kept for a module that is not serving yet; more are recorded as refused.
const MAX_WAITING_INPUTS: usize = 10_000;

/// How long a stopping scoring API may take to finish its requests before it is cut off.
const SERVER_STOP_GRACE: Duration = Duration::from_secs(5);

/// What a model module served before the agent restarted, to serve again from the cache.
#[derive(Debug, Clone)]
pub(crate) struct Restore {
    pub record: ModuleRecord,
    pub serving: Option<ModelServing>,
    pub session: SessionOptions,
}

/// Starts the task of model module `name`.
pub(crate) fn spawn(name: &str, services: Arc<Services>, restore: Option<Restore>) -> ModuleHandle {
    let (commands, rx) = mpsc::unbounded_channel();
    let task = ModelTask {
        name: name.to_owned(),
        services,
        served: None,
        server: None,
        assignment: None,
        error: None,
        backoff: Backoff::default(),
        waiting_inputs: Vec::new(),
        batch: None,
    };
    ModuleHandle {
        kind: ModuleKind::Model,
        commands,
        task: tokio::spawn(async move {
            let mut task = task;
            if let Some(restore) = restore {
                task.restore(restore).await;
            }
            drive(task, rx).await;
        }),
    }
}

/// The scoring API of the served version.
#[derive(Debug)]
struct Server {
    addr: SocketAddr,
    server: scoring_api::ScoringServer,
}

#[derive(Debug)]
struct ModelTask {
    name: String,
    services: Arc<Services>,
    served: Option<Arc<ModelModule>>,
    server: Option<Server>,
    /// The manifest's part for this module, once one came.
    assignment: Option<Assignment>,
    /// Why the module is not what its assignment asks, when it is not (for the operator).
    error: Option<String>,
    backoff: Backoff,
    /// MQTT inputs that arrived before anything served (at start, during the first
    /// activation), scored once something does.
    waiting_inputs: Vec<(Vec<u8>, InputAck)>,
    /// The watcher of the batch directory, with what it was started for.
    batch: Option<(BatchInput, JoinHandle<()>)>,
}

impl ModelTask {
    fn spec(&self) -> Option<&ModelSpec> {
        match &self.assignment.as_ref()?.module {
            Module::Model(spec) => Some(spec),
            Module::Container(_) => None,
        }
    }

    /// Makes `active` the serving version, starting or moving the scoring API as `serving` says.
    async fn install(
        &mut self,
        active: ActiveModel,
        serving: Option<ModelServing>,
    ) -> Result<(), ModuleError> {
        let record = ModuleRecord {
            image: active.image.clone(),
            digest: active.digest.clone(),
            blobs: active.blobs.clone(),
        };
        match &self.served {
            Some(module) => module.swap(active),
            None => {
                let module =
                    ModelModule::new(&self.name, active, serving.clone().unwrap_or_else(no_http));
                self.served = Some(Arc::new(module));
            }
        }
        for (payload, ack) in std::mem::take(&mut self.waiting_inputs) {
            self.input(payload, ack);
        }
        if let Err(e) = self.services.store.put_module(&self.name, &record) {
            tracing::error!(module = %self.name, error = %e, "the served version is not remembered");
        }
        tracing::info!(module = %self.name, image = %record.image, "serving");
        crate::serving::resident_memory::release_file_pages();
        self.configure_batch(self.spec().and_then(|s| s.batch.clone()));
        self.configure_server(serving).await
    }

    /// Serves again what the store says this module served, from the cache, without the
    /// network.
    async fn restore(&mut self, restore: Restore) {
        let services = self.services.clone();
        let name = self.name.clone();
        let record = restore.record;
        let session = restore.session;
        let loaded = tokio::task::spawn_blocking(move || {
            let (bytes, metadata) = services.puller.load_cached(&record.blobs)?;
            let (model, warnings) =
                services
                    .onnx()?
                    .model_with(&bytes, &session)
                    .map_err(|source| ModuleError::Load {
                        image: record.image.clone(),
                        source: Box::new(source),
                    })?;
            let metadata = metadata.unwrap_or_else(|| metadata_from_model(&name, &model));
            Ok::<_, ModuleError>(ActiveModel {
                model,
                metadata,
                image: record.image,
                digest: record.digest,
                blobs: record.blobs,
                session,
                warnings,
            })
        })
        .await
        .unwrap_or_else(|e| Err(ModuleError::Task("restoring", e)));
        let restored = match loaded {
            Ok(active) => self.install(active, restore.serving).await,
            Err(e) => Err(e),
        };
        if let Err(e) = restored {
            tracing::warn!(module = %self.name, error = %e, "cached module could not be restored");
            self.error = Some(e.to_string());
        }
        self.publish_state();
    }

    /// Starts, moves or stops the scoring API so that it serves as `serving` says.
    async fn configure_server(&mut self, serving: Option<ModelServing>) -> Result<(), ModuleError> {
        let Some(module) = self.served.clone() else {
            // Nothing serves yet: the activation starts the server.
            return Ok(());
        };
        module.set_serving(serving.clone().unwrap_or_else(no_http));
        let want = match &serving {
            Some(s) => Some(addr(&self.services, s)?),
            None => None,
        };
        if want == self.server.as_ref().map(|s| s.addr) {
            return Ok(());
        }
        self.stop_server().await;
        if let Some(addr) = want {
            self.server = Some(start_server(&self.services, module, addr)?);
        }
        Ok(())
    }

    /// Starts, moves or stops the watcher of the batch directory as `batch` says.
    fn configure_batch(&mut self, batch: Option<BatchInput>) {
        if self.batch.as_ref().map(|(input, _)| input) == batch.as_ref() {
            return;
        }
        if let Some((_, task)) = self.batch.take() {
            task.abort();
        }
        let (Some(input), Some(module)) = (batch, self.served.clone()) else {
            return;
        };
        let dir = if input.dir.is_empty() {
            self.services.config.data_dir.join("batch").join(&self.name)
        } else {
            input.dir.clone().into()
        };
        let task = tokio::spawn(crate::serving::batch_scoring::watch(module, dir));
        self.batch = Some((input, task));
    }

    async fn stop_server(&mut self) {
        let Some(server) = self.server.take() else {
            return;
        };
        server.server.stop(SERVER_STOP_GRACE).await;
    }

    fn succeed(&mut self) {
        self.error = None;
        self.backoff.reset();
        self.report();
    }

    fn fail(&mut self, error: String) {
        self.error = Some(error);
        self.report();
    }

    /// Tells the supervisor what became of the assignment, and the board what the module is.
    fn report(&self) {
        self.publish_state();
        if let Some(assignment) = &self.assignment {
            let _ = self.services.events.send(ModuleEvent::Applied {
                module: self.name.clone(),
                version: assignment.version,
                failure: self.error.clone(),
            });
        }
    }

    /// Puts the module's state on the status board.
    fn publish_state(&self) {
        let (runtime_status, image, digest, warnings) = match &self.served {
            Some(m) => {
                let active = m.active();
                (
                    RuntimeStatus::Running,
                    active.image.clone(),
                    Some(active.digest.clone()),
                    active.warnings.clone(),
                )
            }
            None => {
                let status = if self.error.is_some() {
                    RuntimeStatus::Failed
                } else {
                    RuntimeStatus::Pulling
                };
                let image = self.spec().map(|s| s.image.clone()).unwrap_or_default();
                (status, image, None, Vec::new())
            }
        };
        let state = ModuleState {
            kind: ModuleKind::Model,
            runtime_status,
            image,
            image_digest: digest,
            restart_count: 0,
            exit_code: None,
            last_start_ms: None,
            last_error: self.error.clone(),
            warnings,
            inference: None,
        };
        self.services
            .board
            .set_module(&self.name, state, self.served.clone());
    }
}

impl ModuleKindTask for ModelTask {
    type Done = Result<ActiveModel, ModuleError>;

    fn name(&self) -> &str {
        &self.name
    }

    fn assignment(&self) -> Option<&Assignment> {
        self.assignment.as_ref()
    }

    fn backoff(&mut self) -> &mut Backoff {
        &mut self.backoff
    }

    fn failing(&self) -> bool {
        self.error.is_some()
    }

    /// Starts what `assignment` needs: nothing, a new serving configuration (done here, it is
    /// local and quick), or an activation (returned, for the task to run beside its commands).
    async fn apply(&mut self, assignment: Assignment) -> Option<Work<Self::Done>> {
        self.assignment = Some(assignment.clone());
        let Module::Model(spec) = assignment.module else {
            self.fail(ModuleError::WrongKind { expected: "model" }.to_string());
            return None;
        };
        let actual = self.served.as_ref().map(|m| {
            let active = m.active();
            ServedModel {
                image: active.image.clone(),
                session: active.session.clone(),
                serving: self.server.as_ref().map(|_| (**m.serving()).clone()),
                batch: self.batch.as_ref().map(|(input, _)| input.clone()),
            }
        });
        match plan_model(&spec, actual.as_ref()) {
            ModelOperation::Nothing => {
                self.succeed();
                None
            }
            ModelOperation::Reconfigure => {
                self.configure_batch(spec.batch.clone());
                match self.configure_server(spec.serving.clone()).await {
                    Ok(()) => self.succeed(),
                    Err(e) => self.fail(e.to_string()),
                }
                None
            }
            ModelOperation::Activate => {
                self.publish_state();
                Some(Box::pin(activate(
                    self.services.clone(),
                    self.name.clone(),
                    spec.image,
                    spec.session,
                    assignment.credential,
                )))
            }
        }
    }

    /// Serves a finished activation, or reports why it failed.
    async fn settle(&mut self, result: Self::Done) {
        let serving = self.spec().and_then(|s| s.serving.clone());
        let installed = match result {
            Ok(active) => self.install(active, serving).await,
            Err(e) => Err(e),
        };
        match installed {
            Ok(()) => self.succeed(),
            Err(e) => {
                let e = match &self.served {
                    Some(m) => format!("{e}; still serving {}", m.active().image),
                    None => e.to_string(),
                };
                tracing::warn!(module = %self.name, error = %e, "activation failed");
                self.fail(e);
            }
        }
    }

    /// Only container modules restart.
    async fn restart(&mut self, request_id: String) {
        self.services.answer(
            "restart",
            &CommandResult {
                request_id,
                module: self.name.clone(),
                outcome: CommandOutcome::Failed {
                    error: format!(
                        "{:?} is a model module; only container modules restart",
                        self.name
                    ),
                },
            },
        );
    }

    /// Scores an input with the served version, or keeps it until a version serves.
    fn input(&mut self, payload: Vec<u8>, ack: InputAck) {
        let outbox = &self.services.outbox;
        match &self.served {
            Some(module) if module.serving().mqtt_input => {
                mqtt_input::score(module.clone(), outbox.clone(), payload, ack);
            }
            Some(_) => {
                let error = format!(
                    "{:?} does not take MQTT inputs (its serving.mqttInput is false)",
                    self.name
                );
                mqtt_input::refuse(outbox, &self.name, error, ack);
            }
            None if self.waiting_inputs.len() < MAX_WAITING_INPUTS => {
                self.waiting_inputs.push((payload, ack));
            }
            None => {
                let error = format!(
                    "{:?} is not serving yet and {MAX_WAITING_INPUTS} inputs already wait for it",
                    self.name
                );
                mqtt_input::refuse(outbox, &self.name, error, ack);
            }
        }
    }

    async fn remove(&mut self) {
        for (_, ack) in std::mem::take(&mut self.waiting_inputs) {
            let error = format!("{:?} was removed before it served", self.name);
            mqtt_input::refuse(&self.services.outbox, &self.name, error, ack);
        }
        self.stop_server().await;
        self.configure_batch(None);
        self.served = None;
        if let Err(e) = self.services.store.remove_module(&self.name) {
            tracing::warn!(module = %self.name, error = %e, "removed module not forgotten");
        }
        tracing::info!(module = %self.name, "removed");
        self.services.board.remove_module(&self.name);
        let _ = self.services.events.send(ModuleEvent::Removed {
            module: self.name.clone(),
        });
    }

    /// The agent is shutting down: the scoring API finishes its requests first.
    async fn shut_down(&mut self) {
        self.stop_server().await;
    }
}

/// Pulls, loads and canaries `image`. Nothing changes for the version being served.
async fn activate(
    services: Arc<Services>,
    name: String,
    image: String,
    session: SessionOptions,
    credential: Option<edgefleet_common::manifest::RegistryCredential>,
) -> Result<ActiveModel, ModuleError> {
    let login = services.registry_login(credential.as_ref())?;
    let usage = services.usage_besides_models().await;
    let started = std::time::Instant::now();
    let pulled = services
        .puller
        .pull_model(&image, login.as_ref().map(|(c, p)| (c, p.as_str())), usage)
        .await?;
    metrics::histogram!("edgefleet_agent_pull_seconds", "kind" => "model")
        .record(started.elapsed().as_secs_f64());
    let onnx = services.onnx()?;
    tokio::task::spawn_blocking(move || {
        let (model, warnings) =
            onnx.model_with(&pulled.model, &session)
                .map_err(|source| ModuleError::Load {
                    image: image.clone(),
                    source: Box::new(source),
                })?;
        let metadata = pulled
            .metadata
            .unwrap_or_else(|| metadata_from_model(&name, &model));
        canary(&model, &metadata).map_err(|source| ModuleError::Canary {
            image: image.clone(),
            source: Box::new(source),
        })?;
        Ok(ActiveModel {
            model,
            metadata,
            image,
            digest: pulled.digest,
            blobs: pulled.blobs,
            session,
            warnings,
        })
    })
    .await
    .map_err(|e| ModuleError::Task("activation", e))?
}

fn start_server(
    services: &Services,
    module: Arc<ModelModule>,
    addr: SocketAddr,
) -> Result<Server, ModuleError> {
    let listen = |source| ModuleError::Listen { addr, source };
    let std_listener = std::net::TcpListener::bind(addr).map_err(listen)?;
    std_listener.set_nonblocking(true).map_err(listen)?;
    let listener = tokio::net::TcpListener::from_std(std_listener).map_err(listen)?;
    let (outbox, limits) = (
        services.outbox.clone(),
        scoring_api::ScoringLimits::from_config(&services.config),
    );
    let router = move || scoring_api::router(module.clone(), outbox.clone(), limits);
    let server = scoring_api::ScoringServer::start(listener, router).map_err(listen)?;
    Ok(Server { addr, server })
}

/// Where a model module's scoring API listens: the device's configured address, else the
/// manifest's.
fn addr(services: &Services, serving: &ModelServing) -> Result<SocketAddr, ModuleError> {
    let configured = &services.config.serving.bind_address;
    let host = if configured.is_empty() {
        &serving.bind_address
    } else {
        configured
    };
    let address = format!("{host}:{}", serving.http_port);
    address
        .parse()
        .map_err(|source| ModuleError::BindAddress { address, source })
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
