//! The agent's configuration file: a versioned TOML file over built-in defaults, then
//! environment overrides (`EDGEFLEET_<SECTION>_<KEY>`). A bad value is reported with the field
//! it is in. The agent reads it with [`AgentConfig::parse`]; the fleet writes a device's file by
//! serializing the same type (`edgefleet device config`).

use std::path::{Path, PathBuf};

use crate::signing::FleetPublicKey;
use crate::topics::check_name;
use serde::{Deserialize, Serialize};

use crate::broker_url::{BrokerUrl, BrokerUrlError};

/// The configuration file the agent ships with; `print-default-config` prints it.
pub const DEFAULT_CONFIG: &str = include_str!("../agent-config.toml");

/// The configuration format this build reads.
pub const CONFIG_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config field `{field}`: {message}")]
    Field { field: String, message: String },
}

fn field(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: field.to_owned(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub version: u32,
    pub device_id: String,
    pub fleet: String,
    pub fleet_public_key: String,
    pub data_dir: PathBuf,
    pub onnx_runtime_library: PathBuf,
    pub mqtt: MqttConfig,
    pub serving: ServingConfig,
    pub docker: DockerConfig,
    pub registry: RegistryConfig,
    pub storage: StorageConfig,
    pub telemetry: TelemetryConfig,
    pub bundles: BundlesConfig,
    pub metrics: MetricsConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    pub url: String,
    pub username: String,
    pub password: String,
    pub ca_file: String,
    pub client_cert_file: String,
    pub client_key_file: String,
    pub keep_alive_seconds: u64,
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServingConfig {
    pub bind_address: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerConfig {
    pub socket: String,
    pub image_grace_seconds: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    pub insecure: Vec<String>,
    pub ca_file: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Model cache, container images and outbox reserve together.
    pub budget_bytes: u64,
    pub min_free_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where Prometheus metrics are served (`host:port`); empty: not served.
    pub listen: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundlesConfig {
    /// Watched for `*.bundle` files (empty: `<data_dir>/bundles`).
    pub drop_dir: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    pub outbox_max_bytes: u64,
    pub ttl_seconds: u64,
    pub max_request_bytes: usize,
    /// Answer `/score` only once the request's inference record is durable (an answered
    /// request then always has its record); off, answers do not wait for the disk.
    pub durable_answers: bool,
}

impl Default for AgentConfig {
    fn default() -> Self {
        // The shipped default file is part of the binary and covered by a test.
        toml::from_str(DEFAULT_CONFIG).unwrap_or_else(|e| panic!("default config: {e}"))
    }
}

impl AgentConfig {
    /// Overlays `file` (its path and text; only the defaults when `None`) and then the
    /// environment overrides in `env` on the defaults, and checks every field.
    pub fn parse(
        file: Option<(&Path, &str)>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let config = Self::parse_unchecked(file, env)?;
        config.check()?;
        Ok(config)
    }

    /// Like [`AgentConfig::parse`] without the checks of the values (for `init`, which runs
    /// before the fleet key is known).
    pub fn parse_unchecked(
        file: Option<(&Path, &str)>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let path = file.map(|(path, _)| path);
        let mut table: toml::Table =
            toml::from_str(DEFAULT_CONFIG).map_err(|e| ConfigError::Parse {
                path: "agent-config.toml".into(),
                message: e.to_string(),
            })?;
        if let Some((path, text)) = file {
            let mut file: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
            // `storage.budget_bytes` was `cache_budget_bytes` when it covered the model cache
            // alone; files written then still work.
            if let Some(storage) = file.get_mut("storage").and_then(|s| s.as_table_mut())
                && let Some(old) = storage.remove("cache_budget_bytes")
            {
                storage.entry("budget_bytes").or_insert(old);
            }
            merge(&mut table, file, "")?;
        }
        for (key, value) in env {
            apply_env(&mut table, &key, &value)?;
        }
        let config: AgentConfig =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: path.map(Path::to_owned).unwrap_or_default(),
                    message: e.to_string(),
                })?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.version != CONFIG_VERSION {
            return Err(field(
                "version",
                format!(
                    "{} is not supported; this agent reads version {CONFIG_VERSION}",
                    self.version
                ),
            ));
        }
        check_name("device id", &self.device_id).map_err(|e| field("device_id", e.to_string()))?;
        check_name("fleet name", &self.fleet).map_err(|e| field("fleet", e.to_string()))?;
        self.fleet_key()?;
        self.broker()?;
        let m = &self.mqtt;
        if m.client_cert_file.is_empty() != m.client_key_file.is_empty() {
            return Err(field(
                "mqtt.client_cert_file",
                "client_cert_file and client_key_file must be set together",
            ));
        }
        if !self.metrics.listen.is_empty()
            && self.metrics.listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(field(
                "metrics.listen",
                format!(
                    "{:?} is not host:port with an IP address (e.g. 127.0.0.1:9600)",
                    self.metrics.listen
                ),
            ));
        }
        if m.reconnect_min_ms == 0 || m.reconnect_min_ms > m.reconnect_max_ms {
            return Err(field(
                "mqtt.reconnect_min_ms",
                "must be at least 1 and at most mqtt.reconnect_max_ms",
            ));
        }
        Ok(())
    }

    pub fn fleet_key(&self) -> Result<FleetPublicKey, ConfigError> {
        if self.fleet_public_key.is_empty() {
            return Err(field(
                "fleet_public_key",
                "is empty; set it to the fleet's public key (base64) so manifests can be verified",
            ));
        }
        self.fleet_public_key
            .parse()
            .map_err(|e: crate::signing::KeyParseError| field("fleet_public_key", e.to_string()))
    }

    pub fn broker(&self) -> Result<BrokerUrl, ConfigError> {
        self.mqtt
            .url
            .parse()
            .map_err(|e: BrokerUrlError| field("mqtt.url", e.to_string()))
    }

    /// The store file.
    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("agent.redb")
    }

    /// The device identity file (age X25519, 0600).
    pub fn identity_path(&self) -> PathBuf {
        self.data_dir.join("device.key")
    }

    /// The content-addressed blob cache.
    pub fn blobs_dir(&self) -> PathBuf {
        self.data_dir.join("blobs")
    }

    /// The running agent's status socket (see `status_socket`).
    pub fn status_socket_path(&self) -> PathBuf {
        self.data_dir.join("agent.sock")
    }

    /// The running agent's control socket (see `control_socket`).
    pub fn control_socket_path(&self) -> PathBuf {
        self.data_dir.join("agent-control.sock")
    }

    /// The directory watched for offline bundles.
    pub fn drop_dir(&self) -> PathBuf {
        if self.bundles.drop_dir.is_empty() {
            self.data_dir.join("bundles")
        } else {
            PathBuf::from(&self.bundles.drop_dir)
        }
    }
}

