//! The real `edgefleet serve`, and the `edgefleet` CLI pointed at it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::mosquitto::Mosquitto;
use crate::postgres::Postgres;
use crate::process::{ServiceProcess, free_port};

/// A fleet service on a free port with its own data directory, connected to `broker` as the
/// user given to [`FleetProcess::start`]. It can be stopped, killed and started again on the
/// same port and data.
#[derive(Debug)]
pub struct FleetProcess {
    dir: tempfile::TempDir,
    binary: PathBuf,
    port: u16,
    pub token: String,
    fleet: String,
    /// Arguments and environment beyond the data directory, port and fleet.
    args: Vec<String>,
    env: Vec<(String, String)>,
    process: Option<ServiceProcess>,
    /// The PostgreSQL store, when the tests run on it (see [`postgres_store`]).
    _postgres: Option<Postgres>,
}

/// Whether the fleet's end-to-end tests run on the PostgreSQL store:
/// `EDGEFLEET_TEST_STORE=postgres` (`scripts/test` runs them on both stores).
pub fn postgres_store() -> bool {
    std::env::var("EDGEFLEET_TEST_STORE").is_ok_and(|s| s == "postgres")
}

impl FleetProcess {
    pub fn start(
        binary: PathBuf,
        broker: &Mosquitto,
        user: &str,
        password: &str,
        fleet: &str,
    ) -> Self {
        let mut args = vec![
            "--mqtt-url".to_owned(),
            broker.url(),
            "--mqtt-username".to_owned(),
            user.to_owned(),
        ];
        if let Some(tls) = broker.tls() {
            args.push("--mqtt-ca-file".to_owned());
            args.push(tls.ca.ca_file().display().to_string());
        }
        let env = vec![("EDGEFLEET_MQTT_PASSWORD".to_owned(), password.to_owned())];
        Self::spawn(binary, fleet, args, env)
    }

    /// A fleet service on a mosquitto with dynamic security, connected as `user` and managing
    /// device logins with the broker's dynamic-security admin login.
    pub fn start_managing_logins(
        binary: PathBuf,
        broker: &Mosquitto,
        (user, password): (&str, &str),
        fleet: &str,
    ) -> Self {
        let (admin, admin_password) = broker
            .dynsec_admin()
            .expect("the broker was started with_dynamic_security");
        let password_file = broker.dir().join("broker-admin-password");
        std::fs::write(&password_file, format!("{admin_password}\n"))
            .expect("write the admin password file");
        let args = vec![
            "--mqtt-url".to_owned(),
            broker.url(),
            "--mqtt-username".to_owned(),
            user.to_owned(),
            "--broker-admin-user".to_owned(),
            admin.to_owned(),
            "--broker-admin-password-file".to_owned(),
            password_file.display().to_string(),
        ];
        let env = vec![("EDGEFLEET_MQTT_PASSWORD".to_owned(), password.to_owned())];
        Self::spawn(binary, fleet, args, env)
    }

    /// One replica of a fleet service on the PostgreSQL database `database`, named `replica`.
    pub fn start_replica(
        binary: PathBuf,
        broker: &Mosquitto,
        (user, password): (&str, &str),
        fleet: &str,
        database: &str,
        replica: &str,
    ) -> Self {
        let args = vec![
            "--mqtt-url".to_owned(),
            broker.url(),
            "--mqtt-username".to_owned(),
            user.to_owned(),
            "--database".to_owned(),
            database.to_owned(),
            "--replica".to_owned(),
            replica.to_owned(),
        ];
        let env = vec![("EDGEFLEET_MQTT_PASSWORD".to_owned(), password.to_owned())];
        Self::spawn(binary, fleet, args, env)
    }

    /// A fleet service with its embedded MQTT broker on `broker_port`.
    pub fn start_embedded(binary: PathBuf, broker_port: u16, fleet: &str) -> Self {
        let args = vec![
            "--embedded-broker-listen".to_owned(),
            format!("127.0.0.1:{broker_port}"),
        ];
        Self::spawn(binary, fleet, args, Vec::new())
    }

    /// A fleet service with its embedded MQTT broker on `broker_port`, serving its API over
    /// HTTPS with the certificate and key `(cert, key)`; [`FleetProcess::url`] is `https://`.
    pub fn start_embedded_https(
        binary: PathBuf,
        broker_port: u16,
        fleet: &str,
        (cert, key): (&Path, &Path),
    ) -> Self {
        let args = vec![
            "--embedded-broker-listen".to_owned(),
            format!("127.0.0.1:{broker_port}"),
            "--tls-cert".to_owned(),
            cert.display().to_string(),
            "--tls-key".to_owned(),
            key.display().to_string(),
        ];
        Self::spawn(binary, fleet, args, Vec::new())
    }

    fn spawn(
        binary: PathBuf,
        fleet: &str,
        mut args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> Self {
        let own_database = !args.iter().any(|a| a == "--database");
        let postgres = (own_database && postgres_store()).then(Postgres::start);
        if let Some(postgres) = &postgres {
            args.extend(["--database".to_owned(), postgres.url()]);
        }
        let mut fleet = Self {
            dir: tempfile::tempdir().expect("temp dir"),
            binary,
            port: free_port(),
            token: "fleet-admin-token".to_owned(),
            fleet: fleet.to_owned(),
            args,
            env,
            process: None,
            _postgres: postgres,
        };
        fleet.launch();
        fleet
    }

    /// Restarts the service serving its Prometheus metrics; returns their port.
    pub fn serve_metrics(&mut self) -> u16 {
        let port = free_port();
        self.stop();
        self.set_env("EDGEFLEET_METRICS_LISTEN", &format!("127.0.0.1:{port}"));
        self.launch();
        port
    }

    /// Starts the service (again), on the same port and data.
    /// An environment variable for the next [`FleetProcess::launch`].
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    pub fn launch(&mut self) {
        let mut command = Command::new(&self.binary);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args([
                "--listen",
                &format!("127.0.0.1:{}", self.port),
                "--fleet",
                &self.fleet,
            ])
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("EDGEFLEET_TOKEN", &self.token)
            .env("ORT_DYLIB_PATH", crate::ort_library())
            .env("RUST_LOG", "info");
        self.process = Some(ServiceProcess::spawn(
            "edgefleet serve",
            command,
            &self.dir.path().join("fleet.log"),
            self.port,
        ));
    }

    /// SIGTERM, and waits for the service to exit.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop();
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// `http://127.0.0.1:<port>`, or `https://` when the service was given a certificate.
    pub fn url(&self) -> String {
        let scheme = if self.args.iter().any(|a| a == "--tls-cert") {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `edgefleet <args>` with EDGEFLEET_SERVER and EDGEFLEET_TOKEN set.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with(args, None)
    }

    /// `edgefleet <args>` with `stdin` as standard input.
    pub fn cli_with(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.cli_as(&self.token, args, stdin)
    }

    /// `edgefleet <args>` with EDGEFLEET_TOKEN set to `token`, `stdin` as standard input.
    pub fn cli_as(&self, token: &str, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write as _;
        let mut child = Command::new(&self.binary)
            .args(args)
            .env("EDGEFLEET_SERVER", self.url())
            .env("EDGEFLEET_TOKEN", token)
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
