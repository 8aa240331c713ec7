//! The offline bundle: what `edgefleet bundle create` writes and `edgefleet-agent bundle import`
//! reads, for a device that cannot reach the broker or the registry.
//!
//! A bundle is one uncompressed tar file:
//! 1. [`INDEX_PATH`] ([`BundleIndex`]): the devices it serves and the images it holds;
//! 2. an OCI image layout ([`OCI_LAYOUT_PATH`], [`OCI_INDEX_PATH`], `blobs/sha256/<hex>`)
//!    with every image the manifests reference (model and container modules), each blob
//!    stored once and named by its digest; the OCI index names each image by its pinned
//!    reference ([`REF_NAME_ANNOTATION`]), so standard tools can read the layout too;
//! 3. `manifests/<device>.json`: each device's signed manifest, byte for byte as the fleet
//!    publishes it (registry passwords inside are sealed to the device);
//! 4. [`CHECKSUM_PATH`], last: `sha256:<hex>` of every byte before its own header, so a
//!    truncated or corrupted copy is refused whichever byte changed.
//!
//! The chain of trust needs no signature on the bundle itself: the manifest is signed by the
//! fleet, it pins each image by the digest of its image manifest, and every blob is named by
//! its own digest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::UnixMillis;

/// The value of [`BundleIndex::format`] this version writes and reads.
pub const BUNDLE_FORMAT: &str = "edgefleet-bundle/1";
/// The first entry of a bundle.
pub const INDEX_PATH: &str = "bundle.json";
pub const OCI_LAYOUT_PATH: &str = "oci-layout";
/// The content of [`OCI_LAYOUT_PATH`].
pub const OCI_LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;
pub const OCI_INDEX_PATH: &str = "index.json";
/// The last entry of a bundle.
pub const CHECKSUM_PATH: &str = "bundle.sha256";
/// The OCI annotation naming an image of the layout.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// The file name ending of bundles the agent picks up from its drop directory.
pub const FILE_SUFFIX: &str = ".bundle";

/// The bytes at the end of a bundle: the checksum entry's header and content block, then the
/// two zero blocks that end a tar archive. The checksum covers everything before them.
pub const TRAILER_LEN: u64 = 4 * 512;

/// Why a bundle's end is not what it must be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the bundle is incomplete or damaged: {0} (it was probably truncated while copied; copy it again)"
)]
pub struct TrailerError(String);

/// The checksum a bundle's trailer (its last [`TRAILER_LEN`] bytes) records, `sha256:<hex>`.
pub fn checksum_in_trailer(trailer: &[u8]) -> Result<String, TrailerError> {
    let fail = |what: &str| TrailerError(what.to_owned());
    if trailer.len() as u64 != TRAILER_LEN {
        return Err(fail("it is shorter than a bundle's end"));
    }
    let (header, rest) = trailer.split_at(512);
    let name_end = header[..100].iter().position(|&b| b == 0).unwrap_or(100);
    if &header[..name_end] != CHECKSUM_PATH.as_bytes() {
        return Err(fail(&format!(
            "it does not end with its {CHECKSUM_PATH} entry"
        )));
    }
    if rest[72..].iter().any(|&b| b != 0) {
        return Err(fail("bytes follow its checksum"));
    }
    let line = std::str::from_utf8(&rest[..72]).map_err(|_| fail("its checksum is not text"))?;
    let checksum = line.strip_suffix('\n').unwrap_or_default();
    let hex = checksum.strip_prefix("sha256:").unwrap_or_default();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(fail("its checksum entry is malformed"));
    }
    Ok(checksum.to_owned())
}

/// Why a bundle does not match its checksum.
#[derive(Debug, thiserror::Error)]
pub enum ChecksumError {
    #[error(transparent)]
    Trailer(#[from] TrailerError),
    #[error(
        "the bundle is corrupt: its content has checksum {actual} but it records {expected} (copy it again)"
    )]
    Mismatch { expected: String, actual: String },
    #[error(transparent)]
    Read(#[from] std::io::Error),
}

/// Reads a whole bundle of `len` bytes from `reader` and compares the checksum of everything
/// before its trailer with the one the trailer records.
pub fn verify_checksum(mut reader: impl std::io::Read, len: u64) -> Result<(), ChecksumError> {
    use sha2::{Digest as _, Sha256};
    use std::io::Read as _;
    let mut hasher = Sha256::new();
    std::io::copy(
        &mut (&mut reader).take(len.saturating_sub(TRAILER_LEN)),
        &mut hasher,
    )?;
    // A file shorter than a trailer leaves fewer bytes here, which the trailer check names.
    let mut trailer = Vec::with_capacity(TRAILER_LEN as usize);
    reader.take(TRAILER_LEN).read_to_end(&mut trailer)?;
    let expected = checksum_in_trailer(&trailer)?;
    let actual: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let actual = format!("sha256:{actual}");
    if actual != expected {
        return Err(ChecksumError::Mismatch { expected, actual });
    }
    Ok(())
}