/// Overlays `from` on `into`, refusing keys the defaults do not have.
fn merge(into: &mut toml::Table, from: toml::Table, prefix: &str) -> Result<(), ConfigError> {
    for (key, value) in from {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(inner)), toml::Value::Table(value)) => {
                merge(inner, value, &path)?
            }
            (Some(slot), value) => *slot = value,
            (None, _) => {
                return Err(field(
                    &path,
                    "is not a setting of edgefleet-agent (see `edgefleet-agent print-default-config`)",
                ));
            }
        }
    }
    Ok(())
}

/// Applies one `EDGEFLEET_...` variable: `EDGEFLEET_DEVICE_ID`, `EDGEFLEET_MQTT_PASSWORD`, ...
fn apply_env(table: &mut toml::Table, key: &str, value: &str) -> Result<(), ConfigError> {
    let Some(name) = key.strip_prefix("EDGEFLEET_") else {
        return Ok(());
    };
    let name = name.to_ascii_lowercase();
    // Top-level keys first (device_id), then section_key (mqtt_password -> mqtt.password).
    let slot_path: Option<(Option<String>, String)> =
        if table.get(&name).is_some_and(|v| !v.is_table()) {
            Some((None, name.clone()))
        } else {
            name.split_once('_').and_then(|(section, rest)| {
                table
                    .get(section)
                    .and_then(toml::Value::as_table)
                    .filter(|t| t.contains_key(rest))
                    .map(|_| (Some(section.to_owned()), rest.to_owned()))
            })
        };
    let Some((section, key_name)) = slot_path else {
        return Ok(()); // Another program's EDGEFLEET_ variable (the CLI's EDGEFLEET_SERVER).
    };
    let target = match &section {
        Some(s) => table.get_mut(s).and_then(toml::Value::as_table_mut),
        None => Some(&mut *table),
    };
    let Some(target) = target else { return Ok(()) };
    let dotted = section.map_or(key_name.clone(), |s| format!("{s}.{key_name}"));
    let parsed = match target.get(&key_name) {
        Some(toml::Value::Integer(_)) => value
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| field(&dotted, format!("{key}={value:?} is not an integer")))?,
        Some(toml::Value::Boolean(_)) => value
            .parse::<bool>()
            .map(toml::Value::Boolean)
            .map_err(|_| field(&dotted, format!("{key}={value:?} is not true or false")))?,
        Some(toml::Value::Array(_)) => toml::Value::Array(
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        ),
        _ => toml::Value::String(value.to_owned()),
    };
    target.insert(key_name, parsed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_shipped_default_parses() {
        let c = AgentConfig::default();
        assert_eq!(c.version, CONFIG_VERSION);
        assert_eq!(c.telemetry.outbox_max_bytes, 512 * 1024 * 1024);
    }

    #[test]
    fn environment_overrides_win_over_defaults() {
        let c = AgentConfig::parse(
            None,
            env(&[
                ("EDGEFLEET_FLEET_PUBLIC_KEY", KEY),
                ("EDGEFLEET_DEVICE_ID", "gw-07"),
                ("EDGEFLEET_MQTT_PASSWORD", "pw"),
                ("EDGEFLEET_MQTT_KEEP_ALIVE_SECONDS", "5"),
                (
                    "EDGEFLEET_REGISTRY_INSECURE",
                    "127.0.0.1:5000, 127.0.0.1:5001",
                ),
                ("EDGEFLEET_SERVER", "http://ignored"),
            ]),
        )
        .expect("valid");
        assert_eq!(c.device_id, "gw-07");
        assert_eq!(c.mqtt.password, "pw");
        assert_eq!(c.mqtt.keep_alive_seconds, 5);
        assert_eq!(
            c.registry.insecure,
            vec!["127.0.0.1:5000", "127.0.0.1:5001"]
        );
    }

    #[test]
    fn bad_values_name_their_field() {
        let err =
            AgentConfig::parse(None, env(&[("EDGEFLEET_FLEET_PUBLIC_KEY", "nope")])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("config field `fleet_public_key`"),
            "{err}"
        );
        let err = AgentConfig::parse(
            None,
            env(&[
                ("EDGEFLEET_FLEET_PUBLIC_KEY", KEY),
                ("EDGEFLEET_MQTT_URL", "http://x"),
            ]),
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("config field `mqtt.url`"),
            "{err}"
        );
        let err = AgentConfig::parse(
            None,
            env(&[
                ("EDGEFLEET_FLEET_PUBLIC_KEY", KEY),
                ("EDGEFLEET_MQTT_KEEP_ALIVE_SECONDS", "x"),
            ]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("mqtt.keep_alive_seconds"), "{err}");
    }

    #[test]
    fn unknown_settings_in_a_file_are_refused_with_their_path() {
        let path = Path::new("/etc/edgefleet/agent.toml");
        let text = format!("fleet_public_key = \"{KEY}\"\n[mqtt]\npasword = \"x\"\n");
        let err = AgentConfig::parse(Some((path, &text)), Vec::new()).unwrap_err();
        assert!(
            err.to_string().starts_with("config field `mqtt.pasword`"),
            "{err}"
        );
        let err = AgentConfig::parse(Some((path, "device_id = 3\n")), Vec::new()).unwrap_err();
        assert!(err.to_string().contains("device_id"), "{err}");
    }

    #[test]
    fn a_serialized_configuration_reads_back_as_the_same_settings() {
        let mut config = AgentConfig {
            device_id: "gw-09".into(),
            fleet_public_key: KEY.into(),
            ..AgentConfig::default()
        };
        config.registry.insecure = vec!["127.0.0.1:5000".into()];
        let text = toml::to_string(&config).expect("toml");
        let back = AgentConfig::parse(Some((Path::new("agent.toml"), &text)), Vec::new())
            .expect("the agent reads what the fleet writes");
        assert_eq!(back.device_id, "gw-09");
        assert_eq!(back.registry.insecure, vec!["127.0.0.1:5000"]);
    }
}
