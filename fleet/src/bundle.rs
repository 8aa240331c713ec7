//! Writing offline bundles (format: `edgefleet_common::bundle`). [`plan`] fetches every image
//! manifest from its registry and checks it against its pin, so the bundle's exact size is
//! known before its first byte; [`BundlePlan::stream`] then writes the tar, fetching each
//! layer from its registry as it goes and checking its digest, and ends with the checksum of
//! everything before it. A blob whose digest does not match ends the stream with an error, so
//! the client never receives a complete bundle holding it.

use std::collections::BTreeMap;

use axum::body::Bytes;
use edgefleet_common::bundle::{
    self, BUNDLE_FORMAT, BundleImage, BundleIndex, CHECKSUM_PATH, INDEX_PATH, OCI_INDEX_PATH,
    OCI_LAYOUT, OCI_LAYOUT_PATH, REF_NAME_ANNOTATION,
};
use edgefleet_common::module_image::{ImageReference, media_type};
use futures_util::{Stream, StreamExt as _};
use oci_client::Reference;
use oci_client::manifest::{OciDescriptor, OciImageIndex, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use crate::error::FleetError;
use crate::image_pin::{RegistryLogin, registry_client};

/// What goes into a bundle: each device's signed manifest and every image they reference.
#[derive(Debug, Clone, Default)]
pub struct BundleContents {
    pub fleet: String,
    /// Device id -> (manifest version, signed wire bytes).
    pub manifests: BTreeMap<String, (u64, String)>,
    /// Pinned image reference -> how to log in to its registry.
    pub images: BTreeMap<String, Option<RegistryLogin>>,
}

/// Where one blob's bytes come from.
#[derive(Debug, Clone)]
enum Content {
    /// Already fetched (image manifests and indexes).
    Inline(Bytes),
    /// Fetched while the bundle is written, from the registry of image `usize`.
    Registry(usize, OciDescriptor),
}

/// One image's registry session.
#[derive(Clone)]
struct Source {
    client: oci_client::Client,
    reference: Reference,
    auth: RegistryAuth,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("reference", &self.reference)
            .finish_non_exhaustive()
    }
}

/// A bundle ready to be written: its entries in order and its exact size.
#[derive(Debug)]
pub struct BundlePlan {
    entries: Vec<(String, u64, Content)>,
    sources: Vec<Source>,
    pub size: u64,
}

const BLOCK: u64 = 512;

fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

/// The checksum entry's content: `sha256:<64 hex>\n`.
const CHECKSUM_LEN: u64 = 7 + 64 + 1;

