//! The telemetry envelope and the bodies it carries: every record a device sends, from
//! inference results to metrics.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::UnixMillis;
use crate::reported::{ModuleState, OutboxState};

/// One telemetry record. `seq` increases strictly per device across restarts, so the fleet
/// detects both loss (a gap) and duplicates (a repeat after a redelivery). On the wire the
/// record is two members: `kind` and `body`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TelemetryEnvelope {
    pub device_id: String,
    pub module: String,
    pub seq: u64,
    pub timestamp_ms: UnixMillis,
    #[serde(flatten)]
    pub record: TelemetryRecord,
}

/// A telemetry message, what a device publishes on `telemetry/<module>`: a JSON array of up to
/// [`MAX_MESSAGE_RECORDS`] envelopes of that module in `seq` order. A device with a backlog
/// sends few large messages instead of one per record: the broker's and the fleet's work goes
/// by message, not by byte. A single envelope object is read as a message of one.
pub type TelemetryMessage = Vec<TelemetryEnvelope>;

/// Most envelopes one telemetry message carries.
pub const MAX_MESSAGE_RECORDS: usize = 64;
/// Most bytes of envelopes one telemetry message carries (a larger record goes alone).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// The envelopes of a telemetry message, each as its JSON text (not yet checked).
pub fn message_envelopes(payload: &[u8]) -> Result<Vec<&RawValue>, serde_json::Error> {
    match payload.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => serde_json::from_slice(payload),
        _ => serde_json::from_slice(payload).map(|one| vec![one]),
    }
}

/// A telemetry message of envelopes given as their JSON text.
pub fn telemetry_message<'a>(envelopes: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = vec![b'['];
    for (i, json) in envelopes.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(json);
    }
    out.push(b']');
    out
}

/// What a record says, by kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", content = "body", rename_all = "kebab-case")]
pub enum TelemetryRecord {
    /// The result of one scoring request (HTTP or MQTT input).
    Inference(InferenceRecord),
    /// The agent's periodic measurement of its modules and outbox.
    Metric(AgentMetrics),
    /// Something that happened (an input that could not be scored, ...).
    Event(EventRecord),
    /// Sampled inputs and outputs for model monitoring.
    CollectedData(CollectedData),
}

impl TelemetryRecord {
    pub fn kind(&self) -> TelemetryKind {
        match self {
            Self::Inference(_) => TelemetryKind::Inference,
            Self::Metric(_) => TelemetryKind::Metric,
            Self::Event(_) => TelemetryKind::Event,
            Self::CollectedData(_) => TelemetryKind::CollectedData,
        }
    }
}

/// The kinds of records, as `kind` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TelemetryKind {
    Inference,
    Metric,
    Event,
    CollectedData,
}

/// Where a scored input came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum InputSource {
    /// `POST /score` on the module's scoring API.
    Http,
    /// The module's MQTT input topic.
    Mqtt,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InferenceRecord {
    pub source: InputSource,
    pub latency_us: u64,
    /// The response body: one member per model output.
    pub outputs: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventRecord {
    /// Where the input that caused it came from, when an input did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<InputSource>,
    /// What went wrong, for the operator.
    pub error: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CollectedData {
    pub inputs: serde_json::Value,
    pub outputs: serde_json::Value,
}

/// The agent's periodic metrics (module `_agent`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentMetrics {
    pub modules: BTreeMap<String, ModuleState>,
    pub outbox: OutboxState,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_envelope_carries_its_record_as_kind_and_body() {
        let envelope = TelemetryEnvelope {
            device_id: "gw".into(),
            module: "m".into(),
            seq: 7,
            timestamp_ms: 1,
            record: TelemetryRecord::Inference(InferenceRecord {
                source: InputSource::Mqtt,
                latency_us: 12,
                outputs: json!({"variable": [[1.5]]}),
            }),
        };
        let wire = serde_json::to_value(&envelope).expect("json");
        assert_eq!(
            wire,
            json!({"deviceId": "gw", "module": "m", "seq": 7, "timestampMs": 1,
                   "kind": "inference",
                   "body": {"source": "mqtt", "latencyUs": 12, "outputs": {"variable": [[1.5]]}}})
        );
        let back: TelemetryEnvelope = serde_json::from_value(wire).expect("back");
        assert_eq!(back, envelope);
        assert_eq!(back.record.kind(), TelemetryKind::Inference);
    }

    #[test]
    fn a_message_is_an_array_of_envelopes_or_one_envelope() {
        let one = br#"{"seq":1}"#;
        let two = br#"{"seq":2}"#;
        let message = telemetry_message([&one[..], &two[..]]);
        assert_eq!(message, br#"[{"seq":1},{"seq":2}]"#);
        let texts: Vec<_> = message_envelopes(&message)
            .expect("array")
            .iter()
            .map(|r| r.get().to_owned())
            .collect();
        assert_eq!(texts, [r#"{"seq":1}"#, r#"{"seq":2}"#]);
        assert_eq!(message_envelopes(b" {\"seq\":3}").expect("object").len(), 1);
        assert!(message_envelopes(b"[{\"seq\":1},").is_err());
    }
}
