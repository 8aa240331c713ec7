//! Staged rollouts, the shell: a deployment whose policy asks for one moves its devices to a new
//! revision phase by phase. Devices not moved yet are rendered with the previous revision; a
//! phase starts when the one before it has been healthy for the soak time; too many failures
//! roll every moved device back. What to do is decided by `rollouts::step`;
//! [`Fleet::advance_rollouts`] runs it every second with what it reads in batched queries, and
//! stores and renders what it returns.

use std::time::Duration;

use edgefleet_common::fleet_api::{PhaseView, RolloutStatus, StagedRollout, StagedState};
use edgefleet_transport::now_ms;

use super::{Affected, Fleet};
use crate::condition::Condition;
use crate::error::FleetError;
use crate::records::{Deployment, Device, Phase, Rollout};
use crate::rollouts::phases;
use crate::rollouts::step::{Finished, Observed, devices_to_observe, join, step};
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
        let phases = phases::phases(&deployment.name, &devices, &policy)
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
    /// back when too many failed (see [`step`]).
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
            if let Ok(condition) = deployment.target.parse::<Condition>() {
                join(&mut rollout, self.devices_matching(&[condition]).await?);
            }
            let observed = self.observe(&devices_to_observe(&rollout)).await?;
            let step = step(&mut rollout, &observed, now);
            report(&rollout, step.finished.as_ref());
            let mut batch = Batch::default();
            if rollout != before {
                batch.put(kind::ROLLOUT, &name, &rollout)?;
            }
            if step.rerender.is_empty() {
                self.store.commit(batch).await?;
            } else {
                self.commit_and_render(batch, Affected::Devices(step.rerender))
                    .await?;
            }
        }
        Ok(())
    }

    /// The statuses and rendered manifests of `devices`, in one query each.
    async fn observe(&self, devices: &[String]) -> Result<Observed, FleetError> {
        let names: Vec<&str> = devices.iter().map(String::as_str).collect();
        Ok(Observed {
            statuses: self.store.get_many(kind::STATUS, &names).await?,
            manifests: self.store.get_many(kind::MANIFEST, &names).await?,
        })
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

/// Logs and counts how a step ended a rollout.
fn report(rollout: &Rollout, finished: Option<&Finished>) {
    match finished {
        Some(Finished::RolledBack { reason }) => {
            tracing::warn!(deployment = %rollout.deployment, %reason, "rollout rolled back");
            metrics::counter!("edgefleet_fleet_rollouts_finished_total", "outcome" => "rolled_back")
                .increment(1);
        }
        Some(Finished::Completed) => {
            metrics::counter!("edgefleet_fleet_rollouts_finished_total", "outcome" => "completed")
                .increment(1);
            tracing::info!(deployment = %rollout.deployment, revision = rollout.to_revision, "rollout completed");
        }
        None => {}
    }
}
