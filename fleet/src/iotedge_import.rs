//! Azure IoT Edge deployment manifests read as Edgefleet deployments (`edgefleet deployment
//! import`). Reads `modulesContent` (and the legacy `moduleContent`), IoT Hub's configuration
//! wrapper (`content`, `id`, `targetCondition`, `priority`), layered deployments' dotted keys,
//! createOptions as an object, a string or `createOptions01..NN` chunks, and template
//! placeholders filled from variables. Every member is either mapped, reported as a [`Note`]
//! saying what it maps to or that it is not supported, or refused as a problem: nothing is
//! dropped silently. Pure: contacts neither the fleet nor a registry.

use std::collections::{BTreeMap, BTreeSet};

use edgefleet_common::create_options;
use edgefleet_common::fleet_api::{ContainerModule, DeploymentModule, DeploymentView, ModelModule};
use edgefleet_common::module_image::ImageReference;
use edgefleet_common::topics::check_name;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

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

/// Something said about one part of the file: what it maps to, or why it cannot be mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Where in the file (`module tempSensor`, `route upstream`, `$edgeHub`).
    pub at: String,
    pub message: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// A registry the file's `registryCredentials` name and a module's image uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryUse {
    pub credential: String,
    pub address: String,
}

/// A file read as a deployment.
#[derive(Debug, Clone)]
pub struct Imported {
    pub deployment: DeploymentView,
    /// Registries the deployment's images come from, as the file names them.
    pub registries: Vec<RegistryUse>,
    pub notes: Vec<Note>,
}

/// A file that cannot be imported: every problem found, and the notes so far.
#[derive(Debug, Clone)]
pub struct ImportFailure {
    pub problems: Vec<Note>,
    pub notes: Vec<Note>,
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

    fn edge_agent(&mut self, value: &Value) {
        let Some(object) = self.object("$edgeAgent", value) else {
            return;
        };
        for (key, value) in object {
            if key == "properties.desired" {
                self.edge_agent_desired(value);
            } else if let Some(module) = key.strip_prefix("properties.desired.modules.") {
                self.layered = true;
                if module.contains('.') {
                    self.problem(
                        format!("$edgeAgent.{key}"),
                        "a layer that sets part of a module is not supported: set the whole module (properties.desired.modules.NAME)",
                    );
                } else {
                    self.module(module, value);
                }
            } else if let Some(name) =
                key.strip_prefix("properties.desired.runtime.settings.registryCredentials.")
            {
                self.credential(name, value);
            } else if key.starts_with("properties.desired.systemModules") {
                self.system_modules_note();
            } else if key == "properties.desired.schemaVersion" {
                self.schema_version_note("$edgeAgent");
            } else {
                self.problem(
                    format!("$edgeAgent.{key}"),
                    "not supported: a layer may set whole modules and registry credentials",
                );
            }
        }
    }

    fn edge_agent_desired(&mut self, value: &Value) {
        let Some(desired) = self.object("$edgeAgent.properties.desired", value) else {
            return;
        };
        for (key, value) in desired {
            match key.as_str() {
                "schemaVersion" => self.schema_version_note("$edgeAgent"),
                "runtime" => self.runtime(value),
                "systemModules" => self.system_modules_note(),
                "modules" => {
                    if let Some(modules) = self.object("$edgeAgent modules", value) {
                        for (name, module) in modules {
                            self.module(name, module);
                        }
                    }
                }
                _ => self.problem(
                    format!("$edgeAgent.properties.desired.{key}"),
                    "not a member of $edgeAgent's desired properties",
                ),
            }
        }
    }

    fn schema_version_note(&mut self, twin: &str) {
        self.note(
            format!("{twin}.schemaVersion"),
            "read; the schema version itself is not needed",
        );
    }

    fn system_modules_note(&mut self) {
        self.note(
            "$edgeAgent.systemModules",
            "edgeAgent and edgeHub are IoT Edge's runtime: not deployed (the Edgefleet agent and the device's MQTT broker take their place)",
        );
    }

