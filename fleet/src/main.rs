//! edgefleet: the fleet service and the administrators' CLI.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use edgefleet_common::signing::FleetPublicKey;

/// Edgefleet fleet service and administrators' CLI.
#[derive(Debug, Parser)]
#[command(name = "edgefleet", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Signed per-device manifests.
    #[command(subcommand)]
    Manifest(ManifestCommand),
}

#[derive(Debug, Subcommand)]
enum ManifestCommand {
    /// Verify a signed manifest file against the fleet public key and print the manifest.
    Verify {
        file: PathBuf,
        /// The fleet's public key (base64), as configured on devices.
        #[arg(long, env = "EDGEFLEET_FLEET_KEY")]
        fleet_key: String,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgefleet: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Manifest(ManifestCommand::Verify { file, fleet_key }) => {
            let key: FleetPublicKey = fleet_key.parse()?;
            let wire =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let manifest = key
                .verify(&wire)
                .with_context(|| format!("{}", file.display()))?;
            println!("{}", serde_json::to_string_pretty(&manifest)?);
        }
    }
    Ok(())
}
