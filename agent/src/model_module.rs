//! A model module being served: the active model version (swapped atomically on activation,
//! so requests in flight finish on the version they started with), its serving options, its
//! inference counters, and the activation canary.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use edgefleet_common::manifest::ModelServing;
use edgefleet_common::module_image::{ElementType, ModuleMetadata, Sample, ValueSpec};
use edgefleet_common::reported::InferenceStats;
use serde_json::{Value, json};

use crate::model::Model;

/// One loaded version of a model module.
#[derive(Debug)]
pub struct ActiveModel {
    pub model: Model,
    /// From the image's `model/module.json`, or made from the model itself.
    pub metadata: ModuleMetadata,
    pub image: String,
    pub digest: String,
    pub blobs: Vec<String>,
}

/// Recent latencies kept for the p50/p99 summary.
const LATENCY_WINDOW: usize = 2048;

#[derive(Debug, Default)]
struct Counters {
    count: u64,
    errors: u64,
    latencies_us: Vec<u32>,
    next: usize,
}

/// A served model module.
#[derive(Debug)]
pub struct ModelModule {
    pub name: String,
    active: ArcSwap<ActiveModel>,
    serving: ArcSwap<ModelServing>,
    counters: Mutex<Counters>,
}

impl ModelModule {
    pub fn new(name: &str, active: ActiveModel, serving: ModelServing) -> Self {
        Self {
            name: name.to_owned(),
            active: ArcSwap::from_pointee(active),
            serving: ArcSwap::from_pointee(serving),
            counters: Mutex::new(Counters::default()),
        }
    }

    /// The version serving now; holding the `Arc` keeps it alive across a swap.
    pub fn active(&self) -> Arc<ActiveModel> {
        self.active.load_full()
    }

    /// Makes `next` the serving version. Requests that hold the previous one finish on it.
    pub fn swap(&self, next: ActiveModel) {
        self.active.store(Arc::new(next));
    }

    pub fn serving(&self) -> Arc<ModelServing> {
        self.serving.load_full()
    }

    pub fn set_serving(&self, serving: ModelServing) {
        self.serving.store(Arc::new(serving));
    }

    pub fn observe(&self, latency_us: u64, ok: bool) {
        let Ok(mut c) = self.counters.lock() else {
            return;
        };
        c.count += 1;
        if !ok {
            c.errors += 1;
        }
        let sample = u32::try_from(latency_us).unwrap_or(u32::MAX);
        if c.latencies_us.len() < LATENCY_WINDOW {
            c.latencies_us.push(sample);
        } else {
            let i = c.next;
            c.latencies_us[i] = sample;
        }
        c.next = (c.next + 1) % LATENCY_WINDOW;
    }

    pub fn stats(&self) -> InferenceStats {
        let Ok(c) = self.counters.lock() else {
            return InferenceStats::default();
        };
        let mut sorted = c.latencies_us.clone();
        sorted.sort_unstable();
        InferenceStats {
            count: c.count,
            errors: c.errors,
            latency_p50_us: percentile(&sorted, 0.50),
            latency_p99_us: percentile(&sorted, 0.99),
        }
    }
}

/// The `q` quantile (0..=1) of ascending `sorted` values, nearest rank.
fn percentile(sorted: &[u32], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    u64::from(sorted[i.min(sorted.len() - 1)])
}

/// Metadata for an image without `module.json`: what the model declares, no sample.
pub fn metadata_from_model(name: &str, model: &Model) -> ModuleMetadata {
    ModuleMetadata {
        schema_version: edgefleet_common::module_image::MODULE_SCHEMA_VERSION.to_owned(),
        name: name.to_owned(),
        version: 0,
        description: String::new(),
        inputs: model.inputs().to_vec(),
        outputs: model.outputs().to_vec(),
        sample: None,
    }
}

