//! The `edgefleet-agent` command line: parse arguments, load the configuration, run the
//! command, and map errors to the exit codes of [`Exit`] (documented in `--help`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::{AgentConfig, ConfigError, DEFAULT_CONFIG};
use crate::control_socket::{self, ControlAnswer, ControlRequest};
use crate::status_socket;
use crate::store::Store;
use anyhow::Context as _;
use clap::{Parser, Subcommand};
use edgefleet_common::manifest::{Module, ModuleKind};
use edgefleet_common::outbox_export::SignedReceipt;
use edgefleet_common::reported::{
    ModuleState, REPORTED_SCHEMA_VERSION, ReportedState, RuntimeStatus,
};
use edgefleet_common::sealing::DeviceIdentity;
use edgefleet_onnx::OnnxRuntime;
use edgefleet_onnx::canary::metadata_from_model;
use edgefleet_onnx::profile::ProfileSettings;
use edgefleet_onnx::tensor_json::describe;

/// The agent's exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The command did what it was asked; `run` stopped on SIGTERM or SIGINT.
    Success = 0,
    /// A runtime failure (the store, the model cache, ONNX Runtime, an unreadable identity):
    /// a service manager may restart the agent.
    Failure = 1,
    /// The command line was wrong (clap prints the usage): fix the unit file, do not restart.
    Usage = 2,
    /// The configuration is wrong; the message names the field (sysexits' EX_CONFIG): fix the
    /// file, do not restart (the systemd unit has `RestartPreventExitStatus=78`).
    Config = 78,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// The Edgefleet device agent.
