//! edgefleet-agent: the on-device daemon.
//!
//! It pulls model module images, runs them in-process with ONNX Runtime ([`model`]) and
//! serves them locally; requests and responses are converted by [`tensor_json`].

pub mod model;
pub mod tensor_json;
