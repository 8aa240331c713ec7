//! Scoring messages from a model module's MQTT input topic: the result is an inference
//! record, a message that cannot be scored an event record naming what was wrong.

use std::sync::Arc;
use std::time::Instant;

use edgefleet_common::telemetry::{EventRecord, InferenceRecord, InputSource, TelemetryRecord};

use crate::model_module::ModelModule;
use crate::outbox::Outbox;

/// Scores `payload` with `module` on the blocking pool and records the result; returns at once.
pub(crate) fn score(module: Arc<ModelModule>, outbox: Outbox, payload: Vec<u8>) {
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
        if let Err(e) = outbox.record(&module.name, record).await {
            tracing::warn!(module = %module.name, error = %e, "inference record not accepted");
        }
    });
}
