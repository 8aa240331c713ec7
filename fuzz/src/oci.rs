//! OCI image manifests and indexes, as a registry (or a bundle's layout) serves them.

/// The bytes as a manifest or index a pull reads.
pub fn manifest(data: &[u8]) {
    let _ = edgefleet_agent::parsers::read_oci_document(data);
}
