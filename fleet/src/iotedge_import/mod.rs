//! Azure IoT Edge deployment manifests read as Edgefleet deployments (`edgefleet deployment
//! import`). Reads `modulesContent` (and the legacy `moduleContent`), IoT Hub's configuration
//! wrapper (`content`, `id`, `targetCondition`, `priority`), layered deployments' dotted keys,
//! createOptions as an object, a string or `createOptions01..NN` chunks, and template
//! placeholders filled from variables. Every member is either mapped, reported as a [`Note`]
//! saying what it maps to or that it is not supported, or refused as a problem: nothing is
//! dropped silently. Pure: contacts neither the fleet nor a registry.

//!
//! This file holds the entry point and the walk from the file down to its twins. `$edgeAgent`
//! (`edge_agent`) and its modules (`modules`), `$edgeHub` (`edge_hub`), the `placeholders` and
//! the final `report` have a file each, all adding to the one `Importer`.

mod edge_agent;
mod edge_hub;
mod modules;
mod placeholders;
mod report;

use std::collections::{BTreeMap, BTreeSet};

use edgefleet_common::fleet_api::{DeploymentModule, DeploymentView};
use edgefleet_common::topics::check_name;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

pub use self::report::{ImportFailure, Imported, Note, RegistryUse};
use crate::condition::Condition;

/// What the administrator gives besides the file.
#[derive(Debug, Clone, Default)]
pub struct ImportSettings {
    /// The deployment's name (default: the wrapper's `id`, else the file's name).
    pub name: Option<String>,
    /// The target condition (default: the wrapper's `targetCondition`).
    pub target: Option<String>,
    /// The priority (default: the wrapper's `priority`, else 0).
    pub priority: Option<i32>,
    /// Placeholder values (`--set VAR=VALUE`).
    pub vars: BTreeMap<String, String>,
    /// Modules served as Edgefleet model modules instead (`--model MODULE=NAME:VERSION`).
    pub models: BTreeMap<String, String>,
}

/// Members of IoT Hub's configuration wrapper that describe the configuration, not what runs.
const WRAPPER_BOOKKEEPING: &[&str] = &[
    "$schema",
    "$schema-template",
    "schemaVersion",
    "labels",
    "createdTimeUtc",
    "lastUpdatedTimeUtc",
    "systemMetrics",
    "metrics",
    "etag",
];

/// Reads IoT Edge deployment manifest `text` (from a file named `file_stem`) as a deployment.
pub fn import(
    text: &str,
    file_stem: &str,
    settings: &ImportSettings,
) -> Result<Imported, ImportFailure> {
    let mut importer = Importer::new(settings);
    let deployment = match serde_json::from_str::<Value>(text) {
        Ok(document) => importer.document(&document, file_stem),
        Err(e) => {
            importer.problem("file", format!("not JSON: {e}"));
            None
        }
    };
    importer.finish(deployment)
}

/// The deployment-level members a wrapper may give.
#[derive(Default)]
struct Wrapper {
    id: Option<String>,
    target: Option<String>,
    priority: Option<i32>,
}

/// A registry credential of the file, its address filled.
struct Credential {
    name: String,
    address: String,
}

/// What the import has read so far, and what it has to say: every part of the file adds to it.
struct Importer<'a> {
    settings: &'a ImportSettings,
    modules: BTreeMap<String, DeploymentModule>,
    credentials: Vec<Credential>,
    layered: bool,
    /// Whether a module has IoT Edge's informational `version`.
    module_versions: bool,
    /// Placeholder -> where it is used, for those no variable fills.
    unresolved: BTreeMap<String, BTreeSet<String>>,
    used_vars: BTreeSet<String>,
    notes: Vec<Note>,
    problems: Vec<Note>,
}

impl<'a> Importer<'a> {
    fn new(settings: &'a ImportSettings) -> Self {
        Self {
            settings,
            modules: BTreeMap::new(),
            credentials: Vec::new(),
            layered: false,
            module_versions: false,
            unresolved: BTreeMap::new(),
            used_vars: BTreeSet::new(),
            notes: Vec::new(),
            problems: Vec::new(),
        }
    }

    fn note(&mut self, at: impl Into<String>, message: impl Into<String>) {
        self.notes.push(Note {
            at: at.into(),
            message: message.into(),
        });
    }

