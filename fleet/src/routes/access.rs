//! Who may call a route, and the audit log of what they changed. Each route of the table runs
//! behind [`guarded`]: the request's bearer token names a [`Caller`] (401 when it names no
//! one); a role below the route's gets 403, with a message naming the token, its role and the
//! role needed, a warning in the service log and an entry in the audit log. A change then runs
//! inside an [`AuditScope`]: the commit that writes its record writes the entry in the same
//! transaction; a change that commits nothing (it failed, changed nothing, or is a module
//! command) gets its entry once answered.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequestParts as _, RawPathParams, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use edgefleet_common::fleet_api::ErrorBody;

use super::endpoints::{Changes, Endpoint};
use super::{Api, ApiError};
use crate::store::audit::{AuditScope, audited};

/// `handler` behind the token and role check of `endpoint`, and its audit.
pub(super) fn guarded(
    api: &Api,
    endpoint: Endpoint,
    handler: MethodRouter<Api>,
) -> MethodRouter<Api> {
    handler.route_layer(middleware::from_fn_with_state(
        (api.clone(), Arc::new(endpoint)),
        guard,
    ))
}

fn refusal(status: StatusCode, error: String) -> Response {
    (status, Json(ErrorBody { error })).into_response()
}

async fn guard(
    State((api, endpoint)): State<(Api, Arc<Endpoint>)>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let caller = match given {
        Some(token) => api.tokens.caller(&api.fleet, token).await,
        None => Ok(None),
    };
    let caller = match caller {
        Ok(Some(caller)) => caller,
        Ok(None) => {
            tracing::warn!(method = %endpoint.method, %path, "refused: no token, or one the fleet does not know (wrong or revoked)");
            return refusal(
                StatusCode::UNAUTHORIZED,
                "missing, wrong or revoked token: set EDGEFLEET_TOKEN to a token from `edgefleet token create` (the first admin's is <data-dir>/admin-token on the fleet host)".into(),
            );
        }
        Err(e) => return ApiError(e).into_response(),
    };
    let (mut parts, body) = request.into_parts();
    let params = RawPathParams::from_request_parts(&mut parts, &())
        .await
        .ok();
    let scope = endpoint.changes.map(|changes| {
        let (kind, name) = object(changes, params.as_ref());
        Arc::new(AuditScope::new(
            (caller.name.clone(), caller.role),
            (
                endpoint.method.to_string(),
                endpoint.path.to_owned(),
                path.clone(),
            ),
            kind,
            name,
        ))
    });
    if caller.role < endpoint.role {
        tracing::warn!(token = %caller.name, role = %caller.role, needed = %endpoint.role, method = %endpoint.method, %path, "refused: the token's role is not enough");
        if let Some(scope) = &scope {
            api.fleet
                .audit_unchanged(scope, StatusCode::FORBIDDEN.as_u16())
                .await;
        }
        return refusal(
            StatusCode::FORBIDDEN,
            format!(
                "token {} has role {}; {} {} needs role {} (an admin can create a token with it: edgefleet token create NAME --role {})",
                caller.name,
                caller.role,
                endpoint.method,
                endpoint.path,
                endpoint.role,
                endpoint.role
            ),
        );
    }
    parts.extensions.insert(caller.clone());
    let request = Request::from_parts(parts, body);
    let Some(scope) = scope else {
        return next.run(request).await;
    };
    let response = audited(scope.clone(), next.run(request)).await;
    if !scope.recorded() {
        api.fleet
            .audit_unchanged(&scope, response.status().as_u16())
            .await;
    }
    tracing::info!(token = %caller.name, method = %endpoint.method, %path, status = response.status().as_u16(), "change requested");
    response
}

/// The record `changes` names for this request's path parameters.
fn object(changes: Changes, params: Option<&RawPathParams>) -> (&'static str, Option<String>) {
    let param = |wanted: &str| {
        params.and_then(|p| {
            p.iter()
                .find(|(name, _)| *name == wanted)
                .map(|(_, value)| value.to_owned())
        })
    };
    match changes {
        Changes::Named { kind, param: name } => (kind, param(name)),
        Changes::ModelVersion => {
            let name = param("name").unwrap_or_default();
            let version = param("version").unwrap_or_default();
            // As the domain keys model versions (`models.rs`).
            let key = match version.parse::<u32>() {
                Ok(v) => format!("{name}/{v:010}"),
                Err(_) => format!("{name}/{version}"),
            };
            (crate::store::kind::MODEL, Some(key))
        }
        Changes::Kind(kind) => (kind, None),
    }
}
