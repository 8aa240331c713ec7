//! Administrators and what they did (`/v1/tokens`, `/v1/audit`): named API tokens, each with a
//! [`Role`], and the audit log of every change made through the API.

use serde::{Deserialize, Serialize};

use crate::UnixMillis;

/// What a token may do. Each role may do everything the one before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads: every `GET` but the token list.
    Viewer,
    /// Also pauses, resumes, aborts and rolls back rollouts, and sends module commands.
    Operator,
    /// Everything else: registries, models, devices, deployments, tokens.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a role (viewer, operator, admin)"))
    }
}

/// `POST /v1/tokens/{name}`: a new token for an administrator or a program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenRequest {
    pub role: Role,
}

/// What creating a token answers: the token itself, shown this once (the fleet keeps only
/// its SHA-256).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenCreated {
    pub name: String,
    pub role: Role,
    pub token: String,
}

/// A token as `GET /v1/tokens` shows it: never the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenView {
    pub name: String,
    pub role: Role,
    /// Absent for the bootstrap token (it is as old as the fleet's data).
    pub created_ms: Option<UnixMillis>,
    /// The name of the token that created it (absent for the bootstrap token).
    pub created_by: Option<String>,
    /// When a request last came with it (noted at most once a minute per service replica);
    /// absent when never.
    pub last_used_ms: Option<UnixMillis>,
    /// The token of `<data-dir>/admin-token` (or `EDGEFLEET_TOKEN` in `edgefleet serve`'s environment): it cannot be revoked through
    /// the API.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bootstrap: bool,
}

/// One entry of the audit log: a change (or an attempted change) made through the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub at_ms: UnixMillis,
    /// The name of the token the request came with.
    pub token: String,
    pub role: Role,
    /// `PUT`, `POST`, `DELETE`.
    pub method: String,
    /// The route, as the router names it (`/v1/deployments/{name}`).
    pub route: String,
    /// The path requested (`/v1/deployments/line`).
    pub path: String,
    /// The record changed, as `<kind>/<name>` (`deployment/line`); for a change of several
    /// records (a device import) the first one and how many more.
    pub object: String,
    /// The HTTP status the request was answered with (403 when its role was not enough).
    pub status: u16,
    /// SHA-256 (hex) of the stored record before the change; absent when it did not exist.
    /// For several records, of their names and digests (see docs/decisions.md).
    pub before: Option<String>,
    /// SHA-256 (hex) of the stored record after the change; absent when it was removed.
    pub after: Option<String>,
}

/// `GET /v1/audit`: the newest entries first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditQuery {
    /// Only entries from this Unix time (ms) on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<UnixMillis>,
    /// Only entries of the token with this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// At most this many (default 100, at most 10,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}
