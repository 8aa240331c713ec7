//! Packaging: a registered model becomes a standard OCI image (config, one layer holding
//! `model/model.onnx` and `model/module.json`, labels, tag = model version), built natively
//! and pushed with the registry's credentials.

use std::io::Write as _;

use edgefleet_common::module_image::{
    LABEL_MODEL_NAME, LABEL_MODEL_VERSION, MODEL_PATH, MODULE_JSON_PATH, MODULE_SCHEMA_VERSION,
    ModuleMetadata, Sample, media_type,
};
use edgefleet_onnx::Model;
use edgefleet_onnx::canary::find_sample;
use oci_client::Reference;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::records::ModelVersion;

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("the sample input does not fit the model: {0}")]
    Sample(#[source] edgefleet_onnx::ModelError),
    #[error(transparent)]
    NoSample(#[from] edgefleet_onnx::canary::NoSample),
    #[error("pushing to registry {registry} as user {username:?}: {cause}")]
    Push {
        registry: String,
        username: String,
        cause: String,
    },
    #[error("building the image: {0}")]
    Build(#[from] std::io::Error),
    #[error("building the image: {0}")]
    Json(#[from] serde_json::Error),
}

/// `model/module.json` for a model: its inputs and outputs, and a sample request (given or
/// synthesized) with the output the model gives for it.
pub fn module_metadata(
    version: &ModelVersion,
    model: &Model,
) -> Result<ModuleMetadata, PackageError> {
    let mut metadata = ModuleMetadata {
        schema_version: MODULE_SCHEMA_VERSION.to_owned(),
        name: version.name.clone(),
        version: version.version,
        description: version.description.clone(),
        inputs: model.inputs().to_vec(),
        outputs: model.outputs().to_vec(),
        sample: None,
    };
    metadata.sample = Some(match &version.sample_input {
        Some(input) => Sample {
            input: input.clone(),
            output: model.score(input).map_err(PackageError::Sample)?,
        },
        None => find_sample(model, &metadata)?,
    });
    Ok(metadata)
}

/// A built image: its blobs and manifest, ready to push.
#[derive(Debug)]
pub struct Image {
    pub layer: Vec<u8>,
    pub layer_digest: String,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Builds the image. The bytes depend only on the inputs (fixed times and modes), so packaging
/// the same model twice gives the same digest.
pub fn build(
    version: &ModelVersion,
    model_bytes: &[u8],
    metadata: &ModuleMetadata,
) -> Result<Image, PackageError> {
    let module_json = serde_json::to_vec_pretty(metadata)?;
    let mut tar = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    dir.set_mtime(0);
    tar.append_data(&mut dir, "model/", std::io::empty())?;
    for (path, bytes) in [
        (MODEL_PATH, model_bytes),
        (MODULE_JSON_PATH, module_json.as_slice()),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(bytes.len() as u64);
        header.set_mtime(0);
        tar.append_data(&mut header, path, bytes)?;
    }
    let tar = tar.into_inner()?;
    let diff_id = sha256(&tar);
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar)?;
    let layer = gz.finish()?;
    let layer_digest = sha256(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {
            LABEL_MODEL_NAME: version.name,
            LABEL_MODEL_VERSION: version.version.to_string(),
        }},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }))?;
    let config_digest = sha256(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_MANIFEST,
        "config": {"mediaType": media_type::OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": media_type::OCI_LAYER_TAR_GZIP, "digest": layer_digest, "size": layer.len()}],
        "annotations": {
            "org.opencontainers.image.title": version.name,
            "org.opencontainers.image.version": version.version.to_string(),
        },
    }))?;
    let manifest_digest = sha256(&manifest);
    Ok(Image {
        layer,
        layer_digest,
        config,
        config_digest,
        manifest,
        manifest_digest,
    })
}

/// Where and as whom to push.
#[derive(Debug)]
pub struct Destination<'a> {
    pub address: &'a str,
    pub repository: &'a str,
    pub tag: String,
    pub username: &'a str,
    pub password: &'a str,
    pub insecure: bool,
}

/// Pushes the blobs (skipping those the registry has) and then the manifest.
pub async fn push(image: &Image, to: &Destination<'_>) -> Result<(), PackageError> {
    edgefleet_transport::install_crypto_provider();
    let fail = |cause: String| PackageError::Push {
        registry: to.address.to_owned(),
        username: to.username.to_owned(),
        cause,
    };
    let protocol = if to.insecure {
        ClientProtocol::Http
    } else {
        ClientProtocol::Https
    };
    let client = oci_client::Client::new(ClientConfig {
        protocol,
        // One PUT per blob: a chunked upload costs a round trip per chunk.
        use_monolithic_push: true,
        ..ClientConfig::default()
    });
    let reference = Reference::with_tag(
        to.address.to_owned(),
        to.repository.to_owned(),
        to.tag.clone(),
    );
    let auth = RegistryAuth::Basic(to.username.to_owned(), to.password.to_owned());
    client
        .auth(&reference, &auth, oci_client::RegistryOperation::Push)
        .await
        .map_err(|e| fail(explain(e)))?;
    for (bytes, digest) in [
        (&image.layer, &image.layer_digest),
        (&image.config, &image.config_digest),
    ] {
        if client
            .blob_exists(&reference, digest)
            .await
            .unwrap_or(false)
        {
            continue;
        }
        client
            .push_blob(&reference, bytes.clone(), digest)
            .await
            .map_err(|e| fail(explain(e)))?;
    }
    let content_type = reqwest::header::HeaderValue::from_static(media_type::OCI_MANIFEST);
    client
        .push_manifest_raw(&reference, image.manifest.clone(), content_type)
        .await
        .map_err(|e| fail(explain(e)))?;
    Ok(())
}

fn explain(e: oci_client::errors::OciDistributionError) -> String {
    use oci_client::errors::OciDistributionError as E;
    match e {
        E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => {
            "unauthorized: check the registry's user name and password (`edgefleet registry add`)"
                .to_owned()
        }
        other => other.to_string(),
    }
}
