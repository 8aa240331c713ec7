//! The real `edgefleet serve`, and the `edgefleet` CLI pointed at it.

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::mosquitto::Mosquitto;
use crate::process::{ServiceProcess, free_port};

/// A fleet service on a free port with its own data directory, connected to `broker` as the
/// user given to [`FleetProcess::start`].
#[derive(Debug)]
pub struct FleetProcess {
    dir: tempfile::TempDir,
    binary: PathBuf,
    port: u16,
    pub token: String,
    _process: ServiceProcess,
}

impl FleetProcess {
    pub fn start(
        binary: PathBuf,
        broker: &Mosquitto,
        user: &str,
        password: &str,
        fleet: &str,
    ) -> Self {
        Self::spawn(binary, fleet, |command| {
            command.args(["--mqtt-url", &broker.url(), "--mqtt-username", user]);
            if let Some(tls) = broker.tls() {
                command.arg("--mqtt-ca-file").arg(tls.ca.ca_file());
            }
            command.env("EDGEFLEET_MQTT_PASSWORD", password);
        })
    }

    /// A fleet service with its embedded MQTT broker on `broker_port`.
    pub fn start_embedded(binary: PathBuf, broker_port: u16, fleet: &str) -> Self {
        Self::spawn(binary, fleet, |command| {
            command.args([
                "--embedded-broker-listen",
                &format!("127.0.0.1:{broker_port}"),
            ]);
        })
    }

    fn spawn(binary: PathBuf, fleet: &str, configure: impl FnOnce(&mut Command)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let token = "fleet-admin-token".to_owned();
        let mut command = Command::new(&binary);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--fleet", fleet])
            .env("EDGEFLEET_TOKEN", &token)
            .env("ORT_DYLIB_PATH", crate::ort_library())
            .env("RUST_LOG", "info");
        configure(&mut command);
        let process = ServiceProcess::spawn(
            "edgefleet serve",
            command,
            &dir.path().join("fleet.log"),
            port,
        );
        Self {
            dir,
            binary,
            port,
            token,
            _process: process,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `edgefleet <args>` with EDGEFLEET_SERVER and EDGEFLEET_TOKEN set.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with(args, None)
    }

    /// `edgefleet <args>` with `stdin` as standard input.
    pub fn cli_with(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write as _;
        let mut child = Command::new(&self.binary)
            .args(args)
            .env("EDGEFLEET_SERVER", self.url())
            .env("EDGEFLEET_TOKEN", &self.token)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run edgefleet");
        if let Some(mut input) = child.stdin.take() {
            let _ = input.write_all(stdin.unwrap_or_default().as_bytes());
        }
        child.wait_with_output().expect("edgefleet output")
    }

    /// Like [`FleetProcess::cli`], failing the test with edgefleet's output when it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "edgefleet {args:?} failed ({:?}): {}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The fleet service's data directory (its keys, its store).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("fleet.log")).unwrap_or_default()
    }
}
