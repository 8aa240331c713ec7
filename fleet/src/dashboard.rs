//! The web dashboard (`/ui/...` on the service's listener): server-rendered HTML and inline
//! SVG charts, nothing fetched from elsewhere (no script but the sign-in link's), so it works
//! on an air-gapped site. Signing in takes the admin token (a form, or a link `/ui/login#token=...` whose
//! fragment never reaches a server log); the session is a cookie derived from the token, so it
//! ends when the token changes. Pages: overview, devices, a device with its charts of
//! inference rate and latency per module, deployments with rollout progress, models.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use edgefleet_common::fleet_api::DeviceView;
use edgefleet_common::reported::{ModuleState, RuntimeStatus};
use edgefleet_common::telemetry::{TelemetryEnvelope, TelemetryKind, TelemetryRecord};
use sha2::{Digest as _, Sha256};

use crate::domain::{Fleet, TelemetryFilter};
use crate::error::FleetError;

const COOKIE: &str = "edgefleet_session";
/// A device silent this long is offline, not just stale (`rollout::STALE_AFTER_MS`).
const OFFLINE_AFTER_MS: u64 = 3600 * 1000;
/// How far back a device page charts, and at most how many inference records.
const CHART_SPAN_MS: u64 = 3600 * 1000;
const CHART_RECORDS: usize = 50_000;

#[derive(Debug, Clone)]
struct Ui {
    fleet: Arc<Fleet>,
    /// The cookie value of a signed-in session.
    session: String,
    token_sha256: [u8; 32],
}

/// The dashboard's routes, for sessions signed in with `token`.
pub fn router(fleet: Arc<Fleet>, token: &str) -> Router {
    let token_sha256: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let session = hex::encode(Sha256::digest(
        [b"edgefleet dashboard session\n".as_slice(), &token_sha256].concat(),
    ));
    let ui = Ui {
        fleet,
        session,
        token_sha256,
    };
    let pages = Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(overview))
        .route("/ui/devices", get(devices))
        .route("/ui/devices/{id}", get(device))
        .route("/ui/deployments", get(deployments))
        .route("/ui/models", get(models))
        .route("/ui/logout", get(logout))
        .layer(middleware::from_fn_with_state(ui.clone(), signed_in));
    Router::new()
        .route("/ui/login", get(login_page).post(login))
        .merge(pages)
        .with_state(ui)
}

async fn signed_in(State(ui): State<Ui>, request: Request, next: Next) -> Response {
    let cookie = request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .any(|(name, value)| name == COOKIE && value == ui.session);
    if cookie {
        next.run(request).await
    } else {
        Redirect::to("/ui/login").into_response()
    }
}

async fn login_page() -> Html<String> {
    Html(login_html(None))
}

fn login_html(error: Option<&str>) -> String {
    let error = error.map_or(String::new(), |e| {
        format!(r#"<p class="bad">{}</p>"#, esc(e))
    });
    // A link carrying the token in its fragment signs in at once; the fragment stays in the
    // browser.
    let script = r#"<script>
const t = new URLSearchParams(location.hash.slice(1)).get("token");
if (t) { history.replaceState(null, "", "/ui/login"); const f = document.forms[0]; f.token.value = t; f.submit(); }
</script>"#;
    page(
        "Sign in",
        "",
        &format!(
            r#"<h1>Edgefleet</h1>
<form method="post" action="/ui/login" class="login">
<label>Admin token <input type="password" name="token" autocomplete="current-password" autofocus></label>
<button type="submit">Sign in</button>
</form>{error}
<p class="muted">The token is in <code>&lt;data-dir&gt;/admin-token</code> on the fleet host.</p>{script}"#
        ),
    )
}

#[derive(Debug, serde::Deserialize)]
struct Login {
    token: String,
}

async fn login(State(ui): State<Ui>, Form(login): Form<Login>) -> Response {
    if Sha256::digest(login.token.as_bytes()).as_slice() != ui.token_sha256 {
        return (
            StatusCode::UNAUTHORIZED,
            Html(login_html(Some("That is not the admin token."))),
        )
            .into_response();
    }
    let cookie = format!(
        "{COOKIE}={}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=43200",
        ui.session
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/ui/")).into_response()
}

async fn logout() -> Response {
    let cookie = format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/ui/login")).into_response()
}

/// A page, or the error that kept it from rendering.
fn answer(result: Result<String, FleetError>) -> Response {
    match result {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            let status = crate::routes::status(&e);
            let body = page(
                "Error",
                "",
                &format!(r#"<p class="bad">{}</p>"#, esc(&e.to_string())),
            );
            (status, Html(body)).into_response()
        }
    }
}

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

async fn overview(State(ui): State<Ui>) -> Response {
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
        Ok(page("Overview", "overview", &body))
    }.await)
}

