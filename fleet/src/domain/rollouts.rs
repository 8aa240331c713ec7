//! Staged rollouts: a deployment whose policy asks for one moves its devices to a new revision
//! phase by phase. Devices not moved yet are rendered with the previous revision; a phase
//! starts when the one before it has been healthy for the soak time; too many failures roll
//! every moved device back. [`Fleet::advance_rollouts`] runs every second.

use std::collections::BTreeSet;
use std::time::Duration;

use edgefleet_common::UnixMillis;
use edgefleet_common::fleet_api::{PhaseView, RolloutStatus, StagedRollout, StagedState};
use edgefleet_transport::now_ms;

use super::{Affected, Fleet};
use crate::condition::Condition;
use crate::error::FleetError;
use crate::records::{Deployment, Device, DeviceStatus, Phase, RenderedManifest, Rollout};
use crate::staged_rollout::{self, DeviceHealth, aborts, admissible, baseline, device_health};
use crate::store::{Batch, kind};

/// How often rollouts are moved on.
pub const ADVANCE_EVERY: Duration = Duration::from_secs(1);

/// What an administrator asks of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutAction {
    Pause,
    Resume,
    Abort,
    Rollback,
}

impl Fleet {
    /// Starts a staged rollout of `deployment` (just saved as `to_revision`) from
    /// `from_revision` over the devices its condition selects now or selected before.
    pub(super) async fn start_rollout(
        &self,
        deployment: &Deployment,
        from_revision: u64,
        conditions: &[Condition],
    ) -> Result<Rollout, FleetError> {
        let Some(policy) = deployment.rollout.clone() else {
            return Err(FleetError::invalid("the deployment has no rollout policy"));
        };
        let canary_target = match &policy.canary_target {
            Some(c) => Some(c.parse::<Condition>()?),
            None => None,
        };
        let devices: Vec<(String, bool)> = self
            .store
            .list::<Device>(kind::DEVICE)
            .await?
            .into_iter()
            .filter(|(_, d)| conditions.iter().any(|c| c.matches(&d.id, &d.tags)))
            .map(|(id, d)| {
                let canary = canary_target
                    .as_ref()
                    .is_none_or(|c| c.matches(&d.id, &d.tags));
                (id, canary)
            })
            .collect();
        let phases = staged_rollout::phases(&deployment.name, &devices, &policy)
            .into_iter()
            .map(|devices| Phase {
                devices,
                ..Phase::default()
            })
            .collect();
        Ok(Rollout {
            deployment: deployment.name.clone(),
            from_revision,
            to_revision: deployment.revision,
            policy,
            state: StagedState::Running,
            reason: None,
            phases,
            current: 0,
        })
    }

    /// Moves every running rollout on: admits the current phase's devices (at most
    /// `maxPerMinute`), judges the moved ones, starts the next phase after the soak, or rolls
    /// back when too many failed.
    pub async fn advance_rollouts(&self) -> Result<(), FleetError> {
        let running = |r: &Rollout| r.state == StagedState::Running;
        // Without a running rollout the write lock is not taken.
        if !self
            .store
            .list::<Rollout>(kind::ROLLOUT)
            .await?
            .iter()
            .any(|(_, r)| running(r))
        {
            return Ok(());
        }
        let _writes = self.store.lock_writes().await?;
        let now = now_ms();
        for (name, mut rollout) in self.store.list::<Rollout>(kind::ROLLOUT).await? {
            if !running(&rollout) {
                continue;
            }
            let Some(deployment) = self
                .store
                .get::<Deployment>(kind::DEPLOYMENT, &name)
                .await?
            else {
                continue;
            };
            let before = rollout.clone();
            let rerender = self.advance(&mut rollout, &deployment, now).await?;
            let mut batch = Batch::default();
            if rollout != before {
                batch.put(kind::ROLLOUT, &name, &rollout)?;
            }
            if rerender.is_empty() {
                self.store.commit(batch).await?;
            } else {
                self.commit_and_render(batch, Affected::Devices(rerender))
                    .await?;
            }
        }
        Ok(())
    }

