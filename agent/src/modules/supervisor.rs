//! The supervisor: the agent's routing loop. It verifies manifests, hands each module its part
//! through the module's own task (phase by phase, as the reconciler plans), turns the tasks'
//! answers into the manifest's outcome, routes MQTT inputs to the served models and fleet
//! commands to the modules. Everything slow (pulls, activations, engine calls, the link, the
//! reporter, the image clean-up) runs in tasks of its own: the loop never awaits the network.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use edgefleet_common::manifest::{Manifest, Module, ModuleKind, TelemetrySettings};
use edgefleet_common::reported::{ApplyStatus, DesiredOutcome, ManifestSource};
use edgefleet_common::signing::FleetPublicKey;
use tokio::sync::{mpsc, oneshot, watch};

use crate::broker_login;
use crate::modules::apply_progress::{ApplyProgress, Verdict};
use crate::modules::container_task;
use crate::modules::model_task;
use crate::modules::module_task::{Assignment, ModuleCommand, ModuleEvent, ModuleHandle, Services};
use crate::modules::mqtt_input;
use crate::modules::reconciler::{Step, plan};
use crate::telemetry::link::{Inbound, InputAck};
use edgefleet_common::create_options;

mod commands;

/// How long module tasks get to finish when the agent stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub(crate) struct Supervisor {
    services: Arc<Services>,
    fleet_key: FleetPublicKey,
    tasks: BTreeMap<String, ModuleHandle>,
    /// The manifest being applied or applied, verified, with its wire bytes.
    desired: Option<(Manifest, Vec<u8>)>,
    progress: Option<ApplyProgress>,
    /// Modules told to remove themselves that have not answered yet.
    removing: BTreeSet<String>,
    /// Modules the manifest wants whose previous task is still being removed.
    deferred: BTreeSet<String>,
    applied_version: Option<u64>,
    /// Where the desired manifest came from.
    desired_source: ManifestSource,
    /// Bundle imports waiting for the outcome of a manifest version.
    waiting: Vec<(u64, oneshot::Sender<DesiredOutcome>)>,
    /// The desired manifest's telemetry settings, for the reporter.
    telemetry: watch::Sender<TelemetrySettings>,
    /// The container images the desired manifest uses, for the image clean-up.
    wanted_images: watch::Sender<BTreeSet<String>>,
}

impl Supervisor {
    pub fn new(
        services: Arc<Services>,
        fleet_key: FleetPublicKey,
        telemetry: watch::Sender<TelemetrySettings>,
        wanted_images: watch::Sender<BTreeSet<String>>,
    ) -> Self {
        Self {
            services,
            fleet_key,
            tasks: BTreeMap::new(),
            desired: None,
            progress: None,
            removing: BTreeSet::new(),
            deferred: BTreeSet::new(),
            applied_version: None,
            desired_source: ManifestSource::Fleet,
            waiting: Vec::new(),
            telemetry,
            wanted_images,
        }
    }

