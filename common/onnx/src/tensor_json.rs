//! JSON request bodies to ONNX inputs and ONNX outputs to JSON, as the Azure ML inference
//! server's clients send and expect them: `{"data": [[...]]}` for a single-input model, or
//! one member per input name; the response has one member per output, tensors as nested
//! arrays and classifier probability maps (ZipMap) as a list of `{class: probability}`.

use std::borrow::Cow;

use edgefleet_common::module_image::{ElementType, IoSpec, ValueSpec};
use ort::session::SessionInputValue;
use ort::value::{DynMapValueType, DynValue, Tensor};

use crate::element_type;
use serde_json::{Map, Number, Value};

/// A request the model cannot take. Every message names the input and what it expects,
/// because the caller reads it and fixes the request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error(
        "request body must be a JSON object such as {{\"data\": [[...]]}} or one member per input ({expected})"
    )]
    NotAnObject { expected: String },
    #[error("request is missing input {name:?}; the model takes {expected}")]
    MissingInput { name: String, expected: String },
    #[error("request member {field:?} is not an input of this model; the model takes {expected}")]
    UnknownField { field: String, expected: String },
    #[error("input {name:?} must be a nested array of equal-length rows with shape {expected}")]
    Ragged { name: String, expected: String },
    #[error("input {name:?} has shape {got:?}, but the model expects {expected}")]
    Shape {
        name: String,
        got: Vec<usize>,
        expected: String,
    },
    #[error(
        "input {name:?} holds {got}, which is not a {dtype} value; the model expects {expected}"
    )]
    Dtype {
        name: String,
        got: String,
        dtype: String,
        expected: String,
    },
    #[error("input {name:?} is not a tensor ({expected}); Edgefleet can only feed tensor inputs")]
    NotATensor { name: String, expected: String },
}

/// An output ONNX Runtime produced that could not be read as the model declared it.
#[derive(Debug, thiserror::Error)]
#[error("output {name:?}: {source}")]
pub struct OutputError {
    pub name: String,
    #[source]
    pub source: ort::Error,
}

/// Describes an input or output the way error messages and the OpenAPI document show it:
/// `float32[N,10]`, `sequence<map<int64,float32>>`.
pub fn describe(spec: &IoSpec) -> String {
    match &spec.value {
        ValueSpec::Tensor { dtype, shape } => {
            let dims: Vec<String> = shape
                .iter()
                .map(|d| {
                    if *d < 0 {
                        "N".to_owned()
                    } else {
                        d.to_string()
                    }
                })
                .collect();
            format!("{}[{}]", element_type::name(*dtype), dims.join(","))
        }
        ValueSpec::SequenceOfMaps { key, value } => {
            format!(
                "sequence<map<{},{}>>",
                element_type::name(*key),
                element_type::name(*value)
            )
        }
    }
}

