//! edgefleet-onnx: everything both binaries do with ONNX Runtime.
//!
//! [`runtime`] loads the ONNX Runtime library once per process (ort's `load-dynamic`, so one
//! binary works with the library the machine has) and makes a [`model::Model`] from bytes.
//! [`tensor_json`] turns `/score` request bodies into tensors and outputs back into JSON, with
//! [`element_type`] the one mapping between Edgefleet's and ONNX's element types. [`canary`]
//! holds what activation and packaging check a model with: metadata read from the model, a
//! synthetic request, and the canary itself.
//!
//! The agent serves models with it; the fleet checks models at registration and records
//! their metadata and sample when it packages them. Neither depends on the other.

pub mod canary;
pub mod element_type;
pub mod model;
pub mod profile;
pub mod runtime;
pub mod tensor_json;

pub use model::{Model, ModelError};
pub use runtime::OnnxRuntime;
