//! The local scoring API of a model module, compatible with the Azure ML inference server:
//! `GET /` answers `Healthy`, `POST /score` scores a JSON body, `GET /swagger.json` describes
//! the module. When the manifest sets keys, `Authorization: Bearer <key>` is required.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use edgefleet_common::module_image::{ElementType, IoSpec, ModuleMetadata, ValueSpec};
use edgefleet_common::telemetry::{CollectedData, InferenceRecord, InputSource, TelemetryRecord};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::model_module::ModelModule;
use crate::outbox::Outbox;
use edgefleet_onnx::ModelError;

#[derive(Clone)]
struct Api {
    module: Arc<ModelModule>,
    outbox: Outbox,
    limits: ScoringLimits,
}

/// How a scoring API treats requests (from the agent's `[telemetry]` settings).
#[derive(Debug, Clone, Copy)]
pub struct ScoringLimits {
    /// Largest request body accepted.
    pub max_body: usize,
    /// Answer only once the inference record is durable.
    pub durable_answers: bool,
}

impl ScoringLimits {
    pub fn from_config(config: &edgefleet_common::agent_config::AgentConfig) -> Self {
        Self {
            max_body: config.telemetry.max_request_bytes,
            durable_answers: config.telemetry.durable_answers,
        }
    }
}

/// The router for one model module.
pub fn router(module: Arc<ModelModule>, outbox: Outbox, limits: ScoringLimits) -> Router {
    Router::new()
        .route("/", get(|| async { "Healthy" }))
        .route("/score", get(score_get).post(score))
        .route("/swagger.json", get(swagger))
        .with_state(Api {
            module,
            outbox,
            limits,
        })
}

/// Serves `router` on `listener` until `shutdown` completes, answering each response as soon
/// as it is written (`TCP_NODELAY`: a small response must not wait for the client's delayed
/// ACK of the previous one).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt as _;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

fn authorized(api: &Api, headers: &HeaderMap) -> bool {
    let serving = api.module.serving();
    if serving.auth_key_sha256.is_empty() {
        return true;
    }
    let Some(key) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let digest = hex::encode(Sha256::digest(key.trim().as_bytes()));
    serving
        .auth_key_sha256
        .iter()
        .any(|k| k.eq_ignore_ascii_case(&digest))
}

fn unauthorized() -> Response {
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "this scoring endpoint requires 'Authorization: Bearer <key>' with a key of the deployment",
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}

async fn score_get(State(api): State<Api>, headers: HeaderMap) -> Response {
    if !authorized(&api, &headers) {
        return unauthorized();
    }
    "GET is not supported: POST a JSON body to /score (see /swagger.json)".into_response()
}

async fn score(State(api): State<Api>, request: Request) -> Response {
    if !authorized(&api, request.headers()) {
        return unauthorized();
    }
    let body = match read_body(request.into_body(), api.limits.max_body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("request body is not valid JSON: {e}"),
            );
        }
    };
    let started = Instant::now();
    // A quick model runs right here; a slow one on this worker thread too, but with tokio told
    // it blocks, so other connections move to another thread. Neither goes to the blocking
    // pool: that hand-off costs more than a small model's whole run.
    let score = || api.module.active().model.score(&request);
    let scored = if api.module.runs_inline() {
        score()
    } else {
        tokio::task::block_in_place(score)
    };
    let latency_us = started.elapsed().as_micros() as u64;
    match scored {
        Ok(output) => {
            api.module.observe(latency_us, true);
            let response = axum::Json(&output).into_response();
            record(&api, request, output, latency_us).await;
            response
        }
        Err(ModelError::Request(e)) => {
            api.module.observe(latency_us, false);
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(e) => {
            api.module.observe(latency_us, false);
            error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

/// Records the inference (and, at the configured rate, the collected inputs and outputs); with
/// durable answers, returns once they are durable, so an answered request always has its
/// record whatever happens to the process next (concurrent requests share one commit).
async fn record(api: &Api, request: Value, output: Value, latency_us: u64) {
    let name = &api.module.name;
    let ppm = api.module.serving().data_collection_ppm;
    if ppm > 0 && rand::random::<u32>() % 1_000_000 < ppm {
        let collected = TelemetryRecord::CollectedData(CollectedData {
            inputs: request,
            outputs: output.clone(),
        });
        // Committed in order: it is durable once the inference record below is.
        if let Err(e) = api.outbox.submit(name, collected) {
            tracing::warn!(module = %name, error = %e, "collected data not accepted");
        }
    }
    let inference = TelemetryRecord::Inference(InferenceRecord {
        source: InputSource::Http,
        latency_us,
        outputs: output,
    });
    let recorded = if api.limits.durable_answers {
        api.outbox.record(name, inference).await.map(|_| ())
    } else {
        api.outbox.submit(name, inference)
    };
    if let Err(e) = recorded {
        tracing::warn!(module = %name, error = %e, "inference record not accepted");
    }
}

/// Most bytes of an oversized body read (and dropped) before the connection is closed: reading
/// it lets the client finish sending and read the 413, instead of failing on a closed socket.
const DRAIN_MAX_BYTES: usize = 256 * 1024 * 1024;

/// The request body, or the response that refuses it: 413 when it is larger than `max`.
async fn read_body(body: Body, max: usize) -> Result<Vec<u8>, Response> {
    use futures_util::StreamExt as _;
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk: Bytes = chunk.map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!("request body could not be read: {e}"),
            )
        })?;
        total = total.saturating_add(chunk.len());
        if total <= max {
            bytes.extend_from_slice(&chunk);
        } else if total > DRAIN_MAX_BYTES {
            break;
        }
    }
    if total > max {
        return Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body is larger than {max} bytes (telemetry.max_request_bytes); send fewer rows per request"
            ),
        ));
    }
    Ok(bytes)
}

