//! A container module's task: creates, recreates, starts and stops its container as the
//! manifest says (pulls run beside the task's commands, so a slow pull never stops it from
//! answering), applies the restart policy, answers the fleet's `restart`, and retries with
//! backoff when the module could not be applied.

use std::sync::Arc;
use std::time::{Duration, Instant};

use edgefleet_common::commands::{CommandOutcome, CommandResult};
use edgefleet_common::manifest::{
    ContainerSpec, DesiredStatus, ImagePullPolicy, Module, ModuleKind, RegistryCredential,
};
use edgefleet_common::reported::{ModuleState, RuntimeStatus};
use edgefleet_transport::now_ms;
use tokio::sync::mpsc;

use crate::images::container_runtime::{
    ContainerRuntime, OwnedContainer, spec_digest, unix_millis,
};
use crate::images::disk_budget::Usage;
use crate::modules::module_task::{
    Assignment, Backoff, ModuleError, ModuleEvent, ModuleHandle, Services,
};
use crate::modules::reconciler::{ActualContainer, ContainerOperation, plan_container};
use crate::modules::restart_policy::{Decision, Observed, RestartState};
use crate::modules::task_driver::{ModuleKindTask, Work, drive};
use crate::telemetry::link::InputAck;

/// How often the container is checked against its restart policy.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Starts the task of container module `name`; `adopted` is its container found on the
/// engine when the agent started.
pub(crate) fn spawn(
    name: &str,
    services: Arc<Services>,
    adopted: Option<OwnedContainer>,
) -> ModuleHandle {
    let (commands, rx) = mpsc::unbounded_channel();
    let task = ContainerTask {
        name: name.to_owned(),
        services,
        assignment: None,
        seen: adopted,
        restarts: RestartState::default(),
        error: None,
        failing: false,
        backoff: Backoff::default(),
    };
    ModuleHandle {
        kind: ModuleKind::Container,
        commands,
        task: tokio::spawn(drive(task, rx)),
    }
}

#[derive(Debug)]
struct ContainerTask {
    name: String,
    services: Arc<Services>,
    assignment: Option<Assignment>,
    /// The container as last seen on the engine.
    seen: Option<OwnedContainer>,
    restarts: RestartState,
    /// The module's last error, or a warning (a failed pull while the present image runs).
    error: Option<String>,
    /// The last attempt failed (`error` is not a warning): it is retried after the backoff.
    failing: bool,
    backoff: Backoff,
}

impl ContainerTask {
    fn spec(&self) -> Option<&ContainerSpec> {
        match &self.assignment.as_ref()?.module {
            Module::Container(spec) => Some(spec),
            Module::Model(_) => None,
        }
    }

    /// Reads the container's state from the engine.
    async fn refresh(&mut self) {
        if let Some(runtime) = &self.services.containers {
            match runtime.inspect_module(&self.name).await {
                Ok(seen) => self.seen = seen,
                Err(e) => {
                    tracing::warn!(module = %self.name, error = %e, "container not inspected")
                }
            }
        }
    }

    /// Remembers that `image` may be unused now; the image clean-up removes it after the grace
    /// period unless a manifest uses it again.
    fn mark_unused(&self, image: &str) {
        let result = self.services.store.update_unused_images(|images| {
            images.entry(image.to_owned()).or_insert_with(now_ms);
        });
        if let Err(e) = result {
            tracing::warn!(%image, error = %e, "cannot record an unused image");
        }
    }

    /// The module is applied; `warning` (a failed pull while the present image runs) is
    /// reported as its last error.
    fn succeed(&mut self, warning: Option<String>) {
        self.error = warning;
        self.failing = false;
        self.backoff.reset();
        self.report(None);
    }

    fn fail(&mut self, error: String) {
        self.error = Some(error.clone());
        self.failing = true;
        self.report(Some(error));
    }

    /// Tells the supervisor what became of the assignment, and the board what the module is.
    fn report(&self, failure: Option<String>) {
        self.publish_state();
        if let Some(assignment) = &self.assignment {
            let _ = self.services.events.send(ModuleEvent::Applied {
                module: self.name.clone(),
                version: assignment.version,
                failure,
            });
        }
    }

    fn status(&self) -> RuntimeStatus {
        let policy = self.spec().map(|s| s.restart_policy).unwrap_or_default();
        match &self.seen {
            Some(c) => self.restarts.status(policy, observed(c)),
            None if self.error.is_some() => RuntimeStatus::Failed,
            None => RuntimeStatus::Pulling,
        }
    }

