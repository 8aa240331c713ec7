//! What every dashboard page shares: the page around a body (navigation and the inline style
//! sheet, nothing fetched from elsewhere), the error page, text escaped for HTML and times as
//! "how long ago".

use axum::response::{Html, IntoResponse, Response};

use edgefleet_common::fleet_api::Role;

use crate::domain::Caller;
use crate::error::FleetError;

/// A page, or the error that kept it from rendering.
pub(super) fn answer(result: Result<String, FleetError>) -> Response {
    match result {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            let status = crate::routes::status(&e);
            let body = page(
                "Error",
                None,
                "",
                &format!(r#"<p class="bad">{}</p>"#, esc(&e.to_string())),
            );
            (status, Html(body)).into_response()
        }
    }
}

/// How long ago `ms` was.
pub(super) fn ago(ms: Option<u64>) -> String {
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
pub(super) fn esc(text: &str) -> String {
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
nav .out{margin-left:auto;color:#c9d4e0}
form.action{display:inline;margin-right:6px}form.action button{padding:3px 10px}
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

/// A whole page with the navigation for `caller` (the signed-in token's name and role, and
/// the pages its role may see), `current` marking where the reader is.
pub(super) fn page(title: &str, caller: Option<&Caller>, current: &str, body: &str) -> String {
    let link = |href: &str, name: &str, label: &str| {
        let on = if name == current { " class=\"on\"" } else { "" };
        format!(r#"<a href="{href}"{on}>{label}</a>"#)
    };
    let nav = match caller {
        None => r#"<nav><span class="brand">Edgefleet</span></nav>"#.to_owned(),
        Some(caller) => format!(
            r#"<nav><span class="brand">Edgefleet</span>{}{}{}{}{}{}<span class="out" id="signed-in">{} ({})</span><a href="/ui/logout">Sign out</a></nav>"#,
            link("/ui/", "overview", "Overview"),
            link("/ui/devices", "devices", "Devices"),
            link("/ui/deployments", "deployments", "Deployments"),
            link("/ui/models", "models", "Models"),
            link("/ui/audit", "audit", "Audit log"),
            if caller.role >= Role::Admin {
                link("/ui/tokens", "tokens", "Tokens")
            } else {
                String::new()
            },
            esc(&caller.name),
            caller.role,
        ),
    };
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width"><title>{} · Edgefleet</title><style>{STYLE}</style></head><body>{nav}<main>{body}</main></body></html>"#,
        esc(title)
    )
}
