//! The dashboard's pages, read from the fleet's state: the overview with device health counts
//! and failing modules, the device list, a device with its modules and charts, deployments with
//! rollout progress, and the model registry.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::Extension;
use axum::extract::{Path, State};
use axum::response::Response;
use edgefleet_common::fleet_api::DeviceView;
use edgefleet_common::reported::{ModuleState, RuntimeStatus};
use edgefleet_common::telemetry::TelemetryKind;

use super::Ui;
use super::charts::charts;
use super::html::{ago, answer, esc, page};
use crate::domain::{Caller, TelemetryFilter};

/// A device silent this long is offline, not just stale (`rollouts::status::STALE_AFTER_MS`).
const OFFLINE_AFTER_MS: u64 = 3600 * 1000;
/// How far back a device page charts, and at most how many inference records.
const CHART_SPAN_MS: u64 = 3600 * 1000;
const CHART_RECORDS: usize = 50_000;

fn is_failing(m: &ModuleState) -> bool {
    matches!(
        m.runtime_status,
        RuntimeStatus::Failed | RuntimeStatus::Backoff
    )
}

/// How a device is doing, as the overview and the device list show it.
fn health(d: &DeviceView) -> (&'static str, &'static str) {
    let failing = d.reported.as_ref().is_some_and(|r| {
        r.modules.values().any(|m| {
            matches!(
                m.runtime_status,
                RuntimeStatus::Failed | RuntimeStatus::Backoff
            )
        })
    });
    let silent_ms = d
        .last_seen_ms
        .map(|seen| edgefleet_transport::now_ms().saturating_sub(seen));
    match (silent_ms, d.stale, failing) {
        (None, _, _) => ("never seen", "muted"),
        (Some(ms), _, _) if ms > OFFLINE_AFTER_MS => ("offline", "bad"),
        (_, true, _) => ("stale", "warn"),
        (_, false, true) => ("module failing", "warn"),
        _ => ("online", "good"),
    }
}

