//! The reconciler's pure half: from the desired manifest and the modules actually running,
//! the operations that make them agree. The agent executes them (see `agent`).

use std::collections::BTreeMap;

use edgefleet_common::manifest::{DesiredStatus, Manifest, ModelServing, Module, ModuleKind};

/// A module as it runs now.
#[derive(Debug, Clone, PartialEq)]
pub struct ActualModule {
    pub image: String,
    pub serving: Option<ModelServing>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// Pull, load, canary and switch to the module's image.
    Activate(String),
    /// Same image, other serving options (port, keys, sampling).
    Reconfigure(String),
    /// Stop serving the module and forget it.
    Remove(String),
}

/// A container module's container as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActualContainer {
    /// Digest of what it was created from (`container_runtime::spec_digest`).
    pub spec: String,
    pub running: bool,
}

/// What the container half of a manifest needs done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerOperation {
    /// Pull the image and create the container (started when its status is running).
    Create(String),
    /// Remove the container and create it from the new image or settings.
    Recreate(String),
    Start(String),
    Stop(String),
    Remove(String),
}

/// The container operations for `desired`, given the containers the agent owns: removals
/// first; a container that runs and matches its module is left alone.
pub fn plan_containers(
    desired: &Manifest,
    actual: &BTreeMap<String, ActualContainer>,
    spec: impl Fn(&Module) -> String,
) -> Vec<ContainerOperation> {
    let containers: BTreeMap<&String, &Module> = desired
        .modules
        .iter()
        .filter(|(_, m)| m.kind == ModuleKind::Container)
        .collect();
    let mut ops: Vec<ContainerOperation> = actual
        .keys()
        .filter(|name| !containers.contains_key(name))
        .map(|name| ContainerOperation::Remove(name.clone()))
        .collect();
    for (name, module) in containers {
        let running = module.status == DesiredStatus::Running;
        match actual.get(name) {
            None => ops.push(ContainerOperation::Create(name.clone())),
            Some(a) if a.spec != spec(module) => {
                ops.push(ContainerOperation::Recreate(name.clone()))
            }
            Some(a) if running && !a.running => ops.push(ContainerOperation::Start(name.clone())),
            Some(a) if !running && a.running => ops.push(ContainerOperation::Stop(name.clone())),
            Some(_) => {}
        }
    }
    ops
}