    /// Serves again what ran before the agent stopped, without the network: model modules
    /// from the cache, containers adopted from the engine (`owned`); then continues with the
    /// last manifest received.
    pub fn restore(
        &mut self,
        owned: BTreeMap<String, crate::images::container_runtime::OwnedContainer>,
    ) -> Result<(), crate::store::StoreError> {
        let store = &self.services.store;
        let outcome = store.outcome()?;
        if let Some(outcome) = &outcome {
            self.services.board.set_outcome(outcome.clone());
        }
        let verified = |wire: Option<Vec<u8>>| {
            wire.and_then(|w| self.fleet_key.verify(&w).ok().map(|m| (m, w)))
        };
        let applied = verified(store.applied()?);
        let desired = verified(store.desired()?).or_else(|| applied.clone());
        if let Some((manifest, _)) = &applied {
            self.applied_version = Some(manifest.version);
            self.services.board.set_applied_version(manifest.version);
        }
        let spec_of = |name: &str| {
            [&applied, &desired]
                .into_iter()
                .flatten()
                .find_map(|(m, _)| match m.modules.get(name) {
                    Some(Module::Model(spec)) => Some(spec.clone()),
                    _ => None,
                })
        };
        for (name, record) in store.modules()? {
            let spec = spec_of(&name);
            let restore = model_task::Restore {
                serving: spec.as_ref().and_then(|s| s.serving.clone()),
                session: spec.map(|s| s.session).unwrap_or_default(),
                record,
            };
            let handle = model_task::spawn(&name, self.services.clone(), Some(restore));
            self.tasks.insert(name, handle);
        }
        for (name, container) in owned {
            let handle = container_task::spawn(&name, self.services.clone(), Some(container));
            self.tasks.insert(name, handle);
        }
        if let Some((manifest, wire)) = desired {
            let announce = Some(manifest.version) != self.applied_version;
            if let Some(o) = outcome.filter(|o| o.version == Some(manifest.version)) {
                self.desired_source = o.source;
            }
            self.start(manifest, wire, announce, self.desired_source);
        }
        Ok(())
    }

