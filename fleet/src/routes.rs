//! The HTTP API (`/v1/...`): routes by resource, each a thin call into the domain layer, behind
//! the admin token. [`status`] is the one place errors become status codes.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use edgefleet_common::commands::CommandResult;
use edgefleet_common::fleet_api::{
    BundleQuery, Deleted, DeploymentRequest, DeploymentRevision, DeploymentSaved, DeploymentView,
    DeviceImport, DeviceRemoved, DeviceRequest, DeviceView, DevicesImported, ErrorBody, FleetInfo,
    ManifestView, ModelDetails, ModelVersion, ModuleCommandRequest, Package, PackageRequest,
    ProfileRequest, RegisterModelQuery, RegistryRequest, RegistryView, RolloutStatus,
    TelemetryQuery,
};
use edgefleet_common::model_profile::ModelProfile;
use edgefleet_common::telemetry::TelemetryEnvelope;

use sha2::{Digest as _, Sha256};

use crate::domain::{BundleFor, Fleet, RolloutAction, TelemetryFilter};
use crate::error::FleetError;

/// Largest request body: an ONNX model being registered.
const MAX_BODY_BYTES: usize = 2 << 30;

#[derive(Debug, Clone)]
struct Api {
    fleet: Arc<Fleet>,
    /// SHA-256 of the admin token (compared digest to digest).
    token_sha256: [u8; 32],
}

/// The API's router over `fleet`, for requests that carry `token`.
pub fn router(fleet: Arc<Fleet>, token: &str) -> Router {
    let api = Api {
        fleet,
        token_sha256: Sha256::digest(token.as_bytes()).into(),
    };
    Router::new()
        .route("/v1/fleet", get(fleet_info))
        .route("/v1/registries", get(list_registries))
        .route(
            "/v1/registries/{name}",
            put(put_registry).delete(delete_registry),
        )
        .route("/v1/models", get(list_models).post(register_model))
        .route(
            "/v1/models/{name}/{version}",
            get(show_model).delete(delete_model),
        )
        .route("/v1/models/{name}/{version}/onnx", get(model_file))
        .route("/v1/models/{name}/{version}/package", post(package_model))
        .route("/v1/models/{name}/{version}/profile", post(profile_model))
        .route("/v1/devices", get(list_devices))
        .route(
            "/v1/devices/{id}",
            put(put_device).get(show_device).delete(remove_device),
        )
        .route("/v1/device-imports", post(import_devices))
        .route("/v1/devices/{id}/config", get(device_config))
        .route("/v1/devices/{id}/commands", post(device_command))
        .route(
            "/v1/devices/{id}/rotate-credentials",
            post(rotate_credentials),
        )
        .route("/v1/deployments", get(list_deployments))
        .route(
            "/v1/deployments/{name}",
            get(show_deployment)
                .put(put_deployment)
                .delete(delete_deployment),
        )
        .route("/v1/manifests/{device}", get(show_manifest))
        .route("/v1/deployments/{name}/history", get(deployment_history))
        .route("/v1/rollouts/{deployment}", get(rollout_status))
        .route("/v1/rollouts/{deployment}/{action}", post(rollout_action))
        .route("/v1/telemetry/{device}", get(telemetry))
        .route("/v1/bundle", get(bundle))
        .route("/v1/telemetry-imports", post(import_telemetry))
        .layer(middleware::from_fn_with_state(api.clone(), authorize))
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
        FleetError::Package(_) => StatusCode::BAD_GATEWAY,
        FleetError::DeviceTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        FleetError::Broker(_) => StatusCode::SERVICE_UNAVAILABLE,
        FleetError::BrokerLogin(_) => StatusCode::BAD_GATEWAY,
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

async fn authorize(State(api): State<Api>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|t| Sha256::digest(t.as_bytes()).as_slice() == api.token_sha256) {
        return next.run(request).await;
    }
    let body = ErrorBody {
        error: "missing or wrong admin token: set EDGEFLEET_TOKEN (see <data-dir>/admin-token on the fleet host)".into(),
    };
    (StatusCode::UNAUTHORIZED, Json(body)).into_response()
}

