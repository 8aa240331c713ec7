//! A loaded model: its ONNX Runtime sessions (one, or one per core for a small model) and the
//! inputs and outputs it declares.

use std::sync::{Mutex, MutexGuard, TryLockError};

use edgefleet_common::module_image::{IoSpec, ValueSpec};
use ort::session::Session;
use ort::value::ValueType;
use serde_json::Value;

use crate::element_type;
use crate::tensor_json::{self, OutputError, RequestError};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot load model: {0}")]
    Load(#[source] ort::Error),
    #[error(
        "the deployment requires execution provider {0}, which this device's ONNX Runtime does not have (remove it from executionProviders, or drop requireExecutionProviders to run on the CPU)"
    )]
    ProviderUnavailable(&'static str),
    #[error("model {what} {name:?} has type {ty}, which Edgefleet cannot serve")]
    UnsupportedType {
        what: &'static str,
        name: String,
        ty: String,
    },
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("inference failed: {0}")]
    Inference(#[source] ort::Error),
    #[error("inference failed: {0}")]
    Output(#[from] OutputError),
    #[error("inference failed: the session was poisoned by an earlier panic")]
    Poisoned,
    #[error("cannot load model: no session was created")]
    NoSession,
}

/// One model ready to score requests. Scoring takes `&self`: a call holds one of the model's
/// sessions (a session runs one call at a time), and a small model has one per core, so
/// requests answered on different threads do not queue for one session.
#[derive(Debug)]
pub struct Model {
    sessions: Vec<Mutex<Session>>,
    inputs: Vec<IoSpec>,
    outputs: Vec<IoSpec>,
}

impl Model {
    /// `sessions` are of the same model (at least one).
    pub(crate) fn new(sessions: Vec<Session>) -> Result<Self, ModelError> {
        let Some(session) = sessions.first() else {
            return Err(ModelError::NoSession);
        };
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
        Ok(Self {
            sessions: sessions.into_iter().map(Mutex::new).collect(),
            inputs,
            outputs,
        })
    }

    /// How many sessions the model has: requests on that many threads run at once.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

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
        let mut session = self.session()?;
        let outputs = session.run(feeds).map_err(ModelError::Inference)?;
        let mut body = serde_json::Map::with_capacity(self.outputs.len());
        for (spec, (_, value)) in self.outputs.iter().zip(outputs.iter()) {
            body.insert(
                spec.name.clone(),
                tensor_json::output_to_json(spec, &value)?,
            );
        }
        Ok(Value::Object(body))
    }

    /// A session no other call holds, else the first one once it is free.
    fn session(&self) -> Result<MutexGuard<'_, Session>, ModelError> {
        for session in &self.sessions {
            match session.try_lock() {
                Ok(guard) => return Ok(guard),
                Err(TryLockError::Poisoned(_)) => return Err(ModelError::Poisoned),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        self.sessions[0].lock().map_err(|_| ModelError::Poisoned)
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
            dtype: element_type::from_onnx(*elem).ok_or_else(unsupported)?,
            shape: shape.iter().copied().collect(),
        },
        ValueType::Sequence(inner) => match inner.as_ref() {
            ValueType::Map { key, value } => ValueSpec::SequenceOfMaps {
                key: element_type::from_onnx(*key).ok_or_else(unsupported)?,
                value: element_type::from_onnx(*value).ok_or_else(unsupported)?,
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
