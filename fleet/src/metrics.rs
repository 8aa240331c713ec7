//! Prometheus metrics of the fleet service (`edgefleet serve --metrics-listen ADDR`), through
//! the `metrics` facade and its Prometheus exporter:
//! - `edgefleet_fleet_devices{state}`: online, stale (silent too long) or never seen, counted
//!   when scraped;
//! - `edgefleet_fleet_rollouts_running` (counted when scraped) and
//!   `edgefleet_fleet_rollouts_finished_total{outcome}` (completed, rolled_back);
//! - `edgefleet_fleet_telemetry_records_total` and `edgefleet_fleet_telemetry_lag_seconds`
//!   (from a record's time on its device to its arrival, a histogram);
//! - `edgefleet_fleet_render_seconds` (a histogram) and `edgefleet_fleet_manifests_changed_total`.

use std::sync::Arc;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::domain::Fleet;

const LAG_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 300.0, 3600.0, 86400.0];
const RENDER_BUCKETS: &[f64] = &[0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0];

/// Installs the Prometheus recorder; `None` (logged) when one is installed already.
pub fn install() -> Option<PrometheusHandle> {
    let installed = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("edgefleet_fleet_telemetry_lag_seconds".into()),
            LAG_BUCKETS,
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("edgefleet_fleet_render_seconds".into()),
                RENDER_BUCKETS,
            )
        })
        .and_then(|b| b.install_recorder());
    match installed {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::warn!(error = %e, "metrics not available");
            None
        }
    }
}

/// Serves `GET /metrics` on `listener` until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, handle: PrometheusHandle, fleet: Arc<Fleet>) {
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (handle, fleet) = (handle.clone(), fleet.clone());
            async move {
                if let Err(e) = fleet.count_for_metrics().await {
                    tracing::warn!(error = %e, "device counts not available for metrics");
                }
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    handle.render(),
                )
            }
        }),
    );
    if let Err(e) = axum::serve(listener, router).await {
        tracing::warn!(error = %e, "metrics endpoint stopped");
    }
}
