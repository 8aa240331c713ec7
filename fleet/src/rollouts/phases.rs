//! The parts of a staged rollout's decisions, without I/O: which devices form each phase of a
//! deployment's rollout, how many may move yet, what a moved device says about its health and
//! when failures abort. [`super::step`] puts them together into one step of a rollout.

use edgefleet_common::UnixMillis;
use edgefleet_common::fleet_api::{Growth, RolloutPolicy};
use edgefleet_common::manifest::ModuleKind;
use edgefleet_common::reported::{ApplyStatus, RuntimeStatus};
use sha2::{Digest as _, Sha256};

use crate::records::{Baseline, DeviceStatus};

/// The order devices join a deployment's rollouts in: a hash of the deployment and device
/// names, so every rollout of a deployment picks the same canaries.
fn rank(deployment: &str, device: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(deployment.as_bytes())
        .chain_update([0])
        .chain_update(device.as_bytes())
        .finalize()
        .into()
}

/// The phases of a rollout of `deployment` to `devices` (each with whether it may be a
/// canary): the canary phase first, then batches as the policy grows them.
pub fn phases(
    deployment: &str,
    devices: &[(String, bool)],
    policy: &RolloutPolicy,
) -> Vec<Vec<String>> {
    let total = devices.len();
    let mut ordered: Vec<&(String, bool)> = devices.iter().collect();
    ordered.sort_by_key(|(d, _)| rank(deployment, d));
    let canary_size = policy.canary.of(total).max(1);
    let mut canaries = Vec::new();
    let mut rest = Vec::new();
    for (device, eligible) in ordered {
        if *eligible && canaries.len() < canary_size {
            canaries.push(device.clone());
        } else {
            rest.push(device.clone());
        }
    }
    let mut phases = vec![canaries];
    let mut size = policy.batch.of(total).max(1);
    let mut rest = rest.into_iter().peekable();
    while rest.peek().is_some() {
        phases.push(rest.by_ref().take(size).collect());
        if policy.growth == Growth::Exponential {
            size = size.saturating_mul(2);
        }
    }
    phases.retain(|p| !p.is_empty());
    phases
}

/// How a device of a phase is doing with the revision it was moved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceHealth {
    /// Applied, every module running, model metrics within the limits.
    Healthy,
    /// Not applied yet, or a module still starting.
    Pending(String),
    /// Silent longer than the policy's offline timeout: it no longer holds the phase.
    TimedOut,
    /// Refused the manifest, a module failed, or a metric over its limit.
    Failed(String),
}

/// The counters of `status`'s model modules now.
pub fn baseline(status: &DeviceStatus) -> Baseline {
    status
        .reported
        .iter()
        .flat_map(|r| &r.modules)
        .filter_map(|(name, m)| {
            m.inference
                .as_ref()
                .map(|i| (name.clone(), (i.count, i.errors)))
        })
        .collect()
}

/// How the device whose manifest `version` carries the new revision is doing.
pub fn device_health(
    version: u64,
    status: Option<&DeviceStatus>,
    baseline: &Baseline,
    phase_started_ms: UnixMillis,
    policy: &RolloutPolicy,
    now_ms: UnixMillis,
) -> DeviceHealth {
    let silent_since = status
        .and_then(|s| s.last_seen_ms)
        .unwrap_or(0)
        .max(phase_started_ms);
    let timed_out = now_ms.saturating_sub(silent_since) > policy.offline_timeout_seconds * 1000;
    let Some(reported) = status.and_then(|s| s.reported.as_ref()) else {
        return if timed_out {
            DeviceHealth::TimedOut
        } else {
            DeviceHealth::Pending("has not reported yet".into())
        };
    };
    match &reported.last_desired {
        Some(d) if d.version == Some(version) && d.status != ApplyStatus::Applied => {
            return DeviceHealth::Failed(format!(
                "manifest {version}: {} {}",
                u16::from(d.status),
                d.message
            ));
        }
        Some(d) if d.version == Some(version) => {}
        _ if timed_out => return DeviceHealth::TimedOut,
        _ => return DeviceHealth::Pending(format!("has not applied manifest {version} yet")),
    }
    for (name, module) in &reported.modules {
        match module.runtime_status {
            RuntimeStatus::Running => {}
            RuntimeStatus::Failed | RuntimeStatus::Backoff => {
                let error = module.last_error.as_deref().unwrap_or("no error reported");
                return DeviceHealth::Failed(format!("module {name} failed: {error}"));
            }
            RuntimeStatus::Pulling | RuntimeStatus::Stopped => {
                return DeviceHealth::Pending(format!("module {name} is not running yet"));
            }
        }
        let Some(stats) = module
            .inference
            .as_ref()
            .filter(|_| module.kind == ModuleKind::Model)
        else {
            continue;
        };
        // Counters restart with the module: then everything counted is new.
        let (count0, errors0) = baseline
            .get(name)
            .copied()
            .filter(|(c, e)| *c <= stats.count && *e <= stats.errors)
            .unwrap_or((0, 0));
        let (served, errors) = (stats.count - count0, stats.errors - errors0);
        if let Some(limit) = policy.max_error_percent
            && served > 0
            && errors as f64 * 100.0 / served as f64 > limit
        {
            return DeviceHealth::Failed(format!(
                "module {name}: {errors} of {served} inferences failed, over the {limit}% limit"
            ));
        }
        if let Some(limit) = policy.max_p99_ms
            && served > 0
            && stats.latency_p99_us > limit * 1000
        {
            return DeviceHealth::Failed(format!(
                "module {name}: p99 latency {} ms, over the {limit} ms limit",
                stats.latency_p99_us / 1000
            ));
        }
    }
    DeviceHealth::Healthy
}

