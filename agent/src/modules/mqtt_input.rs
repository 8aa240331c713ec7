//! Scoring messages from a model module's MQTT input topic: the result is an inference
//! record, a message that cannot be scored an event record naming what was wrong. The broker
//! is told it can forget a message (its [`InputAck`]) only once that record is durable, so an
//! input the agent accepted is never lost; a malformed one is acknowledged too (recorded as an
//! event), so it is never retried forever.

use std::sync::Arc;
use std::time::Instant;

use edgefleet_common::telemetry::{EventRecord, InferenceRecord, InputSource, TelemetryRecord};

use crate::serving::model_module::ModelModule;
use crate::telemetry::link::InputAck;
use crate::telemetry::outbox::Outbox;

/// Scores `payload` with `module` on the blocking pool, records the result and acknowledges
/// the message; returns at once.
pub(crate) fn score(module: Arc<ModelModule>, outbox: Outbox, payload: Vec<u8>, ack: InputAck) {
    tokio::spawn(async move {
        let started = Instant::now();
        let scored = tokio::task::spawn_blocking({
            let module = module.clone();
            move || {
                let request: serde_json::Value = serde_json::from_slice(&payload)
                    .map_err(|e| format!("input is not valid JSON: {e}"))?;
                module
                    .active()
                    .model
                    .score(&request)
                    .map_err(|e| e.to_string())
            }
        })
        .await
        .unwrap_or_else(|e| Err(format!("inference task failed: {e}")));
        let latency_us = started.elapsed().as_micros() as u64;
        module.observe(latency_us, scored.is_ok());
        let record = match scored {
            Ok(outputs) => TelemetryRecord::Inference(InferenceRecord {
                source: InputSource::Mqtt,
                latency_us,
                outputs,
            }),
            Err(error) => TelemetryRecord::Event(EventRecord {
                source: Some(InputSource::Mqtt),
                error,
            }),
        };
        record_then_ack(&outbox, &module.name, record, ack).await;
    });
}

/// Records that an input could not be taken (`error` says why) and acknowledges it.
pub(crate) fn refuse(outbox: &Outbox, module: &str, error: String, ack: InputAck) {
    tracing::warn!(%module, %error, "MQTT input not scored");
    let outbox = outbox.clone();
    let module = module.to_owned();
    tokio::spawn(async move {
        let record = TelemetryRecord::Event(EventRecord {
            source: Some(InputSource::Mqtt),
            error,
        });
        record_then_ack(&outbox, &module, record, ack).await;
    });
}

/// Acknowledges the input once `record` is durable; when it cannot be recorded, the input is
/// left to the broker, which delivers it again after the next connect.
async fn record_then_ack(outbox: &Outbox, module: &str, record: TelemetryRecord, ack: InputAck) {
    match outbox.record(module, record).await {
        Ok(_) => ack.done(),
        Err(e) => {
            tracing::warn!(%module, error = %e, "input result not recorded; the broker keeps the input")
        }
    }
}
