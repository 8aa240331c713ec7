//! A watched directory that files are dropped into (a mounted USB stick, a share): which files
//! are new or changed and done being copied.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often a drop directory is looked at.
pub const POLL: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct DropDir {
    dir: PathBuf,
    /// Size and modification time of the files handed out.
    seen: BTreeMap<PathBuf, (u64, SystemTime)>,
    /// Size of files seen once, not yet handed out.
    growing: BTreeMap<PathBuf, u64>,
}

impl DropDir {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            seen: BTreeMap::new(),
            growing: BTreeMap::new(),
        }
    }

    /// The files whose name `wanted` accepts that appeared or changed since the last look and
    /// had the same size on two looks in a row (a copy in progress is left alone), each
    /// handed out once per change.
    pub fn ready(&mut self, wanted: impl Fn(&str) -> bool) -> Vec<PathBuf> {
        let Ok(listing) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut ready = Vec::new();
        for entry in listing.flatten() {
            let path = entry.path();
            let named = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(&wanted);
            let Ok(meta) = entry.metadata() else { continue };
            if !named || !meta.is_file() {
                continue;
            }
            let stamp = (meta.len(), meta.modified().unwrap_or(UNIX_EPOCH));
            if self.seen.get(&path) == Some(&stamp) {
                continue;
            }
            if self.growing.insert(path.clone(), meta.len()) != Some(meta.len()) {
                continue;
            }
            self.growing.remove(&path);
            self.seen.insert(path.clone(), stamp);
            ready.push(path);
        }
        ready.sort();
        ready
    }
}
