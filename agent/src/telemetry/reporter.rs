//! The reporter task: turns the status board into the reported state (for the link to
//! publish and the status socket to serve) on every change, at most every few seconds when
//! only inference counters or the outbox moved, and sends the agent's periodic metrics as
//! telemetry, expiring outbox records older than their TTL.

use std::time::Duration;

use edgefleet_common::UnixMillis;
use edgefleet_common::manifest::TelemetrySettings;
use edgefleet_common::reported::{OutboxState, REPORTED_SCHEMA_VERSION, ReportedState};
use edgefleet_common::telemetry::{AgentMetrics, TelemetryRecord};
use edgefleet_transport::now_ms;
use tokio::sync::watch;

use crate::modules::status_board::StatusBoard;
use crate::store::Store;
use crate::telemetry::outbox::Outbox;

/// The module name of the agent's own telemetry.
pub(crate) const AGENT_MODULE: &str = "_agent";

/// Inference counters and the outbox change without notice; their changes are reported at
/// most this often.
const STATS_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub(crate) struct Reporter {
    pub device_id: String,
    pub board: StatusBoard,
    pub store: Store,
    pub outbox: Outbox,
    /// Where the reported state goes (JSON).
    pub reported: watch::Sender<Vec<u8>>,
    /// The desired manifest's telemetry settings.
    pub telemetry: watch::Receiver<TelemetrySettings>,
    /// Since when the fleet has not answered (from the link).
    pub fleet_silent: watch::Receiver<Option<UnixMillis>>,
}

impl Reporter {
    /// The reported state now.
    pub fn state(&self) -> ReportedState {
        let board = self.board.snapshot();
        let modules = board
            .modules
            .into_iter()
            .map(|(name, entry)| {
                let mut state = entry.state;
                if let Some(served) = &entry.served {
                    state.inference = Some(served.stats());
                }
                (name, state)
            })
            .collect();
        let outbox = self.store.outbox_state().unwrap_or_default();
        metrics::gauge!("edgefleet_agent_outbox_records").set(outbox.depth as f64);
        metrics::gauge!("edgefleet_agent_outbox_bytes").set(outbox.bytes as f64);
        metrics::counter!("edgefleet_agent_outbox_dropped_total").absolute(outbox.dropped);
        ReportedState {
            schema_version: REPORTED_SCHEMA_VERSION.to_owned(),
            device_id: self.device_id.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            applied_version: board.applied_version,
            last_desired: board.outcome,
            modules,
            outbox,
            reported_at_ms: now_ms(),
            fleet_silent_since_ms: *self.fleet_silent.borrow(),
        }
    }

    fn publish(&self, state: &ReportedState) {
        match serde_json::to_vec(state) {
            Ok(bytes) => {
                self.reported.send_replace(bytes);
            }
            Err(e) => tracing::error!(error = %e, "reported state not serialized"),
        }
    }

    /// Runs until the task is aborted.
    pub async fn run(mut self) {
        // Inference counters and the outbox change without a board change.
        let counters = |state: &ReportedState| -> (u64, OutboxState) {
            let count = state
                .modules
                .values()
                .filter_map(|m| m.inference.as_ref())
                .map(|i| i.count)
                .sum();
            (count, state.outbox.clone())
        };
        let initial = self.state();
        let mut last_counters = counters(&initial);
        self.publish(&initial);
        let mut stats_tick = tokio::time::interval(STATS_INTERVAL);
        let mut metrics_tick = self.metrics_interval();
        loop {
            tokio::select! {
                () = self.board.changed() => {
                    let state = self.state();
                    last_counters = counters(&state);
                    self.publish(&state);
                }
                _ = stats_tick.tick() => {
                    let state = self.state();
                    if counters(&state) != last_counters {
                        last_counters = counters(&state);
                        self.publish(&state);
                    }
                }
                _ = metrics_tick.tick() => {
                    self.expire_outbox();
                    let state = self.state();
                    let metrics = AgentMetrics { modules: state.modules.clone(), outbox: state.outbox.clone() };
                    if let Err(e) = self.outbox.submit(AGENT_MODULE, TelemetryRecord::Metric(metrics)) {
                        tracing::warn!(error = %e, "agent metrics not accepted");
                    }
                    self.publish(&state);
                }
                                Ok(()) = self.fleet_silent.changed() => {
                    let state = self.state();
                    self.publish(&state);
                }
                changed = self.telemetry.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    metrics_tick = self.metrics_interval();
                }
            }
        }
    }

    /// The metrics interval of the manifest, its first tick one interval from now.
    fn metrics_interval(&mut self) -> tokio::time::Interval {
        let seconds = self.telemetry.borrow_and_update().interval_seconds.max(1);
        let period = Duration::from_secs(u64::from(seconds));
        tokio::time::interval_at(tokio::time::Instant::now() + period, period)
    }

    fn expire_outbox(&self) {
        let ttl_ms = self.telemetry.borrow().ttl_seconds.saturating_mul(1000);
        match self.store.expire_outbox(now_ms().saturating_sub(ttl_ms)) {
            Ok(0) => {}
            Ok(n) => tracing::warn!(expired = n, "telemetry older than its TTL dropped"),
            Err(e) => tracing::error!(error = %e, "outbox expiry failed"),
        }
    }
}
