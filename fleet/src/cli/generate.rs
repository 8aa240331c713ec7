//! `edgefleet completions` and `edgefleet man`: shell completion scripts and man pages,
//! generated from the command line's clap definitions so they never drift from `--help`.

use std::path::Path;

use super::error::CliError;

/// Prints the completion script of `command` for `shell`.
pub(super) fn completions(shell: clap_complete::Shell, mut command: clap::Command) {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "edgefleet", &mut script);
    let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
}

/// Writes the man pages of `command` (one per subcommand) into `dir`.
pub(super) fn man_pages(command: clap::Command, dir: &Path) -> Result<(), CliError> {
    let failed = |e: std::io::Error| CliError::refused(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(failed)?;
    clap_mangen::generate_to(command, dir).map_err(failed)?;
    Ok(())
}
