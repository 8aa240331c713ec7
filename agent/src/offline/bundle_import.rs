//! Importing an offline bundle (format: `edgefleet_common::bundle`). [`verify`] reads the
//! whole file before anything changes: the checksum over every byte, each blob against its
//! digest, this device's manifest against the fleet key, its version against the applied one,
//! and that every image the manifest needs is inside. [`import`] then checks the disk budget,
//! copies model images into the model cache and loads container images into the engine; the
//! caller hands the manifest to the supervisor, which applies it as it applies one from the
//! fleet. Every step is idempotent, so an interrupted import resumes where it stopped when it
//! is run again: blobs already in the cache and images already loaded are skipped.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};

use edgefleet_common::bundle::{self, BUNDLE_FORMAT, BundleIndex, ChecksumError, INDEX_PATH};
use edgefleet_common::manifest::{Manifest, Module};
use edgefleet_common::module_image::ImageReference;
use edgefleet_common::signing::{FleetPublicKey, ManifestError};
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use sha2::{Digest as _, Sha256};

use crate::images::container_runtime::{ContainerError, ContainerRuntime, SavedImage};
use crate::images::disk_budget::{OverBudget, Usage};
use crate::images::pull_error::PullCause;
use crate::images::registry::{ManifestDocument, parse_manifest, platform_entry};
use crate::modules::module_task::Services;
use crate::offline::drop_dir::{self, DropDir};

/// Why a bundle was not imported. Nothing on the device changed.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Checksum(ChecksumError),
    #[error("the bundle is corrupt: {0} (copy it again)")]
    Corrupt(String),
    #[error("the bundle is for {devices}, not for this device {device:?}")]
    OtherDevice { device: String, devices: String },
    #[error("the bundle's manifest is refused: {0}")]
    Manifest(#[from] ManifestError),
    #[error(
        "the bundle's manifest version {version} is older than the applied version {applied}: a device never goes back (create a new bundle)"
    )]
    Older { version: u64, applied: u64 },
    #[error("the bundle does not hold image {0}, which the manifest needs")]
    MissingImage(String),
    #[error(transparent)]
    OverBudget(#[from] OverBudget),
    #[error("the model cache: {0}")]
    Cache(#[from] PullCause),
    #[error("the manifest has container modules but the Docker engine at {0} is not reachable")]
    NoEngine(String),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error("the import stopped: {0}")]
    Task(String),
}

/// Where an entry's content lies in the bundle file.
#[derive(Debug, Clone, Copy)]
struct Entry {
    offset: u64,
    size: u64,
}

/// An image of the manifest, as the bundle holds it.
#[derive(Debug, Clone)]
struct BundledImage {
    reference: String,
    /// Its manifest (and index) blobs.
    manifests: Vec<String>,
    manifest: OciImageManifest,
}

impl BundledImage {
    fn layers_and_config(&self) -> impl Iterator<Item = &OciDescriptor> {
        std::iter::once(&self.manifest.config).chain(&self.manifest.layers)
    }
}

/// A bundle that passed every check, for this device.
#[derive(Debug)]
pub struct VerifiedBundle {
    path: PathBuf,
    pub wire: Vec<u8>,
    pub manifest: Manifest,
    entries: BTreeMap<String, Entry>,
    models: Vec<BundledImage>,
    containers: Vec<BundledImage>,
}