    /// Puts the module's state on the status board.
    fn publish_state(&self) {
        let seen = self.seen.as_ref();
        let image = self
            .spec()
            .map(|s| s.image.clone())
            .or_else(|| seen.map(|c| c.image.clone()))
            .unwrap_or_default();
        let state = ModuleState {
            kind: ModuleKind::Container,
            runtime_status: self.status(),
            image_digest: image.split_once('@').map(|(_, d)| d.to_owned()),
            image,
            restart_count: self.restarts.restart_count,
            exit_code: seen.filter(|c| !c.running).and_then(|c| c.exit_code),
            last_start_ms: seen
                .and_then(|c| c.started_at.as_deref())
                .and_then(unix_millis),
            last_error: self.error.clone(),
            warnings: Vec::new(),
            inference: None,
        };
        self.services.board.set_module(&self.name, state, None);
    }
}

impl ModuleKindTask for ContainerTask {
    type Done = Result<Option<String>, ModuleError>;

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
        self.failing
    }

    /// Starts what `assignment` needs from the engine, as work for the task to run beside its
    /// commands; reports at once when nothing is needed.
    async fn apply(&mut self, assignment: Assignment) -> Option<Work<Self::Done>> {
        self.assignment = Some(assignment.clone());
        let Module::Container(spec) = assignment.module else {
            self.fail(
                ModuleError::WrongKind {
                    expected: "container",
                }
                .to_string(),
            );
            return None;
        };
        let Some(runtime) = self.services.containers.clone() else {
            self.fail(self.services.no_engine().to_string());
            return None;
        };
        self.refresh().await;
        let actual = self.seen.as_ref().map(|c| ActualContainer {
            spec: c.spec.clone(),
            running: c.running,
        });
        let name = self.name.clone();
        let operation = plan_container(&spec, actual.as_ref(), spec_digest);
        if matches!(operation, ContainerOperation::Recreate)
            && let Some(old) = &self.seen
            && old.image != spec.image
        {
            self.mark_unused(&old.image);
        }
        let work: Work<Self::Done> = match operation {
            ContainerOperation::Nothing => {
                self.succeed(None);
                return None;
            }
            ContainerOperation::Create | ContainerOperation::Recreate => {
                self.publish_state();
                Box::pin(create_container(
                    self.services.clone(),
                    name,
                    spec,
                    assignment.version,
                    assignment.credential,
                    matches!(operation, ContainerOperation::Recreate),
                ))
            }
            ContainerOperation::Start => {
                Box::pin(async move { Ok(runtime.start(&name).await.map(|()| None)?) })
            }
            ContainerOperation::Stop => {
                Box::pin(async move { Ok(runtime.stop(&name).await.map(|()| None)?) })
            }
        };
        Some(work)
    }

    async fn settle(&mut self, done: Self::Done) {
        self.refresh().await;
        match done {
            Ok(warning) => self.succeed(warning),
            Err(e) => {
                tracing::warn!(module = %self.name, error = %e, "container module not applied");
                self.fail(e.to_string());
            }
        }
    }

    /// The fleet's `restart` command.
    async fn restart(&mut self, request_id: String) {
        let outcome = match &self.services.containers {
            None => CommandOutcome::Failed {
                error: self.services.no_engine().to_string(),
            },
            Some(runtime) => {
                let stopped = runtime.stop(&self.name).await;
                match stopped.and(runtime.start(&self.name).await) {
                    Ok(()) => {
                        self.restarts.restart_count += 1;
                        metrics::counter!("edgefleet_agent_container_restarts_total", "module" => self.name.clone()).increment(1);
                        CommandOutcome::Restarted
                    }
                    Err(e) => CommandOutcome::Failed {
                        error: e.to_string(),
                    },
                }
            }
        };
        self.services.answer(
            "restart",
            &CommandResult {
                request_id,
                module: self.name.clone(),
                outcome,
            },
        );
        self.refresh().await;
        self.publish_state();
    }

    fn input(&mut self, _payload: Vec<u8>, ack: InputAck) {
        let error = format!(
            "{:?} is a container module; MQTT inputs go to model modules",
            self.name
        );
        crate::modules::mqtt_input::refuse(&self.services.outbox, &self.name, error, ack);
    }

    async fn remove(&mut self) {
        if let Some(runtime) = &self.services.containers {
            if let Err(e) = runtime.remove(&self.name).await {
                tracing::warn!(module = %self.name, error = %e, "container not removed");
            }
            if let Some(old) = self.seen.take() {
                self.mark_unused(&old.image);
            }
        }
        self.services.board.remove_module(&self.name);
        let _ = self.services.events.send(ModuleEvent::Removed {
            module: self.name.clone(),
        });
    }

    /// The agent is shutting down; containers keep running without it.
    async fn shut_down(&mut self) {}

    fn watch_every(&self) -> Option<Duration> {
        Some(WATCH_INTERVAL)
    }

    /// Applies the restart policy to what the engine reports now.
    async fn watch(&mut self) {
        let Some(spec) = self.spec().cloned() else {
            return;
        };
        let Some(runtime) = self.services.containers.clone() else {
            return;
        };
        let before = (self.seen.clone(), self.status());
        self.refresh().await;
        if spec.status == DesiredStatus::Running
            && let Some(c) = &self.seen
        {
            let observed = observed(c);
            if self
                .restarts
                .decide(spec.restart_policy, observed, Instant::now())
                == Decision::Restart
            {
                tracing::info!(module = %self.name, restarts = self.restarts.restart_count, "restarting container");
                metrics::counter!("edgefleet_agent_container_restarts_total", "module" => self.name.clone()).increment(1);
                if c.running {
                    let _ = runtime.stop(&self.name).await;
                }
                if let Err(e) = runtime.start(&self.name).await {
                    self.error = Some(e.to_string());
                }
                self.refresh().await;
            }
        }
        if (self.seen.clone(), self.status()) != before {
            self.publish_state();
        }
    }
}