#[derive(Debug, Parser)]
#[command(
    name = "edgefleet-agent",
    version,
    about,
    after_help = "Exit codes: 0 success, 1 failure, 2 bad usage, 78 bad configuration."
)]
struct Cli {
    /// The configuration file (TOML; see `print-default-config`).
    #[arg(long, short, env = "EDGEFLEET_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the data directory and the device keypair (files 0600); print the public key.
    Init {
        /// The data directory (default: data_dir from the configuration).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Run the agent.
    Run,
    /// Print the default configuration file.
    PrintDefaultConfig,
    /// Print the agent's state: applied manifest, modules, telemetry outbox (from the running
    /// agent, else from its store).
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Work with an ONNX model file directly, without a deployment.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Check the configuration, the device key, the broker, the registries of the applied
    /// manifest, ONNX Runtime, the Docker engine, the disk and the clock; exits 1 when a
    /// check fails.
    Check {
        /// `text` or `json`.
        #[arg(long, value_enum, default_value = "text")]
        output: OutputFormat,
    },
    /// Offline bundles (`edgefleet bundle create`).
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// Print the shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Write the man pages (one per command) into DIR.
    Man {
        #[arg(long)]
        dir: PathBuf,
    },
    /// The telemetry outbox, for bringing data back without a link.
    #[command(subcommand)]
    Outbox(OutboxCommand),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum BundleCommand {
    /// Verify a bundle (checksum, digests, signature, version), import its images and apply
    /// its manifest, as the running agent applies one from the fleet. Nothing changes when
    /// any check fails; running it again after an interruption resumes.
    Import { file: PathBuf },
}

#[derive(Debug, Subcommand)]
enum OutboxCommand {
    /// Write every record the fleet has not acknowledged, and the reported state, to FILE
    /// (for `edgefleet telemetry import`). They stay in the outbox until trimmed or sent.
    Export { file: PathBuf },
    /// Drop the records a fleet receipt (`edgefleet telemetry import --receipt`) confirms.
    Trim {
        #[arg(long)]
        receipt: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Print the inputs and outputs a model declares.
    Inspect { model: PathBuf },
    /// Score one request body (as POST /score takes it) and print the response.
    Score {
        model: PathBuf,
        /// The request body, e.g. '{"data": [[1,2,3,4,5,6,7,8,9,10]]}'.
        request: String,
    },
    /// Score a file of requests into a file of responses, in order: JSON Lines (a request
    /// body per line) or CSV (a header and a row per request), streaming; an interrupted run
    /// continues with --resume.
    Batch {
        model: PathBuf,
        input: PathBuf,
        #[arg(long, short)]
        output: PathBuf,
        /// Keep the complete responses OUTPUT already has and score the rest.
        #[arg(long)]
        resume: bool,
    },
    /// Run a model at several batch sizes and intra-op thread counts and report latency,
    /// throughput and peak memory, with the threads and memory to give it on a device.
    Profile {
        model: PathBuf,
        /// A request body to profile with (its first row is repeated for larger batches);
        /// default: the smallest synthesized request that runs.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Comma-separated (default 1,8,32).
        #[arg(long, value_delimiter = ',')]
        batch_sizes: Vec<usize>,
        /// Intra-op thread counts, comma-separated (default 1, 2 and this machine's cores).
        #[arg(long, value_delimiter = ',')]
        threads: Vec<u16>,
        #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Serve a model file with the scoring API, without a deployment (for trying a model
    /// out). Inference records go to a telemetry outbox in --data-dir, as they do on a device.
    Serve {
        model: PathBuf,
        #[arg(long, default_value_t = 5001)]
        port: u16,
        #[arg(long, default_value = "127.0.0.1")]
        bind: String,
        /// Where the outbox is kept (default: a temporary directory, removed on exit).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
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
    match run(cli) {
        Ok(()) => Exit::Success.into(),
        Err(e) => {
            eprintln!("edgefleet-agent: {e:#}");
            let config = e.chain().any(|c| c.downcast_ref::<ConfigError>().is_some());
            if config { Exit::Config } else { Exit::Failure }.into()
        }
    }
}

fn load_config(path: Option<&Path>) -> Result<AgentConfig, ConfigError> {
    crate::config::load(path, std::env::vars())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::PrintDefaultConfig => print!("{DEFAULT_CONFIG}"),
        Command::Init { data_dir } => {
            let data_dir = match data_dir {
                Some(d) => d,
                None => {
                    crate::config::load_unchecked(cli.config.as_deref(), std::env::vars())?.data_dir
                }
            };
            init(&data_dir)?;
        }
        Command::Run => {
            let config = load_config(cli.config.as_deref())?;
            log_to_stderr();
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(crate::agent::run(
                config,
                edgefleet_transport::shutdown_signal(),
            ))?;
        }
        Command::Status { json } => status(&load_config(cli.config.as_deref())?, json)?,
        Command::Check { output } => check(cli.config.as_deref(), output)?,
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "edgefleet-agent",
                &mut std::io::stdout(),
            );
        }
        Command::Man { dir } => {
            use clap::CommandFactory as _;
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(Cli::command(), &dir)
                .with_context(|| format!("cannot write man pages into {}", dir.display()))?;
        }
        Command::Bundle(BundleCommand::Import { file }) => {
            bundle_import(&load_config(cli.config.as_deref())?, &file)?;
        }
        Command::Outbox(command) => outbox(&load_config(cli.config.as_deref())?, command)?,
        Command::Model(command) => model_command(
            &crate::config::load_unchecked(cli.config.as_deref(), std::env::vars())?,
            command,
        )?,
    }
    Ok(())
}

fn init(data_dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let key_path = data_dir.join("device.key");
    let identity = if key_path.exists() {
        let text = std::fs::read_to_string(&key_path)
            .with_context(|| format!("cannot read {}", key_path.display()))?;
        text.parse::<DeviceIdentity>()
            .with_context(|| format!("{}", key_path.display()))?
    } else {
        let identity = DeviceIdentity::generate();
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_path)
            .with_context(|| format!("cannot create {}", key_path.display()))?;
        std::io::Write::write_all(
            &mut file,
            format!("{}\n", identity.to_secret_string()).as_bytes(),
        )
        .with_context(|| format!("cannot write {}", key_path.display()))?;
        file.sync_all()?;
        eprintln!("created the device key {}", key_path.display());
        identity
    };
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))?;
    println!("{}", identity.public_key());
    Ok(())
}

/// Runs the checks and prints them; an error (exit 1) when one fails.
fn check(path: Option<&Path>, output: OutputFormat) -> anyhow::Result<()> {
    use crate::check::{Check, Verdict};
    let source = path.map_or("the default configuration".to_owned(), |p| {
        p.display().to_string()
    });
    let checks = match load_config(path) {
        Ok(config) => {
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(crate::check::run(&config, &source))
        }
        Err(e) => vec![Check {
            name: "configuration".into(),
            verdict: Verdict::Fail,
            detail: e.to_string(),
            fix: Some(
                "fix the field named; `edgefleet-agent print-default-config` shows every setting"
                    .into(),
            ),
        }],
    };
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&checks)?),
        OutputFormat::Text => {
            for c in &checks {
                let verdict = match c.verdict {
                    Verdict::Ok => "ok  ",
                    Verdict::Warn => "warn",
                    Verdict::Fail => "FAIL",
                };
                println!("{verdict}  {:<18} {}", c.name, c.detail);
                if let Some(fix) = &c.fix {
                    println!("      {:<18} fix: {fix}", "");
                }
            }
        }
    }
    let failed = checks.iter().filter(|c| c.verdict == Verdict::Fail).count();
    if failed > 0 {
        anyhow::bail!("{failed} check(s) failed");
    }
    Ok(())
}

