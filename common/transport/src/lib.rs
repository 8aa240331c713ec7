//! edgefleet-transport: how both binaries reach an MQTT broker.
//!
//! [`BrokerUrl`] (a contract of the agent's configuration file, defined in `edgefleet-common`)
//! parses `mqtt://host[:1883]` and `mqtts://host[:8883]`; [`tls`] builds rustls
//! client configurations (a CA file or the system roots, an optional client certificate) on
//! ring, the one crypto provider of the project, which [`install_crypto_provider`] installs;
//! [`mqtt_options`] turns both into rumqttc options. [`now_ms`] is the clock every contract's
//! `UnixMillis` is read from. [`acks`] sends manual PubAcks in the order MQTT requires.

pub mod acks;
pub mod tls;

use std::time::Duration;

use edgefleet_common::UnixMillis;
pub use edgefleet_common::broker_url::{BrokerUrl, BrokerUrlError};
use rumqttc::{MqttOptions, Transport};
pub use tls::{TlsError, TlsFiles, install_crypto_provider, rustls_client_config};

/// Resolves on SIGTERM or SIGINT: how both binaries are asked to stop gracefully.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How a client logs in to a broker.
#[derive(Debug, Clone, Default)]
pub struct Login {
    pub client_id: String,
    /// Empty: no user name and password are sent.
    pub username: String,
    pub password: String,
    pub keep_alive: Duration,
}

/// rumqttc options for `broker`: the login, 16 MiB packets both ways, and TLS with `tls` when
/// the URL is `mqtts://`.
pub fn mqtt_options(
    broker: &BrokerUrl,
    login: &Login,
    tls: &TlsFiles,
) -> Result<MqttOptions, TlsError> {
    let mut options = MqttOptions::new(login.client_id.clone(), broker.host.clone(), broker.port);
    options
        .set_keep_alive(login.keep_alive.max(Duration::from_secs(5)))
        .set_max_packet_size(16 << 20, 16 << 20);
    if !login.username.is_empty() {
        options.set_credentials(login.username.clone(), login.password.clone());
    }
    if broker.tls {
        options.set_transport(Transport::tls_with_config(tls::client_config(tls)?));
    }
    Ok(options)
}