    fn runtime(&mut self, value: &Value) {
        let Some(runtime) = self.object("$edgeAgent runtime", value) else {
            return;
        };
        for (key, value) in runtime {
            match key.as_str() {
                "type" => {
                    if value != "docker" {
                        self.problem(
                            "$edgeAgent.runtime.type",
                            format!("{value} is not supported: only docker"),
                        );
                    }
                }
                "settings" => {
                    let Some(settings) = self.object("$edgeAgent.runtime.settings", value) else {
                        continue;
                    };
                    for (key, value) in settings {
                        match key.as_str() {
                            "minDockerVersion" => self.note(
                                "$edgeAgent.runtime.settings.minDockerVersion",
                                "not checked: the agent works with the Docker engine it finds",
                            ),
                            "loggingOptions" => {
                                if value.as_str().is_some_and(|s| !s.is_empty()) {
                                    self.note(
                                        "$edgeAgent.runtime.settings.loggingOptions",
                                        "not supported: set HostConfig.LogConfig in the modules' createOptions",
                                    );
                                }
                            }
                            "registryCredentials" => {
                                if let Some(credentials) = self.object("registryCredentials", value)
                                {
                                    for (name, credential) in credentials {
                                        self.credential(name, credential);
                                    }
                                }
                            }
                            _ => self.problem(
                                format!("$edgeAgent.runtime.settings.{key}"),
                                "not a member of the runtime settings",
                            ),
                        }
                    }
                }
                _ => self.problem(
                    format!("$edgeAgent.runtime.{key}"),
                    "not a member of the runtime",
                ),
            }
        }
    }

    /// A registry credential: its address is what matters; the fleet pulls with its own
    /// stored credentials for that address.
    fn credential(&mut self, name: &str, value: &Value) {
        let at = format!("registryCredentials.{name}");
        let Some(object) = self.object(&at, value) else {
            return;
        };
        for key in object.keys() {
            if !matches!(key.as_str(), "address" | "username" | "password") {
                self.problem(
                    format!("{at}.{key}"),
                    "not a member of a registry credential",
                );
            }
        }
        let Some(address) = object.get("address").and_then(|a| self.string(&at, a)) else {
            self.problem(&at, "has no address");
            return;
        };
        // Only the address is used, to match images: a placeholder left in it is reported
        // below as an unmatched credential, not as a problem.
        let address = self.fill_with(&address, &at, false);
        self.credentials.push(Credential {
            name: name.to_owned(),
            address,
        });
    }

    /// One module of `$edgeAgent`: a container module, or a model module if the administrator
    /// said so.
    fn module(&mut self, name: &str, value: &Value) {
        let at = format!("module {name}");
        if let Err(e) = check_name("module name", name) {
            self.problem(&at, e.to_string());
            return;
        }
        let Some(object) = self.object(&at, value) else {
            return;
        };
        let mut container = ContainerModule::default();
        let mut restart_policy = None;
        for (key, value) in object {
            let field = format!("{at}, {key}");
            match key.as_str() {
                "version" => self.module_versions = true,
                "type" => {
                    if value != "docker" {
                        self.problem(field, format!("{value} is not supported: only docker"));
                    }
                }
                "status" => {
                    if let Some(status) = self.typed(&field, "running, stopped", value) {
                        container.status = status;
                    }
                }
                "restartPolicy" => {
                    restart_policy =
                        self.typed(&field, "never, on-failure, on-unhealthy, always", value);
                }
                "startupOrder" => {
                    container.startup_order =
                        self.typed(&field, "an integer from 0 to 4294967295", value);
                }
                "imagePullPolicy" => {
                    if let Some(policy) = self.typed(&field, "on-create, never", value) {
                        container.image_pull_policy = policy;
                    }
                }
                "env" => container.env = self.env(&at, value),
                "settings" => self.settings(&at, value, &mut container),
                _ => self.problem(field, "not a member of an IoT Edge module"),
            }
        }
        if !self.settings.models.contains_key(name) {
            self.check_image(&at, &container);
        }
        match restart_policy {
            Some(policy) => container.restart_policy = policy,
            None if object.contains_key("restartPolicy") => {}
            None => self.note(
                format!("{at}, restartPolicy"),
                "absent: always, as IoT Edge's default",
            ),
        }
        let module = match self.settings.models.get(name) {
            Some(model) => {
                self.note(
                    &at,
                    format!(
                        "served as model module {model} (MQTT inputs; add `port` for its scoring API); the file's image, env and createOptions are not used"
                    ),
                );
                DeploymentModule::Model(ModelModule {
                    model: Some(model.clone()),
                    status: container.status,
                    ..ModelModule::default()
                })
            }
            None => DeploymentModule::Container(container),
        };
        self.modules.insert(name.to_owned(), module);
    }