/// Every input or output, named: `"X": float32[N,10], "sr": int64[]`.
pub(crate) fn describe_all(specs: &[IoSpec]) -> String {
    specs
        .iter()
        .map(|s| format!("{:?}: {}", s.name, describe(s)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Session inputs, in the model's order, named.
pub type Feeds = Vec<(Cow<'static, str>, SessionInputValue<'static>)>;

/// Reads a `/score` request body into the model's inputs.
pub fn request_to_inputs(specs: &[IoSpec], request: &Value) -> Result<Feeds, RequestError> {
    let expected = || describe_all(specs);
    let Value::Object(members) = request else {
        return Err(RequestError::NotAnObject {
            expected: expected(),
        });
    };
    let single_data = specs.len() == 1 && members.contains_key("data");
    for field in members.keys() {
        let known = if single_data {
            field == "data"
        } else {
            specs.iter().any(|s| &s.name == field)
        };
        if !known {
            return Err(RequestError::UnknownField {
                field: field.clone(),
                expected: expected(),
            });
        }
    }
    specs
        .iter()
        .map(|spec| {
            let key = if single_data {
                "data"
            } else {
                spec.name.as_str()
            };
            let value = members.get(key).ok_or_else(|| RequestError::MissingInput {
                name: spec.name.clone(),
                expected: expected(),
            })?;
            let input = tensor_input(spec, value)?;
            Ok((Cow::Owned(spec.name.clone()), input))
        })
        .collect()
}

fn tensor_input(spec: &IoSpec, value: &Value) -> Result<SessionInputValue<'static>, RequestError> {
    let ValueSpec::Tensor { dtype, shape } = &spec.value else {
        return Err(RequestError::NotATensor {
            name: spec.name.clone(),
            expected: describe(spec),
        });
    };
    let (got, leaves) = flatten(value).ok_or_else(|| RequestError::Ragged {
        name: spec.name.clone(),
        expected: describe(spec),
    })?;
    let fits = got.len() == shape.len()
        && got
            .iter()
            .zip(shape)
            .all(|(g, want)| *want < 0 || *g as i64 == *want);
    if !fits {
        return Err(RequestError::Shape {
            name: spec.name.clone(),
            got,
            expected: describe(spec),
        });
    }
    let dims: Vec<i64> = got.iter().map(|d| *d as i64).collect();
    let bad = |leaf: &Value| RequestError::Dtype {
        name: spec.name.clone(),
        got: truncate(&leaf.to_string()),
        dtype: element_type::name(*dtype).to_owned(),
        expected: describe(spec),
    };
    macro_rules! typed {
        ($conv:expr) => {{
            let data = leaves
                .iter()
                .map(|leaf| $conv(*leaf).ok_or_else(|| bad(leaf)))
                .collect::<Result<Vec<_>, _>>()?;
            Tensor::from_array((dims, data)).map(|t| t.upcast().into())
        }};
    }
    let tensor = match dtype {
        ElementType::Float32 => typed!(|v: &Value| v.as_f64().map(|f| f as f32)),
        ElementType::Float64 => typed!(|v: &Value| v.as_f64()),
        ElementType::Int8 => typed!(|v| integer(v).and_then(|i| i8::try_from(i).ok())),
        ElementType::Int16 => typed!(|v| integer(v).and_then(|i| i16::try_from(i).ok())),
        ElementType::Int32 => typed!(|v| integer(v).and_then(|i| i32::try_from(i).ok())),
        ElementType::Int64 => typed!(integer),
        ElementType::Uint8 => typed!(|v| integer(v).and_then(|i| u8::try_from(i).ok())),
        ElementType::Uint16 => typed!(|v| integer(v).and_then(|i| u16::try_from(i).ok())),
        ElementType::Uint32 => typed!(|v| integer(v).and_then(|i| u32::try_from(i).ok())),
        ElementType::Uint64 => typed!(|v: &Value| v.as_u64()),
        ElementType::Bool => typed!(|v: &Value| v.as_bool()),
        ElementType::String => {
            let data = leaves
                .iter()
                .map(|leaf| leaf.as_str().map(str::to_owned).ok_or_else(|| bad(leaf)))
                .collect::<Result<Vec<_>, _>>()?;
            Tensor::from_string_array((dims, data.as_slice())).map(|t| t.upcast().into())
        }
    };
    // Creating a CPU tensor from data whose length matches its shape does not fail; if the
    // runtime disagrees, the request is still what was wrong.
    tensor.map_err(|_| RequestError::Ragged {
        name: spec.name.clone(),
        expected: describe(spec),
    })
}

/// An integer, also when written as `3.0`.
fn integer(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            .map(|f| f as i64)
    })
}

fn truncate(s: &str) -> String {
    if s.len() <= 40 {
        s.to_owned()
    } else {
        let cut = (0..=40).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
        format!("{}...", &s[..cut])
    }
}

/// The shape and the leaves of a nested array, or None when rows differ in length or depth.
fn flatten(value: &Value) -> Option<(Vec<usize>, Vec<&Value>)> {
    fn walk<'a>(
        v: &'a Value,
        depth: usize,
        shape: &mut Vec<usize>,
        rank: &mut Option<usize>,
        leaves: &mut Vec<&'a Value>,
    ) -> bool {
        match v {
            Value::Array(items) => {
                if rank.is_some_and(|r| depth >= r) {
                    return false;
                }
                match shape.get(depth) {
                    Some(&n) if n != items.len() => return false,
                    Some(_) => {}
                    None => shape.push(items.len()),
                }
                items
                    .iter()
                    .all(|i| walk(i, depth + 1, shape, rank, leaves))
            }
            leaf => {
                match *rank {
                    Some(r) if r != depth => return false,
                    Some(_) => {}
                    None => *rank = Some(depth),
                }
                leaves.push(leaf);
                true
            }
        }
    }
    let (mut shape, mut rank, mut leaves) = (Vec::new(), None, Vec::new());
    walk(value, 0, &mut shape, &mut rank, &mut leaves).then_some((shape, leaves))
}

