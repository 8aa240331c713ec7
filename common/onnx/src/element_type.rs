//! The one mapping between Edgefleet's [`ElementType`] (what module metadata and error messages
//! speak) and ONNX Runtime's [`TensorElementType`], both directions.

use edgefleet_common::module_image::ElementType;
use ort::value::TensorElementType;

/// Every element type Edgefleet serves.
const ALL: [ElementType; 12] = [
    ElementType::Float32,
    ElementType::Float64,
    ElementType::Int8,
    ElementType::Int16,
    ElementType::Int32,
    ElementType::Int64,
    ElementType::Uint8,
    ElementType::Uint16,
    ElementType::Uint32,
    ElementType::Uint64,
    ElementType::Bool,
    ElementType::String,
];

/// The ONNX element type of an Edgefleet one.
pub fn to_onnx(dtype: ElementType) -> TensorElementType {
    match dtype {
        ElementType::Float32 => TensorElementType::Float32,
        ElementType::Float64 => TensorElementType::Float64,
        ElementType::Int8 => TensorElementType::Int8,
        ElementType::Int16 => TensorElementType::Int16,
        ElementType::Int32 => TensorElementType::Int32,
        ElementType::Int64 => TensorElementType::Int64,
        ElementType::Uint8 => TensorElementType::Uint8,
        ElementType::Uint16 => TensorElementType::Uint16,
        ElementType::Uint32 => TensorElementType::Uint32,
        ElementType::Uint64 => TensorElementType::Uint64,
        ElementType::Bool => TensorElementType::Bool,
        ElementType::String => TensorElementType::String,
    }
}

/// The Edgefleet element type of an ONNX one; `None` for types Edgefleet cannot serve
/// (float16, complex, ...).
pub fn from_onnx(ty: TensorElementType) -> Option<ElementType> {
    ALL.into_iter().find(|dtype| to_onnx(*dtype) == ty)
}

/// The name error messages and the OpenAPI document use (`float32`).
pub fn name(dtype: ElementType) -> &'static str {
    match dtype {
        ElementType::Float32 => "float32",
        ElementType::Float64 => "float64",
        ElementType::Int8 => "int8",
        ElementType::Int16 => "int16",
        ElementType::Int32 => "int32",
        ElementType::Int64 => "int64",
        ElementType::Uint8 => "uint8",
        ElementType::Uint16 => "uint16",
        ElementType::Uint32 => "uint32",
        ElementType::Uint64 => "uint64",
        ElementType::Bool => "bool",
        ElementType::String => "string",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_element_type_maps_to_onnx_and_back() {
        for dtype in ALL {
            assert_eq!(from_onnx(to_onnx(dtype)), Some(dtype));
        }
        assert_eq!(from_onnx(TensorElementType::Float16), None);
        assert_eq!(name(ElementType::Uint16), "uint16");
    }
}