fn version(version: &str) -> Result<u32, ApiError> {
    version.parse().map_err(|_| {
        ApiError(FleetError::invalid(format!(
            "model version {version:?} is not a number"
        )))
    })
}

async fn fleet_info(State(api): State<Api>) -> Json<FleetInfo> {
    Json(api.fleet.info())
}

// Registries.

async fn put_registry(
    State(api): State<Api>,
    Path(name): Path<String>,
    Json(request): Json<RegistryRequest>,
) -> Answer<RegistryView> {
    Ok(Json(api.fleet.put_registry(&name, request).await?))
}

async fn delete_registry(State(api): State<Api>, Path(name): Path<String>) -> Answer<Deleted> {
    Ok(Json(api.fleet.delete_registry(&name).await?))
}

async fn list_registries(State(api): State<Api>) -> Answer<Vec<RegistryView>> {
    Ok(Json(api.fleet.registries().await?))
}

// Models.

async fn register_model(
    State(api): State<Api>,
    Query(query): Query<RegisterModelQuery>,
    body: Bytes,
) -> Answer<ModelVersion> {
    Ok(Json(api.fleet.register_model(query, body.to_vec()).await?))
}

async fn list_models(State(api): State<Api>) -> Answer<Vec<ModelVersion>> {
    Ok(Json(api.fleet.models().await?))
}

async fn package_model(
    State(api): State<Api>,
    Path((name, v)): Path<(String, String)>,
    Json(request): Json<PackageRequest>,
) -> Answer<Package> {
    Ok(Json(
        api.fleet
            .package_model(&name, version(&v)?, request)
            .await?,
    ))
}

async fn profile_model(
    State(api): State<Api>,
    Path((name, v)): Path<(String, String)>,
    Json(request): Json<ProfileRequest>,
) -> Answer<ModelProfile> {
    Ok(Json(
        api.fleet
            .profile_model(&name, version(&v)?, request)
            .await?,
    ))
}

async fn show_model(
    State(api): State<Api>,
    Path((name, v)): Path<(String, String)>,
) -> Answer<ModelDetails> {
    Ok(Json(api.fleet.model_details(&name, version(&v)?).await?))
}

