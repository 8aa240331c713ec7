//! edgefleet-agent: the on-device daemon.
//!
//! [`agent`] opens the device's services and starts the tasks; the [`supervisor`] routes:
//! manifests from the [`link`] (the MQTT session) go, as the [`reconciler`] plans them, to one
//! task per module ([`model_task`], [`container_task`]), whose answers become the manifest's
//! outcome ([`apply_progress`]); MQTT inputs go to the served models ([`mqtt_input`]); fleet
//! commands go to the modules. Tasks put their module's state on the [`status_board`], which
//! the [`reporter`] publishes. The [`store`] (one redb file) keeps manifests, served versions,
//! the [`puller`]'s cache index and the telemetry [`outbox`] (made durable first by the
//! [`outbox_journal`]). [`cli`] is the command line.
//! ONNX models are run by `edgefleet-onnx`; MQTT and TLS are set up by `edgefleet-transport`.

pub mod agent;
pub(crate) mod apply_progress;
pub(crate) mod batch_scoring;
pub(crate) mod bundle_import;
pub(crate) mod check;
pub mod cli;
pub mod config;
pub(crate) mod container_runtime;
pub(crate) mod container_task;
pub(crate) mod control_socket;
pub(crate) mod delivery;
pub mod disk_budget;
pub(crate) mod drop_dir;
pub(crate) mod image_cleanup;
pub mod link;
pub(crate) mod metrics;
pub(crate) mod model_module;
pub(crate) mod model_task;
pub(crate) mod module_task;
pub(crate) mod mqtt_input;
pub mod outbox;
pub(crate) mod outbox_journal;
pub mod puller;
pub(crate) mod reconciler;
pub(crate) mod reporter;
pub(crate) mod resident_memory;
pub(crate) mod restart_policy;
pub(crate) mod scoring_api;
pub(crate) mod status_board;
pub(crate) mod status_socket;
pub mod store;
pub(crate) mod supervisor;
