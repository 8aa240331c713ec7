//! Test harness for Edgefleet's integration and end-to-end tests.
//!
//! It starts real services on 127.0.0.1 in temporary directories, each on a free port:
//! [`Mosquitto`] (an MQTT broker with password authentication) and [`Registry`] (the CNCF
//! distribution registry with htpasswd authentication, over HTTP or TLS with a generated test
//! CA). They are stopped by PID when dropped. [`OciLayout`] writes model module images the way
//! `docker build` of `images/model-module/Dockerfile` lays them out, and [`skopeo_push`] pushes
//! them the way users do. [`DeviceWorld`] puts a broker, a registry and a fleet key around
//! the real agent binary for the agent's end-to-end tests; [`ThrottledProxy`] makes a registry
//! slow.
//!
//! A missing program fails the test with the Debian package to install: a test that needs a
//! real service never passes without it.

mod agent_process;
mod browser;
mod device_world;
pub mod docker;
mod fleet_process;
mod fleet_world;
mod mosquitto;
mod oci_layout;
mod postgres;
mod process;
mod registry;
mod subscriber;
mod test_ca;
mod throttled_proxy;

use std::path::{Path, PathBuf};

pub use agent_process::{AgentProcess, AgentSetup, wait_for, wait_for_explained};
pub use browser::Browser;
pub use device_world::{
    DEVICE, DeviceWorld, FLEET, QUICKSTART_REQUEST, REGISTRY_PASSWORD, REGISTRY_USER, assert_close,
    diabetes_module_json, score, sensor_module, wait_for_or_log,
};
pub use fleet_process::{FleetProcess, postgres_store};
pub use fleet_world::{FleetWorld, InputPublisher, score_at};
pub use mosquitto::{Mosquitto, MosquittoTls};
pub use oci_layout::{OciLayout, skopeo_push};
pub use postgres::{OpenTransaction, Postgres};
pub use process::{ServiceProcess, free_port, require_program};
pub use registry::{Registry, RegistryTls};
pub use subscriber::{Subscriber, device_body, telemetry_envelopes};
pub use test_ca::TestCa;
pub use throttled_proxy::ThrottledProxy;

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// The directory of a committed model (`tests/models/<name>`).
pub fn model_dir(name: &str) -> PathBuf {
    repo_root().join("tests").join("models").join(name)
}

/// The ONNX Runtime shared library: `ORT_DYLIB_PATH`, or the one scripts/provision-ort puts
/// under target/. Panics with the command to run when neither exists.
pub fn ort_library() -> PathBuf {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH") {
        return PathBuf::from(path);
    }
    let path = repo_root()
        .join("target/ort")
        .join(std::env::consts::ARCH)
        .join("libonnxruntime.so.1.31.1");
    assert!(
        path.exists(),
        "ONNX Runtime library not found at {}: run scripts/provision-ort (or set ORT_DYLIB_PATH)",
        path.display()
    );
    path
}

/// Installs ring as the process's TLS crypto provider (Edgefleet builds rustls without a
/// default provider); harmless when one is installed already.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A blocking HTTP client for local endpoints.
pub fn http_client() -> reqwest::blocking::Client {
    install_crypto_provider();
    reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

/// A binary of this workspace, built next to the running test (`target/<profile>/<name>`),
/// or in `EDGEFLEET_TEST_BIN_DIR` when set (binaries built elsewhere, or copied aside while
/// another build writes the target directory). scripts/test builds every binary before the
/// tests run.
pub fn workspace_binary(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("EDGEFLEET_TEST_BIN_DIR") {
        let path = PathBuf::from(dir).join(name);
        assert!(
            path.exists(),
            "{} is missing (EDGEFLEET_TEST_BIN_DIR)",
            path.display()
        );
        return path;
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` (scripts/test does)",
        path.display()
    );
    path
}
