//! How a command fails: [`Exit`] lists the exit codes of `edgefleet`, and [`CliError`] pairs
//! one with the message for the administrator. Every command's handler returns it, so it sits
//! below all of them.

use std::process::ExitCode;

use crate::client::ClientError;

/// The exit codes of `edgefleet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    /// The service refused the command (bad input, not found, conflict; the message says
    /// why), or `serve` could not run: a service manager may restart `serve`.
    Refused = 1,
    /// The command line was wrong (clap prints the usage).
    Usage = 2,
    /// The fleet service could not be reached (EDGEFLEET_SERVER).
    Unreachable = 3,
    /// The token is missing, wrong or revoked, or its role may not do this (EDGEFLEET_TOKEN).
    Unauthorized = 4,
    /// `rollout status --wait`: a device failed or the time ran out.
    RolloutFailed = 5,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// A CLI failure: its exit code and the message for the administrator.
#[derive(Debug)]
pub struct CliError {
    pub exit: Exit,
    pub message: String,
}

impl CliError {
    pub(super) fn refused(message: impl Into<String>) -> Self {
        Self {
            exit: Exit::Refused,
            message: message.into(),
        }
    }
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        let exit = match &e {
            ClientError::NoToken | ClientError::Unauthorized(_) | ClientError::Forbidden(_) => {
                Exit::Unauthorized
            }
            ClientError::Unreachable { .. } | ClientError::Untrusted { .. } => Exit::Unreachable,
            ClientError::Refused { .. }
            | ClientError::Unexpected(_)
            | ClientError::Setup(_)
            | ClientError::CaFile(_) => Exit::Refused,
        };
        Self {
            exit,
            message: e.to_string(),
        }
    }
}