/// Converts one model output to JSON.
pub fn output_to_json(spec: &IoSpec, value: &DynValue) -> Result<Value, OutputError> {
    let fail = |source: ort::Error| OutputError {
        name: spec.name.clone(),
        source,
    };
    match &spec.value {
        ValueSpec::Tensor { dtype, .. } => {
            macro_rules! nested {
                ($t:ty, $to_json:expr) => {{
                    let (shape, data) = value.try_extract_tensor::<$t>().map_err(fail)?;
                    let flat = data.iter().map($to_json).collect();
                    Ok(nest(shape, flat))
                }};
            }
            match dtype {
                ElementType::Float32 => nested!(f32, |x: &f32| float(f64::from(*x))),
                ElementType::Float64 => nested!(f64, |x: &f64| float(*x)),
                ElementType::Int8 => nested!(i8, |x: &i8| Value::from(*x)),
                ElementType::Int16 => nested!(i16, |x: &i16| Value::from(*x)),
                ElementType::Int32 => nested!(i32, |x: &i32| Value::from(*x)),
                ElementType::Int64 => nested!(i64, |x: &i64| Value::from(*x)),
                ElementType::Uint8 => nested!(u8, |x: &u8| Value::from(*x)),
                ElementType::Uint16 => nested!(u16, |x: &u16| Value::from(*x)),
                ElementType::Uint32 => nested!(u32, |x: &u32| Value::from(*x)),
                ElementType::Uint64 => nested!(u64, |x: &u64| Value::from(*x)),
                ElementType::Bool => nested!(bool, |x: &bool| Value::from(*x)),
                ElementType::String => {
                    let (shape, data) = value.try_extract_strings().map_err(fail)?;
                    Ok(nest(shape, data.into_iter().map(Value::from).collect()))
                }
            }
        }
        ValueSpec::SequenceOfMaps { key, .. } => {
            let maps = value
                .try_extract_sequence::<DynMapValueType>()
                .map_err(fail)?;
            let rows = maps
                .iter()
                .map(|map| {
                    let entries: Vec<(String, f64)> = match key {
                        ElementType::String => map
                            .try_extract_key_values::<String, f32>()
                            .map_err(fail)?
                            .into_iter()
                            .map(|(k, v)| (k, f64::from(v)))
                            .collect(),
                        _ => map
                            .try_extract_key_values::<i64, f32>()
                            .map_err(fail)?
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), f64::from(v)))
                            .collect(),
                    };
                    Ok(Value::Object(
                        entries
                            .into_iter()
                            .map(|(k, v)| (k, float(v)))
                            .collect::<Map<_, _>>(),
                    ))
                })
                .collect::<Result<Vec<_>, OutputError>>()?;
            Ok(Value::Array(rows))
        }
    }
}

/// A JSON number, or null for NaN and infinities (which JSON cannot carry).
fn float(x: f64) -> Value {
    Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// Builds nested arrays of `shape` from row-major `flat` values.
fn nest(shape: &[i64], flat: Vec<Value>) -> Value {
    fn build(shape: &[usize], flat: &mut std::vec::IntoIter<Value>) -> Value {
        match shape.split_first() {
            None => flat.next().unwrap_or(Value::Null),
            Some((n, rest)) => Value::Array((0..*n).map(|_| build(rest, flat)).collect()),
        }
    }
    let dims: Vec<usize> = shape.iter().map(|d| (*d).max(0) as usize).collect();
    build(&dims, &mut flat.into_iter())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(shape: Vec<i64>) -> IoSpec {
        IoSpec {
            name: "X".into(),
            value: ValueSpec::Tensor {
                dtype: ElementType::Float32,
                shape,
            },
        }
    }

    fn refusal(result: Result<Feeds, RequestError>) -> RequestError {
        match result {
            Err(e) => e,
            Ok(_) => panic!("the request was accepted"),
        }
    }

    #[test]
    fn nested_rows_flatten_to_shape_and_leaves() {
        let v = json!([[1, 2, 3], [4, 5, 6]]);
        let (shape, leaves) = flatten(&v).expect("rectangular");
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(leaves.len(), 6);
        assert!(flatten(&json!([[1, 2], [3]])).is_none());
        assert!(flatten(&json!([[1, 2], 3])).is_none());
        assert!(flatten(&json!([1, [2, 3]])).is_none());
    }

    #[test]
    fn a_wrong_shape_names_the_input_and_the_expected_shape() {
        let err = refusal(request_to_inputs(
            &[spec(vec![-1, 10])],
            &json!({"data": [[1, 2, 3]]}),
        ));
        assert_eq!(
            err.to_string(),
            "input \"X\" has shape [1, 3], but the model expects float32[N,10]"
        );
    }

    #[test]
    fn a_string_where_a_number_belongs_is_a_dtype_error() {
        let err = refusal(request_to_inputs(
            &[spec(vec![-1, 2])],
            &json!({"data": [[1, "a"]]}),
        ));
        assert!(matches!(err, RequestError::Dtype { .. }), "{err}");
        assert!(err.to_string().contains("\"a\""), "{err}");
    }

    #[test]
    fn unknown_members_and_non_objects_are_refused() {
        let specs = [spec(vec![-1, 2])];
        assert!(matches!(
            refusal(request_to_inputs(
                &specs,
                &json!({"data": [[1, 2]], "extra": 1})
            )),
            RequestError::UnknownField { .. }
        ));
        assert!(matches!(
            refusal(request_to_inputs(&specs, &json!([[1, 2]]))),
            RequestError::NotAnObject { .. }
        ));
        assert!(matches!(
            refusal(request_to_inputs(&specs, &json!({}))),
            RequestError::MissingInput { .. }
        ));
    }

    #[test]
    fn nest_rebuilds_rows() {
        let flat = (1..=6).map(Value::from).collect();
        assert_eq!(nest(&[2, 3], flat), json!([[1, 2, 3], [4, 5, 6]]));
        assert_eq!(nest(&[], vec![json!(7)]), json!(7));
    }
}
