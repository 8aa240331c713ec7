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
use tokio::sync::{mpsc, oneshot, watch};

use crate::model_module::ModelModule;
use crate::outbox::{AckRelay, Outbox, OutboxError};
use edgefleet_onnx::ModelError;

/// A request thread's own state (cloning it per request touches no memory another thread
/// shares).
struct Api {
    module: Arc<ModelModule>,
    outbox: Outbox,
    /// Durable answers are told through it, once per commit for the whole thread.
    relay: AckRelay,
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
    let relay = AckRelay::start();
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

/// A scoring API being served. Connections are accepted on the runtime that started it and
/// handed in turn to request threads, one per core, each running a single-threaded runtime of
/// its own: a request is read, scored and answered on one thread, with no work stealing and no
/// hand-off between threads (nginx's worker model). Each connection answers as soon as a
/// response is written (`TCP_NODELAY`: a small response must not wait for the client's delayed
/// ACK of the previous one).
#[derive(Debug)]
pub struct ScoringServer {
    stop: watch::Sender<Stop>,
    acceptor: tokio::task::JoinHandle<()>,
    threads: Vec<oneshot::Receiver<()>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Serving,
    /// Stop accepting; answer the requests in flight.
    Drain,
    /// Close every connection now.
    Now,
}

impl ScoringServer {
    /// Starts serving on `listener` from as many request threads as the process may use cores,
    /// each serving the router `router()` makes on its thread's runtime. Must be called within
    /// a tokio runtime (the acceptor runs there).
    pub fn start(
        listener: tokio::net::TcpListener,
        router: impl Fn() -> Router + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        let router = Arc::new(router);
        let count = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (stop, _) = watch::channel(Stop::Serving);
        let mut connections = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for i in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (tx, rx) = mpsc::unbounded_channel();
            let (done, finished) = oneshot::channel();
            let (router, stop) = (router.clone(), stop.subscribe());
            std::thread::Builder::new()
                .name(format!("scoring-{i}"))
                .spawn(move || {
                    runtime.block_on(async {
                        request_thread(Connections(rx), router(), stop).await;
                    });
                    // Closes the connections still open before the thread counts as gone.
                    drop(runtime);
                    let _ = done.send(());
                })?;
            connections.push(tx);
            threads.push(finished);
        }
        let acceptor = tokio::spawn(accept(listener, connections, stop.subscribe()));
        Ok(Self {
            stop,
            acceptor,
            threads,
        })
    }

    /// Stops accepting and lets the requests in flight finish for up to `grace`, then closes
    /// every connection; returns once the listener and every request thread are gone.
    pub async fn stop(self, grace: std::time::Duration) {
        let _ = self.stop.send(Stop::Drain);
        let _ = self.acceptor.await;
        let mut threads = futures_util::future::join_all(self.threads);
        if tokio::time::timeout(grace, &mut threads).await.is_err() {
            let _ = self.stop.send(Stop::Now);
            threads.await;
        }
    }
}

/// Accepts connections and hands them to the request threads in turn until told to stop.
async fn accept(
    listener: tokio::net::TcpListener,
    threads: Vec<mpsc::UnboundedSender<std::net::TcpStream>>,
    mut stop: watch::Receiver<Stop>,
) {
    let mut next = 0;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s != Stop::Serving) => return,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of file descriptors or the like: retry shortly instead of spinning.
                tracing::warn!(error = %e, "scoring API cannot accept a connection");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        match tcp.into_std() {
            Ok(tcp) => {
                let _ = threads[next].send(tcp);
                next = (next + 1) % threads.len();
            }
            Err(e) => tracing::warn!(error = %e, "scoring API connection dropped"),
        }
    }
}

/// One request thread: serves the connections it is handed until told to stop.
async fn request_thread(connections: Connections, router: Router, mut stop: watch::Receiver<Stop>) {
    let mut now = stop.clone();
    let drain = async move {
        let _ = stop.wait_for(|s| *s != Stop::Serving).await;
    };
    tokio::select! {
        result = axum::serve(connections, router).with_graceful_shutdown(drain) => {
            if let Err(e) = result {
                tracing::error!(error = %e, "scoring API stopped");
            }
        }
        _ = now.wait_for(|s| *s == Stop::Now) => {}
    }
}

/// The connections handed to one request thread, as a listener axum serves.
struct Connections(mpsc::UnboundedReceiver<std::net::TcpStream>);

impl axum::serve::Listener for Connections {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Some(tcp) = self.0.recv().await else {
                // The acceptor is gone: nothing more comes (shutdown ends the serve loop).
                return std::future::pending().await;
            };
            let registered = tcp
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpStream::from_std(tcp));
            match registered.and_then(|tcp| Ok((tcp.peer_addr()?, tcp))) {
                Ok((addr, tcp)) => return (tcp, addr),
                Err(e) => tracing::debug!(error = %e, "scoring API connection dropped"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Err(std::io::ErrorKind::Unsupported.into())
    }
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
                    "401": {"description": "Missing or wrong bearer key"},
                    "503": {"description": "The answer's inference record could not be stored; retry after the Retry-After seconds", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
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
