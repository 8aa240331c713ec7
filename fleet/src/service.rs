//! `edgefleet serve`: the fleet service. An HTTP API for the CLI behind an admin token, its own
//! store, the fleet's signing key (created on first start), and an MQTT session to the
//! fleet's broker: it publishes each device's signed manifest (retained) and ingests reported
//! state and telemetry.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use edgefleet_common::agent_config::AgentConfig;
use edgefleet_common::commands::{CommandOutcome, CommandRequest, CommandResult};
use edgefleet_common::reported::ReportedState;
use edgefleet_common::sealing::{DeviceIdentity, DevicePublicKey};
use edgefleet_common::signing::FleetSigningKey;
use edgefleet_common::telemetry::TelemetryEnvelope;
use edgefleet_common::topics::{DeviceTopic, DeviceTopics, FleetTopics, check_name};
use edgefleet_onnx::OnnxRuntime;
use edgefleet_transport::{BrokerUrl, Login, TlsFiles, now_ms};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::api::{
    DeploymentRequest, DeviceRequest, ModuleCommandRequest, PackageRequest, RegistryRequest,
};
use crate::condition::Condition;
use crate::records::{
    Deployment, Device, DeviceStatus, ModelVersion, Package, Registry, RenderedManifest,
};
use crate::render::{
    self, Catalog, Draft, RegistryAccess, Render, RenderError, SIGNING_BATCH, render_device,
    resolve_model,
};
use crate::rollout;
use crate::store::{Batch, FleetStore, kind};
use crate::{embedded_broker, package};

/// How `edgefleet serve` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub fleet: String,
    /// The fleet's broker; `None` starts the embedded broker on `embedded_broker_listen`.
    pub mqtt_url: Option<String>,
    pub mqtt_username: String,
    pub mqtt_password: String,
    /// CA of an `mqtts://` broker (empty: the system roots).
    pub mqtt_ca_file: String,
    pub embedded_broker_listen: SocketAddr,
    /// The admin token; when absent, one is created in `<data_dir>/admin-token`.
    pub token: Option<String>,
    pub onnx_runtime_library: PathBuf,
    /// The broker URL written into device configurations (default: `mqtt_url`).
    pub device_mqtt_url: Option<String>,
}

/// An API error: a status and one line for the operator.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    fn bad(message: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, message.into())
    }
    fn not_found(message: impl Into<String>) -> Self {
        Self(StatusCode::NOT_FOUND, message.into())
    }
    fn conflict(message: impl Into<String>) -> Self {
        Self(StatusCode::CONFLICT, message.into())
    }
    fn internal(message: impl std::fmt::Display) -> Self {
        Self(StatusCode::INTERNAL_SERVER_ERROR, message.to_string())
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::internal(e)
    }
}

impl From<RenderError> for ApiError {
    fn from(e: RenderError) -> Self {
        Self::bad(e.to_string())
    }
}

type ApiResult = Result<axum::Json<Value>, ApiError>;

/// The devices a change can affect.
#[derive(Debug)]
enum Affected {
    All,
    Devices(BTreeSet<String>),
}

struct Fleet {
    options: ServeOptions,
    store: FleetStore,
    key: FleetSigningKey,
    /// The fleet's own age identity: registry and MQTT passwords are sealed to it at rest.
    secrets: DeviceIdentity,
    token: String,
    runtime: OnnxRuntime,
    topics: FleetTopics,
    mqtt: AsyncClient,
    /// The broker the service uses (and devices, unless `device_mqtt_url` says otherwise).
    mqtt_url: String,
    /// Who may connect to the embedded broker (absent with an external broker).
    broker_credentials: Option<embedded_broker::Credentials>,
    /// Serializes changes so renders never interleave.
    writes: tokio::sync::Mutex<()>,
    /// Commands sent to devices, waiting for their result, by request id.
    pending_commands:
        std::sync::Mutex<BTreeMap<String, tokio::sync::oneshot::Sender<CommandResult>>>,
}

/// Reads a 0600 key file, or creates it with `make` on first start.
fn key_file(path: &Path, make: impl FnOnce() -> String) -> anyhow::Result<String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Ok(text) = std::fs::read_to_string(path) {
        return Ok(text.trim().to_owned());
    }
    let value = make();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
    std::io::Write::write_all(&mut file, format!("{value}\n").as_bytes())?;
    file.sync_all()?;
    Ok(value)
}

