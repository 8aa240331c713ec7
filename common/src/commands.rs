//! Commands the fleet sends a device (`commands/<name>`) and the results the device answers
//! with (`commands/<name>/result`), correlated by `requestId`. A request is signed by the
//! fleet for its topic (`authenticity`); a device carries out each `requestId` once, and only
//! within [`COMMAND_WINDOW_MS`] of the time the fleet issued it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How far from the device's clock a command's `issuedAtMs` may be: an older one is refused
/// as a replay, a later one as from a clock that is wrong.
pub const COMMAND_WINDOW_MS: u64 = 5 * 60 * 1000;

/// A command for one module of a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommandRequest {
    /// Chosen by the fleet; the result carries it back.
    pub request_id: String,
    /// The module the command is for.
    pub module: String,
    /// When the fleet issued it (Unix milliseconds).
    pub issued_at_ms: crate::UnixMillis,
    #[serde(flatten)]
    pub command: DeviceCommand,
}

/// What the fleet asks of a module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "command", rename_all = "camelCase")]
pub enum DeviceCommand {
    /// A container module's recent output (stdout and stderr), capped by the device.
    Logs {
        /// How many of the last lines.
        #[serde(default = "default_tail")]
        tail: u64,
        /// Only lines written since this Unix time (seconds); 0: all.
        #[serde(default)]
        since: i64,
    },
    /// Stop and start a container module (counted as a restart).
    Restart,
}

fn default_tail() -> u64 {
    100
}

impl DeviceCommand {
    /// The command's name, the last segment of its topic.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Logs { .. } => "logs",
            Self::Restart => "restart",
        }
    }
}

/// A device's answer to a [`CommandRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommandResult {
    pub request_id: String,
    pub module: String,
    #[serde(flatten)]
    pub outcome: CommandOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum CommandOutcome {
    /// The module's logs, newest last, cut to the device's cap.
    Logs { logs: String },
    /// The module was stopped and started again.
    Restarted,
    /// The command could not be carried out; the message says why.
    Failed { error: String },
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_and_results_have_one_documented_shape() {
        let request = CommandRequest {
            request_id: "r1".into(),
            module: "sensor".into(),
            issued_at_ms: 9,
            command: DeviceCommand::Logs { tail: 5, since: 0 },
        };
        assert_eq!(
            serde_json::to_value(&request).expect("json"),
            json!({"requestId": "r1", "module": "sensor", "issuedAtMs": 9, "command": "logs", "tail": 5, "since": 0})
        );
        let restart: CommandRequest = serde_json::from_value(
            json!({"requestId": "r2", "module": "sensor", "issuedAtMs": 9, "command": "restart"}),
        )
        .expect("restart");
        assert_eq!(restart.command, DeviceCommand::Restart);
        let failed = CommandResult {
            request_id: "r2".into(),
            module: "sensor".into(),
            outcome: CommandOutcome::Failed { error: "no".into() },
        };
        let back: CommandResult =
            serde_json::from_value(serde_json::to_value(&failed).expect("json")).expect("back");
        assert_eq!(back, failed);
    }
}