/// Sends `request` to the running agent; a clear error when it is not running.
fn control(
    config: &AgentConfig,
    request: &ControlRequest,
) -> anyhow::Result<std::os::unix::net::UnixStream> {
    let path = config.control_socket_path();
    control_socket::connect(&path, request).with_context(|| {
        format!(
            "no running agent answers on {} (start it: `edgefleet-agent run`)",
            path.display()
        )
    })
}

fn control_answer(stream: std::os::unix::net::UnixStream) -> anyhow::Result<ControlAnswer> {
    let answer: ControlAnswer = serde_json::from_reader(stream)
        .context("the agent ended the request without an answer (see its log)")?;
    match answer {
        ControlAnswer::Refused { error } => anyhow::bail!("{error}"),
        answer => Ok(answer),
    }
}

fn bundle_import(config: &AgentConfig, file: &Path) -> anyhow::Result<()> {
    let path = std::path::absolute(file)
        .with_context(|| format!("{}: not a usable path", file.display()))?;
    if !path.is_file() {
        anyhow::bail!("{}: no such file", path.display());
    }
    eprintln!("verifying and importing {} ...", path.display());
    let request = ControlRequest::ImportBundle { path: path.clone() };
    // The agent opens the file itself, as its own user and, under systemd, with a /tmp of
    // its own: say where to put a file it cannot reach.
    let answer = control_answer(control(config, &request)?).map_err(|e| {
        let text = e.to_string();
        if text.starts_with(&path.display().to_string()) {
            e.context(format!(
                "the agent cannot open it: copy the bundle into {} (or under /media or /mnt)",
                config.drop_dir().display()
            ))
        } else {
            e
        }
    })?;
    let ControlAnswer::Imported(report) = answer else {
        anyhow::bail!("the agent answered something else than an import report");
    };
    let outcome = &report.outcome;
    let code = u16::from(outcome.status);
    eprintln!(
        "imported {} model blob(s) and {} container image(s); manifest version {}: {code} {}",
        report.model_blobs, report.container_images, report.version, outcome.message
    );
    if outcome.status != edgefleet_common::reported::ApplyStatus::Applied {
        anyhow::bail!(
            "manifest version {} not applied: {code} {}",
            report.version,
            outcome.message
        );
    }
    Ok(())
}

fn outbox(config: &AgentConfig, command: OutboxCommand) -> anyhow::Result<()> {
    match command {
        OutboxCommand::Export { file } => {
            if file.exists() {
                anyhow::bail!("{} exists; it is not overwritten", file.display());
            }
            let mut stream = control(config, &ControlRequest::ExportOutbox)?;
            let dir = match file.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            let mut temp = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("cannot write in {}", dir.display()))?;
            std::io::copy(&mut stream, &mut temp).context("the export stopped")?;
            let records = check_export(temp.path())?;
            temp.as_file().sync_all()?;
            temp.persist_noclobber(&file)
                .with_context(|| format!("cannot write {}", file.display()))?;
            eprintln!("wrote {records} record(s) to {}", file.display());
        }
        OutboxCommand::Trim { receipt } => {
            let text = std::fs::read(&receipt)
                .with_context(|| format!("cannot read {}", receipt.display()))?;
            let receipt: SignedReceipt = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not a receipt", receipt.display()))?;
            let request = ControlRequest::TrimOutbox { receipt };
            if let ControlAnswer::Trimmed {
                removed,
                committed_seq,
            } = control_answer(control(config, &request)?)?
            {
                eprintln!(
                    "dropped {removed} record(s) the fleet stored (through seq {committed_seq})"
                );
            }
        }
    }
    Ok(())
}

/// Checks that an export ends with its end line and that its checksum matches; returns its
/// record count.
fn check_export(path: &Path) -> anyhow::Result<u64> {
    use sha2::{Digest as _, Sha256};
    let bytes = std::fs::read(path)?;
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    #[derive(serde::Deserialize)]
    struct End {
        end: edgefleet_common::outbox_export::ExportEnd,
    }
    let end: End = serde_json::from_slice(&body[start..])
        .context("the export is incomplete: the agent stopped before its end (see its log)")?;
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes[..start])));
    if actual != end.end.sha256 {
        anyhow::bail!(
            "the export is damaged: checksum {actual}, recorded {}",
            end.end.sha256
        );
    }
    Ok(end.end.records)
}