/// Runs the service until `shutdown` resolves.
pub async fn serve(
    options: ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    edgefleet_transport::install_crypto_provider();
    check_name("fleet name", &options.fleet)?;
    std::fs::create_dir_all(options.data_dir.join("models"))
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", options.data_dir.display()))?;
    let key_text = key_file(&options.data_dir.join("fleet-signing.key"), || {
        FleetSigningKey::generate().to_base64()
    })?;
    let key = FleetSigningKey::from_base64(&key_text)?;
    let secrets: DeviceIdentity = key_file(&options.data_dir.join("fleet-secrets.key"), || {
        DeviceIdentity::generate().to_secret_string()
    })?
    .parse()?;
    let token = match &options.token {
        Some(t) => t.clone(),
        None => key_file(&options.data_dir.join("admin-token"), || {
            hex::encode(rand::random::<[u8; 24]>())
        })?,
    };
    let store = FleetStore::open(&options.data_dir.join("fleet.redb"))?;
    let runtime = OnnxRuntime::load(&options.onnx_runtime_library)?;

    let (mqtt_url, username, password, broker_credentials) = match &options.mqtt_url {
        Some(url) => (
            url.clone(),
            options.mqtt_username.clone(),
            options.mqtt_password.clone(),
            None,
        ),
        None => {
            let user = "edgefleet-fleet".to_owned();
            let password = hex::encode(rand::random::<[u8; 24]>());
            let credentials = embedded_broker::Credentials::default();
            if let Ok(mut c) = credentials.write() {
                c.insert(user.clone(), password.clone());
            }
            embedded_broker::start(options.embedded_broker_listen, credentials.clone())?;
            let url = format!("mqtt://{}", options.embedded_broker_listen);
            tracing::info!(%url, "embedded MQTT broker started");
            (url, user, password, Some(credentials))
        }
    };
    let broker: BrokerUrl = mqtt_url
        .parse()
        .map_err(|e| anyhow::anyhow!("--mqtt-url {e}"))?;
    let login = Login {
        client_id: format!("edgefleet-fleet-{}", options.fleet),
        username,
        password,
        keep_alive: Duration::from_secs(30),
    };
    let tls = TlsFiles {
        ca_file: options.mqtt_ca_file.clone(),
        ..TlsFiles::default()
    };
    let mut mqtt_options = edgefleet_transport::mqtt_options(&broker, &login, &tls)?;
    mqtt_options.set_clean_session(true);
    let (mqtt, eventloop) = AsyncClient::new(mqtt_options, 1024);
    let fleet = Arc::new(Fleet {
        topics: FleetTopics::new(&options.fleet)?,
        options: options.clone(),
        store,
        key,
        secrets,
        token,
        runtime,
        mqtt,
        mqtt_url,
        broker_credentials,
        writes: tokio::sync::Mutex::new(()),
        pending_commands: std::sync::Mutex::new(BTreeMap::new()),
    });
    fleet.refresh_broker_credentials()?;
    tokio::spawn(ingest(fleet.clone(), eventloop));

    let app = router(fleet.clone());
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", options.listen))?;
    tracing::info!(listen = %options.listen, fleet = %options.fleet, public_key = %fleet.key.public_key(), "fleet service ready");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

fn router(fleet: Arc<Fleet>) -> Router {
    Router::new()
        .route("/v1/fleet", get(fleet_info))
        .route("/v1/registries", get(list_registries))
        .route("/v1/registries/{name}", put(put_registry))
        .route("/v1/models", get(list_models).post(register_model))
        .route(
            "/v1/models/{name}/{version}",
            axum::routing::delete(delete_model),
        )
        .route("/v1/models/{name}/{version}/package", post(package_model))
        .route("/v1/devices", get(list_devices))
        .route("/v1/devices/{id}", put(put_device).get(show_device))
        .route("/v1/devices/{id}/config", get(device_config))
        .route("/v1/deployments", get(list_deployments))
        .route(
            "/v1/deployments/{name}",
            put(put_deployment).delete(delete_deployment),
        )
        .route("/v1/manifests/{device}", get(show_manifest))
        .route("/v1/rollouts/{deployment}", get(rollout_status))
        .route("/v1/telemetry/{device}", get(telemetry))
        .route("/v1/devices/{id}/commands", post(device_command))
        .layer(middleware::from_fn_with_state(fleet.clone(), authorize))
        .layer(DefaultBodyLimit::max(2 << 30))
        .with_state(fleet)
}

async fn authorize(State(fleet): State<Arc<Fleet>>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let ok = given
        .is_some_and(|t| Sha256::digest(t.as_bytes()) == Sha256::digest(fleet.token.as_bytes()));
    if !ok {
        return ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or wrong admin token: set EDGEFLEET_TOKEN (see <data-dir>/admin-token on the fleet host)".into(),
        )
        .into_response();
    }
    next.run(request).await
}

