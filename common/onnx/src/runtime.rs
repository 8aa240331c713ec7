//! The process-wide ONNX Runtime environment, loaded at run time from a shared library (ort's
//! `load-dynamic`), so one binary works with the library the machine has.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use edgefleet_common::manifest::{ExecutionProvider, GraphOptimization, SessionOptions};
use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;

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

/// Models up to this size get a session per core (see [`OnnxRuntime::model_with`]).
const SESSION_PER_CORE_MAX_BYTES: usize = 4 * 1024 * 1024;

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

    /// Creates a session for the ONNX model in `bytes` with the default options.
    pub fn model(&self, bytes: &[u8]) -> Result<Model, ModelError> {
        Ok(self.model_with(bytes, &SessionOptions::default())?.0)
    }

    /// Creates a session for the ONNX model in `bytes` as `options` say. Also returns what
    /// runs otherwise than asked (an execution provider this ONNX Runtime lacks, skipped).
    pub fn model_with(
        &self,
        bytes: &[u8],
        options: &SessionOptions,
    ) -> Result<(Model, Vec<String>), ModelError> {
        let load = |e: ort::Error<ort::session::builder::SessionBuilder>| {
            ModelError::Load(ort::Error::from(e))
        };
        let mut warnings = Vec::new();
        let mut providers = Vec::new();
        for &provider in &options.execution_providers {
            if provider == ExecutionProvider::Cpu {
                continue;
            }
            if !is_available(provider) {
                if options.require_execution_providers {
                    return Err(ModelError::ProviderUnavailable(provider.runtime_name()));
                }
                warnings.push(format!(
                    "{} is not in this device's ONNX Runtime; the model runs on the CPU",
                    provider.runtime_name()
                ));
                continue;
            }
            let dispatch = match provider {
                ExecutionProvider::Cuda => ort::ep::CUDA::default().build(),
                ExecutionProvider::Tensorrt => ort::ep::TensorRT::default().build(),
                ExecutionProvider::Openvino => ort::ep::OpenVINO::default().build(),
                ExecutionProvider::Cpu => continue,
            };
            providers.push(if options.require_execution_providers {
                dispatch.error_on_failure()
            } else {
                dispatch
            });
        }
        // Edge devices run small models on little memory: no pre-sized CPU arena and no
        // memory pattern planning, which hold memory for the largest batch ever seen.
        providers.push(ort::ep::CPU::default().with_arena_allocator(false).build());
        let level = match options.graph_optimization {
            Some(GraphOptimization::Disabled) => GraphOptimizationLevel::Disable,
            Some(GraphOptimization::Basic) => GraphOptimizationLevel::Level1,
            Some(GraphOptimization::Extended) => GraphOptimizationLevel::Level2,
            Some(GraphOptimization::All) | None => GraphOptimizationLevel::All,
        };
        let inter = options.inter_op_threads.unwrap_or(1).max(1);
        let session = || {
            Session::builder(self.env)
                .map_err(ModelError::Load)?
                .with_intra_threads(usize::from(options.intra_op_threads.unwrap_or(1).max(1)))
                .map_err(load)?
                .with_parallel_execution(inter > 1)
                .map_err(load)?
                .with_inter_threads(usize::from(inter))
                .map_err(load)?
                .with_optimization_level(level)
                .map_err(load)?
                .with_execution_providers(providers.clone())
                .map_err(load)?
                .with_memory_pattern(false)
                .map_err(load)?
                .commit_from_memory(bytes)
                .map_err(ModelError::Load)
        };
        // A small model gets a session per core (the memory of a few small sessions buys
        // requests that never wait for each other); a large one is loaded once.
        let count = if bytes.len() <= SESSION_PER_CORE_MAX_BYTES {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            1
        };
        let sessions = (0..count).map(|_| session()).collect::<Result<_, _>>()?;
        Ok((Model::new(sessions)?, warnings))
    }
}

/// Whether the loaded ONNX Runtime was built with `provider`.
fn is_available(provider: ExecutionProvider) -> bool {
    use ort::ep::ExecutionProvider as _;
    let available = match provider {
        ExecutionProvider::Cpu => return true,
        ExecutionProvider::Cuda => ort::ep::CUDA::is_available(),
        ExecutionProvider::Tensorrt => ort::ep::TensorRT::is_available(),
        ExecutionProvider::Openvino => ort::ep::OpenVINO::is_available(),
    };
    available.unwrap_or(false)
}
