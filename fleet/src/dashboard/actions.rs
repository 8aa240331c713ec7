//! What the dashboard can change: a staged rollout's pause, resume, abort and roll-back
//! (operator), and revoking a token (admin). A button shows only to a role that may press it;
//! the server checks the role again (403 otherwise) and keeps the audit log as the API does.

use std::future::Future;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use edgefleet_common::fleet_api::{Role, StagedState};

use super::Ui;
use super::html::{esc, page};
use crate::domain::{Caller, RolloutAction};
use crate::error::FleetError;
use crate::store::audit::{AuditScope, audited};
use crate::store::kind;

/// The actions an operator may take on a staged rollout in `state`.
pub(super) fn rollout_actions(state: StagedState) -> &'static [&'static str] {
    match state {
        StagedState::Running => &["pause", "abort", "rollback"],
        StagedState::Paused => &["resume", "abort", "rollback"],
        StagedState::Aborted => &["resume", "rollback"],
        _ => &[],
    }
}

/// The buttons of a staged rollout's actions, for a role that may take them.
pub(super) fn rollout_buttons(caller: &Caller, deployment: &str, state: StagedState) -> String {
    if caller.role < Role::Operator {
        return String::new();
    }
    rollout_actions(state)
        .iter()
        .map(|action| {
            format!(
                r#"<form class="action" method="post" action="/ui/rollouts/{}/{action}"><button type="submit">{action}</button></form>"#,
                esc(deployment)
            )
        })
        .collect()
}

/// Runs `change` for `caller` if its role is at least `needed`, inside the audit scope of
/// `route` on `path`, changing `kind`/`name`; then back to `back`.
async fn change<T>(
    ui: &Ui,
    caller: &Caller,
    needed: Role,
    (route, path): (&str, String),
    (kind, name): (&'static str, &str),
    back: &str,
    change: impl Future<Output = Result<T, FleetError>>,
) -> Response {
    let scope = Arc::new(AuditScope::new(
        (caller.name.clone(), caller.role),
        ("POST".to_owned(), route.to_owned(), path.clone()),
        kind,
        Some(name.to_owned()),
    ));
    if caller.role < needed {
        tracing::warn!(token = %caller.name, role = %caller.role, %needed, %path, "dashboard: refused, the token's role is not enough");
        ui.fleet
            .audit_unchanged(&scope, StatusCode::FORBIDDEN.as_u16())
            .await;
        let message = format!(
            "token {} has role {}; this needs role {needed}",
            caller.name, caller.role
        );
        let body = format!(r#"<p class="bad">{}</p>"#, esc(&message));
        return (
            StatusCode::FORBIDDEN,
            Html(page("Refused", Some(caller), "", &body)),
        )
            .into_response();
    }
    let result = audited(scope.clone(), change).await;
    let status = match &result {
        Ok(_) => StatusCode::SEE_OTHER,
        Err(e) => crate::routes::status(e),
    };
    if !scope.recorded() {
        ui.fleet.audit_unchanged(&scope, status.as_u16()).await;
    }
    match result {
        Ok(_) => Redirect::to(back).into_response(),
        Err(e) => super::html::answer(Err(e)),
    }
}

pub(super) async fn rollout(
    State(ui): State<Ui>,
    Extension(caller): Extension<Caller>,
    Path((deployment, action)): Path<(String, String)>,
) -> Response {
    let path = format!("/ui/rollouts/{deployment}/{action}");
    let action = match action.as_str() {
        "pause" => RolloutAction::Pause,
        "resume" => RolloutAction::Resume,
        "abort" => RolloutAction::Abort,
        "rollback" => RolloutAction::Rollback,
        other => {
            return super::html::answer(Err(FleetError::not_found(format!(
                "{other:?} is not a rollout action (pause, resume, abort, rollback)"
            ))));
        }
    };
    let work = ui.fleet.rollout_action(&deployment, action);
    change(
        &ui,
        &caller,
        Role::Operator,
        ("/ui/rollouts/{deployment}/{action}", path),
        (kind::ROLLOUT, &deployment),
        "/ui/deployments",
        work,
    )
    .await
}

pub(super) async fn revoke_token(
    State(ui): State<Ui>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Response {
    let path = format!("/ui/tokens/{name}/revoke");
    let work = ui.fleet.revoke_token(&name);
    change(
        &ui,
        &caller,
        Role::Admin,
        ("/ui/tokens/{name}/revoke", path),
        (kind::TOKEN, &name),
        "/ui/tokens",
        work,
    )
    .await
}
