//! Prometheus metrics (`[metrics] listen` in the agent configuration; off when empty), through
//! the `metrics` facade and its Prometheus exporter. What the agent counts:
//! - `edgefleet_agent_inferences_total{module,result}` and
//!   `edgefleet_agent_inference_seconds{module}` (a histogram), per model module;
//! - `edgefleet_agent_outbox_records`, `_outbox_bytes`, `_outbox_dropped_total`;
//! - `edgefleet_agent_mqtt_connects_total` (the first connect and every reconnect);
//! - `edgefleet_agent_pull_seconds{kind}` (model and container pulls, a histogram);
//! - `edgefleet_agent_container_restarts_total{module}`.
//!
//! Without an installed recorder (metrics off, `model serve`, tests) every call is a no-op.

use std::net::SocketAddr;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets (seconds) of the inference histogram: 50 µs to 5 s.
const INFERENCE_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];
/// Buckets (seconds) of the pull histogram: 100 ms to 10 min.
const PULL_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 180.0, 600.0];

/// Installs the Prometheus recorder; `None` (logged) when one is installed already.
pub fn install() -> Option<PrometheusHandle> {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("edgefleet_agent_inference_seconds".into()),
            INFERENCE_BUCKETS,
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("edgefleet_agent_pull_seconds".into()),
                PULL_BUCKETS,
            )
        });
    match builder.and_then(|b| b.install_recorder()) {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::warn!(error = %e, "metrics not available");
            None
        }
    }
}

/// Serves `GET /metrics` on `listen` until the task is aborted.
pub async fn serve(listen: SocketAddr, handle: PrometheusHandle) {
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move {
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
    match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => {
            tracing::info!(%listen, "serving Prometheus metrics on /metrics");
            if let Err(e) = axum::serve(listener, router).await {
                tracing::warn!(error = %e, "metrics endpoint stopped");
            }
        }
        Err(e) => tracing::warn!(%listen, error = %e, "metrics endpoint not available"),
    }
}
