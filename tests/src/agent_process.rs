//! The real `edgefleet-agent` binary, configured for a test broker and registry, started,
//! killed and started again.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

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
        let insecure: Vec<String> = s
            .insecure_registries
            .iter()
            .map(|r| format!("{r:?}"))
            .collect();
        let path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        let (client_cert, client_key) = match &s.mqtt_client_cert {
            Some((c, k)) => (c.display().to_string(), k.display().to_string()),
            None => (String::new(), String::new()),
        };
        let config = format!(
            "version = 1\n\
             device_id = {device:?}\n\
             fleet = {fleet:?}\n\
             fleet_public_key = {key:?}\n\
             data_dir = {data:?}\n\
             onnx_runtime_library = {ort:?}\n\
             [mqtt]\nurl = {url:?}\nusername = {user:?}\npassword = {password:?}\n\
             ca_file = {mqtt_ca:?}\nclient_cert_file = {client_cert:?}\nclient_key_file = {client_key:?}\n\
             reconnect_min_ms = 100\nreconnect_max_ms = 1000\n\
             [registry]\ninsecure = [{insecure}]\nca_file = {registry_ca:?}\n",
            device = s.device_id,
            fleet = s.fleet,
            key = s.fleet_public_key,
            data = self.data_dir().display().to_string(),
            ort = s.onnx_runtime_library.display().to_string(),
            url = self.mqtt_url,
            user = s.mqtt_username,
            password = s.mqtt_password,
            insecure = insecure.join(", "),
            mqtt_ca = path(&s.mqtt_ca_file),
            registry_ca = path(&s.registry_ca_file),
        );
        std::fs::write(self.config_path(), config).expect("write agent.toml");
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

    /// `edgefleet-agent --config <this device's config>`.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.setup.binary);
        cmd.arg("--config")
            .arg(self.config_path())
            .env_remove("ORT_DYLIB_PATH");
        cmd
    }

    /// Starts `edgefleet-agent run`; returns once the process is up (not once it is connected).
    pub fn start(&mut self) {
        let mut cmd = self.command();
        cmd.arg("run")
            .env("RUST_LOG", "info,edgefleet_agent=debug")
            .envs(self.env.iter().cloned());
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
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
