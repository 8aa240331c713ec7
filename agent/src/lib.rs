//! edgefleet-agent: the on-device daemon.
//!
//! [`agent`] wires the tasks: the [`link`] (MQTT session), the [`store`] (one redb file), the
//! telemetry [`outbox`], the [`puller`] (OCI images into a content-addressed cache) and the
//! served [`model_module`]s with their [`scoring_api`]. The [`reconciler`] decides what to do
//! with a manifest. ONNX models are run by `edgefleet-onnx`; MQTT and TLS are set up by
//! `edgefleet-transport`.

pub mod agent;
pub mod config;
pub mod container_runtime;
pub mod create_options;
pub mod link;
pub mod model_module;
pub mod outbox;
pub mod puller;
pub mod reconciler;
pub mod restart_policy;
pub mod scoring_api;
pub mod status_socket;
pub mod store;