    /// A module's `env`: `{"NAME": {"value": string | number | boolean}}`.
    fn env(&mut self, at: &str, value: &Value) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        let Some(object) = self.object(&format!("{at}, env"), value) else {
            return env;
        };
        for (var, entry) in object {
            let field = format!("{at}, env.{var}");
            if var.is_empty() || var.contains('=') {
                self.problem(
                    &field,
                    "an environment variable name cannot be empty or contain '='",
                );
                continue;
            }
            let Some(entry) = self.object(&field, entry) else {
                continue;
            };
            if let Some(extra) = entry.keys().find(|k| *k != "value") {
                self.problem(
                    &field,
                    format!("{extra:?} is not a member of an env entry (only value)"),
                );
                continue;
            }
            let text = match entry.get("value") {
                Some(Value::String(s)) => self.fill(s, &field),
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(other) => {
                    self.problem(
                        &field,
                        format!("value {other} is not a string, number or boolean"),
                    );
                    continue;
                }
                None => {
                    self.problem(&field, "has no value");
                    continue;
                }
            };
            env.insert(var.clone(), text);
        }
        env
    }

    /// A module's `settings`: `image` and `createOptions` (an object, a string, or a string in
    /// chunks `createOptions01`..`createOptionsNN`).
    fn settings(&mut self, at: &str, value: &Value, container: &mut ContainerModule) {
        let Some(settings) = self.object(&format!("{at}, settings"), value) else {
            return;
        };
        let mut chunks: BTreeMap<u32, &Value> = BTreeMap::new();
        for (key, value) in settings {
            let field = format!("{at}, settings.{key}");
            if key == "image" {
                if let Some(image) = self.string(&field, value) {
                    container.image = self.fill(&image, &field);
                }
            } else if let Some(number) = key
                .strip_prefix("createOptions")
                .or_else(|| key.strip_prefix("createoptions"))
                .and_then(|n| {
                    if n.is_empty() {
                        Some(0)
                    } else {
                        n.parse().ok()
                    }
                })
            {
                chunks.insert(number, value);
            } else {
                self.problem(
                    field,
                    "not a member of a module's settings (image, createOptions)",
                );
            }
        }
        let field = format!("{at}, settings.createOptions");
        let options = match chunks.len() {
            0 => None,
            1 if chunks.values().all(|v| v.is_object()) => chunks
                .into_values()
                .next()
                .map(|v| self.fill_value(v, &field)),
            _ => {
                if chunks.keys().copied().ne(0..chunks.len() as u32) {
                    self.problem(
                        &field,
                        "the chunks are not numbered createOptions, createOptions01, createOptions02, ... without gaps",
                    );
                    return;
                }
                let mut text = String::new();
                for chunk in chunks.values() {
                    match chunk.as_str() {
                        Some(s) => text.push_str(s),
                        None => {
                            self.problem(&field, "a chunked createOptions must be strings");
                            return;
                        }
                    }
                }
                let text = self.fill(&text, &field);
                if text.trim().is_empty() {
                    None
                } else {
                    match serde_json::from_str::<Value>(&text) {
                        Ok(options) => Some(options),
                        Err(e) => {
                            self.problem(&field, format!("not JSON: {e}"));
                            return;
                        }
                    }
                }
            }
        };
        if let Some(options) = &options
            && let Err(e) = create_options::parse(Some(options))
        {
            self.problem(at, e.to_string());
        }
        container.create_options = options.filter(|o| o.as_object().is_none_or(|o| !o.is_empty()));
    }

    /// A pulled image must be a full reference; one without a tag follows `latest`.
    fn check_image(&mut self, at: &str, container: &ContainerModule) {
        let field = format!("{at}, settings.image");
        if container.image.is_empty() {
            self.problem(field, "missing: a module needs an image");
            return;
        }
        if !container.image_pull_policy.is_on_create()
            || next_placeholder(&container.image).is_some()
        {
            return;
        }
        match container.image.parse::<ImageReference>() {
            Err(e) => self.problem(field, e.to_string()),
            Ok(r) if r.tag.is_none() && r.digest.is_none() => self.note(
                field,
                "no tag: `latest` is resolved and pinned to its digest when the deployment is saved",
            ),
            Ok(_) => {}
        }
    }

    fn edge_hub(&mut self, value: &Value) {
        let Some(object) = self.object("$edgeHub", value) else {
            return;
        };
        for (key, value) in object {
            if key == "properties.desired" {
                let Some(desired) = self.object("$edgeHub.properties.desired", value) else {
                    continue;
                };
                for (key, value) in desired {
                    match key.as_str() {
                        "routes" => {
                            if let Some(routes) = self.object("$edgeHub routes", value) {
                                for (name, route) in routes {
                                    self.route(name, route);
                                }
                            }
                        }
                        other => self.edge_hub_setting(other),
                    }
                }
            } else if let Some(name) = key.strip_prefix("properties.desired.routes.") {
                self.route(name, value);
            } else if let Some(setting) = key.strip_prefix("properties.desired.") {
                self.edge_hub_setting(setting);
            } else {
                self.problem(format!("$edgeHub.{key}"), "not a member of $edgeHub");
            }
        }
    }

    fn edge_hub_setting(&mut self, setting: &str) {
        let at = format!("$edgeHub.{setting}");
        match setting.split('.').next().unwrap_or_default() {
            "schemaVersion" => self.schema_version_note("$edgeHub"),
            "storeAndForwardConfiguration" => self.note(
                at,
                "not mapped: the agent keeps what it has not delivered on disk for the manifest's telemetry ttl (7 days by default) and sends it when the link returns",
            ),
            "mqttBroker" => self.note(
                at,
                "not supported: authorize modules on the device's MQTT broker instead",
            ),
            _ => self.problem(at, "not a member of $edgeHub's desired properties"),
        }
    }

    /// A route: reported with what it maps to; the agent does not route messages itself.
    fn route(&mut self, name: &str, value: &Value) {
        let at = format!("route {name}");
        let (text, extras) = match value {
            Value::String(s) => (s.clone(), Vec::new()),
            Value::Object(o) => {
                let mut extras = Vec::new();
                for key in o.keys() {
                    match key.as_str() {
                        "route" => {}
                        "priority" | "timeToLiveSecs" => extras.push(key.clone()),
                        _ => self.problem(format!("{at}.{key}"), "not a member of a route"),
                    }
                }
                match o.get("route").and_then(Value::as_str) {
                    Some(s) => (s.to_owned(), extras),
                    None => {
                        self.problem(&at, "has no route text");
                        return;
                    }
                }
            }
            _ => {
                self.problem(&at, "must be a string or {route, priority, timeToLiveSecs}");
                return;
            }
        };
        let mut message = match Route::parse(&text) {
            Some(route) => self.route_mapping(&route),
            None => format!("{text:?} is not a route this importer understands; not mapped"),
        };
        if !extras.is_empty() {
            message.push_str(&format!(" ({} not mapped)", extras.join(", ")));
        }
        self.note(at, message);
    }

    fn route_mapping(&self, route: &Route) -> String {
        let source = route.source_module.as_deref().unwrap_or("every module");
        match &route.sink {
            Sink::Upstream => format!(
                "{source} to $upstream: not supported; containers' messages are not sent to the fleet (model modules' predictions and collected data arrive as telemetry)"
            ),
            Sink::ModuleInput { module, input } => match self.modules.get(module) {
                Some(DeploymentModule::Model(_)) => format!(
                    "maps to model module {module}'s MQTT input: {source} publishes to the topic $EDGEFLEET_INPUTS_TOPIC/{module} on the device's broker (the agent gives every container EDGEFLEET_INPUTS_TOPIC); input {input} is not distinguished"
                ),
                Some(DeploymentModule::Container(_)) => format!(
                    "{source} to container {module}, input {input}: not supported; the agent does not route messages between containers (they can share a topic on the device's MQTT broker)"
                ),
                None => format!(
                    "{source} to module {module}, input {input}: not supported, and this file has no module {module} (names are case-sensitive)"
                ),
            },
            Sink::Other(sink) => format!("{source} to {sink}: not supported"),
        }
    }

    /// Fills the placeholders of `text` used at `at`, remembering those no variable fills.
    fn fill(&mut self, text: &str, at: &str) -> String {
        self.fill_with(text, at, true)
    }

    fn fill_with(&mut self, text: &str, at: &str, required: bool) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some((before, placeholder, after)) = next_placeholder(rest) {
            out.push_str(before);
            match self.settings.vars.get(placeholder.name) {
                Some(value) => {
                    out.push_str(value);
                    self.used_vars.insert(placeholder.name.to_owned());
                }
                None if !required => out.push_str(placeholder.text),
                None => {
                    out.push_str(placeholder.text);
                    self.unresolved
                        .entry(placeholder.name.to_owned())
                        .or_default()
                        .insert(at.to_owned());
                }
            }
            rest = after;
        }
        out.push_str(rest);
        out
    }

    /// [`Self::fill`] over every string of a JSON value.
    fn fill_value(&mut self, value: &Value, at: &str) -> Value {
        match value {
            Value::String(s) => Value::String(self.fill(s, at)),
            Value::Array(items) => items.iter().map(|v| self.fill_value(v, at)).collect(),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, v)| (k.clone(), self.fill_value(v, at)))
                    .collect(),
            ),
            other => other.clone(),
        }
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

    fn finish(mut self, deployment: Option<DeploymentView>) -> Result<Imported, ImportFailure> {
        if self.module_versions {
            self.notes.push(Note {
                at: "modules' version".into(),
                message: "IoT Edge's informational module version; not needed (the pinned image identifies what runs)".into(),
            });
        }
        for module in self.settings.models.keys() {
            if deployment
                .as_ref()
                .is_none_or(|d| !d.modules.contains_key(module))
            {
                self.problem(
                    format!("--model {module}"),
                    "the file has no module of that name",
                );
            }
        }
        if deployment.as_ref().is_some_and(|d| d.modules.is_empty()) {
            self.problem("modules", "the file deploys no modules");
        }
        for (name, uses) in std::mem::take(&mut self.unresolved) {
            let mut listed: Vec<&str> = uses.iter().take(3).map(String::as_str).collect();
            let more = format!("{} more", uses.len().saturating_sub(3));
            if uses.len() > 3 {
                listed.push(&more);
            }
            self.problem(
                format!("placeholder {name}"),
                format!(
                    "not set (used by {}): give --set '{name}=VALUE'",
                    listed.join("; ")
                ),
            );
        }
        let unused: Vec<&String> = self
            .settings
            .vars
            .keys()
            .filter(|v| !self.used_vars.contains(*v))
            .collect();
        for var in unused {
            self.notes.push(Note {
                at: format!("--set {var}"),
                message: "not used: no imported value has that placeholder".into(),
            });
        }
        let (Some(deployment), true) = (deployment, self.problems.is_empty()) else {
            return Err(ImportFailure {
                problems: self.problems,
                notes: self.notes,
            });
        };
        let hosts: BTreeSet<String> = deployment
            .modules
            .values()
            .filter_map(|m| m.image())
            .filter_map(|i| i.parse::<ImageReference>().ok())
            .map(|r| r.registry)
            .collect();
        let mut registries = Vec::new();
        for credential in self.credentials {
            let at = format!("registryCredentials.{}", credential.name);
            if hosts.contains(&credential.address) {
                self.notes.push(Note {
                    at,
                    message: format!(
                        "images from {} are pulled with the fleet's registry of that address (`edgefleet registry add`); the file's username and password are not imported",
                        credential.address
                    ),
                });
                registries.push(RegistryUse {
                    credential: credential.name,
                    address: credential.address,
                });
            } else {
                self.notes.push(Note {
                    at,
                    message: format!(
                        "{} is the registry of no imported module's image; not used",
                        credential.address
                    ),
                });
            }
        }
        Ok(Imported {
            deployment,
            registries,
            notes: self.notes,
        })
    }
}

