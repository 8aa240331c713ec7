//! `edgefleet dashboard`: the link that opens the web dashboard signed in. The token rides in
//! the link's fragment, which the browser keeps to itself.

use super::error::CliError;
use crate::client::ClientError;

/// Prints the dashboard's sign-in link for `server` with the admin `token`.
pub(super) fn print_link(server: &str, token: Option<&str>) -> Result<(), CliError> {
    let token = token.ok_or(ClientError::NoToken)?;
    println!("{}/ui/login#token={token}", server.trim_end_matches('/'));
    Ok(())
}
