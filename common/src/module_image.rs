//! The model module image format: a standard OCI image whose single layer holds
//! `model/model.onnx` and, for images made by the fleet, `model/module.json`
//! ([`ModuleMetadata`]). Plain images built from `images/model-module/Dockerfile` carry the
//! model only; the agent then reads inputs and outputs from the model itself.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const MODULE_SCHEMA_VERSION: &str = "1";

/// Path of the model inside the layer (no leading slash, as tar entries are written).
pub const MODEL_PATH: &str = "model/model.onnx";
/// Path of the module metadata inside the layer.
pub const MODULE_JSON_PATH: &str = "model/module.json";

pub const LABEL_MODEL_NAME: &str = "org.edgefleet.model.name";
pub const LABEL_MODEL_VERSION: &str = "org.edgefleet.model.version";

/// Media types the agent accepts and the fleet writes.
pub mod media_type {
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER_TAR_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
}

/// `model/module.json`: what a model expects and returns, with a sample for the OpenAPI
/// document and the activation canary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModuleMetadata {
    pub schema_version: String,
    pub name: String,
    pub version: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub inputs: Vec<IoSpec>,
    pub outputs: Vec<IoSpec>,
    /// A sample request and the output the model gave for it when it was packaged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<Sample>,
}

/// One named input or output of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IoSpec {
    pub name: String,
    #[serde(flatten)]
    pub value: ValueSpec,
}

/// The ONNX value kinds a model module can take or give.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ValueSpec {
    /// A tensor; `-1` marks a dimension fixed only at run time (usually the batch).
    Tensor { dtype: ElementType, shape: Vec<i64> },
    /// A sequence of maps, one per row, as scikit-learn classifiers' ZipMap output gives.
    SequenceOfMaps {
        key: ElementType,
        value: ElementType,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ElementType {
    Float32,
    Float64,
    Int8,
    Int16,
    Int32,
    Int64,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Bool,
    String,
}

/// A request body as `POST /score` takes it, and what the model answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    pub input: serde_json::Value,
    pub output: serde_json::Value,
}

/// An image reference as manifests carry it: `registry/repository[:tag]@sha256:<hex>`.
/// The registry is always explicit (no implied default registry), and a manifest pins every
/// image by digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReference {
    /// Host and optional port (`127.0.0.1:5000`).
    pub registry: String,
    /// `models/diabetes`
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<64 hex>`
    pub digest: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid image reference {reference:?}: {reason} (expected registry/repository[:tag]@sha256:<64 hex digits>)"
)]
pub struct ImageReferenceError {
    pub reference: String,
    pub reason: &'static str,
}

impl std::str::FromStr for ImageReference {
    type Err = ImageReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |reason| ImageReferenceError {
            reference: s.to_owned(),
            reason,
        };
        let (name, digest) = match s.split_once('@') {
            Some((name, digest)) => {
                let hex = digest
                    .strip_prefix("sha256:")
                    .ok_or_else(|| fail("only sha256 digests are supported"))?;
                if hex.len() != 64
                    || !hex
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                {
                    return Err(fail("the digest is not 64 lower-case hex digits"));
                }
                (name, Some(digest.to_owned()))
            }
            None => (s, None),
        };
        let (registry, path) = name
            .split_once('/')
            .ok_or_else(|| fail("no registry host before the repository"))?;
        if registry.is_empty()
            || !registry
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
        {
            return Err(fail("the registry host is not a host[:port]"));
        }
        let last_slash = path.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match path[last_slash..].find(':') {
            Some(i) => (
                &path[..last_slash + i],
                Some(path[last_slash + i + 1..].to_owned()),
            ),
            None => (path, None),
        };
        let repository_ok = !repository.is_empty()
            && repository.split('/').all(|part| {
                !part.is_empty()
                    && part.bytes().all(|b| {
                        b.is_ascii_lowercase()
                            || b.is_ascii_digit()
                            || matches!(b, b'.' | b'_' | b'-')
                    })
            });
        if !repository_ok {
            return Err(fail(
                "the repository must be lower-case letters, digits, '.', '_', '-' and '/'",
            ));
        }
        if let Some(tag) = &tag
            && (tag.is_empty()
                || tag.len() > 128
                || !tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')))
        {
            return Err(fail(
                "the tag is not 1-128 letters, digits, '.', '_' or '-'",
            ));
        }
        Ok(Self {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag,
            digest,
        })
    }
}

impl std::fmt::Display for ImageReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:58bd7d364d7588448bfb95ecdb81ad3e9179e9e1f3407e8f0a6e3927daa763a6";

    #[test]
    fn references_parse_into_their_parts_and_print_back() {
        for text in [
            format!("127.0.0.1:5000/models/diabetes@{DIGEST}"),
            format!("registry.local/models/diabetes:3@{DIGEST}"),
            "localhost:5000/a/b/c:v1.2".to_owned(),
        ] {
            let r: ImageReference = text.parse().expect("valid");
            assert_eq!(r.to_string(), text);
        }
        let r: ImageReference = format!("127.0.0.1:5000/models/diabetes:3@{DIGEST}")
            .parse()
            .expect("valid");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "models/diabetes");
        assert_eq!(r.tag.as_deref(), Some("3"));
        assert_eq!(r.digest.as_deref(), Some(DIGEST));
    }

    #[test]
    fn malformed_references_say_what_is_wrong() {
        for (text, reason) in [
            ("diabetes", "no registry"),
            ("127.0.0.1:5000/Models/x", "lower-case"),
            ("127.0.0.1:5000/models/x@md5:abc", "sha256"),
            ("127.0.0.1:5000/models/x@sha256:abc", "64"),
            ("127.0.0.1:5000/models/x:", "tag"),
        ] {
            let err = text.parse::<ImageReference>().expect_err(text);
            assert!(err.to_string().contains(reason), "{text}: {err}");
        }
    }
}
