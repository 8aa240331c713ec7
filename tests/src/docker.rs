//! The Docker engine for container module tests: building `FROM scratch` images of the
//! workspace's static binaries, pushing them to a test registry, looking at containers.

use std::path::PathBuf;
use std::process::Command;

use crate::process::require_program;
use crate::registry::Registry;

/// The static sensor-sim binary scripts/test builds.
pub fn sensor_sim_binary() -> PathBuf {
    let path = crate::repo_root().join("target/x86_64-unknown-linux-gnu/release/sensor-sim");
    assert!(
        path.exists(),
        "{} is missing: run RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release -p edgefleet-sensor-sim --target x86_64-unknown-linux-gnu (scripts/test does)",
        path.display()
    );
    path
}

fn docker(args: &[&str]) -> std::process::Output {
    Command::new(require_program("docker", "docker.io"))
        .args(args)
        .output()
        .expect("run docker")
}

/// Builds images/sensor-sim/Dockerfile with the static binary as `tag`.
pub fn build_sensor_sim_image(tag: &str) {
    let context = tempfile::tempdir().expect("temp dir");
    std::fs::copy(sensor_sim_binary(), context.path().join("sensor-sim")).expect("copy sensor-sim");
    std::fs::copy(
        crate::repo_root().join("images/sensor-sim/Dockerfile"),
        context.path().join("Dockerfile"),
    )
    .expect("copy Dockerfile");
    let out = docker(&[
        "build",
        "-q",
        "-t",
        tag,
        &context.path().display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "docker build failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Pushes a local Docker image to `registry` as `<repository>:1` with skopeo; returns the
/// image reference pinned by digest.
pub fn push_docker_image(tag: &str, registry: &Registry, repository: &str) -> String {
    let out = Command::new(require_program("skopeo", "skopeo"))
        .args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
        ])
        .arg(format!(
            "--dest-creds={}:{}",
            registry.username(),
            registry.password()
        ))
        .arg("--format=oci")
        .arg(format!("docker-daemon:{tag}"))
        .arg(format!("docker://{}/{repository}:1", registry.address()))
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo copy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let response = registry
        .http_client()
        .head(format!(
            "{}/v2/{repository}/manifests/1",
            registry.base_url()
        ))
        .basic_auth(registry.username(), Some(registry.password()))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .expect("HEAD manifest");
    let digest = response
        .headers()
        .get("Docker-Content-Digest")
        .and_then(|v| v.to_str().ok())
        .expect("digest header")
        .to_owned();
    format!("{}/{repository}@{digest}", registry.address())
}

/// `docker inspect <name>` as JSON, or None when there is no such container.
pub fn inspect_container(name: &str) -> Option<serde_json::Value> {
    let out = docker(&["inspect", name]);
    if !out.status.success() {
        return None;
    }
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    list.get(0).cloned()
}

/// Whether the engine has an image by this reference.
pub fn image_exists(image: &str) -> bool {
    docker(&["image", "inspect", image]).status.success()
}

/// `docker kill <name>`.
pub fn kill_container(name: &str) {
    let out = docker(&["kill", name]);
    assert!(
        out.status.success(),
        "docker kill failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `docker rename <name> <new_name>`.
pub fn rename_container(name: &str, new_name: &str) {
    let out = docker(&["rename", name, new_name]);
    assert!(
        out.status.success(),
        "docker rename failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Removes a container (and optionally an image) when dropped, so a failed test leaves
/// nothing behind on the engine.
#[derive(Debug)]
pub struct DockerCleanup {
    pub containers: Vec<String>,
    pub images: Vec<String>,
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", c]);
        }
        for i in &self.images {
            let _ = docker(&["rmi", "-f", i]);
        }
    }
}
