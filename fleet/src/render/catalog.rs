//! What rendering reads: the registries as devices see them, the model versions, the
//! deployments with their conditions parsed, and the staged rollouts holding devices back on a
//! previous revision. Built once for a whole batch of devices, so conditions are parsed and
//! registry passwords opened once.

use std::collections::BTreeMap;

use crate::condition::Condition;
use crate::records::{Deployment, ModelVersion, Rollout};

/// Everything rendering reads, with deployment conditions parsed and registry passwords
/// opened once for a whole batch of devices.
#[derive(Debug, Default)]
pub struct Catalog {
    pub registries: BTreeMap<String, RegistryAccess>,
    /// Model name -> versions, ascending.
    pub models: BTreeMap<String, Vec<ModelVersion>>,
    pub deployments: Vec<(Deployment, Condition)>,
    /// Deployments whose staged rollout still holds devices on the previous revision.
    pub held_back: BTreeMap<String, HeldBack>,
}

/// A deployment's rollout and the revision devices not moved yet keep.
#[derive(Debug)]
pub struct HeldBack {
    pub rollout: Rollout,
    /// The previous revision (`None`: the deployment is new, so it gives them nothing).
    pub previous: Option<(Deployment, Condition)>,
}

/// A registry as devices see it.
#[derive(Debug, Clone)]
pub struct RegistryAccess {
    pub address: String,
    pub username: String,
    pub password: String,
    /// Names this password without revealing it (a digest of the fleet's sealed-at-rest copy,
    /// which changes whenever the password is set), so a device's sealed copy is reused until
    /// the password changes.
    pub password_id: String,
}
