//! The `swagger.json` a model module serves (as the Azure ML inference server does): an OpenAPI
//! document of `/score` built from the model's declared inputs and outputs.

use edgefleet_common::module_image::{ElementType, IoSpec, ModuleMetadata, ValueSpec};
use serde_json::{Value, json};

fn element_schema(dtype: ElementType) -> Value {
    match dtype {
        ElementType::Float32 | ElementType::Float64 => json!({"type": "number"}),
        ElementType::Bool => json!({"type": "boolean"}),
        ElementType::String => json!({"type": "string"}),
        _ => json!({"type": "integer"}),
    }
}

fn io_schema(spec: &IoSpec) -> Value {
    match &spec.value {
        ValueSpec::Tensor { dtype, shape } => {
            shape
                .iter()
                .rev()
                .fold(element_schema(*dtype), |items, dim| {
                    let mut s = json!({"type": "array", "items": items});
                    if *dim >= 0 {
                        s["minItems"] = json!(dim);
                        s["maxItems"] = json!(dim);
                    }
                    s
                })
        }
        ValueSpec::SequenceOfMaps { value, .. } => json!({
            "type": "array",
            "items": {"type": "object", "additionalProperties": element_schema(*value)}
        }),
    }
}

/// The OpenAPI 3 document of a model module.
pub fn openapi(name: &str, metadata: &ModuleMetadata, digest: &str, secured: bool) -> Value {
    let mut input_props = serde_json::Map::new();
    if let [only] = metadata.inputs.as_slice() {
        input_props.insert("data".into(), io_schema(only));
    } else {
        for spec in &metadata.inputs {
            input_props.insert(spec.name.clone(), io_schema(spec));
        }
    }
    let output_props: serde_json::Map<String, Value> = metadata
        .outputs
        .iter()
        .map(|s| (s.name.clone(), io_schema(s)))
        .collect();
    let mut input = json!({"type": "object", "properties": input_props, "required": input_props.keys().collect::<Vec<_>>()});
    let mut output = json!({"type": "object", "properties": output_props});
    if let Some(sample) = &metadata.sample {
        input["example"] = sample.input.clone();
        output["example"] = sample.output.clone();
    }
    let mut doc = json!({
        "openapi": "3.0.1",
        "info": {
            "title": format!("{name} scoring API"),
            "description": metadata.description,
            "version": format!("{} ({digest})", metadata.version),
        },
        "paths": {
            "/": {"get": {"summary": "Liveness", "responses": {"200": {"description": "Healthy", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/score": {"post": {
                "summary": "Score one request",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ServiceInput"}}}},
                "responses": {
                    "200": {"description": "Model outputs", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ServiceOutput"}}}},
                    "400": {"description": "The request does not fit the model's inputs", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}},
                    "401": {"description": "Missing or wrong bearer key"},
                    "503": {"description": "The answer's inference record could not be stored; retry after the Retry-After seconds", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
                }
            }}
        },
        "components": {"schemas": {
            "ServiceInput": input,
            "ServiceOutput": output,
            "ErrorResponse": {"type": "object", "properties": {"error": {"type": "string"}}}
        }}
    });
    if secured {
        doc["components"]["securitySchemes"] =
            json!({"Bearer": {"type": "http", "scheme": "bearer"}});
        doc["security"] = json!([{"Bearer": []}]);
    }
    doc
}
