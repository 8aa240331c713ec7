//! `/score` request bodies: the JSON an HTTP client posts, read into the model's input
//! tensors. No model is loaded: the inputs are read against the input declarations of a few
//! model shapes (one input with a batch dimension, several named inputs of other types, an
//! input that is not a tensor), with ONNX Runtime creating the tensors as in a request.

use std::sync::OnceLock;

use edgefleet_common::module_image::{ElementType, IoSpec, ValueSpec};
use edgefleet_onnx::OnnxRuntime;
use edgefleet_onnx::tensor_json::request_to_inputs;

fn tensor(name: &str, dtype: ElementType, shape: &[i64]) -> IoSpec {
    IoSpec {
        name: name.to_owned(),
        value: ValueSpec::Tensor {
            dtype,
            shape: shape.to_vec(),
        },
    }
}

/// The input declarations the body is read against.
fn models() -> Vec<Vec<IoSpec>> {
    use ElementType::*;
    vec![
        vec![tensor("float_input", Float32, &[-1, 10])],
        vec![
            tensor("X", Int64, &[-1, 3]),
            tensor("mask", Bool, &[-1, 3]),
            tensor("scale", Float64, &[]),
        ],
        vec![
            tensor("text", String, &[-1]),
            tensor("pixels", Uint8, &[1, 2, 2]),
            tensor("i8", Int8, &[-1]),
            tensor("u16", Uint16, &[-1]),
            tensor("i16", Int16, &[-1]),
            tensor("i32", Int32, &[-1]),
            tensor("u32", Uint32, &[-1]),
            tensor("u64", Uint64, &[-1]),
        ],
        vec![IoSpec {
            name: "probabilities".into(),
            value: ValueSpec::SequenceOfMaps {
                key: Int64,
                value: Float32,
            },
        }],
    ]
}

fn runtime() {
    static RUNTIME: OnceLock<()> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let library = edgefleet_tests::ort_library();
        if let Err(e) = OnnxRuntime::load(&library) {
            panic!("ONNX Runtime at {}: {e}", library.display());
        }
    });
}

/// The body as the agent reads it: JSON first (a 400 otherwise), then one tensor per input,
/// or a request error naming the input.
pub fn body(data: &[u8]) {
    runtime();
    static MODELS: OnceLock<Vec<Vec<IoSpec>>> = OnceLock::new();
    let Ok(request) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    for specs in MODELS.get_or_init(models) {
        match request_to_inputs(specs, &request) {
            Ok(feeds) => assert_eq!(feeds.len(), specs.len(), "one feed per input"),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}
