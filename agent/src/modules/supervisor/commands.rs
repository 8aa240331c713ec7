//! Commands from the fleet (`logs`, `restart`), their signature checked by the link: each is
//! carried out once, within the window around the device's clock, and answered on
//! `commands/<name>/result`.

use edgefleet_common::authenticity::Refusal;
use edgefleet_common::commands::{CommandOutcome, CommandRequest, CommandResult, DeviceCommand};
use edgefleet_common::manifest::ModuleKind;
use edgefleet_transport::now_ms;

use super::Supervisor;
use crate::modules::module_task::ModuleCommand;
use crate::telemetry::authenticity::{Admission, admit_command, refused};

/// Most bytes of logs one command result carries.
const COMMAND_RESULT_MAX_BYTES: usize = 64 * 1024;

impl Supervisor {
    /// Answers a fleet command: `logs` at once from a task of its own, `restart` through the
    /// module's task. Results go to `commands/<name>/result`.
    pub(super) fn on_command(&self, name: &str, payload: &[u8]) {
        let request: CommandRequest = match serde_json::from_slice(payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(command = %name, error = %e, "malformed command refused");
                let request_id = serde_json::from_slice::<serde_json::Value>(payload)
                    .ok()
                    .and_then(|v| v.get("requestId")?.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let outcome = CommandOutcome::Failed {
                    error: format!("malformed {name} command: {e}"),
                };
                self.answer(name, request_id, String::new(), outcome);
                return;
            }
        };
        let CommandRequest {
            request_id,
            module,
            issued_at_ms,
            command,
        } = request;
        match admit_command(&self.services.store, &request_id, issued_at_ms, now_ms()) {
            Ok(Admission::Carry) => {}
            Ok(Admission::Repeat) => {
                let refusal =
                    Refusal::Replayed(format!("command {request_id} was carried out before"));
                refused(&self.services.topics.command(name), "command", &refusal);
                return;
            }
            Ok(Admission::OutOfWindow(error)) => {
                let refusal = Refusal::Replayed(error.clone());
                refused(&self.services.topics.command(name), "command", &refusal);
                self.answer(name, request_id, module, CommandOutcome::Failed { error });
                return;
            }
            Err(e) => {
                let error = format!("the device cannot record the command: {e}");
                self.answer(name, request_id, module, CommandOutcome::Failed { error });
                return;
            }
        }
        let is_container = self
            .desired
            .as_ref()
            .and_then(|(m, _)| m.modules.get(&module))
            .is_some_and(|m| m.kind() == ModuleKind::Container);
        let refusal = if command.name() != name {
            Some(format!(
                "the {name} topic carried a {} command",
                command.name()
            ))
        } else if !is_container {
            Some(format!(
                "{module:?} is not a container module of this device"
            ))
        } else if self.services.containers.is_none() {
            Some(self.services.no_engine().to_string())
        } else {
            None
        };
        if let Some(error) = refusal {
            self.answer(name, request_id, module, CommandOutcome::Failed { error });
            return;
        }
        match command {
            DeviceCommand::Logs { tail, since } => {
                let services = self.services.clone();
                tokio::spawn(async move {
                    let Some(runtime) = &services.containers else {
                        return;
                    };
                    let outcome = match runtime
                        .logs(&module, tail, since, COMMAND_RESULT_MAX_BYTES)
                        .await
                    {
                        Ok(logs) => CommandOutcome::Logs { logs },
                        Err(e) => CommandOutcome::Failed {
                            error: e.to_string(),
                        },
                    };
                    let result = CommandResult {
                        request_id,
                        module,
                        outcome,
                    };
                    services.answer("logs", &result);
                });
            }
            DeviceCommand::Restart => {
                let sent = self.tasks.get(&module).is_some_and(|h| {
                    h.commands
                        .send(ModuleCommand::Restart {
                            request_id: request_id.clone(),
                        })
                        .is_ok()
                });
                if !sent {
                    let error = format!("module {module:?} is not running on this device");
                    self.answer(name, request_id, module, CommandOutcome::Failed { error });
                }
            }
        }
    }

    fn answer(&self, name: &str, request_id: String, module: String, outcome: CommandOutcome) {
        let result = CommandResult {
            request_id,
            module,
            outcome,
        };
        self.services.answer(name, &result);
    }
}
