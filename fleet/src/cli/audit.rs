//! `edgefleet audit list`: the audit log, newest first: who (the token's name) changed what
//! (method, path, record) when, the answer's status, and the record's SHA-256 before and
//! after.

use clap::Subcommand;
use edgefleet_common::fleet_api::AuditQuery;

use super::error::CliError;
use super::output::{Output, ago, or_dash, print, table};
use super::parse::parse_time;
use crate::client::FleetClient;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Changes made through the API, newest first.
    List {
        /// Only entries from this long ago on (`90s`, `15m`, `1h`, `1d`) or since a Unix time
        /// in milliseconds.
        #[arg(long, value_parser = parse_time)]
        since: Option<u64>,
        /// Only the entries of the token with this name.
        #[arg(long)]
        token: Option<String>,
        /// At most this many entries (default 100, at most 10,000).
        #[arg(long)]
        limit: Option<usize>,
    },
}

/// Runs one `audit` command.
pub(super) fn run(
    api: &FleetClient,
    output: Output,
    command: AuditCommand,
) -> Result<(), CliError> {
    match command {
        AuditCommand::List {
            since,
            token,
            limit,
        } => {
            let query = AuditQuery {
                since_ms: since,
                token,
                limit,
            };
            let entries = api.audit(&query)?;
            let short =
                |d: Option<&str>| or_dash(d.map(|d| d.chars().take(12).collect::<String>()));
            print(output, &entries, |list| {
                let rows = list
                    .iter()
                    .map(|e| {
                        vec![
                            ago(e.at_ms),
                            e.token.clone(),
                            e.role.to_string(),
                            format!("{} {}", e.method, e.path),
                            e.object.clone(),
                            e.status.to_string(),
                            short(e.before.as_deref()),
                            short(e.after.as_deref()),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "when", "token", "role", "request", "object", "status", "before", "after",
                    ],
                    rows,
                )
            });
        }
    }
    Ok(())
}
