//! Edgefleet contracts shared by the fleet service and the device agent.
//!
//! Everything that crosses a process boundary is defined here and only here: the signed
//! per-device deployment [`manifest`], the [`reported`] state a device publishes, the
//! [`telemetry`] envelope and bodies, fleet [`commands`] and their results, the fleet service's HTTP API ([`fleet_api`]), the agent's
//! configuration file ([`agent_config`]), Docker [`create_options`] of container modules, the MQTT [`topics`], the model module image format
//! ([`module_image`]), manifest [`signing`] (ed25519 over a hash tree of canonical serializations) and
//! registry password [`sealing`] (age, X25519), the offline [`bundle`] format and [`outbox_export`]s with their receipts. The crate does no I/O and knows no
//! transport, so both sides and every test can use it without a runtime.

pub mod agent_config;
pub mod authenticity;
pub mod broker_url;
pub mod bundle;
pub mod commands;
pub mod create_options;
pub mod delivery;
pub mod fleet_api;
pub mod manifest;
pub mod model_profile;
pub mod module_image;
pub mod outbox_export;
pub mod reported;
pub mod sealing;
pub mod signing;
pub mod telemetry;
pub mod topics;

/// Milliseconds since the Unix epoch: the one time representation of every contract.
pub type UnixMillis = u64;
