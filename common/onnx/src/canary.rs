//! What a model is checked with before it serves (on the device) or is packaged (by the fleet):
//! its metadata read from the model itself, a synthetic request for it, and the canary.

use edgefleet_common::module_image::{
    ElementType, MODULE_SCHEMA_VERSION, ModuleMetadata, Sample, ValueSpec,
};
use serde_json::{Value, json};

use crate::model::{Model, ModelError};

/// Why a model failed its canary.
#[derive(Debug, thiserror::Error)]
pub enum CanaryError {
    #[error("canary inference failed: {0}")]
    Inference(#[from] ModelError),
    #[error("canary: {0}")]
    NoSample(#[from] NoSample),
    #[error("canary produced a non-finite number at {0}")]
    NonFinite(String),
    #[error("canary output differs from the sample output packaged with the model at {0}")]
    Mismatch(String),
}

/// Metadata for an image without `module.json`: what the model declares, no sample.
pub fn metadata_from_model(name: &str, model: &Model) -> ModuleMetadata {
    ModuleMetadata {
        schema_version: MODULE_SCHEMA_VERSION.to_owned(),
        name: name.to_owned(),
        version: 0,
        description: String::new(),
        inputs: model.inputs().to_vec(),
        outputs: model.outputs().to_vec(),
        sample: None,
    }
}

/// Sizes a synthesized request gives dynamic dimensions, in the order they are tried.
pub const SYNTHETIC_SIZES: [usize; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// Largest synthesized request tried, in elements over all inputs.
const MAX_SYNTHETIC_ELEMENTS: usize = 4 << 20;

/// A request body of non-zero values for every input. The first dynamic dimension of each
/// input is taken as its batch and gets one row; every other dynamic dimension gets `size`.
/// `None` when a request larger than one row would exceed [`MAX_SYNTHETIC_ELEMENTS`].
pub fn synthetic_request(metadata: &ModuleMetadata, size: usize) -> Option<Value> {
    let mut body = serde_json::Map::new();
    let mut elements = 0usize;
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
        let batch = shape.iter().position(|d| *d < 0);
        let dims: Vec<usize> = shape
            .iter()
            .enumerate()
            .map(|(i, d)| match usize::try_from(*d) {
                Ok(fixed) => fixed,
                Err(_) if Some(i) == batch => 1,
                Err(_) => size,
            })
            .collect();
        elements = elements.saturating_add(dims.iter().product::<usize>());
        if size > 1 && elements > MAX_SYNTHETIC_ELEMENTS {
            return None;
        }
        let value = dims
            .iter()
            .rev()
            .fold(leaf, |inner, dim| Value::Array(vec![inner; *dim]));
        body.insert(spec.name.clone(), value);
    }
    if metadata.inputs.len() == 1 {
        let only = body
            .into_iter()
            .next()
            .map(|(_, v)| v)
            .unwrap_or(Value::Null);
        return Some(json!({ "data": only }));
    }
    Some(Value::Object(body))
}

/// No synthesized request runs the model: it needs a sample given by hand.
#[derive(Debug, thiserror::Error)]
#[error(
    "no synthesized request runs this model (inputs {inputs}; dynamic dimensions tried at {tried}, \
     the first of each input as the batch at 1); at the smallest size ONNX Runtime said: {first}. \
     Give a request that runs, a JSON body as POST /score takes it: `edgefleet model register \
     --sample-input FILE` (or `edgefleet-agent model profile --input FILE`)"
)]
pub struct NoSample {
    /// Every input with its type and shape (`N` for a dynamic dimension).
    pub inputs: String,
    pub tried: String,
    pub first: Box<ModelError>,
}

/// A sample for a model that has none: the first synthesized request that scores, trying
/// larger sizes for dynamic dimensions when smaller ones do not run (a convolution needs a
/// minimum image size, a voice model a whole audio frame).
pub fn find_sample(model: &Model, metadata: &ModuleMetadata) -> Result<Sample, NoSample> {
    let mut first = None;
    let mut tried = Vec::new();
    for size in SYNTHETIC_SIZES {
        let Some(input) = synthetic_request(metadata, size) else {
            break;
        };
        tried.push(size.to_string());
        match model.score(&input) {
            Ok(output) => return Ok(Sample { input, output }),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
        if !size_matters(metadata) {
            break;
        }
    }
    Err(NoSample {
        inputs: crate::tensor_json::describe_all(&metadata.inputs),
        tried: tried.join(", "),
        // Size 1 is always tried, so there is a first error.
        first: Box::new(first.unwrap_or(ModelError::Poisoned)),
    })
}

/// Whether a synthesized request changes with its size: some input has a dynamic dimension
/// besides its batch.
fn size_matters(metadata: &ModuleMetadata) -> bool {
    metadata.inputs.iter().any(|spec| match &spec.value {
        ValueSpec::Tensor { shape, .. } => shape.iter().filter(|d| **d < 0).count() > 1,
        ValueSpec::SequenceOfMaps { .. } => false,
    })
}

/// Runs the activation canary: the sample input (or a synthetic one) must score, give finite
/// numbers, and match the sample output recorded when the image was packaged.
pub fn canary(model: &Model, metadata: &ModuleMetadata) -> Result<(), CanaryError> {
    let (output, expected) = match &metadata.sample {
        Some(Sample { input, output }) => (model.score(input)?, Some(output)),
        None => (find_sample(model, metadata)?.output, None),
    };
    if let Some(path) = first_null(&output, "output") {
        return Err(CanaryError::NonFinite(path));
    }
    if let Some(expected) = expected
        && let Some(path) = mismatch(&output, expected, "output")
    {
        return Err(CanaryError::Mismatch(path));
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
            synthetic_request(&metadata, 4),
            Some(json!({"data": [[0.5, 0.5, 0.5]]}))
        );
    }

    #[test]
    fn larger_synthetic_requests_keep_one_row_per_input() {
        let tensor = |name: &str, shape: Vec<i64>| IoSpec {
            name: name.into(),
            value: ValueSpec::Tensor {
                dtype: ElementType::Float32,
                shape,
            },
        };
        let metadata = ModuleMetadata {
            schema_version: "1".into(),
            name: "vad".into(),
            version: 1,
            description: String::new(),
            inputs: vec![
                tensor("input", vec![-1, -1]),
                tensor("state", vec![2, -1, 3]),
            ],
            outputs: vec![],
            sample: None,
        };
        let request = synthetic_request(&metadata, 4).expect("small enough");
        assert_eq!(request["input"], json!([[0.5, 0.5, 0.5, 0.5]]));
        assert_eq!(
            request["state"],
            json!([[[0.5, 0.5, 0.5]], [[0.5, 0.5, 0.5]]])
        );
        let huge = ModuleMetadata {
            inputs: vec![tensor("image", vec![-1, 3, -1, -1])],
            ..metadata
        };
        assert!(synthetic_request(&huge, 1024).is_some());
        assert!(synthetic_request(&huge, 2048).is_none());
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
}