async fn fleet_info(State(fleet): State<Arc<Fleet>>) -> ApiResult {
    Ok(axum::Json(json!({
        "fleet": fleet.options.fleet,
        "publicKey": fleet.key.public_key().to_string(),
        "mqttUrl": fleet.mqtt_url,
    })))
}

fn check(what: &'static str, name: &str) -> Result<(), ApiError> {
    check_name(what, name).map_err(|e| ApiError::bad(e.to_string()))
}

async fn put_registry(
    State(fleet): State<Arc<Fleet>>,
    UrlPath(name): UrlPath<String>,
    axum::Json(r): axum::Json<RegistryRequest>,
) -> ApiResult {
    check("registry name", &name)?;
    if r.address.is_empty() || r.address.contains('/') {
        return Err(ApiError::bad(format!(
            "registry address {:?} must be host[:port]",
            r.address
        )));
    }
    let _guard = fleet.writes.lock().await;
    let password = fleet
        .secrets
        .public_key()
        .seal(&r.password)
        .map_err(ApiError::internal)?;
    let registry = Registry {
        name: name.clone(),
        address: r.address,
        username: r.username,
        password,
        insecure: r.insecure,
    };
    fleet.store.put(kind::REGISTRY, &name, &registry)?;
    fleet.rerender(Affected::All).await?;
    Ok(axum::Json(
        json!({"name": name, "address": registry.address, "username": registry.username}),
    ))
}

async fn list_registries(State(fleet): State<Arc<Fleet>>) -> ApiResult {
    let list: Vec<Value> = fleet
        .store
        .list::<Registry>(kind::REGISTRY)?
        .into_iter()
        .map(|(_, r)| json!({"name": r.name, "address": r.address, "username": r.username, "insecure": r.insecure}))
        .collect();
    Ok(axum::Json(Value::Array(list)))
}

fn models_by_name(store: &FleetStore) -> Result<BTreeMap<String, Vec<ModelVersion>>, ApiError> {
    let mut by_name: BTreeMap<String, Vec<ModelVersion>> = BTreeMap::new();
    for (_, m) in store.list::<ModelVersion>(kind::MODEL)? {
        by_name.entry(m.name.clone()).or_default().push(m);
    }
    for versions in by_name.values_mut() {
        versions.sort_by_key(|v| v.version);
    }
    Ok(by_name)
}

fn model_key(name: &str, version: u32) -> String {
    format!("{name}/{version:010}")
}

async fn register_model(
    State(fleet): State<Arc<Fleet>>,
    Query(q): Query<BTreeMap<String, String>>,
    body: Bytes,
) -> ApiResult {
    let name = q.get("name").cloned().unwrap_or_default();
    check("model name", &name)?;
    let tags: BTreeMap<String, String> = match q.get("tags") {
        Some(t) => serde_json::from_str(t).map_err(|e| ApiError::bad(format!("tags: {e}")))?,
        None => BTreeMap::new(),
    };
    let sample_input: Option<Value> = match q.get("sample") {
        Some(s) => Some(
            serde_json::from_str(s)
                .map_err(|e| ApiError::bad(format!("sample input is not JSON: {e}")))?,
        ),
        None => None,
    };
    let runtime = fleet.runtime;
    let bytes = body.to_vec();
    let checked_sample = sample_input.clone();
    tokio::task::spawn_blocking(move || -> Result<(), ApiError> {
        let model = runtime
            .model(&bytes)
            .map_err(|e| ApiError::bad(format!("not a model ONNX Runtime can load: {e}")))?;
        if let Some(sample) = &checked_sample {
            model.score(sample).map_err(|e| {
                ApiError::bad(format!("the sample input does not fit the model: {e}"))
            })?;
        }
        Ok(())
    })
    .await
    .map_err(ApiError::internal)??;

    let _guard = fleet.writes.lock().await;
    let models = models_by_name(&fleet.store)?;
    let previous = models.get(&name).and_then(|v| v.last()).cloned();
    let version = previous.as_ref().map_or(1, |p| p.version + 1);
    let path = fleet.model_path(&name, version);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(ApiError::internal)?;
    }
    std::fs::write(&path, &body).map_err(ApiError::internal)?;
    let mut record = ModelVersion {
        name: name.clone(),
        version,
        tags,
        description: q.get("description").cloned().unwrap_or_default(),
        sha256: hex::encode(Sha256::digest(&body)),
        size: body.len() as u64,
        registered_ms: now_ms(),
        package: None,
        sample_input,
    };
    fleet
        .store
        .put(kind::MODEL, &model_key(&name, version), &record)?;
    // Continuous deployment: a new version of a packaged model is packaged to the same place,
    // so deployments that follow `name:latest` roll it out.
    if let Some(p) = previous.and_then(|p| p.package) {
        fleet
            .package_and_roll_out(&mut record, &p.registry, &p.repository)
            .await?;
    }
    Ok(axum::Json(
        serde_json::to_value(&record).map_err(ApiError::internal)?,
    ))
}

