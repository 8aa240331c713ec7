//! `edgefleet module`: the container modules on one device. Their recent output and a
//! restart, both carried out by the device's agent on the service's request.

use clap::Subcommand;
use edgefleet_common::commands::{CommandOutcome, DeviceCommand as ModuleCommandKind};
use edgefleet_common::fleet_api::ModuleCommandRequest;
use edgefleet_transport::now_ms;

use super::error::CliError;
use super::output::{Output, print};
use crate::client::FleetClient;

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

/// Runs one `module` command.
pub(super) fn run(
    api: &FleetClient,
    output: Output,
    command: ModuleCommand,
) -> Result<(), CliError> {
    match command {
        ModuleCommand::Logs {
            device,
            module,
            tail,
            since,
        } => {
            let since = since.map_or(0, |s| (now_ms() / 1000).saturating_sub(s));
            let request = ModuleCommandRequest {
                module,
                command: ModuleCommandKind::Logs {
                    tail,
                    since: i64::try_from(since).unwrap_or(0),
                },
            };
            let result = api.command(&device, &request)?;
            print(output, &result, |r| match &r.outcome {
                CommandOutcome::Logs { logs } => logs.trim_end().to_owned(),
                other => format!("{other:?}"),
            });
        }
        ModuleCommand::Restart { device, module } => {
            let request = ModuleCommandRequest {
                module: module.clone(),
                command: ModuleCommandKind::Restart,
            };
            api.command(&device, &request)?;
            eprintln!("restarted {module} on {device}");
        }
    }
    Ok(())
}
