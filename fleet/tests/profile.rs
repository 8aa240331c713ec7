//! Model profiling from both binaries: `edgefleet-agent model profile FILE` on a model file,
//! and `edgefleet model profile NAME:VERSION`, whose result the fleet keeps on the version.

use std::process::Command;

use edgefleet_tests::{FleetWorld, model_dir, ort_library, workspace_binary};
use serde_json::Value;

fn batches_and_threads(profile: &Value) -> Vec<(u64, u64)> {
    profile["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| {
            let (p50, p99) = (r["p50Us"].as_u64(), r["p99Us"].as_u64());
            assert!(p50 <= p99, "{r}");
            assert!(r["rowsPerSecond"].as_f64().is_some_and(|v| v > 0.0), "{r}");
            assert!(r["runs"].as_u64().is_some_and(|n| n >= 50), "{r}");
            (
                r["batch"].as_u64().expect("batch"),
                r["intraOpThreads"].as_u64().expect("threads"),
            )
        })
        .collect()
}

#[test]
fn the_agent_profiles_a_model_file_with_a_synthesized_sample_at_each_batch_and_thread_count() {
    // patch-conv runs only on images of 5x5 or more: the sample search finds one.
    let out = Command::new(workspace_binary("edgefleet-agent"))
        .args(["model", "profile"])
        .arg(model_dir("patch-conv").join("model.onnx"))
        .args([
            "--batch-sizes",
            "4,1",
            "--threads",
            "1,2",
            "--output",
            "json",
        ])
        .env("ORT_DYLIB_PATH", ort_library())
        .output()
        .expect("run edgefleet-agent");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    let profile: Value = serde_json::from_slice(&out.stdout).expect("JSON profile");
    assert_eq!(
        batches_and_threads(&profile),
        [(1, 1), (4, 1), (1, 2), (4, 2)]
    );
    let threads = profile["recommendedIntraOpThreads"].as_u64();
    assert!(matches!(threads, Some(1 | 2)), "{profile}");
    assert!(
        profile["recommendedMemoryMib"].as_u64().is_some(),
        "{profile}"
    );
    assert!(said.contains("threads 2 batch 4: p50"), "{said}");

    // A thread count of 0 is refused, naming it.
    let out = Command::new(workspace_binary("edgefleet-agent"))
        .args(["model", "profile"])
        .arg(model_dir("diabetes").join("model.onnx"))
        .args(["--threads", "0"])
        .env("ORT_DYLIB_PATH", ort_library())
        .output()
        .expect("run edgefleet-agent");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("thread count of 0"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_fleet_profiles_a_registered_version_and_model_show_prints_the_result() {
    let world = FleetWorld::new();
    world.fleet.register("diabetes", "diabetes");
    let show = world.fleet.ok(&["model", "show", "diabetes:1"]);
    assert!(
        show.contains("profile - (edgefleet model profile diabetes:1)"),
        "{show}"
    );
    let json = world.fleet.ok(&[
        "model",
        "profile",
        "diabetes:1",
        "--batch-sizes",
        "1,8",
        "--threads",
        "1",
        "--output",
        "json",
    ]);
    let profile: Value = serde_json::from_str(&json).expect("JSON profile");
    assert_eq!(batches_and_threads(&profile), [(1, 1), (8, 1)]);
    let show = world.fleet.ok(&["model", "show", "diabetes:1"]);
    assert!(
        show.contains("recommended: intraOpThreads 1, memory"),
        "{show}"
    );
    let stored: Value =
        serde_json::from_str(
            &world
                .fleet
                .ok(&["model", "show", "diabetes:1", "-o", "json"]),
        )
        .expect("JSON");
    assert_eq!(stored["profile"], profile);
}