/// Resolves every image of `contents` in its registry and lays the bundle out.
pub async fn plan(contents: BundleContents) -> Result<BundlePlan, FleetError> {
    let mut blobs: BTreeMap<String, (u64, Content)> = BTreeMap::new();
    let mut images = Vec::new();
    let mut sources = Vec::new();
    let mut oci_manifests = Vec::new();
    for (reference, login) in &contents.images {
        let (source, digest, manifest_raw) = image_source(reference, login.as_ref()).await?;
        let index = sources.len();
        let mut owned: BTreeMap<String, u64> = BTreeMap::new();
        let mut add = |digest: String, size: u64, content: Content| {
            owned.insert(digest.clone(), size);
            blobs.entry(digest).or_insert((size, content));
        };
        let value: serde_json::Value = serde_json::from_slice(&manifest_raw)
            .map_err(|e| bad_image(reference, format!("its manifest is not JSON: {e}")))?;
        let media = value
            .get("mediaType")
            .and_then(|m| m.as_str())
            .unwrap_or(media_type::OCI_MANIFEST)
            .to_owned();
        let size = manifest_raw.len() as u64;
        add(digest.clone(), size, Content::Inline(manifest_raw.clone()));
        let manifests = if value.get("manifests").is_some() {
            let list: OciImageIndex = serde_json::from_value(value)
                .map_err(|e| bad_image(reference, format!("invalid image index: {e}")))?;
            let mut manifests = Vec::new();
            for entry in &list.manifests {
                let raw = fetch_manifest(&source, reference, &entry.digest).await?;
                add(
                    entry.digest.clone(),
                    raw.len() as u64,
                    Content::Inline(raw.clone()),
                );
                manifests.push(raw);
            }
            manifests
        } else {
            vec![manifest_raw]
        };
        for raw in manifests {
            let manifest: OciImageManifest = serde_json::from_slice(&raw)
                .map_err(|e| bad_image(reference, format!("invalid image manifest: {e}")))?;
            for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
                if bundle::blob_path(&blob.digest).is_none() || blob.size < 0 {
                    return Err(bad_image(
                        reference,
                        format!("blob {} (only sha256 digests are supported)", blob.digest),
                    ));
                }
                add(
                    blob.digest.clone(),
                    blob.size as u64,
                    Content::Registry(index, blob.clone()),
                );
            }
        }
        oci_manifests.push(serde_json::json!({
            "mediaType": media,
            "digest": digest,
            "size": size,
            "annotations": {REF_NAME_ANNOTATION: reference},
        }));
        images.push(BundleImage {
            reference: reference.clone(),
            digest,
            size: owned.values().sum(),
        });
        sources.push(source);
    }
    let index = BundleIndex {
        format: BUNDLE_FORMAT.to_owned(),
        fleet: contents.fleet.clone(),
        created_at_ms: edgefleet_transport::now_ms(),
        devices: contents
            .manifests
            .iter()
            .map(|(device, (version, _))| (device.clone(), *version))
            .collect(),
        images,
    };
    let index = serde_json::to_value(&index)
        .map_err(|e| FleetError::invalid(format!("bundle index: {e}")))?;
    let oci_index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": oci_manifests,
    });
    let json = |value: &serde_json::Value| Bytes::from(value.to_string().into_bytes());
    let mut entries = vec![
        inline(INDEX_PATH, json(&index)),
        inline(OCI_LAYOUT_PATH, Bytes::from_static(OCI_LAYOUT.as_bytes())),
        inline(OCI_INDEX_PATH, json(&oci_index)),
    ];
    for (device, (_, wire)) in &contents.manifests {
        entries.push(inline(
            &bundle::manifest_path(device),
            Bytes::from(wire.clone().into_bytes()),
        ));
    }
    // Manifests and configs (small) first, then the layers.
    let (small, large): (Vec<_>, Vec<_>) = blobs
        .into_iter()
        .partition(|(_, (_, content))| matches!(content, Content::Inline(_)));
    for (digest, (size, content)) in small.into_iter().chain(large) {
        let path = bundle::blob_path(&digest).unwrap_or_default();
        entries.push((path, size, content));
    }
    let size = entries
        .iter()
        .map(|(_, size, _)| BLOCK + size + padding(*size))
        .sum::<u64>()
        + BLOCK
        + CHECKSUM_LEN
        + padding(CHECKSUM_LEN)
        + 2 * BLOCK;
    Ok(BundlePlan {
        entries,
        sources,
        size,
    })
}

fn inline(path: &str, bytes: Bytes) -> (String, u64, Content) {
    (path.to_owned(), bytes.len() as u64, Content::Inline(bytes))
}

fn bad_image(reference: &str, cause: String) -> FleetError {
    FleetError::invalid(format!("image {reference}: {cause}"))
}

/// The registry session of `reference` (pinned by digest), its digest and its manifest.
async fn image_source(
    reference: &str,
    login: Option<&RegistryLogin>,
) -> Result<(Source, String, Bytes), FleetError> {
    let parsed: ImageReference = reference
        .parse()
        .map_err(|e| bad_image(reference, format!("{e}")))?;
    let digest = parsed.digest.clone().ok_or_else(|| {
        bad_image(
            reference,
            "not pinned by digest (apply the deployment again to pin it)".into(),
        )
    })?;
    let (client, auth) = registry_client(login);
    let pinned = Reference::with_digest(parsed.registry, parsed.repository, digest.clone());
    let source = Source {
        client,
        reference: pinned,
        auth,
    };
    let raw = fetch_manifest(&source, reference, &digest).await?;
    Ok((source, digest, raw))
}

