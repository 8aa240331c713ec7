//! The running agent's status socket: a Unix socket in the data directory (`agent.sock`, mode
//! 0600). Each connection receives the agent's current reported state as one JSON document,
//! then the agent closes it, so `edgefleet-agent status` (or `socat - UNIX-CONNECT:agent.sock`)
//! can read a running agent whose store it cannot open.

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::net::UnixListener;
use tokio::sync::watch;

/// Serves `reported` (the latest reported state, JSON) on `path` until the task is dropped.
/// A stale socket from an earlier run is replaced: the caller holds the store, so no other
/// agent is using this data directory.
pub async fn serve(path: PathBuf, reported: watch::Receiver<Vec<u8>>) {
    let Some(listener) = bind_private(&path, "status socket") else {
        return;
    };
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let state = reported.borrow().clone();
        tokio::spawn(async move {
            let _ = stream.write_all(&state).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Listens on a Unix socket at `path` only the agent's user may use (0600), replacing a stale
/// one; `None` (logged) when it cannot.
pub(crate) fn bind_private(path: &Path, what: &str) -> Option<UnixListener> {
    let _ = std::fs::remove_file(path);
    let listener = match UnixListener::bind(path) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::warn!(socket = %path.display(), error = %e, "{what} not available");
            return None;
        }
    };
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        tracing::warn!(socket = %path.display(), error = %e, "{what} permissions not set");
    }
    Some(listener)
}

/// Reads the reported state from a running agent's status socket.
pub fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut stream = std::os::unix::net::UnixStream::connect(path)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut state = Vec::new();
    stream.read_to_end(&mut state)?;
    Ok(state)
}
