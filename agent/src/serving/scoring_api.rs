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

use edgefleet_common::telemetry::{CollectedData, InferenceRecord, InputSource, TelemetryRecord};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::serving::model_module::ModelModule;
pub use crate::serving::scoring_server::ScoringServer;
use crate::serving::swagger::openapi;
use crate::telemetry::outbox::{AcceptanceRelay, Outbox, OutboxError};
use edgefleet_onnx::ModelError;

/// A request thread's own state (cloning it per request touches no memory another thread
/// shares).
struct Api {
    module: Arc<ModelModule>,
    outbox: Outbox,
    /// Durable answers are told through it, once per commit for the whole thread.
    relay: AcceptanceRelay,
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

/// The router for one model module, for the runtime it is called on (it starts the relay of
/// the outbox's acknowledgements there).
pub fn router(module: Arc<ModelModule>, outbox: Outbox, limits: ScoringLimits) -> Router {
    let relay = AcceptanceRelay::start();
    Router::new()
        .route("/", get(|| async { "Healthy" }))
        .route("/score", get(score_get).post(score))
        .route("/swagger.json", get(swagger))
        .with_state(Arc::new(Api {
            module,
            outbox,
            relay,
            limits,
        }))
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

async fn score_get(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    if !authorized(&api, &headers) {
        return unauthorized();
    }
    "GET is not supported: POST a JSON body to /score (see /swagger.json)".into_response()
}

async fn score(State(api): State<Arc<Api>>, request: Request) -> Response {
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
    // A quick model runs right here: handing it to another thread costs more than its whole
    // run. A slow one runs on the blocking pool, so the other connections of this request
    // thread are not held up behind it.
    let (request, scored, latency_us) = if api.module.runs_inline() {
        let started = Instant::now();
        let scored = api.module.active().model.score(&request);
        (request, scored, started.elapsed().as_micros() as u64)
    } else {
        let module = api.module.clone();
        let run = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let scored = module.active().model.score(&request);
            (request, scored, started.elapsed().as_micros() as u64)
        });
        match run.await {
            Ok(run) => run,
            Err(e) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("inference did not finish: {e}"),
                );
            }
        }
    };
    match scored {
        Ok(output) => {
            api.module.observe(latency_us, true);
            let response = axum::Json(&output).into_response();
            match record(&api, request, output, latency_us).await {
                Ok(()) => response,
                // The answer promises its record: without one, the client is told to retry.
                Err(e) => {
                    let mut refused = error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "the answer was not sent because its inference record could not be stored ({e}); retry later, and see the agent's log"
                        ),
                    );
                    refused
                        .headers_mut()
                        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
                    refused
                }
            }
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

/// Records the inference (and, at the configured rate, the collected inputs and outputs). With
/// durable answers, returns once they are durable, or why they are not, so an answered request
/// always has its record whatever happens to the process next (concurrent requests share one
/// write); without, a record that is not accepted is logged and the answer goes out.
async fn record(
    api: &Api,
    request: Value,
    output: Value,
    latency_us: u64,
) -> Result<(), OutboxError> {
    let name = &api.module.name;
    let ppm = api.module.serving().data_collection_ppm;
    if ppm > 0 && rand::random::<u32>() % 1_000_000 < ppm {
        let collected = TelemetryRecord::CollectedData(CollectedData {
            inputs: request,
            outputs: output.clone(),
        });
        // Written in order: it is durable once the inference record below is.
        if let Err(e) = api.outbox.submit(name, collected) {
            tracing::warn!(module = %name, error = %e, "collected data not accepted");
        }
    }
    let inference = TelemetryRecord::Inference(InferenceRecord {
        source: InputSource::Http,
        latency_us,
        outputs: output,
    });
    if api.limits.durable_answers {
        let recorded = api.outbox.record_through(&api.relay, name, inference).await;
        if let Err(e) = &recorded {
            tracing::warn!(module = %name, error = %e, "inference record not accepted; answered 503");
        }
        recorded.map(|_| ())
    } else {
        if let Err(e) = api.outbox.submit(name, inference) {
            tracing::warn!(module = %name, error = %e, "inference record not accepted");
        }
        Ok(())
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

async fn swagger(State(api): State<Arc<Api>>) -> Response {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::time::Duration;

    /// A router answering with the name of the thread that served the request, and one route
    /// that never answers (it notifies `hanging` once a request reached it).
    fn thread_names(hanging: Arc<tokio::sync::Notify>) -> Router {
        Router::new()
            .route(
                "/",
                get(|| async { std::thread::current().name().unwrap_or("").to_owned() }),
            )
            .route(
                "/hang",
                get(move || async move {
                    hanging.notify_one();
                    std::future::pending::<String>().await
                }),
            )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_answer_whose_record_the_outbox_refuses_is_a_503_to_retry_and_no_answer() {
        edgefleet_transport::install_crypto_provider();
        let runtime =
            edgefleet_onnx::OnnxRuntime::load(&edgefleet_tests::ort_library()).expect("runtime");
        let dir = edgefleet_tests::model_dir("diabetes");
        let model = runtime
            .model(&std::fs::read(dir.join("model.onnx")).expect("model.onnx"))
            .expect("model loads");
        let module = Arc::new(ModelModule::from_file(
            "diabetes",
            model,
            "model.onnx",
            "127.0.0.1",
            0,
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let outbox = Outbox::stopped();
        let limits = ScoringLimits {
            max_body: 1 << 20,
            durable_answers: true,
        };
        let server = ScoringServer::start(listener, move || {
            router(module.clone(), outbox.clone(), limits)
        })
        .expect("start");
        let response = reqwest::Client::new()
            .post(format!("http://{addr}/score"))
            .header("content-type", "application/json")
            .body(r#"{"data": [[1,2,3,4,5,6,7,8,9,10]]}"#)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
            Some("1")
        );
        // The reason, and not the model's output.
        let body: Value = response.json().await.expect("JSON body");
        let reason = body["error"].as_str().unwrap_or_default();
        assert!(
            reason.contains("inference record could not be stored")
                && reason.contains("telemetry outbox stopped")
                && body.get("variable").is_none(),
            "{body}"
        );
        server.stop(Duration::from_secs(5)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_are_spread_over_the_request_threads_and_stopping_frees_the_port() {
        edgefleet_transport::install_crypto_provider();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let hanging = Arc::new(tokio::sync::Notify::new());
        let route = hanging.clone();
        let server =
            ScoringServer::start(listener, move || thread_names(route.clone())).expect("start");
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut served_by = BTreeSet::new();
        for _ in 0..threads * 2 {
            // A client of its own: a connection of its own.
            let name = reqwest::Client::new()
                .get(format!("http://{addr}/"))
                .send()
                .await
                .expect("request")
                .text()
                .await
                .expect("body");
            served_by.insert(name);
        }
        let expected: BTreeSet<String> = (0..threads).map(|i| format!("scoring-{i}")).collect();
        assert_eq!(served_by, expected, "each request thread serves its turn");

        // A request that never finishes holds the stop for the grace period only.
        let request = reqwest::Client::new()
            .get(format!("http://{addr}/hang"))
            .send();
        let request = tokio::spawn(request);
        hanging.notified().await;
        tokio::time::timeout(
            Duration::from_secs(30),
            server.stop(Duration::from_millis(200)),
        )
        .await
        .expect("the server stops after its grace period");
        assert!(
            request.await.expect("client task").is_err(),
            "the hanging request's connection was closed"
        );
        std::net::TcpListener::bind(addr).expect("the port is free again at once");
    }
}