async fn list_models(State(fleet): State<Arc<Fleet>>) -> ApiResult {
    let all: Vec<ModelVersion> = models_by_name(&fleet.store)?
        .into_values()
        .flatten()
        .collect();
    Ok(axum::Json(
        serde_json::to_value(all).map_err(ApiError::internal)?,
    ))
}

fn parse_version(version: &str) -> Result<u32, ApiError> {
    version
        .parse()
        .map_err(|_| ApiError::bad(format!("model version {version:?} is not a number")))
}

async fn package_model(
    State(fleet): State<Arc<Fleet>>,
    UrlPath((name, version)): UrlPath<(String, String)>,
    axum::Json(r): axum::Json<PackageRequest>,
) -> ApiResult {
    let version = parse_version(&version)?;
    let _guard = fleet.writes.lock().await;
    let mut record: ModelVersion = fleet
        .store
        .get(kind::MODEL, &model_key(&name, version))?
        .ok_or_else(|| ApiError::not_found(format!("model {name}:{version} is not registered")))?;
    fleet
        .package_and_roll_out(&mut record, &r.registry, &r.repository)
        .await?;
    Ok(axum::Json(
        serde_json::to_value(&record.package).map_err(ApiError::internal)?,
    ))
}

async fn delete_model(
    State(fleet): State<Arc<Fleet>>,
    UrlPath((name, version)): UrlPath<(String, String)>,
) -> ApiResult {
    let version = parse_version(&version)?;
    let _guard = fleet.writes.lock().await;
    if fleet
        .store
        .get::<ModelVersion>(kind::MODEL, &model_key(&name, version))?
        .is_none()
    {
        return Err(ApiError::not_found(format!(
            "model {name}:{version} is not registered"
        )));
    }
    let models = models_by_name(&fleet.store)?;
    for (_, d) in fleet.store.list::<Deployment>(kind::DEPLOYMENT)? {
        for module in d.modules.values() {
            if resolve_model(&models, &module.model)
                .is_ok_and(|m| m.name == name && m.version == version)
            {
                return Err(ApiError::conflict(format!(
                    "model {name}:{version} is used by deployment {:?} (module {:?}); change or delete the deployment first",
                    d.name, module.model
                )));
            }
        }
    }
    let mut batch = Batch::default();
    batch.delete(kind::MODEL, &model_key(&name, version));
    fleet.store.commit(batch)?;
    let _ = std::fs::remove_file(fleet.model_path(&name, version));
    Ok(axum::Json(json!({"deleted": format!("{name}:{version}")})))
}

async fn put_device(
    State(fleet): State<Arc<Fleet>>,
    UrlPath(id): UrlPath<String>,
    axum::Json(r): axum::Json<DeviceRequest>,
) -> ApiResult {
    check("device id", &id)?;
    r.public_key
        .parse::<DevicePublicKey>()
        .map_err(|e| ApiError::bad(e.to_string()))?;
    let _guard = fleet.writes.lock().await;
    let existing: Option<Device> = fleet.store.get(kind::DEVICE, &id)?;
    let mqtt_password = match existing {
        Some(d) => d.mqtt_password,
        None => fleet
            .secrets
            .public_key()
            .seal(&hex::encode(rand::random::<[u8; 18]>()))
            .map_err(ApiError::internal)?,
    };
    let device = Device {
        id: id.clone(),
        tags: r.tags,
        public_key: r.public_key,
        added_ms: now_ms(),
        mqtt_password,
    };
    fleet.store.put(kind::DEVICE, &id, &device)?;
    fleet.refresh_broker_credentials()?;
    fleet
        .rerender(Affected::Devices(BTreeSet::from([id.clone()])))
        .await?;
    Ok(axum::Json(json!({"id": id, "tags": device.tags})))
}

fn device_view(fleet: &Fleet, device: &Device) -> Result<Value, ApiError> {
    let status: DeviceStatus = fleet
        .store
        .get(kind::STATUS, &device.id)?
        .unwrap_or_default();
    let manifest: Option<RenderedManifest> = fleet.store.get(kind::MANIFEST, &device.id)?;
    let stale = status
        .last_seen_ms
        .is_none_or(|seen| now_ms().saturating_sub(seen) > rollout::STALE_AFTER_MS);
    Ok(json!({
        "id": device.id,
        "tags": device.tags,
        "publicKey": device.public_key,
        "manifestVersion": manifest.map(|m| m.version),
        "lastSeenMs": status.last_seen_ms,
        "stale": stale,
        "reported": status.reported,
    }))
}

