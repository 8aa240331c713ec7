//! Pulls model module images: the image manifest pinned by digest, then each layer into a
//! content-addressed cache (`blobs/sha256/<hex>`), verified against its digest. A layer already
//! in the cache is never fetched again; an interrupted download resumes from its `.partial`
//! file; the disk budget is checked before anything is downloaded.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use edgefleet_common::manifest::RegistryCredential;
use edgefleet_common::module_image::{
    ImageReference, ImageReferenceError, MODEL_PATH, MODULE_JSON_PATH, ModuleMetadata,
};
use futures_util::StreamExt as _;
use oci_client::manifest::OciDescriptor;
use oci_client::{Client, Reference};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use crate::images::disk_budget::{DiskBudget, Usage};
use crate::images::pull_error::{PullCause, PullError, pull_error};
use crate::images::registry::{
    ManifestDocument, RegistryAccess, classify, image_manifest, parse_manifest, platform_entry,
};
use crate::store::Store;

/// A pulled model module image, its files read from the cached layers.
#[derive(Debug)]
pub struct PulledModel {
    pub digest: String,
    pub blobs: Vec<String>,
    pub model: Vec<u8>,
    pub metadata: Option<ModuleMetadata>,
}

/// Pull settings from the agent configuration.
#[derive(Debug, Clone)]
pub struct PullerSettings {
    pub blobs_dir: PathBuf,
    pub registries: RegistryAccess,
    pub budget: DiskBudget,
}

#[derive(Debug)]
pub struct Puller {
    settings: PullerSettings,
    store: Store,
    /// Blobs a bundle import put in the cache for a manifest not applied yet: not garbage.
    held: Mutex<BTreeSet<String>>,
}

impl Puller {
    pub fn new(settings: PullerSettings, store: Store) -> Self {
        Self {
            settings,
            store,
            held: Mutex::default(),
        }
    }

    /// Checks that `image` can be pulled with `credential` without downloading any layer;
    /// returns the bytes of its config and layers (see [`RegistryAccess::image_bytes`]).
    pub async fn image_bytes(
        &self,
        image: &str,
        credential: Option<(&RegistryCredential, &str)>,
    ) -> Result<u64, PullError> {
        self.settings
            .registries
            .image_bytes(image, credential)
            .await
    }

    /// Pulls `image` (pinned by digest) with `credential` (and its unsealed `password`). An
    /// image whose manifests and layers are all in the cache (pulled before, or imported from
    /// a bundle) is read from there without asking the registry.
    /// `usage` is what the agent keeps besides the model cache (images, outbox reserve), for
    /// the disk budget.
    pub async fn pull_model(
        &self,
        image: &str,
        credential: Option<(&RegistryCredential, &str)>,
        usage: Usage,
    ) -> Result<PulledModel, PullError> {
        let fail = |cause| pull_error(image, cause);
        if let Some(cached) = self.cached_image(image).map_err(fail)? {
            let (model, metadata) = self.read_model(&cached.layers).map_err(fail)?;
            return Ok(PulledModel {
                digest: cached.digest,
                blobs: cached.blobs,
                model,
                metadata,
            });
        }
        let f = self
            .settings
            .registries
            .pinned_manifest(image, credential)
            .await?;
        let classify = |e| classify(e, &f.reference, &f.who);
        let (manifest, platform) =
            image_manifest(&f.client, &f.reference, &f.auth, &f.raw, &classify)
                .await
                .map_err(fail)?;
        self.check_budget(image, &manifest.layers, usage)
            .map_err(fail)?;
        let mut blobs = Vec::new();
        for layer in &manifest.layers {
            self.fetch_blob(&f.client, &f.reference, layer, &classify)
                .await
                .map_err(fail)?;
            blobs.push(layer.digest.clone());
        }
        // The manifests are kept too, so the image can be activated again offline.
        for (digest, raw) in std::iter::once((f.pinned.clone(), f.raw.clone())).chain(platform) {
            self.add_blob(&digest, &mut raw.as_slice()).map_err(fail)?;
            blobs.push(digest);
        }
        let (model, metadata) = self.read_model(&manifest.layers).map_err(fail)?;
        Ok(PulledModel {
            digest: f.pinned,
            blobs,
            model,
            metadata,
        })
    }

