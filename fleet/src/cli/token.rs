//! `edgefleet token`: named API tokens for administrators and programs, each with a role
//! (viewer, operator, admin). The fleet keeps only each token's SHA-256, so `create` prints
//! the token once; `list` never shows one.

use clap::Subcommand;
use edgefleet_common::fleet_api::Role;

use super::error::CliError;
use super::output::{Output, ago, or_dash, print, table};
use crate::client::FleetClient;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (once: the fleet keeps only its SHA-256).
    Create {
        /// The token's name, as the audit log shows it (letters, digits, `-`, `_`, `.`).
        name: String,
        /// viewer (reads), operator (also steers rollouts and sends module commands) or
        /// admin (everything).
        #[arg(long, value_parser = parse_role)]
        role: Role,
    },
    /// The tokens: name, role, created, created by, last used (never the token).
    List,
    /// Revoke a token: its next request is refused, on every replica.
    #[command(alias = "delete")]
    Revoke { name: String },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

/// Runs one `token` command.
pub(super) fn run(
    api: &FleetClient,
    output: Output,
    command: TokenCommand,
) -> Result<(), CliError> {
    match command {
        TokenCommand::Create { name, role } => {
            let created = api.create_token(&name, role)?;
            print(output, &created, |c| c.token.clone());
            eprintln!(
                "token {} ({}) created: it is shown this once, keep it (EDGEFLEET_TOKEN)",
                created.name, created.role
            );
        }
        TokenCommand::List => {
            let tokens = api.tokens()?;
            print(output, &tokens, |list| {
                let rows = list
                    .iter()
                    .map(|t| {
                        vec![
                            t.name.clone(),
                            t.role.to_string(),
                            t.created_ms.map_or_else(|| "-".to_owned(), ago),
                            or_dash(t.created_by.as_deref()),
                            t.last_used_ms.map_or_else(|| "never".to_owned(), ago),
                        ]
                    })
                    .collect();
                table(
                    &["name", "role", "created", "created by", "last used"],
                    rows,
                )
            });
        }
        TokenCommand::Revoke { name } => {
            api.revoke_token(&name)?;
            eprintln!("revoked token {name}");
        }
    }
    Ok(())
}
