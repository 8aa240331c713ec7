//! edgefleet-agent: the on-device daemon.
//!
//! [`agent`] opens the device's services and starts the tasks. Its rooms:
//! - [`modules`]: the supervisor, the reconciler and one task per module;
//! - [`serving`]: models served in-process behind the scoring API, and batch scoring;
//! - [`images`]: pulling model images into the cache, the Docker engine, the disk budget;
//! - [`telemetry`]: the outbox and its journal, the MQTT link, the delivery window, the reporter;
//! - [`offline`]: bundles applied without a network;
//! - [`local`]: the control and status sockets for programs on the device.
//!
//! The [`store`] (one redb file) keeps manifests, served versions, the puller's cache index,
//! the telemetry outbox and the newest MQTT password the fleet sent ([`broker_login`]). [`cli`] is the command line, [`check`] its `check` command.
//! [`parsers`] gathers the readers of outside bytes for the fuzz targets (`fuzz/`).
//! ONNX models are run by `edgefleet-onnx`; MQTT and TLS are set up by `edgefleet-transport`.

pub mod agent;
pub(crate) mod broker_login;
pub(crate) mod check;
pub mod cli;
pub mod config;
pub mod images;
pub(crate) mod local;
pub(crate) mod metrics;
pub(crate) mod modules;
pub(crate) mod offline;
pub mod parsers;
pub(crate) mod serving;
pub mod store;
pub mod telemetry;
