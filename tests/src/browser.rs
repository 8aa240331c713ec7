//! A real browser for the dashboard's tests: headless Chromium (Debian `chromium`) with a
//! profile of its own, so a session cookie set by one page load is sent by the next.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::require_program;

#[derive(Debug)]
pub struct Browser {
    binary: PathBuf,
    profile: tempfile::TempDir,
}

impl Browser {
    pub fn new() -> Self {
        Self {
            binary: require_program("chromium", "chromium"),
            profile: tempfile::tempdir().expect("browser profile"),
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            // Lets the page's script and the navigations it starts finish before the dump.
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", self.profile.path().display()));
        cmd
    }

    /// The document at `url` once loaded (after redirects and the page's own navigation).
    pub fn dom(&self, url: &str) -> String {
        let out = self
            .command()
            .arg("--dump-dom")
            .arg(url)
            .output()
            .expect("run chromium");
        assert!(
            out.status.success(),
            "chromium failed on {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A screenshot of `url` (1280×1000) written to `path`.
    pub fn screenshot(&self, url: &str, path: &Path) {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot directory");
        }
        let out = self
            .command()
            .arg(format!("--screenshot={}", path.display()))
            .arg("--window-size=1280,1000")
            .arg(url)
            .output()
            .expect("run chromium");
        assert!(
            out.status.success() && path.exists(),
            "no screenshot of {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}