    /// Routes until `shutdown` resolves or the link ends, then ends the module tasks.
    pub async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut events: mpsc::UnboundedReceiver<ModuleEvent>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                message = inbound.recv() => match message {
                    Some(Inbound::Desired(wire)) => self.on_desired(wire, ManifestSource::Fleet, None),
                    Some(Inbound::Bundle { wire, reply }) => self.on_desired(wire, ManifestSource::Bundle, Some(reply)),
                    Some(Inbound::Input { module, payload, ack }) => self.on_input(module, payload, ack),
                    Some(Inbound::Command { name, payload }) => self.on_command(&name, &payload),
                    None => break,
                },
                Some(event) = events.recv() => self.on_event(event),
            }
        }
        // Closing the command channels ends each task without touching its module: served
        // models stop their scoring APIs, containers keep running.
        let tasks: Vec<_> = std::mem::take(&mut self.tasks)
            .into_values()
            .map(|h| h.task)
            .collect();
        for task in tasks {
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, task).await;
        }
    }

    /// A manifest from `source`; `reply`, when given, is told its outcome.
    fn on_desired(
        &mut self,
        wire: Vec<u8>,
        source: ManifestSource,
        reply: Option<oneshot::Sender<DesiredOutcome>>,
    ) {
        let manifest = match self.fleet_key.verify(&wire) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "manifest refused");
                let outcome = self.outcome(None, e.status(), e.to_string(), source);
                if let Some(reply) = reply {
                    let _ = reply.send(outcome);
                }
                return;
            }
        };
        if let Some(reply) = reply {
            self.waiting.push((manifest.version, reply));
        }
        let config = &self.services.config;
        if manifest.device_id != config.device_id {
            let message = format!(
                "manifest is for device {:?}, this is {:?}",
                manifest.device_id, config.device_id
            );
            self.outcome(
                Some(manifest.version),
                ApplyStatus::Invalid,
                message,
                source,
            );
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
            let message = format!(
                "version {} is older than the applied {applied}",
                manifest.version
            );
            self.answer_waiting(manifest.version, ApplyStatus::Invalid, message, source);
            return;
        }
        // Kept before any outcome is reported: the fleet switches the broker on that report.
        broker_login::keep_from_manifest(&manifest, &self.services.identity, &self.services.store);
        let unchanged = self.desired.as_ref().is_some_and(|(_, w)| *w == wire);
        if unchanged && self.applied_version == Some(manifest.version) {
            let message = "already applied".to_owned();
            self.answer_waiting(manifest.version, ApplyStatus::Applied, message, source);
            return;
        }
        // A container module the engine would not accept refuses the whole manifest before
        // anything changes.
        for (name, module) in &manifest.modules {
            if let Module::Container(spec) = module
                && let Err(e) = create_options::parse(spec.create_options.as_ref())
            {
                let message = format!("module {name}: {e}");
                self.outcome(
                    Some(manifest.version),
                    ApplyStatus::Invalid,
                    message,
                    source,
                );
                return;
            }
        }
        if let Err(e) = self.services.store.put_desired(&wire) {
            self.outcome(
                Some(manifest.version),
                ApplyStatus::AgentError,
                e.to_string(),
                source,
            );
            return;
        }
        self.start(manifest, wire, true, source);
    }

    /// Starts applying `manifest`: its settings at once, its modules phase by phase.
    fn start(&mut self, manifest: Manifest, wire: Vec<u8>, announce: bool, source: ManifestSource) {
        self.desired_source = source;
        // The device's own cap bounds what the fleet asks: the operator owns the disk.
        let cap = manifest.telemetry.outbox_max_bytes;
        let device_cap = self.services.config.telemetry.outbox_max_bytes;
        self.services.outbox.set_max_bytes(cap.min(device_cap));
        self.telemetry.send_replace(manifest.telemetry.clone());
        self.wanted_images.send_replace(
            manifest
                .modules
                .values()
                .filter(|m| m.kind() == ModuleKind::Container)
                .map(|m| m.image().to_owned())
                .collect(),
        );
        let running = self
            .tasks
            .iter()
            .map(|(name, h)| (name.clone(), h.kind))
            .collect();
        let phases = plan(&manifest, &running);
        self.deferred.clear();
        self.progress = Some(ApplyProgress::new(manifest.version, phases, announce));
        self.desired = Some((manifest, wire));
        self.advance();
    }

    /// Dispatches phases until one waits for answers, then announces a verdict if there is one.
    fn advance(&mut self) {
        while let Some(phase) = self.progress.as_mut().and_then(ApplyProgress::next_phase) {
            for step in phase {
                self.dispatch(step);
            }
        }
        let Some(progress) = &mut self.progress else {
            return;
        };
        let (version, announce) = (progress.version, progress.announce);
        match progress.verdict() {
            Some(Verdict::Applied { modules }) => self.applied(version, modules, announce),
            Some(Verdict::Failed(errors)) => {
                self.set_outcome(
                    Some(version),
                    ApplyStatus::ActivationFailed,
                    errors.join("; "),
                );
            }
            None => {}
        }
    }

    fn dispatch(&mut self, step: Step) {
        let Some((manifest, _)) = &self.desired else {
            return;
        };
        let Some(progress) = &mut self.progress else {
            return;
        };
        match step {
            Step::Remove(name) => {
                if let Some(handle) = self.tasks.get(&name)
                    && handle.commands.send(ModuleCommand::Remove).is_ok()
                {
                    self.removing.insert(name.clone());
                    progress.wait_for(&name);
                }
            }
            Step::Apply(name) => {
                let Some(module) = manifest.modules.get(&name) else {
                    return;
                };
                progress.wait_for(&name);
                // A module still being removed gets a new task once it is gone.
                if self.removing.contains(&name) {
                    self.deferred.insert(name);
                    return;
                }
                // A task that ended on its own (it panicked) is replaced.
                if self.tasks.get(&name).is_some_and(|h| h.task.is_finished()) {
                    self.tasks.remove(&name);
                }
                let assignment = Assignment {
                    version: manifest.version,
                    credential: manifest.credential_for_image(module.image()).cloned(),
                    module: module.clone(),
                };
                let services = &self.services;
                let handle = self
                    .tasks
                    .entry(name.clone())
                    .or_insert_with(|| match module {
                        Module::Model(_) => model_task::spawn(&name, services.clone(), None),
                        Module::Container(_) => {
                            container_task::spawn(&name, services.clone(), None)
                        }
                    });
                if handle
                    .commands
                    .send(ModuleCommand::Apply(assignment))
                    .is_err()
                {
                    progress.applied(&name, Some("the module's task is not running".into()));
                }
            }
        }
    }

    fn on_event(&mut self, event: ModuleEvent) {
        match event {
            ModuleEvent::Removed { module } => {
                self.tasks.remove(&module);
                self.removing.remove(&module);
                if let Some(progress) = &mut self.progress {
                    progress.removed(&module);
                }
                if self.deferred.remove(&module) {
                    self.dispatch(Step::Apply(module));
                }
            }
            ModuleEvent::Applied {
                module,
                version,
                failure,
            } => match &mut self.progress {
                Some(progress) if progress.version == version => {
                    progress.applied(&module, failure);
                }
                _ => return,
            },
        }
        self.advance();
    }

    /// Every module is what manifest `version` asks.
    fn applied(&mut self, version: u64, modules: usize, announce: bool) {
        let Some((_, wire)) = &self.desired else {
            return;
        };
        if let Err(e) = self.services.store.put_applied(wire) {
            self.set_outcome(Some(version), ApplyStatus::AgentError, e.to_string());
            return;
        }
        self.applied_version = Some(version);
        self.services.board.set_applied_version(version);
        let services = self.services.clone();
        tokio::task::spawn_blocking(move || {
            let keep: Vec<String> = match services.store.modules() {
                Ok(records) => records.into_values().flat_map(|r| r.blobs).collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "cache clean-up skipped");
                    return;
                }
            };
            if let Err(e) = services.puller.collect_garbage(&keep) {
                tracing::warn!(error = %e, "cache clean-up failed");
            }
        });
        if announce {
            let message = format!("applied {modules} module(s)");
            self.set_outcome(Some(version), ApplyStatus::Applied, message);
        }
    }

    /// The outcome of the desired manifest.
    fn set_outcome(&mut self, version: Option<u64>, status: ApplyStatus, message: String) {
        self.outcome(version, status, message, self.desired_source);
    }

    /// Records and reports the outcome of a manifest from `source`, and tells whoever waits
    /// for it.
    fn outcome(
        &mut self,
        version: Option<u64>,
        status: ApplyStatus,
        message: String,
        source: ManifestSource,
    ) -> DesiredOutcome {
        let outcome = DesiredOutcome {
            version,
            status,
            message,
            source,
        };
        if let Err(e) = self.services.store.put_outcome(&outcome) {
            tracing::error!(error = %e, "cannot store the manifest outcome");
        }
        self.services.board.set_outcome(outcome.clone());
        if let Some(version) = version {
            self.answer_waiting(version, status, outcome.message.clone(), source);
        }
        outcome
    }

    /// Tells whoever waits for manifest `version` what became of it (without reporting it:
    /// an unchanged or older manifest changes nothing).
    fn answer_waiting(
        &mut self,
        version: u64,
        status: ApplyStatus,
        message: String,
        source: ManifestSource,
    ) {
        let (done, rest) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|(v, _)| *v == version);
        self.waiting = rest;
        for (_, reply) in done {
            let _ = reply.send(DesiredOutcome {
                version: Some(version),
                status,
                message: message.clone(),
                source,
            });
        }
    }

    /// Hands a message from a model module's MQTT input topic to the module's task; one for
    /// no model module of this device is recorded as an event and acknowledged.
    fn on_input(&self, module: String, payload: Vec<u8>, ack: InputAck) {
        let (payload, ack) = match self.tasks.get(&module) {
            Some(handle) if handle.kind == ModuleKind::Model => {
                match handle.commands.send(ModuleCommand::Input { payload, ack }) {
                    Ok(()) => return,
                    Err(mpsc::error::SendError(ModuleCommand::Input { payload, ack })) => {
                        (payload, ack)
                    }
                    Err(_) => return,
                }
            }
            _ => (payload, ack),
        };
        drop(payload);
        let error = format!("an input for {module:?}, which is not a model module of this device");
        mqtt_input::refuse(&self.services.outbox, &module, error, ack);
    }
}
