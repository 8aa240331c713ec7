//! `edgefleet rollout`: how far a deployment's rollout got (waiting for it to finish with
//! `--wait`), and the actions on a staged rollout (pause, resume, abort, roll back). The
//! staged-rollout flags of `deployment create` live here too: they make a rollout policy.

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use edgefleet_common::fleet_api::{
    DeviceRollout, Growth, PhaseSize, RolloutPolicy, RolloutStatus, StagedState,
};

use super::error::{CliError, Exit};
use super::output::{Output, Progress, print};
use crate::client::FleetClient;

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    Status {
        deployment: String,
        /// Wait until every targeted device succeeded (exit 0) or one failed (exit 5); for a
        /// staged rollout, until it completed (exit 0) or was aborted or rolled back (exit 5).
        #[arg(long)]
        wait: bool,
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
    },
    /// Stop moving devices until `resume`.
    Pause { deployment: String },
    /// Go on with a paused or aborted staged rollout.
    Resume { deployment: String },
    /// Stop for good: moved devices keep the new revision, the others the previous one.
    Abort { deployment: String },
    /// Give every moved device the previous revision again.
    Rollback { deployment: String },
}

/// A staged rollout for `deployment create` (any of them turns it on; the deployment file's
/// `rollout:` says the same).
#[derive(Debug, Args)]
pub struct RolloutFlags {
    /// Devices of the canary phase: a count (2) or a share (10%).
    #[arg(long, value_parser = parse_phase_size)]
    pub canary: Option<PhaseSize>,
    /// Only devices this condition selects are canaries.
    #[arg(long)]
    pub canary_target: Option<String>,
    /// Devices of each batch after the canary: a count or a share.
    #[arg(long, value_parser = parse_phase_size)]
    pub batch: Option<PhaseSize>,
    /// Double each batch.
    #[arg(long)]
    pub exponential: bool,
    #[arg(long)]
    pub max_per_minute: Option<u32>,
    /// How long a phase stays healthy before the next starts (default 30).
    #[arg(long)]
    pub soak_seconds: Option<u64>,
    /// Failed devices of a phase that roll the rollout back: a count or a share (default 1).
    #[arg(long, value_parser = parse_phase_size)]
    pub max_failures: Option<PhaseSize>,
    #[arg(long)]
    pub max_error_percent: Option<f64>,
    #[arg(long)]
    pub max_p99_ms: Option<u64>,
    /// A device silent this long no longer holds its phase (default 600).
    #[arg(long)]
    pub offline_timeout_seconds: Option<u64>,
}

impl RolloutFlags {
    /// The policy the flags ask for, if any.
    pub fn policy(&self) -> Option<RolloutPolicy> {
        let any = self.canary.is_some()
            || self.canary_target.is_some()
            || self.batch.is_some()
            || self.exponential
            || self.max_per_minute.is_some()
            || self.soak_seconds.is_some()
            || self.max_failures.is_some()
            || self.max_error_percent.is_some()
            || self.max_p99_ms.is_some()
            || self.offline_timeout_seconds.is_some();
        if !any {
            return None;
        }
        let mut policy: RolloutPolicy = serde_json::from_str("{}").ok()?;
        policy.canary = self.canary.unwrap_or(policy.canary);
        policy.canary_target = self.canary_target.clone();
        policy.batch = self.batch.unwrap_or(policy.batch);
        if self.exponential {
            policy.growth = Growth::Exponential;
        }
        policy.max_per_minute = self.max_per_minute;
        policy.soak_seconds = self.soak_seconds.unwrap_or(policy.soak_seconds);
        policy.max_failures = self.max_failures.unwrap_or(policy.max_failures);
        policy.max_error_percent = self.max_error_percent;
        policy.max_p99_ms = self.max_p99_ms;
        policy.offline_timeout_seconds = self
            .offline_timeout_seconds
            .unwrap_or(policy.offline_timeout_seconds);
        Some(policy)
    }
}

fn parse_phase_size(s: &str) -> Result<PhaseSize, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|e| e.to_string())
}

