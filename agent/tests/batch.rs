//! `edgefleet-agent model batch`: the real binary over CSV and JSON Lines files, checked
//! against Python onnxruntime's outputs, killed halfway and resumed.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use edgefleet_tests::{assert_close, model_dir, ort_library, wait_for, workspace_binary};
use serde_json::Value;

fn batch(input: &Path, output: &Path, extra: &[&str]) -> Output {
    Command::new(workspace_binary("edgefleet-agent"))
        .args(["model", "batch"])
        .arg(model_dir("diabetes").join("model.onnx"))
        .arg(input)
        .arg("-o")
        .arg(output)
        .args(extra)
        .env("ORT_DYLIB_PATH", ort_library())
        .output()
        .expect("run edgefleet-agent")
}

fn reference() -> Value {
    serde_json::from_slice(
        &std::fs::read(model_dir("diabetes").join("reference.json")).expect("reference"),
    )
    .expect("JSON")
}

#[test]
fn csv_rows_score_as_python_does_and_a_killed_run_resumes_to_the_same_file() {
    let dir = tempfile::tempdir().expect("dir");
    let reference = reference();
    let rows = reference["inputs"]["X"].as_array().expect("rows").clone();
    let header = (0..10)
        .map(|i| format!("x{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let line = |row: &Value| {
        row.as_array()
            .expect("row")
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };

    // The reference rows give Python's outputs, one per CSV row.
    let small = dir.path().join("small.csv");
    let text: Vec<String> = std::iter::once(header.clone())
        .chain(rows.iter().map(line))
        .collect();
    std::fs::write(&small, text.join("\n") + "\n").expect("write");
    let out = dir.path().join("small-out.csv");
    let done = batch(&small, &out, &[]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let written = std::fs::read_to_string(&out).expect("output");
    let mut lines = written.lines();
    assert_eq!(lines.next(), Some("variable,error"));
    let expected = reference["outputs"]["variable"]
        .as_array()
        .expect("outputs");
    for (got, want) in lines.zip(expected) {
        let value: f64 = got.trim_end_matches(',').parse().expect("a number");
        assert_close(&serde_json::json!(value), &want[0]);
    }

    // 300,000 rows: killed while writing, resumed, byte for byte what one run writes.
    let big = dir.path().join("big.csv");
    let mut text = header + "\n";
    for i in 0..300_000 {
        text.push_str(&line(&rows[i % rows.len()]));
        text.push('\n');
    }
    std::fs::write(&big, text).expect("write");
    let whole = dir.path().join("whole.csv");
    assert!(batch(&big, &whole, &[]).status.success());
    let resumed = dir.path().join("resumed.csv");
    let mut child = Command::new(workspace_binary("edgefleet-agent"))
        .args(["model", "batch"])
        .arg(model_dir("diabetes").join("model.onnx"))
        .arg(&big)
        .arg("-o")
        .arg(&resumed)
        .env("ORT_DYLIB_PATH", ort_library())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    wait_for("some output", Duration::from_secs(30), || {
        let len = std::fs::metadata(&resumed).map_or(0, |m| m.len());
        (len > 64 * 1024).then_some(())
    });
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let refused = batch(&big, &resumed, &[]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("pass --resume"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let again = batch(&big, &resumed, &["--resume"]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(
        std::fs::read(&resumed).expect("resumed") == std::fs::read(&whole).expect("whole"),
        "the resumed output differs from an uninterrupted run's"
    );
}

#[test]
fn json_lines_answer_each_request_in_order_and_bad_ones_get_their_error() {
    let dir = tempfile::tempdir().expect("dir");
    let input = dir.path().join("requests.jsonl");
    std::fs::write(
        &input,
        concat!(
            "{\"data\": [[1,2,3,4,5,6,7,8,9,10]]}\n",
            "not json\n",
            "\n",
            "{\"data\": [[1,2]]}\n",
            "{\"data\": [[10,9,8,7,6,5,4,3,2,1],[1,2,3,4,5,6,7,8,9,10]]}\n",
        ),
    )
    .expect("write");
    let output = dir.path().join("responses.jsonl");
    let done = batch(&input, &output, &[]);
    let said = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(1), "{said}");
    assert!(
        said.contains("4 requests scored") && said.contains("2 failed"),
        "{said}"
    );
    let responses: Vec<Value> = std::fs::read_to_string(&output)
        .expect("output")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(responses.len(), 4);
    assert_eq!(responses[0]["variable"].as_array().map(Vec::len), Some(1));
    assert!(
        responses[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("request 2 is not JSON"))
    );
    assert!(
        responses[2]["error"]
            .as_str()
            .is_some_and(|e| e.contains("float32[N,10]"))
    );
    assert_eq!(responses[3]["variable"].as_array().map(Vec::len), Some(2));
    assert_eq!(responses[3]["variable"][1], responses[0]["variable"][0]);

    let mixed = batch(&input, &dir.path().join("out.csv"), &[]);
    assert!(
        String::from_utf8_lossy(&mixed.stderr).contains("the same format"),
        "{}",
        String::from_utf8_lossy(&mixed.stderr)
    );
}