/// A request body with a row of non-zero values for every input (dynamic dimensions as 1).
pub fn synthetic_request(metadata: &ModuleMetadata) -> Value {
    let mut body = serde_json::Map::new();
    for spec in &metadata.inputs {
        let ValueSpec::Tensor { dtype, shape } = &spec.value else {
            continue;
        };
        let leaf = match dtype {
            ElementType::Float32 | ElementType::Float64 => json!(0.5),
            ElementType::Bool => json!(true),
            ElementType::String => json!("a"),
            _ => json!(1),
        };
        let value = shape.iter().rev().fold(leaf, |inner, dim| {
            Value::Array(vec![inner; usize::try_from(*dim).unwrap_or(1).max(1)])
        });
        body.insert(spec.name.clone(), value);
    }
    if metadata.inputs.len() == 1 {
        let only = body
            .into_iter()
            .next()
            .map(|(_, v)| v)
            .unwrap_or(Value::Null);
        return json!({ "data": only });
    }
    Value::Object(body)
}

/// Runs the activation canary: the sample input (or a synthetic one) must score, give finite
/// numbers, and match the sample output recorded when the image was packaged.
pub fn canary(model: &Model, metadata: &ModuleMetadata) -> Result<(), String> {
    let (input, expected) = match &metadata.sample {
        Some(Sample { input, output }) => (input.clone(), Some(output)),
        None => (synthetic_request(metadata), None),
    };
    let output = model
        .score(&input)
        .map_err(|e| format!("canary inference failed: {e}"))?;
    if let Some(path) = first_null(&output, "output") {
        return Err(format!("canary produced a non-finite number at {path}"));
    }
    if let Some(expected) = expected
        && let Some(path) = mismatch(&output, expected, "output")
    {
        return Err(format!(
            "canary output differs from the sample output packaged with the model at {path}"
        ));
    }
    Ok(())
}

fn first_null(v: &Value, path: &str) -> Option<String> {
    match v {
        Value::Null => Some(path.to_owned()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, x)| first_null(x, &format!("{path}[{i}]"))),
        Value::Object(map) => map
            .iter()
            .find_map(|(k, x)| first_null(x, &format!("{path}.{k}"))),
        _ => None,
    }
}

/// Where `got` and `want` differ (numbers to a relative 1e-3), if anywhere.
fn mismatch(got: &Value, want: &Value, path: &str) -> Option<String> {
    match (got, want) {
        (Value::Number(a), Value::Number(b)) => {
            let (a, b) = (a.as_f64()?, b.as_f64()?);
            ((a - b).abs() > 1e-3 * b.abs().max(1e-3)).then(|| format!("{path} ({a} vs {b})"))
        }
        (Value::Array(a), Value::Array(b)) => {
            if a.len() != b.len() {
                return Some(format!("{path} (length {} vs {})", a.len(), b.len()));
            }
            a.iter()
                .zip(b)
                .enumerate()
                .find_map(|(i, (x, y))| mismatch(x, y, &format!("{path}[{i}]")))
        }
        (Value::Object(a), Value::Object(b)) => b.iter().find_map(|(k, y)| match a.get(k) {
            Some(x) => mismatch(x, y, &format!("{path}.{k}")),
            None => Some(format!("{path}.{k} (missing)")),
        }),
        (a, b) => (a != b).then(|| format!("{path} ({a} vs {b})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_common::module_image::IoSpec;

    #[test]
    fn synthetic_requests_fill_dynamic_dimensions_with_one_row() {
        let metadata = ModuleMetadata {
            schema_version: "1".into(),
            name: "m".into(),
            version: 1,
            description: String::new(),
            inputs: vec![IoSpec {
                name: "X".into(),
                value: ValueSpec::Tensor {
                    dtype: ElementType::Float32,
                    shape: vec![-1, 3],
                },
            }],
            outputs: vec![],
            sample: None,
        };
        assert_eq!(
            synthetic_request(&metadata),
            json!({"data": [[0.5, 0.5, 0.5]]})
        );
    }

    #[test]
    fn mismatches_are_located() {
        assert_eq!(
            mismatch(&json!({"a": [1.0, 2.0]}), &json!({"a": [1.0, 2.0005]}), "o"),
            None
        );
        assert_eq!(
            mismatch(&json!({"a": [1.0, 2.0]}), &json!({"a": [1.0, 3.0]}), "o").as_deref(),
            Some("o.a[1] (2 vs 3)")
        );
    }

    #[test]
    fn percentiles_pick_from_sorted_latencies() {
        let sorted: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 0.50), 51);
        assert_eq!(percentile(&sorted, 0.99), 99);
        assert_eq!(percentile(&[], 0.99), 0);
    }
}
