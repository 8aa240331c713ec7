//! Which MQTT password the agent logs in with. The configuration file holds the password the
//! device was provisioned with; the fleet may rotate it (`edgefleet device rotate-credentials`):
//! the new one arrives in a manifest, sealed to the device's key, and is kept in the store
//! before the device reports the manifest. The fleet switches the broker to it only after that
//! report, so for a while the broker may still expect the configured one: the agent tries the
//! newest password first and, when the broker refuses it, the configured one, and back.

use edgefleet_common::manifest::Manifest;
use edgefleet_common::sealing::DeviceIdentity;
use rumqttc::{ConnectReturnCode, ConnectionError, MqttOptions};

use crate::store::Store;

/// Keeps the MQTT password a verified manifest carries, before its outcome is reported (the
/// fleet completes the rotation on that report). A password that does not open is logged and
/// left out: the agent keeps connecting with the ones it has.
pub fn keep_from_manifest(manifest: &Manifest, identity: &DeviceIdentity, store: &Store) {
    let Some(sealed) = &manifest.mqtt_password else {
        return;
    };
    let password = match identity.unseal(sealed) {
        Ok(password) => password,
        Err(e) => {
            tracing::warn!(error = %e, version = manifest.version, "the manifest's MQTT password does not open with this device's key");
            return;
        }
    };
    match store.mqtt_password() {
        Ok(Some(kept)) if kept == password => {}
        _ => match store.put_mqtt_password(&password) {
            Ok(()) => tracing::info!(
                version = manifest.version,
                "new MQTT password from the fleet kept; used from the next connection"
            ),
            Err(e) => tracing::error!(error = %e, "cannot keep the fleet's new MQTT password"),
        },
    }
}

/// The password for the next connection attempt.
#[derive(Debug)]
pub struct BrokerLogin {
    username: String,
    configured: String,
    store: Store,
    /// Try the configured password instead of the newest kept one (the broker refused that).
    configured_next: bool,
}

impl BrokerLogin {
    pub fn new(username: &str, configured: &str, store: Store) -> Self {
        Self {
            username: username.to_owned(),
            configured: configured.to_owned(),
            store,
            configured_next: false,
        }
    }

    /// `options` with the password for the first connection.
    pub fn applied(&self, mut options: MqttOptions) -> MqttOptions {
        self.apply(&mut options);
        options
    }

    /// Sets the password for the next connection on `options` (rumqttc reads them at every
    /// connect). Without a user name the broker takes no login and nothing changes.
    fn apply(&self, options: &mut MqttOptions) {
        if self.username.is_empty() {
            return;
        }
        let kept = self.store.mqtt_password().ok().flatten();
        let password = match kept {
            Some(kept) if !self.configured_next => kept,
            _ => self.configured.clone(),
        };
        options.set_credentials(self.username.clone(), password);
    }

    /// A connection ended with `error`: a refused login switches to the other password for
    /// the next attempt; any other end starts again from the newest. The choice is set on
    /// `options` (the event loop's, which it reads when it connects again).
    pub fn connection_ended(&mut self, error: &ConnectionError, options: &mut MqttOptions) {
        self.choose(error);
        self.apply(options);
    }

    fn choose(&mut self, error: &ConnectionError) {
        let refused = matches!(
            error,
            ConnectionError::ConnectionRefused(
                ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUserNamePassword
            )
        );
        let kept = matches!(self.store.mqtt_password(), Ok(Some(_)));
        if refused && kept {
            self.configured_next = !self.configured_next;
            let next = if self.configured_next {
                "the configured one"
            } else {
                "the newest one from the fleet"
            };
            tracing::warn!("the broker refused the MQTT password; trying {next}");
        } else {
            self.configured_next = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> MqttOptions {
        MqttOptions::new("c", "127.0.0.1", 1883)
    }

    fn password(login: &BrokerLogin) -> String {
        let mut o = options();
        login.apply(&mut o);
        o.credentials().map(|l| l.password).unwrap_or_default()
    }

    #[test]
    fn the_newest_password_is_tried_first_and_a_refusal_alternates_with_the_configured_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("agent.redb")).expect("store");
        let mut login = BrokerLogin::new("dev-1", "configured", store.clone());
        assert_eq!(password(&login), "configured");
        // Refused without another password: keep trying the configured one.
        login.choose(&ConnectionError::ConnectionRefused(
            ConnectReturnCode::NotAuthorized,
        ));
        assert_eq!(password(&login), "configured");

        let identity = DeviceIdentity::generate();
        let mut manifest = Manifest::new("dev-1", 2);
        manifest.mqtt_password = Some(identity.public_key().seal("rotated").expect("seal"));
        keep_from_manifest(&manifest, &identity, &store);
        assert_eq!(password(&login), "rotated");
        login.choose(&ConnectionError::ConnectionRefused(
            ConnectReturnCode::NotAuthorized,
        ));
        assert_eq!(password(&login), "configured");
        login.choose(&ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword,
        ));
        assert_eq!(password(&login), "rotated");
        // A dropped connection (the broker switched and disconnected us) starts from the newest.
        login.choose(&ConnectionError::ConnectionRefused(
            ConnectReturnCode::NotAuthorized,
        ));
        login.choose(&ConnectionError::RequestsDone);
        assert_eq!(password(&login), "rotated");

        // A password sealed to another device is not kept.
        let other = DeviceIdentity::generate();
        manifest.mqtt_password = Some(other.public_key().seal("not-ours").expect("seal"));
        keep_from_manifest(&manifest, &identity, &store);
        assert_eq!(password(&login), "rotated");
    }
}
