//! `edgefleet manifest`: the signed per-device manifests. The one rendered for a device, and
//! checking a manifest file against the fleet's public key (offline, without the service).

use std::path::PathBuf;

use clap::Subcommand;
use edgefleet_common::signing::{FleetPublicKey, KeyParseError};

use super::error::CliError;
use super::output::{Output, print};
use crate::client::FleetClient;

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

/// Runs one `manifest` command.
pub(super) fn run(
    api: &FleetClient,
    output: Output,
    command: ManifestCommand,
) -> Result<(), CliError> {
    match command {
        ManifestCommand::Show { device } => {
            let manifest = api.manifest(&device)?;
            print(output, &manifest, |m| {
                serde_json::to_string_pretty(&m.signed["manifest"]).unwrap_or_default()
            });
        }
        ManifestCommand::Verify { file, fleet_key } => {
            let key: FleetPublicKey = fleet_key
                .parse()
                .map_err(|e: KeyParseError| CliError::refused(e.to_string()))?;
            let wire = std::fs::read(&file)
                .map_err(|e| CliError::refused(format!("{}: {e}", file.display())))?;
            let manifest = key
                .verify(&wire)
                .map_err(|e| CliError::refused(format!("{}: {e}", file.display())))?;
            print(Output::Json, &manifest, |_| String::new());
        }
    }
    Ok(())
}
