//! The pages about access: the tokens (admin only, with a revoke button each) and the audit
//! log of recent changes (every role).

use std::fmt::Write as _;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use edgefleet_common::fleet_api::{AuditQuery, Role};

use super::Ui;
use super::html::{ago, answer, esc, page};
use crate::domain::Caller;

/// Entries the audit page shows.
const AUDIT_PAGE: usize = 200;

pub(super) async fn tokens(State(ui): State<Ui>, Extension(caller): Extension<Caller>) -> Response {
    if caller.role < Role::Admin {
        let body = format!(
            r#"<p class="bad">token {} has role {}; the token list needs role admin</p>"#,
            esc(&caller.name),
            caller.role
        );
        return (
            StatusCode::FORBIDDEN,
            Html(page("Refused", Some(&caller), "", &body)),
        )
            .into_response();
    }
    answer(
        async {
            let mut rows = String::new();
            for t in ui.fleet.tokens().await? {
                let revoke = if t.bootstrap {
                    r#"<span class="muted">bootstrap</span>"#.to_owned()
                } else {
                    format!(
                        r#"<form class="action" method="post" action="/ui/tokens/{}/revoke"><button type="submit">revoke</button></form>"#,
                        esc(&t.name)
                    )
                };
                let _ = write!(
                    rows,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{revoke}</td></tr>",
                    esc(&t.name),
                    t.role,
                    t.created_ms.map_or("-".to_owned(), |ms| ago(Some(ms))),
                    esc(t.created_by.as_deref().unwrap_or("-")),
                    ago(t.last_used_ms),
                );
            }
            let body = format!(
                r#"<h1>Tokens</h1><p class="muted">Create one with <code>edgefleet token create NAME --role viewer|operator|admin</code>.</p><table><tr><th>name</th><th>role</th><th>created</th><th>created by</th><th>last used</th><th></th></tr>{rows}</table>"#
            );
            Ok(page("Tokens", Some(&caller), "tokens", &body))
        }
        .await,
    )
}

pub(super) async fn audit(State(ui): State<Ui>, Extension(caller): Extension<Caller>) -> Response {
    answer(
        async {
            let query = AuditQuery {
                limit: Some(AUDIT_PAGE),
                ..AuditQuery::default()
            };
            let mut rows = String::new();
            for e in ui.fleet.audit(&query).await? {
                let class = if e.status < 400 { "" } else { " class=\"bad\"" };
                let short = |d: &Option<String>| {
                    d.as_deref()
                        .map_or("-".to_owned(), |d| d.chars().take(12).collect())
                };
                let _ = write!(
                    rows,
                    "<tr{class}><td>{}</td><td>{}</td><td>{}</td><td>{} <code>{}</code></td><td>{}</td><td>{}</td><td><code>{}</code></td><td><code>{}</code></td></tr>",
                    ago(Some(e.at_ms)),
                    esc(&e.token),
                    e.role,
                    esc(&e.method),
                    esc(&e.path),
                    esc(&e.object),
                    e.status,
                    short(&e.before),
                    short(&e.after),
                );
            }
            let body = format!(
                "<h1>Audit log</h1><table><tr><th>when</th><th>token</th><th>role</th><th>request</th><th>object</th><th>status</th><th>before</th><th>after</th></tr>{rows}</table>"
            );
            Ok(page("Audit log", Some(&caller), "audit", &body))
        }
        .await,
    )
}
