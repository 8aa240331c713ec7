//! One IoT Edge module mapped to an Edgefleet module: a container module from its image, env,
//! createOptions (whole or in chunks), restart and pull policies, or the model module the
//! administrator names for it with `--model`.

use std::collections::BTreeMap;

use edgefleet_common::create_options;
use edgefleet_common::fleet_api::{ContainerModule, DeploymentModule, ModelModule};
use edgefleet_common::module_image::ImageReference;
use edgefleet_common::topics::check_name;
use serde_json::Value;

use super::Importer;
use super::placeholders::next_placeholder;

impl Importer<'_> {
    /// One module of `$edgeAgent`: a container module, or a model module if the administrator
    /// said so.
    pub(super) fn module(&mut self, name: &str, value: &Value) {
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
}
