//! Secrets sealed to one device: registry passwords travel in manifests encrypted with the
//! `age` format (X25519 recipients, ASCII armor), so only the device holding the matching
//! identity can read them. The fleet stores a device's recipient (`age1...`); the device keeps
//! its identity (`AGE-SECRET-KEY-1...`) in a 0600 file and never sends it anywhere.

use std::fmt;
use std::str::FromStr;

use age::secrecy::ExposeSecret;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An age-encrypted, ASCII-armored secret (`-----BEGIN AGE ENCRYPTED FILE-----`).
/// `Debug` never prints the ciphertext, so logs stay short and clean.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct SealedSecret(String);

impl fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealedSecret(..)")
    }
}

impl SealedSecret {
    /// Wraps an armored age ciphertext as received on the wire.
    pub fn from_armored(armored: String) -> Self {
        Self(armored)
    }

    pub fn as_armored(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SealingError {
    #[error(
        "invalid device public key {key:?}: {reason} (expected an age X25519 recipient starting with 'age1', as printed by `edgefleet-agent init`)"
    )]
    InvalidPublicKey { key: String, reason: String },
    #[error(
        "invalid device identity: {0} (expected an age X25519 identity starting with 'AGE-SECRET-KEY-1')"
    )]
    InvalidIdentity(String),
    #[error("could not seal secret: {0}")]
    Encrypt(#[from] age::EncryptError),
    #[error("could not unseal secret: {0} (was it sealed to this device's public key?)")]
    Decrypt(#[from] age::DecryptError),
    #[error("unsealed secret is not UTF-8")]
    NotUtf8,
}

/// A device's public key: the recipient its secrets are sealed to.
#[derive(Clone, PartialEq, Eq)]
pub struct DevicePublicKey(age::x25519::Recipient);

impl fmt::Debug for DevicePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DevicePublicKey({})", self.0)
    }
}

impl fmt::Display for DevicePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for DevicePublicKey {
    type Err = SealingError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .parse()
            .map(Self)
            .map_err(|reason: &str| SealingError::InvalidPublicKey {
                key: s.to_owned(),
                reason: reason.to_owned(),
            })
    }
}

impl DevicePublicKey {
    /// The X25519 public point (for agreeing the device's message key with the fleet).
    pub(crate) fn x25519_public(&self) -> Result<[u8; 32], SealingError> {
        decode_bech32(&self.0.to_string()).map_err(|reason| SealingError::InvalidPublicKey {
            key: self.0.to_string(),
            reason,
        })
    }

    /// Seals `plaintext` so that only the holder of this key's identity can read it.
    pub fn seal(&self, plaintext: &str) -> Result<SealedSecret, SealingError> {
        Ok(SealedSecret(age::encrypt_and_armor(
            &self.0,
            plaintext.as_bytes(),
        )?))
    }
}

/// A device's private identity. `Debug` never prints the key.
pub struct DeviceIdentity(age::x25519::Identity);

impl fmt::Debug for DeviceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceIdentity(public: {})", self.public_key())
    }
}

impl FromStr for DeviceIdentity {
    type Err = SealingError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .parse()
            .map(Self)
            .map_err(|reason: &str| SealingError::InvalidIdentity(reason.to_owned()))
    }
}

impl DeviceIdentity {
    pub fn generate() -> Self {
        Self(age::x25519::Identity::generate())
    }

    pub fn public_key(&self) -> DevicePublicKey {
        DevicePublicKey(self.0.to_public())
    }

    /// The identity in age's text form, for the device's 0600 key file.
    pub fn to_secret_string(&self) -> String {
        self.0.to_string().expose_secret().to_owned()
    }

    /// The X25519 secret scalar (for agreeing the device's message key with the fleet).
    pub(crate) fn x25519_secret(&self) -> Result<[u8; 32], SealingError> {
        decode_bech32(self.0.to_string().expose_secret()).map_err(SealingError::InvalidIdentity)
    }

    /// Opens a secret sealed to this device.
    pub fn unseal(&self, sealed: &SealedSecret) -> Result<String, SealingError> {
        let plain = age::decrypt(&self.0, sealed.0.as_bytes())?;
        String::from_utf8(plain).map_err(|_| SealingError::NotUtf8)
    }
}

/// The 32 bytes of an age key in its bech32 text form.
fn decode_bech32(text: &str) -> Result<[u8; 32], String> {
    use bech32::FromBase32 as _;
    let (_, data, _) = bech32::decode(&text.to_lowercase()).map_err(|e| e.to_string())?;
    let bytes = Vec::<u8>::from_base32(&data).map_err(|e| e.to_string())?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("{} bytes, expected 32", b.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_password_opens_only_with_the_devices_identity() {
        let device = DeviceIdentity::generate();
        let other = DeviceIdentity::generate();
        let sealed = device.public_key().seal("s3cret!").expect("seal");
        assert!(
            sealed
                .as_armored()
                .starts_with("-----BEGIN AGE ENCRYPTED FILE-----")
        );
        assert!(!sealed.as_armored().contains("s3cret"));
        assert_eq!(device.unseal(&sealed).expect("unseal"), "s3cret!");
        assert!(matches!(
            other.unseal(&sealed),
            Err(SealingError::Decrypt(_))
        ));
    }

    #[test]
    fn keys_round_trip_through_their_text_forms() {
        let device = DeviceIdentity::generate();
        let again: DeviceIdentity = device.to_secret_string().parse().expect("identity");
        assert_eq!(again.public_key(), device.public_key());
        let public: DevicePublicKey = device.public_key().to_string().parse().expect("recipient");
        assert_eq!(public, device.public_key());
    }

    #[test]
    fn a_malformed_public_key_is_named_in_the_error() {
        let err = "age1notakey".parse::<DevicePublicKey>().unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("age1notakey") && msg.contains("edgefleet-agent init"),
            "{msg}"
        );
    }

    #[test]
    fn debug_output_hides_secrets() {
        let device = DeviceIdentity::generate();
        let sealed = device.public_key().seal("pw").expect("seal");
        assert_eq!(format!("{sealed:?}"), "SealedSecret(..)");
        assert!(!format!("{device:?}").contains("AGE-SECRET-KEY"));
    }
}