/// Prints the agent's state: from the running agent's status socket, or, when it is not
/// running, from its store.
fn status(config: &AgentConfig, json: bool) -> anyhow::Result<()> {
    // An agent that holds its store but does not answer yet is starting: ask it again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (state, running) = loop {
        if let Ok(bytes) = status_socket::read(&config.status_socket_path()) {
            let state: ReportedState = serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "the agent's status socket {} answered with something other than its state",
                    config.status_socket_path().display()
                )
            })?;
            break (state, true);
        }
        match Store::open(&config.store_path()) {
            Err(crate::store::StoreError::Open {
                source: redb::DatabaseError::DatabaseAlreadyOpen,
                ..
            }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            opened => break (stored_state(config, opened)?, false),
        }
    };
    if json {
        let mut doc = serde_json::to_value(&state)?;
        doc["running"] = running.into();
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    let source = if running {
        "agent running"
    } else {
        "agent not running; read from its store"
    };
    println!("device          {} ({source})", state.device_id);
    match state.applied_version {
        Some(version) => println!("applied         version {version}"),
        None => println!("applied         nothing yet"),
    }
    if let Some(o) = &state.last_desired {
        let version = o.version.map_or("-".to_owned(), |v| v.to_string());
        let source = match o.source {
            edgefleet_common::reported::ManifestSource::Fleet => "",
            edgefleet_common::reported::ManifestSource::Bundle => " (from a bundle)",
        };
        println!(
            "last manifest   version {version}: {} {}{source}",
            u16::from(o.status),
            o.message
        );
    }
    for (name, m) in &state.modules {
        let status = serde_json::to_value(m.runtime_status)?;
        let mut line = format!(
            "module          {name}: {} {}",
            status.as_str().unwrap_or("-"),
            m.image
        );
        if let Some(i) = &m.inference {
            line.push_str(&format!(" ({} inferences, {} errors)", i.count, i.errors));
        }
        if let Some(error) = &m.last_error {
            line.push_str(&format!(" error: {error}"));
        }
        println!("{line}");
    }
    println!(
        "outbox          {} record(s), {} bytes, {} dropped",
        state.outbox.depth, state.outbox.bytes, state.outbox.dropped
    );
    Ok(())
}

/// What a stopped agent's store holds, in the shape of its reported state.
fn stored_state(
    config: &AgentConfig,
    opened: Result<Store, crate::store::StoreError>,
) -> anyhow::Result<ReportedState> {
    let store = opened.with_context(|| {
        format!(
            "cannot open the agent store {} and no agent answers on {}",
            config.store_path().display(),
            config.status_socket_path().display()
        )
    })?;
    let key = config.fleet_key()?;
    let applied = store.applied()?.and_then(|w| key.verify(&w).ok());
    let modules = store
        .modules()?
        .into_iter()
        .map(|(name, record)| {
            let kind = applied
                .as_ref()
                .and_then(|m| m.modules.get(&name))
                .map_or(ModuleKind::Model, Module::kind);
            let state = ModuleState {
                kind,
                runtime_status: RuntimeStatus::Stopped,
                image: record.image,
                image_digest: Some(record.digest),
                restart_count: 0,
                exit_code: None,
                last_start_ms: None,
                last_error: None,
                warnings: Vec::new(),
                inference: None,
            };
            (name, state)
        })
        .collect();
    Ok(ReportedState {
        schema_version: REPORTED_SCHEMA_VERSION.to_owned(),
        device_id: config.device_id.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        applied_version: applied.map(|m| m.version),
        last_desired: store.outcome()?,
        modules,
        outbox: store.outbox_state()?,
        reported_at_ms: edgefleet_transport::now_ms(),
        fleet_silent_since_ms: None,
    })
}