/// `bundle.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleIndex {
    /// [`BUNDLE_FORMAT`].
    pub format: String,
    /// The fleet whose key signed the manifests.
    pub fleet: String,
    pub created_at_ms: UnixMillis,
    /// Device id -> the version of its manifest in the bundle.
    pub devices: BTreeMap<String, u64>,
    /// Every image of the layout.
    pub images: Vec<BundleImage>,
}

/// One image of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleImage {
    /// The pinned reference the manifests use (`registry/repository[:tag]@sha256:...`).
    pub reference: String,
    /// The digest of its image manifest or index.
    pub digest: String,
    /// The bytes of all its blobs (manifests, config and layers).
    pub size: u64,
}

/// The path of device `device`'s manifest in a bundle.
pub fn manifest_path(device: &str) -> String {
    format!("manifests/{device}.json")
}

/// The path of the blob `digest` (`sha256:<64 hex>`) in a bundle, or `None` for a digest of
/// another algorithm or shape.
pub fn blob_path(digest: &str) -> Option<String> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
    .then(|| format!("blobs/sha256/{hex}"))
}

/// The digest a bundle path names (the inverse of [`blob_path`]).
pub fn blob_digest(path: &str) -> Option<String> {
    let digest = format!("sha256:{}", path.strip_prefix("blobs/sha256/")?);
    blob_path(&digest).map(|_| digest)
}

/// The tag under which an image loaded from a bundle is kept by the container engine: an
/// engine does not record a loaded image under its registry digest, so the agent names it
/// after that digest (`registry/repository:sha256-<hex>`) and creates containers from it.
pub fn loaded_image_tag(reference: &str) -> Option<String> {
    let (name, digest) = reference.split_once('@')?;
    let hex = digest.strip_prefix("sha256:")?;
    let repository = match name.rfind(':') {
        // A colon after the last slash starts a tag; one before it is a registry's port.
        Some(colon) if !name[colon..].contains('/') => &name[..colon],
        _ => name,
    };
    Some(format!("{repository}:sha256-{hex}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn blob_paths_name_sha256_digests_only() {
        let digest = format!("sha256:{HEX}");
        let path = blob_path(&digest).expect("a sha256 digest");
        assert_eq!(path, format!("blobs/sha256/{HEX}"));
        assert_eq!(blob_digest(&path), Some(digest));
        assert_eq!(blob_path("sha512:00"), None);
        assert_eq!(blob_path("sha256:../../etc/passwd"), None);
        assert_eq!(blob_path(&format!("sha256:{}", HEX.to_uppercase())), None);
        assert_eq!(blob_digest("blobs/sha256/short"), None);
    }

    /// A bundle-shaped file: `body` and a trailer recording `checksum`.
    fn with_trailer(body: &[u8], checksum: &str) -> Vec<u8> {
        let mut header = [0u8; 512];
        header[..CHECKSUM_PATH.len()].copy_from_slice(CHECKSUM_PATH.as_bytes());
        let mut content = [0u8; 512];
        content[..checksum.len() + 1].copy_from_slice(format!("{checksum}\n").as_bytes());
        [body, &header, &content, &[0u8; 1024]].concat()
    }

    #[test]
    fn the_checksum_covers_every_byte_before_the_trailer_and_a_short_file_is_named() {
        use sha2::{Digest as _, Sha256};
        let body = vec![7u8; 1536];
        let hex: String = Sha256::digest(&body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let good = with_trailer(&body, &format!("sha256:{hex}"));
        assert!(verify_checksum(good.as_slice(), good.len() as u64).is_ok());
        let mut flipped = good.clone();
        flipped[100] ^= 1;
        let err = verify_checksum(flipped.as_slice(), flipped.len() as u64).expect_err("flipped");
        assert!(matches!(err, ChecksumError::Mismatch { .. }), "{err}");
        let short = &good[..1000];
        let err = verify_checksum(short, short.len() as u64).expect_err("short");
        assert!(err.to_string().contains("copy it again"), "{err}");
    }

    #[test]
    fn a_loaded_image_is_tagged_after_its_digest_keeping_the_registry_port() {
        assert_eq!(
            loaded_image_tag(&format!("127.0.0.1:5000/plant/sensor:1.2@sha256:{HEX}")),
            Some(format!("127.0.0.1:5000/plant/sensor:sha256-{HEX}"))
        );
        assert_eq!(
            loaded_image_tag(&format!("127.0.0.1:5000/plant/sensor@sha256:{HEX}")),
            Some(format!("127.0.0.1:5000/plant/sensor:sha256-{HEX}"))
        );
        assert_eq!(loaded_image_tag("registry/sensor:1.2"), None);
    }
}
