//! Rollout status (`/v1/rollouts`): how far a deployment's latest revision has reached its
//! devices, device by device, and the phases of its staged rollout when it has one.

use serde::{Deserialize, Serialize};

use crate::UnixMillis;

/// `GET /v1/rollouts/{deployment}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    pub deployment: String,
    pub targeted: usize,
    /// Devices that answered the manifest (succeeded or failed).
    pub applied: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub pending: usize,
    pub stale: usize,
    pub devices: Vec<DeviceProgress>,
    /// The staged rollout of the latest revision, when the deployment's policy asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged: Option<StagedRollout>,
}

/// A staged rollout: its phases and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StagedRollout {
    pub from_revision: u64,
    pub to_revision: u64,
    pub state: StagedState,
    /// Why it stopped (aborted, rolled back), with the devices' messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The phase in progress (0 is the canary phase).
    pub current_phase: usize,
    pub phases: Vec<PhaseView>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StagedState {
    Running,
    Paused,
    Completed,
    /// Stopped: no more devices move; those moved keep the new revision.
    Aborted,
    /// Every device has the previous revision again.
    RolledBack,
}

/// One phase of a staged rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseView {
    pub devices: Vec<String>,
    /// Devices moved to the new revision so far.
    pub moved: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<UnixMillis>,
    /// What the phase waits for, or `done`.
    pub gate: String,
}

impl RolloutStatus {
    /// Every targeted device succeeded.
    pub fn complete(&self) -> bool {
        self.targeted > 0 && self.succeeded == self.targeted
    }

    /// Every targeted device answered.
    pub fn finished(&self) -> bool {
        self.targeted > 0 && self.succeeded + self.failed >= self.targeted
    }

    /// A staged rollout that will move no more devices (completed, aborted, rolled back).
    pub fn stopped(&self) -> Option<StagedState> {
        self.staged
            .as_ref()
            .map(|s| s.state)
            .filter(|s| !matches!(s, StagedState::Running | StagedState::Paused))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceProgress {
    pub device_id: String,
    pub manifest_version: u64,
    pub state: DeviceRollout,
    pub stale: bool,
    /// The device's message for the manifest (the reason, when failed).
    pub message: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DeviceRollout {
    /// The device has not answered the manifest yet.
    Pending,
    /// Applied: every module runs as asked.
    Succeeded,
    /// The device refused the manifest or could not activate it.
    Failed,
}
