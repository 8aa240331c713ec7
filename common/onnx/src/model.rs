//! A loaded model: one ONNX Runtime session with the inputs and outputs it declares.

use std::sync::Mutex;

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
    pub(crate) fn new(session: Session) -> Result<Self, ModelError> {
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
            session: Mutex::new(session),
            inputs,
            outputs,
        })
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
        let mut session = self.session.lock().map_err(|_| ModelError::Poisoned)?;
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
