//! OCI image layouts of model module images, and pushing them with skopeo.

use std::io::Write as _;
use std::path::Path;
use std::process::Command;

use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::process::require_program;
use crate::registry::Registry;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/...`) holding one
/// image, tagged `latest`.
#[derive(Debug)]
pub struct OciLayout {
    dir: tempfile::TempDir,
    /// `sha256:...` of the image manifest.
    pub manifest_digest: String,
    /// `sha256:...` of the (gzip) layer.
    pub layer_digest: String,
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl OciLayout {
    /// The image `docker build` makes from `images/model-module/Dockerfile`: `FROM scratch`
    /// and one layer holding `model/model.onnx` (and `model/module.json` when given).
    pub fn model_module(model: &[u8], module_json: Option<&[u8]>, labels: &[(&str, &str)]) -> Self {
        let mut files: Vec<(&str, &[u8])> = vec![("model/model.onnx", model)];
        if let Some(json) = module_json {
            files.push(("model/module.json", json));
        }
        Self::with_files(&files, labels)
    }

    /// An image of one layer holding `files` (paths relative to `/`).
    pub fn with_files(files: &[(&str, &[u8])], labels: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let blobs = dir.path().join("blobs/sha256");
        std::fs::create_dir_all(&blobs).expect("create blobs dir");
        let put = |bytes: &[u8]| -> (String, usize) {
            let digest = sha256(bytes);
            let name = digest.trim_start_matches("sha256:");
            std::fs::write(blobs.join(name), bytes).expect("write blob");
            (digest, bytes.len())
        };

        let tar = layer_tar(files);
        let diff_id = sha256(&tar);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).expect("gzip layer");
        let (layer_digest, layer_size) = put(&gz.finish().expect("gzip layer"));

        let labels: serde_json::Map<String, serde_json::Value> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": labels},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        });
        let (config_digest, config_size) = put(&serde_json::to_vec(&config).expect("config"));
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": layer_digest, "size": layer_size}],
        });
        let (manifest_digest, manifest_size) =
            put(&serde_json::to_vec(&manifest).expect("manifest"));
        let index = json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": OCI_MANIFEST,
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": {"org.opencontainers.image.ref.name": "latest"},
            }],
        });
        std::fs::write(dir.path().join("index.json"), index.to_string()).expect("index.json");
        std::fs::write(
            dir.path().join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .expect("oci-layout");
        Self {
            dir,
            manifest_digest,
            layer_digest,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The bytes of one blob of the layout (`sha256:...`).
    pub fn blob(&self, digest: &str) -> Vec<u8> {
        let hex = digest.trim_start_matches("sha256:");
        std::fs::read(self.dir.path().join("blobs/sha256").join(hex)).expect("blob in layout")
    }
}

/// A tar stream with a directory entry for each parent and a 0644 file per entry, as
/// `COPY` in a Dockerfile writes them.
fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dirs: Vec<String> = Vec::new();
    for (path, bytes) in files {
        if let Some((parent, _)) = path.rsplit_once('/')
            && !dirs.iter().any(|d| d == parent)
        {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            header.set_mtime(0);
            builder
                .append_data(&mut header, format!("{parent}/"), std::io::empty())
                .expect("tar dir");
            dirs.push(parent.to_owned());
        }
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(bytes.len() as u64);
        header.set_mtime(0);
        builder
            .append_data(&mut header, path, *bytes)
            .expect("tar file");
    }
    builder.into_inner().expect("tar")
}

/// Pushes `layout` to `registry` as `<repository>:<tag>` with `skopeo copy`, authenticating
/// as `username`/`password`. Returns skopeo's error output when the push fails.
pub fn skopeo_push(
    layout: &OciLayout,
    registry: &Registry,
    repository: &str,
    tag: &str,
    username: &str,
    password: &str,
) -> Result<(), String> {
    let mut cmd = Command::new(require_program("skopeo", "skopeo"));
    cmd.args(["--insecure-policy", "copy", "--quiet"])
        .arg(format!("--dest-creds={username}:{password}"));
    match registry.tls() {
        Some(tls) => cmd.arg(format!("--dest-cert-dir={}", tls.cert_dir.display())),
        None => cmd.arg("--dest-tls-verify=false"),
    };
    cmd.arg(format!("oci:{}:latest", layout.path().display()))
        .arg(format!(
            "docker://{}/{repository}:{tag}",
            registry.address()
        ));
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run skopeo: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