fn observed(c: &OwnedContainer) -> Observed {
    Observed {
        running: c.running,
        exit_code: c.exit_code,
        unhealthy: c.unhealthy,
    }
}

/// Pulls `spec`'s image: the registry is asked first (the engine does not go back to it for a
/// digest it has), so a refused or unreachable registry is reported even when the image is
/// here; an image not here yet must fit the disk budget.
async fn pull_image(
    services: &Services,
    runtime: &ContainerRuntime,
    spec: &ContainerSpec,
    credential: Option<RegistryCredential>,
    present: bool,
) -> Result<(), ModuleError> {
    let login = services.registry_login(credential.as_ref())?;
    let credentials = login.as_ref().map(|(c, p)| (c, p.as_str()));
    let needed = services
        .puller
        .image_bytes(&spec.image, credentials)
        .await?;
    if !present {
        let usage = Usage {
            models: services.puller.cached_bytes()?,
            ..services.usage_besides_models().await
        };
        let free = match runtime.free_bytes().await {
            Some(free) => free,
            None => services.puller.free_bytes()?,
        };
        let what = format!("container image {}", spec.image);
        services.puller.budget().check(&what, needed, usage, free)?;
    }
    let started = std::time::Instant::now();
    runtime.pull(&spec.image, credentials).await?;
    metrics::histogram!("edgefleet_agent_pull_seconds", "kind" => "container")
        .record(started.elapsed().as_secs_f64());
    Ok(())
}

/// Pulls a container module's image (unless its pull policy is `never`) and creates (and starts) its container. A pull that
/// fails while the image is already on the device is not fatal: the module runs and the
/// error is returned as a warning to report.
async fn create_container(
    services: Arc<Services>,
    name: String,
    spec: ContainerSpec,
    version: u64,
    credential: Option<RegistryCredential>,
    recreate: bool,
) -> Result<Option<String>, ModuleError> {
    let runtime = services
        .containers
        .clone()
        .ok_or_else(|| services.no_engine())?;
    let mut warning = None;
    match spec.image_pull_policy {
        ImagePullPolicy::Never => {
            if !runtime.image_present(&spec.image).await {
                return Err(ModuleError::ImageNotOnDevice(spec.image.clone()));
            }
        }
        ImagePullPolicy::OnCreate => {
            let local = runtime.local_image(&spec.image).await;
            // An image a bundle brought is pinned and was checked when it was loaded: the
            // registry is not needed (the device may well be offline).
            if local.as_ref().is_some_and(|name| *name != spec.image) {
                tracing::debug!(image = %spec.image, "using the image a bundle loaded");
            } else if let Err(e) =
                pull_image(&services, &runtime, &spec, credential, local.is_some()).await
            {
                if local.is_some() {
                    warning = Some(format!("{e}; running the image already on this device"));
                } else {
                    return Err(e);
                }
            }
        }
    }
    if recreate {
        runtime.remove(&name).await?;
    }
    runtime.create(&name, &spec, version).await?;
    if spec.status == DesiredStatus::Running {
        runtime.start(&name).await?;
    }
    tracing::info!(module = %name, image = %spec.image, "container created");
    Ok(warning)
}
