//! Every committed model loads through ort (ONNX Runtime loaded at run time) and gives the
//! outputs Python onnxruntime gave for the same inputs, ZipMap included.

use std::path::Path;

use edgefleet_onnx::OnnxRuntime;
use edgefleet_onnx::canary::{find_sample, metadata_from_model};
use edgefleet_tests::{ort_library, repo_root};
use serde_json::Value;

/// Compares our output with the reference, numbers to a relative 1e-5 (float32 arithmetic
/// may differ in the last bits between builds of the same runtime).
fn assert_close(path: &str, ours: &Value, reference: &Value) {
    match (ours, reference) {
        (Value::Number(a), Value::Number(b)) => {
            let (a, b) = (
                a.as_f64().unwrap_or(f64::NAN),
                b.as_f64().unwrap_or(f64::NAN),
            );
            let tolerance = 1e-5 * b.abs().max(1e-6);
            assert!((a - b).abs() <= tolerance, "{path}: {a} != {b}");
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{path}: length");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert_close(&format!("{path}[{i}]"), x, y);
            }
        }
        (Value::Object(a), Value::Object(b)) => {
            assert_eq!(
                a.keys().collect::<Vec<_>>(),
                b.keys().collect::<Vec<_>>(),
                "{path}: keys"
            );
            for (k, x) in a {
                assert_close(&format!("{path}.{k}"), x, &b[k]);
            }
        }
        _ => assert_eq!(ours, reference, "{path}"),
    }
}

fn check_model(runtime: OnnxRuntime, dir: &Path) {
    let bytes = std::fs::read(dir.join("model.onnx")).expect("model.onnx");
    let reference: Value =
        serde_json::from_slice(&std::fs::read(dir.join("reference.json")).expect("reference.json"))
            .expect("reference JSON");
    let model = runtime.model(&bytes).expect("model loads");
    let response = model
        .score(&reference["inputs"])
        .expect("model scores its reference inputs");
    assert_close(&dir.display().to_string(), &response, &reference["outputs"]);

    // The sample request body uses the single-input form {"data": ...}.
    let sample: Value =
        serde_json::from_slice(&std::fs::read(dir.join("sample.json")).expect("sample.json"))
            .expect("sample JSON");
    let one = model.score(&sample).expect("model scores its sample");
    for (name, rows) in one.as_object().expect("object response") {
        assert_eq!(rows.as_array().map(Vec::len), Some(1), "{name}: one row");
    }
}

#[test]
fn every_committed_model_matches_the_python_onnxruntime_reference() {
    let runtime = OnnxRuntime::load(&ort_library()).expect("ONNX Runtime loads");
    let models = repo_root().join("tests/models");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&models).expect("tests/models") {
        let dir = entry.expect("dir entry").path();
        if dir.join("model.onnx").exists() {
            check_model(runtime, &dir);
            checked.push(dir.file_name().map(|n| n.to_string_lossy().into_owned()));
        }
    }
    checked.sort();
    let names: Vec<_> = checked.into_iter().flatten().collect();
    assert_eq!(
        names,
        [
            "diabetes",
            "digits",
            "digits-zipmap",
            "exactly-21",
            "patch-conv"
        ]
    );
}

#[test]
fn the_zipmap_classifier_returns_probabilities_as_plain_json_maps() {
    let runtime = OnnxRuntime::load(&ort_library()).expect("ONNX Runtime loads");
    let dir = repo_root().join("tests/models/digits-zipmap");
    let model = runtime
        .model(&std::fs::read(dir.join("model.onnx")).expect("model.onnx"))
        .expect("model loads");
    let sample: Value =
        serde_json::from_slice(&std::fs::read(dir.join("sample.json")).expect("sample.json"))
            .expect("sample JSON");
    let response = model.score(&sample).expect("scores");
    assert_eq!(response["output_label"], serde_json::json!([0]));
    let probabilities = response["output_probability"][0]
        .as_object()
        .expect("a {class: probability} object");
    assert_eq!(probabilities.len(), 10);
    let sum: f64 = probabilities.values().filter_map(Value::as_f64).sum();
    assert!((sum - 1.0).abs() < 1e-4, "probabilities sum to {sum}");
}

#[test]
fn synthesized_samples_grow_until_the_model_runs_and_name_the_inputs_when_none_does() {
    let runtime = OnnxRuntime::load(&ort_library()).expect("ONNX Runtime loads");
    let load = |name: &str| {
        let path = repo_root()
            .join("tests/models")
            .join(name)
            .join("model.onnx");
        let model = runtime
            .model(&std::fs::read(path).expect("model.onnx"))
            .expect("model loads");
        let metadata = metadata_from_model(name, &model);
        (model, metadata)
    };

    // A 5x5 convolution does not run on 1x1, 2x2 or 4x4 images: the sample is one 8x8 image.
    let (model, metadata) = load("patch-conv");
    let sample = find_sample(&model, &metadata).expect("a size that runs");
    let image = &sample.input["data"];
    let dims = [
        image.as_array().map(Vec::len),
        image[0].as_array().map(Vec::len),
        image[0][0].as_array().map(Vec::len),
        image[0][0][0].as_array().map(Vec::len),
    ];
    assert_eq!(dims, [Some(1), Some(8), Some(8), Some(3)]);
    assert_eq!(sample.output, model.score(&sample.input).expect("scores"));

    // Only 21 values run this one: the refusal names the input and says how to give a sample.
    let (model, metadata) = load("exactly-21");
    let refused = find_sample(&model, &metadata).unwrap_err().to_string();
    assert!(refused.contains(r#""x": float32[N,N]"#), "{refused}");
    assert!(
        refused.contains("1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024"),
        "{refused}"
    );
    assert!(refused.contains("--sample-input FILE"), "{refused}");
}

#[test]
fn a_small_model_has_a_session_per_core_and_threads_scoring_at_once_get_the_reference_answer() {
    let runtime = OnnxRuntime::load(&ort_library()).expect("ONNX Runtime loads");
    let dir = repo_root().join("tests/models/diabetes");
    let model = runtime
        .model(&std::fs::read(dir.join("model.onnx")).expect("model.onnx"))
        .expect("model loads");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(model.session_count(), cores);
    let reference: Value =
        serde_json::from_slice(&std::fs::read(dir.join("reference.json")).expect("reference.json"))
            .expect("reference JSON");
    std::thread::scope(|scope| {
        for _ in 0..cores * 2 {
            scope.spawn(|| {
                for _ in 0..200 {
                    let response = model.score(&reference["inputs"]).expect("scores");
                    assert_close("diabetes", &response, &reference["outputs"]);
                }
            });
        }
    });
}
