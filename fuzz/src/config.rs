//! The agent's configuration file (`/etc/edgefleet/agent.toml`).

use std::path::Path;

use edgefleet_common::agent_config::AgentConfig;

/// The bytes as the configuration file, checked as at start and as `init` reads it; a file the
/// agent accepts, written back as TOML, is accepted again.
pub fn agent_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/etc/edgefleet/agent.toml");
    let _ = AgentConfig::parse(Some((path, text)), []);
    if let Ok(config) = AgentConfig::parse_unchecked(Some((path, text)), []) {
        let written = match toml::to_string(&config) {
            Ok(t) => t,
            Err(e) => panic!("an accepted configuration cannot be written back: {e}"),
        };
        if let Err(e) = AgentConfig::parse_unchecked(Some((path, &written)), []) {
            panic!("a configuration written back is refused: {e}\n{written}");
        }
    }
}
