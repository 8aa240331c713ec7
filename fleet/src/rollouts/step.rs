//! One step of a staged rollout, without I/O: given the rollout, what the fleet observes of
//! the devices of its current phase (their statuses and the manifests rendered for them) and
//! the time, [`step`] admits devices into the new revision, judges the moved ones, soaks a
//! healthy phase, starts the next one, completes the rollout or rolls it back. The shell in
//! `domain/rollouts.rs` reads what it needs in one batched query, calls this, and writes and
//! renders what it returns.

use std::collections::{BTreeMap, BTreeSet};

use edgefleet_common::UnixMillis;
use edgefleet_common::fleet_api::StagedState;

use crate::records::{DeviceStatus, Phase, RenderedManifest, Rollout};
use crate::rollouts::phases::{DeviceHealth, aborts, admissible, baseline, device_health};

/// What the fleet knows of the devices of a rollout's current phase.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Each device's last status, when it has one.
    pub statuses: BTreeMap<String, DeviceStatus>,
    /// The manifest last rendered for each device, when there is one.
    pub manifests: BTreeMap<String, RenderedManifest>,
}

/// How a step ended a rollout, for the shell to log and count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    Completed,
    RolledBack { reason: String },
}

/// What a step asks of the shell besides storing the rollout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    /// Devices whose manifests change (admitted, or moved back by a roll-back).
    pub rerender: BTreeSet<String>,
    pub finished: Option<Finished>,
}

/// Devices that started matching the deployment's target since the rollout began join its
/// last phase.
pub fn join(rollout: &mut Rollout, matching: impl IntoIterator<Item = String>) {
    let known: BTreeSet<String> = rollout
        .phases
        .iter()
        .flat_map(|p| p.devices.iter().cloned())
        .collect();
    for id in matching {
        if known.contains(&id) {
            continue;
        }
        match rollout.phases.last_mut() {
            Some(last) => last.devices.push(id),
            None => rollout.phases.push(Phase {
                devices: vec![id],
                ..Phase::default()
            }),
        }
    }
}

/// The devices whose statuses and manifests [`step`] reads: the current phase's.
pub fn devices_to_observe(rollout: &Rollout) -> Vec<String> {
    rollout
        .phases
        .get(rollout.current)
        .map(|p| p.devices.clone())
        .unwrap_or_default()
}

/// Moves `rollout` on by one step at `now`.
pub fn step(rollout: &mut Rollout, observed: &Observed, now: UnixMillis) -> Step {
    let Some(phase) = rollout.phases.get_mut(rollout.current) else {
        rollout.state = StagedState::Completed;
        return Step::default();
    };
    let started = *phase.started_ms.get_or_insert(now);

    // Admit the phase's devices, at most `maxPerMinute` of them a minute.
    let allowed = admissible(
        phase.devices.len(),
        now.saturating_sub(started),
        rollout.policy.max_per_minute,
    );
    let mut admitted = BTreeSet::new();
    for id in phase.devices.clone() {
        if phase.moved.len() >= allowed {
            break;
        }
        if !phase.moved.contains_key(&id) {
            let counters = observed.statuses.get(&id).map(baseline).unwrap_or_default();
            phase.moved.insert(id.clone(), counters);
            admitted.insert(id);
        }
    }
    if !admitted.is_empty() {
        phase.gate = format!(
            "moving: {} of {} devices",
            phase.moved.len(),
            phase.devices.len()
        );
        phase.healthy_since_ms = None;
        return Step {
            rerender: admitted,
            finished: None,
        };
    }

    let judged = judge(rollout, observed, started, now);
    let phase = &mut rollout.phases[rollout.current];
    if aborts(judged.failed.len(), phase.devices.len(), &rollout.policy) {
        let reason = format!(
            "phase {} ({}): {} device(s) failed: {}",
            rollout.current,
            if rollout.current == 0 {
                "canary"
            } else {
                "batch"
            },
            judged.failed.len(),
            judged.failed.join("; ")
        );
        phase.gate = format!("failed: {}", judged.failed.join("; "));
        rollout.state = StagedState::RolledBack;
        rollout.reason = Some(reason.clone());
        return Step {
            rerender: rollout.moved_devices(),
            finished: Some(Finished::RolledBack { reason }),
        };
    }
    if phase.moved.len() < phase.devices.len() {
        // `maxPerMinute` holds the rest back for now.
        phase.gate = format!(
            "moving: {} of {} devices (at most {} a minute)",
            phase.moved.len(),
            phase.devices.len(),
            rollout.policy.max_per_minute.unwrap_or_default()
        );
        phase.healthy_since_ms = None;
        return Step::default();
    }
    let offline = if judged.timed_out.is_empty() {
        String::new()
    } else {
        format!(
            " ({} timed out: {})",
            judged.timed_out.len(),
            judged.timed_out.join(", ")
        )
    };
    if !judged.waiting.is_empty() || !judged.failed.is_empty() {
        phase.healthy_since_ms = None;
        let mut holds = judged.waiting;
        holds.extend(judged.failed);
        phase.gate = format!("waiting for {}{offline}", holds.join("; "));
        return Step::default();
    }
    let healthy_since = *phase.healthy_since_ms.get_or_insert(now);
    let soaked = now.saturating_sub(healthy_since) / 1000;
    if soaked < rollout.policy.soak_seconds {
        phase.gate = format!(
            "soaking: healthy for {soaked} s of {} s{offline}",
            rollout.policy.soak_seconds
        );
        return Step::default();
    }
    phase.gate = format!("done{offline}");
    rollout.current += 1;
    if rollout.current >= rollout.phases.len() {
        rollout.state = StagedState::Completed;
        return Step {
            rerender: BTreeSet::new(),
            finished: Some(Finished::Completed),
        };
    }
    Step::default()
}

/// The moved devices of the current phase, sorted by what their health says.
#[derive(Debug, Default)]
struct Judged {
    failed: Vec<String>,
    waiting: Vec<String>,
    timed_out: Vec<String>,
}

/// Judges the current phase's moved devices on the manifests rendered for them.
fn judge(rollout: &Rollout, observed: &Observed, started: UnixMillis, now: UnixMillis) -> Judged {
    let mut judged = Judged::default();
    for (id, counters) in &rollout.phases[rollout.current].moved {
        let carries_revision = observed.manifests.get(id).filter(|m| {
            m.sources
                .values()
                .any(|s| s.deployment == rollout.deployment && s.revision == rollout.to_revision)
        });
        let Some(manifest) = carries_revision else {
            // Nothing of this revision applies to the device (another deployment wins).
            continue;
        };
        match device_health(
            manifest.version,
            observed.statuses.get(id),
            counters,
            started,
            &rollout.policy,
            now,
        ) {
            DeviceHealth::Healthy => {}
            DeviceHealth::Pending(why) => judged.waiting.push(format!("{id} {why}")),
            DeviceHealth::TimedOut => judged.timed_out.push(id.clone()),
            DeviceHealth::Failed(why) => judged.failed.push(format!("{id}: {why}")),
        }
    }
    judged
}

#[cfg(test)]
#[path = "step_tests.rs"]
mod tests;
