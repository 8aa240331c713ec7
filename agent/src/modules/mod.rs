//! The device's modules: the [`supervisor`] routes manifests, as the [`reconciler`] plans them,
//! to one task per module ([`model_task`], [`container_task`], which share [`module_task`]),
//! whose answers become the manifest's outcome ([`apply_progress`]). Tasks put their module's
//! state on the [`status_board`]; container restarts follow the [`restart_policy`]; MQTT inputs
//! reach served models through [`mqtt_input`]; images no manifest uses leave through
//! [`image_cleanup`].

pub(crate) mod apply_progress;
pub(crate) mod container_task;
pub(crate) mod image_cleanup;
pub(crate) mod model_task;
pub(crate) mod module_task;
pub(crate) mod mqtt_input;
pub(crate) mod reconciler;
pub(crate) mod restart_policy;
pub(crate) mod status_board;
pub(crate) mod supervisor;
pub(crate) mod task_driver;
