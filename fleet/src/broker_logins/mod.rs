//! Devices' logins at the fleet's broker: who may connect, and what each may publish and
//! subscribe to. The fleet manages them itself on two brokers: its embedded one (rumqttd: a
//! user name and password per device, no per-topic rules) and mosquitto with the dynamic
//! security plugin (a client and a role per device allowing only that device's topics, set
//! over `$CONTROL/dynamic-security/v1` with `--broker-admin-user`). On any other broker the
//! administrator manages logins there.

pub mod dynsec;
pub mod dynsec_client;

use dynsec::Command;
use dynsec_client::{DynsecClient, DynsecError};

use crate::embedded_broker;

/// Devices added to mosquitto in one dynamic-security request. mosquitto 2.0 writes its whole
/// configuration file after every command, so a request is kept small enough to answer
/// within the call's timeout on a large fleet.
const DEVICES_PER_REQUEST: usize = 100;

/// What the embedded broker lets a device do, for the service's warning and the docs.
pub const EMBEDDED_BROKER_WARNING: &str = "the embedded MQTT broker has no per-topic rules: a device's login can subscribe to edgefleet/<fleet>/# and read every device's manifests (registry passwords stay sealed to each device), reported states, telemetry, commands, model inputs and acknowledgements, and can publish reported state, telemetry and command results as any device; use mosquitto with dynamic security (docs/operations.md) to keep devices apart";

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(transparent)]
    Dynsec(#[from] DynsecError),
    #[error("mosquitto refused {command} for device {device:?}: {error}")]
    Refused {
        device: String,
        command: &'static str,
        error: String,
    },
    #[error("device id {0}")]
    DeviceId(#[from] dynsec::AclError),
}

/// Where device logins live.
#[derive(Debug)]
pub enum DeviceLogins {
    /// The embedded broker's user table.
    Embedded(embedded_broker::Credentials),
    /// mosquitto's dynamic security, through the admin connection.
    DynamicSecurity { admin: DynsecClient, fleet: String },
    /// Another broker: the administrator manages logins there.
    Unmanaged,
}

impl DeviceLogins {
    /// Whether the fleet changes logins at the broker itself.
    pub fn managed(&self) -> bool {
        !matches!(self, Self::Unmanaged)
    }

    /// Lets each `(device, password)` log in (with its role, on mosquitto). A device that
    /// already has a login there gets this password and its role.
    pub async fn add(&self, logins: &[(String, String)]) -> Result<(), LoginError> {
        match self {
            Self::Embedded(credentials) => {
                write(credentials).extend(logins.iter().cloned());
                Ok(())
            }
            Self::DynamicSecurity { admin, fleet } => {
                for chunk in logins.chunks(DEVICES_PER_REQUEST) {
                    add_to_mosquitto(admin, fleet, chunk).await?;
                }
                Ok(())
            }
            Self::Unmanaged => Ok(()),
        }
    }

    /// Refuses device `id`'s login from now on; on mosquitto this also disconnects it.
    /// Returns whether the broker's login was removed (false when unmanaged).
    pub async fn remove(&self, id: &str) -> Result<bool, LoginError> {
        match self {
            Self::Embedded(credentials) => {
                write(credentials).remove(id);
                Ok(true)
            }
            Self::DynamicSecurity { admin, fleet } => {
                let commands = dynsec::remove_device(fleet, id);
                let answers = admin.call(&commands).await?;
                for (command, answer) in commands.iter().zip(&answers) {
                    match answer.error.as_deref() {
                        None | Some("Client not found" | "Role not found") => {}
                        Some(error) => return Err(refused(id, command, error)),
                    }
                }
                Ok(true)
            }
            Self::Unmanaged => Ok(false),
        }
    }

    /// Gives device `id` a new password; on mosquitto this disconnects it, and the old
    /// password is refused from then on. Returns whether the broker was changed.
    pub async fn set_password(&self, id: &str, password: &str) -> Result<bool, LoginError> {
        match self {
            Self::Embedded(credentials) => {
                write(credentials).insert(id.to_owned(), password.to_owned());
                Ok(true)
            }
            Self::DynamicSecurity { admin, fleet } => {
                let command = Command::SetClientPassword {
                    username: id.to_owned(),
                    password: password.to_owned(),
                };
                let answers = admin.call(std::slice::from_ref(&command)).await?;
                match answers.first().and_then(|a| a.error.as_deref()) {
                    None => Ok(true),
                    // Added before the fleet managed the broker: it gets its login and role now.
                    Some("Client not found") => {
                        add_to_mosquitto(admin, fleet, &[(id.to_owned(), password.to_owned())])
                            .await?;
                        Ok(true)
                    }
                    Some(error) => Err(refused(id, &command, error)),
                }
            }
            Self::Unmanaged => Ok(false),
        }
    }
}

fn write(
    credentials: &embedded_broker::Credentials,
) -> std::sync::RwLockWriteGuard<'_, std::collections::HashMap<String, String>> {
    // Inserts and removes only: a table left by a panicking thread is still consistent.
    credentials
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn refused(device: &str, command: &Command, error: &str) -> LoginError {
    LoginError::Refused {
        device: device.to_owned(),
        command: command.name(),
        error: error.to_owned(),
    }
}

/// Creates each device's role and client; a device whose client exists already (added again,
/// or left behind) gets the password and the role instead.
async fn add_to_mosquitto(
    admin: &DynsecClient,
    fleet: &str,
    logins: &[(String, String)],
) -> Result<(), LoginError> {
    let mut commands = Vec::with_capacity(logins.len() * 2);
    let mut devices = Vec::with_capacity(logins.len() * 2);
    for (id, password) in logins {
        for command in dynsec::add_device(fleet, id, password)? {
            commands.push(command);
            devices.push((id, password));
        }
    }
    let answers = admin.call(&commands).await?;
    let mut existing = Vec::new();
    for ((command, (id, password)), answer) in commands.iter().zip(&devices).zip(&answers) {
        match (command, answer.error.as_deref()) {
            (_, None) | (Command::CreateRole { .. }, Some("Role already exists")) => {}
            (Command::CreateClient { .. }, Some("Client already exists")) => {
                existing.push(((*id).clone(), dynsec::reset_device(fleet, id, password)));
            }
            (command, Some(error)) => return Err(refused(id, command, error)),
        }
    }
    if existing.is_empty() {
        return Ok(());
    }
    let (ids, resets): (Vec<String>, Vec<Command>) = existing.into_iter().unzip();
    let answers = admin.call(&resets).await?;
    for ((id, command), answer) in ids.iter().zip(&resets).zip(&answers) {
        if let Some(error) = &answer.error {
            return Err(refused(id, command, error));
        }
    }
    Ok(())
}