async fn list_devices(State(fleet): State<Arc<Fleet>>) -> ApiResult {
    let list = fleet
        .store
        .list::<Device>(kind::DEVICE)?
        .iter()
        .map(|(_, d)| device_view(&fleet, d))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(Value::Array(list)))
}

fn device(fleet: &Fleet, id: &str) -> Result<Device, ApiError> {
    fleet.store.get(kind::DEVICE, id)?.ok_or_else(|| {
        ApiError::not_found(format!(
            "device {id:?} is not in the fleet (see `edgefleet device list`)"
        ))
    })
}

async fn show_device(State(fleet): State<Arc<Fleet>>, UrlPath(id): UrlPath<String>) -> ApiResult {
    Ok(axum::Json(device_view(&fleet, &device(&fleet, &id)?)?))
}

async fn device_config(
    State(fleet): State<Arc<Fleet>>,
    UrlPath(id): UrlPath<String>,
) -> Result<String, ApiError> {
    let device = device(&fleet, &id)?;
    let password = fleet
        .secrets
        .unseal(&device.mqtt_password)
        .map_err(ApiError::internal)?;
    let mut config = AgentConfig {
        device_id: id.clone(),
        fleet: fleet.options.fleet.clone(),
        fleet_public_key: fleet.key.public_key().to_string(),
        ..AgentConfig::default()
    };
    config.mqtt.url = fleet
        .options
        .device_mqtt_url
        .clone()
        .unwrap_or_else(|| fleet.mqtt_url.clone());
    config.mqtt.username = id.clone();
    config.mqtt.password = password;
    config.registry.insecure = fleet
        .store
        .list::<Registry>(kind::REGISTRY)?
        .into_iter()
        .filter(|(_, r)| r.insecure)
        .map(|(_, r)| r.address)
        .collect();
    let toml = toml::to_string(&config).map_err(ApiError::internal)?;
    Ok(format!(
        "# edgefleet-agent configuration for device {id}, written by `edgefleet device config`.\n\
         # It holds the device's MQTT password: keep it 0600. Every setting is explained by\n\
         # `edgefleet-agent print-default-config`.\n{toml}"
    ))
}

async fn put_deployment(
    State(fleet): State<Arc<Fleet>>,
    UrlPath(name): UrlPath<String>,
    axum::Json(r): axum::Json<DeploymentRequest>,
) -> ApiResult {
    check("deployment name", &name)?;
    let condition: Condition = r
        .target
        .parse()
        .map_err(|e: crate::condition::ConditionError| ApiError::bad(e.to_string()))?;
    if r.modules.is_empty() {
        return Err(ApiError::bad(
            "a deployment needs at least one module (--model)",
        ));
    }
    let _guard = fleet.writes.lock().await;
    let models = models_by_name(&fleet.store)?;
    for (module, spec) in &r.modules {
        check("module name", module)?;
        resolve_model(&models, &spec.model)?;
    }
    let old: Option<Deployment> = fleet.store.get(kind::DEPLOYMENT, &name)?;
    let deployment = Deployment {
        name: name.clone(),
        target: r.target,
        priority: r.priority,
        modules: r.modules,
        created_seq: fleet.store.next("deployment")?,
    };
    fleet.store.put(kind::DEPLOYMENT, &name, &deployment)?;
    let mut conditions = vec![condition];
    if let Some(old) = old.and_then(|o| o.target.parse::<Condition>().ok()) {
        conditions.push(old);
    }
    let affected = fleet.devices_matching(&conditions)?;
    let count = affected.len();
    fleet.rerender(Affected::Devices(affected)).await?;
    Ok(axum::Json(json!({"name": name, "targeted": count})))
}

async fn list_deployments(State(fleet): State<Arc<Fleet>>) -> ApiResult {
    let list: Vec<Deployment> = fleet
        .store
        .list(kind::DEPLOYMENT)?
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    Ok(axum::Json(
        serde_json::to_value(list).map_err(ApiError::internal)?,
    ))
}

