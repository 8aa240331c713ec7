//! The process-wide ONNX Runtime environment, loaded at run time from a shared library (ort's
//! `load-dynamic`), so one binary works with the library the machine has.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::Session;

use crate::model::{Model, ModelError};

/// The ONNX Runtime library could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "cannot load ONNX Runtime from {}: {reason} (run scripts/provision-ort, or set onnx_runtime_library in the configuration)",
    path.display()
)]
pub struct RuntimeError {
    pub path: PathBuf,
    /// ort's message; kept as text because the first failure is remembered for the process.
    pub reason: String,
}

/// The process-wide ONNX Runtime environment.
#[derive(Debug, Clone, Copy)]
pub struct OnnxRuntime {
    env: &'static Environment,
}

static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

impl OnnxRuntime {
    /// Loads the ONNX Runtime library at `library` (the first call wins; later calls return
    /// the environment the first one made).
    pub fn load(library: &Path) -> Result<Self, RuntimeError> {
        let env = ENVIRONMENT.get_or_init(|| {
            ort::init_from(library)
                .map_err(|e| e.to_string())?
                .with_name("edgefleet")
                .with_telemetry(false)
                .build()
                .map_err(|e| e.to_string())
        });
        match env {
            Ok(env) => Ok(Self { env }),
            Err(reason) => Err(RuntimeError {
                path: library.to_owned(),
                reason: reason.clone(),
            }),
        }
    }

    /// Creates a session for the ONNX model in `bytes`.
    pub fn model(&self, bytes: &[u8]) -> Result<Model, ModelError> {
        let load = |e: ort::Error<ort::session::builder::SessionBuilder>| {
            ModelError::Load(ort::Error::from(e))
        };
        let session = Session::builder(self.env)
            .map_err(ModelError::Load)?
            .with_intra_threads(1)
            .map_err(load)?
            // Edge devices run small models on little memory: no pre-sized CPU arena and no
            // memory pattern planning, which hold memory for the largest batch ever seen.
            .with_execution_providers([ort::ep::CPU::default().with_arena_allocator(false).build()])
            .map_err(load)?
            .with_memory_pattern(false)
            .map_err(load)?
            .commit_from_memory(bytes)
            .map_err(ModelError::Load)?;
        Model::new(session)
    }
}
