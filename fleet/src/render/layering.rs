//! Which deployments apply to a device and in what order: one base deployment chosen by
//! priority, then layered deployments on top, each adding or overriding modules (Azure IoT
//! Edge's semantics). A staged rollout that has not moved the device yet gives it the previous
//! revision of its deployment.

use std::collections::BTreeMap;

use super::catalog::Catalog;
use crate::records::{Deployment, Device};

/// The deployments that apply to `device`, in the order they apply: its base deployment (the
/// highest priority among base deployments whose condition selects it, ties to the newest),
/// then its layered deployments in ascending priority (then age), each adding or overriding
/// modules — Azure IoT Edge's semantics.
pub fn applicable<'a>(device: &Device, catalog: &'a Catalog) -> Vec<&'a Deployment> {
    let selecting = catalog
        .deployments
        .iter()
        .filter_map(|current| match catalog.held_back.get(&current.0.name) {
            Some(held) if !held.rollout.moved(&device.id) => held.previous.as_ref(),
            _ => Some(current),
        })
        .filter(|(_, condition)| condition.matches(&device.id, &device.tags))
        .map(|(deployment, _)| deployment);
    let order = |d: &&Deployment| (d.priority, d.created_seq);
    let base = selecting.clone().filter(|d| !d.layered).max_by_key(order);
    let mut layers: Vec<&Deployment> = selecting.filter(|d| d.layered).collect();
    layers.sort_by_key(order);
    base.into_iter().chain(layers).collect()
}

/// For each module name, the deployment it comes from on `device` (see [`applicable`]).
pub fn winners<'a>(device: &Device, catalog: &'a Catalog) -> BTreeMap<String, &'a Deployment> {
    let mut won = BTreeMap::new();
    for deployment in applicable(device, catalog) {
        for module in deployment.modules.keys() {
            won.insert(module.clone(), deployment);
        }
    }
    won
}
