//! The real `edgefleet-agent` binary, configured for a test broker and registry, started,
//! killed and started again.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use edgefleet_common::agent_config::AgentConfig;

use crate::mosquitto::Mosquitto;
use crate::process::ServiceProcess;

/// What an agent needs to know to start.
#[derive(Debug, Clone)]
pub struct AgentSetup {
    pub binary: PathBuf,
    pub device_id: String,
    pub fleet: String,
    pub fleet_public_key: String,
    pub mqtt_username: String,
    pub mqtt_password: String,
    pub insecure_registries: Vec<String>,
    pub onnx_runtime_library: PathBuf,
    /// CA of a TLS broker (`mqtt.ca_file`).
    pub mqtt_ca_file: Option<PathBuf>,
    /// Client certificate and key for brokers that require one.
    pub mqtt_client_cert: Option<(PathBuf, PathBuf)>,
    /// CA of a TLS registry (`registry.ca_file`).
    pub registry_ca_file: Option<PathBuf>,
}

/// A device: its data directory, config file and (when running) its process.
#[derive(Debug)]
pub struct AgentProcess {
    dir: tempfile::TempDir,
    setup: AgentSetup,
    /// The device's public key (`age1...`), as `edgefleet-agent init` printed it.
    pub public_key: String,
    process: Option<ServiceProcess>,
    mqtt_url: String,
    /// Environment overrides (`EDGEFLEET_...`) given to `run`.
    env: Vec<(String, String)>,
}

impl AgentProcess {
    /// Writes the config and runs `edgefleet-agent init`; nothing runs yet.
    pub fn init(setup: AgentSetup, broker: &Mosquitto) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut agent = Self {
            dir,
            setup,
            public_key: String::new(),
            process: None,
            mqtt_url: broker.url(),
            env: Vec::new(),
        };
        agent.write_config();
        let out = agent
            .command()
            .args(["init"])
            .output()
            .expect("run edgefleet-agent init");
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        agent.public_key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(
            agent.public_key.starts_with("age1"),
            "init printed {:?}",
            agent.public_key
        );
        agent
    }

    fn write_config(&self) {
        let s = &self.setup;
        let path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        let mut config = AgentConfig {
            device_id: s.device_id.clone(),
            fleet: s.fleet.clone(),
            fleet_public_key: s.fleet_public_key.clone(),
            data_dir: self.data_dir(),
            onnx_runtime_library: s.onnx_runtime_library.clone(),
            ..AgentConfig::default()
        };
        let mqtt = &mut config.mqtt;
        mqtt.url = self.mqtt_url.clone();
        mqtt.username = s.mqtt_username.clone();
        mqtt.password = s.mqtt_password.clone();
        mqtt.ca_file = path(&s.mqtt_ca_file);
        if let Some((cert, key)) = &s.mqtt_client_cert {
            mqtt.client_cert_file = cert.display().to_string();
            mqtt.client_key_file = key.display().to_string();
        }
        mqtt.reconnect_min_ms = 100;
        mqtt.reconnect_max_ms = 1000;
        config.registry.insecure = s.insecure_registries.clone();
        config.registry.ca_file = path(&s.registry_ca_file);
        let toml = toml::to_string(&config).expect("the agent's configuration as TOML");
        std::fs::write(self.config_path(), toml).expect("write agent.toml");
    }

    /// Replaces the configuration file with `toml` (for example what `edgefleet device config`
    /// printed); this device's data directory and ONNX Runtime library are given in the
    /// environment, which wins over the file.
    pub fn use_config(&mut self, toml: &str) {
        std::fs::write(self.config_path(), toml).expect("write agent.toml");
        self.set_env("EDGEFLEET_DATA_DIR", &self.data_dir().display().to_string());
        let ort = self.setup.onnx_runtime_library.display().to_string();
        self.set_env("EDGEFLEET_ONNX_RUNTIME_LIBRARY", &ort);
        self.set_env("EDGEFLEET_MQTT_RECONNECT_MIN_MS", "100");
        self.set_env("EDGEFLEET_MQTT_RECONNECT_MAX_MS", "1000");
    }

    /// An `EDGEFLEET_...` override for `run`.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("agent.toml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    /// `edgefleet-agent --config <this device's config>`, with the device's environment
    /// overrides.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.setup.binary);
        cmd.arg("--config")
            .arg(self.config_path())
            .env_remove("ORT_DYLIB_PATH")
            .envs(self.env.iter().cloned());
        cmd
    }

    /// Starts `edgefleet-agent run`; returns once the process is up (not once it is connected).
    pub fn start(&mut self) {
        let mut cmd = self.command();
        cmd.arg("run").env("RUST_LOG", "info,edgefleet_agent=debug");
        self.process = Some(ServiceProcess::spawn_unchecked(
            "edgefleet-agent",
            cmd,
            &self.log_path(),
        ));
    }

    /// Stops the agent with SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Stops the agent with SIGTERM.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop();
        }
    }

    /// The agent's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(ServiceProcess::pid)
    }

    /// Whether the agent process is still running.
    pub fn is_running(&mut self) -> bool {
        self.process
            .as_mut()
            .is_some_and(ServiceProcess::is_running)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `timeout` with `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, check: impl FnMut() -> Option<T>) -> T {
    wait_for_explained(what, timeout, check, String::new)
}

/// [`wait_for`], with what `explain` says (logs, state) in the failure.
pub fn wait_for_explained<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
    explain: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}\n{}",
            explain()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
