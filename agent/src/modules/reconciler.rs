//! The reconciler's pure half. [`plan`] turns a desired manifest and the module tasks running
//! now into phases of steps for the supervisor to dispatch; [`plan_model`] and
//! [`plan_container`] tell one module's task what to do with its own module. The tasks and the
//! supervisor execute what these decide.

use std::collections::BTreeMap;

use edgefleet_common::manifest::{
    BatchInput, ContainerSpec, DesiredStatus, Manifest, ModelServing, ModelSpec, Module,
    ModuleKind, SessionOptions,
};

/// One step of a rollout, for one module's task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Stop the module and end its task.
    Remove(String),
    /// Give the module's task (started when there is none) its part of the manifest.
    Apply(String),
}

/// The steps of `desired`, given the kinds of the module tasks running now, in phases: a phase
/// is dispatched once every module of the one before it has answered. Removals come first,
/// so a port or a container name freed by one module can be taken by another; then container
/// modules by ascending `startupOrder`; then containers without an order, with the models.
pub(crate) fn plan(desired: &Manifest, running: &BTreeMap<String, ModuleKind>) -> Vec<Vec<Step>> {
    let wanted = |name: &str| desired.modules.get(name).filter(|m| is_wanted(m));
    let removals: Vec<Step> = running
        .iter()
        .filter(|(name, kind)| wanted(name).is_none_or(|m| m.kind() != **kind))
        .map(|(name, _)| Step::Remove(name.clone()))
        .collect();
    let mut ordered: BTreeMap<u32, Vec<Step>> = BTreeMap::new();
    let mut last = Vec::new();
    for (name, module) in desired.modules.iter().filter(|(_, m)| is_wanted(m)) {
        let step = Step::Apply(name.clone());
        match module {
            Module::Container(ContainerSpec {
                startup_order: Some(order),
                ..
            }) => ordered.entry(*order).or_default().push(step),
            _ => last.push(step),
        }
    }
    std::iter::once(removals)
        .chain(ordered.into_values())
        .chain(std::iter::once(last))
        .filter(|phase| !phase.is_empty())
        .collect()
}

/// Whether a module of the manifest has a task: a stopped model is not served at all, while a
/// stopped container keeps its container, stopped.
fn is_wanted(module: &Module) -> bool {
    match module {
        Module::Model(m) => m.status == DesiredStatus::Running,
        Module::Container(_) => true,
    }
}

/// A model module as it serves now.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ServedModel {
    pub image: String,
    pub session: SessionOptions,
    pub serving: Option<ModelServing>,
    pub batch: Option<BatchInput>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ModelOperation {
    /// It serves what the manifest asks.
    Nothing,
    /// Pull, load, canary and switch to the manifest's image.
    Activate,
    /// Same image and session, other serving options (port, keys, sampling) or batch input.
    Reconfigure,
}

/// A new image or new session options need an activation (a session is made with its
/// options); new serving options alone do not.
pub(crate) fn plan_model(desired: &ModelSpec, actual: Option<&ServedModel>) -> ModelOperation {
    match actual {
        Some(a) if a.image != desired.image || a.session != desired.session => {
            ModelOperation::Activate
        }
        Some(a) if a.serving == desired.serving && a.batch == desired.batch => {
            ModelOperation::Nothing
        }
        Some(_) => ModelOperation::Reconfigure,
        None => ModelOperation::Activate,
    }
}

/// A container module's container as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ActualContainer {
    /// Digest of what it was created from (`container_runtime::spec_digest`).
    pub spec: String,
    pub running: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContainerOperation {
    /// It matches the manifest.
    Nothing,
    /// Pull the image and create the container (started when its status is running).
    Create,
    /// Remove the container and create it from the new image or settings.
    Recreate,
    Start,
    Stop,
}

