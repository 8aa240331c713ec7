//! The API's handlers, each a thin call into the domain layer (routes and roles are in
//! `endpoints`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use edgefleet_common::commands::CommandResult;
use edgefleet_common::fleet_api::{
    BundleQuery, Deleted, DeploymentRequest, DeploymentRevision, DeploymentSaved, DeploymentView,
    DeviceImport, DeviceRemoved, DeviceRequest, DeviceView, DevicesImported, FleetInfo,
    ManifestView, ModelDetails, ModelVersion, ModuleCommandRequest, Package, PackageRequest,
    ProfileRequest, RegisterModelQuery, RegistryRequest, RegistryView, RolloutStatus,
    TelemetryQuery,
};
use edgefleet_common::model_profile::ModelProfile;
use edgefleet_common::telemetry::TelemetryEnvelope;

use super::{Answer, Api, ApiError};
use crate::domain::{BundleFor, RolloutAction, TelemetryFilter};
use crate::error::FleetError;

fn version(version: &str) -> Result<u32, ApiError> {
    version.parse().map_err(|_| {
        ApiError(FleetError::invalid(format!(
            "model version {version:?} is not a number"
        )))
    })
}

pub(super) async fn fleet_info(State(api): State<Api>) -> Json<FleetInfo> {
    Json(api.fleet.info())
}

// Registries.

pub(super) async fn put_registry(
    State(api): State<Api>,
    Path(name): Path<String>,
    Json(request): Json<RegistryRequest>,
) -> Answer<RegistryView> {
    Ok(Json(api.fleet.put_registry(&name, request).await?))
}

pub(super) async fn delete_registry(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> Answer<Deleted> {
    Ok(Json(api.fleet.delete_registry(&name).await?))
}

pub(super) async fn list_registries(State(api): State<Api>) -> Answer<Vec<RegistryView>> {
    Ok(Json(api.fleet.registries().await?))
}

// Models.

pub(super) async fn register_model(
    State(api): State<Api>,
    Query(query): Query<RegisterModelQuery>,
    body: Bytes,
) -> Answer<ModelVersion> {
    Ok(Json(api.fleet.register_model(query, body.to_vec()).await?))
}

pub(super) async fn list_models(State(api): State<Api>) -> Answer<Vec<ModelVersion>> {
    Ok(Json(api.fleet.models().await?))
}

pub(super) async fn package_model(
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

pub(super) async fn profile_model(
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

pub(super) async fn show_model(
    State(api): State<Api>,
    Path((name, v)): Path<(String, String)>,
) -> Answer<ModelDetails> {
    Ok(Json(api.fleet.model_details(&name, version(&v)?).await?))
}

/// The registered ONNX file.
pub(super) async fn model_file(
    State(api): State<Api>,
    Path((name, v)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let bytes = api.fleet.model_file(&name, version(&v)?).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

pub(super) async fn delete_model(
    State(api): State<Api>,
    Path((name, v)): Path<(String, String)>,
) -> Answer<Deleted> {
    Ok(Json(api.fleet.delete_model(&name, version(&v)?).await?))
}

// Devices.

pub(super) async fn put_device(
    State(api): State<Api>,
    Path(id): Path<String>,
    Json(request): Json<DeviceRequest>,
) -> Answer<DeviceView> {
    Ok(Json(api.fleet.put_device(&id, request).await?))
}

pub(super) async fn import_devices(
    State(api): State<Api>,
    Json(devices): Json<Vec<DeviceImport>>,
) -> Answer<DevicesImported> {
    Ok(Json(api.fleet.import_devices(devices).await?))
}

pub(super) async fn list_devices(State(api): State<Api>) -> Answer<Vec<DeviceView>> {
    Ok(Json(api.fleet.devices().await?))
}

pub(super) async fn remove_device(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Answer<DeviceRemoved> {
    Ok(Json(api.fleet.remove_device(&id).await?))
}

pub(super) async fn show_device(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Answer<DeviceView> {
    Ok(Json(api.fleet.device(&id).await?))
}

pub(super) async fn device_config(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<String, ApiError> {
    Ok(api.fleet.device_config(&id).await?)
}

pub(super) async fn rotate_credentials(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Answer<edgefleet_common::fleet_api::CredentialsRotation> {
    Ok(Json(api.fleet.rotate_credentials(&id).await?))
}

pub(super) async fn device_command(
    State(api): State<Api>,
    Path(id): Path<String>,
    Json(request): Json<ModuleCommandRequest>,
) -> Answer<CommandResult> {
    Ok(Json(api.fleet.command(&id, request).await?))
}

// Deployments, their manifests and rollouts.

pub(super) async fn put_deployment(
    State(api): State<Api>,
    Path(name): Path<String>,
    Json(request): Json<DeploymentRequest>,
) -> Answer<DeploymentSaved> {
    Ok(Json(api.fleet.put_deployment(&name, request).await?))
}

pub(super) async fn list_deployments(State(api): State<Api>) -> Answer<Vec<DeploymentView>> {
    Ok(Json(api.fleet.deployments().await?))
}

pub(super) async fn show_deployment(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> Answer<DeploymentView> {
    Ok(Json(api.fleet.deployment_view(&name).await?))
}

pub(super) async fn deployment_history(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> Answer<Vec<DeploymentRevision>> {
    Ok(Json(api.fleet.deployment_history(&name).await?))
}

pub(super) async fn delete_deployment(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> Answer<Deleted> {
    Ok(Json(api.fleet.delete_deployment(&name).await?))
}

pub(super) async fn show_manifest(
    State(api): State<Api>,
    Path(device): Path<String>,
) -> Answer<ManifestView> {
    Ok(Json(api.fleet.manifest(&device).await?))
}

pub(super) async fn rollout_action(
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

pub(super) async fn rollout_status(
    State(api): State<Api>,
    Path(deployment): Path<String>,
) -> Answer<RolloutStatus> {
    Ok(Json(api.fleet.rollout(&deployment).await?))
}

// Telemetry.

/// Records one telemetry answer holds at most.
const TELEMETRY_PAGE_MAX: usize = 10_000;

pub(super) async fn telemetry(
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
pub(super) async fn bundle(
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
pub(super) async fn import_telemetry(
    State(api): State<Api>,
    body: Bytes,
) -> Answer<edgefleet_common::outbox_export::SignedReceipt> {
    Ok(Json(api.fleet.import_telemetry(&body).await?))
}