fn model_command(config: &AgentConfig, command: ModelCommand) -> anyhow::Result<()> {
    let library = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| config.onnx_runtime_library.clone());
    let runtime = OnnxRuntime::load(&library)?;
    let path = match &command {
        ModelCommand::Inspect { model }
        | ModelCommand::Score { model, .. }
        | ModelCommand::Profile { model, .. }
        | ModelCommand::Batch { model, .. }
        | ModelCommand::Serve { model, .. } => model,
    };
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let model = runtime
        .model(&bytes)
        .with_context(|| format!("{}", path.display()))?;
    match command {
        ModelCommand::Inspect { .. } => {
            for spec in model.inputs() {
                println!("input  {}: {}", spec.name, describe(spec));
            }
            for spec in model.outputs() {
                println!("output {}: {}", spec.name, describe(spec));
            }
        }
        ModelCommand::Score { request, .. } => {
            let body: serde_json::Value =
                serde_json::from_str(&request).context("the request is not valid JSON")?;
            println!("{}", model.score(&body)?);
        }
        ModelCommand::Batch {
            input,
            output,
            resume,
            ..
        } => {
            let size = std::fs::metadata(&input)
                .with_context(|| format!("cannot read {}", input.display()))?
                .len();
            let bar = indicatif::ProgressBar::new(size).with_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let summary =
                crate::batch_scoring::score_file(&model, &input, &output, resume, &mut |read| {
                    bar.set_position(read)
                });
            bar.finish_and_clear();
            let summary = summary?;
            eprintln!(
                "{} requests scored into {} ({} failed{})",
                summary.scored,
                output.display(),
                summary.failed,
                if summary.resumed > 0 {
                    format!(", {} kept from the interrupted run", summary.resumed)
                } else {
                    String::new()
                }
            );
            if summary.failed > 0 {
                anyhow::bail!(
                    "{} requests failed; their errors are in {}",
                    summary.failed,
                    output.display()
                );
            }
        }
        ModelCommand::Profile {
            input,
            batch_sizes,
            threads,
            output,
            ..
        } => {
            let sample = match input {
                Some(file) => {
                    let text = std::fs::read_to_string(&file)
                        .with_context(|| format!("cannot read {}", file.display()))?;
                    serde_json::from_str(&text)
                        .with_context(|| format!("{} is not a JSON request body", file.display()))?
                }
                None => {
                    let metadata = metadata_from_model("model", &model);
                    edgefleet_onnx::canary::find_sample(&model, &metadata)?.input
                }
            };
            drop(model);
            let settings = ProfileSettings::or_defaults(batch_sizes, threads);
            let profile =
                edgefleet_onnx::profile::profile(runtime, &bytes, &sample, &settings, |run| {
                    eprintln!(
                        "threads {} batch {}: p50 {} µs, {:.0} rows/s",
                        run.intra_op_threads, run.batch, run.p50_us, run.rows_per_second
                    );
                })?;
            match output {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&profile)?),
                OutputFormat::Text => println!("{}", profile.to_text()),
            }
        }
        ModelCommand::Serve {
            model: path,
            port,
            bind,
            data_dir,
        } => {
            serve(config, path, model, &bind, port, data_dir)?;
        }
    }
    Ok(())
}

/// Log lines (info and above, or as `RUST_LOG` says) go to stderr.
fn log_to_stderr() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// `model serve`: the scoring API of one model file, with an outbox of its own (its warnings,
/// a refused inference record say, are logged to stderr).
fn serve(
    config: &AgentConfig,
    path: PathBuf,
    model: edgefleet_onnx::Model,
    bind: &str,
    port: u16,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    use crate::model_module::ModelModule;
    use crate::outbox::Outbox;

    log_to_stderr();
    let (dir, temporary) = match data_dir {
        Some(d) => (d, false),
        None => (
            std::env::temp_dir().join(format!("edgefleet-serve-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = path
        .file_stem()
        .map_or("model".to_owned(), |s| s.to_string_lossy().into_owned());
    let module = std::sync::Arc::new(ModelModule::from_file(
        &name,
        model,
        &path.display().to_string(),
        bind,
        port,
    ));
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        let store = Store::open(&dir.join("agent.redb"))?;
        let outbox = Outbox::start(store, "local".into(), config.telemetry.outbox_max_bytes);
        let limits = crate::scoring_api::ScoringLimits::from_config(config);
        let listener = tokio::net::TcpListener::bind((bind, port))
            .await
            .with_context(|| format!("cannot listen on {bind}:{port}"))?;
        let router = move || crate::scoring_api::router(module.clone(), outbox.clone(), limits);
        let server = crate::scoring_api::ScoringServer::start(listener, router)
            .context("cannot start the scoring API's request threads")?;
        eprintln!("serving {} on http://{bind}:{port}/score", path.display());
        edgefleet_transport::shutdown_signal().await;
        server.stop(std::time::Duration::from_secs(5)).await;
        anyhow::Ok(())
    });
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}
