//! `$edgeHub`: its routes, each reported with what it maps to (the agent routes no messages
//! itself, but a route into a model module's input is its MQTT input topic), and its other
//! settings, noted as not mapped.

use edgefleet_common::fleet_api::DeploymentModule;
use serde_json::Value;

use super::Importer;

impl Importer<'_> {
    pub(super) fn edge_hub(&mut self, value: &Value) {
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
