//! The administrators' CLI: nouns then verbs, `--output json` on every read command,
//! `EDGEFLEET_SERVER` and `EDGEFLEET_TOKEN` from the environment.
//!
//! Exit codes: 0 success, 1 refused (bad input, not found, conflict), 2 bad usage,
//! 3 the service cannot be reached, 4 missing or wrong admin token, 5 a rollout did not
//! succeed (`rollout status --wait`).

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Read as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::api::{
    DeploymentRequest, DeviceRequest, ModuleCommandRequest, PackageRequest, RegistryRequest,
};
use crate::records::DeploymentModule;
use edgefleet_common::commands::DeviceCommand as ModuleCommandKind;

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
    server: String,
    /// The admin token (printed by `edgefleet serve` into <data-dir>/admin-token).
    #[arg(long, env = "EDGEFLEET_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Output format of read commands.
    #[arg(long, short, value_enum, default_value = "text", global = true)]
    output: Output,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
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
    /// Deployments: models for the devices a condition selects.
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
    List,
    Show {
        id: String,
    },
    /// Print the device's agent configuration file.
    Config {
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
    },
    List,
    Delete {
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    Status {
        deployment: String,
        /// Wait until every targeted device succeeded (exit 0) or one failed (exit 5).
        #[arg(long)]
        wait: bool,
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
    },
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

#[derive(Debug, Subcommand)]
pub enum TelemetryCommand {
    /// The newest telemetry records of a device.
    Tail {
        device: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

/// A CLI failure with its exit code.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    fn refused(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }
}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> Self {
        Self::refused(format!("{e:#}"))
    }
}

struct Api {
    base: String,
    token: Option<String>,
    http: reqwest::blocking::Client,
}

impl Api {
    fn new(cli: &Cli) -> Result<Self, CliError> {
        edgefleet_transport::install_crypto_provider();
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()
            .map_err(|e| CliError::refused(e.to_string()))?;
        Ok(Self {
            base: cli.server.trim_end_matches('/').to_owned(),
            token: cli.token.clone(),
            http,
        })
    }

    fn send(
        &self,
        request: reqwest::blocking::RequestBuilder,
    ) -> Result<reqwest::blocking::Response, CliError> {
        let token = self.token.as_deref().ok_or(CliError {
            code: 4,
            message: "no admin token: set EDGEFLEET_TOKEN (the fleet service wrote it to <data-dir>/admin-token)".into(),
        })?;
        let response = request.bearer_auth(token).send().map_err(|e| CliError {
            code: 3,
            message: format!(
                "cannot reach the fleet service at {}: {e} (set EDGEFLEET_SERVER)",
                self.base
            ),
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let message = response
            .json::<Value>()
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("the fleet service answered {status}"));
        Err(CliError {
            code: if status == reqwest::StatusCode::UNAUTHORIZED {
                4
            } else {
                1
            },
            message,
        })
    }

    fn json(&self, request: reqwest::blocking::RequestBuilder) -> Result<Value, CliError> {
        self.send(request)?.json().map_err(|e| {
            CliError::refused(format!("unexpected answer from the fleet service: {e}"))
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn get(&self, path: &str) -> Result<Value, CliError> {
        self.json(self.http.get(self.url(path)))
    }

    fn put(&self, path: &str, body: &impl serde::Serialize) -> Result<Value, CliError> {
        self.json(self.http.put(self.url(path)).json(body))
    }
}

fn split_model(reference: &str) -> Result<(&str, &str), CliError> {
    reference
        .split_once(':')
        .filter(|(n, v)| !n.is_empty() && !v.is_empty())
        .ok_or_else(|| CliError::refused(format!("{reference:?} is not NAME:VERSION")))
}

fn print(output: Output, value: &Value, text: impl FnOnce(&Value) -> String) {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        ),
        Output::Text => println!("{}", text(value)),
    }
}

fn model_file(path: &Path) -> Result<PathBuf, CliError> {
    if path.is_file() {
        return Ok(path.to_owned());
    }
    if path.is_dir() {
        let named = path.join("model.onnx");
        if named.is_file() {
            return Ok(named);
        }
        let onnx: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| CliError::refused(format!("{}: {e}", path.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
            .collect();
        if let [only] = onnx.as_slice() {
            return Ok(only.clone());
        }
        return Err(CliError::refused(format!(
            "{}: expected model.onnx or exactly one .onnx file in the directory",
            path.display()
        )));
    }
    Err(CliError::refused(format!(
        "{}: no such file or directory",
        path.display()
    )))
}

/// Runs one CLI command (all but `serve`, which `main` runs).
pub fn run(cli: Cli) -> Result<(), CliError> {
    let api = Api::new(&cli)?;
    let output = cli.output;
    match cli.command {
        Command::Serve(_) => unreachable!("main runs serve"),
        Command::Registry(RegistryCommand::Add {
            name,
            address,
            username,
            password_stdin,
            insecure,
        }) => {
            let password = if password_stdin {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s).map_err(|e| {
                    CliError::refused(format!("cannot read the password from stdin: {e}"))
                })?;
                s.trim_end_matches(['\n', '\r']).to_owned()
            } else {
                std::env::var("EDGEFLEET_REGISTRY_PASSWORD").map_err(|_| {
                    CliError::refused(
                        "give the password with --password-stdin or EDGEFLEET_REGISTRY_PASSWORD",
                    )
                })?
            };
            api.put(
                &format!("/v1/registries/{name}"),
                &RegistryRequest {
                    address,
                    username,
                    password,
                    insecure,
                },
            )?;
            eprintln!("registry {name} saved (password stored encrypted)");
        }
        Command::Registry(RegistryCommand::List) => {
            let v = api.get("/v1/registries")?;
            print(output, &v, |v| {
                table(v, &["name", "address", "username", "insecure"])
            });
        }
        Command::Model(ModelCommand::Register {
            name,
            path,
            tags,
            description,
            sample_input,
        }) => {
            let file = model_file(&path)?;
            let bytes = std::fs::read(&file)
                .map_err(|e| CliError::refused(format!("{}: {e}", file.display())))?;
            let tags: BTreeMap<String, String> = tags.into_iter().collect();
            let mut query = vec![
                ("name", name),
                ("description", description),
                ("tags", serde_json::to_string(&tags).unwrap_or_default()),
            ];
            if let Some(sample) = sample_input {
                let text = std::fs::read_to_string(&sample)
                    .map_err(|e| CliError::refused(format!("{}: {e}", sample.display())))?;
                query.push(("sample", text));
            }
            let v = api.json(
                api.http
                    .post(api.url("/v1/models"))
                    .query(&query)
                    .body(bytes),
            )?;
            print(output, &v, |v| {
                format!(
                    "{}:{}",
                    v["name"].as_str().unwrap_or_default(),
                    v["version"]
                )
            });
        }
        Command::Model(ModelCommand::List) => {
            let v = api.get("/v1/models")?;
            print(output, &v, |v| {
                let rows: Vec<Value> = v
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|m| json!({"model": format!("{}:{}", m["name"].as_str().unwrap_or_default(), m["version"]), "image": m["package"]["image"], "description": m["description"]}))
                            .collect()
                    })
                    .unwrap_or_default();
                table(&Value::Array(rows), &["model", "image", "description"])
            });
        }
        Command::Model(ModelCommand::Package {
            model,
            registry,
            repository,
        }) => {
            let (name, version) = split_model(&model)?;
            let spinner =
                Progress::start(format!("packaging {model} and pushing it to {registry}"));
            let v = api.json(
                api.http
                    .post(api.url(&format!("/v1/models/{name}/{version}/package")))
                    .json(&PackageRequest {
                        registry,
                        repository,
                    }),
            );
            spinner.finish();
            let v = v?;
            print(output, &v, |v| {
                format!("pushed {}", v["image"].as_str().unwrap_or_default())
            });
        }
        Command::Model(ModelCommand::Delete { model }) => {
            let (name, version) = split_model(&model)?;
            api.json(
                api.http
                    .delete(api.url(&format!("/v1/models/{name}/{version}"))),
            )?;
            eprintln!("deleted {model}");
        }
        Command::Device(DeviceCommand::Add {
            id,
            tags,
            public_key,
        }) => {
            let request = DeviceRequest {
                tags: tags.into_iter().collect(),
                public_key,
            };
            api.put(&format!("/v1/devices/{id}"), &request)?;
            eprintln!(
                "device {id} saved; `edgefleet device config {id}` prints its agent configuration"
            );
        }
        Command::Device(DeviceCommand::List) => {
            let v = api.get("/v1/devices")?;
            print(output, &v, |v| {
                table(v, &["id", "tags", "manifestVersion", "stale"])
            });
        }
        Command::Device(DeviceCommand::Show { id }) => {
            let v = api.get(&format!("/v1/devices/{id}"))?;
            print(output, &v, device_text);
        }
        Command::Device(DeviceCommand::Config { id }) => {
            let text = api
                .send(api.http.get(api.url(&format!("/v1/devices/{id}/config"))))?
                .text()
                .map_err(|e| CliError::refused(e.to_string()))?;
            print!("{text}");
        }
        Command::Deployment(DeploymentCommand::Create {
            name,
            target,
            priority,
            model,
            module,
            port,
            auth_key_sha256,
            data_collection_ppm,
        }) => {
            let module =
                module.unwrap_or_else(|| model.split(':').next().unwrap_or_default().to_owned());
            let request = DeploymentRequest {
                target,
                priority,
                modules: BTreeMap::from([(
                    module,
                    DeploymentModule {
                        model,
                        port,
                        auth_key_sha256,
                        data_collection_ppm,
                    },
                )]),
            };
            let v = api.put(&format!("/v1/deployments/{name}"), &request)?;
            eprintln!(
                "deployment {name} saved; it targets {} device(s)",
                v["targeted"]
            );
        }
        Command::Deployment(DeploymentCommand::List) => {
            let v = api.get("/v1/deployments")?;
            print(output, &v, |v| {
                table(v, &["name", "target", "priority", "modules"])
            });
        }
        Command::Deployment(DeploymentCommand::Delete { name }) => {
            api.json(api.http.delete(api.url(&format!("/v1/deployments/{name}"))))?;
            eprintln!("deleted deployment {name}");
        }
        Command::Rollout(RolloutCommand::Status {
            deployment,
            wait,
            timeout_secs,
        }) => {
            let path = format!("/v1/rollouts/{deployment}");
            let deadline = Instant::now() + Duration::from_secs(timeout_secs);
            let mut v = api.get(&path)?;
            let progress = Progress::start(String::new());
            while wait && !finished(&v) && Instant::now() < deadline {
                progress.update(&format!(
                    "{deployment}: {}/{} succeeded, {} failed, {} pending",
                    v["succeeded"], v["targeted"], v["failed"], v["pending"]
                ));
                std::thread::sleep(Duration::from_millis(500));
                v = api.get(&path)?;
            }
            progress.finish();
            print(output, &v, rollout_text);
            if wait && !(v["targeted"].as_u64() > Some(0) && v["succeeded"] == v["targeted"]) {
                return Err(CliError {
                    code: 5,
                    message: failures(&v),
                });
            }
        }
        Command::Manifest(ManifestCommand::Show { device }) => {
            let v = api.get(&format!("/v1/manifests/{device}"))?;
            print(output, &v, |v| {
                serde_json::to_string_pretty(&v["signed"]["manifest"]).unwrap_or_default()
            });
        }
        Command::Manifest(ManifestCommand::Verify { file, fleet_key }) => {
            let key: edgefleet_common::signing::FleetPublicKey =
                fleet_key
                    .parse()
                    .map_err(|e: edgefleet_common::signing::KeyParseError| {
                        CliError::refused(e.to_string())
                    })?;
            let wire = std::fs::read(&file)
                .map_err(|e| CliError::refused(format!("{}: {e}", file.display())))?;
            let manifest = key
                .verify(&wire)
                .map_err(|e| CliError::refused(format!("{}: {e}", file.display())))?;
            println!(
                "{}",
                serde_json::to_string_pretty(&manifest).unwrap_or_default()
            );
        }
        Command::Module(ModuleCommand::Logs {
            device,
            module,
            tail,
            since,
        }) => {
            let since = since.map_or(0, |s| edgefleet_transport::now_ms() / 1000 - s);
            let body = ModuleCommandRequest {
                module,
                command: ModuleCommandKind::Logs {
                    tail,
                    since: i64::try_from(since).unwrap_or(0),
                },
            };
            let v = api.json(
                api.http
                    .post(api.url(&format!("/v1/devices/{device}/commands")))
                    .json(&body),
            )?;
            print(output, &v, |v| {
                v["logs"].as_str().unwrap_or_default().trim_end().to_owned()
            });
        }
        Command::Module(ModuleCommand::Restart { device, module }) => {
            let body = ModuleCommandRequest {
                module: module.clone(),
                command: ModuleCommandKind::Restart,
            };
            api.json(
                api.http
                    .post(api.url(&format!("/v1/devices/{device}/commands")))
                    .json(&body),
            )?;
            eprintln!("restarted {module} on {device}");
        }
        Command::Telemetry(TelemetryCommand::Tail { device, limit }) => {
            let v = api.get(&format!("/v1/telemetry/{device}?limit={limit}"))?;
            print(output, &v, |v| {
                v.as_array()
                    .map(|records| {
                        records
                            .iter()
                            .map(|r| {
                                format!(
                                    "#{} {} {} {}",
                                    r["seq"],
                                    r["module"].as_str().unwrap_or_default(),
                                    r["kind"].as_str().unwrap_or_default(),
                                    r["body"]
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .unwrap_or_default()
            });
        }
    }
    Ok(())
}

fn finished(v: &Value) -> bool {
    let targeted = v["targeted"].as_u64().unwrap_or(0);
    targeted > 0
        && v["succeeded"].as_u64().unwrap_or(0) + v["failed"].as_u64().unwrap_or(0) >= targeted
}

fn failures(v: &Value) -> String {
    let mut lines = vec![format!(
        "rollout of {} did not succeed: {}/{} succeeded, {} failed, {} pending",
        v["deployment"].as_str().unwrap_or_default(),
        v["succeeded"],
        v["targeted"],
        v["failed"],
        v["pending"]
    )];
    for d in v["devices"].as_array().into_iter().flatten() {
        if d["state"] != "succeeded" {
            lines.push(format!(
                "  {} ({}): {}",
                d["deviceId"].as_str().unwrap_or_default(),
                d["state"].as_str().unwrap_or_default(),
                d["message"].as_str().unwrap_or("no answer yet")
            ));
        }
    }
    lines.join("\n")
}

fn rollout_text(v: &Value) -> String {
    let mut out = format!(
        "deployment {}: targeted {}, applied {}, succeeded {}, failed {}, pending {}, stale {}",
        v["deployment"].as_str().unwrap_or_default(),
        v["targeted"],
        v["applied"],
        v["succeeded"],
        v["failed"],
        v["pending"],
        v["stale"]
    );
    for d in v["devices"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\n  {:<20} manifest {:<4} {:<10}{} {}",
            d["deviceId"].as_str().unwrap_or_default(),
            d["manifestVersion"],
            d["state"].as_str().unwrap_or_default(),
            if d["stale"] == true { " (stale)" } else { "" },
            d["message"].as_str().unwrap_or_default()
        ));
    }
    out
}

fn device_text(v: &Value) -> String {
    let reported = &v["reported"];
    let last_seen = match v["lastSeenMs"].as_u64() {
        Some(ms) => format!(
            "{} s ago",
            edgefleet_transport::now_ms().saturating_sub(ms) / 1000
        ),
        None => "never".to_owned(),
    };
    let mut out = format!(
        "device {}  tags {}  manifest {}  last seen {last_seen}  {}",
        v["id"].as_str().unwrap_or_default(),
        v["tags"],
        v["manifestVersion"],
        if v["stale"] == true {
            "STALE"
        } else {
            "online"
        }
    );
    if let Some(d) = reported.get("lastDesired").filter(|d| !d.is_null()) {
        out.push_str(&format!(
            "\nlast manifest {}: {} {}",
            d["version"],
            d["status"],
            d["message"].as_str().unwrap_or_default()
        ));
    }
    for (name, m) in reported["modules"].as_object().into_iter().flatten() {
        out.push_str(&format!(
            "\nmodule {name}: {} {} inferences {} p50 {} µs p99 {} µs{}",
            m["runtimeStatus"].as_str().unwrap_or_default(),
            m["image"].as_str().unwrap_or_default(),
            m["inference"]["count"],
            m["inference"]["latencyP50Us"],
            m["inference"]["latencyP99Us"],
            m["lastError"]
                .as_str()
                .map(|e| format!("\n  last error: {e}"))
                .unwrap_or_default()
        ));
    }
    out
}

/// A plain text table of `columns` from an array of objects.
fn table(v: &Value, columns: &[&str]) -> String {
    let cell = |x: &Value| match x {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let rows: Vec<Vec<String>> = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| columns.iter().map(|c| cell(&r[*c])).collect())
                .collect()
        })
        .unwrap_or_default();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    std::iter::once(line(columns.iter().map(|c| c.to_uppercase()).collect()))
        .chain(rows.into_iter().map(line))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A one-line progress display on stderr, when stderr is a terminal.
struct Progress {
    tty: bool,
}

impl Progress {
    fn start(message: String) -> Self {
        let tty = std::io::stderr().is_terminal();
        if tty && !message.is_empty() {
            eprint!("{message} ...");
        }
        Self { tty }
    }

    fn update(&self, message: &str) {
        if self.tty {
            eprint!("\r\x1b[2K{message}");
        }
    }

    fn finish(&self) {
        if self.tty {
            eprint!("\r\x1b[2K");
        }
    }
}
