//! edgefleet: the fleet service and the administrators' CLI.
//!
//! The [`service`] wires the fleet's keys, its [`store`], the [`mqtt_session`] and the HTTP
//! [`routes`], which call the [`domain`] layer: registries, the model registry (checked with
//! ONNX Runtime, [`package`]d as OCI images), devices, deployments with target [`condition`]s,
//! per-device manifests ([`render`]) and [`rollouts`], over the [`records`] it stores.
//! Errors are [`error::FleetError`]. The [`cli`] talks to the service through the typed
//! [`client`]; request and response bodies are `edgefleet_common::fleet_api`. [`parsers`]
//! gathers the readers of outside bytes for the fuzz targets (`fuzz/`).

pub mod broker_logins;
pub mod bundle;
pub mod cli;
pub mod client;
pub mod condition;
pub mod dashboard;
pub mod domain;
pub mod embedded_broker;
pub mod error;
pub mod https;
pub mod image_pin;
pub mod iotedge_import;
pub mod metrics;
pub mod mqtt_session;
pub mod package;
pub mod parsers;
pub mod records;
pub mod render;

pub mod rollouts;
pub mod routes;
pub mod service;

pub mod store;