/// The registered ONNX file.
async fn model_file(
    State(api): State<Api>,
    Path((name, v)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let bytes = api.fleet.model_file(&name, version(&v)?).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

async fn delete_model(
    State(api): State<Api>,
    Path((name, v)): Path<(String, String)>,
) -> Answer<Deleted> {
    Ok(Json(api.fleet.delete_model(&name, version(&v)?).await?))
}

// Devices.

async fn put_device(
    State(api): State<Api>,
    Path(id): Path<String>,
    Json(request): Json<DeviceRequest>,
) -> Answer<DeviceView> {
    Ok(Json(api.fleet.put_device(&id, request).await?))
}

async fn import_devices(
    State(api): State<Api>,
    Json(devices): Json<Vec<DeviceImport>>,
) -> Answer<DevicesImported> {
    Ok(Json(api.fleet.import_devices(devices).await?))
}

async fn list_devices(State(api): State<Api>) -> Answer<Vec<DeviceView>> {
    Ok(Json(api.fleet.devices().await?))
}

async fn remove_device(State(api): State<Api>, Path(id): Path<String>) -> Answer<DeviceRemoved> {
    Ok(Json(api.fleet.remove_device(&id).await?))
}

async fn show_device(State(api): State<Api>, Path(id): Path<String>) -> Answer<DeviceView> {
    Ok(Json(api.fleet.device(&id).await?))
}

async fn device_config(State(api): State<Api>, Path(id): Path<String>) -> Result<String, ApiError> {
    Ok(api.fleet.device_config(&id).await?)
}

async fn rotate_credentials(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Answer<edgefleet_common::fleet_api::CredentialsRotation> {
    Ok(Json(api.fleet.rotate_credentials(&id).await?))
}

async fn device_command(
    State(api): State<Api>,
    Path(id): Path<String>,
    Json(request): Json<ModuleCommandRequest>,
) -> Answer<CommandResult> {
    Ok(Json(api.fleet.command(&id, request).await?))
}

// Deployments, their manifests and rollouts.

async fn put_deployment(
    State(api): State<Api>,
    Path(name): Path<String>,
    Json(request): Json<DeploymentRequest>,
) -> Answer<DeploymentSaved> {
    Ok(Json(api.fleet.put_deployment(&name, request).await?))
}

async fn list_deployments(State(api): State<Api>) -> Answer<Vec<DeploymentView>> {
    Ok(Json(api.fleet.deployments().await?))
}

async fn show_deployment(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> Answer<DeploymentView> {
    Ok(Json(api.fleet.deployment_view(&name).await?))
}

async fn deployment_history(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> Answer<Vec<DeploymentRevision>> {
    Ok(Json(api.fleet.deployment_history(&name).await?))
}

async fn delete_deployment(State(api): State<Api>, Path(name): Path<String>) -> Answer<Deleted> {
    Ok(Json(api.fleet.delete_deployment(&name).await?))
}

async fn show_manifest(State(api): State<Api>, Path(device): Path<String>) -> Answer<ManifestView> {
    Ok(Json(api.fleet.manifest(&device).await?))
}

async fn rollout_action(
    State(api): State<Api>,
    Path((deployment, action)): Path<(String, String)>,
) -> Answer<RolloutStatus> {
    let action = match action.as_str() {
        "pause" => RolloutAction::Pause,
        "resume" => RolloutAction::Resume,
        "abort" => RolloutAction::Abort,
        "rollback" => RolloutAction::Rollback,
        other => {
            return Err(FleetError::not_found(format!(
                "{other:?} is not a rollout action (pause, resume, abort, rollback)"
            ))
            .into());
        }
    };
    Ok(Json(api.fleet.rollout_action(&deployment, action).await?))
}

async fn rollout_status(
    State(api): State<Api>,
    Path(deployment): Path<String>,
) -> Answer<RolloutStatus> {
    Ok(Json(api.fleet.rollout(&deployment).await?))
}

// Telemetry.

/// Records one telemetry answer holds at most.
const TELEMETRY_PAGE_MAX: usize = 10_000;

async fn telemetry(
    State(api): State<Api>,
    Path(device): Path<String>,
    Query(query): Query<TelemetryQuery>,
) -> Answer<Vec<TelemetryEnvelope>> {
    let limit = query.limit.unwrap_or(20).min(TELEMETRY_PAGE_MAX);
    if query.is_tail() {
        return Ok(Json(api.fleet.telemetry(&device, limit).await?));
    }
    let filter = TelemetryFilter {
        after_seq: query.after.unwrap_or(0),
        since_ms: query.since_ms,
        until_ms: query.until_ms,
        module: query.module,
        kind: query.kind,
    };
    Ok(Json(
        api.fleet.query_telemetry(&device, &filter, limit).await?,
    ))
}

/// `GET /v1/bundle?device=ID` or `?deployment=NAME`: an offline bundle, streamed as it is
/// written; its length is known in advance, so clients can show progress.
async fn bundle(
    State(api): State<Api>,
    Query(query): Query<BundleQuery>,
) -> Result<Response, ApiError> {
    let target = match (query.device, query.deployment) {
        (Some(device), None) => BundleFor::Device(device),
        (None, Some(deployment)) => BundleFor::Deployment(deployment),
        _ => {
            return Err(FleetError::invalid("name either a device or a deployment").into());
        }
    };
    let contents = api.fleet.bundle_contents(&target).await?;
    let plan = crate::bundle::plan(contents).await?;
    let size = plan.size;
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-tar".to_owned()),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        axum::body::Body::from_stream(plan.stream()),
    )
        .into_response())
}

/// `POST /v1/telemetry-imports`: an outbox export (`edgefleet-agent outbox export`); answers
/// the signed receipt for `edgefleet-agent outbox trim`.
async fn import_telemetry(
    State(api): State<Api>,
    body: Bytes,
) -> Answer<edgefleet_common::outbox_export::SignedReceipt> {
    Ok(Json(api.fleet.import_telemetry(&body).await?))
}
