//! When a container module is restarted, as in Azure IoT Edge: `never`, `on-failure` (exited
//! with a non-zero code), `on-unhealthy` (Docker health check failing, or failed), `always`.
//! Restarts back off from 10 s, doubling to 300 s; ten minutes of healthy running resets the
//! backoff. Pure: the agent feeds it what the engine reports and the time.

use std::time::{Duration, Instant};

use edgefleet_common::manifest::RestartPolicy;
use edgefleet_common::reported::RuntimeStatus;

pub const BACKOFF_MIN: Duration = Duration::from_secs(10);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
pub const HEALTHY_RESET: Duration = Duration::from_secs(600);

/// What the engine says about a container now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    pub running: bool,
    pub exit_code: Option<i64>,
    pub unhealthy: bool,
}

/// The restart bookkeeping of one container module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartState {
    pub restart_count: u32,
    backoff: Duration,
    /// When the next restart may happen (set while backing off).
    next_attempt: Option<Instant>,
    running_since: Option<Instant>,
}

impl Default for RestartState {
    fn default() -> Self {
        Self {
            restart_count: 0,
            backoff: BACKOFF_MIN,
            next_attempt: None,
            running_since: None,
        }
    }
}

/// What to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Nothing,
    Restart,
}

fn wants_restart(policy: RestartPolicy, o: Observed) -> bool {
    let failed = !o.running && o.exit_code.is_some_and(|c| c != 0);
    match policy {
        RestartPolicy::Never => false,
        RestartPolicy::OnFailure => failed,
        RestartPolicy::OnUnhealthy => failed || o.unhealthy,
        RestartPolicy::Always => !o.running || o.unhealthy,
    }
}

impl RestartState {
    /// Updates the bookkeeping with `observed` at `now` and decides.
    pub fn decide(&mut self, policy: RestartPolicy, observed: Observed, now: Instant) -> Decision {
        if observed.running && !observed.unhealthy {
            let since = *self.running_since.get_or_insert(now);
            if now.duration_since(since) >= HEALTHY_RESET {
                self.backoff = BACKOFF_MIN;
            }
            self.next_attempt = None;
            return Decision::Nothing;
        }
        self.running_since = None;
        if !wants_restart(policy, observed) {
            self.next_attempt = None;
            return Decision::Nothing;
        }
        match self.next_attempt {
            None => {
                self.next_attempt = Some(now + self.backoff);
                Decision::Nothing
            }
            Some(at) if now >= at => {
                self.next_attempt = None;
                self.restart_count += 1;
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                Decision::Restart
            }
            Some(_) => Decision::Nothing,
        }
    }

    /// The status to report.
    pub fn status(&self, policy: RestartPolicy, observed: Observed) -> RuntimeStatus {
        if observed.running && !observed.unhealthy {
            RuntimeStatus::Running
        } else if self.next_attempt.is_some() {
            RuntimeStatus::Backoff
        } else if observed.running {
            RuntimeStatus::Running
        } else if observed.exit_code.is_some_and(|c| c != 0) && !wants_restart(policy, observed) {
            RuntimeStatus::Failed
        } else {
            RuntimeStatus::Stopped
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNNING: Observed = Observed {
        running: true,
        exit_code: None,
        unhealthy: false,
    };
    const CRASHED: Observed = Observed {
        running: false,
        exit_code: Some(137),
        unhealthy: false,
    };
    const EXITED_OK: Observed = Observed {
        running: false,
        exit_code: Some(0),
        unhealthy: false,
    };

    #[test]
    fn a_crash_is_restarted_after_a_backoff_that_doubles() {
        let t0 = Instant::now();
        let mut s = RestartState::default();
        assert_eq!(
            s.decide(RestartPolicy::Always, CRASHED, t0),
            Decision::Nothing
        );
        assert_eq!(
            s.status(RestartPolicy::Always, CRASHED),
            RuntimeStatus::Backoff
        );
        assert_eq!(
            s.decide(RestartPolicy::Always, CRASHED, t0 + Duration::from_secs(9)),
            Decision::Nothing
        );
        assert_eq!(
            s.decide(RestartPolicy::Always, CRASHED, t0 + Duration::from_secs(10)),
            Decision::Restart
        );
        assert_eq!(s.restart_count, 1);
        let t1 = t0 + Duration::from_secs(11);
        assert_eq!(
            s.decide(RestartPolicy::Always, CRASHED, t1),
            Decision::Nothing
        );
        assert_eq!(
            s.decide(RestartPolicy::Always, CRASHED, t1 + Duration::from_secs(19)),
            Decision::Nothing
        );
        assert_eq!(
            s.decide(RestartPolicy::Always, CRASHED, t1 + Duration::from_secs(20)),
            Decision::Restart
        );
    }

    #[test]
    fn the_backoff_is_capped_and_reset_after_ten_healthy_minutes() {
        let mut t = Instant::now();
        let mut s = RestartState::default();
        for _ in 0..10 {
            s.decide(RestartPolicy::Always, CRASHED, t);
            t += BACKOFF_MAX;
            assert_eq!(
                s.decide(RestartPolicy::Always, CRASHED, t),
                Decision::Restart
            );
        }
        assert_eq!(s.backoff, BACKOFF_MAX);
        s.decide(RestartPolicy::Always, RUNNING, t);
        s.decide(RestartPolicy::Always, RUNNING, t + HEALTHY_RESET);
        assert_eq!(s.backoff, BACKOFF_MIN);
    }

    #[test]
    fn policies_decide_which_stops_are_restarted() {
        let t = Instant::now();
        let restarts = |policy, observed| {
            let mut s = RestartState::default();
            s.decide(policy, observed, t);
            s.decide(policy, observed, t + BACKOFF_MIN) == Decision::Restart
        };
        assert!(!restarts(RestartPolicy::Never, CRASHED));
        assert!(restarts(RestartPolicy::OnFailure, CRASHED));
        assert!(!restarts(RestartPolicy::OnFailure, EXITED_OK));
        assert!(restarts(RestartPolicy::Always, EXITED_OK));
        let unhealthy = Observed {
            running: true,
            exit_code: None,
            unhealthy: true,
        };
        assert!(restarts(RestartPolicy::OnUnhealthy, unhealthy));
        assert!(!restarts(RestartPolicy::OnFailure, unhealthy));
        let mut never = RestartState::default();
        never.decide(RestartPolicy::Never, CRASHED, t);
        assert_eq!(
            never.status(RestartPolicy::Never, CRASHED),
            RuntimeStatus::Failed
        );
        assert_eq!(
            never.status(RestartPolicy::Never, EXITED_OK),
            RuntimeStatus::Stopped
        );
    }
}
