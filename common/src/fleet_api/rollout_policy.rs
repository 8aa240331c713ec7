//! A deployment's rollout policy: how a new revision moves through its devices in phases
//! (canary, batches, growth, rate), the health gates between phases, and the phase sizes
//! written as a device count or a percentage.

use serde::{Deserialize, Serialize};

use super::is_default;

/// How a deployment's new revision reaches its devices: a canary phase, then batches, each
/// phase gated on the health of the devices already moved (Greengrass' rollout rate and abort
/// thresholds, hawkBit's rollout groups). Absent: every targeted device at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutPolicy {
    /// Devices of the first phase: a count (`2`) or a share (`"10%"`), chosen by a hash of the
    /// deployment and device names, so every rollout of the deployment picks the same ones.
    #[serde(default = "PhaseSize::one")]
    pub canary: PhaseSize,
    /// Only devices this condition selects are canaries (default: any targeted device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_target: Option<String>,
    /// Devices of the phase after the canary.
    #[serde(default = "PhaseSize::one")]
    pub batch: PhaseSize,
    /// Whether later phases keep the batch size or double it.
    #[serde(default, skip_serializing_if = "is_default")]
    pub growth: Growth,
    /// At most this many devices start the new revision per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_minute: Option<u32>,
    /// How long a phase's devices must stay healthy before the next phase starts.
    #[serde(default = "default_soak_seconds")]
    pub soak_seconds: u64,
    /// Failed devices in one phase that abort the rollout and roll it back.
    #[serde(default = "PhaseSize::one")]
    pub max_failures: PhaseSize,
    /// A model module whose inference error rate over the soak exceeds this fails its device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_percent: Option<f64>,
    /// A model module whose p99 latency exceeds this fails its device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99_ms: Option<u64>,
    /// A device silent this long after its phase started no longer holds the phase; it is
    /// reported as timed out and moves when it returns.
    #[serde(default = "default_offline_timeout_seconds")]
    pub offline_timeout_seconds: u64,
}

fn default_soak_seconds() -> u64 {
    30
}

fn default_offline_timeout_seconds() -> u64 {
    600
}

/// A number of devices, or a share of the targeted ones (`"25%"`, rounded up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseSize {
    Devices(u32),
    Percent(u32),
}

impl PhaseSize {
    fn one() -> Self {
        Self::Devices(1)
    }

    /// How many of `total` devices.
    pub fn of(self, total: usize) -> usize {
        match self {
            Self::Devices(n) => n as usize,
            Self::Percent(p) => (total * p as usize).div_ceil(100),
        }
    }
}

impl Serialize for PhaseSize {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Devices(n) => serializer.serialize_u32(*n),
            Self::Percent(p) => serializer.serialize_str(&format!("{p}%")),
        }
    }
}

impl<'de> Deserialize<'de> for PhaseSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Devices(u32),
            Text(String),
        }
        let invalid = |text: &str| {
            serde::de::Error::custom(format!(
                "{text:?} is not a device count (2) or a percentage (\"10%\")"
            ))
        };
        match Written::deserialize(deserializer)? {
            Written::Devices(n) => Ok(Self::Devices(n)),
            Written::Text(text) => match text.trim().strip_suffix('%') {
                Some(p) => p
                    .trim()
                    .parse()
                    .ok()
                    .filter(|p| *p <= 100)
                    .map(Self::Percent)
                    .ok_or_else(|| invalid(&text)),
                None => text
                    .trim()
                    .parse()
                    .map(Self::Devices)
                    .map_err(|_| invalid(&text)),
            },
        }
    }
}

/// How phases after the first batch grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Growth {
    /// Every batch has the batch size.
    #[default]
    Fixed,
    /// Each batch is twice the one before.
    Exponential,
}
