//! The `edgefleet` command line: `serve` runs the fleet service; every other command is an
//! administrator's call to it (nouns then verbs, `--output json` on every read command,
//! `EDGEFLEET_SERVER` and `EDGEFLEET_TOKEN` from the environment) through the typed client.
//! This file holds the top-level [`Cli`] and [`Command`] and hands each command to the file of
//! its resource (`registry`, `model`, `device`, ...), which holds that resource's subcommands
//! and carries them out. Below them all: [`Exit`] and [`CliError`] (`error`), the `--output`
//! formats and printing (`output`), written files (`files`) and shared flag parsers (`parse`).

mod audit;
mod bundle;
mod dashboard;
mod deployment;
mod device;
mod error;
mod files;
mod generate;
mod manifest;
mod model;
mod module;
mod output;
mod parse;
mod registry;
mod rollout;
mod serve;
mod telemetry;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

use crate::client::FleetClient;

pub use audit::AuditCommand;
pub use bundle::BundleCommand;
pub use deployment::DeploymentCommand;
pub use device::DeviceCommand;
pub use error::{CliError, Exit};
pub use manifest::ManifestCommand;
pub use model::ModelCommand;
pub use module::ModuleCommand;
pub use output::Output;
pub use registry::RegistryCommand;
pub use rollout::{RolloutCommand, RolloutFlags};
pub use serve::ServeArgs;
pub use telemetry::TelemetryCommand;
pub use token::TokenCommand;

#[derive(Debug, Parser)]
#[command(
    name = "edgefleet",
    version,
    about = "Edgefleet fleet service and administrators' CLI",
    after_help = "Exit codes: 0 success, 1 refused, 2 bad usage, 3 service unreachable, 4 unauthorized (no, wrong or revoked token, or a role that may not), 5 rollout failed."
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
    /// An API token (`edgefleet token create`; the first admin's is <data-dir>/admin-token).
    /// Given before the command (`edgefleet --token T audit list --token NAME` filters by
    /// another token's name).
    #[arg(long, env = "EDGEFLEET_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The CA certificate(s) (PEM) an https:// server's certificate must chain to; without
    /// it, the system's root certificates.
    #[arg(long, env = "EDGEFLEET_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    /// Output format of read commands.
    #[arg(long, short, value_enum, default_value = "text", global = true)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
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
    /// API tokens of administrators and programs, each with a role (admin only).
    #[command(subcommand)]
    Token(TokenCommand),
    /// The audit log: every change made through the API, by whom.
    #[command(subcommand)]
    Audit(AuditCommand),
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
        Command::Serve(args) => serve::run(args).map_err(|e| CliError::refused(format!("{e:#}"))),
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

/// Runs one CLI command (all but `serve`) through the typed client.
pub fn run(cli: Cli) -> Result<(), CliError> {
    let api = FleetClient::with_ca_file(&cli.server, cli.token.clone(), cli.ca_file.as_deref())?;
    let output = cli.output;
    match cli.command {
        Command::Serve(_) => Err(CliError::refused("`serve` runs the service")),
        Command::Registry(command) => registry::run(&api, output, command),
        Command::Model(command) => model::run(&api, output, command),
        Command::Device(command) => device::run(&api, output, command),
        Command::Deployment(command) => deployment::run(&api, output, command),
        Command::Rollout(command) => rollout::run(&api, output, command),
        Command::Manifest(command) => manifest::run(&api, output, command),
        Command::Telemetry(command) => telemetry::run(&api, output, command),
        Command::Module(command) => module::run(&api, output, command),
        Command::Bundle(command) => bundle::run(&api, command),
        Command::Token(command) => token::run(&api, output, command),
        Command::Audit(command) => audit::run(&api, output, command),
        Command::Dashboard => dashboard::print_link(&cli.server, cli.token.as_deref()),
        Command::Completions { shell } => {
            generate::completions(shell, Cli::command());
            Ok(())
        }
        Command::Man { dir } => generate::man_pages(Cli::command(), &dir),
    }
}
