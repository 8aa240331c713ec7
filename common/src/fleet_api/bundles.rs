//! Offline bundles (`/v1/bundle`): which devices a bundle is made for.

use serde::{Deserialize, Serialize};

/// `GET /v1/bundle`: an offline bundle (see [`crate::bundle`]) for one device or for every
/// device a deployment reaches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
}
