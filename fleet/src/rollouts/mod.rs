//! Staged rollouts, decided without I/O: the [`phases`] a deployment's devices move in and the
//! health of a moved device, one [`step`] of a running rollout from what the fleet observes,
//! and the rollout [`status`] of a deployment as the API shows it. The shell that reads and
//! writes the store around them is `domain/rollouts.rs`.

pub mod phases;
pub mod status;
pub mod step;

#[cfg(test)]
mod fixtures;
