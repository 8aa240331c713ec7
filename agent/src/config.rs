//! Loading the agent's configuration file (the type and its rules are the contract
//! `edgefleet_common::agent_config`, which the fleet writes).

use std::path::Path;

pub use edgefleet_common::agent_config::{AgentConfig, ConfigError, DEFAULT_CONFIG};

/// Reads `path` (only the defaults when `None`) with the environment's overrides and checks
/// every field.
pub fn load(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<AgentConfig, ConfigError> {
    let text = read(path)?;
    AgentConfig::parse(path.zip(text.as_deref()), env)
}

/// Like [`load`] without the checks of the values (for `init`, which runs before the fleet
/// key is known).
pub fn load_unchecked(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<AgentConfig, ConfigError> {
    let text = read(path)?;
    AgentConfig::parse_unchecked(path.zip(text.as_deref()), env)
}

fn read(path: Option<&Path>) -> Result<Option<String>, ConfigError> {
    path.map(|path| {
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })
    })
    .transpose()
}
