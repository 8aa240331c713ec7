//! Why pulling an image failed, named for the operator: the registry, the image and the cause.

use edgefleet_common::module_image::{MODEL_PATH, MODULE_JSON_PATH};

use crate::images::disk_budget::OverBudget;

/// Why a pull failed. The display names the registry, the image and the cause.
#[derive(Debug, thiserror::Error)]
#[error("pulling {image} from registry {registry}: {cause}")]
pub struct PullError {
    pub registry: String,
    pub image: String,
    pub cause: PullCause,
}

#[derive(Debug, thiserror::Error)]
pub enum PullCause {
    #[error(
        "unauthorized: the registry refused {who} (check the registry's user name and password in the fleet)"
    )]
    Unauthorized { who: String },
    #[error("not found: {0}")]
    NotFound(String),
    #[error("the image reference is not pinned by digest (expected repository@sha256:...)")]
    NotPinned,
    #[error("invalid image reference: {0}")]
    BadReference(String),
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error(transparent)]
    DiskBudget(#[from] OverBudget),
    #[error("not a model module image: no {MODEL_PATH} in its layers")]
    NotAModel,
    #[error("invalid {MODULE_JSON_PATH}: {0}")]
    BadModuleJson(String),
    #[error("unsupported media type {0}")]
    MediaType(String),
    #[error("registry error: {0}")]
    Registry(String),
    #[error("cache: {0}")]
    Cache(String),
}

pub(crate) fn pull_error(image: &str, cause: PullCause) -> PullError {
    PullError {
        registry: image.split('/').next().unwrap_or_default().to_owned(),
        image: image.to_owned(),
        cause,
    }
}
