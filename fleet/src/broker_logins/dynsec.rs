//! mosquitto's dynamic security plugin, as the fleet speaks it: the commands it sends to
//! `$CONTROL/dynamic-security/v1` (one JSON object with a `commands` array, each command
//! carrying a correlation id) and the answers on `.../response`. Pure: no I/O here, so the
//! exact bytes and each device's role are tested without a broker. The command and field
//! names are mosquitto's (plugins/dynamic-security in mosquitto 2.0).

use edgefleet_common::topics::DeviceTopics;
use serde::{Deserialize, Serialize};

/// Where the fleet sends dynamic-security commands.
pub const CONTROL_TOPIC: &str = "$CONTROL/dynamic-security/v1";
/// Where mosquitto answers them.
pub const RESPONSE_TOPIC: &str = "$CONTROL/dynamic-security/v1/response";

/// A dynamic-security command. Field names are mosquitto's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "command", rename_all = "camelCase")]
pub enum Command {
    CreateRole {
        rolename: String,
        textdescription: String,
        acls: Vec<Acl>,
    },
    DeleteRole {
        rolename: String,
    },
    CreateClient {
        username: String,
        password: String,
        /// Only this MQTT client id may log in as the user, so one device's login cannot
        /// take over another device's session (same client id) either.
        clientid: String,
        textdescription: String,
        roles: Vec<RoleRef>,
    },
    DeleteClient {
        username: String,
    },
    SetClientPassword {
        username: String,
        password: String,
    },
    /// Sets the password, client id and roles of an existing client (its roles replaced).
    ModifyClient {
        username: String,
        password: String,
        clientid: String,
        roles: Vec<RoleRef>,
    },
}

impl Command {
    /// mosquitto's name for the command, as it comes back in the answer.
    pub fn name(&self) -> &'static str {
        match self {
            Self::CreateRole { .. } => "createRole",
            Self::DeleteRole { .. } => "deleteRole",
            Self::CreateClient { .. } => "createClient",
            Self::DeleteClient { .. } => "deleteClient",
            Self::SetClientPassword { .. } => "setClientPassword",
            Self::ModifyClient { .. } => "modifyClient",
        }
    }
}

/// One access rule of a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Acl {
    /// `publishClientSend` (what the client may publish) or `subscribePattern` (what it may
    /// subscribe to, wildcards matched as patterns).
    pub acltype: &'static str,
    pub topic: String,
    pub allow: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleRef {
    pub rolename: String,
}

#[derive(Serialize)]
struct Identified<'a> {
    #[serde(flatten)]
    command: &'a Command,
    #[serde(rename = "correlationData")]
    correlation_data: String,
}

#[derive(Serialize)]
struct Request<'a> {
    commands: Vec<Identified<'a>>,
}

/// The payload carrying `commands`, the n-th identified as `<batch>-<n>`.
pub fn request(batch: &str, commands: &[Command]) -> Vec<u8> {
    let commands = commands
        .iter()
        .enumerate()
        .map(|(n, command)| Identified {
            command,
            correlation_data: format!("{batch}-{n}"),
        })
        .collect();
    serde_json::to_vec(&Request { commands }).unwrap_or_default()
}

/// One answer of mosquitto's.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub command: String,
    /// Absent when the command succeeded.
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub correlation_data: Option<String>,
}

#[derive(Deserialize)]
struct Responses {
    responses: Vec<Response>,
}

/// The answers in a response payload, or why it is not one.
pub fn responses(payload: &[u8]) -> Result<Vec<Response>, serde_json::Error> {
    serde_json::from_slice::<Responses>(payload).map(|r| r.responses)
}

/// The batch id and position of an answer's correlation id (`<batch>-<n>`).
pub fn correlation(response: &Response) -> Option<(&str, usize)> {
    let (batch, n) = response.correlation_data.as_deref()?.rsplit_once('-')?;
    Some((batch, n.parse().ok()?))
}

/// The role of device `id` in fleet `fleet`.
pub fn device_role(fleet: &str, id: &str) -> String {
    format!("edgefleet-device-{fleet}-{id}")
}

/// The MQTT client id the agent connects with (`agent/src/telemetry/link.rs`).
pub fn device_client_id(id: &str) -> String {
    format!("edgefleet-{id}")
}