async fn delete_deployment(
    State(fleet): State<Arc<Fleet>>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult {
    let _guard = fleet.writes.lock().await;
    let old: Deployment = fleet
        .store
        .get(kind::DEPLOYMENT, &name)?
        .ok_or_else(|| ApiError::not_found(format!("deployment {name:?} does not exist")))?;
    let mut batch = Batch::default();
    batch.delete(kind::DEPLOYMENT, &name);
    fleet.store.commit(batch)?;
    let affected = match old.target.parse::<Condition>() {
        Ok(c) => Affected::Devices(fleet.devices_matching(&[c])?),
        Err(_) => Affected::All,
    };
    fleet.rerender(affected).await?;
    Ok(axum::Json(json!({"deleted": name})))
}

async fn show_manifest(State(fleet): State<Arc<Fleet>>, UrlPath(id): UrlPath<String>) -> ApiResult {
    device(&fleet, &id)?;
    let rendered: RenderedManifest = fleet.store.get(kind::MANIFEST, &id)?.ok_or_else(|| {
        ApiError::not_found(format!(
            "no manifest rendered for {id:?} yet: no deployment targets it"
        ))
    })?;
    let manifest: Value = serde_json::from_str(&rendered.wire).map_err(ApiError::internal)?;
    Ok(axum::Json(
        json!({"version": rendered.version, "sources": rendered.sources, "signed": manifest}),
    ))
}

async fn rollout_status(
    State(fleet): State<Arc<Fleet>>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult {
    if fleet
        .store
        .get::<Deployment>(kind::DEPLOYMENT, &name)?
        .is_none()
    {
        return Err(ApiError::not_found(format!(
            "deployment {name:?} does not exist"
        )));
    }
    let manifests: Vec<RenderedManifest> = fleet
        .store
        .list(kind::MANIFEST)?
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    let statuses: BTreeMap<String, DeviceStatus> =
        fleet.store.list(kind::STATUS)?.into_iter().collect();
    let status = rollout::status(&name, &manifests, &statuses, now_ms());
    Ok(axum::Json(
        serde_json::to_value(status).map_err(ApiError::internal)?,
    ))
}

/// How long the service waits for a device to answer a command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends a command (`logs`, `restart`) to a device and returns its result.
async fn device_command(
    State(fleet): State<Arc<Fleet>>,
    UrlPath(id): UrlPath<String>,
    axum::Json(body): axum::Json<ModuleCommandRequest>,
) -> ApiResult {
    device(&fleet, &id)?;
    let request_id = hex::encode(rand::random::<[u8; 8]>());
    let name = body.command.name();
    let request = CommandRequest {
        request_id: request_id.clone(),
        module: body.module,
        command: body.command,
    };
    let payload = serde_json::to_vec(&request).map_err(ApiError::internal)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    if let Ok(mut pending) = fleet.pending_commands.lock() {
        pending.insert(request_id.clone(), tx);
    }
    let topics =
        DeviceTopics::new(&fleet.options.fleet, &id).map_err(|e| ApiError::bad(e.to_string()))?;
    fleet
        .mqtt
        .publish(topics.command(name), QoS::AtLeastOnce, false, payload)
        .await
        .map_err(ApiError::internal)?;
    let result = tokio::time::timeout(COMMAND_TIMEOUT, rx).await;
    if let Ok(mut pending) = fleet.pending_commands.lock() {
        pending.remove(&request_id);
    }
    match result {
        Ok(Ok(CommandResult {
            outcome: CommandOutcome::Failed { error },
            ..
        })) => Err(ApiError::bad(format!("device {id}: {error}"))),
        Ok(Ok(result)) => Ok(axum::Json(
            serde_json::to_value(result).map_err(ApiError::internal)?,
        )),
        _ => Err(ApiError(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "device {id} did not answer within {} s: is it online? (edgefleet device show {id})",
                COMMAND_TIMEOUT.as_secs()
            ),
        )),
    }
}

async fn telemetry(
    State(fleet): State<Arc<Fleet>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> ApiResult {
    device(&fleet, &id)?;
    let limit = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(20);
    Ok(axum::Json(Value::Array(fleet.store.telemetry(&id, limit)?)))
}

impl Fleet {
    /// Lets every device of the store connect to the embedded broker with its password.
    fn refresh_broker_credentials(&self) -> Result<(), ApiError> {
        let Some(credentials) = &self.broker_credentials else {
            return Ok(());
        };
        let devices = self.store.list::<Device>(kind::DEVICE)?;
        let mut c = credentials
            .write()
            .map_err(|_| ApiError::internal("broker credentials lock poisoned"))?;
        for (id, device) in devices {
            let password = self
                .secrets
                .unseal(&device.mqtt_password)
                .map_err(ApiError::internal)?;
            c.insert(id, password);
        }
        Ok(())
    }

    fn model_path(&self, name: &str, version: u32) -> PathBuf {
        self.options
            .data_dir
            .join("models")
            .join(name)
            .join(format!("{version}.onnx"))
    }

    fn devices_matching(&self, conditions: &[Condition]) -> Result<BTreeSet<String>, ApiError> {
        Ok(self
            .store
            .list::<Device>(kind::DEVICE)?
            .into_iter()
            .filter(|(_, d)| conditions.iter().any(|c| c.matches(&d.id, &d.tags)))
            .map(|(id, _)| id)
            .collect())
    }

    /// Packages and pushes `record`, stores where it went and re-renders the devices (a
    /// deployment may follow `name:latest`).
    async fn package_and_roll_out(
        &self,
        record: &mut ModelVersion,
        registry: &str,
        repository: &str,
    ) -> Result<(), ApiError> {
        record.package = Some(self.package(record, registry, repository).await?);
        self.store.put(
            kind::MODEL,
            &model_key(&record.name, record.version),
            &*record,
        )?;
        self.rerender(Affected::All).await?;
        Ok(())
    }

    async fn package(
        &self,
        record: &ModelVersion,
        registry_name: &str,
        repository: &str,
    ) -> Result<Package, ApiError> {
        let registry: Registry = self.store.get(kind::REGISTRY, registry_name)?.ok_or_else(
            || {
                ApiError::bad(format!(
                    "registry {registry_name:?} is not configured (see `edgefleet registry add`)"
                ))
            },
        )?;
        let password = self
            .secrets
            .unseal(&registry.password)
            .map_err(ApiError::internal)?;
        let bytes = std::fs::read(self.model_path(&record.name, record.version))
            .map_err(ApiError::internal)?;
        let runtime = self.runtime;
        let record_for_build = record.clone();
        let image = tokio::task::spawn_blocking(move || -> Result<package::Image, ApiError> {
            let model = runtime
                .model(&bytes)
                .map_err(|e| ApiError::bad(e.to_string()))?;
            let metadata = package::module_metadata(&record_for_build, &model)
                .map_err(|e| ApiError::bad(e.to_string()))?;
            package::build(&record_for_build, &bytes, &metadata)
                .map_err(|e| ApiError::internal(e.to_string()))
        })
        .await
        .map_err(ApiError::internal)??;
        let tag = record.version.to_string();
        package::push(
            &image,
            &package::Destination {
                address: &registry.address,
                repository,
                tag: tag.clone(),
                username: &registry.username,
                password: &password,
                insecure: registry.insecure,
            },
        )
        .await
        .map_err(|e| ApiError::bad(e.to_string()))?;
        Ok(Package {
            registry: registry_name.to_owned(),
            repository: repository.to_owned(),
            image: format!(
                "{}/{repository}:{tag}@{}",
                registry.address, image.manifest_digest
            ),
            digest: image.manifest_digest,
        })
    }

    fn catalog(&self) -> Result<Catalog, ApiError> {
        let registries = self
            .store
            .list::<Registry>(kind::REGISTRY)?
            .into_iter()
            .map(|(name, r)| {
                let password = self
                    .secrets
                    .unseal(&r.password)
                    .map_err(ApiError::internal)?;
                let password_id = hex::encode(Sha256::digest(r.password.as_armored().as_bytes()));
                let access = RegistryAccess {
                    address: r.address,
                    username: r.username,
                    password,
                    password_id,
                };
                Ok((name, access))
            })
            .collect::<Result<_, ApiError>>()?;
        let deployments = self
            .store
            .list::<Deployment>(kind::DEPLOYMENT)?
            .into_iter()
            .filter_map(|(_, d)| d.target.parse().ok().map(|c| (d, c)))
            .collect();
        Ok(Catalog {
            registries,
            models: models_by_name(&self.store)?,
            deployments,
        })
    }

    /// Renders the affected devices; stores and publishes (retained) what changed.
    async fn rerender(&self, affected: Affected) -> Result<usize, ApiError> {
        let catalog = self.catalog()?;
        let mut drafts = Vec::new();
        let mut changed = 0;
        for (id, device) in self.store.list::<Device>(kind::DEVICE)? {
            if let Affected::Devices(ids) = &affected
                && !ids.contains(&id)
            {
                continue;
            }
            let previous: Option<RenderedManifest> = self.store.get(kind::MANIFEST, &id)?;
            match render_device(&device, &catalog, previous.as_ref()) {
                // A device that never had a manifest gets none until it has a module.
                Ok(Render::Changed(draft)) if !(draft.sources.is_empty() && previous.is_none()) => {
                    drafts.push(draft);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(device = %id, error = %e, "manifest not rendered"),
            }
            if drafts.len() == SIGNING_BATCH {
                changed += self.sign_store_publish(std::mem::take(&mut drafts)).await?;
            }
        }
        changed += self.sign_store_publish(drafts).await?;
        Ok(changed)
    }

    /// Signs one batch of new manifests, stores them and publishes them (retained).
    async fn sign_store_publish(&self, drafts: Vec<Draft>) -> Result<usize, ApiError> {
        if drafts.is_empty() {
            return Ok(0);
        }
        let changed = render::sign(drafts, &self.key);
        let mut batch = Batch::default();
        for rendered in &changed {
            batch.put(kind::MANIFEST, &rendered.device_id, rendered);
        }
        self.store.commit(batch)?;
        for rendered in &changed {
            self.publish(rendered).await;
        }
        Ok(changed.len())
    }

    async fn publish(&self, rendered: &RenderedManifest) {
        let Ok(topics) = DeviceTopics::new(&self.options.fleet, &rendered.device_id) else {
            return;
        };
        if let Err(e) = self
            .mqtt
            .publish(
                topics.desired(),
                QoS::AtLeastOnce,
                true,
                rendered.wire.clone().into_bytes(),
            )
            .await
        {
            tracing::warn!(device = %rendered.device_id, error = %e, "manifest not published; it will be on reconnect");
        }
    }
}

/// The MQTT session: publishes every manifest again on each connect and ingests reported state
/// and telemetry, writing them in batches.
async fn ingest(fleet: Arc<Fleet>, mut eventloop: rumqttc::EventLoop) {
    let mut statuses: BTreeMap<String, DeviceStatus> = BTreeMap::new();
    let mut telemetry: Vec<(String, u64, Vec<u8>)> = Vec::new();
    let mut flush = tokio::time::interval(Duration::from_millis(200));
    let mut backoff = Duration::from_millis(200);
    loop {
        tokio::select! {
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff = Duration::from_millis(200);
                    tracing::info!(broker = %fleet.mqtt_url, "connected to the broker");
                    let _ = fleet.mqtt.subscribe(fleet.topics.all_reported(), QoS::AtLeastOnce).await;
                    let _ = fleet.mqtt.subscribe(fleet.topics.all_telemetry(), QoS::AtLeastOnce).await;
                    let _ = fleet.mqtt.subscribe(fleet.topics.all_command_results(), QoS::AtLeastOnce).await;
                    let manifests: Vec<(String, RenderedManifest)> = fleet.store.list(kind::MANIFEST).unwrap_or_default();
                    let fleet = fleet.clone();
                    tokio::spawn(async move {
                        for (_, m) in manifests {
                            fleet.publish(&m).await;
                        }
                    });
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let now = now_ms();
                    match fleet.topics.parse(&p.topic) {
                        Some(DeviceTopic::Reported { device_id }) => {
                            if let Ok(reported) = serde_json::from_slice::<ReportedState>(&p.payload) {
                                let entry = statuses.entry(device_id.to_owned()).or_insert_with(|| {
                                    fleet.store.get(kind::STATUS, device_id).ok().flatten().unwrap_or_default()
                                });
                                entry.last_seen_ms = Some(now);
                                entry.reported = Some(reported);
                            }
                        }
                        Some(DeviceTopic::CommandResult { .. }) => {
                            if let Ok(result) = serde_json::from_slice::<CommandResult>(&p.payload) {
                                let waiter = fleet.pending_commands.lock().ok().and_then(|mut p| p.remove(&result.request_id));
                                if let Some(waiter) = waiter {
                                    let _ = waiter.send(result);
                                }
                            }
                        }
                        Some(DeviceTopic::Telemetry { device_id, .. }) => {
                            if let Ok(envelope) = serde_json::from_slice::<TelemetryEnvelope>(&p.payload) {
                                telemetry.push((device_id.to_owned(), envelope.seq, p.payload.to_vec()));
                                let entry = statuses.entry(device_id.to_owned()).or_insert_with(|| {
                                    fleet.store.get(kind::STATUS, device_id).ok().flatten().unwrap_or_default()
                                });
                                entry.last_seen_ms = Some(now);
                            }
                        }
                        _ => {}
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "broker connection");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            },
            _ = flush.tick() => {
                if !statuses.is_empty() {
                    let mut batch = Batch::default();
                    for (id, status) in std::mem::take(&mut statuses) {
                        batch.put(kind::STATUS, &id, &status);
                    }
                    if let Err(e) = fleet.store.commit(batch) {
                        tracing::error!(error = %e, "cannot store reported state");
                    }
                }
                if !telemetry.is_empty()
                    && let Err(e) = fleet.store.add_telemetry(&std::mem::take(&mut telemetry))
                {
                    tracing::error!(error = %e, "cannot store telemetry");
                }
            }
        }
    }
}
