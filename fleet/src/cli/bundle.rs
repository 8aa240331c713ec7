//! `edgefleet bundle create`: an offline bundle for a device (or every device a deployment
//! reaches), written with a progress bar and checked against its checksum before it is given
//! its name.

use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use clap::Subcommand;
use edgefleet_common::bundle::{BundleIndex, INDEX_PATH, verify_checksum};
use edgefleet_common::fleet_api::BundleQuery;

use super::error::CliError;
use crate::client::FleetClient;

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Write an offline bundle: the signed manifest and every image it references, to carry
    /// to a device that cannot reach the broker or the registry (`edgefleet-agent bundle
    /// import FILE`, or the agent's drop directory).
    Create {
        /// The device the bundle is for.
        #[arg(
            long,
            conflicts_with = "deployment",
            required_unless_present = "deployment"
        )]
        device: Option<String>,
        /// Every device the deployment reaches (each image stored once).
        #[arg(long)]
        deployment: Option<String>,
        /// The file to write (not overwritten; name it `*.bundle` for drop directories).
        #[arg(long, short)]
        file: PathBuf,
    },
}

pub fn run(api: &FleetClient, command: BundleCommand) -> Result<(), CliError> {
    let BundleCommand::Create {
        device,
        deployment,
        file: output,
    } = command;
    if output.exists() {
        return Err(CliError::refused(format!(
            "{} exists; it is not overwritten",
            output.display()
        )));
    }
    let failed = |e: std::io::Error| CliError::refused(format!("{}: {e}", output.display()));
    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut response = api.bundle(&BundleQuery { device, deployment })?;
    let size = response.content_length().unwrap_or(0);
    let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(failed)?;
    let progress = indicatif::ProgressBar::new(size).with_style(
        indicatif::ProgressStyle::with_template(
            "{bytes}/{total_bytes} [{wide_bar}] {bytes_per_sec}, {eta} left",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = response.read(&mut buffer).map_err(|e| {
            CliError::refused(format!(
                "the bundle stopped arriving after {} bytes: {e} (the fleet's log says why)",
                progress.position()
            ))
        })?;
        if n == 0 {
            break;
        }
        temp.write_all(&buffer[..n]).map_err(failed)?;
        progress.inc(n as u64);
    }
    progress.finish_and_clear();
    let index = check(temp.as_file_mut())
        .map_err(|e| CliError::refused(format!("the bundle the fleet sent is not whole: {e}")))?;
    temp.as_file().sync_all().map_err(failed)?;
    temp.persist_noclobber(&output)
        .map_err(|e| failed(e.error))?;
    let bytes = std::fs::metadata(&output).map(|m| m.len()).unwrap_or(0);
    let devices: Vec<String> = index
        .devices
        .iter()
        .map(|(d, v)| format!("{d} (version {v})"))
        .collect();
    eprintln!(
        "wrote {}: {} bytes, manifests of {}, {} image(s)",
        output.display(),
        bytes,
        devices.join(", "),
        index.images.len()
    );
    Ok(())
}

/// Checks a written bundle against its checksum and returns its index.
fn check(file: &mut std::fs::File) -> Result<BundleIndex, String> {
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    file.rewind().map_err(|e| e.to_string())?;
    verify_checksum(&mut *file, len).map_err(|e| e.to_string())?;
    file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    let mut archive = tar::Archive::new(&mut *file);
    let mut first = archive
        .entries()
        .and_then(|mut e| e.next().transpose())
        .map_err(|e| e.to_string())?
        .ok_or("it is empty")?;
    if first.path().map_err(|e| e.to_string())?.as_os_str() != INDEX_PATH {
        return Err(format!("it does not start with {INDEX_PATH}"));
    }
    serde_json::from_reader(&mut first).map_err(|e| format!("{INDEX_PATH}: {e}"))
}
