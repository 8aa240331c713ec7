//! Every committed model loads through ort (ONNX Runtime loaded at run time) and gives the
//! outputs Python onnxruntime gave for the same inputs, ZipMap included.

use std::path::Path;

use edgefleet_onnx::canary::{find_sample, metadata_from_model};
use edgefleet_onnx::{Model, OnnxRuntime};
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

/// The `model.onnx` of a model directory, loaded.
fn load(runtime: &OnnxRuntime, dir: &Path) -> Model {
    runtime
        .model(&std::fs::read(dir.join("model.onnx")).expect("model.onnx"))
        .expect("model loads")
}

/// A JSON file of a model directory (`reference.json`, `sample.json`).
fn read_json(dir: &Path, file: &str) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join(file)).expect(file)).expect(file)
}

fn check_model(runtime: OnnxRuntime, dir: &Path) {
    let reference = read_json(dir, "reference.json");
    let model = load(&runtime, dir);
    let response = model
        .score(&reference["inputs"])
        .expect("model scores its reference inputs");
    assert_close(&dir.display().to_string(), &response, &reference["outputs"]);

    // The sample request body uses the single-input form {"data": ...}.
    let one = model
        .score(&read_json(dir, "sample.json"))
        .expect("model scores its sample");
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
    let model = load(&runtime, &dir);
    let response = model
        .score(&read_json(&dir, "sample.json"))
        .expect("scores");
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
    let with_metadata = |name: &str| {
        let model = load(&runtime, &repo_root().join("tests/models").join(name));
        let metadata = metadata_from_model(name, &model);
        (model, metadata)
    };

    // A 5x5 convolution does not run on 1x1, 2x2 or 4x4 images: the sample is one 8x8 image.
    let (model, metadata) = with_metadata("patch-conv");
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
    let (model, metadata) = with_metadata("exactly-21");
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
    let model = load(&runtime, &dir);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(model.session_count(), cores);
    let reference = read_json(&dir, "reference.json");
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
