//! The `edgefleet-agent` command line: parse arguments, load the configuration, run the
//! command, and map errors to the exit codes of [`Exit`] (documented in `--help`). Each group
//! of commands has its file: [`model`], [`offline`] (bundles and the outbox), [`status`]
//! (status and check); [`output`] is how they write.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod model;
mod offline;
mod output;
mod status;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use edgefleet_common::sealing::DeviceIdentity;

use crate::config::{AgentConfig, ConfigError, DEFAULT_CONFIG};
use model::{ModelCommand, model_command};
use offline::{BundleCommand, OutboxCommand, bundle_import, outbox};
use output::{OutputFormat, log_to_stderr};
use status::{check, status};

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
