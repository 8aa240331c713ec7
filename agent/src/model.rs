//! A loaded model: one ONNX Runtime session with the inputs and outputs it declares.
//!
//! ONNX Runtime is loaded at run time from a shared library (ort's `load-dynamic`), so one
//! agent binary works with the library the device has; [`OnnxRuntime::load`] does that once
//! per process.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use edgefleet_common::module_image::{ElementType, IoSpec, ValueSpec};
use ort::environment::Environment;
use ort::session::Session;
use ort::value::{TensorElementType, ValueType};
use serde_json::Value;

use crate::tensor_json::{self, RequestError};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "cannot load ONNX Runtime from {path}: {reason} (run scripts/provision-ort, or set onnxRuntimeLibrary in the agent config)"
    )]
    Runtime { path: PathBuf, reason: String },
    #[error("cannot load model: {0}")]
    Load(String),
    #[error("model {what} {name:?} has type {ty}, which Edgefleet cannot serve")]
    UnsupportedType {
        what: &'static str,
        name: String,
        ty: String,
    },
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("inference failed: {0}")]
    Inference(String),
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
    pub fn load(library: &Path) -> Result<Self, ModelError> {
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
            Err(reason) => Err(ModelError::Runtime {
                path: library.to_owned(),
                reason: reason.clone(),
            }),
        }
    }

    /// Creates a session for the ONNX model in `bytes`.
    pub fn model(&self, bytes: &[u8]) -> Result<Model, ModelError> {
        let session = Session::builder(self.env)
            .map_err(|e| ModelError::Load(e.to_string()))?
            .with_intra_threads(1)
            .map_err(|e| ModelError::Load(e.to_string()))?
            // Edge devices run small models on little memory: no pre-sized CPU arena and no
            // memory pattern planning, which hold memory for the largest batch ever seen.
            .with_execution_providers([ort::ep::CPU::default().with_arena_allocator(false).build()])
            .map_err(|e| ModelError::Load(e.to_string()))?
            .with_memory_pattern(false)
            .map_err(|e| ModelError::Load(e.to_string()))?
            .commit_from_memory(bytes)
            .map_err(|e| ModelError::Load(e.to_string()))?;
        let inputs = session
            .inputs()
            .iter()
            .map(|o| io_spec("input", o.name(), o.dtype()))
            .collect::<Result<_, _>>()?;
        let outputs = session
            .outputs()
            .iter()
            .map(|o| io_spec("output", o.name(), o.dtype()))
            .collect::<Result<_, _>>()?;
        Ok(Model {
            session: Mutex::new(session),
            inputs,
            outputs,
        })
    }
}

/// One model ready to score requests. Scoring takes `&self`: calls are serialized on the
/// session, which ONNX Runtime requires.
#[derive(Debug)]
pub struct Model {
    session: Mutex<Session>,
    inputs: Vec<IoSpec>,
    outputs: Vec<IoSpec>,
}

impl Model {
    pub fn inputs(&self) -> &[IoSpec] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[IoSpec] {
        &self.outputs
    }

    /// Scores one request body as `POST /score` takes it and returns the response body:
    /// an object with one member per model output.
    pub fn score(&self, request: &Value) -> Result<Value, ModelError> {
        let feeds = tensor_json::request_to_inputs(&self.inputs, request)?;
        let mut session = self
            .session
            .lock()
            .map_err(|_| ModelError::Inference("session poisoned by an earlier panic".into()))?;
        let outputs = session
            .run(feeds)
            .map_err(|e| ModelError::Inference(e.to_string()))?;
        let mut body = serde_json::Map::with_capacity(self.outputs.len());
        for (spec, (_, value)) in self.outputs.iter().zip(outputs.iter()) {
            body.insert(
                spec.name.clone(),
                tensor_json::output_to_json(spec, &value)?,
            );
        }
        Ok(Value::Object(body))
    }
}

fn io_spec(what: &'static str, name: &str, ty: &ValueType) -> Result<IoSpec, ModelError> {
    let unsupported = || ModelError::UnsupportedType {
        what,
        name: name.to_owned(),
        ty: format!("{ty:?}"),
    };
    let value = match ty {
        ValueType::Tensor {
            ty: elem, shape, ..
        } => ValueSpec::Tensor {
            dtype: element_type(*elem).ok_or_else(unsupported)?,
            shape: shape.iter().copied().collect(),
        },
        ValueType::Sequence(inner) => match inner.as_ref() {
            ValueType::Map { key, value } => ValueSpec::SequenceOfMaps {
                key: element_type(*key).ok_or_else(unsupported)?,
                value: element_type(*value).ok_or_else(unsupported)?,
            },
            _ => return Err(unsupported()),
        },
        _ => return Err(unsupported()),
    };
    Ok(IoSpec {
        name: name.to_owned(),
        value,
    })
}

fn element_type(ty: TensorElementType) -> Option<ElementType> {
    Some(match ty {
        TensorElementType::Float32 => ElementType::Float32,
        TensorElementType::Float64 => ElementType::Float64,
        TensorElementType::Int8 => ElementType::Int8,
        TensorElementType::Int16 => ElementType::Int16,
        TensorElementType::Int32 => ElementType::Int32,
        TensorElementType::Int64 => ElementType::Int64,
        TensorElementType::Uint8 => ElementType::Uint8,
        TensorElementType::Uint16 => ElementType::Uint16,
        TensorElementType::Uint32 => ElementType::Uint32,
        TensorElementType::Uint64 => ElementType::Uint64,
        TensorElementType::Bool => ElementType::Bool,
        TensorElementType::String => ElementType::String,
        _ => return None,
    })
}