/// How many of a phase's `size` devices may have moved `elapsed_ms` after it started: all,
/// or at most `max_per_minute` a minute (one at once).
pub fn admissible(size: usize, elapsed_ms: u64, max_per_minute: Option<u32>) -> usize {
    match max_per_minute {
        Some(rate) if rate > 0 => {
            let paced = 1 + elapsed_ms.saturating_mul(u64::from(rate)) / 60_000;
            size.min(usize::try_from(paced).unwrap_or(usize::MAX))
        }
        _ => size,
    }
}

/// Whether this many failed devices of a phase of `size` abort the rollout.
pub fn aborts(failed: usize, size: usize, policy: &RolloutPolicy) -> bool {
    failed > 0 && failed >= policy.max_failures.of(size).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollouts::fixtures::{model, status};
    use edgefleet_common::fleet_api::PhaseSize;

    fn policy() -> RolloutPolicy {
        serde_json::from_str("{}").expect("defaults")
    }

    fn devices(n: usize) -> Vec<(String, bool)> {
        (1..=n).map(|i| (format!("gw-{i}"), true)).collect()
    }

    #[test]
    fn phases_are_a_stable_canary_then_batches_of_the_rest() {
        let mut policy = policy();
        policy.canary = PhaseSize::Devices(2);
        policy.batch = PhaseSize::Devices(2);
        let plan = phases("line", &devices(7), &policy);
        assert_eq!(plan.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 2, 1]);
        assert_eq!(plan, phases("line", &devices(7), &policy), "deterministic");
        let mut reversed = devices(7);
        reversed.reverse();
        assert_eq!(
            plan,
            phases("line", &reversed, &policy),
            "order-independent"
        );
        assert_ne!(plan[0], phases("other", &devices(7), &policy)[0]);

        policy.growth = Growth::Exponential;
        policy.batch = PhaseSize::Devices(1);
        policy.canary = PhaseSize::Percent(10);
        let plan = phases("line", &devices(20), &policy);
        assert_eq!(
            plan.iter().map(Vec::len).collect::<Vec<_>>(),
            [2, 1, 2, 4, 8, 3]
        );
    }

    #[test]
    fn canaries_come_from_the_devices_the_canary_target_selects() {
        let mut policy = policy();
        policy.canary = PhaseSize::Devices(2);
        let mut all = devices(6);
        for (i, d) in all.iter_mut().enumerate() {
            d.1 = i >= 4;
        }
        let plan = phases("line", &all, &policy);
        let mut canaries = plan[0].clone();
        canaries.sort();
        assert_eq!(canaries, ["gw-5", "gw-6"]);
        assert_eq!(plan.iter().map(Vec::len).sum::<usize>(), 6);
    }

    #[test]
    fn a_device_is_healthy_pending_failed_or_timed_out() {
        let mut policy = policy();
        policy.max_error_percent = Some(5.0);
        policy.max_p99_ms = Some(50);
        policy.offline_timeout_seconds = 60;
        let none = Baseline::new();
        let ok = status(3, ApplyStatus::Applied, vec![("m", model(100, 1, 2_000))]);
        assert_eq!(
            device_health(3, Some(&ok), &none, 0, &policy, 2_000),
            DeviceHealth::Healthy
        );
        assert!(matches!(
            device_health(4, Some(&ok), &none, 0, &policy, 2_000),
            DeviceHealth::Pending(_)
        ));
        assert_eq!(
            device_health(4, Some(&ok), &none, 0, &policy, 70_000),
            DeviceHealth::TimedOut,
            "silent past the timeout"
        );
        let refused = status(3, ApplyStatus::ActivationFailed, vec![]);
        assert!(matches!(
            device_health(3, Some(&refused), &none, 0, &policy, 2_000),
            DeviceHealth::Failed(m) if m.starts_with("manifest 3: 417")
        ));
        let erring = status(3, ApplyStatus::Applied, vec![("m", model(100, 10, 2_000))]);
        assert!(matches!(
            device_health(3, Some(&erring), &none, 0, &policy, 2_000),
            DeviceHealth::Failed(m) if m.contains("10 of 100 inferences failed")
        ));
        // Errors from before the phase do not count.
        let before = Baseline::from([("m".to_owned(), (90, 10))]);
        assert_eq!(
            device_health(3, Some(&erring), &before, 0, &policy, 2_000),
            DeviceHealth::Healthy
        );
        let slow = status(3, ApplyStatus::Applied, vec![("m", model(100, 0, 80_000))]);
        assert!(matches!(
            device_health(3, Some(&slow), &none, 0, &policy, 2_000),
            DeviceHealth::Failed(m) if m.contains("p99 latency 80 ms")
        ));
    }

    #[test]
    fn max_per_minute_paces_a_phase() {
        assert_eq!(admissible(10, 0, None), 10);
        assert_eq!(admissible(10, 0, Some(2)), 1);
        assert_eq!(admissible(10, 29_999, Some(2)), 1);
        assert_eq!(admissible(10, 30_000, Some(2)), 2);
        assert_eq!(admissible(10, 600_000, Some(2)), 10);
    }

    #[test]
    fn failures_abort_at_the_policy_threshold() {
        let mut policy = policy();
        assert!(!aborts(0, 4, &policy));
        assert!(aborts(1, 4, &policy), "by default one failure aborts");
        policy.max_failures = PhaseSize::Percent(50);
        assert!(!aborts(1, 4, &policy));
        assert!(aborts(2, 4, &policy));
    }
}
