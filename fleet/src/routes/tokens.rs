//! `/v1/tokens` (admin only) and `/v1/audit`: thin calls into the domain layer.

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use edgefleet_common::fleet_api::{
    AuditEntry, AuditQuery, Deleted, TokenCreated, TokenRequest, TokenView,
};

use super::{Answer, Api};
use crate::domain::Caller;

pub(super) async fn list_tokens(State(api): State<Api>) -> Answer<Vec<TokenView>> {
    Ok(Json(api.fleet.tokens().await?))
}

pub(super) async fn create_token(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Json(request): Json<TokenRequest>,
) -> Answer<TokenCreated> {
    Ok(Json(
        api.fleet.create_token(&caller, &name, request.role).await?,
    ))
}

pub(super) async fn revoke_token(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> Answer<Deleted> {
    Ok(Json(api.fleet.revoke_token(&name).await?))
}

pub(super) async fn audit(
    State(api): State<Api>,
    Query(query): Query<AuditQuery>,
) -> Answer<Vec<AuditEntry>> {
    Ok(Json(api.fleet.audit(&query).await?))
}