async fn devices(State(ui): State<Ui>) -> Response {
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
        Ok(page("Devices", "devices", &body))
    }.await)
}

async fn device(State(ui): State<Ui>, Path(id): Path<String>) -> Response {
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
        Ok(page(&d.id, "devices", &body))
    }.await)
}

/// The inference rate and latency (p50, p99) of each module, in time buckets (at least 10 s,
/// at most 60 of them over the records' span), as SVG charts.
fn charts(inferences: &[TelemetryEnvelope]) -> String {
    // Per module: each record's time and latency.
    let mut series: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
    for r in inferences {
        if let TelemetryRecord::Inference(i) = &r.record {
            series
                .entry(&r.module)
                .or_default()
                .push((r.timestamp_ms, i.latency_us));
        }
    }
    if series.is_empty() {
        return r#"<h2>Inference</h2><p class="muted">No inference from this device in the last hour.</p>"#.to_owned();
    }
    let (first, last) = inferences.iter().fold((u64::MAX, 0), |(a, b), r| {
        (a.min(r.timestamp_ms), b.max(r.timestamp_ms))
    });
    let bucket = (last.saturating_sub(first) / 60).max(10_000);
    let mut out = String::from("<h2>Inference, last hour</h2>");
    for (module, records) in series {
        let mut buckets: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for (t, latency) in records {
            buckets
                .entry(t - (t - first) % bucket)
                .or_default()
                .push(latency);
        }
        let (mut rate, mut p50, mut p99) = (Vec::new(), Vec::new(), Vec::new());
        for (t, mut latencies) in buckets {
            latencies.sort_unstable();
            let at = |q: f64| {
                latencies[((latencies.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0
            };
            rate.push((t, latencies.len() as f64 / (bucket as f64 / 1000.0)));
            p50.push((t, at(0.5)));
            p99.push((t, at(0.99)));
        }
        let _ = write!(
            out,
            r#"<div class="charts"><h3>{}</h3>{}{}</div>"#,
            esc(module),
            chart("requests/s", &[("rate", &rate)]),
            chart("latency ms", &[("p50", &p50), ("p99", &p99)]),
        );
    }
    out
}

/// A line chart of `lines` (name, points of (time ms, value)).
fn chart(title: &str, lines: &[(&str, &[(u64, f64)])]) -> String {
    let (w, h, pad) = (420.0, 160.0, 34.0);
    let all = lines.iter().flat_map(|(_, p)| p.iter());
    let (t0, t1) = all
        .clone()
        .fold((u64::MAX, 0), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let max = all.fold(0.0f64, |m, p| m.max(p.1)).max(1e-9);
    let x = |t: u64| {
        pad + (t.saturating_sub(t0)) as f64 / (t1.saturating_sub(t0).max(1)) as f64
            * (w - pad - 8.0)
    };
    let y = |v: f64| h - 18.0 - v / max * (h - 30.0);
    let mut svg = format!(
        r#"<figure><figcaption>{}</figcaption><svg viewBox="0 0 {w} {h}" role="img" aria-label="{}"><line x1="{pad}" y1="{}" x2="{}" y2="{}" class="axis"/><text x="2" y="14">{}</text><text x="2" y="{}">0</text>"#,
        esc(title),
        esc(title),
        h - 18.0,
        w - 8.0,
        h - 18.0,
        fmt_value(max),
        h - 18.0,
    );
    for (i, (name, points)) in lines.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.0), y(p.1)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline class="line{i}" points="{}"><title>{}</title></polyline><text x="{}" y="{}" class="legend{i}">{}</text>"#,
            path.join(" "),
            esc(name),
            w - 70.0,
            14.0 + 12.0 * i as f64,
            esc(name)
        );
        // Each point as a dot too: a lone point draws no line.
        for p in points.iter() {
            let _ = write!(
                svg,
                r#"<circle class="dot{i}" cx="{:.1}" cy="{:.1}" r="2"/>"#,
                x(p.0),
                y(p.1)
            );
        }
    }
    svg.push_str("</svg></figure>");
    svg
}

fn fmt_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

async fn deployments(State(ui): State<Ui>) -> Response {
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
            }
            body.push_str("</section>");
        }
        Ok(page("Deployments", "deployments", &body))
    }.await)
}

