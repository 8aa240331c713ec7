//! Files the CLI writes for the administrator (a downloaded model, a telemetry receipt): whole
//! or not at all, and never over an existing file. Several commands save files, so this sits
//! below them.

use std::io::Write as _;
use std::path::Path;

use super::error::CliError;

/// Writes `bytes` to a new file at `path` (never over an existing one), whole or not at all.
pub(super) fn write_new_file(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let failed = |e: std::io::Error| CliError::refused(format!("{}: {e}", path.display()));
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(failed)?;
    temp.write_all(bytes).map_err(failed)?;
    temp.as_file().sync_all().map_err(failed)?;
    temp.persist_noclobber(path).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            CliError::refused(format!(
                "{} exists: choose another --file or remove it",
                path.display()
            ))
        } else {
            failed(e.error)
        }
    })?;
    Ok(())
}