    /// `image` as the cache holds it, when its manifests and layers are all there.
    fn cached_image(&self, image: &str) -> Result<Option<CachedImage>, PullCause> {
        let parsed: ImageReference = image
            .parse()
            .map_err(|e: ImageReferenceError| PullCause::BadReference(e.to_string()))?;
        let pinned = parsed.digest.ok_or(PullCause::NotPinned)?;
        let cached = self
            .store
            .blobs()
            .map_err(|e| PullCause::Cache(e.to_string()))?;
        let read = |digest: &str| -> Result<Option<Vec<u8>>, PullCause> {
            if !cached.contains_key(digest) {
                return Ok(None);
            }
            Ok(std::fs::read(self.blob_path(digest)?).ok())
        };
        let Some(raw) = read(&pinned)? else {
            return Ok(None);
        };
        let mut manifests = vec![pinned.clone()];
        let manifest = match parse_manifest(&raw)? {
            ManifestDocument::Image(m) => *m,
            ManifestDocument::Index(index) => {
                let entry = platform_entry(&index)?;
                let Some(raw) = read(&entry.digest)? else {
                    return Ok(None);
                };
                manifests.push(entry.digest.clone());
                match parse_manifest(&raw)? {
                    ManifestDocument::Image(m) => *m,
                    ManifestDocument::Index(_) => {
                        return Err(PullCause::Registry("an index inside an index".into()));
                    }
                }
            }
        };
        if !manifest
            .layers
            .iter()
            .all(|l| cached.contains_key(&l.digest))
        {
            return Ok(None);
        }
        // In the order a pull from the registry records them: layers, then manifests.
        let blobs = manifest
            .layers
            .iter()
            .map(|l| l.digest.clone())
            .chain(manifests)
            .collect();
        Ok(Some(CachedImage {
            digest: pinned,
            blobs,
            layers: manifest.layers,
        }))
    }

    /// Adds blob `digest` to the cache from `content`, checking the digest; a blob already
    /// cached is left as it is.
    pub fn add_blob(&self, digest: &str, content: &mut dyn std::io::Read) -> Result<(), PullCause> {
        let path = self.blob_path(digest)?;
        let cached = self
            .store
            .blobs()
            .map_err(|e| PullCause::Cache(e.to_string()))?;
        if cached.contains_key(digest) && path.exists() {
            return Ok(());
        }
        let cache_err = |e: std::io::Error| PullCause::Cache(format!("{}: {e}", path.display()));
        std::fs::create_dir_all(self.settings.blobs_dir.join("sha256")).map_err(cache_err)?;
        let partial = path.with_extension("partial");
        let mut file = std::fs::File::create(&partial).map_err(cache_err)?;
        let mut hashing = HashingWriter {
            inner: &mut file,
            hasher: Sha256::new(),
        };
        let size = std::io::copy(content, &mut hashing).map_err(cache_err)?;
        let actual = format!("sha256:{}", hex::encode(hashing.hasher.finalize()));
        if actual != digest {
            let _ = std::fs::remove_file(&partial);
            return Err(PullCause::DigestMismatch {
                what: format!("blob {digest}"),
                expected: digest.to_owned(),
                actual,
            });
        }
        file.sync_all().map_err(cache_err)?;
        std::fs::rename(&partial, &path).map_err(cache_err)?;
        self.store
            .add_blob(digest, size)
            .map_err(|e| PullCause::Cache(e.to_string()))
    }