async fn models(State(ui): State<Ui>) -> Response {
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
        Ok(page("Models", "models", &body))
    }.await)
}

/// How long ago `ms` was.
fn ago(ms: Option<u64>) -> String {
    let Some(ms) = ms else {
        return "never".to_owned();
    };
    let s = edgefleet_transport::now_ms().saturating_sub(ms) / 1000;
    match s {
        0..60 => format!("{s} s ago"),
        60..3600 => format!("{} min ago", s / 60),
        3600..86400 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86400),
    }
}

/// Text for HTML.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2733;background:#f5f7fa}
nav{background:#1d2733;padding:10px 24px;display:flex;gap:18px;align-items:center}
nav a{color:#c9d4e0;text-decoration:none}nav a.on,nav a:hover{color:#fff}nav .brand{color:#fff;font-weight:600;margin-right:12px}
nav .out{margin-left:auto}
main{padding:18px 24px;max-width:1200px}
h1{font-size:22px;margin:6px 0 14px}h2{font-size:17px;margin:22px 0 8px}h3{font-size:15px;margin:10px 0 4px}
table{border-collapse:collapse;background:#fff;width:100%;box-shadow:0 1px 2px #0001}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid #e4e9ef;vertical-align:top}th{background:#eef2f6;font-weight:600}
td.image{font-family:ui-monospace,monospace;font-size:12px;word-break:break-all}
.tiles{display:flex;flex-wrap:wrap;gap:12px}.tile{background:#fff;padding:12px 16px;min-width:120px;box-shadow:0 1px 2px #0001;border-top:3px solid #8aa}
.tile b{display:block;font-size:26px}.tile.good{border-color:#2e9d5b}.tile.bad{border-color:#c8372d}.tile.warn{border-color:#d99a1b}
.good{color:#237a46}.bad{color:#b3261e}.warn{color:#a86c00}.muted{color:#6b7785}
.bar{background:#e4e9ef;height:10px;max-width:480px}.bar div{background:#2e9d5b;height:10px}
section.deployment{background:#fff;padding:8px 16px 4px;margin-bottom:12px;box-shadow:0 1px 2px #0001}
.charts{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}.charts h3{width:100%}
figure{margin:0;background:#fff;padding:6px;box-shadow:0 1px 2px #0001}figcaption{font-size:12px;color:#6b7785}
svg{width:420px;height:160px}svg text{font-size:10px;fill:#6b7785}.axis{stroke:#c9d4e0}
polyline{fill:none;stroke-width:1.6}.line0{stroke:#2f6fdb}.line1{stroke:#d9531e}.legend0,.dot0{fill:#2f6fdb}.legend1,.dot1{fill:#d9531e}
form.login{display:flex;gap:10px;align-items:end;margin:20px 0}form.login input{padding:6px;width:340px}
button{padding:7px 14px;background:#2f6fdb;color:#fff;border:0;cursor:pointer}
code{font-family:ui-monospace,monospace;font-size:12px}
"#;

/// A whole page with the navigation, `current` marking where the reader is.
fn page(title: &str, current: &str, body: &str) -> String {
    let link = |href: &str, name: &str, label: &str| {
        let on = if name == current { " class=\"on\"" } else { "" };
        format!(r#"<a href="{href}"{on}>{label}</a>"#)
    };
    let nav = if current.is_empty() {
        r#"<nav><span class="brand">Edgefleet</span></nav>"#.to_owned()
    } else {
        format!(
            r#"<nav><span class="brand">Edgefleet</span>{}{}{}{}<a class="out" href="/ui/logout">Sign out</a></nav>"#,
            link("/ui/", "overview", "Overview"),
            link("/ui/devices", "devices", "Devices"),
            link("/ui/deployments", "deployments", "Deployments"),
            link("/ui/models", "models", "Models"),
        )
    };
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width"><title>{} · Edgefleet</title><style>{STYLE}</style></head><body>{nav}<main>{body}</main></body></html>"#,
        esc(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_for_html() {
        assert_eq!(
            esc(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn a_chart_draws_each_line_scaled_into_its_box() {
        let points = [(1_000, 0.0), (2_000, 5.0), (3_000, 10.0)];
        let svg = chart("requests/s", &[("rate", &points)]);
        assert!(
            svg.contains(r#"<polyline class="line0" points="34.0,142.0 223.0,77.0 412.0,12.0">"#),
            "{svg}"
        );
        assert!(svg.contains(">10.00<"), "the scale's top: {svg}");
    }
}
