//! A device without a network: [`bundle_import`] applies a signed offline bundle, and
//! [`drop_dir`] watches the directory bundles are dropped into.

pub(crate) mod bundle_import;
pub(crate) mod drop_dir;