    fn problem(&mut self, at: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Note {
            at: at.into(),
            message: message.into(),
        });
    }

    /// The whole file: a deployment manifest, or IoT Hub's configuration wrapping one.
    fn document(&mut self, document: &Value, file_stem: &str) -> Option<DeploymentView> {
        let Some(top) = document.as_object() else {
            self.problem("file", "not a deployment manifest: expected a JSON object");
            return None;
        };
        let mut wrapper = Wrapper::default();
        let mut content = None;
        let mut bookkeeping = Vec::new();
        for (key, value) in top {
            match key.as_str() {
                "modulesContent" | "moduleContent" | "content" => {
                    content = self.modules_content(key, value);
                }
                "id" => wrapper.id = self.string(key, value),
                "targetCondition" => wrapper.target = self.string(key, value),
                "priority" => wrapper.priority = self.typed(key, "priority", value),
                key if WRAPPER_BOOKKEEPING.contains(&key) => bookkeeping.push(key.to_owned()),
                _ => self.problem(key.as_str(), "not a member of a deployment manifest"),
            }
        }
        if !bookkeeping.is_empty() {
            self.note(
                bookkeeping.join(", "),
                "IoT Hub's bookkeeping of the configuration; not needed",
            );
        }
        let Some(content) = content else {
            self.problem(
                "file",
                "not a deployment manifest: no modulesContent (nor moduleContent or content.modulesContent)",
            );
            return None;
        };
        self.content(content);
        let name = self.name(&wrapper, file_stem);
        let target = self.target(&wrapper);
        let priority = self.settings.priority.or(wrapper.priority).unwrap_or(0);
        Some(DeploymentView {
            name: name?,
            target: target?,
            priority,
            layered: self.layered,
            modules: std::mem::take(&mut self.modules),
            rollout: None,
            revision: 0,
            images: BTreeMap::new(),
            models: BTreeMap::new(),
        })
    }

    /// `modulesContent`, the legacy `moduleContent`, or IoT Hub's `content` wrapping either.
    fn modules_content<'v>(
        &mut self,
        key: &str,
        value: &'v Value,
    ) -> Option<&'v Map<String, Value>> {
        if key == "content" {
            let object = self.object("content", value)?;
            let mut found = None;
            for (key, value) in object {
                match key.as_str() {
                    "modulesContent" | "moduleContent" => {
                        found = self.modules_content(key, value);
                    }
                    "deviceContent" if value.as_object().is_some_and(Map::is_empty) => {}
                    _ => self.problem(
                        format!("content.{key}"),
                        "not supported: only modulesContent is imported",
                    ),
                }
            }
            return found;
        }
        if key == "moduleContent" {
            self.note(
                "moduleContent",
                "the legacy name of modulesContent; read as modulesContent",
            );
        }
        self.object(key, value)
    }

    /// The twins of `modulesContent`: `$edgeAgent`, `$edgeHub` and the modules' own.
    fn content(&mut self, content: &Map<String, Value>) {
        if !content.contains_key("$edgeAgent") {
            self.problem(
                "modulesContent",
                "no $edgeAgent: the file deploys no modules",
            );
        }
        for (twin, value) in content {
            match twin.as_str() {
                "$edgeAgent" => self.edge_agent(value),
                "$edgeHub" => self.edge_hub(value),
                module => {
                    if value.as_object().is_some_and(|o| !o.is_empty()) {
                        self.note(
                            format!("module twin {module}"),
                            "desired properties are not supported: pass settings to the module in env or createOptions; not imported",
                        );
                    }
                }
            }
        }
    }

    fn schema_version_note(&mut self, twin: &str) {
        self.note(
            format!("{twin}.schemaVersion"),
            "read; the schema version itself is not needed",
        );
    }

    fn name(&mut self, wrapper: &Wrapper, file_stem: &str) -> Option<String> {
        let name = self
            .settings
            .name
            .clone()
            .or_else(|| wrapper.id.clone())
            .unwrap_or_else(|| file_stem.to_owned());
        match check_name("deployment name", &name) {
            Ok(()) => Some(name),
            Err(e) => {
                self.problem("name", format!("{e}; give one with --name"));
                None
            }
        }
    }

    fn target(&mut self, wrapper: &Wrapper) -> Option<String> {
        let target = match (&self.settings.target, &wrapper.target) {
            (Some(target), _) => target.clone(),
            (None, Some(condition)) => self.fill(condition, "targetCondition"),
            (None, None) => {
                self.problem(
                    "target",
                    "the file has no targetCondition: give the devices with --target (e.g. \"tags.site = 'plant1'\")",
                );
                return None;
            }
        };
        match target.parse::<Condition>() {
            Ok(_) => Some(target),
            Err(e) => {
                self.problem("target", format!("{target:?}: {e}; give one with --target"));
                None
            }
        }
    }

    fn object<'v>(&mut self, at: &str, value: &'v Value) -> Option<&'v Map<String, Value>> {
        let object = value.as_object();
        if object.is_none() {
            self.problem(at, format!("must be a JSON object, found {value}"));
        }
        object
    }

    fn string(&mut self, at: &str, value: &Value) -> Option<String> {
        let text = value.as_str().map(str::to_owned);
        if text.is_none() {
            self.problem(at, format!("must be a string, found {value}"));
        }
        text
    }

    /// `value` read as `T`, or a problem naming the field, the value and what it may be.
    fn typed<T: DeserializeOwned>(&mut self, at: &str, expected: &str, value: &Value) -> Option<T> {
        match serde_json::from_value(value.clone()) {
            Ok(v) => Some(v),
            Err(_) => {
                self.problem(at, format!("{value} is not one of: {expected}"));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests;
