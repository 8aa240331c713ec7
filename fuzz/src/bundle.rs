//! Offline bundles: the trailer and index of `edgefleet_common::bundle`, and the agent's
//! check of a whole bundle file before import.

use edgefleet_common::bundle::{
    BundleIndex, CHECKSUM_PATH, TRAILER_LEN, blob_digest, blob_path, checksum_in_trailer,
    loaded_image_tag, verify_checksum,
};
use sha2::{Digest as _, Sha256};

/// The bytes as a whole bundle file (its checksum and trailer), as a trailer, as `bundle.json`
/// and as a blob path, digest or image reference.
pub fn index(data: &[u8]) {
    let _ = verify_checksum(data, data.len() as u64);
    if data.len() as u64 >= TRAILER_LEN {
        let trailer = &data[data.len() - TRAILER_LEN as usize..];
        if let Ok(checksum) = checksum_in_trailer(trailer) {
            assert!(checksum.starts_with("sha256:") && checksum.len() == 71);
        }
    }
    if let Ok(index) = serde_json::from_slice::<BundleIndex>(data) {
        let written = serde_json::to_vec(&index).unwrap_or_default();
        let reread = serde_json::from_slice::<BundleIndex>(&written).ok();
        assert_eq!(
            reread.as_ref(),
            Some(&index),
            "bundle.json reads back different"
        );
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(path) = blob_path(text) {
            assert!(!path.contains(".."), "blob path {path:?} leaves the layout");
            assert_eq!(blob_digest(&path).as_deref(), Some(text));
        }
        if let Some(digest) = blob_digest(text) {
            assert_eq!(blob_path(&digest).as_deref(), Some(text));
        }
        let _ = loaded_image_tag(text);
    }
}

/// The bytes as a bundle's content before its trailer: the trailer with their checksum is
/// added, so the agent reads past the checksum into the tar entries, `bundle.json`, the
/// signed manifest and the OCI layout.
pub fn import(data: &[u8]) {
    let path = crate::write_scratch("fuzz.bundle", &sealed(data));
    if let Ok(manifest) = edgefleet_agent::parsers::verify_bundle(
        &path,
        &crate::fleet_public_key(),
        crate::DEVICE,
        None,
    ) {
        assert_eq!(manifest.device_id, crate::DEVICE);
    }
}

/// `body` followed by the trailer that records its checksum, as `edgefleet bundle create`
/// ends a bundle.
pub fn sealed(body: &[u8]) -> Vec<u8> {
    let checksum = format!("sha256:{}\n", hex::encode(Sha256::digest(body)));
    let mut header = [0u8; 512];
    header[..CHECKSUM_PATH.len()].copy_from_slice(CHECKSUM_PATH.as_bytes());
    let mut content = [0u8; 512];
    content[..checksum.len()].copy_from_slice(checksum.as_bytes());
    [body, &header, &content, &[0u8; 1024]].concat()
}
