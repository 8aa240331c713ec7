//! `$edgeAgent`: the modules to run, the runtime settings and the registry credentials, read
//! whole (`properties.desired`) or as a layered deployment's dotted keys. IoT Edge's system
//! modules are the runtime the Edgefleet agent replaces and are not deployed.

use serde_json::Value;

use super::{Credential, Importer};

impl Importer<'_> {
    pub(super) fn edge_agent(&mut self, value: &Value) {
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
                "settings" => self.runtime_settings(value),
                _ => self.problem(
                    format!("$edgeAgent.runtime.{key}"),
                    "not a member of the runtime",
                ),
            }
        }
    }

    /// `runtime.settings`: the registry credentials are read; the Docker version and logging
    /// options are noted.
    fn runtime_settings(&mut self, value: &Value) {
        let Some(settings) = self.object("$edgeAgent.runtime.settings", value) else {
            return;
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
                    if let Some(credentials) = self.object("registryCredentials", value) {
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
}
