//! Images on the device: the [`puller`] brings model module images into the content-addressed
//! cache (from a [`registry`], or failing with a [`pull_error`]), the [`container_runtime`] runs container modules on the Docker engine, and the
//! [`disk_budget`] says whether either may take more of the disk.

pub(crate) mod container_runtime;
pub mod disk_budget;
pub mod pull_error;
pub mod puller;
pub mod registry;
pub(crate) mod saved_image;