/// The manifest `digest` of `source`'s repository, checked against its digest.
async fn fetch_manifest(
    source: &Source,
    reference: &str,
    digest: &str,
) -> Result<Bytes, FleetError> {
    let accepted = [
        media_type::OCI_MANIFEST,
        media_type::DOCKER_MANIFEST,
        media_type::OCI_INDEX,
        media_type::DOCKER_MANIFEST_LIST,
    ];
    let by_digest = source.reference.clone_with_digest(digest.to_owned());
    let (raw, _) = source
        .client
        .pull_manifest_raw(&by_digest, &source.auth, &accepted)
        .await
        .map_err(|e| bad_image(reference, format!("fetching manifest {digest}: {e}")))?;
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(&raw)));
    if actual != digest {
        return Err(bad_image(
            reference,
            format!("the registry's manifest {digest} has digest {actual}"),
        ));
    }
    Ok(raw)
}

/// The ustar header of an entry.
fn header(path: &str, size: u64, mtime: u64) -> std::io::Result<Bytes> {
    let mut header = tar::Header::new_ustar();
    header.set_path(path)?;
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(mtime);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    Ok(Bytes::copy_from_slice(header.as_bytes()))
}

type Chunk = Result<Bytes, std::io::Error>;

impl BundlePlan {
    /// The bundle's bytes, exactly [`BundlePlan::size`] of them unless a blob fails.
    pub fn stream(self) -> impl Stream<Item = Chunk> {
        let (tx, rx) = mpsc::channel::<Chunk>(16);
        tokio::spawn(async move {
            if let Err(e) = self.write(&tx).await {
                tracing::warn!(error = %e, "bundle not completed");
                let _ = tx.send(Err(e)).await;
            }
        });
        futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        })
    }

    async fn write(self, tx: &mpsc::Sender<Chunk>) -> std::io::Result<()> {
        let mtime = edgefleet_transport::now_ms() / 1000;
        let mut out = Output {
            tx,
            hasher: Sha256::new(),
        };
        for (path, size, content) in self.entries {
            out.send(header(&path, size, mtime)?).await?;
            match content {
                Content::Inline(bytes) => out.send(bytes).await?,
                Content::Registry(index, descriptor) => {
                    let source = &self.sources[index];
                    let fail = |e: String| {
                        std::io::Error::other(format!(
                            "blob {} from {}: {e}",
                            descriptor.digest,
                            source.reference.whole()
                        ))
                    };
                    let mut stream = source
                        .client
                        .pull_blob_stream(&source.reference, &descriptor)
                        .await
                        .map_err(|e| fail(e.to_string()))?;
                    let mut digest = Sha256::new();
                    let mut written = 0u64;
                    while let Some(chunk) = stream.stream.next().await {
                        let chunk = chunk.map_err(|e| fail(e.to_string()))?;
                        digest.update(&chunk);
                        written += chunk.len() as u64;
                        if written > size {
                            break;
                        }
                        out.send(chunk).await?;
                    }
                    let actual = format!("sha256:{}", hex::encode(digest.finalize()));
                    if written != size || actual != descriptor.digest {
                        return Err(fail(format!(
                            "{written} bytes with digest {actual}, expected {size} bytes"
                        )));
                    }
                }
            }
            out.send(zeros(padding(size))).await?;
        }
        let checksum = format!("sha256:{}\n", hex::encode(out.hasher.clone().finalize()));
        out.send(header(CHECKSUM_PATH, CHECKSUM_LEN, mtime)?)
            .await?;
        out.send(Bytes::from(checksum.into_bytes())).await?;
        out.send(zeros(padding(CHECKSUM_LEN) + 2 * BLOCK)).await
    }
}

fn zeros(n: u64) -> Bytes {
    Bytes::from(vec![0u8; n as usize])
}

/// The bundle's bytes on their way to the client, hashed as they go.
struct Output<'a> {
    tx: &'a mpsc::Sender<Chunk>,
    hasher: Sha256,
}

impl Output<'_> {
    async fn send(&mut self, bytes: Bytes) -> std::io::Result<()> {
        self.hasher.update(&bytes);
        self.tx
            .send(Ok(bytes))
            .await
            .map_err(|_| std::io::Error::other("the client went away"))
    }
}