pub(super) async fn overview(
    State(ui): State<Ui>,
    Extension(caller): Extension<Caller>,
) -> Response {
    answer(async {
        let devices = ui.fleet.devices().await?;
        let deployments = ui.fleet.deployments().await?;
        let models = ui.fleet.models().await?;
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for d in &devices {
            *counts.entry(health(d).0).or_default() += 1;
        }
        let count = |state: &str| counts.get(state).copied().unwrap_or(0);
        let tile = |label: &str, n: usize, class: &str| {
            format!(r#"<div class="tile {class}"><b>{n}</b><span>{label}</span></div>"#)
        };
        let mut body = format!(
            r#"<h1>Fleet {}</h1><div class="tiles">{}{}{}{}{}{}{}{}</div>"#,
            esc(&ui.fleet.info().fleet),
            tile("devices", devices.len(), ""),
            tile("online", count("online"), "good"),
            tile("stale (silent over 5 min)", count("stale"), "warn"),
            tile("offline (silent over 1 h)", count("offline"), "bad"),
            tile("never seen", count("never seen"), ""),
            tile("with a failing module", count("module failing"), "warn"),
            tile("deployments", deployments.len(), ""),
            tile("model versions", models.len(), ""),
        );
        let mut failing = Vec::new();
        for d in &devices {
            let Some(r) = &d.reported else { continue };
            for (name, m) in r.modules.iter().filter(|(_, m)| is_failing(m)) {
                failing.push(format!(
                    r#"<tr><td><a href="/ui/devices/{id}">{id}</a></td><td>{}</td><td>{}</td></tr>"#,
                    esc(name),
                    esc(m.last_error.as_deref().unwrap_or("-")),
                    id = esc(&d.id)
                ));
            }
        }
        body.push_str("<h2>Failing modules</h2>");
        if failing.is_empty() {
            body.push_str(r#"<p class="muted">None.</p>"#);
        } else {
            let _ = write!(
                body,
                "<table><tr><th>device</th><th>module</th><th>error</th></tr>{}</table>",
                failing.concat()
            );
        }
        Ok(page("Overview", Some(&caller), "overview", &body))
    }.await)
}

pub(super) async fn devices(
    State(ui): State<Ui>,
    Extension(caller): Extension<Caller>,
) -> Response {
    answer(async {
        let mut rows = String::new();
        for d in ui.fleet.devices().await? {
            let (state, class) = health(&d);
            let tags: Vec<String> = d.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let (modules, inferences) = d.reported.as_ref().map_or((String::new(), 0), |r| {
                let modules: Vec<String> = r.modules.keys().map(|m| esc(m)).collect();
                let count = r
                    .modules
                    .values()
                    .filter_map(|m| m.inference.as_ref())
                    .map(|i| i.count)
                    .sum();
                (modules.join(", "), count)
            });
            let applied = d
                .reported
                .as_ref()
                .and_then(|r| r.applied_version)
                .map_or("-".to_owned(), |v| v.to_string());
            let _ = write!(
                rows,
                r#"<tr><td><a href="/ui/devices/{id}">{id}</a></td><td class="{class}">{state}</td><td>{}</td><td>{modules}</td><td>{applied} / {}</td><td>{inferences}</td><td>{}</td></tr>"#,
                esc(&tags.join(" ")),
                d.manifest_version.map_or("-".to_owned(), |v| v.to_string()),
                ago(d.last_seen_ms),
                id = esc(&d.id),
            );
        }
        let body = format!(
            "<h1>Devices</h1><table><tr><th>device</th><th>state</th><th>tags</th><th>modules</th><th>applied / rendered version</th><th>inferences</th><th>last seen</th></tr>{rows}</table>"
        );
        Ok(page("Devices", Some(&caller), "devices", &body))
    }.await)
}

pub(super) async fn device(
    State(ui): State<Ui>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    answer(async {
        let d = ui.fleet.device(&id).await?;
        let (state, class) = health(&d);
        let mut body = format!(
            r#"<h1>{}</h1><p><span class="{class}">{state}</span> · last seen {} · rendered version {}</p>"#,
            esc(&d.id),
            ago(d.last_seen_ms),
            d.manifest_version.map_or("-".to_owned(), |v| v.to_string())
        );
        if let Some(r) = &d.reported {
            body.push_str("<h2>Modules</h2><table><tr><th>module</th><th>kind</th><th>status</th><th>image</th><th>inferences</th><th>errors</th><th>p50 / p99 µs</th><th>restarts</th><th>last error, warnings</th></tr>");
            for (name, m) in &r.modules {
                let kind = serde_json::to_value(m.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let status = serde_json::to_value(m.runtime_status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let (count, errors, latency) = m.inference.as_ref().map_or(
                    ("-".to_owned(), "-".to_owned(), "-".to_owned()),
                    |i| {
                        (
                            i.count.to_string(),
                            i.errors.to_string(),
                            format!("{} / {}", i.latency_p50_us, i.latency_p99_us),
                        )
                    },
                );
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td>{kind}</td><td>{status}</td><td class=\"image\">{}</td><td>{count}</td><td>{errors}</td><td>{latency}</td><td>{}</td><td>{}</td></tr>",
                    esc(name),
                    esc(&m.image),
                    m.restart_count,
                    esc(&m
                        .last_error
                        .iter()
                        .chain(&m.warnings)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("; ")),
                );
            }
            body.push_str("</table>");
            if let Some(o) = &r.last_desired {
                let _ = write!(
                    body,
                    "<p>Last manifest: version {} — {} {}</p>",
                    o.version.map_or("-".to_owned(), |v| v.to_string()),
                    u16::from(o.status),
                    esc(&o.message)
                );
            }
            let _ = write!(
                body,
                "<p>Outbox: {} record(s), {} bytes, {} dropped.</p>",
                r.outbox.depth, r.outbox.bytes, r.outbox.dropped
            );
        }
        let filter = TelemetryFilter {
            kind: Some(TelemetryKind::Inference),
            since_ms: Some(edgefleet_transport::now_ms().saturating_sub(CHART_SPAN_MS)),
            ..TelemetryFilter::default()
        };
        let inferences = ui.fleet.query_telemetry(&id, &filter, CHART_RECORDS).await?;
        body.push_str(&charts(&inferences));
        Ok(page(&d.id, Some(&caller), "devices", &body))
    }.await)
}

pub(super) async fn deployments(
    State(ui): State<Ui>,
    Extension(caller): Extension<Caller>,
) -> Response {
    answer(async {
        let mut body = String::from("<h1>Deployments</h1>");
        let list = ui.fleet.deployments().await?;
        if list.is_empty() {
            body.push_str(r#"<p class="muted">None yet.</p>"#);
        }
        for d in list {
            let status = ui.fleet.rollout(&d.name).await?;
            let done = if status.targeted == 0 {
                0.0
            } else {
                status.succeeded as f64 / status.targeted as f64 * 100.0
            };
            let modules: Vec<String> = d.modules.keys().map(|m| esc(m)).collect();
            let _ = write!(
                body,
                r#"<section class="deployment"><h2>{}</h2><p>revision {} · priority {} · target <code>{}</code> · modules {}</p>
<div class="bar"><div style="width:{done:.0}%"></div></div>
<p>{} targeted: {} succeeded, {} failed, {} pending, {} stale</p>"#,
                esc(&d.name),
                d.revision,
                d.priority,
                esc(&d.target),
                modules.join(", "),
                status.targeted,
                status.succeeded,
                status.failed,
                status.pending,
                status.stale,
            );
            if let Some(staged) = &status.staged {
                let state = serde_json::to_value(staged.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let _ = write!(
                    body,
                    "<p>Staged rollout {} → {}: <b>{state}</b>{}</p>",
                    staged.from_revision,
                    staged.to_revision,
                    staged
                        .reason
                        .as_deref()
                        .map_or(String::new(), |r| format!(" — {}", esc(r)))
                );
                body.push_str(&super::actions::rollout_buttons(&caller, &d.name, staged.state));
            }
            body.push_str("</section>");
        }
        Ok(page("Deployments", Some(&caller), "deployments", &body))
    }.await)
}

pub(super) async fn models(State(ui): State<Ui>, Extension(caller): Extension<Caller>) -> Response {
    answer(async {
        let mut rows = String::new();
        for m in ui.fleet.models().await? {
            let _ = write!(
                rows,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"image\">{}</td><td>{}</td></tr>",
                esc(&m.name),
                m.version,
                m.size,
                esc(&m.sha256.chars().take(12).collect::<String>()),
                m.package
                    .as_ref()
                    .map_or("not packaged".to_owned(), |p| esc(&p.image)),
                ago(Some(m.registered_ms)),
            );
        }
        let body = format!(
            "<h1>Model registry</h1><table><tr><th>model</th><th>version</th><th>bytes</th><th>sha256</th><th>image</th><th>registered</th></tr>{rows}</table>"
        );
        Ok(page("Models", Some(&caller), "models", &body))
    }.await)
}