/// The operations that turn `actual` into what `desired` asks for, removals first so a port
/// freed by one module can be taken by another.
pub fn plan(desired: &Manifest, actual: &BTreeMap<String, ActualModule>) -> Vec<Operation> {
    let wanted = |name: &str| {
        desired
            .modules
            .get(name)
            .filter(|m| m.kind == ModuleKind::Model && m.status == DesiredStatus::Running)
    };
    let mut ops: Vec<Operation> = actual
        .keys()
        .filter(|name| wanted(name).is_none())
        .map(|name| Operation::Remove(name.clone()))
        .collect();
    for (name, module) in &desired.modules {
        if module.kind != ModuleKind::Model {
            continue;
        }
        if module.status != DesiredStatus::Running {
            continue;
        }
        match actual.get(name) {
            Some(a) if a.image == module.image && a.serving == module.serving => {}
            Some(a) if a.image == module.image => ops.push(Operation::Reconfigure(name.clone())),
            _ => ops.push(Operation::Activate(name.clone())),
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_common::manifest::{Module, RestartPolicy};

    fn model(image: &str, port: u16) -> Module {
        Module {
            kind: ModuleKind::Model,
            image: image.into(),
            status: DesiredStatus::Running,
            restart_policy: RestartPolicy::Always,
            env: BTreeMap::new(),
            create_options: None,
            serving: Some(ModelServing {
                http_port: port,
                bind_address: "127.0.0.1".into(),
                auth_key_sha256: vec![],
                mqtt_input: true,
                data_collection_ppm: 0,
            }),
        }
    }

    fn actual(m: &Module) -> ActualModule {
        ActualModule {
            image: m.image.clone(),
            serving: m.serving.clone(),
        }
    }

    #[test]
    fn a_new_module_is_activated_and_a_matching_one_left_alone() {
        let mut desired = Manifest::new("d", 1);
        desired
            .modules
            .insert("a".into(), model("r/a@sha256:1", 8001));
        desired
            .modules
            .insert("b".into(), model("r/b@sha256:1", 8002));
        let running = BTreeMap::from([("a".to_owned(), actual(&model("r/a@sha256:1", 8001)))]);
        assert_eq!(
            plan(&desired, &running),
            vec![Operation::Activate("b".into())]
        );
    }

    #[test]
    fn image_changes_activate_serving_changes_reconfigure_and_leftovers_go_first() {
        let mut desired = Manifest::new("d", 2);
        desired
            .modules
            .insert("a".into(), model("r/a@sha256:2", 8001));
        desired
            .modules
            .insert("b".into(), model("r/b@sha256:1", 9000));
        let running = BTreeMap::from([
            ("a".to_owned(), actual(&model("r/a@sha256:1", 8001))),
            ("b".to_owned(), actual(&model("r/b@sha256:1", 8002))),
            ("old".to_owned(), actual(&model("r/o@sha256:1", 8003))),
        ]);
        assert_eq!(
            plan(&desired, &running),
            vec![
                Operation::Remove("old".into()),
                Operation::Activate("a".into()),
                Operation::Reconfigure("b".into()),
            ]
        );
    }

    #[test]
    fn stopped_modules_are_removed_and_containers_are_left_to_the_container_plan() {
        let mut desired = Manifest::new("d", 3);
        let mut stopped = model("r/a@sha256:1", 8001);
        stopped.status = DesiredStatus::Stopped;
        desired.modules.insert("a".into(), stopped.clone());
        let mut container = model("r/c@sha256:1", 0);
        container.kind = ModuleKind::Container;
        desired.modules.insert("c".into(), container);
        let running = BTreeMap::from([("a".to_owned(), actual(&stopped))]);
        assert_eq!(
            plan(&desired, &running),
            vec![Operation::Remove("a".into())]
        );
    }

    #[test]
    fn containers_are_created_recreated_on_change_left_alone_when_matching_and_removed() {
        let mut desired = Manifest::new("d", 1);
        let container = |image: &str| {
            let mut m = model(image, 0);
            m.kind = ModuleKind::Container;
            m.serving = None;
            m
        };
        desired
            .modules
            .insert("new".into(), container("r/n@sha256:1"));
        desired
            .modules
            .insert("same".into(), container("r/s@sha256:1"));
        desired
            .modules
            .insert("changed".into(), container("r/c@sha256:2"));
        desired
            .modules
            .insert("crashed".into(), container("r/x@sha256:1"));
        let spec = |m: &Module| m.image.clone();
        let actual = BTreeMap::from([
            (
                "same".to_owned(),
                ActualContainer {
                    spec: "r/s@sha256:1".into(),
                    running: true,
                },
            ),
            (
                "changed".to_owned(),
                ActualContainer {
                    spec: "r/c@sha256:1".into(),
                    running: true,
                },
            ),
            (
                "crashed".to_owned(),
                ActualContainer {
                    spec: "r/x@sha256:1".into(),
                    running: false,
                },
            ),
            (
                "gone".to_owned(),
                ActualContainer {
                    spec: "r/g@sha256:1".into(),
                    running: true,
                },
            ),
        ]);
        assert_eq!(
            plan_containers(&desired, &actual, spec),
            vec![
                ContainerOperation::Remove("gone".into()),
                ContainerOperation::Recreate("changed".into()),
                ContainerOperation::Start("crashed".into()),
                ContainerOperation::Create("new".into()),
            ]
        );
    }
}