    fn blob_path(&self, digest: &str) -> Result<PathBuf, PullCause> {
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| {
                PullCause::MediaType(format!("digest {digest} (only sha256 is supported)"))
            })?;
        Ok(self.settings.blobs_dir.join("sha256").join(hex))
    }

    fn check_budget(
        &self,
        image: &str,
        layers: &[OciDescriptor],
        usage: Usage,
    ) -> Result<(), PullCause> {
        let cached = self
            .store
            .blobs()
            .map_err(|e| PullCause::Cache(e.to_string()))?;
        let needed: u64 = layers
            .iter()
            .filter(|l| !cached.contains_key(&l.digest))
            .map(|l| l.size.max(0) as u64)
            .sum();
        let usage = Usage {
            models: cached.values().sum(),
            ..usage
        };
        Ok(self.settings.budget.check(
            &format!("model image {image}"),
            needed,
            usage,
            self.free_bytes()?,
        )?)
    }

    /// The bytes free on the model cache's file system.
    pub fn free_bytes(&self) -> Result<u64, PullCause> {
        let dir = &self.settings.blobs_dir;
        let fail = |e: std::io::Error| PullCause::Cache(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(dir.join("sha256")).map_err(fail)?;
        fs4::available_space(dir).map_err(fail)
    }

    /// The bytes the model cache holds.
    pub fn cached_bytes(&self) -> Result<u64, PullCause> {
        Ok(self
            .store
            .blobs()
            .map_err(|e| PullCause::Cache(e.to_string()))?
            .values()
            .sum())
    }

    /// Keeps `digests` out of garbage collection until [`Puller::release`].
    pub fn hold(&self, digests: &[String]) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.extend(digests.iter().cloned());
    }

    pub fn release(&self, digests: &[String]) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        for digest in digests {
            held.remove(digest);
        }
    }

    pub fn budget(&self) -> DiskBudget {
        self.settings.budget
    }

    /// Makes sure `layer` is in the cache, downloading (or resuming) it when it is not.
    async fn fetch_blob(
        &self,
        client: &Client,
        reference: &Reference,
        layer: &OciDescriptor,
        classify: &impl Fn(oci_client::errors::OciDistributionError) -> PullCause,
    ) -> Result<(), PullCause> {
        let path = self.blob_path(&layer.digest)?;
        let cache_err = |e: std::io::Error| PullCause::Cache(format!("{}: {e}", path.display()));
        if path.exists()
            && self
                .store
                .blobs()
                .map_err(|e| PullCause::Cache(e.to_string()))?
                .contains_key(&layer.digest)
        {
            return Ok(());
        }
        let partial = path.with_extension("partial");
        // Resume an interrupted download: hash what is already on disk and ask for the rest.
        let existing = tokio::fs::read(&partial).await.unwrap_or_default();
        let resumable = !existing.is_empty() && (existing.len() as i64) < layer.size;
        let response = if resumable {
            client
                .pull_blob_stream_partial(reference, layer, existing.len() as u64, None)
                .await
                .map_err(classify)?
        } else {
            oci_client::client::BlobResponse::Full(
                client
                    .pull_blob_stream(reference, layer)
                    .await
                    .map_err(classify)?,
            )
        };
        let mut hasher = Sha256::new();
        let (mut stream, append) = match response {
            oci_client::client::BlobResponse::Partial(s) => {
                hasher.update(&existing);
                (s.stream, true)
            }
            oci_client::client::BlobResponse::Full(s) => (s.stream, false),
        };
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(&partial)
            .await
            .map_err(cache_err)?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|e| PullCause::Registry(format!("downloading {}: {e}", layer.digest)))?;
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(cache_err)?;
        }
        file.sync_all().await.map_err(cache_err)?;
        drop(file);
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != layer.digest {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(PullCause::DigestMismatch {
                what: format!("layer {}", layer.digest),
                expected: layer.digest.clone(),
                actual,
            });
        }
        tokio::fs::rename(&partial, &path)
            .await
            .map_err(cache_err)?;
        let size = tokio::fs::metadata(&path).await.map_err(cache_err)?.len();
        self.store
            .add_blob(&layer.digest, size)
            .map_err(|e| PullCause::Cache(e.to_string()))?;
        Ok(())
    }

    /// Reads `model/model.onnx` and `model/module.json` from the cached layers (later layers
    /// win, as in a container file system).
    fn read_model(
        &self,
        layers: &[OciDescriptor],
    ) -> Result<(Vec<u8>, Option<ModuleMetadata>), PullCause> {
        let mut files: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
        for layer in layers {
            let path = self.blob_path(&layer.digest)?;
            let bytes = std::fs::read(&path)
                .map_err(|e| PullCause::Cache(format!("{}: {e}", path.display())))?;
            read_layer(&bytes, &mut files)
                .map_err(|e| PullCause::Cache(format!("layer {}: {e}", layer.digest)))?;
        }
        let model = files.remove(MODEL_PATH).ok_or(PullCause::NotAModel)?;
        let metadata = files
            .remove(MODULE_JSON_PATH)
            .map(|json| {
                serde_json::from_slice(&json).map_err(|e| PullCause::BadModuleJson(e.to_string()))
            })
            .transpose()?;
        Ok((model, metadata))
    }

    /// Removes cached blobs no module references any more and no import holds.
    pub fn collect_garbage(&self, keep: &[String]) -> Result<usize, PullCause> {
        let cached = self
            .store
            .blobs()
            .map_err(|e| PullCause::Cache(e.to_string()))?;
        let held = self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let unused: Vec<String> = cached
            .into_keys()
            .filter(|d| !keep.contains(d) && !held.contains(d))
            .collect();
        for digest in &unused {
            let _ = std::fs::remove_file(self.blob_path(digest)?);
        }
        self.store
            .remove_blobs(&unused)
            .map_err(|e| PullCause::Cache(e.to_string()))?;
        Ok(unused.len())
    }

    /// Reads a model back from cached blobs (used at start, without the network).
    pub fn load_cached(
        &self,
        blobs: &[String],
    ) -> Result<(Vec<u8>, Option<ModuleMetadata>), PullCause> {
        let layers: Vec<OciDescriptor> = blobs
            .iter()
            .map(|d| OciDescriptor {
                digest: d.clone(),
                ..OciDescriptor::default()
            })
            .collect();
        self.read_model(&layers)
    }

    pub fn blobs_dir(&self) -> &Path {
        &self.settings.blobs_dir
    }
}

/// An image whose blobs are all in the cache.
struct CachedImage {
    digest: String,
    /// Its manifests and layers.
    blobs: Vec<String>,
    layers: Vec<OciDescriptor>,
}

/// Hashes what it writes.
struct HashingWriter<'a> {
    inner: &'a mut dyn std::io::Write,
    hasher: Sha256,
}

impl std::io::Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Collects the model files of one layer (tar, gzip-compressed or not).
fn read_layer(bytes: &[u8], files: &mut BTreeMap<&str, Vec<u8>>) -> std::io::Result<()> {
    let reader: Box<dyn std::io::Read> = if bytes.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(bytes))
    } else {
        Box::new(bytes)
    };
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        let path = path.trim_start_matches("./").trim_start_matches('/');
        for wanted in [MODEL_PATH, MODULE_JSON_PATH] {
            if path == wanted {
                let mut data = Vec::with_capacity(entry.size() as usize);
                entry.read_to_end(&mut data)?;
                files.insert(wanted, data);
            }
        }
    }
    Ok(())
}
