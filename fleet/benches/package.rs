//! `model package` push throughput against `skopeo copy` of the same image to the same
//! registry (with authentication): the ~10 MB benchmark MLP, five pushes each, each a new
//! image to a new repository so every blob is uploaded. Prints one JSON line per tool and the
//! ratio.
//!
//! cargo bench -p edgefleet-fleet --bench package   (needs target/models/mlp: scripts/make-models --mlp)

use std::collections::BTreeMap;
use std::time::Instant;

use edgefleet_fleet::package::{Destination, Image, build, module_metadata, push};
use edgefleet_fleet::records::ModelVersion;
use edgefleet_onnx::{Model, OnnxRuntime};
use edgefleet_tests::{Registry, ort_library, repo_root, require_program};
use serde_json::json;

const RUNS: usize = 5;

/// The benchmark model packaged as `version`, and the same image as an OCI layout for skopeo.
fn packaged(model: &Model, bytes: &[u8], version: u32) -> (Image, tempfile::TempDir) {
    let version = ModelVersion {
        name: "mlp".into(),
        version,
        tags: BTreeMap::new(),
        description: String::new(),
        sha256: String::new(),
        size: bytes.len() as u64,
        registered_ms: 0,
        package: None,
        sample_input: None,
        profile: None,
    };
    let metadata = module_metadata(&version, model).expect("metadata");
    let image = build(&version, bytes, &metadata).expect("image");

    let layout = tempfile::tempdir().expect("temp dir");
    let blobs = layout.path().join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("blobs");
    for (data, digest) in [
        (&image.layer, &image.layer_digest),
        (&image.config, &image.config_digest),
        (&image.manifest, &image.manifest_digest),
    ] {
        std::fs::write(blobs.join(digest.trim_start_matches("sha256:")), data).expect("blob");
    }
    let index = json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": image.manifest_digest, "size": image.manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "1"}}]});
    std::fs::write(layout.path().join("index.json"), index.to_string()).expect("index");
    std::fs::write(
        layout.path().join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci-layout");
    (image, layout)
}

fn main() {
    let path = repo_root().join("target/models/mlp/model.onnx");
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|_| panic!("{} missing: run scripts/make-models --mlp", path.display()));
    let runtime = OnnxRuntime::load(&ort_library()).expect("ONNX Runtime");
    let model = runtime.model(&bytes).expect("model");

    let registry = Registry::start("edge", "edge-pass");
    let tokio = tokio::runtime::Runtime::new().expect("tokio");
    let mut ours = Vec::new();
    let mut skopeo = Vec::new();
    let mut total = 0;
    for run in 0..RUNS {
        // Each run and each tool pushes an image the registry has never seen (the version is
        // in the layer's module.json), so both upload every byte; otherwise skopeo mounts the
        // layer from an earlier repository (its blob-info cache remembers where it went).
        let (image, _) = packaged(&model, &bytes, 2 * run as u32 + 1);
        total = image.layer.len() + image.config.len() + image.manifest.len();
        let started = Instant::now();
        tokio
            .block_on(push(
                &image,
                &Destination {
                    address: &registry.address(),
                    repository: &format!("bench/ours-{run}"),
                    tag: "1".into(),
                    username: "edge",
                    password: "edge-pass",
                    insecure: true,
                },
            ))
            .expect("push");
        ours.push(started.elapsed().as_secs_f64());

        let (_, layout) = packaged(&model, &bytes, 2 * run as u32 + 2);
        let started = Instant::now();
        let status = std::process::Command::new(require_program("skopeo", "skopeo"))
            .args([
                "--insecure-policy",
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                "--dest-creds=edge:edge-pass",
            ])
            .arg(format!("oci:{}:1", layout.path().display()))
            .arg(format!(
                "docker://{}/bench/skopeo-{run}:1",
                registry.address()
            ))
            .status()
            .expect("skopeo");
        assert!(status.success());
        skopeo.push(started.elapsed().as_secs_f64());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (ours, skopeo) = (median(&mut ours), median(&mut skopeo));
    let mib = total as f64 / (1024.0 * 1024.0);
    println!(
        "{}",
        json!({"tool": "edgefleet model package (push)", "image_mib": mib, "median_seconds": ours, "mib_per_s": mib / ours})
    );
    println!(
        "{}",
        json!({"tool": "skopeo copy", "image_mib": mib, "median_seconds": skopeo, "mib_per_s": mib / skopeo})
    );
    println!(
        "{}",
        json!({"throughput_ratio_ours_vs_skopeo": skopeo / ours})
    );
}
