//! Device statuses for the rollout decisions' tests.

use edgefleet_common::manifest::ModuleKind;
use edgefleet_common::reported::{
    ApplyStatus, DesiredOutcome, InferenceStats, ModuleState, OutboxState, ReportedState,
    RuntimeStatus,
};

use crate::records::DeviceStatus;

pub(crate) fn status(
    version: u64,
    code: ApplyStatus,
    modules: Vec<(&str, ModuleState)>,
) -> DeviceStatus {
    DeviceStatus {
        last_seen_ms: Some(1_000),
        reported: Some(ReportedState {
            schema_version: "1".into(),
            device_id: "gw".into(),
            agent_version: "0".into(),
            applied_version: Some(version),
            last_desired: Some(DesiredOutcome {
                version: Some(version),
                status: code,
                message: "m".into(),
                source: Default::default(),
            }),
            modules: modules
                .into_iter()
                .map(|(n, m)| (n.to_owned(), m))
                .collect(),
            outbox: OutboxState::default(),
            reported_at_ms: 1_000,
            fleet_silent_since_ms: None,
        }),
        reported_incarnation: None,
    }
}

pub(crate) fn model(count: u64, errors: u64, p99_us: u64) -> ModuleState {
    ModuleState {
        kind: ModuleKind::Model,
        runtime_status: RuntimeStatus::Running,
        image: "r/m@sha256:0".into(),
        image_digest: None,
        restart_count: 0,
        exit_code: None,
        last_start_ms: None,
        last_error: None,
        warnings: Vec::new(),
        inference: Some(InferenceStats {
            count,
            errors,
            latency_p50_us: p99_us / 2,
            latency_p99_us: p99_us,
        }),
    }
}