/// Runs one `rollout` command.
pub(super) fn run(
    api: &FleetClient,
    output: Output,
    command: RolloutCommand,
) -> Result<(), CliError> {
    let (verb, deployment) = match command {
        RolloutCommand::Status {
            deployment,
            wait,
            timeout_secs,
        } => return status(api, output, &deployment, wait, timeout_secs),
        RolloutCommand::Pause { deployment } => ("pause", deployment),
        RolloutCommand::Resume { deployment } => ("resume", deployment),
        RolloutCommand::Abort { deployment } => ("abort", deployment),
        RolloutCommand::Rollback { deployment } => ("rollback", deployment),
    };
    let status = api.rollout_action(&deployment, verb)?;
    print(output, &status, rollout_text);
    Ok(())
}

/// Prints the rollout's status, with `wait` once it is done (or the time ran out); a rollout
/// waited for that did not succeed exits with [`Exit::RolloutFailed`].
fn status(
    api: &FleetClient,
    output: Output,
    deployment: &str,
    wait: bool,
    timeout_secs: u64,
) -> Result<(), CliError> {
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    let mut status = api.rollout(deployment)?;
    let progress = Progress::start(String::new());
    let done = |s: &RolloutStatus| match &s.staged {
        Some(_) => s.stopped().is_some(),
        None => s.finished(),
    };
    while wait && !done(&status) && Instant::now() < deadline {
        progress.update(&format!(
            "{deployment}: {}/{} succeeded, {} failed, {} pending",
            status.succeeded, status.targeted, status.failed, status.pending
        ));
        std::thread::sleep(Duration::from_millis(500));
        status = api.rollout(deployment)?;
    }
    progress.finish();
    print(output, &status, rollout_text);
    let succeeded = match status.stopped() {
        Some(state) => state == StagedState::Completed,
        None => status.staged.is_none() && status.complete(),
    };
    if wait && !succeeded {
        return Err(CliError {
            exit: Exit::RolloutFailed,
            message: rollout_failures(&status),
        });
    }
    Ok(())
}

fn state_name(state: DeviceRollout) -> &'static str {
    match state {
        DeviceRollout::Pending => "pending",
        DeviceRollout::Succeeded => "succeeded",
        DeviceRollout::Failed => "failed",
    }
}

/// A rollout, for a person: its counts, a staged rollout's phases, then each device.
fn rollout_text(r: &RolloutStatus) -> String {
    let mut out = format!(
        "deployment {}: targeted {}, applied {}, succeeded {}, failed {}, pending {}, stale {}",
        r.deployment, r.targeted, r.applied, r.succeeded, r.failed, r.pending, r.stale
    );
    if let Some(s) = &r.staged {
        out.push_str(&format!(
            "\nstaged rollout revision {} -> {}: {}{}",
            s.from_revision,
            s.to_revision,
            serde_json::to_value(s.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            s.reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ));
        for (i, p) in s.phases.iter().enumerate() {
            let name = if i == 0 {
                "canary".to_owned()
            } else {
                format!("batch {i}")
            };
            let marker = if i == s.current_phase { ">" } else { " " };
            out.push_str(&format!(
                "\n {marker} {name:<8} {}/{} moved  {}  [{}]",
                p.moved,
                p.devices.len(),
                p.gate,
                p.devices.join(", ")
            ));
        }
    }
    for d in &r.devices {
        out.push_str(&format!(
            "\n  {:<20} manifest {:<4} {:<10}{} {}",
            d.device_id,
            d.manifest_version,
            state_name(d.state),
            if d.stale { " (stale)" } else { "" },
            d.message.as_deref().unwrap_or_default()
        ));
    }
    out
}

/// Why a rollout did not succeed, device by device.
fn rollout_failures(r: &RolloutStatus) -> String {
    let mut lines = vec![format!(
        "rollout of {} did not succeed: {}/{} succeeded, {} failed, {} pending",
        r.deployment, r.succeeded, r.targeted, r.failed, r.pending
    )];
    for d in r
        .devices
        .iter()
        .filter(|d| d.state != DeviceRollout::Succeeded)
    {
        lines.push(format!(
            "  {} ({}): {}",
            d.device_id,
            state_name(d.state),
            d.message.as_deref().unwrap_or("no answer yet")
        ));
    }
    lines.join("\n")
}