/// The role's rules: the device publishes its reported state, telemetry, command results and
/// sync requests, and subscribes to its desired state, acknowledgements, commands and model
/// inputs. Nothing else: dynamic security refuses by default what no rule allows.
pub fn device_acls(topics: &DeviceTopics) -> Vec<Acl> {
    let rule = |acltype, topic: String| Acl {
        acltype,
        topic,
        allow: true,
    };
    vec![
        rule("publishClientSend", topics.reported()),
        rule("publishClientSend", topics.telemetry("+")),
        rule("publishClientSend", topics.command_result("+")),
        rule("publishClientSend", topics.sync()),
        rule("subscribePattern", topics.desired()),
        rule("subscribePattern", topics.acks()),
        rule("subscribePattern", topics.command("+")),
        rule("subscribePattern", topics.input("+")),
    ]
}

/// The commands that give device `id` its role and a login with `password`.
pub fn add_device(fleet: &str, id: &str, password: &str) -> Result<[Command; 2], AclError> {
    let topics = DeviceTopics::new(fleet, id).map_err(|e| AclError(e.to_string()))?;
    let rolename = device_role(fleet, id);
    Ok([
        Command::CreateRole {
            rolename: rolename.clone(),
            textdescription: format!("Edgefleet device {id} of fleet {fleet}: its own topics"),
            acls: device_acls(&topics),
        },
        Command::CreateClient {
            username: id.to_owned(),
            password: password.to_owned(),
            clientid: device_client_id(id),
            textdescription: format!("Edgefleet device {id} of fleet {fleet}"),
            roles: vec![RoleRef { rolename }],
        },
    ])
}

/// The command that gives an existing client of device `id` its password, client id and role.
pub fn reset_device(fleet: &str, id: &str, password: &str) -> Command {
    Command::ModifyClient {
        username: id.to_owned(),
        password: password.to_owned(),
        clientid: device_client_id(id),
        roles: vec![RoleRef {
            rolename: device_role(fleet, id),
        }],
    }
}

/// The commands that remove device `id`'s login (which disconnects it) and its role.
pub fn remove_device(fleet: &str, id: &str) -> [Command; 2] {
    [
        Command::DeleteClient {
            username: id.to_owned(),
        },
        Command::DeleteRole {
            rolename: device_role(fleet, id),
        },
    ]
}

/// A device id that makes no topic.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AclError(String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_role_allows_only_its_own_topics_in_mosquittos_words() {
        let [role, client] = add_device("plant", "dev-1", "pw").expect("commands");
        let json = String::from_utf8(request("b7", &[role, client])).expect("utf-8");
        let value: serde_json::Value = serde_json::from_str(&json).expect("json");
        let role = &value["commands"][0];
        assert_eq!(role["command"], "createRole");
        assert_eq!(role["rolename"], "edgefleet-device-plant-dev-1");
        assert_eq!(role["correlationData"], "b7-0");
        let rules: Vec<(String, String)> = role["acls"]
            .as_array()
            .expect("acls")
            .iter()
            .map(|a| (a["acltype"].to_string(), a["topic"].to_string()))
            .collect();
        let prefix = "edgefleet/plant/devices/dev-1";
        for (acltype, topic) in &rules {
            assert!(
                topic.starts_with(&format!("\"{prefix}/")),
                "{acltype} {topic}"
            );
        }
        assert_eq!(rules.len(), 8);
        let client = &value["commands"][1];
        assert_eq!(client["command"], "createClient");
        assert_eq!(client["username"], "dev-1");
        assert_eq!(client["clientid"], "edgefleet-dev-1");
        assert_eq!(
            client["roles"][0]["rolename"],
            "edgefleet-device-plant-dev-1"
        );
        assert_eq!(client["correlationData"], "b7-1");
    }

    #[test]
    fn answers_are_read_with_their_errors_and_correlation() {
        let payload = br#"{"responses":[{"command":"createRole","correlationData":"b7-0"},
            {"command":"createClient","error":"Client already exists","correlationData":"b7-1"}]}"#;
        let answers = responses(payload).expect("responses");
        assert_eq!(answers[0].error, None);
        assert_eq!(correlation(&answers[0]), Some(("b7", 0)));
        assert_eq!(answers[1].error.as_deref(), Some("Client already exists"));
        assert_eq!(correlation(&answers[1]), Some(("b7", 1)));
        assert!(responses(b"{}").is_err());
    }
}
