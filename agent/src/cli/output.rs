//! How the command line writes: text or JSON for commands that offer both, and log lines to
//! stderr for the commands that run services.

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum OutputFormat {
    Text,
    Json,
}

/// Log lines (info and above, or as `RUST_LOG` says) go to stderr.
pub(super) fn log_to_stderr() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}