/// Reads and checks the bundle at `path` for device `device_id` (blocking: it reads the whole
/// file twice). `applied` is the version the device has applied.
pub fn verify(
    path: &Path,
    fleet_key: &FleetPublicKey,
    device_id: &str,
    applied: Option<u64>,
) -> Result<VerifiedBundle, BundleError> {
    let read_err = |source| BundleError::Read {
        path: path.display().to_string(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let len = file.metadata().map_err(read_err)?.len();
    bundle::verify_checksum(&mut file, len).map_err(|e| match e {
        ChecksumError::Read(e) => read_err(e),
        e => BundleError::Checksum(e),
    })?;
    file.rewind().map_err(read_err)?;
    let (entries, documents) = read_entries(&mut file, device_id)?;
    let document = |name: &str| {
        documents
            .get(name)
            .ok_or_else(|| BundleError::Corrupt(format!("it has no {name}")))
    };
    let index: BundleIndex = serde_json::from_slice(document(INDEX_PATH)?)
        .map_err(|e| BundleError::Corrupt(format!("{INDEX_PATH}: {e}")))?;
    if index.format != BUNDLE_FORMAT {
        return Err(BundleError::Corrupt(format!(
            "format {:?}; this agent reads {BUNDLE_FORMAT}",
            index.format
        )));
    }
    if !index.devices.contains_key(device_id) {
        return Err(BundleError::OtherDevice {
            device: device_id.to_owned(),
            devices: index.devices.keys().cloned().collect::<Vec<_>>().join(", "),
        });
    }
    let wire = document(&bundle::manifest_path(device_id))?.clone();
    let manifest = fleet_key.verify(&wire)?;
    if manifest.device_id != device_id {
        return Err(BundleError::OtherDevice {
            device: device_id.to_owned(),
            devices: manifest.device_id,
        });
    }
    if let Some(applied) = applied
        && manifest.version < applied
    {
        return Err(BundleError::Older {
            version: manifest.version,
            applied,
        });
    }
    let mut reader = EntryReader {
        file: &mut file,
        entries: &entries,
    };
    let mut models = Vec::new();
    let mut containers = Vec::new();
    for module in manifest.modules.values() {
        let image = match module {
            Module::Model(m) => &m.image,
            Module::Container(c) if c.image_pull_policy.is_on_create() => &c.image,
            Module::Container(_) => continue,
        };
        let bundled = reader.image(image).map_err(|e| match e {
            Checked::Io(e) => read_err(e),
            Checked::Bundle(e) => e,
        })?;
        match module {
            Module::Model(_) => models.push(bundled),
            Module::Container(_) => containers.push(bundled),
        }
    }
    Ok(VerifiedBundle {
        path: path.to_owned(),
        wire,
        manifest,
        entries,
        models,
        containers,
    })
}

/// A failure while checking: of the file, or of the bundle.
enum Checked {
    Io(std::io::Error),
    Bundle(BundleError),
}

impl From<std::io::Error> for Checked {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<BundleError> for Checked {
    fn from(e: BundleError) -> Self {
        Self::Bundle(e)
    }
}

/// Where every entry lies, each blob checked against its digest, and the documents this
/// device needs read (the index, the OCI index, its manifest).
type Entries = (BTreeMap<String, Entry>, BTreeMap<String, Vec<u8>>);

fn read_entries(file: &mut File, device_id: &str) -> Result<Entries, BundleError> {
    let corrupt = |e: std::io::Error| BundleError::Corrupt(e.to_string());
    let wanted = [INDEX_PATH.to_owned(), bundle::manifest_path(device_id)];
    let mut entries = BTreeMap::new();
    let mut documents = BTreeMap::new();
    let mut archive = tar::Archive::new(file);
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let name = entry
            .path()
            .map_err(corrupt)?
            .to_string_lossy()
            .into_owned();
        let size = entry.size();
        entries.insert(
            name.clone(),
            Entry {
                offset: entry.raw_file_position(),
                size,
            },
        );
        if let Some(digest) = bundle::blob_digest(&name) {
            let mut hasher = Sha256::new();
            std::io::copy(&mut entry, &mut hasher).map_err(corrupt)?;
            let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
            if actual != digest {
                return Err(BundleError::Corrupt(format!(
                    "blob {digest} has digest {actual}"
                )));
            }
        } else if wanted.contains(&name) {
            let mut content = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut content).map_err(corrupt)?;
            documents.insert(name, content);
        }
    }
    Ok((entries, documents))
}

/// Reads entries of the bundle file by name.
struct EntryReader<'a> {
    file: &'a mut File,
    entries: &'a BTreeMap<String, Entry>,
}

impl EntryReader<'_> {
    fn blob(&mut self, digest: &str, of: &str) -> Result<Vec<u8>, Checked> {
        let entry = bundle::blob_path(digest)
            .and_then(|path| self.entries.get(&path))
            .ok_or_else(|| BundleError::MissingImage(format!("{of} (blob {digest})")))?;
        self.file.seek(SeekFrom::Start(entry.offset))?;
        let mut bytes = vec![0u8; entry.size as usize];
        self.file.read_exact(&mut bytes)?;
        Ok(bytes)
    }

    /// Image `reference` (pinned) as the bundle holds it, every blob present.
    fn image(&mut self, reference: &str) -> Result<BundledImage, Checked> {
        let missing = || BundleError::MissingImage(reference.to_owned());
        let digest = reference
            .parse::<ImageReference>()
            .ok()
            .and_then(|r| r.digest)
            .ok_or_else(missing)?;
        let bad = |e: PullCause| BundleError::Corrupt(format!("image {reference}: {e}"));
        let raw = self.blob(&digest, reference)?;
        let mut manifests = vec![digest];
        let manifest = match parse_manifest(&raw).map_err(bad)? {
            ManifestDocument::Image(m) => *m,
            ManifestDocument::Index(index) => {
                let entry = platform_entry(&index).map_err(bad)?.digest.clone();
                let raw = self.blob(&entry, reference)?;
                manifests.push(entry);
                match parse_manifest(&raw).map_err(bad)? {
                    ManifestDocument::Image(m) => *m,
                    ManifestDocument::Index(_) => {
                        return Err(
                            bad(PullCause::Registry("an index inside an index".into())).into()
                        );
                    }
                }
            }
        };
        let image = BundledImage {
            reference: reference.to_owned(),
            manifests,
            manifest,
        };
        for blob in image.layers_and_config() {
            let present = bundle::blob_path(&blob.digest)
                .is_some_and(|path| self.entries.contains_key(&path));
            if !present {
                return Err(BundleError::MissingImage(format!(
                    "{reference} (blob {})",
                    blob.digest
                ))
                .into());
            }
        }
        Ok(image)
    }
}