/// IoT Edge's own `$` names (`$edgeAgent` as a module id, `$upstream`): not placeholders.
const IOT_EDGE_NAMES: &[&str] = &["edgeAgent", "edgeHub", "upstream"];

/// A placeholder in a template: `${NAME}`, `$NAME`, `<NAME>`, `{{NAME}}` or `__AML_NAME`.
struct Placeholder<'t> {
    /// As written.
    text: &'t str,
    /// What `--set` names it by.
    name: &'t str,
}

/// The text before the first placeholder of `text`, the placeholder, and the text after it.
fn next_placeholder(text: &str) -> Option<(&str, Placeholder<'_>, &str)> {
    let bytes = text.as_bytes();
    for start in 0..bytes.len() {
        let rest = &text[start..];
        let found = if let Some(inner) = rest.strip_prefix("${") {
            inner.find('}').map(|end| (2 + end + 1, &inner[..end]))
        } else if let Some(inner) = rest.strip_prefix("{{") {
            inner
                .find("}}")
                .map(|end| (2 + end + 2, inner[..end].trim()))
        } else if let Some(inner) = rest.strip_prefix('$') {
            let len = inner
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            let starts_well = inner
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
            (len > 0 && starts_well && !IOT_EDGE_NAMES.contains(&&inner[..len]))
                .then(|| (1 + len, &inner[..len]))
        } else if let Some(inner) = rest.strip_prefix('<') {
            inner
                .find(['>', '<', '"', '\n'])
                .filter(|end| *end > 0 && *end <= 100 && inner[*end..].starts_with('>'))
                .map(|end| (1 + end + 1, &inner[..end]))
        } else if rest.starts_with("__AML_") {
            let len = rest
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            Some((len, &rest[..len]))
        } else {
            None
        };
        if let Some((len, name)) = found
            && !name.is_empty()
            && text.is_char_boundary(start)
        {
            return Some((
                &text[..start],
                Placeholder {
                    text: &rest[..len],
                    name,
                },
                &rest[len..],
            ));
        }
    }
    None
}

