//! In-process inference time per request: a JSON body parsed and turned into tensors, one ONNX Runtime run, the
//! outputs back to JSON, as the agent scores every request. One intra-op thread, as the agent
//! runs. Prints one JSON line per model: {"model", "rows", "iterations", "mean_us", "p50_us"}.
//!
//! cargo bench -p edgefleet-agent --bench inference   (scripts/benchmark inference runs it
//! beside Python onnxruntime)

use std::time::{Duration, Instant};

use edgefleet_onnx::OnnxRuntime;
use edgefleet_tests::{ort_library, repo_root};
use serde_json::{Value, json};

fn main() {
    let runtime = OnnxRuntime::load(&ort_library()).expect("ONNX Runtime");
    let models = [
        ("diabetes", repo_root().join("tests/models/diabetes")),
        ("digits", repo_root().join("tests/models/digits")),
        (
            "digits-zipmap",
            repo_root().join("tests/models/digits-zipmap"),
        ),
        ("mlp-10MB", repo_root().join("target/models/mlp")),
    ];
    let quickstart = json!({"data": [[1,2,3,4,5,6,7,8,9,10],[10,9,8,7,6,5,4,3,2,1]]});
    for (name, dir) in models {
        let Ok(bytes) = std::fs::read(dir.join("model.onnx")) else {
            eprintln!(
                "{name}: {} missing (scripts/make-models --mlp makes it)",
                dir.display()
            );
            continue;
        };
        let reference: Value =
            serde_json::from_slice(&std::fs::read(dir.join("reference.json")).expect("reference"))
                .expect("reference JSON");
        let model = runtime.model(&bytes).expect("model loads");
        // The quickstart request for diabetes (what the /score benchmark sends), the reference
        // inputs for the others.
        let request = if name == "diabetes" {
            quickstart.clone()
        } else {
            reference["inputs"].clone()
        };
        let rows = request
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        let body = request.to_string();
        let once = || {
            let request: Value = serde_json::from_str(&body).expect("JSON");
            model.score(&request).expect("score")
        };
        for _ in 0..200 {
            once();
        }
        let mut samples = Vec::new();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(3) {
            let t = Instant::now();
            std::hint::black_box(once());
            samples.push(t.elapsed().as_nanos() as f64 / 1000.0);
        }
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        samples.sort_by(f64::total_cmp);
        let p50 = samples[samples.len() / 2];
        println!(
            "{}",
            json!({"model": name, "rows": rows, "iterations": samples.len(), "mean_us": mean, "p50_us": p50})
        );
    }
}