    /// One step of `rollout`; returns the devices whose manifests change.
    async fn advance(
        &self,
        rollout: &mut Rollout,
        deployment: &Deployment,
        now: UnixMillis,
    ) -> Result<BTreeSet<String>, FleetError> {
        // A device that starts matching the target joins the last phase.
        if let Ok(condition) = deployment.target.parse::<Condition>() {
            let known: BTreeSet<String> = rollout
                .phases
                .iter()
                .flat_map(|p| p.devices.iter().cloned())
                .collect();
            for id in self.devices_matching(&[condition]).await? {
                if !known.contains(&id) {
                    match rollout.phases.last_mut() {
                        Some(last) => last.devices.push(id),
                        None => rollout.phases.push(Phase {
                            devices: vec![id],
                            ..Phase::default()
                        }),
                    }
                }
            }
        }
        let Some(phase) = rollout.phases.get_mut(rollout.current) else {
            rollout.state = StagedState::Completed;
            return Ok(BTreeSet::new());
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
                let counters = self
                    .store
                    .get::<DeviceStatus>(kind::STATUS, &id)
                    .await?
                    .as_ref()
                    .map(baseline)
                    .unwrap_or_default();
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
            return Ok(admitted);
        }

        // Judge the moved devices on the manifests rendered for them.
        let mut failed = Vec::new();
        let mut waiting = Vec::new();
        let mut timed_out = Vec::new();
        for (id, counters) in &phase.moved {
            let manifest: Option<RenderedManifest> = self.store.get(kind::MANIFEST, id).await?;
            let carries_revision = manifest.as_ref().filter(|m| {
                m.sources.values().any(|s| {
                    s.deployment == rollout.deployment && s.revision == rollout.to_revision
                })
            });
            let Some(manifest) = carries_revision else {
                // Nothing of this revision applies to the device (another deployment wins).
                continue;
            };
            match device_health(
                manifest.version,
                self.store
                    .get::<DeviceStatus>(kind::STATUS, id)
                    .await?
                    .as_ref(),
                counters,
                started,
                &rollout.policy,
                now,
            ) {
                DeviceHealth::Healthy => {}
                DeviceHealth::Pending(why) => waiting.push(format!("{id} {why}")),
                DeviceHealth::TimedOut => timed_out.push(id.clone()),
                DeviceHealth::Failed(why) => failed.push(format!("{id}: {why}")),
            }
        }
        if aborts(failed.len(), phase.devices.len(), &rollout.policy) {
            let reason = format!(
                "phase {} ({}): {} device(s) failed: {}",
                rollout.current,
                if rollout.current == 0 {
                    "canary"
                } else {
                    "batch"
                },
                failed.len(),
                failed.join("; ")
            );
            tracing::warn!(deployment = %rollout.deployment, %reason, "rollout rolled back");
            phase.gate = format!("failed: {}", failed.join("; "));
            rollout.state = StagedState::RolledBack;
            rollout.reason = Some(reason);
            metrics::counter!("edgefleet_fleet_rollouts_finished_total", "outcome" => "rolled_back")
                .increment(1);
            return Ok(rollout.moved_devices());
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
            return Ok(BTreeSet::new());
        }
        let offline = if timed_out.is_empty() {
            String::new()
        } else {
            format!(" ({} timed out: {})", timed_out.len(), timed_out.join(", "))
        };
        if !waiting.is_empty() || !failed.is_empty() {
            phase.healthy_since_ms = None;
            let mut holds = waiting;
            holds.extend(failed);
            phase.gate = format!("waiting for {}{offline}", holds.join("; "));
            return Ok(BTreeSet::new());
        }
        let healthy_since = *phase.healthy_since_ms.get_or_insert(now);
        let soaked = now.saturating_sub(healthy_since) / 1000;
        if soaked < rollout.policy.soak_seconds {
            phase.gate = format!(
                "soaking: healthy for {soaked} s of {} s{offline}",
                rollout.policy.soak_seconds
            );
            return Ok(BTreeSet::new());
        }
        phase.gate = format!("done{offline}");
        rollout.current += 1;
        if rollout.current >= rollout.phases.len() {
            rollout.state = StagedState::Completed;
            metrics::counter!("edgefleet_fleet_rollouts_finished_total", "outcome" => "completed")
                .increment(1);
            tracing::info!(deployment = %rollout.deployment, revision = rollout.to_revision, "rollout completed");
        }
        Ok(BTreeSet::new())
    }

    /// Pauses, resumes, aborts or rolls back the rollout of `deployment`.
    pub async fn rollout_action(
        &self,
        deployment: &str,
        action: RolloutAction,
    ) -> Result<RolloutStatus, FleetError> {
        {
            let _writes = self.store.lock_writes().await?;
            let mut rollout: Rollout = self.store.get(kind::ROLLOUT, deployment).await?.ok_or_else(|| {
                FleetError::not_found(format!(
                    "deployment {deployment:?} has no staged rollout (its policy has no `rollout:`)"
                ))
            })?;
            let state = rollout.state;
            let next = match (action, state) {
                (RolloutAction::Pause, StagedState::Running) => StagedState::Paused,
                (RolloutAction::Resume, StagedState::Paused | StagedState::Aborted) => {
                    StagedState::Running
                }
                (RolloutAction::Abort, StagedState::Running | StagedState::Paused) => {
                    StagedState::Aborted
                }
                (RolloutAction::Rollback, s) if s != StagedState::RolledBack => {
                    StagedState::RolledBack
                }
                _ => {
                    return Err(FleetError::Conflict(format!(
                        "the rollout of {deployment} is {state:?}: it cannot {action:?}"
                    )));
                }
            };
            let moved = rollout.moved_devices();
            rollout.state = next;
            if next == StagedState::RolledBack {
                rollout.reason = Some("rolled back by the administrator".into());
            } else if next == StagedState::Aborted {
                rollout.reason = Some("aborted by the administrator".into());
            } else if next == StagedState::Running {
                rollout.reason = None;
            }
            let mut batch = Batch::default();
            batch.put(kind::ROLLOUT, deployment, &rollout)?;
            if next == StagedState::RolledBack {
                self.commit_and_render(batch, Affected::Devices(moved))
                    .await?;
            } else {
                self.store.commit(batch).await?;
            }
        }
        self.rollout(deployment).await
    }

    /// The staged rollout of `deployment`, as the API shows it.
    pub(super) async fn staged_view(
        &self,
        deployment: &str,
    ) -> Result<Option<StagedRollout>, FleetError> {
        let rollout: Option<Rollout> = self.store.get(kind::ROLLOUT, deployment).await?;
        Ok(rollout.map(|r| StagedRollout {
            from_revision: r.from_revision,
            to_revision: r.to_revision,
            state: r.state,
            reason: r.reason.clone(),
            current_phase: r.current,
            phases: r
                .phases
                .iter()
                .enumerate()
                .map(|(i, p)| PhaseView {
                    devices: p.devices.clone(),
                    moved: p.moved.len(),
                    started_ms: p.started_ms,
                    gate: if i > r.current {
                        "not started".into()
                    } else {
                        p.gate.clone()
                    },
                })
                .collect(),
        }))
    }
}
