//! `edgefleet registry`: the container registries models are pushed to and deployments pull
//! from, with their credentials (the password never on the command line).

use std::io::Read as _;

use clap::Subcommand;
use edgefleet_common::fleet_api::RegistryRequest;

use super::error::CliError;
use super::output::{Output, print, table};
use crate::client::FleetClient;

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

/// Runs one `registry` command.
pub(super) fn run(
    api: &FleetClient,
    output: Output,
    command: RegistryCommand,
) -> Result<(), CliError> {
    match command {
        RegistryCommand::Add {
            name,
            address,
            username,
            password_stdin,
            insecure,
        } => {
            let request = RegistryRequest {
                address,
                username,
                password: read_password(password_stdin)?,
                insecure,
            };
            api.put_registry(&name, &request)?;
            eprintln!("registry {name} saved (password stored encrypted)");
        }
        RegistryCommand::Remove { name } => {
            api.delete_registry(&name)?;
            eprintln!("removed registry {name}");
        }
        RegistryCommand::List => {
            let registries = api.registries()?;
            print(output, &registries, |list| {
                let rows = list
                    .iter()
                    .map(|r| {
                        let insecure = r.insecure.to_string();
                        vec![
                            r.name.clone(),
                            r.address.clone(),
                            r.username.clone(),
                            insecure,
                        ]
                    })
                    .collect();
                table(&["name", "address", "username", "insecure"], rows)
            });
        }
    }
    Ok(())
}

fn read_password(password_stdin: bool) -> Result<String, CliError> {
    if password_stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| CliError::refused(format!("cannot read the password from stdin: {e}")))?;
        return Ok(s.trim_end_matches(['\n', '\r']).to_owned());
    }
    std::env::var("EDGEFLEET_REGISTRY_PASSWORD").map_err(|_| {
        CliError::refused("give the password with --password-stdin or EDGEFLEET_REGISTRY_PASSWORD")
    })
}