impl VerifiedBundle {
    fn entry(&self, digest: &str) -> Result<Entry, BundleError> {
        bundle::blob_path(digest)
            .and_then(|path| self.entries.get(&path).copied())
            .ok_or_else(|| BundleError::Corrupt(format!("blob {digest} is gone")))
    }

    /// The model images' blobs the cache does not have yet, with their sizes.
    fn missing_model_blobs(&self, services: &Services) -> Result<Vec<(String, u64)>, BundleError> {
        let cached = services
            .store
            .blobs()
            .map_err(|e| PullCause::Cache(e.to_string()))?;
        let mut missing = BTreeMap::new();
        for image in &self.models {
            let digests = image
                .manifests
                .iter()
                .cloned()
                .chain(image.manifest.layers.iter().map(|l| l.digest.clone()));
            for digest in digests {
                if !cached.contains_key(&digest) {
                    missing.insert(digest.clone(), self.entry(&digest)?.size);
                }
            }
        }
        Ok(missing.into_iter().collect())
    }
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Imported {
    pub model_blobs: usize,
    pub container_images: usize,
}

/// Puts the bundle's images where the modules find them: model blobs in the model cache,
/// container images in the engine. The disk budget is checked first.
pub async fn import(bundle: &VerifiedBundle, services: &Services) -> Result<Imported, BundleError> {
    let runtime = match (&services.containers, bundle.containers.is_empty()) {
        (_, true) => None,
        (Some(runtime), false) => Some(runtime),
        (None, false) => return Err(BundleError::NoEngine(services.config.docker.socket.clone())),
    };
    let mut to_load = Vec::new();
    if let Some(runtime) = runtime {
        for image in &bundle.containers {
            if runtime.local_image(&image.reference).await.is_none() {
                to_load.push(image);
            }
        }
    }
    let model_blobs = bundle.missing_model_blobs(services)?;
    let needed: u64 = model_blobs.iter().map(|(_, size)| size).sum::<u64>()
        + to_load
            .iter()
            .flat_map(|i| i.layers_and_config())
            .map(|d| d.size.max(0) as u64)
            .sum::<u64>();
    let usage = Usage {
        models: services.puller.cached_bytes()?,
        ..services.usage_besides_models().await
    };
    let mut free = services.puller.free_bytes()?;
    if let Some(runtime) = runtime
        && let Some(engine_free) = runtime.free_bytes().await
    {
        free = free.min(engine_free);
    }
    let what = format!("bundle {}", bundle.path.display());
    services.puller.budget().check(&what, needed, usage, free)?;

    for (digest, _) in &model_blobs {
        let entry = bundle.entry(digest)?;
        let path = bundle.path.clone();
        let digest = digest.clone();
        let copied = tokio::task::block_in_place(|| -> Result<(), BundleError> {
            let mut file = File::open(&path).map_err(|source| BundleError::Read {
                path: path.display().to_string(),
                source,
            })?;
            file.seek(SeekFrom::Start(entry.offset))
                .map_err(|e| BundleError::Corrupt(e.to_string()))?;
            Ok(services
                .puller
                .add_blob(&digest, &mut file.take(entry.size))?)
        });
        copied?;
    }
    if let Some(runtime) = runtime {
        for image in &to_load {
            load(bundle, runtime, image).await?;
        }
    }
    Ok(Imported {
        model_blobs: model_blobs.len(),
        container_images: to_load.len(),
    })
}

/// Loads one container image into the engine under its [`bundle::loaded_image_tag`].
async fn load(
    bundle: &VerifiedBundle,
    runtime: &ContainerRuntime,
    image: &BundledImage,
) -> Result<(), BundleError> {
    let tag = bundle::loaded_image_tag(&image.reference)
        .ok_or_else(|| BundleError::MissingImage(image.reference.clone()))?;
    let mut blobs = Vec::new();
    for blob in image.layers_and_config() {
        let entry = bundle.entry(&blob.digest)?;
        blobs.push((blob.digest.clone(), entry.offset, entry.size));
    }
    let saved = SavedImage {
        file: bundle.path.clone(),
        tag,
        config: image.manifest.config.digest.clone(),
        layers: image
            .manifest
            .layers
            .iter()
            .map(|l| l.digest.clone())
            .collect(),
        blobs,
    };
    runtime.load_image(saved).await?;
    tracing::info!(image = %image.reference, "container image loaded from a bundle");
    Ok(())
}

/// What became of an imported bundle.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportReport {
    pub version: u64,
    pub model_blobs: usize,
    pub container_images: usize,
    /// The outcome of its manifest, as the device reports it.
    pub outcome: edgefleet_common::reported::DesiredOutcome,
}

