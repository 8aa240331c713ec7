//! `edgefleet-agent bundle import` and `outbox export|trim`: bringing a deployment to a device
//! and its data back without a network, through the running agent's control socket.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use edgefleet_common::outbox_export::SignedReceipt;

use crate::config::AgentConfig;
use crate::local::control_socket::{self, ControlAnswer, ControlRequest};

#[derive(Debug, Subcommand)]
pub(super) enum BundleCommand {
    /// Verify a bundle (checksum, digests, signature, version), import its images and apply
    /// its manifest, as the running agent applies one from the fleet. Nothing changes when
    /// any check fails; running it again after an interruption resumes.
    Import { file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub(super) enum OutboxCommand {
    /// Write every record the fleet has not acknowledged, and the reported state, to FILE
    /// (for `edgefleet telemetry import`). They stay in the outbox until trimmed or sent.
    Export { file: PathBuf },
    /// Drop the records a fleet receipt (`edgefleet telemetry import --receipt`) confirms.
    Trim {
        #[arg(long)]
        receipt: PathBuf,
    },
}

/// Sends `request` to the running agent; a clear error when it is not running.
pub(super) fn control(
    config: &AgentConfig,
    request: &ControlRequest,
) -> anyhow::Result<std::os::unix::net::UnixStream> {
    let path = config.control_socket_path();
    control_socket::connect(&path, request).with_context(|| {
        format!(
            "no running agent answers on {} (start it: `edgefleet-agent run`)",
            path.display()
        )
    })
}

pub(super) fn control_answer(
    stream: std::os::unix::net::UnixStream,
) -> anyhow::Result<ControlAnswer> {
    let answer: ControlAnswer = serde_json::from_reader(stream)
        .context("the agent ended the request without an answer (see its log)")?;
    match answer {
        ControlAnswer::Refused { error } => anyhow::bail!("{error}"),
        answer => Ok(answer),
    }
}

pub(super) fn bundle_import(config: &AgentConfig, file: &Path) -> anyhow::Result<()> {
    let path = std::path::absolute(file)
        .with_context(|| format!("{}: not a usable path", file.display()))?;
    if !path.is_file() {
        anyhow::bail!("{}: no such file", path.display());
    }
    eprintln!("verifying and importing {} ...", path.display());
    let request = ControlRequest::ImportBundle { path: path.clone() };
    // The agent opens the file itself, as its own user and, under systemd, with a /tmp of
    // its own: say where to put a file it cannot reach.
    let answer = control_answer(control(config, &request)?).map_err(|e| {
        let text = e.to_string();
        if text.starts_with(&path.display().to_string()) {
            e.context(format!(
                "the agent cannot open it: copy the bundle into {} (or under /media or /mnt)",
                config.drop_dir().display()
            ))
        } else {
            e
        }
    })?;
    let ControlAnswer::Imported(report) = answer else {
        anyhow::bail!("the agent answered something else than an import report");
    };
    let outcome = &report.outcome;
    let code = u16::from(outcome.status);
    eprintln!(
        "imported {} model blob(s) and {} container image(s); manifest version {}: {code} {}",
        report.model_blobs, report.container_images, report.version, outcome.message
    );
    if outcome.status != edgefleet_common::reported::ApplyStatus::Applied {
        anyhow::bail!(
            "manifest version {} not applied: {code} {}",
            report.version,
            outcome.message
        );
    }
    Ok(())
}

pub(super) fn outbox(config: &AgentConfig, command: OutboxCommand) -> anyhow::Result<()> {
    match command {
        OutboxCommand::Export { file } => {
            if file.exists() {
                anyhow::bail!("{} exists; it is not overwritten", file.display());
            }
            let mut stream = control(config, &ControlRequest::ExportOutbox)?;
            let dir = match file.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            let mut temp = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("cannot write in {}", dir.display()))?;
            std::io::copy(&mut stream, &mut temp).context("the export stopped")?;
            let records = check_export(temp.path())?;
            temp.as_file().sync_all()?;
            temp.persist_noclobber(&file)
                .with_context(|| format!("cannot write {}", file.display()))?;
            eprintln!("wrote {records} record(s) to {}", file.display());
        }
        OutboxCommand::Trim { receipt } => {
            let text = std::fs::read(&receipt)
                .with_context(|| format!("cannot read {}", receipt.display()))?;
            let receipt: SignedReceipt = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not a receipt", receipt.display()))?;
            let request = ControlRequest::TrimOutbox { receipt };
            if let ControlAnswer::Trimmed {
                removed,
                committed_seq,
            } = control_answer(control(config, &request)?)?
            {
                eprintln!(
                    "dropped {removed} record(s) the fleet stored (through seq {committed_seq})"
                );
            }
        }
    }
    Ok(())
}

/// Checks that an export ends with its end line and that its checksum matches; returns its
/// record count.
pub(super) fn check_export(path: &Path) -> anyhow::Result<u64> {
    use sha2::{Digest as _, Sha256};
    let bytes = std::fs::read(path)?;
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    #[derive(serde::Deserialize)]
    struct End {
        end: edgefleet_common::outbox_export::ExportEnd,
    }
    let end: End = serde_json::from_slice(&body[start..])
        .context("the export is incomplete: the agent stopped before its end (see its log)")?;
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes[..start])));
    if actual != end.end.sha256 {
        anyhow::bail!(
            "the export is damaged: checksum {actual}, recorded {}",
            end.end.sha256
        );
    }
    Ok(end.end.records)
}
