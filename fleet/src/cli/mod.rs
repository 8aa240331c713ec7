//! The `edgefleet` command line: `serve` runs the fleet service; every other command is an
//! administrator's call to it (nouns then verbs, `--output json` on every read command,
//! `EDGEFLEET_SERVER` and `EDGEFLEET_TOKEN` from the environment) through the typed client.
//! [`Exit`] lists the exit codes.

mod bundle;
mod output;
mod run;
mod telemetry;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use edgefleet_common::fleet_api::{Growth, PhaseSize, RolloutPolicy};

use crate::client::ClientError;
use crate::service::{ServeOptions, serve};
use crate::store::TelemetryRetention;

pub use bundle::BundleCommand;
pub use run::run;
pub use telemetry::TelemetryCommand;

#[derive(Debug, Parser)]
#[command(
    name = "edgefleet",
    version,
    about = "Edgefleet fleet service and administrators' CLI",
    after_help = "Exit codes: 0 success, 1 refused, 2 bad usage, 3 service unreachable, 4 unauthorized, 5 rollout failed."
)]
pub struct Cli {
    /// The fleet service.
    #[arg(
        long,
        env = "EDGEFLEET_SERVER",
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    pub server: String,
    /// The admin token (printed by `edgefleet serve` into <data-dir>/admin-token).
    #[arg(long, env = "EDGEFLEET_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Output format of read commands.
    #[arg(long, short, value_enum, default_value = "text", global = true)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
    Yaml,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the fleet service.
    Serve(ServeArgs),
    /// Container registries models are pushed to.
    #[command(subcommand)]
    Registry(RegistryCommand),
    /// The model registry: versions, packaging as OCI images.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Devices and their tags.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Deployments: modules (models and containers) for the devices a condition selects.
    #[command(subcommand)]
    Deployment(DeploymentCommand),
    /// Rollout progress of a deployment.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Signed per-device manifests.
    #[command(subcommand)]
    Manifest(ManifestCommand),
    /// Telemetry devices sent.
    #[command(subcommand)]
    Telemetry(TelemetryCommand),
    /// Container modules on a device: logs, restart (answered by the device's agent).
    #[command(subcommand)]
    Module(ModuleCommand),
    /// Offline bundles for devices that cannot reach the broker or the registry.
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// Print the link that opens the web dashboard signed in (the token is in the link's
    /// fragment, which the browser keeps to itself).
    Dashboard,
    /// Print the shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Write the man pages (one per command) into DIR.
    Man {
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ModuleCommand {
    /// The module's recent output (capped at 64 KiB).
    Logs {
        device: String,
        module: String,
        #[arg(long, default_value_t = 100)]
        tail: u64,
        /// Only output from the last SECONDS.
        #[arg(long)]
        since: Option<u64>,
    },
    /// Restart the module's container.
    Restart { device: String, module: String },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[arg(
        long,
        env = "EDGEFLEET_DATA_DIR",
        default_value = "/var/lib/edgefleet-fleet"
    )]
    pub data_dir: PathBuf,
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: std::net::SocketAddr,
    #[arg(long, default_value = "default")]
    pub fleet: String,
    /// The fleet's MQTT broker (mosquitto, EMQX, HiveMQ). Without it, an embedded broker
    /// listens on --embedded-broker-listen.
    #[arg(long, env = "EDGEFLEET_MQTT_URL")]
    pub mqtt_url: Option<String>,
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub embedded_broker_listen: std::net::SocketAddr,
    /// CA of an mqtts:// broker (default: the system roots).
    #[arg(long, env = "EDGEFLEET_MQTT_CA_FILE", default_value = "")]
    pub mqtt_ca_file: String,
    #[arg(long, env = "EDGEFLEET_MQTT_USERNAME", default_value = "")]
    pub mqtt_username: String,
    #[arg(
        long,
        env = "EDGEFLEET_MQTT_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    pub mqtt_password: String,
    /// The broker URL devices use, when it differs from the service's.
    #[arg(long)]
    pub device_mqtt_url: Option<String>,
    /// The ONNX Runtime library (to validate and package models).
    #[arg(
        long,
        env = "ORT_DYLIB_PATH",
        default_value = "/usr/lib/edgefleet/libonnxruntime.so.1.31.1"
    )]
    pub onnx_runtime: PathBuf,
    /// Telemetry older than this many days is dropped.
    #[arg(long, default_value_t = 7)]
    pub telemetry_retention_days: u64,
    /// Each device's oldest telemetry is dropped beyond this many MiB.
    #[arg(long, default_value_t = 64)]
    pub telemetry_max_mib_per_device: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics (no token: bind it where only the
    /// monitoring system reaches it).
    #[arg(long, env = "EDGEFLEET_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Keep the fleet in PostgreSQL (postgres://USER:PASSWORD@HOST/DATABASE) instead of the
    /// embedded store in --data-dir. Several replicas of the service may share one database.
    #[arg(long, env = "EDGEFLEET_DATABASE_URL", hide_env_values = true)]
    pub database: Option<String>,
    /// With --database and several replicas: this replica's name, unique among them and the
    /// same across its restarts (it names the replica's MQTT session; named replicas share the
    /// devices' messages). Without it the service is the database's only one.
    #[arg(long, env = "EDGEFLEET_REPLICA")]
    pub replica: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Add or update a registry. The password is read from stdin (--password-stdin) or
    /// EDGEFLEET_REGISTRY_PASSWORD, never from the command line.
    Add {
        name: String,
        #[arg(long)]
        address: String,
        #[arg(long)]
        username: String,
        #[arg(long)]
        password_stdin: bool,
        /// The registry speaks plain HTTP.
        #[arg(long)]
        insecure: bool,
    },
    List,
    /// Remove a registry (refused while a deployment pulls with it).
    #[command(alias = "delete")]
    Remove {
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Register an ONNX file (or the model.onnx of a directory) as the next version of NAME.
    Register {
        #[arg(long)]
        name: String,
        #[arg(long)]
        path: PathBuf,
        /// key=value, repeatable.
        #[arg(long = "tag", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
        #[arg(long, default_value = "")]
        description: String,
        /// A JSON request body to use as the sample (otherwise one is synthesized).
        #[arg(long)]
        sample_input: Option<PathBuf>,
    },
    List,
    /// One version: its inputs, outputs, image and the deployments serving it.
    Show {
        /// NAME:VERSION
        model: String,
    },
    /// Save the registered ONNX file (checked against its SHA-256).
    Download {
        /// NAME:VERSION
        model: String,
        /// Where to write it (default: NAME-VERSION.onnx); an existing file is not overwritten.
        #[arg(long, short)]
        file: Option<PathBuf>,
    },
    /// Run the version on the fleet service's machine at several batch sizes and intra-op
    /// thread counts (with its sample), report latency, throughput and peak memory with the
    /// threads and memory to give it, and keep the result on the version (`model show`).
    Profile {
        /// NAME:VERSION
        model: String,
        /// Comma-separated (default 1,8,32).
        #[arg(long, value_delimiter = ',')]
        batch_sizes: Vec<usize>,
        /// Intra-op thread counts, comma-separated (default 1, 2 and the machine's cores).
        #[arg(long, value_delimiter = ',')]
        threads: Vec<u16>,
    },
    /// Build the model's OCI image and push it (tag = version).
    Package {
        /// NAME:VERSION
        model: String,
        #[arg(long)]
        registry: String,
        #[arg(long)]
        repository: String,
    },
    /// Delete a version (refused while a deployment uses it).
    #[command(alias = "remove")]
    Delete {
        model: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Add or update a device.
    Add {
        id: String,
        #[arg(long = "tag", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
        /// As printed by `edgefleet-agent init`.
        #[arg(long)]
        public_key: String,
    },
    /// Add or update many devices in one change: FILE holds one JSON object per line,
    /// {"id": "...", "publicKey": "...", "tags": {"KEY": "VALUE"}} ("-" reads standard input).
    /// Nothing changes if any line is wrong.
    Import {
        file: PathBuf,
    },
    List,
    Show {
        id: String,
    },
    /// Print the device's agent configuration file.
    Config {
        id: String,
    },
    /// Remove a device: an empty manifest stops its modules, and the embedded broker refuses
    /// its login.
    #[command(alias = "delete")]
    Remove {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeploymentCommand {
    /// Create or replace a deployment of one model module.
    Create {
        name: String,
        /// e.g. "tags.site = 'plant1' AND tags.line IN ['a', 'b']"
        #[arg(long)]
        target: String,
        #[arg(long, default_value_t = 0)]
        priority: i32,
        /// NAME:latest (follows new versions) or NAME:VERSION.
        #[arg(long)]
        model: String,
        /// Module name on the device (default: the model's name).
        #[arg(long)]
        module: Option<String>,
        /// Port of the module's scoring API on the device.
        #[arg(long, default_value_t = 5001)]
        port: u16,
        /// SHA-256 (hex) of a bearer key the scoring API accepts; repeatable.
        #[arg(long)]
        auth_key_sha256: Vec<String>,
        /// Share of requests sent as collected data, in parts per million.
        #[arg(long, default_value_t = 0)]
        data_collection_ppm: u32,
        #[command(flatten)]
        rollout: RolloutFlags,
    },
    /// Create or replace a deployment from a file (YAML or JSON, the shape `deployment show
    /// --output yaml` prints); saving the same content again makes no new revision.
    Apply {
        #[arg(long, short)]
        file: PathBuf,
    },
    /// What applying a file would change, as a unified diff of the deployment.
    Diff {
        #[arg(long, short)]
        file: PathBuf,
    },
    /// Create or replace a deployment from an Azure IoT Edge deployment manifest (or an IoT
    /// Hub configuration wrapping one). What cannot be mapped is listed and nothing is saved
    /// (exit 1); what is mapped differently or not supported is said on stderr.
    Import {
        file: PathBuf,
        /// Default: the configuration's id, else the file's name.
        #[arg(long)]
        name: Option<String>,
        /// Default: the configuration's targetCondition.
        #[arg(long)]
        target: Option<String>,
        /// Default: the configuration's priority, else 0.
        #[arg(long, allow_hyphen_values = true)]
        priority: Option<i32>,
        /// VAR=VALUE fills placeholders ${VAR}, $VAR, <VAR>, {{VAR}} and __AML_VAR; repeatable.
        #[arg(long = "set", value_parser = parse_var)]
        vars: Vec<(String, String)>,
        /// MODULE=NAME:VERSION serves the file's MODULE as a registered model; repeatable.
        #[arg(long = "model", value_parser = parse_tag)]
        models: Vec<(String, String)>,
        /// Print the deployment that would be saved; contacts neither the fleet nor a registry.
        #[arg(long)]
        dry_run: bool,
    },
    List,
    Show {
        name: String,
    },
    /// Every revision of a deployment.
    History {
        name: String,
    },
    #[command(alias = "remove")]
    Delete {
        name: String,
    },
}

/// A staged rollout for `deployment create` (any of them turns it on; the deployment file's
/// `rollout:` says the same).
#[derive(Debug, Args)]
pub struct RolloutFlags {
    /// Devices of the canary phase: a count (2) or a share (10%).
    #[arg(long, value_parser = parse_phase_size)]
    pub canary: Option<PhaseSize>,
    /// Only devices this condition selects are canaries.
    #[arg(long)]
    pub canary_target: Option<String>,
    /// Devices of each batch after the canary: a count or a share.
    #[arg(long, value_parser = parse_phase_size)]
    pub batch: Option<PhaseSize>,
    /// Double each batch.
    #[arg(long)]
    pub exponential: bool,
    #[arg(long)]
    pub max_per_minute: Option<u32>,
    /// How long a phase stays healthy before the next starts (default 30).
    #[arg(long)]
    pub soak_seconds: Option<u64>,
    /// Failed devices of a phase that roll the rollout back: a count or a share (default 1).
    #[arg(long, value_parser = parse_phase_size)]
    pub max_failures: Option<PhaseSize>,
    #[arg(long)]
    pub max_error_percent: Option<f64>,
    #[arg(long)]
    pub max_p99_ms: Option<u64>,
    /// A device silent this long no longer holds its phase (default 600).
    #[arg(long)]
    pub offline_timeout_seconds: Option<u64>,
}

impl RolloutFlags {
    /// The policy the flags ask for, if any.
    pub fn policy(&self) -> Option<RolloutPolicy> {
        let any = self.canary.is_some()
            || self.canary_target.is_some()
            || self.batch.is_some()
            || self.exponential
            || self.max_per_minute.is_some()
            || self.soak_seconds.is_some()
            || self.max_failures.is_some()
            || self.max_error_percent.is_some()
            || self.max_p99_ms.is_some()
            || self.offline_timeout_seconds.is_some();
        if !any {
            return None;
        }
        let mut policy: RolloutPolicy = serde_json::from_str("{}").ok()?;
        policy.canary = self.canary.unwrap_or(policy.canary);
        policy.canary_target = self.canary_target.clone();
        policy.batch = self.batch.unwrap_or(policy.batch);
        if self.exponential {
            policy.growth = Growth::Exponential;
        }
        policy.max_per_minute = self.max_per_minute;
        policy.soak_seconds = self.soak_seconds.unwrap_or(policy.soak_seconds);
        policy.max_failures = self.max_failures.unwrap_or(policy.max_failures);
        policy.max_error_percent = self.max_error_percent;
        policy.max_p99_ms = self.max_p99_ms;
        policy.offline_timeout_seconds = self
            .offline_timeout_seconds
            .unwrap_or(policy.offline_timeout_seconds);
        Some(policy)
    }
}

fn parse_phase_size(s: &str) -> Result<PhaseSize, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|e| e.to_string())
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    Status {
        deployment: String,
        /// Wait until every targeted device succeeded (exit 0) or one failed (exit 5); for a
        /// staged rollout, until it completed (exit 0) or was aborted or rolled back (exit 5).
        #[arg(long)]
        wait: bool,
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
    },
    /// Stop moving devices until `resume`.
    Pause { deployment: String },
    /// Go on with a paused or aborted staged rollout.
    Resume { deployment: String },
    /// Stop for good: moved devices keep the new revision, the others the previous one.
    Abort { deployment: String },
    /// Give every moved device the previous revision again.
    Rollback { deployment: String },
}

#[derive(Debug, Subcommand)]
pub enum ManifestCommand {
    /// The manifest rendered for a device.
    Show { device: String },
    /// Verify a signed manifest file against the fleet public key and print it.
    Verify {
        file: PathBuf,
        #[arg(long, env = "EDGEFLEET_FLEET_KEY")]
        fleet_key: String,
    },
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

/// `VAR=VALUE`, the value kept as written (it may be empty or contain '=').
fn parse_var(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s:?} is not VAR=VALUE"))
}

/// The exit codes of `edgefleet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    /// The service refused the command (bad input, not found, conflict; the message says
    /// why), or `serve` could not run: a service manager may restart `serve`.
    Refused = 1,
    /// The command line was wrong (clap prints the usage).
    Usage = 2,
    /// The fleet service could not be reached (EDGEFLEET_SERVER).
    Unreachable = 3,
    /// The admin token is missing or wrong (EDGEFLEET_TOKEN).
    Unauthorized = 4,
    /// `rollout status --wait`: a device failed or the time ran out.
    RolloutFailed = 5,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// A CLI failure: its exit code and the message for the administrator.
#[derive(Debug)]
pub struct CliError {
    pub exit: Exit,
    pub message: String,
}

impl CliError {
    fn refused(message: impl Into<String>) -> Self {
        Self {
            exit: Exit::Refused,
            message: message.into(),
        }
    }
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        let exit = match &e {
            ClientError::NoToken | ClientError::Unauthorized(_) => Exit::Unauthorized,
            ClientError::Unreachable { .. } => Exit::Unreachable,
            ClientError::Refused { .. } | ClientError::Unexpected(_) | ClientError::Setup(_) => {
                Exit::Refused
            }
        };
        Self {
            exit,
            message: e.to_string(),
        }
    }
}

/// Runs the command line and returns the exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Success
            }
            .into();
        }
    };
    let result = match cli.command {
        Command::Serve(args) => run_service(args).map_err(|e| CliError::refused(format!("{e:#}"))),
        _ => run(cli),
    };
    match result {
        Ok(()) => Exit::Success.into(),
        Err(e) => {
            eprintln!("edgefleet: {}", e.message);
            e.exit.into()
        }
    }
}

fn run_service(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let options = ServeOptions {
        data_dir: args.data_dir,
        fleet: args.fleet,
        mqtt_url: args.mqtt_url,
        embedded_broker_listen: args.embedded_broker_listen,
        mqtt_ca_file: args.mqtt_ca_file,
        mqtt_username: args.mqtt_username,
        mqtt_password: args.mqtt_password,
        token: std::env::var("EDGEFLEET_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
        onnx_runtime_library: args.onnx_runtime,
        device_mqtt_url: args.device_mqtt_url,
        retention: TelemetryRetention {
            max_age_ms: args
                .telemetry_retention_days
                .saturating_mul(24 * 3600 * 1000),
            max_bytes_per_device: args.telemetry_max_mib_per_device.saturating_mul(1 << 20),
        },
        metrics_listen: args.metrics_listen,
        database: args.database,
        replica: args.replica,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
        Ok(serve(options, listener, edgefleet_transport::shutdown_signal()).await?)
    })
}