/// Imports bundles for the running agent, one at a time (from `edgefleet-agent bundle import`
/// through the control socket, or from the drop directory).
#[derive(Debug, Clone)]
pub(crate) struct BundleImporter {
    pub services: std::sync::Arc<Services>,
    pub fleet_key: FleetPublicKey,
    pub inbound: tokio::sync::mpsc::Sender<crate::telemetry::link::Inbound>,
    pub one_at_a_time: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl BundleImporter {
    /// Verifies, imports and applies the bundle at `path`; returns once its manifest has an
    /// outcome.
    pub async fn import(&self, path: &Path) -> Result<ImportReport, BundleError> {
        let _one = self.one_at_a_time.lock().await;
        let applied = self.services.board.snapshot().applied_version;
        let (key, device, file) = (
            self.fleet_key,
            self.services.config.device_id.clone(),
            path.to_owned(),
        );
        let verified = tokio::task::spawn_blocking(move || verify(&file, &key, &device, applied))
            .await
            .map_err(|e| BundleError::Task(e.to_string()))??;
        tracing::info!(
            bundle = %path.display(),
            version = verified.manifest.version,
            "bundle verified"
        );
        // The model blobs stay out of garbage collection until the manifest has an outcome.
        let held: Vec<String> = verified
            .models
            .iter()
            .flat_map(|i| {
                i.manifests
                    .iter()
                    .cloned()
                    .chain(i.manifest.layers.iter().map(|l| l.digest.clone()))
            })
            .collect();
        self.services.puller.hold(&held);
        let applied = self.apply(&verified).await;
        self.services.puller.release(&held);
        let (imported, outcome) = applied?;
        Ok(ImportReport {
            version: verified.manifest.version,
            model_blobs: imported.model_blobs,
            container_images: imported.container_images,
            outcome,
        })
    }

    /// Imports the bundle's images and hands its manifest to the supervisor.
    async fn apply(
        &self,
        verified: &VerifiedBundle,
    ) -> Result<(Imported, edgefleet_common::reported::DesiredOutcome), BundleError> {
        let imported = import(verified, &self.services).await?;
        let (reply, outcome) = tokio::sync::oneshot::channel();
        let message = crate::telemetry::link::Inbound::Bundle {
            wire: verified.wire.clone(),
            reply,
        };
        let stopped = || BundleError::Task("the agent is stopping".into());
        self.inbound.send(message).await.map_err(|_| stopped())?;
        let outcome = outcome.await.map_err(|_| stopped())?;
        Ok((imported, outcome))
    }

    /// Watches `dir` (a mounted USB stick, say) and imports every `*.bundle` file that appears
    /// or changes, once its size has stopped changing (a copy in progress is left alone).
    pub async fn watch(self, dir: PathBuf) {
        let mut drop_dir = DropDir::new(dir);
        let mut tick = tokio::time::interval(drop_dir::POLL);
        loop {
            tick.tick().await;
            for path in drop_dir.ready(|name| name.ends_with(bundle::FILE_SUFFIX)) {
                match self.import(&path).await {
                    Ok(report) => tracing::info!(
                        bundle = %path.display(),
                        version = report.version,
                        status = u16::from(report.outcome.status),
                        message = %report.outcome.message,
                        "bundle from the drop directory applied"
                    ),
                    Err(e) => tracing::warn!(
                        bundle = %path.display(),
                        error = %e,
                        "bundle from the drop directory refused"
                    ),
                }
            }
        }
    }
}