/// An edgeHub route: `FROM source [WHERE condition] INTO sink`.
struct Route {
    /// The module whose messages it routes (`None`: every module and device).
    source_module: Option<String>,
    sink: Sink,
}

enum Sink {
    Upstream,
    ModuleInput { module: String, input: String },
    Other(String),
}

impl Route {
    fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let upper = text.to_ascii_uppercase();
        let from = upper.strip_prefix("FROM ")?;
        let into_at = upper.rfind(" INTO ")?;
        let source_end = upper.find(" WHERE ").unwrap_or(into_at);
        let source = text.get(text.len() - from.len()..source_end)?.trim();
        let sink = text.get(into_at + " INTO ".len()..)?.trim();
        let source_module = source
            .strip_prefix("/messages/modules/")
            .map(|rest| rest.split('/').next().unwrap_or_default().to_owned());
        let sink = if sink == "$upstream" {
            Sink::Upstream
        } else if let Some(endpoint) = sink
            .strip_prefix("BrokeredEndpoint(\"")
            .and_then(|s| s.strip_suffix("\")"))
        {
            let mut parts = endpoint.trim_start_matches('/').split('/');
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some("modules"), Some(module), Some("inputs"), Some(input)) => Sink::ModuleInput {
                    module: module.to_owned(),
                    input: input.to_owned(),
                },
                _ => Sink::Other(sink.to_owned()),
            }
        } else {
            Sink::Other(sink.to_owned())
        };
        Some(Self {
            source_module,
            sink,
        })
    }
}

#[cfg(test)]
mod tests;