async fn swagger(State(api): State<Api>) -> Response {
    let active = api.module.active();
    let secured = !api.module.serving().auth_key_sha256.is_empty();
    let doc = openapi(&api.module.name, &active.metadata, &active.digest, secured);
    let mut response = Response::new(Body::from(doc.to_string()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn element_schema(dtype: ElementType) -> Value {
    match dtype {
        ElementType::Float32 | ElementType::Float64 => json!({"type": "number"}),
        ElementType::Bool => json!({"type": "boolean"}),
        ElementType::String => json!({"type": "string"}),
        _ => json!({"type": "integer"}),
    }
}

fn io_schema(spec: &IoSpec) -> Value {
    match &spec.value {
        ValueSpec::Tensor { dtype, shape } => {
            shape
                .iter()
                .rev()
                .fold(element_schema(*dtype), |items, dim| {
                    let mut s = json!({"type": "array", "items": items});
                    if *dim >= 0 {
                        s["minItems"] = json!(dim);
                        s["maxItems"] = json!(dim);
                    }
                    s
                })
        }
        ValueSpec::SequenceOfMaps { value, .. } => json!({
            "type": "array",
            "items": {"type": "object", "additionalProperties": element_schema(*value)}
        }),
    }
}

/// The OpenAPI 3 document of a model module.
pub fn openapi(name: &str, metadata: &ModuleMetadata, digest: &str, secured: bool) -> Value {
    let mut input_props = serde_json::Map::new();
    if let [only] = metadata.inputs.as_slice() {
        input_props.insert("data".into(), io_schema(only));
    } else {
        for spec in &metadata.inputs {
            input_props.insert(spec.name.clone(), io_schema(spec));
        }
    }
    let output_props: serde_json::Map<String, Value> = metadata
        .outputs
        .iter()
        .map(|s| (s.name.clone(), io_schema(s)))
        .collect();
    let mut input = json!({"type": "object", "properties": input_props, "required": input_props.keys().collect::<Vec<_>>()});
    let mut output = json!({"type": "object", "properties": output_props});
    if let Some(sample) = &metadata.sample {
        input["example"] = sample.input.clone();
        output["example"] = sample.output.clone();
    }
    let mut doc = json!({
        "openapi": "3.0.1",
        "info": {
            "title": format!("{name} scoring API"),
            "description": metadata.description,
            "version": format!("{} ({digest})", metadata.version),
        },
        "paths": {
            "/": {"get": {"summary": "Liveness", "responses": {"200": {"description": "Healthy", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/score": {"post": {
                "summary": "Score one request",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ServiceInput"}}}},
                "responses": {
                    "200": {"description": "Model outputs", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ServiceOutput"}}}},
                    "400": {"description": "The request does not fit the model's inputs", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}},
                    "401": {"description": "Missing or wrong bearer key"}
                }
            }}
        },
        "components": {"schemas": {
            "ServiceInput": input,
            "ServiceOutput": output,
            "ErrorResponse": {"type": "object", "properties": {"error": {"type": "string"}}}
        }}
    });
    if secured {
        doc["components"]["securitySchemes"] =
            json!({"Bearer": {"type": "http", "scheme": "bearer"}});
        doc["security"] = json!([{"Bearer": []}]);
    }
    doc
}
