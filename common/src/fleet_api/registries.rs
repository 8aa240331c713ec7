//! Container registries the fleet pulls from (`/v1/registries`): what an administrator saves
//! and what the API shows back, which never includes the password.

use serde::{Deserialize, Serialize};

/// `PUT /v1/registries/{name}`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryRequest {
    /// Host and optional port, as in image references.
    pub address: String,
    pub username: String,
    pub password: String,
    /// Reached over plain HTTP.
    #[serde(default)]
    pub insecure: bool,
}

/// A registry as the API shows it: never its password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryView {
    pub name: String,
    pub address: String,
    pub username: String,
    pub insecure: bool,
}
