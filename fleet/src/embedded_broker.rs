//! The embedded MQTT broker (rumqttd) `edgefleet serve` starts when no external broker is
//! given: a single-machine fleet needs no other service. Devices authenticate with their id
//! and the MQTT password `edgefleet device config` prints; the fleet service with an internal
//! user. rumqttd has no per-topic ACLs and keeps retained messages in memory only (the fleet
//! publishes every manifest again when it connects), so fleets that need device isolation use
//! mosquitto with dynamic security or docs/mosquitto-acl.conf. What a device can reach here is
//! `broker_logins::EMBEDDED_BROKER_WARNING`, logged at start; `broker_logins::DeviceLogins`
//! changes the [`Credentials`] table.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

/// User name -> password of everyone allowed to connect.
pub type Credentials = Arc<RwLock<HashMap<String, String>>>;

const CONFIG: &str = r#"
id = 0

[router]
id = 0
max_connections = 10010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "edgefleet"
listen = "127.0.0.1:1883"
next_connection_delay_ms = 1
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 16777216
    max_inflight_count = 500
    dynamic_filters = true
"#;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("embedded MQTT broker configuration: {0}")]
    Config(String),
    #[error("embedded MQTT broker cannot listen on {listen}: {source} (or give --mqtt-url)")]
    Listen {
        listen: SocketAddr,
        source: std::io::Error,
    },
    #[error("embedded MQTT broker thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Starts the broker on `listen` in its own thread.
pub fn start(listen: SocketAddr, credentials: Credentials) -> Result<(), BrokerError> {
    let mut config: rumqttd::Config =
        toml::from_str(CONFIG).map_err(|e| BrokerError::Config(e.to_string()))?;
    let server = config
        .v4
        .as_mut()
        .and_then(|servers| servers.get_mut("1"))
        .ok_or_else(|| BrokerError::Config("no v4 server".into()))?;
    server.listen = listen;
    server.set_auth_handler(move |_client_id, user, password| {
        let allowed = credentials
            .read()
            .map(|c| c.get(&user).is_some_and(|p| *p == password))
            .unwrap_or(false);
        async move { allowed }
    });
    // Fails early when the port is taken, rather than inside the broker's thread.
    drop(
        std::net::TcpListener::bind(listen)
            .map_err(|source| BrokerError::Listen { listen, source })?,
    );
    let mut broker = rumqttd::Broker::new(config);
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(BrokerError::Thread)?;
    Ok(())
}
