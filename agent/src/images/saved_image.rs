//! An image inside an offline bundle, handed to the Docker engine as `docker load` takes it.

/// An image inside a bundle file, as `docker load` takes it.
#[derive(Debug, Clone)]
pub struct SavedImage {
    pub file: std::path::PathBuf,
    /// The tag the engine keeps it under.
    pub tag: String,
    /// The config blob's digest (the image id).
    pub config: String,
    /// The layer digests, in order.
    pub layers: Vec<String>,
    /// (digest, offset, size) of the config and the layers in `file`.
    pub blobs: Vec<(String, u64, u64)>,
}

impl SavedImage {
    /// Writes the `docker save` archive: `manifest.json`, then the config and the layers
    /// (compressed layers are fine: the engine decompresses them).
    pub(crate) fn write_archive(&self, out: impl std::io::Write) -> std::io::Result<()> {
        use std::io::{Read as _, Seek as _};
        let path = |digest: &str| format!("blobs/{}", digest.replace(':', "/"));
        let manifest = serde_json::json!([{
            "Config": path(&self.config),
            "RepoTags": [self.tag],
            "Layers": self.layers.iter().map(|l| path(l)).collect::<Vec<_>>(),
        }])
        .to_string();
        let mut archive = tar::Builder::new(out);
        let mut header = tar::Header::new_ustar();
        header.set_size(manifest.len() as u64);
        header.set_mode(0o644);
        archive.append_data(&mut header, "manifest.json", manifest.as_bytes())?;
        let mut file = std::fs::File::open(&self.file)?;
        for (digest, offset, size) in &self.blobs {
            file.seek(std::io::SeekFrom::Start(*offset))?;
            let mut header = tar::Header::new_ustar();
            header.set_size(*size);
            header.set_mode(0o644);
            archive.append_data(&mut header, path(digest), (&mut file).take(*size))?;
        }
        archive.into_inner()?.flush()
    }
}

/// Hands what is written to a channel in chunks (from a blocking thread).
pub(crate) struct ChunkWriter {
    pub(crate) tx: tokio::sync::mpsc::Sender<std::io::Result<axum::body::Bytes>>,
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(axum::body::Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::other("the engine stopped reading"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
