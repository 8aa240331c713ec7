//! The running agent's control socket: a Unix socket in the data directory
//! (`agent-control.sock`, mode 0600) through which `edgefleet-agent bundle import`,
//! `outbox export` and `outbox trim` reach the agent that holds the store. A client writes one
//! [`ControlRequest`] as a JSON line; the agent answers with one [`ControlAnswer`] line, or,
//! for an export, with the export's lines.

use std::path::{Path, PathBuf};

use edgefleet_common::outbox_export::{EXPORT_FORMAT, ExportEnd, ExportHeader, SignedReceipt};
use edgefleet_common::reported::ReportedState;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;
use tokio::sync::watch;

use crate::offline::bundle_import::{BundleImporter, ImportReport};
use crate::telemetry::outbox::unframe;

/// Records read from the store per page of an export.
const EXPORT_PAGE: usize = 4096;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "camelCase")]
pub enum ControlRequest {
    /// Verify, import and apply a bundle file (an absolute path the agent can read).
    ImportBundle { path: PathBuf },
    /// Every record the fleet has not acknowledged, as an export.
    ExportOutbox,
    /// Drop the records a fleet receipt confirms.
    TrimOutbox { receipt: SignedReceipt },
    /// The applied manifest's wire bytes (for `check`).
    AppliedManifest,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ControlAnswer {
    Imported(ImportReport),
    Trimmed { removed: u64, committed_seq: u64 },
    Manifest { wire: Option<String> },
    Refused { error: String },
}

/// Serves requests on `path` until the task is aborted.
pub(crate) async fn serve(
    path: PathBuf,
    importer: BundleImporter,
    reported: watch::Receiver<Vec<u8>>,
) {
    let Some(listener) = crate::local::status_socket::bind_private(&path, "control socket") else {
        return;
    };
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (importer, reported) = (importer.clone(), reported.clone());
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &importer, &reported).await {
                tracing::warn!(error = %e, "control request not answered");
            }
        });
    }
}

async fn answer(
    stream: UnixStream,
    importer: &BundleImporter,
    reported: &watch::Receiver<Vec<u8>>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let answer = match serde_json::from_str::<ControlRequest>(&line) {
        Err(e) => ControlAnswer::Refused {
            error: format!("malformed request: {e}"),
        },
        Ok(ControlRequest::ImportBundle { path }) => match importer.import(&path).await {
            Ok(report) => ControlAnswer::Imported(report),
            Err(e) => ControlAnswer::Refused {
                error: e.to_string(),
            },
        },
        Ok(ControlRequest::ExportOutbox) => {
            let state = serde_json::from_slice(&reported.borrow()).ok();
            return export(importer, state, &mut write).await;
        }
        Ok(ControlRequest::TrimOutbox { receipt }) => trim(importer, &receipt),
        Ok(ControlRequest::AppliedManifest) => match importer.services.store.applied() {
            Ok(wire) => ControlAnswer::Manifest {
                wire: wire.map(|w| String::from_utf8_lossy(&w).into_owned()),
            },
            Err(e) => ControlAnswer::Refused {
                error: e.to_string(),
            },
        },
    };
    let mut bytes = serde_json::to_vec(&answer).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    write.write_all(&bytes).await?;
    write.shutdown().await
}

/// Writes the export: the header, every record of the outbox, the end line.
async fn export(
    importer: &BundleImporter,
    reported: Option<ReportedState>,
    out: &mut (impl tokio::io::AsyncWrite + Unpin),
) -> std::io::Result<()> {
    let services = &importer.services;
    let header = ExportHeader {
        format: EXPORT_FORMAT.to_owned(),
        fleet: services.config.fleet.clone(),
        device_id: services.config.device_id.clone(),
        exported_at_ms: edgefleet_transport::now_ms(),
        incarnation: crate::telemetry::authenticity::stored_incarnation(&services.store),
        reported,
    };
    let mut hasher = Sha256::new();
    let mut line = serde_json::to_vec(&header).map_err(std::io::Error::other)?;
    line.push(b'\n');
    hasher.update(&line);
    out.write_all(&line).await?;
    let (mut after, mut records) = (0, 0u64);
    loop {
        let store = services.store.clone();
        let page = tokio::task::spawn_blocking(move || store.outbox_after(after, EXPORT_PAGE))
            .await
            .map_err(std::io::Error::other)?
            .map_err(std::io::Error::other)?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        let mut chunk = Vec::new();
        for record in &page {
            let Some((_, json)) = unframe(&record.payload) else {
                continue;
            };
            chunk.extend_from_slice(json);
            chunk.push(b'\n');
            records += 1;
        }
        hasher.update(&chunk);
        out.write_all(&chunk).await?;
    }
    let end = ExportEnd {
        records,
        sha256: format!("sha256:{}", hex::encode(hasher.finalize())),
    };
    let mut line =
        serde_json::to_vec(&serde_json::json!({ "end": end })).map_err(std::io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line).await?;
    out.shutdown().await
}

fn trim(importer: &BundleImporter, signed: &SignedReceipt) -> ControlAnswer {
    let refuse = |error: String| ControlAnswer::Refused { error };
    let services = &importer.services;
    let receipt = match signed.verify(&importer.fleet_key) {
        Ok(receipt) => receipt,
        Err(e) => return refuse(e.to_string()),
    };
    if receipt.device_id != services.config.device_id {
        return refuse(format!(
            "the receipt is for device {:?}, this is {:?}",
            receipt.device_id, services.config.device_id
        ));
    }
    let incarnation = crate::telemetry::authenticity::stored_incarnation(&services.store);
    if receipt.incarnation.is_some() && receipt.incarnation != incarnation {
        return refuse(format!(
            "the receipt counts the records of device incarnation {:?}, this device's data directory is incarnation {:?}: it was wiped since the export",
            receipt.incarnation.clone().unwrap_or_default(),
            incarnation.unwrap_or_default()
        ));
    }
    match services.store.remove_outbox_through(receipt.committed_seq) {
        Ok(removed) => ControlAnswer::Trimmed {
            removed,
            committed_seq: receipt.committed_seq,
        },
        Err(e) => refuse(e.to_string()),
    }
}

/// Sends `request` to the agent's control socket at `path` and returns the answer's stream.
pub fn connect(
    path: &Path,
    request: &ControlRequest,
) -> std::io::Result<std::os::unix::net::UnixStream> {
    use std::io::Write as _;
    let mut stream = std::os::unix::net::UnixStream::connect(path)?;
    let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    Ok(stream)
}
