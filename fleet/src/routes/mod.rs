//! The HTTP API (`/v1/...`). Every route is one row of [`endpoints::ENDPOINTS`]: its method,
//! path, the least [`Role`](edgefleet_common::fleet_api::Role) that may call it and, for a
//! change, the record it changes (for the audit log). The router is built from that table
//! only, so a route cannot exist without a role. `access` checks each request's token and
//! role and keeps the audit log; `handlers` and `tokens` are thin calls into the domain layer.
//! [`status`] is the one place errors become status codes.

mod access;
pub mod endpoints;
mod handlers;
mod tokens;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use edgefleet_common::fleet_api::ErrorBody;

use crate::domain::{Fleet, Tokens};
use crate::error::FleetError;

/// Largest request body: an ONNX model being registered.
const MAX_BODY_BYTES: usize = 2 << 30;

#[derive(Debug, Clone)]
struct Api {
    fleet: Arc<Fleet>,
    tokens: Arc<Tokens>,
}

/// The API's router over `fleet`, for requests whose tokens `tokens` recognises.
pub fn router(fleet: Arc<Fleet>, tokens: Arc<Tokens>) -> Router {
    let api = Api { fleet, tokens };
    let mut router = Router::new();
    for (endpoint, handler) in endpoints::routed() {
        router = router.route(endpoint.path, access::guarded(&api, endpoint, handler));
    }
    router
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(api)
}

/// The HTTP status of each error.
pub fn status(error: &FleetError) -> StatusCode {
    match error {
        FleetError::Invalid(_)
        | FleetError::Condition(_)
        | FleetError::Render(_)
        | FleetError::Name(_)
        | FleetError::DeviceRefused { .. } => StatusCode::BAD_REQUEST,
        FleetError::NotFound(_) => StatusCode::NOT_FOUND,
        FleetError::Conflict(_) => StatusCode::CONFLICT,
        FleetError::Package(
            crate::package::PackageError::Sample(_) | crate::package::PackageError::NoSample(_),
        ) => StatusCode::BAD_REQUEST,
        FleetError::Package(_) | FleetError::BrokerLogin(_) => StatusCode::BAD_GATEWAY,
        FleetError::DeviceTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        FleetError::Broker(_) => StatusCode::SERVICE_UNAVAILABLE,
        FleetError::Store(_)
        | FleetError::Secrets(_)
        | FleetError::File { .. }
        | FleetError::Task(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error as the API answers it.
#[derive(Debug)]
struct ApiError(FleetError);

impl From<FleetError> for ApiError {
    fn from(e: FleetError) -> Self {
        Self(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = status(&self.0);
        if code.is_server_error() {
            tracing::error!(error = %self.0, "request failed");
        }
        let body = ErrorBody {
            error: self.0.to_string(),
        };
        (code, Json(body)).into_response()
    }
}

type Answer<T> = Result<Json<T>, ApiError>;
