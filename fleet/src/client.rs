//! A typed, blocking client of the fleet service's HTTP API: the CLI is built on it, and the
//! API's tests call the service through it.

use std::path::Path;
use std::time::Duration;

use edgefleet_common::commands::CommandResult;
use edgefleet_common::fleet_api::{
    AuditEntry, AuditQuery, Role, TokenCreated, TokenRequest, TokenView,
};
use edgefleet_common::fleet_api::{
    BundleQuery, CredentialsRotation, Deleted, DeploymentRequest, DeploymentRevision,
    DeploymentSaved, DeploymentView, DeviceImport, DeviceRemoved, DeviceRequest, DeviceView,
    DevicesImported, ErrorBody, FleetInfo, ManifestView, ModelDetails, ModelVersion,
    ModuleCommandRequest, Package, PackageRequest, ProfileRequest, RegisterModelQuery,
    RegistryRequest, RegistryView, RolloutStatus, TelemetryQuery,
};
use edgefleet_common::model_profile::ModelProfile;
use edgefleet_common::telemetry::TelemetryEnvelope;
use edgefleet_transport::TlsFiles;
use reqwest::blocking::{RequestBuilder, Response};
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no token: set EDGEFLEET_TOKEN (a token from `edgefleet token create`; the first admin's is <data-dir>/admin-token)"
    )]
    NoToken,
    #[error("cannot reach the fleet service at {server}: {source} (set EDGEFLEET_SERVER)")]
    Unreachable {
        server: String,
        source: reqwest::Error,
    },
    #[error(
        "the fleet service at {server} presented a certificate this client does not trust ({reason}): give the CA that signed it with --ca-file FILE (or EDGEFLEET_CA_FILE)"
    )]
    Untrusted { server: String, reason: String },
    #[error("--ca-file: {0}")]
    CaFile(#[source] edgefleet_transport::TlsError),
    /// The service refused the token.
    #[error("{0}")]
    Unauthorized(String),
    /// The token's role may not make the request.
    #[error("{0}")]
    Forbidden(String),
    /// The service refused the request; the message is its answer.
    #[error("{message}")]
    Refused {
        status: reqwest::StatusCode,
        message: String,
    },
    #[error("unexpected answer from the fleet service: {0}")]
    Unexpected(#[source] reqwest::Error),
    #[error("cannot set up the HTTP client: {0}")]
    Setup(#[source] reqwest::Error),
}

/// The fleet service at `server`, as the holder of `token`.
#[derive(Debug)]
pub struct FleetClient {
    server: String,
    token: Option<String>,
    http: reqwest::blocking::Client,
}

impl FleetClient {
    /// A client trusting the system's root certificates for an `https://` server.
    pub fn new(server: &str, token: Option<String>) -> Result<Self, ClientError> {
        Self::with_ca_file(server, token, None)
    }

    /// A client trusting only the CA certificates in `ca_file` (PEM) for an `https://` server,
    /// or the system's roots without one.
    pub fn with_ca_file(
        server: &str,
        token: Option<String>,
        ca_file: Option<&Path>,
    ) -> Result<Self, ClientError> {
        let tls = edgefleet_transport::rustls_client_config(&TlsFiles {
            ca_file: ca_file.map(|p| p.display().to_string()).unwrap_or_default(),
            ..TlsFiles::default()
        })
        .map_err(ClientError::CaFile)?;
        let http = reqwest::blocking::Client::builder()
            // Packaging pushes a whole model; everything else answers in well under this.
            .timeout(Duration::from_secs(600))
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(ClientError::Setup)?;
        Ok(Self {
            server: server.trim_end_matches('/').to_owned(),
            token,
            http,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server)
    }

    fn send(&self, request: RequestBuilder) -> Result<Response, ClientError> {
        let token = self.token.as_deref().ok_or(ClientError::NoToken)?;
        let response = request
            .bearer_auth(token)
            .send()
            .map_err(|source| self.unreachable(source))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let message = response
            .json::<ErrorBody>()
            .map(|b| b.error)
            .unwrap_or_else(|_| format!("the fleet service answered {status}"));
        Err(if status == reqwest::StatusCode::UNAUTHORIZED {
            ClientError::Unauthorized(message)
        } else if status == reqwest::StatusCode::FORBIDDEN {
            ClientError::Forbidden(message)
        } else {
            ClientError::Refused { status, message }
        })
    }

    /// A request that got no answer; a certificate the client refused is told as such.
    fn unreachable(&self, source: reqwest::Error) -> ClientError {
        match certificate_refused(&source) {
            Some(reason) => ClientError::Untrusted {
                server: self.server.clone(),
                reason,
            },
            None => ClientError::Unreachable {
                server: self.server.clone(),
                source,
            },
        }
    }

    fn json<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, ClientError> {
        self.send(request)?.json().map_err(ClientError::Unexpected)
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.json(self.http.get(self.url(path)))
    }

    pub fn info(&self) -> Result<FleetInfo, ClientError> {
        self.get("/v1/fleet")
    }

    pub fn put_registry(
        &self,
        name: &str,
        request: &RegistryRequest,
    ) -> Result<RegistryView, ClientError> {
        self.json(
            self.http
                .put(self.url(&format!("/v1/registries/{name}")))
                .json(request),
        )
    }

    pub fn registries(&self) -> Result<Vec<RegistryView>, ClientError> {
        self.get("/v1/registries")
    }

    pub fn register_model(
        &self,
        query: &RegisterModelQuery,
        onnx: Vec<u8>,
    ) -> Result<ModelVersion, ClientError> {
        self.json(
            self.http
                .post(self.url("/v1/models"))
                .query(query)
                .body(onnx),
        )
    }

    pub fn models(&self) -> Result<Vec<ModelVersion>, ClientError> {
        self.get("/v1/models")
    }

    pub fn package_model(
        &self,
        name: &str,
        version: &str,
        request: &PackageRequest,
    ) -> Result<Package, ClientError> {
        let path = format!("/v1/models/{name}/{version}/package");
        self.json(self.http.post(self.url(&path)).json(request))
    }

    pub fn profile_model(
        &self,
        name: &str,
        version: &str,
        request: &ProfileRequest,
    ) -> Result<ModelProfile, ClientError> {
        let path = format!("/v1/models/{name}/{version}/profile");
        self.json(self.http.post(self.url(&path)).json(request))
    }

    pub fn delete_model(&self, name: &str, version: &str) -> Result<Deleted, ClientError> {
        self.json(
            self.http
                .delete(self.url(&format!("/v1/models/{name}/{version}"))),
        )
    }

    pub fn put_device(&self, id: &str, request: &DeviceRequest) -> Result<DeviceView, ClientError> {
        self.json(
            self.http
                .put(self.url(&format!("/v1/devices/{id}")))
                .json(request),
        )
    }

    pub fn import_devices(&self, devices: &[DeviceImport]) -> Result<DevicesImported, ClientError> {
        self.json(self.http.post(self.url("/v1/device-imports")).json(devices))
    }

    pub fn devices(&self) -> Result<Vec<DeviceView>, ClientError> {
        self.get("/v1/devices")
    }

    pub fn device(&self, id: &str) -> Result<DeviceView, ClientError> {
        self.get(&format!("/v1/devices/{id}"))
    }

    /// The device's agent configuration file (TOML).
    pub fn remove_device(&self, id: &str) -> Result<DeviceRemoved, ClientError> {
        self.json(self.http.delete(self.url(&format!("/v1/devices/{id}"))))
    }

    pub fn delete_registry(&self, name: &str) -> Result<Deleted, ClientError> {
        self.json(
            self.http
                .delete(self.url(&format!("/v1/registries/{name}"))),
        )
    }

    pub fn model(&self, name: &str, version: &str) -> Result<ModelDetails, ClientError> {
        self.get(&format!("/v1/models/{name}/{version}"))
    }

    /// The registered ONNX file of a version.
    pub fn model_onnx(&self, name: &str, version: &str) -> Result<Vec<u8>, ClientError> {
        let request = self
            .http
            .get(self.url(&format!("/v1/models/{name}/{version}/onnx")));
        let bytes = self
            .send(request)?
            .bytes()
            .map_err(ClientError::Unexpected)?;
        Ok(bytes.to_vec())
    }

    pub fn rotate_credentials(&self, id: &str) -> Result<CredentialsRotation, ClientError> {
        self.json(
            self.http
                .post(self.url(&format!("/v1/devices/{id}/rotate-credentials"))),
        )
    }

    pub fn device_config(&self, id: &str) -> Result<String, ClientError> {
        let request = self.http.get(self.url(&format!("/v1/devices/{id}/config")));
        self.send(request)?.text().map_err(ClientError::Unexpected)
    }

    pub fn command(
        &self,
        id: &str,
        request: &ModuleCommandRequest,
    ) -> Result<CommandResult, ClientError> {
        let path = format!("/v1/devices/{id}/commands");
        self.json(self.http.post(self.url(&path)).json(request))
    }

    pub fn put_deployment(
        &self,
        name: &str,
        request: &DeploymentRequest,
    ) -> Result<DeploymentSaved, ClientError> {
        let path = format!("/v1/deployments/{name}");
        self.json(self.http.put(self.url(&path)).json(request))
    }

    pub fn deployments(&self) -> Result<Vec<DeploymentView>, ClientError> {
        self.get("/v1/deployments")
    }

    pub fn deployment(&self, name: &str) -> Result<DeploymentView, ClientError> {
        self.get(&format!("/v1/deployments/{name}"))
    }

    pub fn deployment_history(&self, name: &str) -> Result<Vec<DeploymentRevision>, ClientError> {
        self.get(&format!("/v1/deployments/{name}/history"))
    }

    pub fn delete_deployment(&self, name: &str) -> Result<Deleted, ClientError> {
        self.json(
            self.http
                .delete(self.url(&format!("/v1/deployments/{name}"))),
        )
    }

    pub fn manifest(&self, device: &str) -> Result<ManifestView, ClientError> {
        self.get(&format!("/v1/manifests/{device}"))
    }

    pub fn rollout(&self, deployment: &str) -> Result<RolloutStatus, ClientError> {
        self.get(&format!("/v1/rollouts/{deployment}"))
    }

    /// `pause`, `resume`, `abort` or `rollback` the staged rollout of `deployment`.
    pub fn rollout_action(
        &self,
        deployment: &str,
        action: &str,
    ) -> Result<RolloutStatus, ClientError> {
        self.json(
            self.http
                .post(self.url(&format!("/v1/rollouts/{deployment}/{action}"))),
        )
    }

    /// Device `device`'s records as `query` asks (see [`TelemetryQuery`]).
    pub fn telemetry(
        &self,
        device: &str,
        query: &TelemetryQuery,
    ) -> Result<Vec<TelemetryEnvelope>, ClientError> {
        let request = self.http.get(self.url(&format!("/v1/telemetry/{device}")));
        self.json(request.query(query))
    }

    /// An offline bundle, as a response to read (its length is known beforehand).
    pub fn bundle(&self, query: &BundleQuery) -> Result<Response, ClientError> {
        self.send(self.http.get(self.url("/v1/bundle")).query(query))
    }

    /// Stores an outbox export; answers the receipt the device trims with.
    pub fn import_telemetry(
        &self,
        export: Vec<u8>,
    ) -> Result<edgefleet_common::outbox_export::SignedReceipt, ClientError> {
        self.json(
            self.http
                .post(self.url("/v1/telemetry-imports"))
                .body(export),
        )
    }

    pub fn tokens(&self) -> Result<Vec<TokenView>, ClientError> {
        self.get("/v1/tokens")
    }

    /// Creates the token `name` with `role`; the answer holds the token, shown this once.
    pub fn create_token(&self, name: &str, role: Role) -> Result<TokenCreated, ClientError> {
        self.json(
            self.http
                .post(self.url(&format!("/v1/tokens/{name}")))
                .json(&TokenRequest { role }),
        )
    }

    pub fn revoke_token(&self, name: &str) -> Result<Deleted, ClientError> {
        self.json(self.http.delete(self.url(&format!("/v1/tokens/{name}"))))
    }

    /// The audit log as `query` asks, newest first.
    pub fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, ClientError> {
        self.json(self.http.get(self.url("/v1/audit")).query(query))
    }
}

/// The rustls error in `error`'s chain when the server's certificate was refused. An
/// `io::Error` hides the error it wraps from `source()`, so each one is opened as well.
fn certificate_refused(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(refused @ rustls::Error::InvalidCertificate(_)) =
            e.downcast_ref::<rustls::Error>()
        {
            return Some(refused.to_string());
        }
        next = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static))
            .or_else(|| e.source());
    }
    None
}
