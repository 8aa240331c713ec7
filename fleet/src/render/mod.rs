//! Rendering: from deployments, models and registries to one signed manifest per device.
//! Pure: no I/O, so the fleet service, the benchmark and the tests share it.
//!
//! What rendering reads is the [`Catalog`]; `layering` decides which deployments apply to a
//! device and which of them each module comes from; `modules` turns a deployment's module
//! into the manifest's (model references resolved, pinned images, the registry that pulls
//! them); `device` renders one device's manifest, sealing registry passwords to it; and
//! `signing` signs the new manifests in batches.

mod catalog;
mod device;
mod layering;
mod modules;
mod signing;

pub use self::catalog::{Catalog, HeldBack, RegistryAccess};
pub use self::device::{Draft, Render, render_device};
pub use self::layering::{applicable, winners};
pub(crate) use self::modules::module_for;
pub use self::modules::resolve_model;
pub use self::signing::{SIGNING_BATCH, sign};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    #[error("model {0:?} is not registered (see `edgefleet model list`)")]
    UnknownModel(String),
    #[error("model reference {0:?} is not name:latest or name:<version>")]
    BadModelReference(String),
    #[error(
        "model {0} has not been packaged yet (run `edgefleet model package {0} --registry ...`)"
    )]
    NotPackaged(String),
    #[error("registry {0:?} is not configured (see `edgefleet registry list`)")]
    UnknownRegistry(String),
    #[error("module {module}: {reason}")]
    Module { module: String, reason: String },
    #[error("device {device}: {reason}")]
    Device { device: String, reason: String },
}

#[cfg(test)]
mod tests;
