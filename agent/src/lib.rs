//! edgefleet-agent: the on-device daemon.
//!
//! [`agent`] wires the tasks: the [`link`] (MQTT session), the [`store`] (one redb file), the
//! telemetry [`outbox`], the [`puller`] (OCI images into a content-addressed cache) and the
//! served [`model_module`]s with their [`scoring_api`]. The [`reconciler`] decides what to do
//! with a manifest; [`model`] and [`tensor_json`] run ONNX models and convert their data.

pub mod agent;
pub mod config;
pub mod container_runtime;
pub mod create_options;
pub mod link;
pub mod model;
pub mod model_module;
pub mod outbox;
pub mod puller;
pub mod reconciler;
pub mod restart_policy;
pub mod scoring_api;
pub mod status_socket;
pub mod store;
pub mod tensor_json;

/// Installs ring as rustls' process-wide crypto provider. The agent builds rustls without a
/// default provider (ring needs no C toolchain beyond cc, which keeps cross builds simple), so
/// every TLS user calls this first; later calls do nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