pub(crate) fn plan_container(
    desired: &ContainerSpec,
    actual: Option<&ActualContainer>,
    spec_digest: impl Fn(&ContainerSpec) -> String,
) -> ContainerOperation {
    let running = desired.status == DesiredStatus::Running;
    match actual {
        None => ContainerOperation::Create,
        Some(a) if a.spec != spec_digest(desired) => ContainerOperation::Recreate,
        Some(a) if running && !a.running => ContainerOperation::Start,
        Some(a) if !running && a.running => ContainerOperation::Stop,
        Some(_) => ContainerOperation::Nothing,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A model module serving on `port`.
    pub(crate) fn model(image: &str, port: u16) -> ModelSpec {
        ModelSpec {
            image: image.into(),
            status: DesiredStatus::Running,
            serving: Some(ModelServing {
                http_port: port,
                bind_address: "127.0.0.1".into(),
                auth_key_sha256: vec![],
                mqtt_input: true,
                data_collection_ppm: 0,
            }),
            session: Default::default(),
            batch: None,
        }
    }

    /// A running container module, started in `order`.
    pub(crate) fn container(image: &str, order: Option<u32>) -> ContainerSpec {
        ContainerSpec {
            image: image.into(),
            status: DesiredStatus::Running,
            restart_policy: Default::default(),
            env: BTreeMap::new(),
            create_options: None,
            startup_order: order,
            image_pull_policy: Default::default(),
        }
    }

    fn manifest(modules: Vec<(&str, Module)>) -> Manifest {
        let mut m = Manifest::new("d", 1);
        m.modules = modules
            .into_iter()
            .map(|(name, module)| (name.to_owned(), module))
            .collect();
        m
    }

    fn apply(names: &[&str]) -> Vec<Step> {
        names.iter().map(|n| Step::Apply((*n).into())).collect()
    }

    #[test]
    fn removals_go_first_then_containers_by_startup_order_then_the_rest() {
        let desired = manifest(vec![
            (
                "broker",
                Module::Container(container("r/b@sha256:1", Some(0))),
            ),
            (
                "sensor",
                Module::Container(container("r/s@sha256:1", Some(1))),
            ),
            ("logger", Module::Container(container("r/l@sha256:1", None))),
            ("model", Module::Model(model("r/m@sha256:1", 8001))),
        ]);
        let running = BTreeMap::from([
            ("model".to_owned(), ModuleKind::Model),
            ("old".to_owned(), ModuleKind::Model),
        ]);
        assert_eq!(
            plan(&desired, &running),
            vec![
                vec![Step::Remove("old".into())],
                apply(&["broker"]),
                apply(&["sensor"]),
                apply(&["logger", "model"]),
            ]
        );
    }

    #[test]
    fn a_stopped_model_and_a_module_that_changed_kind_are_removed_and_nothing_is_empty() {
        let mut stopped = model("r/a@sha256:1", 8001);
        stopped.status = DesiredStatus::Stopped;
        let mut stopped_container = container("r/c@sha256:1", None);
        stopped_container.status = DesiredStatus::Stopped;
        let desired = manifest(vec![
            ("a", Module::Model(stopped)),
            ("b", Module::Container(container("r/b@sha256:1", None))),
            ("c", Module::Container(stopped_container)),
        ]);
        let running = BTreeMap::from([
            ("a".to_owned(), ModuleKind::Model),
            ("b".to_owned(), ModuleKind::Model),
        ]);
        assert_eq!(
            plan(&desired, &running),
            vec![
                vec![Step::Remove("a".into()), Step::Remove("b".into())],
                apply(&["b", "c"]),
            ]
        );
        assert!(plan(&Manifest::new("d", 2), &BTreeMap::new()).is_empty());
    }

    #[test]
    fn image_or_session_changes_activate_and_serving_changes_reconfigure() {
        let desired = model("r/a@sha256:2", 8001);
        let served = |image: &str, port: u16| ServedModel {
            image: image.into(),
            session: SessionOptions::default(),
            serving: model(image, port).serving,
            batch: None,
        };
        assert_eq!(plan_model(&desired, None), ModelOperation::Activate);
        assert_eq!(
            plan_model(&desired, Some(&served("r/a@sha256:1", 8001))),
            ModelOperation::Activate
        );
        assert_eq!(
            plan_model(&desired, Some(&served("r/a@sha256:2", 9000))),
            ModelOperation::Reconfigure
        );
        assert_eq!(
            plan_model(&desired, Some(&served("r/a@sha256:2", 8001))),
            ModelOperation::Nothing
        );
        let threads = ModelSpec {
            session: SessionOptions {
                intra_op_threads: Some(2),
                ..SessionOptions::default()
            },
            ..desired
        };
        assert_eq!(
            plan_model(&threads, Some(&served("r/a@sha256:2", 8001))),
            ModelOperation::Activate
        );
    }

    #[test]
    fn containers_are_created_recreated_on_change_started_stopped_or_left_alone() {
        let spec = |c: &ContainerSpec| c.image.clone();
        let want = container("r/x@sha256:2", None);
        let actual = |image: &str, running: bool| ActualContainer {
            spec: image.into(),
            running,
        };
        assert_eq!(
            plan_container(&want, None, spec),
            ContainerOperation::Create
        );
        assert_eq!(
            plan_container(&want, Some(&actual("r/x@sha256:1", true)), spec),
            ContainerOperation::Recreate
        );
        assert_eq!(
            plan_container(&want, Some(&actual("r/x@sha256:2", false)), spec),
            ContainerOperation::Start
        );
        assert_eq!(
            plan_container(&want, Some(&actual("r/x@sha256:2", true)), spec),
            ContainerOperation::Nothing
        );
        let mut stopped = want.clone();
        stopped.status = DesiredStatus::Stopped;
        assert_eq!(
            plan_container(&stopped, Some(&actual("r/x@sha256:2", true)), spec),
            ContainerOperation::Stop
        );
    }
}
