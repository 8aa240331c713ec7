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
pub fn canary(model: &Model, metadata: &ModuleMetadata) -> Result<(), CanaryError> {
    let (input, expected) = match &metadata.sample {
        Some(Sample { input, output }) => (input.clone(), Some(output)),
        None => (synthetic_request(metadata), None),
    };
    let output = model.score(&input)?;
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
}
